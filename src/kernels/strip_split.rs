//! The thread split of the strip-packed weight formats ([`super::int8`], [`super::half`]): a
//! matrix's output columns come in strips, each thread takes one contiguous range of strips and
//! writes their columns of the output rows directly, so no thread needs a buffer of its own
//! and nothing is summed or copied afterwards.

use super::team;

/// The output rows `(n, OC)` of one call, shared by the tasks that write disjoint columns.
pub(crate) struct OutRows(*mut f32);

// SAFETY: tasks write disjoint columns (the contract of [`split_strips`]'s callers), and the
// pointer outlives them (it borrows the caller's `&mut` slice for the call).
unsafe impl Sync for OutRows {}

impl OutRows {
    /// Row `r`, columns `j0..j0 + len`, of an output `oc` wide.
    ///
    /// # Safety
    /// The range lies inside the output, and no other task touches these columns meanwhile.
    #[inline]
    // A `&mut` from `&self` is the point: each task gets its own columns of the shared rows.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn cols(&self, r: usize, oc: usize, j0: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(r * oc + j0), len)
    }

    /// Writes `bias + tile` for rows `r0..r0 + rows` of an output `oc` wide, columns
    /// `j0..j0 + cols`: `tile` holds `rows` rows of `width ≥ cols` products of one strip.
    ///
    /// # Safety
    /// As [`OutRows::cols`], for every row of the range.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn store_tile(
        &self,
        tile: &[f32],
        width: usize,
        bias: Option<&[f32]>,
        (r0, rows): (usize, usize),
        oc: usize,
        j0: usize,
        cols: usize,
    ) {
        for r in 0..rows {
            let dst = self.cols(r0 + r, oc, j0, cols);
            for (c, (o, &v)) in dst.iter_mut().zip(&tile[r * width..]).enumerate() {
                *o = bias.map_or(0.0, |b| b[j0 + c]) + v;
            }
        }
    }
}

/// `(r0, rows)` groups covering rows `0..n`, each at most `tile` rows and as even as possible
/// (9 rows with tiles of 8 run as 5 + 4, not 8 + 1; 8 with tiles of 6 as 4 + 4).
pub(crate) fn row_groups(n: usize, tile: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut r0 = 0;
    std::iter::from_fn(move || {
        (r0 < n).then(|| {
            let rows = (n - r0).div_ceil((n - r0).div_ceil(tile));
            let group = (r0, rows);
            r0 += rows;
            group
        })
    })
}

/// Runs `block(out, s0, s1)` on one contiguous range `s0..s1` of `n_strips` strips per thread
/// (never empty), all in parallel; `block` must write only its strips' columns of `out`.
pub(crate) fn split_strips(
    out: &mut [f32],
    n_strips: usize,
    block: impl Fn(&OutRows, usize, usize) + Sync,
) {
    let dst = OutRows(out.as_mut_ptr());
    let tasks = rayon::current_num_threads().clamp(1, n_strips.max(1));
    team::run(tasks, |t| {
        let (s0, s1) = (t * n_strips / tasks, (t + 1) * n_strips / tasks);
        if s1 > s0 {
            block(&dst, s0, s1);
        }
    });
}
