//! Dev probe of the int8 decode kernel: one GPT-2 124M decoding step's matrix products
//! (12 layers of `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`, then the LM head) in `Q8_0`
//! blocks for 1, 4, 8 and 64 rows, with distinct weights per layer (so the weights come from
//! memory, not cache). Prints ms per step, GB/s of weights read and the time per shape at one
//! row, medians of 7.
//!
//! ```sh
//! cargo run --release --example int8_probe
//! ```

use gpt::kernels::int8::{linear_int8, PackedI8};
use gpt::kernels::matmul::WeightLayout;
use gpt::rng::Rng;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let c = 768;
    let shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)];
    let mut rng = Rng::new(0);
    let layers: Vec<Vec<PackedI8>> = (0..12)
        .map(|_| {
            shapes
                .iter()
                .map(|&(ic, oc)| {
                    let w = rng.normal_vec(ic * oc, 0.02);
                    PackedI8::from_f32(&w, ic, oc, WeightLayout::InOut)
                })
                .collect()
        })
        .collect();
    let vocab = 50257;
    let head = PackedI8::from_f32(
        &rng.normal_vec(vocab * c, 0.02),
        c,
        vocab,
        WeightLayout::OutIn,
    );
    let bytes: usize = layers.iter().flatten().map(|m| m.bytes()).sum::<usize>() + head.bytes();
    println!(
        "threads {}, {:.1} MB of int8 weights per step",
        rayon::current_num_threads(),
        bytes as f64 / 1e6
    );
    for n in [1usize, 4, 8, 64] {
        let x = rng.normal_vec(n * 4 * c, 1.0);
        let mut out = vec![0.0f32; n * vocab];
        let mut times = Vec::new();
        let mut per_shape = vec![Vec::new(); 5];
        for _ in 0..7 {
            let t = Instant::now();
            let mut shape_t = [0.0f64; 5];
            for layer in &layers {
                for (s, m) in layer.iter().enumerate() {
                    let t0 = Instant::now();
                    let (ic, oc) = (m.ic(), m.oc());
                    linear_int8(&mut out[..n * oc], &x[..n * ic], m, None, n);
                    shape_t[s] += t0.elapsed().as_secs_f64();
                }
            }
            let t0 = Instant::now();
            linear_int8(&mut out, &x[..n * c], &head, None, n);
            shape_t[4] += t0.elapsed().as_secs_f64();
            times.push(t.elapsed().as_secs_f64());
            for (p, v) in per_shape.iter_mut().zip(shape_t) {
                p.push(v);
            }
        }
        let t = median(times);
        let names = ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj", "head"];
        let detail: Vec<String> = names
            .iter()
            .zip(per_shape)
            .map(|(n, v)| format!("{n} {:.2} ms", median(v) * 1e3))
            .collect();
        println!(
            "rows {n:>2}: {:.2} ms per step, {:.1} GB/s, {:.0} GOP/s ({})",
            t * 1e3,
            bytes as f64 / t / 1e9,
            2.0 * n as f64 * bytes as f64 / 1.0625 / t / 1e9,
            detail.join(", ")
        );
    }
}
