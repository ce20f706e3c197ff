//! Token and position embeddings: table lookup (gather), its scatter-add backward, and the fixed
//! sinusoidal position table.
//!
//! - `embedding_forward`: `out[i, :] = table[ids[i], :]` (`torch.nn.Embedding`, GPT-2's `wte`
//!   and `wpe`). Backward: `dtable[ids[i], :] += dout[i, :]` for every `i`, so a repeated id
//!   receives the sum of its rows' gradients.
//! - `sinusoidal_positions`: "Attention Is All You Need" §3.5,
//!   `PE[pos, 2i] = sin(pos / 10000^(2i/C))`, `PE[pos, 2i+1] = cos(pos / 10000^(2i/C))`, the
//!   convention of the PyTorch tutorial and the Annotated Transformer (sines in even columns,
//!   cosines in odd). For odd `C` the last column is a sine.
//!
//! Shapes: `ids (N)`, `out`/`dout (N, C)`, `table`/`dtable (V, C)`, positions `(T, C)`.
//!
//! Ids are validated by callers (the model returns `Error::TokenOutOfRange`); here an id ≥ `V`
//! panics naming the id, its position and `V`, like every kernel's length checks.
//!
//! Why column blocks in the backward: splitting rows of `dout` across threads would let two
//! threads add into the same `dtable` row (a repeated token) and make the sum depend on timing.
//! Instead each task owns a block of columns of `dtable` and walks all `N` ids in order, so every
//! element is summed in the same order as the serial loop: bit-identical to
//! [`embedding_backward_naive`] on any thread count, and balanced however skewed the ids are.

use super::check_len;
use rayon::prelude::*;

/// Work (elements) below which a rayon task is not worth spawning.
const PAR_MIN: usize = 1 << 14;

/// Panics unless every id is below `v`, naming the first offender.
#[track_caller]
fn check_ids(op: &str, ids: &[u32], v: usize) {
    if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        panic!("{op}: token id {id} at position {i} is out of range for vocabulary size {v}");
    }
}

/// `out (N, C) = table[ids]`: row `i` of `out` is row `ids[i]` of `table (V, C)`.
pub fn embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    table: &[f32],
    n: usize,
    c: usize,
    v: usize,
) {
    check_len("embedding_forward", "out", out.len(), n * c);
    check_len("embedding_forward", "ids", ids.len(), n);
    check_len("embedding_forward", "table", table.len(), v * c);
    check_ids("embedding_forward", ids, v);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    out.par_chunks_mut(rows * c)
        .zip(ids.par_chunks(rows))
        .for_each(|(o, ids)| {
            for (o, &id) in o.chunks_exact_mut(c).zip(ids) {
                let id = id as usize;
                o.copy_from_slice(&table[id * c..(id + 1) * c]);
            }
        });
}

/// A raw pointer that may cross threads; users guarantee disjoint access (see its one use).
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used by `embedding_backward`, whose tasks write disjoint column blocks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole wrapper, not the bare field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Backward of [`embedding_forward`]: `dtable[ids[i], :] += dout[i, :]` for `i < N`.
/// Deterministic: bit-identical to [`embedding_backward_naive`] on any thread count.
pub fn embedding_backward(
    dtable: &mut [f32],
    dout: &[f32],
    ids: &[u32],
    n: usize,
    c: usize,
    v: usize,
) {
    check_len("embedding_backward", "dtable", dtable.len(), v * c);
    check_len("embedding_backward", "dout", dout.len(), n * c);
    check_len("embedding_backward", "ids", ids.len(), n);
    check_ids("embedding_backward", ids, v);
    if n == 0 || c == 0 {
        return;
    }
    // Column blocks of whole cache lines (16 floats) so tasks never share a line.
    let width = super::rows_per_task(c, n, PAR_MIN)
        .next_multiple_of(16)
        .min(c);
    let blocks = c.div_ceil(width);
    let base = SharedMut(dtable.as_mut_ptr());
    (0..blocks).into_par_iter().for_each(|b| {
        let (c0, c1) = (b * width, ((b + 1) * width).min(c));
        for (i, &id) in ids.iter().enumerate() {
            let src = &dout[i * c + c0..i * c + c1];
            // SAFETY: `id < v` was checked above, so `id * c + c1 <= v * c = dtable.len()`; this
            // task alone touches columns `c0..c1` of every row, so the slices of concurrent tasks
            // are disjoint, and `dtable` stays mutably borrowed by us until they all finish.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(base.get().add(id as usize * c + c0), c1 - c0)
            };
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    });
}

/// Writes the sinusoidal position table `out (T, C)`; see the module docs for the formula.
/// Computed in f64 and rounded once, so large positions keep full f32 accuracy.
pub fn sinusoidal_positions(out: &mut [f32], t: usize, c: usize) {
    check_len("sinusoidal_positions", "out", out.len(), t * c);
    if t == 0 || c == 0 {
        return;
    }
    // Inverse wavelengths 10000^(-2i/C), one per sine/cosine pair.
    let ln_base = 10000f64.ln();
    let inv_freq: Vec<f64> = (0..c.div_ceil(2))
        .map(|i| (-((2 * i) as f64) * ln_base / c as f64).exp())
        .collect();
    let rows = super::rows_per_task(t, c, PAR_MIN);
    out.par_chunks_mut(rows * c)
        .enumerate()
        .for_each(|(k, blk)| {
            for (r, row) in blk.chunks_exact_mut(c).enumerate() {
                let pos = (k * rows + r) as f64;
                for (j, o) in row.iter_mut().enumerate() {
                    let angle = pos * inv_freq[j / 2];
                    *o = if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
                }
            }
        });
}

/// Oracle for [`embedding_forward`].
#[allow(clippy::needless_range_loop)]
pub fn embedding_forward_naive(
    out: &mut [f32],
    ids: &[u32],
    table: &[f32],
    n: usize,
    c: usize,
    v: usize,
) {
    for i in 0..n {
        let id = ids[i] as usize;
        assert!(
            id < v,
            "embedding_forward_naive: token id {id} out of range for vocabulary size {v}"
        );
        for j in 0..c {
            out[i * c + j] = table[id * c + j];
        }
    }
}

/// Oracle for [`embedding_backward`]: the serial scatter-add, rows in order.
#[allow(clippy::needless_range_loop)]
pub fn embedding_backward_naive(
    dtable: &mut [f32],
    dout: &[f32],
    ids: &[u32],
    n: usize,
    c: usize,
    v: usize,
) {
    for i in 0..n {
        let id = ids[i] as usize;
        assert!(
            id < v,
            "embedding_backward_naive: token id {id} out of range for vocabulary size {v}"
        );
        for j in 0..c {
            dtable[id * c + j] += dout[i * c + j];
        }
    }
}

/// Oracle for [`sinusoidal_positions`]: the paper's formula, `pos / 10000^(2i/C)`, in f64.
#[allow(clippy::needless_range_loop)]
pub fn sinusoidal_positions_naive(out: &mut [f32], t: usize, c: usize) {
    for pos in 0..t {
        for j in 0..c {
            let two_i = (j - j % 2) as f64;
            let angle = pos as f64 / 10000f64.powf(two_i / c as f64);
            out[pos * c + j] = if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn gather_and_scatter_match_naive_with_repeated_ids() {
        let mut rng = Rng::new(41);
        for &(n, c, v) in &[(7, 13, 11), (1, 1, 1), (300, 100, 5), (64, 768, 50)] {
            // Few distinct ids relative to n, so repeats are certain.
            let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
            let table = rng.normal_vec(v * c, 1.0);
            let (mut o1, mut o2) = (vec![0.0; n * c], vec![0.0; n * c]);
            embedding_forward(&mut o1, &ids, &table, n, c, v);
            embedding_forward_naive(&mut o2, &ids, &table, n, c, v);
            assert_eq!(o1, o2);

            let dout = rng.normal_vec(n * c, 1.0);
            let init = rng.normal_vec(v * c, 1.0);
            let (mut d1, mut d2) = (init.clone(), init.clone());
            embedding_backward(&mut d1, &dout, &ids, n, c, v);
            embedding_backward_naive(&mut d2, &dout, &ids, n, c, v);
            assert_eq!(
                d1, d2,
                "scatter-add must be bit-identical to the serial order"
            );
        }
    }

    #[test]
    fn backward_is_independent_of_thread_count() {
        let mut rng = Rng::new(42);
        let (n, c, v) = (257, 200, 7);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let dout = rng.normal_vec(n * c, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut d = vec![0.0; v * c];
            pool.install(|| embedding_backward(&mut d, &dout, &ids, n, c, v));
            d
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn backward_matches_finite_differences() {
        // L = Σ g ⊙ table[ids] is linear in the table; check every entry, including rows used
        // twice and rows never used (gradient 0).
        let mut rng = Rng::new(43);
        let (n, c, v) = (7, 13, 11);
        let ids = [3u32, 0, 3, 10, 7, 3, 0];
        let table = rng.normal_vec(v * c, 1.0);
        let g = rng.normal_vec(n * c, 1.0);
        let loss = |table: &[f32]| -> f64 {
            let mut y = vec![0.0; n * c];
            embedding_forward_naive(&mut y, &ids, table, n, c, v);
            y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let mut d = vec![0.0; v * c];
        embedding_backward(&mut d, &g, &ids, n, c, v);
        let h = 1e-2f32;
        for i in 0..v * c {
            let (mut tp, mut tm) = (table.clone(), table.clone());
            tp[i] += h;
            tm[i] -= h;
            let fd = (loss(&tp) - loss(&tm)) / (2.0 * h as f64);
            assert!(
                (fd - d[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "dtable[{i}]: {fd} vs {}",
                d[i]
            );
        }
        assert!(
            d[c..2 * c].iter().all(|&x| x == 0.0),
            "unused id 1 must get no gradient"
        );
    }

    #[test]
    #[should_panic(expected = "token id 11 at position 2 is out of range for vocabulary size 11")]
    fn out_of_range_id_panics_naming_id_and_vocab() {
        let mut out = vec![0.0; 3 * 2];
        embedding_forward(&mut out, &[0, 1, 11], &[0.0; 22], 3, 2, 11);
    }

    #[test]
    fn sinusoidal_matches_paper_formula() {
        for &(t, c) in &[(7, 13), (50, 16), (1024, 768)] {
            let (mut a, mut b) = (vec![0.0; t * c], vec![0.0; t * c]);
            sinusoidal_positions(&mut a, t, c);
            sinusoidal_positions_naive(&mut b, t, c);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!((x - y).abs() <= 1e-6, "({t},{c}) [{i}]: {x} vs {y}");
            }
        }
        // Position 0 is (0, 1, 0, 1, ...); column 0 is sin(pos).
        let mut pe = vec![0.0; 3 * 4];
        sinusoidal_positions(&mut pe, 3, 4);
        assert_eq!(&pe[..4], &[0.0, 1.0, 0.0, 1.0]);
        assert!((pe[8] - 2f32.sin()).abs() < 1e-7 && (pe[9] - 2f32.cos()).abs() < 1e-7);
        // Column 2 of C = 4 has wavelength 2π·100: angle pos/100.
        assert!((pe[10] - 0.02f32.sin()).abs() < 1e-7);
    }
}
