//! Matrix products and the linear layer, through the `gemm` crate.
//!
//! `matmul`: `C (M×N) = op(A) · op(B)` (or `C += ...`), where `op(A)` is `A (M×K)` or, with
//! `trans_a`, the transpose of a stored `(K×M)`; likewise `op(B)` is `B (K×N)` or the transpose of
//! a stored `(N×K)`. All four layouts run at the same speed: `gemm` takes row and column strides.
//!
//! Threading (measured, see `shared/notes/cpu-performance.md`): large products let `gemm` split
//! the work; batches of small products (attention) run one single-threaded `gemm` per task;
//! single-row products (`M = 1`, batch-1 decoding) are memory-bound and split the columns of `B`
//! across threads ourselves.
//!
//! `linear`: `out (N×OC) = inp (N×IC) · Wᵀ + bias` with the weight stored either as
//! `(OC×IC)` ([`WeightLayout::OutIn`], PyTorch `nn.Linear`) or `(IC×OC)` ([`WeightLayout::InOut`],
//! GPT-2's `Conv1D`), so checkpoints can be used in place without transposing.

use super::check_len;
use gemm::Parallelism;
use rayon::prelude::*;

/// Products with fewer multiply-adds than this run on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// How a linear layer's weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WeightLayout {
    /// `(OC, IC)`, as PyTorch `nn.Linear` (and the tied LM head `wte`).
    OutIn,
    /// `(IC, OC)`, as GPT-2's `Conv1D` (`c_attn`, `c_proj`, `c_fc`).
    InOut,
}

/// Strides `(row, col)` of `op(X)` where `X` is stored row-major as `(rows, cols)` of `op(X)`
/// or, transposed, as `(cols, rows)`.
fn strides(trans: bool, rows: usize, cols: usize) -> (isize, isize) {
    if trans {
        (1, rows as isize)
    } else {
        (cols as isize, 1)
    }
}

/// Single-threaded or multi-threaded `gemm` call on raw strided views.
///
/// # Safety
/// The pointers must be valid for the strided extents of an `m×k`, `k×n` and `m×n` matrix, and
/// `c` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
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
    parallel: bool,
) {
    let par = if parallel && m * n * k >= PARALLEL_MIN_FLOPS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // gemm computes dst := alpha·dst + beta·lhs·rhs (dst read only when read_dst).
    gemm::gemm(
        m, n, k, c, 1, c_rs, accumulate, a, a_cs, a_rs, b, b_cs, b_rs, 1.0, alpha, false, false,
        false, par,
    );
}

/// `out (M×N) (+)= op(A) · op(B)`. See the module docs for the layouts.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    check_len("matmul", "out", out.len(), m * n);
    check_len("matmul", "a", a.len(), m * k);
    check_len("matmul", "b", b.len(), k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    if m == 1 {
        return matvec(out, a, b, k, n, trans_b, accumulate);
    }
    let (a_rs, a_cs) = strides(trans_a, m, k);
    let (b_rs, b_cs) = strides(trans_b, k, n);
    // SAFETY: lengths were checked above; `out` is a unique borrow so it aliases neither input.
    unsafe {
        gemm_strided(
            out.as_mut_ptr(),
            n as isize,
            a.as_ptr(),
            a_rs,
            a_cs,
            b.as_ptr(),
            b_rs,
            b_cs,
            m,
            k,
            n,
            accumulate,
            1.0,
            true,
        );
    }
}

/// Single-row product `out (N) (+)= x (K) · op(B)`, columns split across threads.
///
/// With `trans_b` each output is a dot product with a contiguous row of the stored `(N×K)` matrix;
/// otherwise rows of the stored `(K×N)` matrix are streamed into a chunk of outputs.
fn matvec(out: &mut [f32], x: &[f32], b: &[f32], k: usize, n: usize, trans_b: bool, acc: bool) {
    let chunk = super::rows_per_task(n, k, 1 << 15);
    if trans_b {
        out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
            let j0 = ci * chunk;
            for (jj, oj) in o.iter_mut().enumerate() {
                let row = &b[(j0 + jj) * k..(j0 + jj + 1) * k];
                let d = dot(x, row);
                *oj = if acc { *oj + d } else { d };
            }
        });
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
            let j0 = ci * chunk;
            let w = o.len();
            if !acc {
                o.fill(0.0);
            }
            for (p, &xp) in x.iter().enumerate() {
                let row = &b[p * n + j0..p * n + j0 + w];
                for (oj, &bj) in o.iter_mut().zip(row) {
                    *oj += xp * bj;
                }
            }
        });
    }
}

/// Dot product with 16 independent accumulators so the compiler vectorises it.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let (ca, ra) = a.split_at(a.len() / 16 * 16);
    let (cb, rb) = b.split_at(ca.len());
    for (xa, xb) in ca.chunks_exact(16).zip(cb.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += xa[i] * xb[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Batched product: `out[i] (+)= op(A[i]) · op(B[i])` for `i < batch`, one single-threaded
/// `gemm` per task (the fast split for many small products).
#[allow(clippy::too_many_arguments)]
pub fn matmul_batched(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    check_len("matmul_batched", "out", out.len(), batch * m * n);
    check_len("matmul_batched", "a", a.len(), batch * m * k);
    check_len("matmul_batched", "b", b.len(), batch * k * n);
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let (a_rs, a_cs) = strides(trans_a, m, k);
    let (b_rs, b_cs) = strides(trans_b, k, n);
    out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| {
        if k == 0 {
            if !accumulate {
                o.fill(0.0);
            }
            return;
        }
        let ai = &a[i * m * k..(i + 1) * m * k];
        let bi = &b[i * k * n..(i + 1) * k * n];
        // SAFETY: each slice has exactly the extent of its matrix; `o` is a disjoint chunk.
        unsafe {
            gemm_strided(
                o.as_mut_ptr(),
                n as isize,
                ai.as_ptr(),
                a_rs,
                a_cs,
                bi.as_ptr(),
                b_rs,
                b_cs,
                m,
                k,
                n,
                accumulate,
                1.0,
                false,
            );
        }
    });
}

/// `out (n, oc) = bias + Σ partials`, `partials` holding consecutive `(n, oc)` sums, each over
/// one thread's block of input channels (the row-split decode kernels in f32 and bf16).
pub(crate) fn sum_partials(
    out: &mut [f32],
    partials: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    oc: usize,
) {
    for r in 0..n {
        let o = &mut out[r * oc..(r + 1) * oc];
        match bias {
            Some(b) => o.copy_from_slice(b),
            None => o.fill(0.0),
        }
        for part in partials.chunks_exact(n * oc) {
            for (d, s) in o.iter_mut().zip(&part[r * oc..(r + 1) * oc]) {
                *d += s;
            }
        }
    }
}

/// Oracle for [`matmul`]: triple loop with f64 accumulation.
#[allow(clippy::too_many_arguments)]
pub fn matmul_naive(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            let o = &mut out[i * n + j];
            *o = if accumulate { *o + s as f32 } else { s as f32 };
        }
    }
}

/// Oracle for [`matmul_batched`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_batched_naive(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    for i in 0..batch {
        matmul_naive(
            &mut out[i * m * n..(i + 1) * m * n],
            &a[i * m * k..(i + 1) * m * k],
            &b[i * k * n..(i + 1) * k * n],
            m,
            k,
            n,
            trans_a,
            trans_b,
            accumulate,
        );
    }
}

/// Copies `bias (OC)` into every row of `out (N×OC)` (when given), so a product can accumulate
/// on top of it; shared by the f32 and bf16 linear layers.
pub(crate) fn broadcast_bias(op: &str, out: &mut [f32], bias: Option<&[f32]>, oc: usize) {
    if let Some(b) = bias {
        check_len(op, "bias", b.len(), oc);
        for row in out.chunks_exact_mut(oc) {
            row.copy_from_slice(b);
        }
    }
}

/// `out (N×OC) = inp (N×IC) · Wᵀ + bias`; the bias is broadcast into `out` first and the product
/// accumulated on top, so bias addition costs no extra pass.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    check_len("linear_forward", "out", out.len(), n * oc);
    check_len("linear_forward", "inp", inp.len(), n * ic);
    check_len("linear_forward", "weight", weight.len(), ic * oc);
    broadcast_bias("linear_forward", out, bias, oc);
    // OutIn: W stored (OC, IC) so op(B) = Wᵀ is a transposed view; InOut: W is (IC, OC) as is.
    let trans_b = layout == WeightLayout::OutIn;
    matmul(out, inp, weight, n, ic, oc, false, trans_b, bias.is_some());
}

/// Backward of [`linear_forward`]: `dinp += dout · W`, `dweight += doutᵀ · inp` (in the weight's
/// layout), `dbias += Σ_rows dout`. Pass `None` for `dinp` when the input needs no gradient.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    check_len("linear_backward", "dout", dout.len(), n * oc);
    check_len("linear_backward", "inp", inp.len(), n * ic);
    check_len("linear_backward", "weight", weight.len(), ic * oc);
    check_len("linear_backward", "dweight", dweight.len(), ic * oc);
    if let Some(dinp) = dinp {
        // dinp (N×IC) += dout (N×OC) · W as (OC×IC): OutIn stores exactly that; InOut is its transpose.
        matmul(
            dinp,
            dout,
            weight,
            n,
            oc,
            ic,
            false,
            layout == WeightLayout::InOut,
            true,
        );
    }
    match layout {
        // dW (OC×IC) += doutᵀ (OC×N) · inp (N×IC)
        WeightLayout::OutIn => matmul(dweight, dout, inp, oc, n, ic, true, false, true),
        // dW (IC×OC) += inpᵀ (IC×N) · dout (N×OC)
        WeightLayout::InOut => matmul(dweight, inp, dout, ic, n, oc, true, false, true),
    }
    if let Some(db) = dbias {
        check_len("linear_backward", "dbias", db.len(), oc);
        bias_grad(db, dout, oc);
    }
}

/// `dbias += Σ_rows dout`, rows summed in parallel blocks then reduced.
pub(crate) fn bias_grad(db: &mut [f32], dout: &[f32], oc: usize) {
    let rows = dout.len() / oc;
    let chunk = super::rows_per_task(rows, oc, 1 << 16);
    let partial: Vec<Vec<f32>> = dout
        .par_chunks(chunk * oc)
        .map(|blk| {
            let mut acc = vec![0.0f32; oc];
            for row in blk.chunks_exact(oc) {
                for (a, r) in acc.iter_mut().zip(row) {
                    *a += r;
                }
            }
            acc
        })
        .collect();
    for p in partial {
        for (d, a) in db.iter_mut().zip(p) {
            *d += a;
        }
    }
}

/// Oracle for [`linear_forward`].
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_naive(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    for r in 0..n {
        for o in 0..oc {
            let mut s = bias.map_or(0.0, |b| b[o] as f64);
            for i in 0..ic {
                let w = match layout {
                    WeightLayout::OutIn => weight[o * ic + i],
                    WeightLayout::InOut => weight[i * oc + o],
                };
                s += inp[r * ic + i] as f64 * w as f64;
            }
            out[r * oc + o] = s as f32;
        }
    }
}

/// Oracle for [`linear_backward`].
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_naive(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    let widx = |o: usize, i: usize| match layout {
        WeightLayout::OutIn => o * ic + i,
        WeightLayout::InOut => i * oc + o,
    };
    if let Some(dinp) = dinp {
        for r in 0..n {
            for i in 0..ic {
                let s: f64 = (0..oc)
                    .map(|o| dout[r * oc + o] as f64 * weight[widx(o, i)] as f64)
                    .sum();
                dinp[r * ic + i] += s as f32;
            }
        }
    }
    for o in 0..oc {
        for i in 0..ic {
            let s: f64 = (0..n)
                .map(|r| dout[r * oc + o] as f64 * inp[r * ic + i] as f64)
                .sum();
            dweight[widx(o, i)] += s as f32;
        }
    }
    if let Some(db) = dbias {
        for o in 0..oc {
            db[o] += (0..n).map(|r| dout[r * oc + o] as f64).sum::<f64>() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "index {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn matmul_all_layouts_match_naive() {
        let mut rng = Rng::new(1);
        for &(m, k, n) in &[
            (1, 13, 7),
            (7, 13, 5),
            (33, 65, 129),
            (130, 70, 260),
            (1, 300, 1000),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for acc in [false, true] {
                        let a = rng.normal_vec(m * k, 1.0);
                        let b = rng.normal_vec(k * n, 1.0);
                        let init = rng.normal_vec(m * n, 1.0);
                        let mut fast = init.clone();
                        let mut slow = init.clone();
                        matmul(&mut fast, &a, &b, m, k, n, ta, tb, acc);
                        matmul_naive(&mut slow, &a, &b, m, k, n, ta, tb, acc);
                        close(&fast, &slow, 1e-4);
                    }
                }
            }
        }
    }

    #[test]
    fn batched_matches_naive() {
        let mut rng = Rng::new(2);
        let (batch, m, k, n) = (5, 7, 5, 9);
        for ta in [false, true] {
            for tb in [false, true] {
                let a = rng.normal_vec(batch * m * k, 1.0);
                let b = rng.normal_vec(batch * k * n, 1.0);
                let mut fast = vec![1.0; batch * m * n];
                let mut slow = fast.clone();
                matmul_batched(&mut fast, &a, &b, batch, m, k, n, ta, tb, true);
                matmul_batched_naive(&mut slow, &a, &b, batch, m, k, n, ta, tb, true);
                close(&fast, &slow, 1e-5);
            }
        }
    }

    #[test]
    fn linear_matches_naive_and_finite_differences() {
        let mut rng = Rng::new(3);
        let (n, ic, oc) = (7, 13, 5);
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            let x = rng.normal_vec(n * ic, 1.0);
            let w = rng.normal_vec(ic * oc, 1.0);
            let b = rng.normal_vec(oc, 1.0);
            let dout = rng.normal_vec(n * oc, 1.0);
            let mut y = vec![0.0; n * oc];
            let mut y_ref = y.clone();
            linear_forward(&mut y, &x, &w, Some(&b), n, ic, oc, layout);
            linear_forward_naive(&mut y_ref, &x, &w, Some(&b), n, ic, oc, layout);
            close(&y, &y_ref, 1e-5);

            let (mut dx, mut dw, mut db) = (vec![0.0; n * ic], vec![0.0; ic * oc], vec![0.0; oc]);
            linear_backward(
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &dout,
                &x,
                &w,
                n,
                ic,
                oc,
                layout,
            );
            let (mut dx2, mut dw2, mut db2) =
                (vec![0.0; n * ic], vec![0.0; ic * oc], vec![0.0; oc]);
            linear_backward_naive(
                Some(&mut dx2),
                &mut dw2,
                Some(&mut db2),
                &dout,
                &x,
                &w,
                n,
                ic,
                oc,
                layout,
            );
            close(&dx, &dx2, 1e-5);
            close(&dw, &dw2, 1e-5);
            close(&db, &db2, 1e-5);

            // Finite differences of L = Σ dout ⊙ y, in f64 via the naive forward.
            let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
                let mut y = vec![0.0; n * oc];
                linear_forward_naive(&mut y, x, w, Some(b), n, ic, oc, layout);
                y.iter()
                    .zip(&dout)
                    .map(|(a, g)| *a as f64 * *g as f64)
                    .sum()
            };
            let h = 1e-2f32;
            for idx in [0, 17, ic * oc - 1] {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp[idx] += h;
                wm[idx] -= h;
                let fd = (loss(&x, &wp, &b) - loss(&x, &wm, &b)) / (2.0 * h as f64);
                assert!(
                    (fd - dw[idx] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                    "dw {fd} vs {}",
                    dw[idx]
                );
            }
            for idx in [0, 40, n * ic - 1] {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[idx] += h;
                xm[idx] -= h;
                let fd = (loss(&xp, &w, &b) - loss(&xm, &w, &b)) / (2.0 * h as f64);
                assert!(
                    (fd - dx[idx] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                    "dx {fd} vs {}",
                    dx[idx]
                );
            }
        }
    }
}
