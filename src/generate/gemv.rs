//! Linear layers for decoding: `out (n, OC) = inp (n, IC) · Wᵀ + b` for a handful of rows,
//! reading the weight in whichever format the running model holds (packed bf16, a bf16 shadow,
//! or f32). The few-row kernels themselves live in [`crate::kernels::few_rows`].

use crate::kernels::few_rows::linear_small;
use crate::nn::linear::Linear;

/// `out = inp · Wᵀ + b` through [`linear_small`] for few rows, else the general kernel.
///
/// The weight is read, in this order of precedence, from:
/// - the packed bf16 matrices of a bf16 [`super::InferenceModel`] (inside
///   [`super::bf16_weights::with_bf16_matrices`]):
///   [`crate::kernels::bf16_decode::linear_packed_bf16`], half the bytes of f32;
/// - a training model's bf16 shadow (inside [`crate::nn::precision::with_bf16_weights`]):
///   [`crate::kernels::bf16::linear_small_bf16`];
/// - the f32 parameters `p`.
pub fn linear_infer(lin: &Linear, p: &[f32], out: &mut [f32], inp: &[f32], n: usize) {
    let b = lin.bias.map(|b| b.of(p));
    let (ic, oc, layout) = (lin.ic, lin.oc, lin.layout);
    let packed = super::bf16_weights::current_bf16_matrices(|mats| {
        let w = mats.and_then(|m| m.get(lin.weight))?;
        crate::kernels::bf16_decode::linear_packed_bf16(out, inp, w, b, n);
        Some(())
    });
    if packed.is_some() {
        return;
    }
    crate::nn::precision::current_shadow(|shadow| match shadow {
        Some(s) => {
            let w = &s[lin.weight.range()];
            crate::kernels::bf16::linear_small_bf16(out, inp, w, b, n, ic, oc, layout);
        }
        None => linear_small(out, inp, lin.weight.of(p), b, n, ic, oc, layout),
    });
}
