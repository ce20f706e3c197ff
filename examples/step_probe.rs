//! Dev probe: how much of a 16-bit decoding step the joins cost. One GPT-2 124M step's bf16
//! products for one row (12 layers × `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`) run three
//! ways, alternating in rounds: (a) each product split over the threads with a join after it
//! (48 joins, today's step); (b) each thread owning whole blocks of consecutive products, its
//! heads' `c_attn` columns then those heads' rows of `c_proj`, its half of `c_fc`'s columns then
//! those rows of `mlp.c_proj` (24 joins); (c) the same blocks with no join at all (the bound of
//! removing joins); (d) today's split through `row_block_half`; (e) the same with four
//! dynamically claimed tasks per thread.
//!
//! ```sh
//! cargo run --release --example step_probe
//! ```

use gpt::bench::bandwidth::read_bandwidth;
use gpt::kernels::half::{linear_half, row_block_half, HalfFormat, HalfPath, PackedHalf};
use gpt::kernels::matmul::WeightLayout;
use gpt::kernels::team;
use gpt::rng::Rng;

#[path = "common/timing.rs"]
mod timing;

/// Median seconds of 9 calls of `f`.
fn time(f: &mut dyn FnMut()) -> f64 {
    timing::median_secs(9, f)
}

fn main() {
    let c = 768;
    let shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)];
    let mut rng = Rng::new(0);
    let layers: Vec<[PackedHalf; 4]> = (0..12)
        .map(|_| {
            shapes.map(|(ic, oc)| {
                PackedHalf::from_f32(
                    &rng.normal_vec(ic * oc, 0.02),
                    ic,
                    oc,
                    WeightLayout::InOut,
                    HalfFormat::Bf16,
                )
            })
        })
        .collect();
    let bytes: usize = shapes.iter().map(|(i, o)| i * o * 2).sum::<usize>() * 12;
    let x = rng.normal_vec(4 * c, 1.0);
    let mut out = vec![0.0f32; 4 * c];
    let path = HalfPath::detect();
    gpt::threads::on_pool(|| {
        let threads = rayon::current_num_threads();
        println!("threads {threads}; GB/s of weights read (median of 9 steps per round)");
        // Thread t's share: heads (12 / T each) and c_fc strips (96 / T each).
        let share = |t: usize, n: usize| (t * n / threads, (t + 1) * n / threads);
        let attn_block = |t: usize, l: &[PackedHalf; 4]| {
            let (h0, h1) = share(t, 12);
            let mut qkv = vec![0.0f32; 3 * (h1 - h0) * 64];
            for (part, o) in qkv.chunks_exact_mut((h1 - h0) * 64).enumerate() {
                row_block_half(
                    path,
                    o,
                    &x[..c],
                    &l[0],
                    part * 24 + 2 * h0..part * 24 + 2 * h1,
                    0..c,
                );
            }
            let mut p = vec![0.0f32; c];
            row_block_half(
                path,
                &mut p,
                &qkv[..(h1 - h0) * 64],
                &l[1],
                0..24,
                h0 * 64..h1 * 64,
            );
            std::hint::black_box(&p);
        };
        let mlp_block = |t: usize, l: &[PackedHalf; 4]| {
            let (s0, s1) = share(t, 96);
            let mut h = vec![0.0f32; (s1 - s0) * 32];
            row_block_half(path, &mut h, &x[..c], &l[2], s0..s1, 0..c);
            let mut p = vec![0.0f32; c];
            row_block_half(path, &mut p, &h, &l[3], 0..24, s0 * 32..s1 * 32);
            std::hint::black_box(&p);
        };
        for round in 0..8 {
            let before = read_bandwidth();
            let ta = time(&mut || {
                for l in &layers {
                    for m in l {
                        linear_half(&mut out[..m.oc()], &x[..m.ic()], m, None, 1);
                    }
                }
            });
            let tb = time(&mut || {
                for l in &layers {
                    team::run(threads, |t| attn_block(t, l));
                    team::run(threads, |t| mlp_block(t, l));
                }
            });
            let tc = time(&mut || {
                team::run(threads, |t| {
                    for l in &layers {
                        attn_block(t, l);
                        mlp_block(t, l);
                    }
                })
            });
            let per_matrix = |tasks: usize| {
                for l in &layers {
                    for m in l {
                        let strips = m.oc().div_ceil(32);
                        team::run(tasks, |t| {
                            let (s0, s1) = (t * strips / tasks, (t + 1) * strips / tasks);
                            let mut o = vec![0.0f32; (s1 - s0) * 32];
                            row_block_half(path, &mut o, &x[..m.ic()], m, s0..s1, 0..m.ic());
                            std::hint::black_box(&o);
                        });
                    }
                }
            };
            let td = time(&mut || per_matrix(threads));
            let te = time(&mut || per_matrix(4 * threads));
            let gbs = |s: f64| bytes as f64 / s / 1e9;
            println!(
                "          (d) 48 joins, row_block_half {:.1} | (e) 48 joins, {} dynamic tasks each {:.1}",
                gbs(td),
                4 * threads,
                gbs(te)
            );
            println!(
                "round {round}: read probe {before:.1} / {:.1} | (a) 48 joins {:.1} | (b) 24 joins {:.1} | (c) no join {:.1}",
                read_bandwidth(),
                gbs(ta),
                gbs(tb),
                gbs(tc)
            );
        }
    });
}
