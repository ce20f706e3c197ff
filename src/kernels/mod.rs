//! Fused CPU kernels, each a forward and a backward side by side (the llm.c contract in Rust).
//!
//! Contract shared by every kernel file:
//! - Signatures list outputs first, then inputs, then sizes:
//!   `layernorm_forward(out, mean, rstd, inp, weight, bias, n, c)`.
//! - Gradients carry a `d` prefix; **backward accumulates** (`+=`) into input and parameter
//!   gradients, so callers zero them once per step (fused losses document their exception).
//! - Each fast kernel keeps a `*_naive` twin: plain loops, f64 accumulation where it matters,
//!   used only as the test oracle.
//! - What a backward needs (mean/rstd, softmax statistics) is an explicit output of the forward.
//! - Slices are row-major. Buffer lengths are checked with [`check_len`], which **panics** with
//!   the op name and both sizes: kernels are the inner layer and are only reached through modules
//!   ([`crate::nn`]) that have already validated user-facing shapes and return [`crate::Error`].
//!
//! Dimension legend used in every file:
//! `B` batch, `T` sequence length (`Tq` queries, `Tk` keys), `C` channels (model width),
//! `NH` heads, `HS` head size (`C = NH * HS`), `V` vocabulary, `N` rows (`B * T`),
//! `IC`/`OC` input/output channels of a linear layer, `M K N` matrix-product sizes.

pub mod adamw;
pub mod attention;
pub mod bf16;
pub mod blocked_rows;
pub mod crossentropy;
pub mod dropout;
pub mod embedding;
pub mod few_rows;
pub mod gelu;
pub mod half;
pub(crate) mod huge_words;
pub mod int8;
pub mod layernorm;
pub mod matmul;
pub mod panel_f32;
pub mod residual;
pub mod simd;
pub mod softmax;
pub mod strip_split;
pub mod team;
pub mod vmath;

/// Panics unless `got == want`, naming the op and the buffer. See the module docs for why
/// kernels panic rather than return errors.
#[inline]
#[track_caller]
pub fn check_len(op: &str, buffer: &str, got: usize, want: usize) {
    assert!(
        got == want,
        "{op}: buffer `{buffer}` has {got} elements, expected {want}"
    );
}

/// Panics unless the buffers of a linear layer `out (n, OC) = inp (n, IC) · Wᵀ + bias` have
/// their shapes, naming `op` and the buffer.
pub fn check_linear(
    op: &str,
    out: &[f32],
    inp: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
) {
    check_len(op, "out", out.len(), n * oc);
    check_len(op, "inp", inp.len(), n * ic);
    if let Some(b) = bias {
        check_len(op, "bias", b.len(), oc);
    }
}

/// Row-chunk size that gives each rayon thread a few chunks of at least `min_work` elements.
pub(crate) fn rows_per_task(rows: usize, row_len: usize, min_work: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_threads = rows.div_ceil(threads * 4).max(1);
    let by_work = min_work.div_ceil(row_len.max(1)).max(1);
    by_threads.max(by_work).min(rows.max(1))
}
