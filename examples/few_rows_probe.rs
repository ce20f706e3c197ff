//! Dev probe of the small-batch decode kernels: one GPT-2 124M decoding step's matrix products
//! (12 layers of `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj` as `(IC, OC)` weights, then the
//! LM head packed in panels) for 1 to 64 rows, with distinct weights per layer as in the model
//! (so the weights come from memory, not cache). Prints ms per step and GFLOP/s, median of 9,
//! beside the same products through `gemm` (median of 5).
//!
//! ```sh
//! cargo run --release --example few_rows_probe
//! ```

use gpt::kernels::few_rows::{linear_small, F32_STREAM_ROWS};
use gpt::kernels::matmul::linear_forward;
use gpt::kernels::matmul::WeightLayout;
use gpt::kernels::panel_f32::{linear_panels_f32, PanelsF32};
use gpt::rng::Rng;
use std::time::Instant;

/// A linear layer's product: `(out, inp, w, bias, n, ic, oc, layout)`.
type Product = fn(&mut [f32], &[f32], &[f32], Option<&[f32]>, usize, usize, usize, WeightLayout);

fn main() {
    let c = 768;
    let shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)];
    let mut rng = Rng::new(0);
    let layers: Vec<Vec<Vec<f32>>> = (0..12)
        .map(|_| {
            shapes
                .iter()
                .map(|&(ic, oc)| rng.normal_vec(ic * oc, 0.02))
                .collect()
        })
        .collect();
    let vocab = 50257;
    // The same layer weights packed in panels (what `InferenceModel` could hold instead).
    let layer_panels: Vec<Vec<PanelsF32>> = layers
        .iter()
        .map(|layer| {
            layer
                .iter()
                .zip(&shapes)
                .map(|(w, &(ic, oc))| PanelsF32::pack(w, ic, oc, WeightLayout::InOut))
                .collect()
        })
        .collect();
    let head_f32 = rng.normal_vec(vocab * c, 0.02);
    let head = PanelsF32::pack(&head_f32, c, vocab, WeightLayout::OutIn);
    let params: usize = 12 * shapes.iter().map(|(a, b)| a * b).sum::<usize>() + vocab * c;
    // The machine's matmul peak in this run: a 1024 × 768 × 3072 product through `gemm`.
    let (m, k, nn) = (1024, 768, 3072);
    let (a, b) = (rng.normal_vec(m * k, 1.0), rng.normal_vec(k * nn, 1.0));
    let mut cbuf = vec![0.0f32; m * nn];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        linear_forward(&mut cbuf, &a, &b, None, m, k, nn, WeightLayout::InOut);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "threads {}, matmul peak {:.0} GFLOP/s",
        rayon::current_num_threads(),
        2.0 * (m * k * nn) as f64 / best / 1e9
    );
    // Every count up to the threshold (past it `linear_small` is `gemm` itself).
    for n in [1usize, 2, 4, 8, 9, 16, 32, F32_STREAM_ROWS] {
        let x = rng.normal_vec(n * 4 * c, 1.0);
        let mut out = vec![0.0f32; n * vocab];
        // The four layer products of every block through `product` (same signature for ours
        // and `gemm`'s).
        let layer_products = |out: &mut [f32], product: Product| {
            for layer in &layers {
                for (w, &(ic, oc)) in layer.iter().zip(&shapes) {
                    let (o, i) = (&mut out[..n * oc], &x[..n * ic]);
                    product(o, i, w, None, n, ic, oc, WeightLayout::InOut);
                }
            }
        };
        let mut times = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            layer_products(&mut out, linear_small);
            let t_layers = t.elapsed().as_secs_f64();
            linear_panels_f32(&mut out, &x[..n * c], &head, None, n);
            times.push((t.elapsed().as_secs_f64(), t_layers));
        }
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (total, layers_t) = times[times.len() / 2];
        // The same products through `gemm` (what more rows than the threshold run).
        let mut gemm_t = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            layer_products(&mut out, linear_forward);
            let h = &head_f32;
            linear_forward(
                &mut out,
                &x[..n * c],
                h,
                None,
                n,
                c,
                vocab,
                WeightLayout::OutIn,
            );
            gemm_t.push(t.elapsed().as_secs_f64());
        }
        gemm_t.sort_by(|a, b| a.total_cmp(b));
        print!("gemm {:.2} ms | ", gemm_t[2] * 1e3);
        let mut panel_t = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            for layer in &layer_panels {
                for m in layer {
                    let (o, i) = (&mut out[..n * m.oc()], &x[..n * m.ic()]);
                    linear_panels_f32(o, i, m, None, n);
                }
            }
            panel_t.push(t.elapsed().as_secs_f64());
        }
        panel_t.sort_by(|a, b| a.total_cmp(b));
        print!("layers in panels {:.2} ms | ", panel_t[4] * 1e3);
        println!(
            "rows {n}: {:.2} ms per step ({:.2} ms layers, {:.2} ms head), {:.1} GFLOP/s",
            total * 1e3,
            layers_t * 1e3,
            (total - layers_t) * 1e3,
            2.0 * (n * params) as f64 / total / 1e9
        );
    }
}
