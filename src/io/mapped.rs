//! Memory-mapped files whose contents are read once and then kept elsewhere.

/// Drops this process's resident pages of bytes `offset..offset + len` of `map` (widened to
/// whole pages); the file stays mapped and the bytes are read again if touched. For loaders
/// that convert or repack a mapped tensor once: without it the file's pages stay resident
/// beside the converted copy. A failure only leaves the pages resident.
pub fn drop_pages(map: &memmap2::Mmap, offset: usize, len: usize) {
    #[cfg(unix)]
    // SAFETY: `Mmap` is a read-only, file-backed shared mapping: DONTNEED drops clean
    // page-cache pages from this process only, and a later read finds the file's same bytes,
    // so no slice into the map sees a change.
    unsafe {
        let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len);
    }
    #[cfg(not(unix))]
    let _ = (map, offset, len);
}
