//! The attention kernels' block products in bf16: the same contract as
//! [`gemm_strided`](crate::kernels::matmul::gemm_strided) (`C = (acc ? C : 0) + α·A·B` on
//! strided views), with `A` and `B` rounded to bf16 (round-to-nearest-even) and multiplied by
//! [`matmul_bf16`] with f32 accumulation. Mixed-precision training runs the attention products
//! this way (as `torch.autocast` does); the softmax, its statistics and every accumulator stay f32.
//!
//! Each operand is gathered into a contiguous bf16 copy first: a view whose columns are
//! contiguous (`cs = 1`) is copied row by row; a view whose rows are contiguous (`rs = 1`) is
//! the transpose of such a layout and is copied the same way, then multiplied with the
//! transposed flag. The copies cost `O(MK + KN)` against the product's `O(MKN)`.

use crate::kernels::bf16::{matmul_bf16, to_bf16};
use half::bf16;
use std::cell::Cell;

thread_local! {
    /// Per-thread buffers: bf16 `A`, bf16 `B`, f32 product.
    static BUFFERS: Cell<(Vec<bf16>, Vec<bf16>, Vec<f32>)> = const {
        Cell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

/// Copies the strided `rows × cols` view at `x` (element `(r, c)` at `x + r·rs + c·cs`) into
/// `dst` as contiguous bf16, returning whether it was stored transposed (`cols × rows`).
///
/// # Safety
/// `x` is valid for the view's extent; one of `rs`, `cs` is 1 (the other non-negative).
unsafe fn gather(
    dst: &mut Vec<bf16>,
    x: *const f32,
    rs: isize,
    cs: isize,
    rows: usize,
    cols: usize,
) -> bool {
    dst.resize(rows * cols, bf16::ZERO);
    // Lines: rows when columns are contiguous, else columns (then the copy is the transpose).
    let (lines, len, stride, transposed) = if cs == 1 {
        (rows, cols, rs, false)
    } else {
        debug_assert_eq!(rs, 1, "bf16 attention product: one stride must be 1");
        (cols, rows, cs, true)
    };
    for l in 0..lines {
        // SAFETY: line l of the view lies inside x's extent (caller's contract).
        let src = unsafe { std::slice::from_raw_parts(x.offset(l as isize * stride), len) };
        to_bf16(&mut dst[l * len..(l + 1) * len], src);
    }
    transposed
}

/// `C (m×n, row stride c_rs) = (accumulate ? C : 0) + alpha · A (m×k) · B (k×n)` in bf16 with
/// f32 accumulation; the argument list of `gemm_strided` (`parallel` is ignored: attention runs
/// one block per thread).
///
/// # Safety
/// As `gemm_strided`: the pointers are valid for the strided extents, `c` aliases neither input;
/// each of `A` and `B` has a unit stride.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided_bf16(
    c: *mut f32,
    c_rs: isize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    alpha: f32,
    _parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (mut ab, mut bb, mut prod) = BUFFERS.with(|s| s.take());
    // SAFETY: forwarded caller contract.
    let (trans_a, trans_b) = unsafe {
        (
            gather(&mut ab, a, a_rs, a_cs, m, k),
            // op(B) stored (n × k) is `trans_b` in matmul_bf16's terms.
            gather(&mut bb, b, b_rs, b_cs, k, n),
        )
    };
    prod.resize(m * n, 0.0);
    matmul_bf16(&mut prod, &ab, &bb, m, k, n, trans_a, trans_b, false);
    for (i, row) in prod.chunks_exact(n).enumerate() {
        // SAFETY: row i of C (n values at stride 1) lies inside C's extent.
        let out = unsafe { std::slice::from_raw_parts_mut(c.offset(i as isize * c_rs), n) };
        if accumulate {
            for (o, &p) in out.iter_mut().zip(row) {
                *o += alpha * p;
            }
        } else {
            for (o, &p) in out.iter_mut().zip(row) {
                *o = alpha * p;
            }
        }
    }
    BUFFERS.with(|s| s.set((ab, bb, prod)));
}
