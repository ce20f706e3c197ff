//! Finite-difference gradient checks for every module on odd shapes (T = 7, C = 15, heads of
//! size 5), including padded keys, fully masked rows and cross-attention over a memory of
//! another length. The loss is `L = Σ r ⊙ output` for a fixed random `r`.

use gpt::kernels::matmul::WeightLayout;
use gpt::nn::attention::{AttentionConfig, MultiHeadAttention};
use gpt::nn::block::{Block, BlockConfig, BlockInput, Memory, NormPlacement};
use gpt::nn::layernorm::LayerNorm;
use gpt::nn::linear::Linear;
use gpt::nn::mlp::{Activation, Mlp, MlpConfig};
use gpt::nn::params::{ParamLayout, Params};
use gpt::nn::weights::Weights;
use gpt::rng::Rng;

const B: usize = 2;
const T: usize = 7;
const TK: usize = 5;
const C: usize = 15;
const NH: usize = 3;

thread_local! {
    static STEP: std::cell::Cell<f32> = const { std::cell::Cell::new(1e-2) };
}

fn randn(n: usize, std: f32, rng: &mut Rng) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 0.0, std);
    v
}

fn weighted(out: &[f32], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Compares analytic gradients to central differences at a spread of indices.
fn check(what: &str, analytic: &[f32], values: &mut [f32], loss: &mut dyn FnMut(&[f32]) -> f64) {
    // ReLU's kink makes wide steps unreliable; tests of ReLU set a narrower step.
    let h = STEP.with(|s| s.get());
    let n = values.len();
    let picks: Vec<usize> = (0..n).step_by((n / 23).max(1)).chain([n - 1]).collect();
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

/// Checks every parameter tensor of `params` and the input through `fwd` (forward + weighted
/// loss) given the analytic gradients.
fn check_params(params: &mut Params, fwd: &mut dyn FnMut(&[f32]) -> f64) {
    let grads = params.grad.clone();
    for e in params.layout.entries().to_vec() {
        let r = e.param.range();
        let mut data = params.data.clone();
        let an = grads[r.clone()].to_vec();
        let mut vals = data[r.clone()].to_vec();
        check(&e.name, &an, &mut vals, &mut |v: &[f32]| {
            data[r.clone()].copy_from_slice(v);
            fwd(&data)
        });
    }
}

#[test]
fn linear_gradients() {
    let mut rng = Rng::new(1);
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        let mut pl = ParamLayout::new();
        let lin = Linear::new(&mut pl, "l", 13, 5, true, layout, 0.5).unwrap();
        let mut params = Params::zeros(pl);
        params.init(&mut rng);
        rng.fill_normal(&mut params.data[lin.bias.unwrap().range()], 0.0, 0.5);
        let n = 7;
        let mut x = randn(n * 13, 1.0, &mut rng);
        let r = randn(n * 5, 1.0, &mut rng);
        let mut y = vec![0.0; n * 5];
        lin.forward(Weights::new(&params.data), &mut y, &x, n);
        let mut dx = vec![0.0; n * 13];
        lin.backward(
            Weights::new(&params.data),
            &mut params.grad,
            Some(&mut dx),
            &r,
            &x,
            n,
        );
        let xs = x.clone();
        check_params(&mut params, &mut |p: &[f32]| {
            let mut y = vec![0.0; n * 5];
            lin.forward(Weights::new(p), &mut y, &xs, n);
            weighted(&y, &r)
        });
        let p = params.data.clone();
        check("linear dx", &dx, &mut x, &mut |x: &[f32]| {
            let mut y = vec![0.0; n * 5];
            lin.forward(Weights::new(&p), &mut y, x, n);
            weighted(&y, &r)
        });
    }
}

#[test]
fn layernorm_gradients() {
    let mut rng = Rng::new(2);
    let mut pl = ParamLayout::new();
    let mut ln = LayerNorm::new(&mut pl, "ln", 13, 1e-5).unwrap();
    let mut params = Params::zeros(pl);
    rng.fill_normal(&mut params.data, 1.0, 0.3);
    let n = 7;
    let mut x = randn(n * 13, 2.0, &mut rng);
    let r = randn(n * 13, 1.0, &mut rng);
    ln.forward(Weights::new(&params.data), &x, n);
    let mut dx = vec![0.0; n * 13];
    ln.backward(
        Weights::new(&params.data),
        &mut params.grad,
        &mut dx,
        &r,
        &x,
    );
    let xs = x.clone();
    let mut ln2 = ln.clone();
    check_params(&mut params, &mut |p: &[f32]| {
        ln2.forward(Weights::new(p), &xs, n);
        weighted(&ln2.out, &r)
    });
    let p = params.data.clone();
    check("layernorm dx", &dx, &mut x, &mut |x: &[f32]| {
        ln2.forward(Weights::new(&p), x, n);
        weighted(&ln2.out, &r)
    });
}

fn acfg() -> AttentionConfig {
    AttentionConfig {
        n_embd: C,
        n_head: NH,
        bias: true,
        dropout: 0.0,
        std: 0.3,
        proj_std: 0.3,
    }
}

/// Key mask with the last two keys of batch 1 padded.
fn padded(tk: usize) -> Vec<u8> {
    let mut m = vec![1u8; B * tk];
    m[2 * tk - 1] = 0;
    m[2 * tk - 2] = 0;
    m
}

#[test]
fn self_attention_gradients_causal_and_padded() {
    let mut rng = Rng::new(3);
    for (causal, mask) in [
        (true, None),
        (false, Some(padded(T))),
        (
            true,
            Some({
                // Batch 0 has key 0 masked, so its causal query 0 sees no key at all.
                let mut m = padded(T);
                m[0] = 0;
                m
            }),
        ),
    ] {
        let mut pl = ParamLayout::new();
        let mut attn = MultiHeadAttention::new_self(&mut pl, "attn", &acfg(), causal).unwrap();
        let mut params = Params::zeros(pl);
        params.init(&mut rng);
        rng.fill_normal(&mut params.data, 0.0, 0.3);
        let mut x = randn(B * T * C, 1.0, &mut rng);
        let r = randn(B * T * C, 1.0, &mut rng);
        let km = mask.as_deref();
        attn.forward(
            Weights::new(&params.data),
            &x,
            None,
            km,
            None,
            B,
            T,
            false,
            &mut rng,
        );
        assert!(
            attn.out.iter().all(|v| v.is_finite()),
            "masked rows must not give NaN"
        );
        let mut dx = vec![0.0; B * T * C];
        attn.backward(
            Weights::new(&params.data),
            &mut params.grad,
            &x,
            None,
            km,
            None,
            &r,
            &mut dx,
            None,
        );
        assert!(dx.iter().chain(&params.grad).all(|v| v.is_finite()));
        let xs = x.clone();
        let mut a2 = attn.clone();
        let mut rng2 = Rng::new(0);
        check_params(&mut params, &mut |p: &[f32]| {
            a2.forward(Weights::new(p), &xs, None, km, None, B, T, false, &mut rng2);
            weighted(&a2.out, &r)
        });
        let p = params.data.clone();
        check("attention dx", &dx, &mut x, &mut |x: &[f32]| {
            a2.forward(Weights::new(&p), x, None, km, None, B, T, false, &mut rng2);
            weighted(&a2.out, &r)
        });
    }
}

#[test]
fn cross_attention_gradients_with_padded_memory() {
    let mut rng = Rng::new(4);
    let mut pl = ParamLayout::new();
    let mut attn = MultiHeadAttention::new_cross(&mut pl, "crossattention", &acfg()).unwrap();
    let mut params = Params::zeros(pl);
    rng.fill_normal(&mut params.data, 0.0, 0.3);
    let mut x = randn(B * T * C, 1.0, &mut rng);
    let mut mem = randn(B * TK * C, 1.0, &mut rng);
    let r = randn(B * T * C, 1.0, &mut rng);
    let mask = padded(TK);
    attn.forward(
        Weights::new(&params.data),
        &x,
        Some((&mem, TK)),
        Some(&mask),
        None,
        B,
        T,
        false,
        &mut rng,
    );
    let (mut dx, mut dmem) = (vec![0.0; B * T * C], vec![0.0; B * TK * C]);
    attn.backward(
        Weights::new(&params.data),
        &mut params.grad,
        &x,
        Some(&mem),
        Some(&mask),
        None,
        &r,
        &mut dx,
        Some(&mut dmem),
    );
    // Padded memory rows receive no gradient.
    assert!(dmem[(2 * TK - 1) * C..].iter().all(|&g| g == 0.0));
    let (xs, ms) = (x.clone(), mem.clone());
    let mut a2 = attn.clone();
    let mut rng2 = Rng::new(0);
    check_params(&mut params, &mut |p: &[f32]| {
        a2.forward(
            Weights::new(p),
            &xs,
            Some((&ms, TK)),
            Some(&mask),
            None,
            B,
            T,
            false,
            &mut rng2,
        );
        weighted(&a2.out, &r)
    });
    let p = params.data.clone();
    check("cross dx", &dx, &mut x, &mut |x: &[f32]| {
        a2.forward(
            Weights::new(&p),
            x,
            Some((&ms, TK)),
            Some(&mask),
            None,
            B,
            T,
            false,
            &mut rng2,
        );
        weighted(&a2.out, &r)
    });
    check("cross dmemory", &dmem, &mut mem, &mut |m: &[f32]| {
        a2.forward(
            Weights::new(&p),
            &xs,
            Some((m, TK)),
            Some(&mask),
            None,
            B,
            T,
            false,
            &mut rng2,
        );
        weighted(&a2.out, &r)
    });
}

#[test]
fn mlp_gradients_gelu_and_relu() {
    let mut rng = Rng::new(5);
    for activation in [Activation::Gelu, Activation::Relu] {
        STEP.with(|s| {
            s.set(if activation == Activation::Relu {
                1e-3
            } else {
                1e-2
            })
        });
        let cfg = MlpConfig {
            n_embd: C,
            hidden: 4 * C,
            bias: true,
            activation,
            dropout: 0.0,
            std: 0.3,
            proj_std: 0.3,
        };
        let mut pl = ParamLayout::new();
        let mut mlp = Mlp::new(&mut pl, "mlp", &cfg).unwrap();
        let mut params = Params::zeros(pl);
        rng.fill_normal(&mut params.data, 0.0, 0.3);
        let n = 7;
        let mut x = randn(n * C, 1.0, &mut rng);
        let r = randn(n * C, 1.0, &mut rng);
        mlp.forward(Weights::new(&params.data), &x, n, false, &mut rng);
        let mut dx = vec![0.0; n * C];
        mlp.backward(
            Weights::new(&params.data),
            &mut params.grad,
            &x,
            &r,
            &mut dx,
        );
        let xs = x.clone();
        let mut m2 = mlp.clone();
        let mut rng2 = Rng::new(0);
        check_params(&mut params, &mut |p: &[f32]| {
            m2.forward(Weights::new(p), &xs, n, false, &mut rng2);
            weighted(&m2.out, &r)
        });
        let p = params.data.clone();
        check("mlp dx", &dx, &mut x, &mut |x: &[f32]| {
            m2.forward(Weights::new(&p), x, n, false, &mut rng2);
            weighted(&m2.out, &r)
        });
    }
}

#[test]
fn block_gradients_pre_post_with_and_without_cross() {
    let mut rng = Rng::new(6);
    for norm in [NormPlacement::Pre, NormPlacement::Post] {
        for cross in [false, true] {
            let cfg = BlockConfig {
                n_embd: C,
                n_head: NH,
                hidden: 4 * C,
                bias: true,
                activation: Activation::Gelu,
                dropout: 0.0,
                norm,
                ln_eps: 1e-5,
                causal: true,
                cross,
                std: 0.3,
                proj_std: 0.3,
            };
            let mut pl = ParamLayout::new();
            let mut block = Block::new(&mut pl, "h.0", &cfg).unwrap();
            let mut params = Params::zeros(pl);
            params.init(&mut rng);
            for e in params.layout.entries().to_vec() {
                let (mean, std) = if e.name.contains("ln") && e.name.ends_with("weight") {
                    (1.0, 0.2)
                } else {
                    (0.0, 0.3)
                };
                rng.fill_normal(&mut params.data[e.param.range()], mean, std);
            }
            let mut x = randn(B * T * C, 1.0, &mut rng);
            let mut mem = randn(B * TK * C, 1.0, &mut rng);
            let r = randn(B * T * C, 1.0, &mut rng);
            let self_mask = padded(T);
            let mem_mask = padded(TK);
            let run = |block: &mut Block, p: &[f32], x: &[f32], m: &[f32]| -> f64 {
                let memory = cross.then_some(Memory {
                    data: m,
                    t: TK,
                    key_mask: Some(&mem_mask),
                });
                let inp = BlockInput {
                    x,
                    b: B,
                    t: T,
                    key_mask: Some(&self_mask),
                    positions: None,
                    memory,
                };
                block.forward(Weights::new(p), &inp, false, &mut Rng::new(0));
                weighted(block.output(), &r)
            };
            run(&mut block, &params.data, &x, &mem);
            let (mut dx, mut dmem) = (vec![0.0; B * T * C], vec![0.0; B * TK * C]);
            {
                let memory = cross.then_some(Memory {
                    data: &mem,
                    t: TK,
                    key_mask: Some(&mem_mask),
                });
                let inp = BlockInput {
                    x: &x,
                    b: B,
                    t: T,
                    key_mask: Some(&self_mask),
                    positions: None,
                    memory,
                };
                block.backward(
                    Weights::new(&params.data),
                    &mut params.grad,
                    &inp,
                    &r,
                    &mut dx,
                    cross.then_some(&mut dmem[..]),
                );
            }
            let (xs, ms) = (x.clone(), mem.clone());
            let mut b2 = block.clone();
            check_params(&mut params, &mut |p: &[f32]| run(&mut b2, p, &xs, &ms));
            let p = params.data.clone();
            check(
                &format!("block {norm:?} cross={cross} dx"),
                &dx,
                &mut x,
                &mut |x: &[f32]| run(&mut b2, &p, x, &ms),
            );
            if cross {
                check("block dmemory", &dmem, &mut mem, &mut |m: &[f32]| {
                    run(&mut b2, &p, &xs, m)
                });
            }
        }
    }
}

#[test]
fn dropout_in_training_mode_has_exact_gradients_for_a_fixed_mask() {
    // Re-seeding the RNG before every forward redraws the same mask, so the loss is a smooth
    // function of the inputs and finite differences apply.
    let mut rng = Rng::new(7);
    let cfg = MlpConfig {
        n_embd: C,
        hidden: 4 * C,
        bias: true,
        activation: Activation::Gelu,
        dropout: 0.3,
        std: 0.3,
        proj_std: 0.3,
    };
    let mut pl = ParamLayout::new();
    let mut mlp = Mlp::new(&mut pl, "mlp", &cfg).unwrap();
    let mut params = Params::zeros(pl);
    rng.fill_normal(&mut params.data, 0.0, 0.3);
    let n = 7;
    let mut x = rng.normal_vec(n * C, 1.0);
    let r = rng.normal_vec(n * C, 1.0);
    mlp.forward(Weights::new(&params.data), &x, n, true, &mut Rng::new(99));
    assert!(
        mlp.out.iter().filter(|&&v| v == 0.0).count() > 0,
        "some outputs dropped"
    );
    let mut dx = vec![0.0; n * C];
    mlp.backward(
        Weights::new(&params.data),
        &mut params.grad,
        &x,
        &r,
        &mut dx,
    );
    let xs = x.clone();
    let mut m2 = mlp.clone();
    check_params(&mut params, &mut |p: &[f32]| {
        m2.forward(Weights::new(p), &xs, n, true, &mut Rng::new(99));
        weighted(&m2.out, &r)
    });
    let p = params.data.clone();
    check("dropout mlp dx", &dx, &mut x, &mut |x: &[f32]| {
        m2.forward(Weights::new(&p), x, n, true, &mut Rng::new(99));
        weighted(&m2.out, &r)
    });
}
