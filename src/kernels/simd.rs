//! The one way a kernel picks its instruction set: a CPU probe run once, the ladder of vector
//! levels ([`Isa`]: AVX-512 → AVX2+FMA → portable), and [`simd_fn!`], which compiles a loop body
//! once per rung and calls the widest the CPU has.
//!
//! Why run-time selection: the crate builds for baseline x86-64 (SSE2, 4 lanes), so it runs on
//! any x86-64 CPU. Compute-bound loops (exp, GELU, normalisation, the decode strips) run 2–4×
//! faster compiled for AVX-512 or AVX2+FMA (GELU forward+backward on 1024×3072, one Zen 4 thread:
//! 15 ms with SSE2, 3.8 ms with AVX-512), so each hot loop is compiled for every rung and the
//! widest available is chosen per call (one relaxed atomic load and a branch).
//!
//! Why a macro that writes explicit `#[target_feature]` wrappers, not a closure handed to a
//! generic dispatcher: code is compiled for a target feature only when it is *inlined* into the
//! `#[target_feature]` function, and a closure passed through a generic function was not always
//! inlined (cross-entropy forward+backward measured 31 ms that way against 18 ms with explicit
//! wrappers; the f32 decode loop stayed SSE2 with its accumulators spilled). [`simd_fn!`] puts the
//! body in an `#[inline(always)]` function whose arguments are named, and each rung calls it, so
//! the body is always inlined and compiled for that rung.
//!
//! Kernels written with explicit intrinsics (the AVX-512 BF16 `vdpbf16ps` kernels) are
//! `#[target_feature]` functions of their own, chosen by reading [`cpu`] through [`isa`] (see
//! [`super::bf16::Bf16Path::detect`]), each with a portable twin written as a [`simd_fn!`].
//!
//! Results never depend on the rung: Rust does not contract `a * b + c` into an FMA or
//! reassociate on its own, so wider vectors run the same operations in the same order.
//!
//! Forcing a rung: the environment variable `GPT_SIMD` (`portable`, `avx2` or `avx512`, read
//! once) caps the ladder for a whole run; [`limit`] caps it in-process until its guard drops
//! (tests compare the rungs that way).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The vector features of this CPU that the kernels use, probed once (see [`cpu`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// AVX-512 Foundation (512-bit vectors, mask registers).
    pub avx512f: bool,
    /// AVX-512 VL (the 512-bit extension's 32 registers and instructions on 256-bit vectors).
    pub avx512vl: bool,
    /// AVX-512 BF16 (`vdpbf16ps`: bf16 pair dot products into f32).
    pub avx512bf16: bool,
    /// AVX-512 VNNI (`vpdpbusd`: int8 dot products into i32).
    pub avx512vnni: bool,
    /// AVX2 (256-bit integer vectors).
    pub avx2: bool,
    /// Fused multiply-add (FMA3).
    pub fma: bool,
    /// F16C (`vcvtph2ps`: f16 to f32 conversion).
    pub f16c: bool,
}

impl Cpu {
    /// The widest rung of the ladder these features allow.
    pub fn best_isa(&self) -> Isa {
        if self.avx512f && self.avx2 && self.fma {
            Isa::Avx512
        } else if self.avx2 && self.fma {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }
}

/// The features of this CPU, probed on first use and cached.
pub fn cpu() -> &'static Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    CPU.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Cpu {
                avx512f: has!("avx512f"),
                avx512vl: has!("avx512f") && has!("avx512vl"),
                avx512bf16: has!("avx512f") && has!("avx512bf16"),
                avx512vnni: has!("avx512f") && has!("avx512vnni"),
                avx2: has!("avx2"),
                fma: has!("fma"),
                f16c: has!("f16c"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cpu::default()
    })
}

/// A rung of the ladder a [`simd_fn!`] body is compiled for, narrowest first (so `min` caps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The crate's baseline target (SSE2 on x86-64); any CPU.
    Portable,
    /// AVX2 and FMA (256-bit).
    Avx2,
    /// AVX-512F with AVX2 and FMA (512-bit).
    Avx512,
}

impl Isa {
    /// Every rung, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// A short name for logs and `GPT_SIMD`: `portable`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The rung named `s` (as [`Isa::name`]), if any.
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// The rungs this CPU can run, narrowest first (what tests iterate over).
    pub fn available() -> impl Iterator<Item = Isa> {
        let best = cpu().best_isa();
        Isa::ALL.into_iter().filter(move |&i| i <= best)
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }
}

/// The rung in use, `Isa as u8 + 1`; 0 until the first call of [`isa`].
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The rung every [`simd_fn!`] runs on now: the widest this CPU has, capped by `GPT_SIMD` and
/// by a live [`limit`]. One relaxed atomic load after the first call.
#[inline(always)]
pub fn isa() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        1 => Isa::Portable,
        2 => Isa::Avx2,
        3 => Isa::Avx512,
        _ => init_isa(),
    }
}

/// The rung without any [`limit`]: the CPU's best, capped by `GPT_SIMD`.
fn default_isa() -> Isa {
    static DEFAULT: OnceLock<Isa> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let best = cpu().best_isa();
        match std::env::var("GPT_SIMD") {
            Ok(s) => match Isa::from_name(s.trim()) {
                Some(cap) => cap.min(best),
                None => {
                    eprintln!(
                        "warning: GPT_SIMD={s:?} is not one of portable, avx2, avx512; using {}",
                        best.name()
                    );
                    best
                }
            },
            Err(_) => best,
        }
    })
}

#[cold]
fn init_isa() -> Isa {
    let isa = default_isa();
    // A concurrent `limit` may have stored its cap meanwhile; keep it.
    let _ = ACTIVE.compare_exchange(0, isa.code(), Ordering::Relaxed, Ordering::Relaxed);
    self::isa()
}

/// Holds the ladder capped by [`limit`]; dropping it restores the default rung.
pub struct Limit {
    _serial: MutexGuard<'static, ()>,
}

/// Caps the ladder at `cap` for the whole process until the returned guard drops (the CPU's
/// best still applies: asking for AVX-512 on an AVX2 machine runs AVX2). For tests and
/// benchmarks that compare rungs; one limit is live at a time (others wait). Other threads'
/// kernels run on the capped rung meanwhile, which changes their speed, and the last bits of the
/// bf16 kernels' results (the AVX-512 BF16 kernels and their portable twins add in different
/// orders; the [`simd_fn!`] rungs agree bit for bit). A test that compares bf16 results exactly
/// holds [`steady`] meanwhile.
pub fn limit(cap: Isa) -> Limit {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ACTIVE.store(cap.min(default_isa()).code(), Ordering::Relaxed);
    Limit { _serial: guard }
}

/// Holds the ladder at its default rung until the guard drops (waiting for any live [`limit`]),
/// so that no other thread's limit changes the kernels mid-run: for tests that compare bf16
/// results bit for bit while other tests in the process cap the ladder.
pub fn steady() -> Limit {
    limit(Isa::Avx512)
}

impl Drop for Limit {
    fn drop(&mut self) {
        ACTIVE.store(default_isa().code(), Ordering::Relaxed);
    }
}

/// Defines a function whose body is compiled once per rung of the ladder (AVX-512F+AVX2+FMA,
/// AVX2+FMA, baseline) and runs the rung [`isa`] names.
///
/// ```ignore
/// use gpt::kernels::simd::simd_fn;
/// simd_fn! {
///     /// Sum with 16 lanes.
///     pub(crate) fn sum16(x: &[f32]) -> f32 {
///         /* plain Rust loop; everything it calls should be #[inline(always)] */
///     }
/// }
/// simd_fn! {
///     fn strip<const N: usize>(acc: &mut [f32], w: &[u32]) { /* ... */ }
/// }
/// ```
///
/// Arguments are plain identifiers (rebind with `let mut` inside); const generics are allowed;
/// the body sees the module's items as any nested function does. Everything the body calls
/// should be `#[inline(always)]`: code is compiled for a rung only where it is inlined.
///
/// Exported at the crate root (`gpt::simd_fn!`) for the binary's benchmarks; inside the crate
/// it is `crate::kernels::simd::simd_fn`.
#[macro_export]
macro_rules! simd_fn {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<$(const $g:ident : $gt:ty),+>)?
            ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$(const $g: $gt),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body $(<$(const $g: $gt),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512 $(<$(const $g: $gt),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    body $(::<$($g),+>)? ($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2 $(<$(const $g: $gt),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    body $(::<$($g),+>)? ($($arg),*)
                }
                match $crate::kernels::simd::isa() {
                    // SAFETY: `isa` names a rung only if the CPU has its features.
                    $crate::kernels::simd::Isa::Avx512 => {
                        return unsafe { avx512 $(::<$($g),+>)? ($($arg),*) };
                    }
                    // SAFETY: as above.
                    $crate::kernels::simd::Isa::Avx2 => {
                        return unsafe { avx2 $(::<$($g),+>)? ($($arg),*) };
                    }
                    $crate::kernels::simd::Isa::Portable => {}
                }
            }
            body $(::<$($g),+>)? ($($arg),*)
        }
    };
}
pub use crate::simd_fn;

#[cfg(test)]
mod tests {
    use super::*;

    simd_fn! {
        /// Sum with 16 lanes.
        fn sum16(x: &[f32]) -> f32 {
            let mut acc = [0.0f32; 16];
            let mut chunks = x.chunks_exact(16);
            for c in &mut chunks {
                for i in 0..16 {
                    acc[i] += c[i];
                }
            }
            acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
        }
    }

    simd_fn! {
        fn scaled<const K: usize>(x: &mut [f32], a: f32) {
            for v in x.iter_mut() {
                *v *= a * K as f32;
            }
        }
    }

    #[test]
    fn every_rung_gives_the_same_answer_and_limit_restores() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let want = sum16(&x);
        for rung in Isa::available() {
            let _l = limit(rung);
            assert_eq!(isa(), rung);
            assert_eq!(sum16(&x).to_bits(), want.to_bits(), "{rung:?}");
            let mut y = x.clone();
            scaled::<2>(&mut y, 0.5);
            let want: Vec<f32> = x.iter().map(|v| v * (0.5 * 2.0)).collect();
            assert_eq!(y, want);
        }
        assert!(default_isa() <= cpu().best_isa());
        assert_eq!(Isa::from_name("avx2"), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse"), None);
    }

    /// Runs `f` on every rung this CPU has and requires bit-identical outputs.
    fn same_on_every_rung(what: &str, f: impl Fn() -> Vec<f32>) {
        let mut first: Option<(Isa, Vec<f32>)> = None;
        for rung in Isa::available() {
            let got = {
                let _l = limit(rung);
                f()
            };
            match &first {
                None => first = Some((rung, got)),
                Some((r0, want)) => {
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same && want.len() == got.len(),
                        "{what}: {rung:?} differs from {r0:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ladder_kernels_are_bit_identical_on_every_rung() {
        use crate::kernels::{bf16, crossentropy, gelu, layernorm, softmax};
        let mut rng = crate::rng::Rng::new(3);
        let (n, c) = (7, 301);
        let x = rng.normal_vec(n * c, 3.0);
        let g = rng.normal_vec(n * c, 1.0);
        let (w, b) = (rng.normal_vec(c, 1.0), rng.normal_vec(c, 1.0));
        let targets: Vec<i32> = (0..n as i32).map(|i| i * 37 % c as i32).collect();
        same_on_every_rung("gelu", || {
            let mut y = vec![0.0; n * c];
            gelu::gelu_forward(&mut y, &x);
            let mut d = g.clone();
            gelu::gelu_backward(&mut d, &x, &g);
            let mut z = x.clone();
            gelu::gelu_forward_inplace(&mut z);
            [y, d, z].concat()
        });
        same_on_every_rung("softmax", || {
            let (mut y, mut l, mut d) = (vec![0.0; n * c], vec![0.0; n * c], g.clone());
            softmax::softmax_forward(&mut y, &x, n, c);
            softmax::log_softmax_forward(&mut l, &x, n, c);
            softmax::log_softmax_backward(&mut d, &l, &g, n, c);
            [y, l, d].concat()
        });
        same_on_every_rung("layernorm", || {
            let (mut y, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm::layernorm_forward(&mut y, &mut m, &mut r, &x, &w, &b, n, c, 1e-5);
            let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
            layernorm::layernorm_backward(&mut dx, &mut dw, &mut db, &g, &x, &w, &m, &r, n, c);
            [y, m, r, dx, dw, db].concat()
        });
        same_on_every_rung("crossentropy", || {
            let mut losses = vec![0.0; n];
            let l = crossentropy::crossentropy_forward(&mut losses, &x, &targets, n, c, -100, 0.1);
            let (mut d, mut losses2) = (x.clone(), vec![0.0; n]);
            let l2 = crossentropy::crossentropy_forward_backward(
                &mut d,
                &mut losses2,
                &targets,
                n,
                c,
                -100,
                0.1,
                1.0,
            );
            [vec![l, l2], losses, losses2, d].concat()
        });
        same_on_every_rung("to_bf16", || {
            bf16::to_bf16_vec(&x).iter().map(|v| v.to_f32()).collect()
        });
    }
}
