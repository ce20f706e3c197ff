//! Scaled dot-product attention, fused per (batch, head), with flash-style memory.
//!
//! For each batch `b` and head `h`, with `Q` `(Tq, HS)`, `K` and `V` `(Tk, HS)` the head's
//! columns of `q`, `k`, `v`:
//!
//! ```text
//! S = Q Kᵀ / sqrt(HS)          (Tq, Tk), masked entries -∞
//! P = softmax_rows(S)          lse_i = log Σ_j exp(S_ij)
//! O = P V                      (Tq, HS)
//! ```
//!
//! Reference: Vaswani et al. 2017 (the product); Dao et al. 2022, *FlashAttention* (keeping
//! only the per-row log-sum-exp and recomputing `P` in backward); PyTorch
//! `F.scaled_dot_product_attention` for the semantics we match.
//!
//! Shapes (see the legend in [`crate::kernels`]): `q`, `out` `(B, Tq, C)`; `k`, `v`
//! `(B, Tk, C)`; `C = NH·HS` with head `h` in columns `h·HS..(h+1)·HS`, i.e. the natural
//! `(B, T, NH, HS)` layout that a QKV projection produces, so no permute is needed. The statistic
//! `lse` is `(B, NH, Tq)`. `key_mask` is `(B, Tk)` bytes, 1 = attend, 0 = padding.
//!
//! Masks: with `causal`, query `i` may attend key `j` iff `j <= i + (Tk - Tq)` (aligned to the
//! bottom right, so the same call serves training (`Tq = Tk`) and KV-cache decoding (`Tq < Tk`,
//! the queries are the last `Tq` positions)). Packed rows (several examples in one row of the
//! batch, supervised fine-tuning's "packing") add a document mask: given `pos (B, Tq)`, each
//! token's position inside its own example (0 at an example's first token), query `i` may
//! attend key `j` iff `i - pos[i] <= j <= i` (causal self-attention, `Tq = Tk`). All masks
//! travel in one [`AttentionMask`]. A query row with no key left to attend produces a zero
//! output row, `lse = -∞`, and zero gradients — never NaN.
//!
//! Why this shape of kernel (measured on the 2-core Zen 4 of `shared/notes/cpu-performance.md`):
//! one task per (b, h) spread with rayon, each running single-threaded `gemm`s on strided views
//! of the head's columns; within a task, queries go in blocks of up to 128 rows so that a causal
//! block only multiplies the keys it can see (25% fewer flops at T = 128), and the scores
//! live in a per-thread scratch buffer reused across calls (no allocation per task): one block
//! of at most `Tq×Tk` in the forward, two half-height blocks (`P` and `dS`) in the backward. The
//! exponentials go through a polynomial `exp` that vectorises (AVX2 when the CPU has it), since
//! scalar `expf` would cost as much as the products. Packed rows: a query block also skips the
//! keys before the first one any of its rows may see (earlier examples' keys); inside the block,
//! scores from that key on are computed and masked, so the saving is per block, not per row.
//!
//! Mixed precision: [`attention_forward_bf16`] / [`attention_backward_bf16`] run the same
//! algorithm with every block product in bf16 (inputs rounded to nearest even, f32
//! accumulation, [`bf16_products`]); the softmax, `lse`, `D` and all accumulators stay f32.
//! At char-baby's shapes (T = 256, HS = 64) that removed about 11% of a bf16 training step.

mod bf16_products;

use super::check_len;

use super::matmul::{dot, gemm_strided};
use super::simd::simd_fn;
use bf16_products::gemm_strided_bf16;
use rayon::prelude::*;
use std::cell::RefCell;

/// Query rows per score block: at most this many...
const BLOCK_Q_MAX: usize = 128;
/// ...and at most this many scores per block (128 KiB of f32: two blocks and the head's K and V
/// panels stay in L2).
const BLOCK_SCORES_MAX: usize = 32 * 1024;

/// Query rows per score block. Non-causal attention takes the biggest block that fits, since
/// `gemm` runs faster on larger products; causal attention takes 64-row blocks, so a block skips
/// the keys it cannot see (measured at T = 128: 64 rows beat both 32 and 128).
fn block_rows(tk: usize, causal: bool) -> usize {
    let rows = if causal { 64 } else { BLOCK_Q_MAX };
    rows.min(BLOCK_SCORES_MAX / tk.max(1)).max(8)
}

/// Sizes of one attention call. `C = nh * hs` is the row width of `q`, `k`, `v` and `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Batch size `B`.
    pub b: usize,
    /// Query length `Tq`.
    pub tq: usize,
    /// Key/value length `Tk`.
    pub tk: usize,
    /// Number of heads `NH`.
    pub nh: usize,
    /// Head size `HS`.
    pub hs: usize,
}

impl AttentionDims {
    /// Model width `C = NH·HS`.
    pub fn c(&self) -> usize {
        self.nh * self.hs
    }

    /// Softmax scale `1/sqrt(HS)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.hs as f32).sqrt()
    }

    /// Number of keys query `i` may attend by position (before the key mask): all `Tk`, or with
    /// `causal` those `j <= i + Tk - Tq`, clamped to `0..=Tk`.
    #[inline]
    fn key_limit(&self, i: usize, causal: bool) -> usize {
        if causal {
            (i + 1 + self.tk).saturating_sub(self.tq).min(self.tk)
        } else {
            self.tk
        }
    }
}

/// Which keys each query may attend: padding, causality and, for packed rows, the example
/// boundaries (see the module docs). `Default` is no mask at all (every query sees every key).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionMask<'a> {
    /// `(B, Tk)` bytes, 1 = attend, 0 = padding.
    pub key_mask: Option<&'a [u8]>,
    /// Query `i` sees only keys `j <= i + Tk - Tq`.
    pub causal: bool,
    /// Packed rows: `(B, Tq)` position of each token inside its own example, 0 at each
    /// example's first token; query `i` sees only keys `j >= i - pos[i]`. Needs `causal` and
    /// `Tq = Tk` (self-attention), and `pos[i] <= i`.
    pub positions: Option<&'a [u32]>,
}

impl<'a> AttentionMask<'a> {
    /// A key mask and the causal flag (the plain kernels' arguments), no document mask.
    pub fn new(key_mask: Option<&'a [u8]>, causal: bool) -> Self {
        AttentionMask {
            key_mask,
            causal,
            positions: None,
        }
    }

    /// Causal self-attention over packed rows with positions `pos (B, T)`, and an optional key
    /// mask.
    pub fn packed(positions: &'a [u32], key_mask: Option<&'a [u8]>) -> Self {
        AttentionMask {
            key_mask,
            causal: true,
            positions: Some(positions),
        }
    }

    /// First key query `i` of batch row `b` may attend by the document mask (0 without one).
    /// `pos[i] <= i` was checked by [`AttentionMask::check`].
    #[inline]
    fn key_start(&self, d: &AttentionDims, b: usize, i: usize) -> usize {
        match self.positions {
            Some(p) => i - p[b * d.tq + i] as usize,
            None => 0,
        }
    }

    /// Panics (naming `op`) on a mask that does not fit `d`: a wrong length, or positions
    /// without causal self-attention or past their own index.
    fn check(&self, op: &str, d: &AttentionDims) {
        assert!(d.hs > 0, "{op}: head size must be positive");
        if let Some(m) = self.key_mask {
            check_len(op, "key_mask", m.len(), d.b * d.tk);
        }
        if let Some(p) = self.positions {
            assert!(
                self.causal && d.tq == d.tk,
                "{op}: positions (packed rows) need causal self-attention (Tq = Tk), got \
                 causal = {}, Tq = {}, Tk = {}",
                self.causal,
                d.tq,
                d.tk
            );
            check_len(op, "positions", p.len(), d.b * d.tq);
            for (r, row) in p.chunks_exact(d.tq.max(1)).enumerate() {
                if let Some((i, &x)) = row.iter().enumerate().find(|&(i, &x)| x as usize > i) {
                    panic!("{op}: position {x} of batch row {r} at index {i} is past its index");
                }
            }
        }
    }

    /// Keys worth computing for the query block `i0..i0 + bq` of batch row `b`: from the first
    /// key any of its rows may see to one past the last (`lo >= hi`: none).
    fn block_keys(&self, d: &AttentionDims, b: usize, i0: usize, bq: usize) -> (usize, usize) {
        let kv = kv_len(self.key_mask, b, d.tk);
        let hi = d.key_limit(i0 + bq - 1, self.causal).min(kv);
        let lo = (i0..i0 + bq).fold(usize::MAX, |lo, i| lo.min(self.key_start(d, b, i)));
        (lo, hi)
    }

    /// Row `r` of the block `i0..` whose keys start at `lo` and end before `hi`: the columns
    /// `s..e` of the score block it may attend (before the key mask).
    #[inline]
    fn row_window(
        &self,
        d: &AttentionDims,
        b: usize,
        i: usize,
        (lo, hi): (usize, usize),
    ) -> (usize, usize) {
        let e = d.key_limit(i, self.causal).min(hi).saturating_sub(lo);
        let s = (self.key_start(d, b, i) - lo).min(e);
        (s, e)
    }
}

/// A raw pointer that may cross threads. Used for outputs where each (b, h) task owns a
/// disjoint set of columns of the same buffer (see the SAFETY notes at the use sites).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only dereferenced for regions owned by one task at a time.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// Method access so closures capture the whole `Send` wrapper, not the raw field.
    #[inline]
    fn get(self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    /// Per-thread score scratch: one `rows × Tk` block (two in backward), grown on demand and
    /// reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer, at least `len` long.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// Number of leading keys worth computing for batch `b`: one past the last unmasked key.
fn kv_len(key_mask: Option<&[u8]>, b: usize, tk: usize) -> usize {
    match key_mask {
        None => tk,
        Some(m) => m[b * tk..(b + 1) * tk]
            .iter()
            .rposition(|&x| x != 0)
            .map_or(0, |j| j + 1),
    }
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/// `out = softmax(mask(Q Kᵀ / sqrt(HS))) V` per (batch, head), and the row statistic
/// `lse = log Σ_j exp(S_ij)` that [`attention_backward`] needs (`-∞` for fully masked rows).
///
/// Shapes: `out`, `q` `(B, Tq, C)`; `k`, `v` `(B, Tk, C)`; `lse` `(B, NH, Tq)`;
/// `key_mask` `(B, Tk)`. Overwrites `out` and `lse`. See the module docs for the masks.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u8]>,
    causal: bool,
    d: AttentionDims,
) {
    let mask = AttentionMask::new(key_mask, causal);
    forward_with(gemm_strided, true, out, lse, q, k, v, mask, d);
}

/// [`attention_forward`] under any [`AttentionMask`], packed rows' document mask included.
pub fn attention_forward_masked(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    forward_with(gemm_strided, true, out, lse, q, k, v, mask, d);
}

/// [`attention_forward`] with the two block products (`Q Kᵀ`, `P V`) in bf16 with f32
/// accumulation (mixed-precision training); the softmax and `lse` stay f32.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_bf16(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u8]>,
    causal: bool,
    d: AttentionDims,
) {
    let mask = AttentionMask::new(key_mask, causal);
    forward_with(gemm_strided_bf16, false, out, lse, q, k, v, mask, d);
}

/// [`attention_forward_masked`] with the block products in bf16 (see
/// [`attention_forward_bf16`]).
pub fn attention_forward_masked_bf16(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    forward_with(gemm_strided_bf16, false, out, lse, q, k, v, mask, d);
}

/// A block product on strided views with `gemm_strided`'s contract (f32 or bf16 inputs).
type BlockProduct = unsafe fn(
    *mut f32,
    isize,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    usize,
    usize,
    usize,
    bool,
    f32,
    bool,
);

/// `s[j] = scale · q · k[j·ld .. j·ld + HS]` for `j < s.len()`, every dot product in the
/// order of [`dot_tree`]. With AVX-512 and `HS` a multiple of 16, sixteen keys at a time:
/// sixteen lane-sum vectors reduced together by unpacks and lane shuffles, which add in exactly
/// `dot_tree`'s order (same bits). Decoding spends its attention time here: the earlier
/// per-key reduction (15 dependent scalar adds a key) took 2.5× the time of the value sum.
fn scores_row(s: &mut [f32], q: &[f32], k: &[f32], ld: usize, hs: usize, scale: f32) {
    assert!(q.len() >= hs, "scores_row: q {} < HS {hs}", q.len());
    check_rows("scores_row", "k", s.len(), hs, ld, k.len());
    if s.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::isa() == super::simd::Isa::Avx512 && hs.is_multiple_of(16) {
        let full = s.len() / 16 * 16;
        // SAFETY: the rung is active, so the CPU has AVX-512F; every key read,
        // k[j·ld .. j·ld + HS] for j < full ≤ s.len(), lies in k (asserted above).
        unsafe { scores16_avx512(&mut s[..full], &q[..hs], k, ld, scale) };
        if full < s.len() {
            scores_portable(&mut s[full..], q, &k[full * ld..], ld, hs, scale);
        }
        return;
    }
    scores_portable(s, q, k, ld, hs, scale)
}

/// Asserts that a buffer of `len` elements holds `rows` rows of `width` at stride `ld ≥ width`
/// (the keys or values one decoding query reads).
fn check_rows(op: &str, name: &str, rows: usize, width: usize, ld: usize, len: usize) {
    let need = rows.saturating_sub(1) * ld + width;
    assert!(
        width <= ld && (rows == 0 || len >= need),
        "{op}: {rows} rows of {width} at stride {ld} need {need} elements, `{name}` has {len}"
    );
}

/// `a · b` with 16 lane sums (lane `i`: `0 + a[i]·b[i] + a[i+16]·b[i+16] + …`, products rounded
/// then added, in order), added as a tree: each quarter `(l₀+l₂) + (l₁+l₃)`, then
/// `(Q₀+Q₁) + (Q₂+Q₃)`; elements past the last multiple of 16 are added one by one after.
#[inline(always)]
fn dot_tree(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0.0f32; 16];
    let (ca, ra) = a.split_at(a.len() / 16 * 16);
    let (cb, rb) = b.split_at(ca.len());
    for (xa, xb) in ca.chunks_exact(16).zip(cb.chunks_exact(16)) {
        for i in 0..16 {
            l[i] += xa[i] * xb[i];
        }
    }
    let quarter = |o: usize| (l[o] + l[o + 2]) + (l[o + 1] + l[o + 3]);
    let mut s = (quarter(0) + quarter(4)) + (quarter(8) + quarter(12));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

simd_fn! {
    /// [`scores_row`] one key at a time.
    fn scores_portable(s: &mut [f32], q: &[f32], k: &[f32], ld: usize, hs: usize, scale: f32) {
        for (j, sj) in s.iter_mut().enumerate() {
            *sj = scale * dot_tree(&q[..hs], &k[j * ld..j * ld + hs]);
        }
    }
}

/// [`scores_row`] for `s.len()` a multiple of 16 keys and `q.len() = HS` a multiple of 16.
///
/// # Safety
/// The CPU has AVX-512F, and `k` holds `k[j·ld .. j·ld + HS]` for every `j < s.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores16_avx512(s: &mut [f32], q: &[f32], k: &[f32], ld: usize, scale: f32) {
    use std::arch::x86_64::*;
    let hs = q.len();
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    for (g, out) in s.chunks_exact_mut(16).enumerate() {
        let key = kp.add(g * 16 * ld);
        let mut acc = [_mm512_setzero_ps(); 16];
        for c in (0..hs).step_by(16) {
            let qc = _mm512_loadu_ps(qp.add(c));
            for (p, a) in acc.iter_mut().enumerate() {
                let kc = _mm512_loadu_ps(key.add(p * ld + c));
                *a = _mm512_add_ps(*a, _mm512_mul_ps(qc, kc));
            }
        }
        // Pairs of keys: per 128-bit lane [a0+a2, b0+b2, a1+a3, b1+b3].
        let pair = |a: __m512, b: __m512| {
            _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
        };
        // Quads: per 128-bit lane the quarter sums (l0+l2)+(l1+l3) of four keys.
        let quad = |x: __m512, y: __m512| {
            let (xd, yd) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
            _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(xd, yd)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(xd, yd)),
            )
        };
        let y: [__m512; 4] = std::array::from_fn(|m| {
            quad(
                pair(acc[4 * m], acc[4 * m + 1]),
                pair(acc[4 * m + 2], acc[4 * m + 3]),
            )
        });
        // Halves (Q0+Q1, Q2+Q3) of two quads, then the totals (Q0+Q1)+(Q2+Q3): 128-bit lane m
        // of the result holds keys 4m..4m+3.
        let halves = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            )
        };
        let (w01, w23) = (halves(y[0], y[1]), halves(y[2], y[3]));
        let total = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(w01, w23),
            _mm512_shuffle_f32x4::<0xDD>(w01, w23),
        );
        _mm512_storeu_ps(
            out.as_mut_ptr(),
            _mm512_mul_ps(_mm512_set1_ps(scale), total),
        );
    }
}

/// `o = Σ_j p[j] · v[j·ld .. j·ld + o.len()]`: each element `0 + p₀·v₀ + p₁·v₁ + …` in `j`
/// order, products rounded then added. With AVX-512 and `o.len()` a multiple of 16, the outputs
/// stay in registers across the keys, 64 at a time (the portable loop keeps them in memory,
/// a store and reload per key); same operations, same bits.
fn weighted_rows(o: &mut [f32], p: &[f32], v: &[f32], ld: usize) {
    let hs = o.len();
    check_rows("weighted_rows", "v", p.len(), hs, ld, v.len());
    if p.is_empty() {
        o.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::isa() == super::simd::Isa::Avx512 && hs.is_multiple_of(16) {
        for c0 in (0..hs).step_by(64) {
            let (dst, src) = (&mut o[c0..(c0 + 64).min(hs)], &v[c0..]);
            // SAFETY: the rung is active, so the CPU has AVX-512F; rows j < p.len() read
            // src[j·ld .. j·ld + dst.len()], inside v (asserted above).
            unsafe {
                match dst.len() / 16 {
                    1 => weighted_avx512::<1>(dst, p, src, ld),
                    2 => weighted_avx512::<2>(dst, p, src, ld),
                    3 => weighted_avx512::<3>(dst, p, src, ld),
                    _ => weighted_avx512::<4>(dst, p, src, ld),
                }
            }
        }
        return;
    }
    weighted_portable(o, p, v, ld)
}

/// [`weighted_rows`] for `16·N` outputs, held in `N` registers.
///
/// # Safety
/// The CPU has AVX-512F; `o.len() = 16·N`, and `v` holds `v[j·ld .. j·ld + 16·N]` for every
/// `j < p.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_avx512<const N: usize>(o: &mut [f32], p: &[f32], v: &[f32], ld: usize) {
    use std::arch::x86_64::*;
    debug_assert_eq!(o.len(), 16 * N);
    let mut acc = [_mm512_setzero_ps(); N];
    for (j, &pj) in p.iter().enumerate() {
        let (pb, row) = (_mm512_set1_ps(pj), v.as_ptr().add(j * ld));
        for (t, a) in acc.iter_mut().enumerate() {
            *a = _mm512_add_ps(*a, _mm512_mul_ps(pb, _mm512_loadu_ps(row.add(16 * t))));
        }
    }
    for (t, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(o.as_mut_ptr().add(16 * t), *a);
    }
}

simd_fn! {
    /// [`weighted_rows`] in plain Rust.
    fn weighted_portable(o: &mut [f32], p: &[f32], v: &[f32], ld: usize) {
        let hs = o.len();
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            for (x, &y) in o.iter_mut().zip(&v[j * ld..j * ld + hs]) {
                *x += pj * y;
            }
        }
    }
}

/// One query of [`attention_single_queries`]: its row of `q` and `out`, where its sequence's
/// keys and values start in `k` and `v` (element offset of position 0), and how many positions
/// it attends (all of them: the query is the sequence's last position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SingleQuery {
    /// Row of `q` (stride `q_stride`) and of `out` (stride `C`).
    pub row: usize,
    /// Offset of the sequence's first key/value row in `k` and `v` (rows of stride `C`).
    pub kv_start: usize,
    /// Positions attended: `k[kv_start + j·C ..]` for `j < len`.
    pub len: usize,
}

/// Batched decoding: one query per sequence, each over its own keys and values (a KV cache's
/// rows), every (query, head) pair one task of a single parallel pass, instead of one
/// [`attention_forward`] call (one fork-join) per sequence. Same operations as
/// [`attention_forward`] on a one-row causal query (dot products, the softmax, the weighted
/// sum of value rows), so the same bits.
///
/// Shapes: `out (rows, C)`, `q` rows of stride `q_stride ≥ C` (e.g. the packed `QKV` rows, the
/// queries in their first `C` columns); `k`, `v` rows of stride `C`.
#[allow(clippy::too_many_arguments)]
pub fn attention_single_queries(
    out: &mut [f32],
    q: &[f32],
    q_stride: usize,
    k: &[f32],
    v: &[f32],
    queries: &[SingleQuery],
    nh: usize,
    hs: usize,
) {
    const OP: &str = "attention_single_queries";
    let c = nh * hs;
    assert!(q_stride >= c, "{OP}: q stride {q_stride} < C = {c}");
    for sq in queries {
        assert!(
            (sq.row + 1) * c <= out.len()
                && sq.row * q_stride + c <= q.len()
                && sq.kv_start + sq.len * c <= k.len().min(v.len()),
            "{OP}: {sq:?} reaches past out ({}), q ({}) or k/v ({}, {}) elements",
            out.len(),
            q.len(),
            k.len(),
            v.len()
        );
    }
    for (i, a) in queries.iter().enumerate() {
        assert!(
            queries[..i].iter().all(|b| b.row != a.row),
            "{OP}: two queries write row {}",
            a.row
        );
    }
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    super::team::run(queries.len() * nh, |task| {
        let (sq, h) = (queries[task / nh], task % nh);
        // SAFETY: rows are distinct (asserted above) and each task writes only its head's
        // columns h·HS..(h+1)·HS of its query's row, inside `out` (checked above).
        let o =
            unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(sq.row * c + h * hs), hs) };
        if sq.len == 0 {
            o.fill(0.0);
            return;
        }
        let q_row = &q[sq.row * q_stride + h * hs..sq.row * q_stride + (h + 1) * hs];
        let kv = sq.kv_start + h * hs;
        with_scratch(sq.len, |s| {
            scores_row(s, q_row, &k[kv..], c, hs, scale);
            let mut lse = [0.0f32];
            softmax_block(s, &mut lse, sq.len, |_| (0, sq.len), None);
            weighted_rows(o, s, &v[kv..], c);
        });
    });
}

/// `single_row`: a block of one query may skip `gemm_strided` (f32 products only: the bf16
/// products round their inputs, which the dot products would not).
#[allow(clippy::too_many_arguments)]
fn forward_with(
    gemm_strided: BlockProduct,
    single_row: bool,
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    const OP: &str = "attention_forward";
    let c = d.c();
    mask.check(OP, &d);
    check_len(OP, "out", out.len(), d.b * d.tq * c);
    check_len(OP, "lse", lse.len(), d.b * d.nh * d.tq);
    check_len(OP, "q", q.len(), d.b * d.tq * c);
    check_len(OP, "k", k.len(), d.b * d.tk * c);
    check_len(OP, "v", v.len(), d.b * d.tk * c);
    if d.b * d.tq * d.nh == 0 {
        return;
    }
    let scale = d.scale();
    let bq_max = block_rows(d.tk, mask.causal).min(d.tq);
    let out_ptr = SendPtr(out.as_mut_ptr());
    // lse is laid out (B, NH, Tq): chunk `bh` of Tq rows belongs to task bh = b·NH + h.
    lse.par_chunks_mut(d.tq)
        .enumerate()
        .for_each(|(bh, lse_bh)| {
            let (b, h) = (bh / d.nh, bh % d.nh);
            let mask_b = mask.key_mask.map(|m| &m[b * d.tk..(b + 1) * d.tk]);
            let q_bh = &q[b * d.tq * c + h * d.hs..];
            let k_bh = &k[b * d.tk * c + h * d.hs..];
            let v_bh = &v[b * d.tk * c + h * d.hs..];
            // SAFETY: this task is the only one touching columns h·HS..(h+1)·HS of batch b's rows of
            // `out`; tasks differ in (b, h), so their regions are disjoint.
            let o_bh = unsafe { out_ptr.get().add(b * d.tq * c + h * d.hs) };
            with_scratch(bq_max * d.tk, |scratch| {
                for i0 in (0..d.tq).step_by(bq_max) {
                    let bq = bq_max.min(d.tq - i0);
                    // The block sees keys lo..hi at most: nk of them from key lo on.
                    let (lo, hi) = mask.block_keys(&d, b, i0, bq);
                    let o_blk = unsafe { o_bh.add(i0 * c) };
                    if lo >= hi {
                        // Every row of the block is fully masked.
                        for r in 0..bq {
                            // SAFETY: row r of this task's head columns, inside `out`.
                            unsafe { std::slice::from_raw_parts_mut(o_blk.add(r * c), d.hs) }
                                .fill(0.0);
                        }
                        lse_bh[i0..i0 + bq].fill(f32::NEG_INFINITY);
                        continue;
                    }
                    let nk = hi - lo;
                    let s = &mut scratch[..bq * nk];
                    let window = |r: usize| mask.row_window(&d, b, i0 + r, (lo, hi));
                    let mask_blk = mask_b.map(|m| &m[lo..hi]);
                    if bq == 1 && single_row {
                        // One query (a decoding step): dot products and a weighted sum of rows,
                        // not two gemm calls whose set-up costs more than these 2·nk·HS FMAs.
                        let q_row = &q_bh[i0 * c..i0 * c + d.hs];
                        scores_row(s, q_row, &k_bh[lo * c..], c, d.hs, scale);
                        softmax_block(s, &mut lse_bh[i0..i0 + 1], nk, window, mask_blk);
                        // SAFETY: row i0 of this task's head columns, inside `out` (as below).
                        let o = unsafe { std::slice::from_raw_parts_mut(o_blk, d.hs) };
                        weighted_rows(o, s, &v_bh[lo * c..], c);
                        continue;
                    }
                    // SAFETY (all gemms below): views lie inside q/k/v/out (lengths checked above:
                    // the last row read is < Tq or < hi <= Tk, the last column < (h+1)·HS <= C),
                    // and `s` is thread-local so it aliases nothing.
                    unsafe {
                        // S (bq×nk) = scale · Q_blk (bq×HS) · K[lo..hi]ᵀ (HS×nk)
                        gemm_strided(
                            s.as_mut_ptr(),
                            nk as isize,
                            q_bh[i0 * c..].as_ptr(),
                            c as isize,
                            1,
                            k_bh[lo * c..].as_ptr(),
                            1,
                            c as isize,
                            bq,
                            d.hs,
                            nk,
                            false,
                            scale,
                            false,
                        );
                    }
                    softmax_block(s, &mut lse_bh[i0..i0 + bq], nk, window, mask_blk);
                    unsafe {
                        // O_blk (bq×HS) = P (bq×nk) · V[lo..hi] (nk×HS)
                        gemm_strided(
                            o_blk,
                            c as isize,
                            s.as_ptr(),
                            nk as isize,
                            1,
                            v_bh[lo * c..].as_ptr(),
                            c as isize,
                            1,
                            bq,
                            nk,
                            d.hs,
                            false,
                            1.0,
                            false,
                        );
                    }
                }
            });
        });
}

/// Row-wise masked softmax of a score block in place, writing each row's log-sum-exp.
/// Row `r` may attend the columns `j` in `window(r) = (s, e)`, `s <= j < e`, with
/// `mask[j] != 0`; other entries become 0.
fn softmax_block(
    s: &mut [f32],
    lse: &mut [f32],
    nk: usize,
    window: impl Fn(usize) -> (usize, usize),
    mask: Option<&[u8]>,
) {
    for (r, (row, l)) in s.chunks_exact_mut(nk).zip(lse.iter_mut()).enumerate() {
        let (s0, e) = window(r);
        *l = rows::softmax_row(&mut row[s0..e], mask.map(|m| &m[s0..e]));
        row[..s0].fill(0.0);
        row[e..].fill(0.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// Backward of [`attention_forward`]: accumulates `dq += ∂L/∂q`, `dk += ∂L/∂k`, `dv += ∂L/∂v`
/// given `dout = ∂L/∂out`, recomputing the probabilities from `lse`:
///
/// ```text
/// D_i = Σ_c dO_ic O_ic        P = exp(S - lse)        dV += Pᵀ dO
/// dP = dO Vᵀ                  dS = P ∘ (dP - D)       dQ += dS K / sqrt(HS)
///                                                     dK += dSᵀ Q / sqrt(HS)
/// ```
///
/// Shapes as in [`attention_forward`]; `dq` like `q`, `dk`/`dv` like `k`/`v`. The masks must be
/// the ones the forward used. Fully masked rows contribute nothing.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u8]>,
    causal: bool,
    d: AttentionDims,
) {
    let mask = AttentionMask::new(key_mask, causal);
    backward_with(gemm_strided, dq, dk, dv, dout, out, lse, q, k, v, mask, d);
}

/// Backward of [`attention_forward_masked`] (see [`attention_backward`]); `mask` must be the
/// forward's.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_masked(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    backward_with(gemm_strided, dq, dk, dv, dout, out, lse, q, k, v, mask, d);
}

/// [`attention_backward`] with its five block products in bf16 with f32 accumulation (the
/// backward of [`attention_forward_bf16`]); probabilities, `D` and `dS` stay f32.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_bf16(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u8]>,
    causal: bool,
    d: AttentionDims,
) {
    let mask = AttentionMask::new(key_mask, causal);
    backward_with(
        gemm_strided_bf16,
        dq,
        dk,
        dv,
        dout,
        out,
        lse,
        q,
        k,
        v,
        mask,
        d,
    );
}

/// Backward of [`attention_forward_masked_bf16`] (see [`attention_backward_bf16`]); `mask`
/// must be the forward's.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_masked_bf16(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    backward_with(
        gemm_strided_bf16,
        dq,
        dk,
        dv,
        dout,
        out,
        lse,
        q,
        k,
        v,
        mask,
        d,
    );
}

#[allow(clippy::too_many_arguments)]
fn backward_with(
    gemm_strided: BlockProduct,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    const OP: &str = "attention_backward";
    let c = d.c();
    mask.check(OP, &d);
    for (name, len) in [
        ("dq", dq.len()),
        ("dout", dout.len()),
        ("out", out.len()),
        ("q", q.len()),
    ] {
        check_len(OP, name, len, d.b * d.tq * c);
    }
    for (name, len) in [
        ("dk", dk.len()),
        ("dv", dv.len()),
        ("k", k.len()),
        ("v", v.len()),
    ] {
        check_len(OP, name, len, d.b * d.tk * c);
    }
    check_len(OP, "lse", lse.len(), d.b * d.nh * d.tq);
    if d.b * d.tq * d.nh == 0 {
        return;
    }
    let scale = d.scale();
    // Two blocks (P and dS) of at most ⌈Tq/2⌉ rows: together no more than one Tq×Tk block.
    let bq_max = block_rows(d.tk, mask.causal).min(d.tq.div_ceil(2));
    let (dq_ptr, dk_ptr, dv_ptr) = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    (0..d.b * d.nh).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / d.nh, bh % d.nh);
        let mask_b = mask.key_mask.map(|m| &m[b * d.tk..(b + 1) * d.tk]);
        let (qo, ko) = (b * d.tq * c + h * d.hs, b * d.tk * c + h * d.hs);
        let (q_bh, k_bh, v_bh) = (&q[qo..], &k[ko..], &v[ko..]);
        let (do_bh, o_bh) = (&dout[qo..], &out[qo..]);
        let lse_bh = &lse[bh * d.tq..(bh + 1) * d.tq];
        // SAFETY: like the forward's `out`, each task writes only columns h·HS..(h+1)·HS of
        // batch b's rows of dq, dk and dv; distinct (b, h) tasks never overlap.
        let (dq_bh, dk_bh, dv_bh) = unsafe {
            (
                dq_ptr.get().add(qo),
                dk_ptr.get().add(ko),
                dv_ptr.get().add(ko),
            )
        };
        with_scratch(2 * bq_max * d.tk + bq_max, |scratch| {
            let (p_buf, rest) = scratch.split_at_mut(bq_max * d.tk);
            let (ds_buf, dd) = rest.split_at_mut(bq_max * d.tk);
            for i0 in (0..d.tq).step_by(bq_max) {
                let bq = bq_max.min(d.tq - i0);
                // The block sees keys lo..hi at most: nk of them from key lo on.
                let (lo, hi) = mask.block_keys(&d, b, i0, bq);
                if lo >= hi {
                    continue;
                }
                let nk = hi - lo;
                let (k_blk, v_blk) = (&k_bh[lo * c..], &v_bh[lo * c..]);
                // SAFETY: rows lo..hi of this task's columns of dk and dv (hi <= Tk).
                let (dk_blk, dv_blk) = unsafe { (dk_bh.add(lo * c), dv_bh.add(lo * c)) };
                let (p, ds) = (&mut p_buf[..bq * nk], &mut ds_buf[..bq * nk]);
                let (q_blk, do_blk) = (&q_bh[i0 * c..], &do_bh[i0 * c..]);
                // SAFETY (all gemms below): views lie inside their buffers (lengths checked
                // above, rows < Tq or < hi <= Tk, columns < (h+1)·HS <= C); `p` and `ds` are
                // thread-local; the dq/dk/dv regions are this task's own (see above).
                unsafe {
                    // S (bq×nk) = scale · Q_blk K[lo..hi]ᵀ, then P = exp(S - lse) in place.
                    gemm_strided(
                        p.as_mut_ptr(),
                        nk as isize,
                        q_blk.as_ptr(),
                        c as isize,
                        1,
                        k_blk.as_ptr(),
                        1,
                        c as isize,
                        bq,
                        d.hs,
                        nk,
                        false,
                        scale,
                        false,
                    );
                }
                let mask_blk = mask_b.map(|m| &m[lo..hi]);
                for r in 0..bq {
                    let (s0, e) = mask.row_window(&d, b, i0 + r, (lo, hi));
                    let row = &mut p[r * nk..(r + 1) * nk];
                    let m = mask_blk.map(|m| &m[s0..e]);
                    rows::probs_row(&mut row[s0..e], lse_bh[i0 + r], m);
                    row[..s0].fill(0.0);
                    row[e..].fill(0.0);
                    dd[r] = dot(&do_blk[r * c..r * c + d.hs], &o_bh[(i0 + r) * c..][..d.hs]);
                }
                unsafe {
                    // dV[lo..hi] (nk×HS) += Pᵀ (nk×bq) · dO_blk (bq×HS)
                    gemm_strided(
                        dv_blk,
                        c as isize,
                        p.as_ptr(),
                        1,
                        nk as isize,
                        do_blk.as_ptr(),
                        c as isize,
                        1,
                        nk,
                        bq,
                        d.hs,
                        true,
                        1.0,
                        false,
                    );
                    // dP (bq×nk) = dO_blk (bq×HS) · V[lo..hi]ᵀ (HS×nk)
                    gemm_strided(
                        ds.as_mut_ptr(),
                        nk as isize,
                        do_blk.as_ptr(),
                        c as isize,
                        1,
                        v_blk.as_ptr(),
                        1,
                        c as isize,
                        bq,
                        d.hs,
                        nk,
                        false,
                        1.0,
                        false,
                    );
                }
                rows::softmax_grad_block(ds, p, &dd[..bq], nk);
                unsafe {
                    // dQ_blk (bq×HS) += scale · dS (bq×nk) · K[lo..hi] (nk×HS)
                    gemm_strided(
                        dq_bh.add(i0 * c),
                        c as isize,
                        ds.as_ptr(),
                        nk as isize,
                        1,
                        k_blk.as_ptr(),
                        c as isize,
                        1,
                        bq,
                        nk,
                        d.hs,
                        true,
                        scale,
                        false,
                    );
                    // dK[lo..hi] (nk×HS) += scale · dSᵀ (nk×bq) · Q_blk (bq×HS)
                    gemm_strided(
                        dk_blk,
                        c as isize,
                        ds.as_ptr(),
                        1,
                        nk as isize,
                        q_blk.as_ptr(),
                        c as isize,
                        1,
                        nk,
                        bq,
                        d.hs,
                        true,
                        scale,
                        false,
                    );
                }
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Vectorised row math
// ---------------------------------------------------------------------------------------------

/// Softmax rows of the score blocks, built on the shared vectorised math in [`super::vmath`]
/// each compiled for the SIMD ladder with [`simd_fn!`](super::simd::simd_fn).
pub(crate) mod rows {
    use super::super::simd::simd_fn;
    use super::super::vmath::{exp_nonpositive as exp, exp_shift_sum, max, scale};

    /// Sets `x[j] = -∞` where `mask[j] == 0`.
    #[inline(always)]
    fn apply_mask(x: &mut [f32], mask: &[u8]) {
        for (e, &m) in x.iter_mut().zip(mask) {
            *e = if m != 0 { *e } else { f32::NEG_INFINITY };
        }
    }

    simd_fn! {
        /// Softmax of a score row in place, entries with `mask[j] == 0` excluded (0 probability).
        /// Returns the row's log-sum-exp, or `-∞` (and an all-zero row) if nothing is unmasked.
        pub(crate) fn softmax_row(x: &mut [f32], mask: Option<&[u8]>) -> f32 {
            if let Some(m) = mask {
                apply_mask(x, m);
            }
            let mx = max(x);
            if mx == f32::NEG_INFINITY {
                x.fill(0.0);
                return f32::NEG_INFINITY;
            }
            let sum = exp_shift_sum(x, mx);
            scale(x, 1.0 / sum);
            mx + sum.ln()
        }
    }

    simd_fn! {
        /// Recomputes probabilities from scores in place: `exp(x - lse)`, 0 where masked or when
        /// the row was fully masked (`lse = -∞`).
        pub(crate) fn probs_row(x: &mut [f32], lse: f32, mask: Option<&[u8]>) {
            if lse == f32::NEG_INFINITY {
                x.fill(0.0);
                return;
            }
            if let Some(m) = mask {
                apply_mask(x, m);
            }
            for e in x.iter_mut() {
                *e = exp(*e - lse);
            }
        }
    }

    simd_fn! {
        /// Softmax backward on a block of rows of length `n`, in place:
        /// `dp[r][j] = p[r][j] · (dp[r][j] - dd[r])`.
        pub(crate) fn softmax_grad_block(dp: &mut [f32], p: &[f32], dd: &[f32], n: usize) {
            for ((dpr, pr), &di) in dp.chunks_exact_mut(n).zip(p.chunks_exact(n)).zip(dd) {
                for (g, &pj) in dpr.iter_mut().zip(pr) {
                    *g = pj * (*g - di);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Naive twins (test oracles)
// ---------------------------------------------------------------------------------------------

/// Whether query `i` may attend key `j` of batch `b`, written out from the rules of the module
/// docs (not through the fast kernel's windows).
fn allowed(d: &AttentionDims, mask: &AttentionMask, b: usize, i: usize, j: usize) -> bool {
    let after_start = mask
        .positions
        .is_none_or(|p| j + p[b * d.tq + i] as usize >= i);
    j < d.key_limit(i, mask.causal)
        && after_start
        && mask.key_mask.is_none_or(|m| m[b * d.tk + j] != 0)
}

/// Full probability matrix of head (b, h) in f64, rows of fully masked queries all zero, and
/// each row's log-sum-exp.
fn naive_probs(
    q: &[f32],
    k: &[f32],
    mask: &AttentionMask,
    d: &AttentionDims,
    b: usize,
    h: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (c, tq, tk, hs) = (d.c(), d.tq, d.tk, d.hs);
    let scale = 1.0 / (hs as f64).sqrt();
    let mut p = vec![0.0f64; tq * tk];
    let mut lse = vec![f64::NEG_INFINITY; tq];
    for i in 0..tq {
        let row = &mut p[i * tk..(i + 1) * tk];
        let mut mx = f64::NEG_INFINITY;
        for (j, s) in row.iter_mut().enumerate() {
            if allowed(d, mask, b, i, j) {
                let qi = &q[(b * tq + i) * c + h * hs..][..hs];
                let kj = &k[(b * tk + j) * c + h * hs..][..hs];
                *s = scale
                    * qi.iter()
                        .zip(kj)
                        .map(|(x, y)| *x as f64 * *y as f64)
                        .sum::<f64>();
                mx = mx.max(*s);
            } else {
                *s = f64::NEG_INFINITY;
            }
        }
        if mx == f64::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        let sum: f64 = row.iter().map(|s| (s - mx).exp()).sum();
        for s in row.iter_mut() {
            *s = (*s - mx).exp() / sum;
        }
        lse[i] = mx + sum.ln();
    }
    (p, lse)
}

/// [`attention_forward`] with f64 results (the finite-difference tests use this directly).
fn naive_forward_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &AttentionMask,
    d: AttentionDims,
) -> (Vec<f64>, Vec<f64>) {
    mask.check("attention_forward_naive", &d);
    let (c, tq, tk, hs) = (d.c(), d.tq, d.tk, d.hs);
    let mut out = vec![0.0f64; d.b * tq * c];
    let mut lse = vec![0.0f64; d.b * d.nh * tq];
    for b in 0..d.b {
        for h in 0..d.nh {
            let (p, l) = naive_probs(q, k, mask, &d, b, h);
            lse[(b * d.nh + h) * tq..][..tq].copy_from_slice(&l);
            for i in 0..tq {
                for e in 0..hs {
                    out[(b * tq + i) * c + h * hs + e] = (0..tk)
                        .map(|j| p[i * tk + j] * v[(b * tk + j) * c + h * hs + e] as f64)
                        .sum();
                }
            }
        }
    }
    (out, lse)
}

/// Oracle for [`attention_forward`]: materialises the full score matrix per head, f64 math.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_naive(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u8]>,
    causal: bool,
    d: AttentionDims,
) {
    let mask = AttentionMask::new(key_mask, causal);
    attention_forward_naive_masked(out, lse, q, k, v, mask, d);
}

/// Oracle for [`attention_forward_masked`] (see [`attention_forward_naive`]).
pub fn attention_forward_naive_masked(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    let (o, l) = naive_forward_f64(q, k, v, &mask, d);
    for (dst, src) in out.iter_mut().zip(o) {
        *dst = src as f32;
    }
    for (dst, src) in lse.iter_mut().zip(l) {
        *dst = src as f32;
    }
}

/// Oracle for [`attention_backward`]: full probability matrix per head, f64 math, textbook
/// softmax backward. `out` and `lse` are accepted for signature parity and not used.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_naive(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    _out: &[f32],
    _lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u8]>,
    causal: bool,
    d: AttentionDims,
) {
    let mask = AttentionMask::new(key_mask, causal);
    attention_backward_naive_masked(dq, dk, dv, dout, _out, _lse, q, k, v, mask, d);
}

/// Oracle for [`attention_backward_masked`] (see [`attention_backward_naive`]).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_naive_masked(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    _out: &[f32],
    _lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttentionMask,
    d: AttentionDims,
) {
    mask.check("attention_backward_naive", &d);
    let (c, tq, tk, hs) = (d.c(), d.tq, d.tk, d.hs);
    let scale = 1.0 / (hs as f64).sqrt();
    let qi = |b: usize, i: usize, h: usize, e: usize| (b * tq + i) * c + h * hs + e;
    let kj = |b: usize, j: usize, h: usize, e: usize| (b * tk + j) * c + h * hs + e;
    let mut dq64 = vec![0.0f64; dq.len()];
    let mut dk64 = vec![0.0f64; dk.len()];
    let mut dv64 = vec![0.0f64; dv.len()];
    for b in 0..d.b {
        for h in 0..d.nh {
            let (p, _) = naive_probs(q, k, &mask, &d, b, h);
            for i in 0..tq {
                // dP_ij = dO_i · V_j; dS_ij = P_ij (dP_ij - Σ_l P_il dP_il)
                let dp: Vec<f64> = (0..tk)
                    .map(|j| {
                        (0..hs)
                            .map(|e| dout[qi(b, i, h, e)] as f64 * v[kj(b, j, h, e)] as f64)
                            .sum()
                    })
                    .collect();
                let pdp: f64 = (0..tk).map(|j| p[i * tk + j] * dp[j]).sum();
                for j in 0..tk {
                    let pij = p[i * tk + j];
                    let ds = pij * (dp[j] - pdp) * scale;
                    for e in 0..hs {
                        dv64[kj(b, j, h, e)] += pij * dout[qi(b, i, h, e)] as f64;
                        dq64[qi(b, i, h, e)] += ds * k[kj(b, j, h, e)] as f64;
                        dk64[kj(b, j, h, e)] += ds * q[qi(b, i, h, e)] as f64;
                    }
                }
            }
        }
    }
    for (g, g64) in [(dq, dq64), (dk, dk64), (dv, dv64)] {
        for (dst, src) in g.iter_mut().zip(g64) {
            *dst += src as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what} index {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn decode_scores_and_value_sums_match_an_f64_oracle_and_every_rung_gives_the_same_bits() {
        use crate::kernels::simd::{limit, Isa};
        // `kernel` on each rung of the ladder: within 1e-5 of `oracle`, and the same bits.
        let rungs_agree = |what: &str, oracle: &[f32], kernel: &dyn Fn(&mut [f32])| {
            let mut runs = Vec::new();
            for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                let mut got = vec![f32::NAN; oracle.len()];
                let _cap = limit(isa);
                kernel(&mut got);
                close(&format!("{what}, {isa:?}"), &got, oracle, 1e-5);
                runs.push(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            }
            assert!(
                runs.iter().all(|r| *r == runs[0]),
                "{what}: the rungs differ"
            );
        };
        let mut rng = Rng::new(11);
        for &(keys, hs, ld) in &[
            (1, 64, 64),
            (15, 64, 192),
            (16, 64, 768),
            (37, 32, 96),
            (40, 20, 60),
            (9, 112, 112),
        ] {
            let q = rng.normal_vec(hs, 1.0);
            let k = rng.normal_vec((keys - 1) * ld + hs, 1.0);
            let scale = 1.0 / (hs as f32).sqrt();
            let oracle: Vec<f32> = (0..keys)
                .map(|j| {
                    let d: f64 = (0..hs).map(|i| q[i] as f64 * k[j * ld + i] as f64).sum();
                    (scale as f64 * d) as f32
                })
                .collect();
            rungs_agree(&format!("scores, {keys} keys, HS {hs}"), &oracle, &|s| {
                scores_row(s, &q, &k, ld, hs, scale)
            });
            // The weighted sum of value rows (k's rows serve as values); HS 112 runs two
            // register blocks on AVX-512 (64 + 48 outputs), HS 20 the portable loop.
            let p = rng.normal_vec(keys, 0.3);
            let oracle: Vec<f32> = (0..hs)
                .map(|i| {
                    (0..keys)
                        .map(|j| p[j] as f64 * k[j * ld + i] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            rungs_agree(
                &format!("value sums, {keys} keys, HS {hs}"),
                &oracle,
                &|o| weighted_rows(o, &p, &k, ld),
            );
        }
    }

    #[test]
    fn single_queries_equal_one_call_per_sequence_bit_for_bit() {
        // Three sequences of a cache-like buffer (cap 9 positions each), lengths 1, 9 and 4,
        // queries in packed rows of stride 3C (out of order), odd head sizes.
        let mut rng = Rng::new(7);
        for &(nh, hs) in &[(1usize, 5usize), (3, 7), (2, 64)] {
            let (c, cap) = (nh * hs, 9);
            let k = rng.normal_vec(3 * cap * c, 1.0);
            let v = rng.normal_vec(3 * cap * c, 1.0);
            let q = rng.normal_vec(4 * 3 * c, 1.0);
            let queries = [
                SingleQuery {
                    row: 2,
                    kv_start: 0,
                    len: 1,
                },
                SingleQuery {
                    row: 0,
                    kv_start: cap * c,
                    len: 9,
                },
                SingleQuery {
                    row: 3,
                    kv_start: 2 * cap * c,
                    len: 4,
                },
            ];
            let mut got = vec![f32::NAN; 4 * c];
            attention_single_queries(&mut got, &q, 3 * c, &k, &v, &queries, nh, hs);
            for sq in &queries {
                let d = AttentionDims {
                    b: 1,
                    tq: 1,
                    tk: sq.len,
                    nh,
                    hs,
                };
                let mut want = vec![0.0; c];
                let mut lse = vec![0.0; nh];
                let kv = sq.kv_start..sq.kv_start + sq.len * c;
                let qr = &q[sq.row * 3 * c..sq.row * 3 * c + c];
                attention_forward(
                    &mut want,
                    &mut lse,
                    qr,
                    &k[kv.clone()],
                    &v[kv],
                    None,
                    true,
                    d,
                );
                assert_eq!(
                    &got[sq.row * c..(sq.row + 1) * c],
                    &want[..],
                    "{sq:?} nh {nh} hs {hs}"
                );
            }
            // The row no query names is left alone.
            assert!(got[c..2 * c].iter().all(|x| x.is_nan()));
        }
    }

    /// A case: dims, causal, a key mask (None, or one row of bytes per batch) and packed rows'
    /// positions (None, or `(B, T)`).
    struct Case {
        d: AttentionDims,
        causal: bool,
        mask: Option<Vec<u8>>,
        positions: Option<Vec<u32>>,
    }

    impl Case {
        fn mask(&self) -> AttentionMask<'_> {
            AttentionMask {
                key_mask: self.mask.as_deref(),
                causal: self.causal,
                positions: self.positions.as_deref(),
            }
        }
    }

    fn dims(b: usize, tq: usize, tk: usize, nh: usize, hs: usize) -> AttentionDims {
        AttentionDims { b, tq, tk, nh, hs }
    }

    /// Partial padding: batch `b` keeps its first `tk - 1 - b` keys plus key 0 always.
    fn padding(b: usize, tk: usize, rng: &mut Rng) -> Vec<u8> {
        let mut m = vec![1u8; b * tk];
        for (bi, row) in m.chunks_exact_mut(tk).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                if j > 0 && (j + bi + 1 >= tk || rng.uniform() < 0.2) {
                    *x = 0;
                }
            }
        }
        m
    }

    /// Packed rows: each row of `t` tokens split into examples at random (a new one starts
    /// with probability `p_new` at each token), positions restarting at 0 for each.
    fn packing(b: usize, t: usize, p_new: f64, rng: &mut Rng) -> Vec<u32> {
        let mut pos = Vec::with_capacity(b * t);
        for _ in 0..b {
            let mut x = 0u32;
            for i in 0..t {
                if i > 0 && rng.uniform_f64() < p_new {
                    x = 0;
                }
                pos.push(x);
                x += 1;
            }
        }
        pos
    }

    fn cases(rng: &mut Rng) -> Vec<Case> {
        // (B, Tq, Tk, NH, HS, causal, padded keys)
        let shapes = [
            (2, 7, 7, 3, 5, true, false),
            (2, 7, 7, 3, 5, false, false),
            (2, 5, 9, 2, 5, false, false),    // cross-attention
            (2, 3, 9, 3, 5, true, false),     // decoding a chunk against a longer cache
            (1, 9, 4, 2, 3, true, false),     // Tq > Tk: the first rows see no key
            (2, 37, 37, 2, 7, true, false),   //
            (1, 150, 150, 1, 4, true, false), // several causal query blocks
            (1, 140, 9, 2, 3, false, false),  // several non-causal query blocks
            (1, 20, 600, 1, 3, true, false),  // block rows capped by Tk
            (1, 70, 45, 3, 4, false, false),
            (1, 1, 13, 4, 16, true, false), // one decoding step
            (2, 7, 7, 3, 5, true, true),
            (3, 5, 9, 2, 5, false, true),
            (2, 70, 70, 2, 5, true, true),
        ];
        let mut v: Vec<Case> = shapes
            .iter()
            .map(|&(b, tq, tk, nh, hs, causal, pad)| Case {
                d: dims(b, tq, tk, nh, hs),
                causal,
                mask: pad.then(|| padding(b, tk, rng)),
                positions: None,
            })
            .collect();
        // Packed rows (document mask): (B, T, NH, HS, padded keys, chance of a new example).
        for (b, t, nh, hs, pad, p_new) in [
            (2, 7, 3, 5, false, 0.3),
            (2, 7, 3, 5, true, 0.3),
            (2, 37, 2, 7, false, 0.15),
            (1, 150, 1, 4, false, 0.05), // several query blocks, later ones skip keys
            (2, 70, 2, 5, true, 0.1),    // padding too: some rows see no key at all
            (1, 9, 2, 3, false, 0.5),    // examples of one token
        ] {
            v.push(Case {
                d: dims(b, t, t, nh, hs),
                causal: true,
                mask: pad.then(|| padding(b, t, rng)),
                positions: Some(packing(b, t, p_new, rng)),
            });
        }
        // Left padding under a causal mask: the first rows of batch 1 see no key.
        let mut left = vec![1u8; 2 * 7];
        left[7..10].fill(0);
        v.push(Case {
            d: dims(2, 7, 7, 2, 3),
            causal: true,
            mask: Some(left),
            positions: None,
        });
        // A batch with no key at all: every row of it fully masked.
        let mut none = padding(2, 6, rng);
        none[6..].fill(0);
        v.push(Case {
            d: dims(2, 4, 6, 2, 3),
            causal: false,
            mask: Some(none),
            positions: None,
        });
        v
    }

    type Forward = fn(&mut [f32], &mut [f32], &[f32], &[f32], &[f32], AttentionMask, AttentionDims);
    #[rustfmt::skip]
    type Backward = fn(
        &mut [f32], &mut [f32], &mut [f32], &[f32], &[f32], &[f32], &[f32], &[f32], &[f32],
        AttentionMask, AttentionDims,
    );

    struct Run {
        out: Vec<f32>,
        lse: Vec<f32>,
        dq: Vec<f32>,
        dk: Vec<f32>,
        dv: Vec<f32>,
    }

    #[allow(clippy::type_complexity)]
    fn inputs(d: AttentionDims, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let c = d.c();
        let q = rng.normal_vec(d.b * d.tq * c, 1.0);
        let k = rng.normal_vec(d.b * d.tk * c, 1.0);
        let v = rng.normal_vec(d.b * d.tk * c, 1.0);
        let dout = rng.normal_vec(d.b * d.tq * c, 1.0);
        (q, k, v, dout)
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Kernel {
        Fast,
        Naive,
        Bf16,
        /// The plain entry points (`key_mask`, `causal`), for cases without positions.
        Plain,
        /// [`Kernel::Plain`] in bf16.
        PlainBf16,
    }

    fn run(case: &Case, q: &[f32], k: &[f32], v: &[f32], dout: &[f32], kernel: Kernel) -> Run {
        let d = case.d;
        let c = d.c();
        let mask = case.mask();
        let mut out = vec![f32::NAN; d.b * d.tq * c];
        let mut lse = vec![f32::NAN; d.b * d.nh * d.tq];
        // Backward accumulates: start from ones and subtract them afterwards.
        let mut dq = vec![1.0; q.len()];
        let mut dk = vec![1.0; k.len()];
        let mut dv = vec![1.0; v.len()];
        if matches!(kernel, Kernel::Plain | Kernel::PlainBf16) {
            assert!(
                case.positions.is_none(),
                "the plain kernels take no positions"
            );
            let (km, causal) = (case.mask.as_deref(), case.causal);
            let (dq, dk, dv) = (&mut dq, &mut dk, &mut dv);
            if kernel == Kernel::Plain {
                attention_forward(&mut out, &mut lse, q, k, v, km, causal, d);
                attention_backward(dq, dk, dv, dout, &out, &lse, q, k, v, km, causal, d);
            } else {
                attention_forward_bf16(&mut out, &mut lse, q, k, v, km, causal, d);
                attention_backward_bf16(dq, dk, dv, dout, &out, &lse, q, k, v, km, causal, d);
            }
        } else {
            let (forward, backward): (Forward, Backward) = match kernel {
                Kernel::Naive => (
                    attention_forward_naive_masked,
                    attention_backward_naive_masked,
                ),
                Kernel::Bf16 => (
                    attention_forward_masked_bf16,
                    attention_backward_masked_bf16,
                ),
                _ => (attention_forward_masked, attention_backward_masked),
            };
            forward(&mut out, &mut lse, q, k, v, mask, d);
            backward(
                &mut dq, &mut dk, &mut dv, dout, &out, &lse, q, k, v, mask, d,
            );
        }
        for g in dq.iter_mut().chain(dk.iter_mut()).chain(dv.iter_mut()) {
            *g -= 1.0;
        }
        Run {
            out,
            lse,
            dq,
            dk,
            dv,
        }
    }

    #[test]
    fn fast_matches_naive_on_odd_shapes() {
        let mut rng = Rng::new(11);
        for (ci, case) in cases(&mut rng).iter().enumerate() {
            let (q, k, v, dout) = inputs(case.d, &mut rng);
            let fast = run(case, &q, &k, &v, &dout, Kernel::Fast);
            let slow = run(case, &q, &k, &v, &dout, Kernel::Naive);
            let tag = |s: &str| {
                let packed = case.positions.is_some();
                format!(
                    "case {ci} {:?} causal {} packed {packed}: {s}",
                    case.d, case.causal
                )
            };
            close(&tag("out"), &fast.out, &slow.out, 2e-5);
            for (i, (a, b)) in fast.lse.iter().zip(&slow.lse).enumerate() {
                let ok = (a == b) || (a - b).abs() <= 2e-5 * (1.0 + b.abs());
                assert!(ok, "{} index {i}: {a} vs {b}", tag("lse"));
            }
            close(&tag("dq"), &fast.dq, &slow.dq, 5e-5);
            close(&tag("dk"), &fast.dk, &slow.dk, 5e-5);
            close(&tag("dv"), &fast.dv, &slow.dv, 5e-5);
        }
    }

    /// The bf16 products round Q, K, V, dO, P and dS to bf16 (relative error 2^-9 each) and
    /// accumulate in f32: every output stays within 1% (in norm) of the f64 oracle, and differs
    /// from the f32 kernel (so the bf16 path really ran). Fully masked rows stay zero.
    ///
    /// Except `dq` and `dk` of packed rows of very short examples (under 4 tokens on average):
    /// a query that sees one key has `dS = P (dP - D) = 0` exactly, but `dP` multiplies the
    /// bf16-rounded `dO` and `D` the f32 one, so bf16 leaves noise of the rounding's size there
    /// (the plain kernel's first causal query too); when most queries see one or two keys, that
    /// noise is most of the tensor's norm (measured: 6% and 10% for examples of 2 tokens).
    #[test]
    fn bf16_products_stay_within_bf16_rounding_of_the_oracle() {
        let mut rng = Rng::new(13);
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let rel = |a: &[f32], b: &[f32]| {
            let diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            norm(&diff) / norm(b).max(1e-30)
        };
        for (ci, case) in cases(&mut rng).iter().enumerate() {
            let (q, k, v, dout) = inputs(case.d, &mut rng);
            let half = run(case, &q, &k, &v, &dout, Kernel::Bf16);
            let fast = run(case, &q, &k, &v, &dout, Kernel::Fast);
            let slow = run(case, &q, &k, &v, &dout, Kernel::Naive);
            let tag = |s: &str| {
                let packed = case.positions.is_some();
                format!(
                    "case {ci} {:?} causal {} packed {packed}: {s}",
                    case.d, case.causal
                )
            };
            let starts = |p: &Vec<u32>| p.iter().filter(|&&x| x == 0).count();
            let short = case
                .positions
                .as_ref()
                .is_some_and(|p| p.len() < 4 * starts(p));
            for (name, a, f, b) in [
                ("out", &half.out, &fast.out, &slow.out),
                ("lse", &half.lse, &fast.lse, &slow.lse),
                ("dq", &half.dq, &fast.dq, &slow.dq),
                ("dk", &half.dk, &fast.dk, &slow.dk),
                ("dv", &half.dv, &fast.dv, &slow.dv),
            ] {
                assert!(a.iter().all(|x| !x.is_nan()), "{}: NaN", tag(name));
                let finite = |x: &[f32]| {
                    x.iter()
                        .map(|&y| if y.is_finite() { y } else { 0.0 })
                        .collect::<Vec<_>>()
                };
                let (a, f, b) = (finite(a), finite(f), finite(b));
                let e = rel(&a, &b);
                if !(short && (name == "dq" || name == "dk")) {
                    assert!(e < 1e-2, "{}: relative error {e}", tag(name));
                }
                if norm(&b) > 0.0 && name != "lse" {
                    assert!(a != f, "{}: bf16 result equals f32", tag(name));
                }
            }
        }
    }

    #[test]
    fn vectorised_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((crate::kernels::vmath::exp_fast(x) as f64 - want) / want).abs());
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        assert_eq!(crate::kernels::vmath::exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(crate::kernels::vmath::exp_fast(-1e4), 0.0);
        assert_eq!(crate::kernels::vmath::exp_fast(0.0), 1.0);
        assert!(crate::kernels::vmath::exp_fast(f32::NAN).is_nan());
        let mut row = vec![0.5f32; 37];
        let s = crate::kernels::vmath::exp_shift_sum(&mut row, 0.5);
        assert!((s - 37.0).abs() < 1e-5 && row.iter().all(|&e| e == 1.0));
    }

    #[test]
    fn fully_masked_rows_are_zero_not_nan() {
        let mut rng = Rng::new(12);
        // Batch 1 has no keys at all; with Tq > Tk causal, batch 0's first rows see no key.
        let d = dims(2, 6, 4, 2, 3);
        let mut mask = vec![1u8; 2 * 4];
        mask[4..].fill(0);
        let case = Case {
            d,
            causal: true,
            mask: Some(mask),
            positions: None,
        };
        let (q, k, v, dout) = inputs(d, &mut rng);
        let r = run(&case, &q, &k, &v, &dout, Kernel::Fast);
        let c = d.c();
        for x in r
            .out
            .iter()
            .chain(&r.lse)
            .chain(&r.dq)
            .chain(&r.dk)
            .chain(&r.dv)
        {
            assert!(!x.is_nan(), "NaN in results");
        }
        // Batch 1 entirely zero; batch 0 rows 0 and 1 (i + Tk - Tq < 0) zero.
        assert!(r.out[d.tq * c..].iter().all(|&x| x == 0.0));
        assert!(r.dq[d.tq * c..].iter().all(|&x| x == 0.0));
        assert!(r.dk[d.tk * c..].iter().all(|&x| x == 0.0));
        assert!(r.dv[d.tk * c..].iter().all(|&x| x == 0.0));
        assert!(r.out[..2 * c].iter().all(|&x| x == 0.0));
        assert!(r.dq[..2 * c].iter().all(|&x| x == 0.0));
        assert!(r.out[2 * c..3 * c].iter().any(|&x| x != 0.0));
        assert!(r.lse[d.nh * d.tq..].iter().all(|&x| x == f32::NEG_INFINITY));
        assert_eq!(r.lse[0], f32::NEG_INFINITY);
        assert!(r.lse[2].is_finite());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(13);
        let mut all = cases(&mut rng);
        all.retain(|c| c.d.b * c.d.tq * c.d.c() <= 300 && c.d.b * c.d.tk * c.d.c() <= 300);
        assert!(all.len() >= 6, "kept {} cases", all.len());
        for (ci, case) in all.iter().enumerate() {
            let d = case.d;
            let (q, k, v, dout) = inputs(d, &mut rng);
            let r = run(case, &q, &k, &v, &dout, Kernel::Fast);
            let mask = case.mask();
            // L = Σ dout ⊙ out in f64 through the naive forward.
            let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
                let (o, _) = naive_forward_f64(q, k, v, &mask, d);
                o.iter().zip(&dout).map(|(a, g)| a * *g as f64).sum()
            };
            let h = 1e-2f32;
            for (name, which, grad) in [("q", 0, &r.dq), ("k", 1, &r.dk), ("v", 2, &r.dv)] {
                for idx in 0..grad.len() {
                    let mut ins = [q.clone(), k.clone(), v.clone()];
                    let x0 = ins[which][idx];
                    ins[which][idx] = x0 + h;
                    let lp = loss(&ins[0], &ins[1], &ins[2]);
                    let xp = ins[which][idx];
                    ins[which][idx] = x0 - h;
                    let lm = loss(&ins[0], &ins[1], &ins[2]);
                    let fd = (lp - lm) / (xp as f64 - ins[which][idx] as f64);
                    let g = grad[idx] as f64;
                    assert!(
                        (fd - g).abs() < 2e-3 * (1.0 + fd.abs()),
                        "case {ci} {d:?} causal {} packed {}: d{name}[{idx}] analytic {g} vs fd {fd}",
                        case.causal,
                        case.positions.is_some()
                    );
                }
            }
        }
    }

    /// Positions `0..T` in every row (one example per row) take the packed path through the
    /// same blocks as the plain causal kernel: the results are equal bit for bit, in f32 and
    /// in bf16, with and without padding.
    #[test]
    fn packed_path_with_one_example_per_row_is_the_causal_kernel_bit_for_bit() {
        // Hold the SIMD ladder: the bf16 products' last bits depend on the rung.
        let _steady = crate::kernels::simd::steady();
        let mut rng = Rng::new(15);
        for (b, t, nh, hs, pad) in [
            (2, 7, 3, 5, false),
            (1, 150, 2, 4, false),
            (2, 70, 2, 5, true),
        ] {
            let d = dims(b, t, t, nh, hs);
            let mask = pad.then(|| padding(b, t, &mut rng));
            let (q, k, v, dout) = inputs(d, &mut rng);
            let packed = Case {
                d,
                causal: true,
                mask: mask.clone(),
                positions: Some((0..b).flat_map(|_| 0..t as u32).collect()),
            };
            let plain = Case {
                d,
                causal: true,
                mask,
                positions: None,
            };
            for (a, z) in [
                (Kernel::Fast, Kernel::Plain),
                (Kernel::Bf16, Kernel::PlainBf16),
            ] {
                let got = run(&packed, &q, &k, &v, &dout, a);
                let want = run(&plain, &q, &k, &v, &dout, z);
                for (name, x, y) in [
                    ("out", &got.out, &want.out),
                    ("lse", &got.lse, &want.lse),
                    ("dq", &got.dq, &want.dq),
                    ("dk", &got.dk, &want.dk),
                    ("dv", &got.dv, &want.dv),
                ] {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(bits(x) == bits(y), "{d:?} pad {pad}: {name} differs");
                }
            }
        }
    }

    /// The document mask isolates the examples of a packed row: each example's outputs and
    /// gradients equal those of the example run alone (plain causal kernel on its own rows).
    #[test]
    fn packed_examples_match_each_example_alone() {
        let mut rng = Rng::new(16);
        let (nh, hs) = (2, 5);
        let lens = [5usize, 9, 4, 1];
        let t: usize = lens.iter().sum();
        let d = dims(1, t, t, nh, hs);
        let c = d.c();
        let (q, k, v, dout) = inputs(d, &mut rng);
        let positions: Vec<u32> = lens.iter().flat_map(|&n| 0..n as u32).collect();
        let case = Case {
            d,
            causal: true,
            mask: None,
            positions: Some(positions),
        };
        let packed = run(&case, &q, &k, &v, &dout, Kernel::Fast);
        let mut s = 0;
        for &n in &lens {
            let rows = s * c..(s + n) * c;
            let one = Case {
                d: dims(1, n, n, nh, hs),
                causal: true,
                mask: None,
                positions: None,
            };
            let sub = |x: &[f32]| x[rows.clone()].to_vec();
            let alone = run(
                &one,
                &sub(&q),
                &sub(&k),
                &sub(&v),
                &sub(&dout),
                Kernel::Plain,
            );
            let tag = |name: &str| format!("example of {n} at {s}: {name}");
            close(&tag("out"), &packed.out[rows.clone()], &alone.out, 1e-6);
            close(&tag("dq"), &packed.dq[rows.clone()], &alone.dq, 1e-6);
            close(&tag("dk"), &packed.dk[rows.clone()], &alone.dk, 1e-6);
            close(&tag("dv"), &packed.dv[rows.clone()], &alone.dv, 1e-6);
            for h in 0..nh {
                let l = &packed.lse[h * t + s..h * t + s + n];
                close(&tag("lse"), l, &alone.lse[h * n..(h + 1) * n], 1e-6);
            }
            s += n;
        }
    }

    #[test]
    #[should_panic(expected = "past its index")]
    fn a_position_past_its_index_panics() {
        let d = dims(1, 4, 4, 1, 2);
        let x = vec![0.0; 8];
        let (mut out, mut lse) = (vec![0.0; 8], vec![0.0; 4]);
        let pos = [0, 1, 3, 0];
        let mask = AttentionMask::packed(&pos, None);
        attention_forward_masked(&mut out, &mut lse, &x, &x, &x, mask, d);
    }

    /// Times forward+backward at GPT-2-small attention shapes; run with
    /// `cargo test --release --lib kernels::attention::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let mut rng = Rng::new(14);
        let d = dims(8, 128, 128, 12, 64);
        let (q, k, v, dout) = inputs(d, &mut rng);
        let c = d.c();
        let mut out = vec![0.0; d.b * d.tq * c];
        let mut lse = vec![0.0; d.b * d.nh * d.tq];
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        for causal in [true, false] {
            let (mut best_f, mut best_b) = (f64::MAX, f64::MAX);
            for _ in 0..30 {
                let t0 = std::time::Instant::now();
                attention_forward(&mut out, &mut lse, &q, &k, &v, None, causal, d);
                let t1 = std::time::Instant::now();
                attention_backward(
                    &mut dq, &mut dk, &mut dv, &dout, &out, &lse, &q, &k, &v, None, causal, d,
                );
                let t2 = std::time::Instant::now();
                best_f = best_f.min((t1 - t0).as_secs_f64());
                best_b = best_b.min((t2 - t1).as_secs_f64());
            }
            println!(
                "attention B=8 NH=12 T=128 HS=64 causal={causal} threads={}: forward {:.3} ms, \
                 backward {:.3} ms, total {:.3} ms",
                rayon::current_num_threads(),
                best_f * 1e3,
                best_b * 1e3,
                (best_f + best_b) * 1e3
            );
        }
    }
}
