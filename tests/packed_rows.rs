//! Packed rows for supervised fine-tuning (TRL's `packing` / `padding_free`): several examples
//! share one row of the batch, their positions restarting at 0, and attention stays inside each
//! example (the document mask). The promise is that a packed batch trains exactly as its
//! examples would alone:
//!
//! - the document-masked attention module's gradients agree with central finite differences;
//! - a small random GPT's hidden states, masked LM loss and every parameter gradient over packed
//!   rows (`forward_hidden_packed` + `lm_backward_rows` + `backward_hidden`) equal those of the
//!   examples run one by one (loss: sum of per-token losses over all tokens; gradients summed
//!   accordingly), in f32 and, within a looser bound, in bf16;
//! - positions that are not a packing are errors, not panics.
//!
//! (The kernel's packed path with one example per row equals the plain causal kernel bit for
//! bit: `kernels::attention::tests`.)

use gpt::error::Error;
use gpt::kernels::simd::{self, Isa};
use gpt::model::gpt::IGNORE_INDEX;
use gpt::model::{Gpt, GptConfig, Positions};
use gpt::nn::attention::{AttentionConfig, MultiHeadAttention};
use gpt::nn::block::NormPlacement;
use gpt::nn::embedding::{Embedding, EmbeddingConfig};
use gpt::nn::params::{ParamLayout, Params};
use gpt::nn::precision::Precision;
use gpt::nn::weights::Weights;
use gpt::rng::Rng;

const V: usize = 23;

// ---------------------------------------------------------------------------------------------
// Finite differences through the document-masked attention module
// ---------------------------------------------------------------------------------------------

fn weighted(out: &[f32], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Central differences at a spread of indices of `values` against `analytic`.
fn check(what: &str, analytic: &[f32], values: &mut [f32], loss: &mut dyn FnMut(&[f32]) -> f64) {
    let h = 1e-2f32;
    let n = values.len();
    let picks: Vec<usize> = (0..n).step_by((n / 29).max(1)).chain([n - 1]).collect();
    for i in picks {
        let orig = values[i];
        values[i] = orig + h;
        let lp = loss(values);
        values[i] = orig - h;
        let lm = loss(values);
        values[i] = orig;
        let fd = (lp - lm) / (2.0 * h as f64);
        let an = analytic[i] as f64;
        let tol = 1e-3 + 1e-2 * fd.abs().max(an.abs());
        assert!(
            (fd - an).abs() <= tol,
            "{what}[{i}]: finite difference {fd} vs analytic {an}"
        );
    }
}

#[test]
fn document_masked_attention_gradients_match_finite_differences() {
    const B: usize = 2;
    const T: usize = 9;
    const C: usize = 15;
    // Row 0: examples of 3, 4 and 2 tokens; row 1: 5, 3 and 1.
    let positions: Vec<u32> = [[0, 1, 2, 0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 0, 1, 2, 0]].concat();
    // Row 1's key 6 is padding too: the key mask and the document mask combine.
    let mut key_mask = [1u8; B * T];
    key_mask[T + 6] = 0;
    let cfg = AttentionConfig {
        n_embd: C,
        n_head: 3,
        bias: true,
        dropout: 0.0,
        std: 0.3,
        proj_std: 0.3,
    };
    let mut rng = Rng::new(3);
    for km in [None, Some(&key_mask[..])] {
        let mut pl = ParamLayout::new();
        let mut attn = MultiHeadAttention::new_self(&mut pl, "attn", &cfg, true).unwrap();
        let mut params = Params::zeros(pl);
        rng.fill_normal(&mut params.data, 0.0, 0.3);
        let x = rng.normal_vec(B * T * C, 1.0);
        let r = rng.normal_vec(B * T * C, 1.0);
        let pos = Some(&positions[..]);
        let p = Weights::new(&params.data);
        attn.forward(p, &x, None, km, pos, B, T, false, &mut rng);
        let mut dx = vec![0.0; B * T * C];
        let g = &mut params.grad;
        attn.backward(p, g, &x, None, km, pos, &r, &mut dx, None);
        assert!(dx.iter().chain(&params.grad).all(|v| v.is_finite()));

        let mut a2 = attn.clone();
        let mut rng2 = Rng::new(0);
        let mut run = |p: &[f32], x: &[f32]| {
            a2.forward(Weights::new(p), x, None, km, pos, B, T, false, &mut rng2);
            weighted(&a2.out, &r)
        };
        let grads = params.grad.clone();
        for e in params.layout.entries().to_vec() {
            let range = e.param.range();
            let mut data = params.data.clone();
            let mut vals = data[range.clone()].to_vec();
            check(
                &e.name,
                &grads[range.clone()],
                &mut vals,
                &mut |v: &[f32]| {
                    data[range.clone()].copy_from_slice(v);
                    run(&data, &x)
                },
            );
        }
        let data = params.data.clone();
        check("dx", &dx, &mut x.clone(), &mut |x: &[f32]| run(&data, x));

        // The first token of an example sees only itself: its gradient reaches no other
        // example's rows. Row 0's token 3 (an example's start) with dout only there.
        let mut r3 = vec![0.0; B * T * C];
        r3[3 * C..4 * C].copy_from_slice(&r[3 * C..4 * C]);
        let mut dx3 = vec![0.0; B * T * C];
        let mut g3 = vec![0.0; params.grad.len()];
        attn.forward(p, &x, None, km, pos, B, T, false, &mut rng);
        attn.backward(p, &mut g3, &x, None, km, pos, &r3, &mut dx3, None);
        for (t, row) in dx3.chunks_exact(C).enumerate() {
            let touched = row.iter().any(|&v| v != 0.0);
            assert_eq!(touched, t == 3, "token {t}: gradient leaks across examples");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packed vs alone on a small GPT
// ---------------------------------------------------------------------------------------------

/// A small random GPT: the `tiny` preset shrunk, weights wide enough (std 0.2) that attention
/// is far from uniform, so a leak across examples would show.
fn model(norm: NormPlacement, positions: Positions, rng: &mut Rng) -> Gpt {
    let mut cfg = GptConfig::preset("tiny", V).unwrap();
    cfg.n_ctx = 24;
    cfg.n_layer = 2;
    cfg.n_head = 4;
    cfg.n_embd = 32;
    cfg.norm = norm;
    cfg.positions = positions;
    assert_eq!(cfg.dropout, 0.0);
    let mut gpt = Gpt::new(cfg, rng).unwrap();
    for e in gpt.params.layout.entries().to_vec() {
        let (mean, std) = if e.name.contains("ln") && e.name.ends_with("weight") {
            (1.0, 0.1)
        } else {
            (0.0, 0.2)
        };
        rng.fill_normal(&mut gpt.params.data[e.param.range()], mean, std);
    }
    gpt
}

/// One example: its tokens and next-token targets (the last one ignored).
struct Example {
    ids: Vec<u32>,
    targets: Vec<i32>,
}

fn example(len: usize, rng: &mut Rng) -> Example {
    let ids: Vec<u32> = (0..len).map(|_| rng.below(V as u64) as u32).collect();
    let mut targets: Vec<i32> = ids[1..].iter().map(|&x| x as i32).collect();
    targets.push(IGNORE_INDEX);
    Example { ids, targets }
}

/// Hidden states `(N, C)`, mean loss and parameter gradients of one LM step.
struct Step {
    hidden: Vec<f32>,
    loss: f64,
    grad: Vec<f32>,
}

/// Packs `rows` (each a list of example indices) into rows of `t` tokens, trailing padding
/// (id 0, target ignored) packed as one more example, and runs one step. Returns the step and,
/// for every example, the offset of its first token in the `(B·T)` batch.
fn packed_step(gpt: &mut Gpt, ex: &[Example], rows: &[&[usize]], t: usize) -> (Step, Vec<usize>) {
    let (mut ids, mut targets, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    let mut at = vec![0; ex.len()];
    for row in rows {
        let start = ids.len();
        for &i in *row {
            at[i] = ids.len();
            ids.extend_from_slice(&ex[i].ids);
            targets.extend_from_slice(&ex[i].targets);
            positions.extend(0..ex[i].ids.len() as u32);
        }
        let pad = t - (ids.len() - start);
        ids.extend(std::iter::repeat_n(0, pad));
        targets.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
        positions.extend(0..pad as u32);
    }
    let b = rows.len();
    let c = gpt.config.n_embd;
    gpt.params.zero_grad();
    let mut rng = Rng::new(0);
    gpt.forward_hidden_packed(&ids, Some(&positions), b, t, true, &mut rng)
        .unwrap();
    let hidden = gpt.hidden().to_vec();
    let mut dh = vec![0.0; b * t * c];
    let loss = gpt.lm_backward_rows(&targets, 1.0, &mut dh).unwrap() as f64;
    gpt.backward_hidden(&dh);
    let grad = gpt.params.grad.clone();
    (Step { hidden, loss, grad }, at)
}

/// Each example alone (a batch of one row, positions `0..n`), its loss weighted by its share
/// of the counted tokens, gradients summed. Hidden states concatenated in example order.
fn alone_step(gpt: &mut Gpt, ex: &[Example]) -> Step {
    let counted = |e: &Example| e.targets.iter().filter(|&&y| y != IGNORE_INDEX).count();
    let total: usize = ex.iter().map(counted).sum();
    let c = gpt.config.n_embd;
    gpt.params.zero_grad();
    let (mut hidden, mut loss) = (Vec::new(), 0.0);
    let mut rng = Rng::new(0);
    for e in ex {
        let n = e.ids.len();
        let share = counted(e) as f32 / total as f32;
        gpt.forward_hidden(&e.ids, 1, n, true, &mut rng).unwrap();
        hidden.extend_from_slice(gpt.hidden());
        let mut dh = vec![0.0; n * c];
        let l = gpt.lm_backward_rows(&e.targets, share, &mut dh).unwrap();
        loss += l as f64 * share as f64;
        gpt.backward_hidden(&dh);
    }
    Step {
        hidden,
        loss,
        grad: gpt.params.grad.clone(),
    }
}

/// `max |a - b| / max |b|`: the error relative to the tensor's scale.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    diff / scale.max(1e-30)
}

/// Compares a packed step with the examples alone; returns the worst relative error of the
/// hidden states, the loss and the gradients (per tensor).
fn compare(gpt: &mut Gpt, ex: &[Example], rows: &[&[usize]], t: usize) -> (f64, f64, f64) {
    let c = gpt.config.n_embd;
    let (packed, at) = packed_step(gpt, ex, rows, t);
    let alone = alone_step(gpt, ex);
    // The packed hidden states of each example, in example order.
    let mut h = Vec::new();
    for (e, &a) in ex.iter().zip(&at) {
        h.extend_from_slice(&packed.hidden[a * c..(a + e.ids.len()) * c]);
    }
    let e_hidden = rel(&h, &alone.hidden);
    let e_loss = (packed.loss - alone.loss).abs() / alone.loss.abs();
    let mut e_grad = 0.0f64;
    for e in gpt.params.layout.entries() {
        let r = e.param.range();
        let err = rel(&packed.grad[r.clone()], &alone.grad[r.clone()]);
        assert!(
            alone.grad[r].iter().any(|&g| g != 0.0),
            "{}: no gradient at all",
            e.name
        );
        e_grad = e_grad.max(err);
    }
    (e_hidden, e_loss, e_grad)
}

/// Examples of 5, 9 and 4 tokens packed into one row of 18; then a batch of two rows of 18:
/// the same three and two more of 7 and 6 with 5 tokens of padding.
fn check_packing(precision: Precision, tol: f64) {
    let mut rng = Rng::new(21);
    for (norm, positions) in [
        (NormPlacement::Pre, Positions::Learned),
        (NormPlacement::Post, Positions::Sinusoidal),
    ] {
        let mut gpt = model(norm, positions, &mut rng);
        let ex: Vec<Example> = [5, 9, 4, 7, 6]
            .iter()
            .map(|&n| example(n, &mut rng))
            .collect();
        if precision == Precision::Bf16 {
            // The bf16 products really run: other hidden states than in f32.
            let hidden = |gpt: &mut Gpt| {
                gpt.forward_hidden(&ex[0].ids, 1, 5, false, &mut Rng::new(0))
                    .unwrap();
                gpt.hidden().to_vec()
            };
            let h32 = hidden(&mut gpt);
            gpt.set_precision(Precision::Bf16);
            assert!(
                rel(&hidden(&mut gpt), &h32) > 1e-4,
                "bf16 gave f32's results"
            );
        }
        for (what, ex, rows) in [
            ("one row of 18", &ex[..3], &[&[0usize, 1, 2][..]][..]),
            (
                "two rows, padded",
                &ex[..],
                &[&[0usize, 1, 2][..], &[3, 4][..]][..],
            ),
        ] {
            let (h, l, g) = compare(&mut gpt, ex, rows, 18);
            println!(
                "{precision:?} {norm:?} {positions:?} {what}: relative error hidden {h:.2e}, \
                 loss {l:.2e}, gradients {g:.2e} (tolerance {tol:.0e})"
            );
            let tag = format!("{precision:?} {norm:?} {positions:?} {what}");
            assert!(h <= tol, "{tag}: hidden states differ by {h:e}");
            assert!(l <= tol, "{tag}: loss differs by {l:e}");
            assert!(g <= tol, "{tag}: gradients differ by {g:e}");
        }
    }
}

#[test]
fn packed_rows_equal_examples_alone_in_f32() {
    check_packing(Precision::F32, 1e-5);
}

/// bf16 rounds each product's inputs the same way packed or not; what differs is the f32
/// accumulation order of products of other shapes (and of the gradients summed over rows).
/// Measured on an AVX-512 BF16 CPU: hidden states equal bit for bit, loss and gradients
/// within 3e-7; the bound leaves room for other CPUs' kernels. Every rung of the SIMD ladder
/// (the portable bf16 kernels included) is checked, each held for the whole comparison.
#[test]
fn packed_rows_equal_examples_alone_in_bf16() {
    for rung in Isa::ALL {
        let _held = simd::limit(rung);
        println!("SIMD rung {rung:?} (runs {:?})", simd::isa());
        check_packing(Precision::Bf16, 1e-4);
    }
}

/// The test above has teeth: the same packed row without positions (one long sequence) gives
/// other hidden states for every example but the first.
#[test]
fn without_positions_a_packed_row_is_one_sequence() {
    let mut rng = Rng::new(22);
    let mut gpt = model(NormPlacement::Pre, Positions::Learned, &mut rng);
    let ex: Vec<Example> = [5, 9, 4].iter().map(|&n| example(n, &mut rng)).collect();
    let ids: Vec<u32> = ex.iter().flat_map(|e| e.ids.iter().copied()).collect();
    let c = gpt.config.n_embd;
    gpt.forward_hidden(&ids, 1, 18, false, &mut rng).unwrap();
    let joined = gpt.hidden().to_vec();
    gpt.forward_hidden(&ex[1].ids, 1, 9, false, &mut rng)
        .unwrap();
    let second = gpt.hidden().to_vec();
    assert!(rel(&joined[5 * c..14 * c], &second) > 1e-2);
}

// ---------------------------------------------------------------------------------------------
// Bad positions
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_positions_are_errors_not_panics() {
    let mut rng = Rng::new(23);
    let mut gpt = model(NormPlacement::Pre, Positions::Learned, &mut rng);
    let ids = vec![1u32; 8];
    let mut run = |pos: &[u32]| {
        gpt.forward_hidden_packed(&ids, Some(pos), 2, 4, true, &mut Rng::new(0))
            .map_err(|e| e.to_string())
    };
    assert!(run(&[0, 1, 0, 1, 0, 1, 2, 3]).is_ok());
    let wrong_len = run(&[0, 1, 2, 3]).unwrap_err();
    assert!(wrong_len.contains("positions of length 4"), "{wrong_len}");
    let not_zero = run(&[0, 1, 2, 3, 1, 2, 3, 4]).unwrap_err();
    assert!(
        not_zero.contains("row 1 starts at position 1"),
        "{not_zero}"
    );
    let jump = run(&[0, 1, 3, 4, 0, 1, 2, 3]).unwrap_err();
    assert!(
        jump.contains("row 0, column 2: position 3 after 1"),
        "{jump}"
    );
    let repeat = run(&[0, 1, 2, 3, 0, 1, 1, 2]).unwrap_err();
    assert!(
        repeat.contains("row 1, column 2: position 1 after 1"),
        "{repeat}"
    );

    // The embedding on its own checks the table's size.
    let mut layout = ParamLayout::new();
    let cfg = EmbeddingConfig {
        table: "wte.weight",
        position_table: "wpe.weight",
        vocab_size: V,
        n_embd: 4,
        n_pos: 3,
        positions: Positions::Learned,
        scaled: false,
        std: 0.02,
        dropout: 0.0,
    };
    let mut embed = Embedding::new(&mut layout, &cfg).unwrap();
    let params = Params::zeros(layout);
    let p = Weights::new(&params.data);
    let err = embed
        .forward(p, &[1, 2], Some(&[2, 3]), 1, 2, false, &mut rng)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                value: 3,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("position of token 1"), "{err}");
    let err = embed
        .forward(p, &[1, 2], Some(&[0]), 1, 2, false, &mut rng)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let err = embed
        .forward(p, &[1, 2, 3, 4], None, 1, 4, false, &mut rng)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                value: 4,
                limit: 3,
                ..
            }
        ),
        "{err}"
    );
}
