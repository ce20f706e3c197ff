//! Learning-rate schedules: linear warmup then cosine decay to a floor (nanoGPT), the
//! "Attention Is All You Need" inverse-square-root schedule, and GPT-1 fine-tuning's linear
//! warmup then linear decay to 0, as functions and as the [`Schedule`] value the training loop
//! holds.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A learning-rate schedule as data, so the training loop owns one and a checkpoint can record
/// it. The rate of a step is a pure function of the steps already taken: resuming needs only
/// the step counter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// [`warmup_cosine`]: nanoGPT's pretraining schedule.
    WarmupCosine {
        /// Peak rate.
        lr: f32,
        /// Final rate.
        min_lr: f32,
        /// Warmup steps.
        warmup: usize,
        /// Step at which the floor is reached.
        max_steps: usize,
    },
    /// `scale ·` [`inverse_sqrt`]: "Attention Is All You Need".
    InverseSqrt {
        /// Multiplier (1 = the paper).
        scale: f32,
        /// Model width.
        d_model: usize,
        /// Warmup steps.
        warmup: usize,
    },
    /// [`warmup_linear`]: GPT-1 fine-tuning (and `transformers`' `get_linear_schedule_with_warmup`).
    WarmupLinear {
        /// Peak rate.
        lr: f32,
        /// Warmup steps (the peak is at this step).
        warmup: usize,
        /// Step at which the rate reaches 0.
        max_steps: usize,
    },
}

impl Schedule {
    /// Checks that every rate of the schedule is a finite number ≥ 0 and its peak positive:
    /// `lr > 0` and `0 ≤ min_lr ≤ lr` for warmup-cosine, `scale > 0` and at least one warmup step
    /// for inverse-sqrt (whose formula divides by the warmup), `lr > 0` for warmup-linear. `lr_field` names the rate as the
    /// run's configuration does (`lr`, `lr_scale`).
    pub fn validate(&self, lr_field: &str) -> Result<()> {
        match *self {
            Schedule::WarmupCosine { lr, min_lr, .. } => {
                if !(lr > 0.0 && lr.is_finite()) {
                    return Err(Error::field(
                        lr_field,
                        format!("{lr} must be a positive number"),
                    ));
                }
                if !(min_lr >= 0.0 && min_lr <= lr) {
                    return Err(Error::field(
                        "min_lr",
                        format!("{min_lr} must be in [0, lr = {lr}] (default: lr / 10)"),
                    ));
                }
            }
            Schedule::InverseSqrt { scale, warmup, .. } => {
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(Error::field(
                        lr_field,
                        format!("{scale} must be a positive number"),
                    ));
                }
                if warmup == 0 {
                    return Err(Error::field(
                        "warmup_steps",
                        "must be at least 1 (the inverse-sqrt schedule divides by it)",
                    ));
                }
            }
            Schedule::WarmupLinear { lr, .. } => {
                if !(lr > 0.0 && lr.is_finite()) {
                    return Err(Error::field(
                        lr_field,
                        format!("{lr} must be a positive number"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rate of the update that follows `done` completed steps.
    pub fn lr(&self, done: usize) -> f32 {
        match *self {
            Schedule::WarmupCosine {
                lr,
                min_lr,
                warmup,
                max_steps,
            } => warmup_cosine(done, lr, min_lr, warmup, max_steps),
            Schedule::InverseSqrt {
                scale,
                d_model,
                warmup,
            } => scale * inverse_sqrt(done + 1, d_model, warmup),
            Schedule::WarmupLinear {
                lr,
                warmup,
                max_steps,
            } => warmup_linear(done, lr, warmup, max_steps),
        }
    }
}

/// Linear warmup for `warmup` steps, then cosine decay from `lr` to `min_lr` at `max_steps`.
/// `step` counts from 0.
pub fn warmup_cosine(step: usize, lr: f32, min_lr: f32, warmup: usize, max_steps: usize) -> f32 {
    if step < warmup {
        return lr * (step + 1) as f32 / warmup as f32;
    }
    if step >= max_steps {
        return min_lr;
    }
    let span = (max_steps - warmup).max(1) as f32;
    let ratio = (step - warmup) as f32 / span;
    let coeff = 0.5 * (1.0 + (std::f32::consts::PI * ratio).cos());
    min_lr + coeff * (lr - min_lr)
}

/// `lr · step / warmup` up to `warmup`, then `lr · (max_steps - step) / (max_steps - warmup)`
/// down to 0 at `max_steps` (and after). `step` counts completed updates from 0, so the first
/// update has rate 0, as in `transformers`' `get_linear_schedule_with_warmup`; GPT-1 warms up
/// over 0.2% of the updates ([`finetune_warmup`]).
pub fn warmup_linear(step: usize, lr: f32, warmup: usize, max_steps: usize) -> f32 {
    if step < warmup {
        return lr * step as f32 / warmup as f32;
    }
    if step >= max_steps {
        return 0.0;
    }
    lr * (max_steps - step) as f32 / (max_steps - warmup).max(1) as f32
}

/// GPT-1's warmup for `max_steps` updates: ⌈0.002 · max_steps⌉ (at least 1 when training at all;
/// with a single update the peak would fall on the last step, so that run has rate 0).
pub fn finetune_warmup(max_steps: usize) -> usize {
    (max_steps * 2).div_ceil(1000)
}

/// `d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)` with `step` counted from 1.
pub fn inverse_sqrt(step: usize, d_model: usize, warmup: usize) -> f32 {
    let s = step.max(1) as f32;
    (d_model as f32).powf(-0.5) * s.powf(-0.5).min(s * (warmup as f32).powf(-1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_rate_and_the_floor() {
        let wc = |lr, min_lr| Schedule::WarmupCosine {
            lr,
            min_lr,
            warmup: 0,
            max_steps: 10,
        };
        assert!(wc(1e-3, 1e-4).validate("lr").is_ok());
        assert!(wc(1e-3, 1e-3).validate("lr").is_ok());
        for (s, field) in [
            (wc(0.0, 0.0), "lr"),
            (wc(f32::NAN, 0.0), "lr"),
            (wc(f32::INFINITY, 0.0), "lr"),
            (wc(1e-3, 2e-3), "min_lr"),
            (wc(1e-3, -1e-4), "min_lr"),
            (wc(1e-3, f32::NAN), "min_lr"),
        ] {
            let e = s.validate("lr").unwrap_err().to_string();
            assert!(e.contains(&format!("invalid {field}:")), "{e}");
        }
        let isq = |scale, warmup| Schedule::InverseSqrt {
            scale,
            d_model: 8,
            warmup,
        };
        assert!(isq(1.0, 10).validate("lr_scale").is_ok());
        let e = isq(-1.0, 10).validate("lr_scale").unwrap_err().to_string();
        assert!(e.contains("invalid lr_scale:"), "{e}");
        let e = isq(1.0, 0).validate("lr_scale").unwrap_err().to_string();
        assert!(e.contains("invalid warmup_steps:"), "{e}");
    }

    #[test]
    fn warmup_then_cosine_to_floor() {
        assert!((warmup_cosine(0, 1.0, 0.1, 10, 100) - 0.1).abs() < 1e-6);
        assert!((warmup_cosine(9, 1.0, 0.1, 10, 100) - 1.0).abs() < 1e-6);
        assert!((warmup_cosine(10, 1.0, 0.1, 10, 100) - 1.0).abs() < 1e-6);
        assert!((warmup_cosine(55, 1.0, 0.1, 10, 100) - 0.55).abs() < 1e-6);
        assert!((warmup_cosine(100, 1.0, 0.1, 10, 100) - 0.1).abs() < 1e-6);
        // The paper's schedule peaks at step = warmup.
        let peak = inverse_sqrt(4000, 512, 4000);
        assert!(inverse_sqrt(3999, 512, 4000) < peak && inverse_sqrt(4001, 512, 4000) < peak);
    }

    #[test]
    fn finetune_schedule_is_zero_at_both_ends_and_peaks_after_0_2_percent() {
        // T = 1 is degenerate (the peak would be at T, where the rate is 0): its one update
        // has rate 0.
        assert_eq!(warmup_linear(0, 1.0, finetune_warmup(1), 1), 0.0);
        for t in [2usize, 10, 499, 500, 501, 1000, 1234, 20_000] {
            let w = finetune_warmup(t);
            assert_eq!(w, (0.002 * t as f64).ceil() as usize, "T = {t}");
            let s = Schedule::WarmupLinear {
                lr: 6.25e-5,
                warmup: w,
                max_steps: t,
            };
            assert_eq!(s.lr(0), 0.0, "T = {t}");
            assert_eq!(s.lr(w), 6.25e-5, "T = {t}");
            assert_eq!(s.lr(t), 0.0, "T = {t}");
            for i in 0..t {
                assert!(s.lr(i) <= s.lr(w), "T = {t}: step {i} above the peak");
                if i >= w {
                    assert!(s.lr(i + 1) < s.lr(i), "T = {t}: not decreasing at {i}");
                } else {
                    assert!(s.lr(i + 1) > s.lr(i), "T = {t}: not increasing at {i}");
                }
            }
        }
        assert!((warmup_linear(15, 1.0, 10, 20) - 0.5).abs() < 1e-6);
    }
}
