//! 32-bit words of packed weight matrices (the bf16, int8 and f32-panel decode formats), in
//! memory that transparent huge pages can back once the matrix is large.

/// Bytes from which packed words go to huge-page memory (one 2 MiB page).
const HUGE_MIN_BYTES: usize = 2 << 20;

/// Storage of packed words. Large matrices live in anonymous memory advised to use transparent
/// huge pages: decoding streams every word once per token, and with 4 KiB pages that is one TLB
/// miss per 64 cache lines (the f32 path's `InferenceModel::copy_to_huge_pages` does the same).
/// The advice is only a hint: without huge pages the memory works the same.
#[derive(Debug)]
pub(crate) enum HugeWords {
    Heap(Vec<u32>),
    Huge(memmap2::MmapMut, usize),
}

impl HugeWords {
    /// `len` zero words.
    pub(crate) fn zeros(len: usize) -> Self {
        if 4 * len >= HUGE_MIN_BYTES {
            // Anonymous maps are zero-filled and page-aligned (so aligned for u32).
            if let Ok(m) = memmap2::MmapMut::map_anon(4 * len) {
                #[cfg(target_os = "linux")]
                {
                    let _ = m.advise(memmap2::Advice::HugePage);
                }
                return HugeWords::Huge(m, len);
            }
        }
        HugeWords::Heap(vec![0; len])
    }

    /// The words as f32 values (the f32 panels keep their floats here, for the same pages).
    pub(crate) fn as_f32(&self) -> &[f32] {
        let w: &[u32] = self;
        // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is a
        // valid f32; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(w.as_ptr().cast(), w.len()) }
    }

    /// [`HugeWords::as_f32`], mutable.
    pub(crate) fn as_f32_mut(&mut self) -> &mut [f32] {
        let w: &mut [u32] = self;
        // SAFETY: as in `as_f32`; the slice borrows `self` mutably, so it is unique.
        unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast(), w.len()) }
    }
}

impl std::ops::Deref for HugeWords {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            HugeWords::Heap(v) => v,
            // SAFETY: the map is page-aligned, `4·len` bytes long (made so in `zeros`), every
            // bit pattern is a valid u32, and the slice borrows the map.
            HugeWords::Huge(m, len) => unsafe {
                std::slice::from_raw_parts(m.as_ptr().cast(), *len)
            },
        }
    }
}

impl std::ops::DerefMut for HugeWords {
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            HugeWords::Heap(v) => v,
            // SAFETY: as in `deref`, and the map is borrowed mutably, so the slice is unique.
            HugeWords::Huge(m, len) => unsafe {
                std::slice::from_raw_parts_mut(m.as_mut_ptr().cast(), *len)
            },
        }
    }
}

impl Clone for HugeWords {
    fn clone(&self) -> Self {
        let mut w = HugeWords::zeros(self.len());
        w.copy_from_slice(self);
        w
    }
}
