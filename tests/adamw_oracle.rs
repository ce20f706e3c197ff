//! AdamW against the textbook in f64 (Loshchilov & Hutter 2019, Algorithm 2, with PyTorch's
//! placement of ε outside the bias-corrected square root), written here independently of the
//! kernel: 30 steps, two parameter groups (a decayed matrix and an undecayed bias and gain),
//! gradients whose scale changes by 10⁴ across steps and a learning rate that changes every
//! step (as a schedule does). Measured worst relative error ≈ 1e-6; the bound is 5e-6.

use gpt::nn::params::{Init, ParamLayout, Params};
use gpt::optim::adamw::{AdamW, AdamWConfig};
use gpt::rng::Rng;

/// The f64 oracle's state.
struct Oracle {
    theta: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    decay: Vec<bool>,
    t: i32,
}

impl Oracle {
    #[allow(clippy::needless_range_loop)] // the textbook indexes five arrays by i
    fn step(&mut self, g: &[f64], lr: f64, c: &AdamWConfig) {
        self.t += 1;
        let (b1, b2, eps, wd) = (
            c.beta1 as f64,
            c.beta2 as f64,
            c.eps as f64,
            c.weight_decay as f64,
        );
        for i in 0..self.theta.len() {
            if self.decay[i] {
                self.theta[i] -= lr * wd * self.theta[i];
            }
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            let m_hat = self.m[i] / (1.0 - b1.powi(self.t));
            let v_hat = self.v[i] / (1.0 - b2.powi(self.t));
            self.theta[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

fn run(config: AdamWConfig) -> f64 {
    let mut layout = ParamLayout::new();
    layout.add("w", &[8, 12], true, Init::Normal(0.5)).unwrap();
    layout.add("b", &[12], false, Init::Normal(0.5)).unwrap();
    layout.add("ln", &[5], false, Init::Ones).unwrap();
    let decay: Vec<bool> = layout
        .entries()
        .iter()
        .flat_map(|e| std::iter::repeat_n(e.decay, e.param.len))
        .collect();
    let mut params = Params::zeros(layout);
    let mut rng = Rng::new(21);
    params.init(&mut rng);
    let mut opt = AdamW::new(&params.layout, config);
    let mut oracle = Oracle {
        theta: params.data.iter().map(|&x| x as f64).collect(),
        m: vec![0.0; params.data.len()],
        v: vec![0.0; params.data.len()],
        decay,
        t: 0,
    };
    let mut worst = 0.0f64;
    for step in 0..30 {
        let scale = 10f32.powi(step % 5 - 2); // 1e-2 … 1e2
        rng.fill_normal(&mut params.grad, 0.0, scale);
        // Some exact zeros: the update must still move decayed weights and use old moments.
        for i in (0..params.grad.len()).step_by(7) {
            params.grad[i] = 0.0;
        }
        let lr = 1e-3 * (1.0 + (step as f32 * 0.7).sin());
        let g: Vec<f64> = params.grad.iter().map(|&x| x as f64).collect();
        opt.update(&mut params, lr);
        oracle.step(&g, lr as f64, &config);
        for (i, (&ours, &want)) in params.data.iter().zip(&oracle.theta).enumerate() {
            let err = (ours as f64 - want).abs() / want.abs().max(1e-2);
            worst = worst.max(err);
            assert!(err < 5e-6, "step {step}, element {i}: {ours} vs {want}");
        }
    }
    assert_eq!(opt.step, 30);
    worst
}

#[test]
fn adamw_follows_the_f64_textbook_for_30_steps_with_two_parameter_groups() {
    let worst = run(AdamWConfig::default());
    eprintln!("nanoGPT defaults: worst relative error {worst:.2e}");
    // A large ε and strong decay make their placement visible.
    let worst = run(AdamWConfig {
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-2,
        weight_decay: 0.5,
    });
    eprintln!("large eps and decay: worst relative error {worst:.2e}");
}
