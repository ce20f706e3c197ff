//! Dev probe of the 16-bit decode kernel against the host's momentary read bandwidth: one
//! GPT-2 124M decoding step's bf16 products for one row (12 layers of `c_attn`, `attn.c_proj`,
//! `c_fc`, `mlp.c_proj`, distinct weights per layer, then the 77 MB LM head), and right beside
//! them a plain 64-lane sum over a buffer of the head's size and the same sum over buffers of
//! the 48 layer sizes one after another (each split over the threads), in rounds that also run
//! the bench's read probe before and after. This host's bandwidth moves between about 27 and 43
//! GB/s from one second to the next; the probe shows whether the kernel follows it.
//!
//! ```sh
//! cargo run --release --example half_probe
//! ```

use gpt::bench::bandwidth::read_bandwidth;
use gpt::kernels::half::{linear_half, HalfFormat, PackedHalf};
use gpt::kernels::matmul::WeightLayout;
use gpt::rng::Rng;
use rayon::prelude::*;

#[path = "common/timing.rs"]
mod timing;

/// Median seconds of 7 calls of `f`.
fn time(f: &mut dyn FnMut()) -> f64 {
    timing::median_secs(7, f)
}

/// The read probe's inner loop: a sum with 64 lanes.
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 64];
    for v in x.chunks_exact(64) {
        for (a, &b) in acc.iter_mut().zip(v) {
            *a += b;
        }
    }
    acc.iter().sum()
}

fn main() {
    let (c, vocab) = (768, 50257);
    let shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)];
    let mut rng = Rng::new(0);
    let bf16 =
        |w: &[f32], ic, oc, layout| PackedHalf::from_f32(w, ic, oc, layout, HalfFormat::Bf16);
    let layers: Vec<PackedHalf> = (0..12)
        .flat_map(|_| shapes)
        .map(|(ic, oc)| bf16(&rng.normal_vec(ic * oc, 0.02), ic, oc, WeightLayout::InOut))
        .collect();
    let head = bf16(
        &rng.normal_vec(vocab * c, 0.02),
        c,
        vocab,
        WeightLayout::OutIn,
    );
    let layer_bytes: usize = layers.iter().map(|m| m.ic() * m.oc() * 2).sum();
    let head_bytes = vocab * c * 2;
    let flat = vec![1.0f32; head_bytes / 4];
    let layer_bufs: Vec<Vec<f32>> = layers
        .iter()
        .map(|m| vec![1.0f32; m.ic() * m.oc() / 2])
        .collect();
    let x = rng.normal_vec(4 * c, 1.0);
    let mut out = vec![0.0f32; vocab];
    let gbs = |bytes: usize, s: f64| bytes as f64 / s / 1e9;
    gpt::threads::on_pool(|| {
        println!(
            "threads {}; GB/s of weights read",
            rayon::current_num_threads()
        );
        for round in 0..8 {
            let before = read_bandwidth();
            let tl = time(&mut || {
                for m in &layers {
                    linear_half(&mut out[..m.oc()], &x[..m.ic()], m, None, 1);
                }
            });
            let th = time(&mut || linear_half(&mut out, &x[..c], &head, None, 1));
            let ts = time(&mut || {
                let t: f32 = flat.par_chunks(flat.len() / 2).map(sum).sum();
                std::hint::black_box(t);
            });
            let th2 = time(&mut || linear_half(&mut out, &x[..c], &head, None, 1));
            // The same 48 sizes summed one after another, each split over the threads.
            let tsl = time(&mut || {
                for b in &layer_bufs {
                    let t: f32 = b.par_chunks(b.len().div_ceil(2)).map(sum).sum();
                    std::hint::black_box(t);
                }
            });
            println!(
                "round {round}: read probe {before:.1} / {:.1} | 48 layer products {:.1} | head {:.1} | sum of the head's size {:.1} | head again {:.1} | sums of the 48 layer sizes {:.1}",
                read_bandwidth(),
                gbs(layer_bytes, tl),
                gbs(head_bytes, th),
                gbs(head_bytes, ts),
                gbs(head_bytes, th2),
                gbs(layer_bytes, tsl)
            );
        }
    });
}
