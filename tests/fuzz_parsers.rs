//! Fuzzing that stays: every parser of a user file is fed mutated valid files and random bytes,
//! and must return `Ok` or `Err` — never panic, never make an absurd allocation.
//!
//! Each parser has two tests: `fuzz_<parser>` (a short run, part of `cargo test`) and
//! `fuzz_<parser>_long` (`#[ignore]`d; run with `cargo test --test fuzz_parsers -- --ignored
//! fuzz`), whose case count is `GPT_FUZZ_CASES` (default 1,000,000). Without `--release` the
//! build keeps overflow checks, so an unchecked size product fails here instead of wrapping
//! (`--release` runs too, faster, blind to overflows). `GPT_FUZZ_SEED`
//! changes the seed; a failure prints the parser, seed, case and input, and
//! `GPT_FUZZ_FIRST=<case> GPT_FUZZ_CASES=1` replays that one case.
//!
//! Why a seeded mutation loop over our own [`Rng`] and not `proptest`: the inputs that matter
//! are small valid files written by our own savers and then damaged (bit flips, truncation,
//! insertions, a JSON or TOML scalar replaced by an extreme value, a binary header field set to
//! 2^60), plus pure random bytes. That is a few dozen lines; a case costs only the parser, which
//! matters at a million cases per parser on a two-core machine; every case is reproducible from
//! (seed, case) alone; and nothing is shrunk because a failing input is already small and is
//! printed whole. No new dependency either.
//!
//! Allocation: this test binary installs a global allocator that records, per thread and only
//! while a case runs, the largest single allocation request. A case that asks for more than
//! [`MAX_ALLOC`] fails: a header claiming 2^60 elements must be an error before allocating.
//!
//! File-based parsers are called through their public entry points on a file rewritten for each
//! case (in `/dev/shm` when there is one, so a case costs no disk I/O).

use gpt::data::prepare::read_documents;
use gpt::data::tokens::{encode_token_file, TokenFile};
use gpt::io::{serialize_f32, Dtype, TensorFile};
use gpt::model::checkpoint::{hf_config, load_config};
use gpt::model::transformer::TransformerConfig;
use gpt::model::{GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::params::{Init, ParamLayout};
use gpt::optim::{AdamW, AdamWConfig, Schedule};
use gpt::rng::Rng;
use gpt::tokenizer::{BpeTrainer, CharTokenizer, Tokenizer};
use gpt::train::checkpoint::TrainerState;
use gpt::train::trainer::read_metrics;
use gpt::train::{optim_state, TrainConfig};
use gpt::translate::data::{read_tsv, BatchCursor};
use gpt::translate::trainer::TranslateConfig;
use serde_json::{json, Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Allocation guard

/// The largest single allocation a case may request. The tokenizer loaders accept ids below
/// 2^21 by design and index tables by id (2^21 entries of 24 bytes: 48 MiB), so the bound sits
/// just above that; more from a file of a few kilobytes would be sized from an unchecked
/// header or a sparse id range (as the BPE's whole-token table once was: 100 MiB).
const MAX_ALLOC: usize = 64 << 20;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// `System`, recording the largest request of the current thread while armed.
struct PeakAlloc;

fn note(size: usize) {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; `note` only touches const-initialised
// thread-locals (no allocation, no re-entry).
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

// ---------------------------------------------------------------------------------------------
// Mutator

/// Bytes that change the meaning of JSON, TOML, TSV and text.
const SPECIAL_BYTES: &[u8] = b"\0\x01\x7f\xff\"'{}[],:=\n\r\t \\-+.0129eE#";

/// Replacements for a scalar: extremes, wrong types, NaN strings.
const EXTREMES: &[&str] = &[
    "-1",
    "0",
    "1",
    "-0",
    "2",
    "3",
    "4294967295",
    "4294967296",
    "2097152",
    "1152921504606846976",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "99999999999999999999999999999",
    "1e999",
    "-1e999",
    "1e-999",
    "0.5",
    "-0.5",
    "\"NaN\"",
    "\"inf\"",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "[1, 2]",
    "\"\"",
    "\"x\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"<|endoftext|>\"",
    "\"Ġ\"",
];

/// Little-endian integers for binary header fields.
const EXTREME_INTS: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    255,
    65535,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    1 << 60,
    (1 << 62) + 1,
    i64::MAX as u64,
    u64::MAX,
];

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.below(n as u64) as usize
    }
}

/// Byte ranges of the scalars of a JSON or TOML text: numbers, `true`/`false`/`null`, and
/// double-quoted strings (a crude scan; it only has to find places worth replacing).
fn scalar_spans(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            out.push((i, end));
            i = end;
        } else if c.is_ascii_digit() || c == b'-' || c.is_ascii_alphabetic() {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b"-+._".contains(&b[j])) {
                j += 1;
            }
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// One random edit of `buf`; `others` are the seeds (for splicing).
fn mutate_once(rng: &mut Rng, buf: &mut Vec<u8>, others: &[Vec<u8>]) {
    let n = buf.len();
    match rng.below(11) {
        // Flip a bit.
        0 if n > 0 => {
            let i = below(rng, n);
            buf[i] ^= 1 << rng.below(8);
        }
        // Set a byte to a meaningful or random value.
        1 if n > 0 => {
            let i = below(rng, n);
            buf[i] = if rng.below(2) == 0 {
                *pick(rng, SPECIAL_BYTES)
            } else {
                rng.next_u64() as u8
            };
        }
        // Truncate.
        2 => buf.truncate(below(rng, n + 1)),
        // Insert a few random or meaningful bytes.
        3 => {
            let i = below(rng, n + 1);
            let k = 1 + below(rng, 8);
            let ins: Vec<u8> = (0..k)
                .map(|_| {
                    if rng.below(2) == 0 {
                        *pick(rng, SPECIAL_BYTES)
                    } else {
                        rng.next_u64() as u8
                    }
                })
                .collect();
            buf.splice(i..i, ins);
        }
        // Delete a range.
        4 if n > 0 => {
            let i = below(rng, n);
            let k = 1 + below(rng, (n - i).min(64));
            buf.drain(i..i + k);
        }
        // Duplicate a range somewhere else.
        5 if n > 0 => {
            let i = below(rng, n);
            let k = 1 + below(rng, (n - i).min(64));
            let chunk = buf[i..i + k].to_vec();
            let at = below(rng, n + 1);
            buf.splice(at..at, chunk);
        }
        // Replace a scalar with an extreme value (twice as likely: the richest edit for
        // structured text).
        6 | 7 => {
            let spans = scalar_spans(buf);
            if !spans.is_empty() {
                let (s, e) = *pick(rng, &spans);
                let v = pick(rng, EXTREMES).as_bytes().to_vec();
                buf.splice(s..e, v);
            }
        }
        // Overwrite a little-endian u32 or u64 with an extreme integer (binary headers).
        8 if n >= 4 => {
            let wide = n >= 8 && rng.below(2) == 0;
            let w = if wide { 8 } else { 4 };
            // Aligned offsets in the first 32 bytes half the time: where the headers are.
            let i = if rng.below(2) == 0 {
                (below(rng, n.min(32) / w) * w).min(n - w)
            } else {
                below(rng, n - w + 1)
            };
            let x = *pick(rng, EXTREME_INTS);
            let x = if rng.below(4) == 0 {
                x.wrapping_add(rng.below(3)).wrapping_sub(1)
            } else {
                x
            };
            buf[i..i + w].copy_from_slice(&x.to_le_bytes()[..w]);
        }
        // Splice: the head of this input, the tail of another seed.
        9 if !others.is_empty() => {
            let other = pick(rng, others);
            let i = below(rng, n + 1);
            let j = below(rng, other.len() + 1);
            buf.truncate(i);
            buf.extend_from_slice(&other[j..]);
        }
        // Repeat a range many times (long lines, deep nesting).
        10 if n > 0 => {
            let i = below(rng, n);
            let k = 1 + below(rng, (n - i).min(8));
            let chunk = buf[i..i + k].to_vec();
            let reps = 1 + below(rng, 200);
            let at = below(rng, n + 1);
            buf.splice(at..at, chunk.iter().copied().cycle().take(k * reps));
        }
        _ => {
            let i = below(rng, n + 1);
            buf.insert(i, rng.next_u64() as u8);
        }
    }
}

/// The input of case `case`: 1 in 10 pure random bytes (a JSON-ish alphabet half the time),
/// else a seed under 1 to 4 edits; case 0..seeds.len() are the seeds unchanged.
fn make_input(rng: &mut Rng, seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    if (case as usize) < seeds.len() {
        return seeds[case as usize].clone();
    }
    if rng.below(10) == 0 {
        let len = below(rng, 300);
        let text = rng.below(2) == 0;
        return (0..len)
            .map(|_| {
                if text {
                    *pick(rng, b"{}[]\":,0123456789-.eE abcnrtu\\\n\t=#")
                } else {
                    rng.next_u64() as u8
                }
            })
            .collect();
    }
    let mut buf = pick(rng, seeds).clone();
    // One edit half the time (most inputs stay close to valid), else 2 to 4.
    let edits = if rng.below(2) == 0 {
        1
    } else {
        2 + rng.below(3)
    };
    for _ in 0..edits {
        mutate_once(rng, &mut buf, seeds);
    }
    buf
}

// ---------------------------------------------------------------------------------------------
// Runner

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// What a run did.
struct Report {
    ok: u64,
    err: u64,
    peak: usize,
}

/// Runs `cases` cases of `target` (input → parsed `Ok`?) over mutations of `seeds`; panics with
/// the case and input on the first panic or oversized allocation.
fn fuzz(name: &str, seeds: &[Vec<u8>], cases: u64, mut target: impl FnMut(&[u8]) -> bool) {
    let seed = env_u64("GPT_FUZZ_SEED").unwrap_or(0x5EED_F022);
    let first = env_u64("GPT_FUZZ_FIRST").unwrap_or(0);
    let t0 = Instant::now();
    let mut rep = Report {
        ok: 0,
        err: 0,
        peak: 0,
    };
    for case in first..first + cases {
        let mut rng = Rng::new(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let input = make_input(&mut rng, seeds, case);
        PEAK.with(|p| p.set(0));
        ARMED.with(|a| a.set(true));
        let res = catch_unwind(AssertUnwindSafe(|| target(&input)));
        ARMED.with(|a| a.set(false));
        let peak = PEAK.with(Cell::get);
        rep.peak = rep.peak.max(peak);
        let shown = || {
            let s = String::from_utf8_lossy(&input[..input.len().min(2000)]).into_owned();
            format!(
                "fuzz {name}: case {case} (GPT_FUZZ_SEED={seed} GPT_FUZZ_FIRST={case} \
                 GPT_FUZZ_CASES=1 replays it), input of {} bytes:\n{s:?}\nhex: {}",
                input.len(),
                input
                    .iter()
                    .take(256)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        };
        match res {
            Ok(false) if (case as usize) < seeds.len() => {
                panic!("fuzz {name}: seed {case} (unmutated, a valid file) must parse")
            }
            Ok(true) => rep.ok += 1,
            Ok(false) => rep.err += 1,
            Err(_) => panic!("PANIC in the parser; {}", shown()),
        }
        if peak > MAX_ALLOC {
            panic!(
                "an allocation of {peak} bytes (limit {MAX_ALLOC}); {}",
                shown()
            );
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {cases} cases in {secs:.1} s ({:.0}/s), {} Ok, {} Err, 0 panics, largest \
         allocation {} KiB",
        cases as f64 / secs.max(1e-9),
        rep.ok,
        rep.err,
        rep.peak >> 10
    );
}

/// Cases of a long run: `GPT_FUZZ_CASES`, default one million.
fn long_cases() -> u64 {
    env_u64("GPT_FUZZ_CASES").unwrap_or(1_000_000)
}

/// Cases of the short run in `cargo test` (`GPT_FUZZ_SHORT_CASES` overrides).
fn short_cases(default: u64) -> u64 {
    env_u64("GPT_FUZZ_SHORT_CASES").unwrap_or(default)
}

/// A scratch directory, removed when dropped (with the target that owns it).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// A fresh directory for one parser's files (in `/dev/shm` when there is one).
fn scratch(name: &str) -> Scratch {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("gpt-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    Scratch(dir)
}

/// Writes `bytes` to `path` (the test's own scratch file: a failure here is the machine's).
fn put(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write the scratch file");
}

// ---------------------------------------------------------------------------------------------
// Targets: each returns its seeds and a closure (input → parsed Ok?).

type Target = (Vec<Vec<u8>>, Box<dyn FnMut(&[u8]) -> bool>);

/// A small trained byte-level BPE (256 bytes + a few merges + specials).
fn small_bpe() -> Tokenizer {
    let trainer = BpeTrainer {
        vocab_size: 280,
        special_tokens: vec!["<|endoftext|>".into(), "<pad>".into()],
        ..BpeTrainer::default()
    };
    trainer
        .train_texts(&["hello world, hello there; the cat sat on the mat. 123 456 héllo 日本"])
        .expect("train a small BPE")
        .0
}

/// After a tokenizer loads, using it must not panic either.
fn exercise_bpe(t: &Tokenizer) {
    let ids = t.encode_with_specials("hello world<|endoftext|> the mat 日本 \u{0}");
    let _ = t.decode(&ids);
    let _ = t.decode(&[0, 1, t.vocab_size() as u32, u32::MAX]);
}

/// GPT-2's own files cut to ids below 300 (the 256 bytes, the first merges, no specials):
/// (vocab.json, merges.txt).
fn gpt2_prefix() -> (Vec<u8>, Vec<u8>) {
    use gpt::tokenizer::vocab_io::{GPT2_MERGES_TXT, GPT2_VOCAB_JSON};
    let full: Map<String, Value> = serde_json::from_slice(GPT2_VOCAB_JSON).expect("bundled");
    let small: Map<String, Value> = full
        .into_iter()
        .filter(|(_, id)| id.as_u64().is_some_and(|id| id < 300))
        .collect();
    let mut merges = String::from("#version: 0.2\n");
    for line in GPT2_MERGES_TXT.lines().skip(1) {
        if small.contains_key(&line.replace(' ', "")) {
            merges.push_str(line);
            merges.push('\n');
        }
    }
    (
        serde_json::to_vec(&Value::Object(small)).expect("serialise"),
        merges.into_bytes(),
    )
}

fn vocab_json_target() -> Target {
    let t = small_bpe();
    let merges = t.to_merges_txt();
    let seeds = vec![t.to_vocab_json().into_bytes()];
    let p = Path::new("vocab.json");
    let m = Path::new("merges.txt");
    (
        seeds,
        Box::new(
            move |b| match Tokenizer::from_vocab_merges_bytes(b, p, &merges, m) {
                Ok(t) => {
                    exercise_bpe(&t);
                    true
                }
                Err(_) => false,
            },
        ),
    )
}

/// Separates vocab.json from merges.txt in the input of [`vocab_merges_target`].
const SPLIT: &[u8] = b"\n\0\0merges.txt\0\0\n";

/// Both files at once: `vocab.json`, [`SPLIT`], `merges.txt` (no split: empty merges), seeded
/// with GPT-2's own files cut to their first 300 ids and with a trained tokenizer's.
fn vocab_merges_target() -> Target {
    let t = small_bpe();
    let join = |v: &[u8], m: &[u8]| [v, SPLIT, m].concat();
    let (gv, gm) = gpt2_prefix();
    let seeds = vec![
        join(&gv, &gm),
        join(t.to_vocab_json().as_bytes(), t.to_merges_txt().as_bytes()),
    ];
    let p = Path::new("vocab.json");
    let m = Path::new("merges.txt");
    (
        seeds,
        Box::new(move |b| {
            let at = b.windows(SPLIT.len()).position(|w| w == SPLIT);
            let (v, rest) = match at {
                Some(i) => (&b[..i], &b[i + SPLIT.len()..]),
                None => (b, &b""[..]),
            };
            let Ok(text) = std::str::from_utf8(rest) else {
                return false;
            };
            match Tokenizer::from_vocab_merges_bytes(v, p, text, m) {
                Ok(t) => {
                    exercise_bpe(&t);
                    true
                }
                Err(_) => false,
            }
        }),
    )
}

fn merges_txt_target() -> Target {
    let t = small_bpe();
    let vocab = t.to_vocab_json().into_bytes();
    let seeds = vec![
        t.to_merges_txt().into_bytes(),
        b"#version: 0.2\r\nh e\r\n\r\n".to_vec(),
    ];
    let p = Path::new("vocab.json");
    let m = Path::new("merges.txt");
    (
        seeds,
        Box::new(move |b| {
            // What `from_vocab_merges_files` does with the bytes of merges.txt.
            let Ok(text) = std::str::from_utf8(b) else {
                return false;
            };
            match Tokenizer::from_vocab_merges_bytes(&vocab, p, text, m) {
                Ok(t) => {
                    exercise_bpe(&t);
                    true
                }
                Err(_) => false,
            }
        }),
    )
}

fn tokenizer_json_target() -> Target {
    let t = small_bpe();
    let mut pairs: Value = serde_json::from_str(&t.to_tokenizer_json()).expect("our JSON");
    let seeds = vec![t.to_tokenizer_json().into_bytes(), {
        // Merges as ["a", "b"] pairs, as newer `tokenizers` write them.
        let merges = pairs["model"]["merges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pairs["model"]["merges"] = merges
            .iter()
            .map(|m| {
                let s = m.as_str().unwrap_or("");
                let (l, r) = s.split_once(' ').unwrap_or((s, ""));
                json!([l, r])
            })
            .collect();
        serde_json::to_vec(&pairs).expect("serialise")
    }];
    let p = Path::new("tokenizer.json");
    (
        seeds,
        Box::new(move |b| match Tokenizer::from_tokenizer_json_bytes(b, p) {
            Ok(t) => {
                exercise_bpe(&t);
                true
            }
            Err(_) => false,
        }),
    )
}

fn char_tokenizer_target() -> Target {
    let seeds = vec![
        CharTokenizer::from_text("hello, world\n\t\"\\日本 ")
            .to_json()
            .into_bytes(),
        br#"{"type": "char", "chars": []}"#.to_vec(),
    ];
    let p = Path::new("tokenizer_char.json");
    (
        seeds,
        Box::new(move |b| match CharTokenizer::from_json_bytes(b, p) {
            Ok(t) => {
                let ids = t.encode("hello").unwrap_or_default();
                let _ = t.decode(&ids);
                let _ = t.decode(&[u32::MAX]);
                true
            }
            Err(_) => false,
        }),
    )
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    let a = [1.0f32, -2.5, 3.25, 0.0, 7.0, 8.0];
    let meta: HashMap<String, String> = [("step".to_string(), "4".to_string())].into();
    let f32_file = serialize_f32(
        &[
            ("a".into(), vec![2, 3], &a[..]),
            ("b".into(), vec![1], &[9.0][..]),
            ("s".into(), vec![], &[0.5][..]),
            ("e".into(), vec![0, 4], &[][..]),
        ],
        meta,
    )
    .expect("serialise");
    // F16, BF16 and an I64 tensor (an error when read as f32).
    let h: Vec<u8> = [1.5f32, -0.25]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let bf: Vec<u8> = [2.0f32, 0.5]
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let ids = [7u8; 16];
    let views = vec![
        (
            "h",
            safetensors::tensor::TensorView::new(Dtype::F16, vec![2], &h).expect("view"),
        ),
        (
            "bf",
            safetensors::tensor::TensorView::new(Dtype::BF16, vec![1, 2], &bf).expect("view"),
        ),
        (
            "ids",
            safetensors::tensor::TensorView::new(Dtype::I64, vec![2], &ids).expect("view"),
        ),
    ];
    let mixed = safetensors::serialize(views, None).expect("serialise");
    vec![f32_file, mixed]
}

fn safetensors_target() -> Target {
    let dir = scratch("safetensors");
    let path = dir.join("model.safetensors");
    (
        safetensors_seeds(),
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            let Ok(f) = TensorFile::open(&path) else {
                return false;
            };
            let _ = f.metadata().len();
            for t in f.tensors().to_vec() {
                let _ = f.read_f32(&t.name);
                let mut buf = vec![0u8; t.len.min(64)];
                let _ = f.read_at(t.start, &mut buf, &t.name);
                let _ = f.bytes(&t);
            }
            true
        }),
    )
}

fn token_file_target() -> Target {
    let dir = scratch("tokens");
    let path = dir.join("train.bin");
    let toks: Vec<u32> = (0..40).map(|i| (i * 7919 % 70_000) as u32).collect();
    let seeds = vec![
        encode_token_file(&toks, 65_536),
        encode_token_file(&toks, 100_000),
        encode_token_file(&[], 10),
    ];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            let Ok(f) = TokenFile::open(&path) else {
                return false;
            };
            let _ = f.max_id();
            if !f.is_empty() {
                let mut out = vec![0u32; f.len().min(8)];
                f.read(f.len() - out.len(), &mut out);
            }
            true
        }),
    )
}

fn gpt_config_seeds() -> Vec<Vec<u8>> {
    let pre = GptConfig::tiny(65);
    let post = GptConfig {
        norm: NormPlacement::Post,
        ..GptConfig::tiny(65)
    };
    let sin = GptConfig {
        positions: Positions::Sinusoidal,
        ..GptConfig::tiny(65)
    };
    let mut seeds: Vec<Vec<u8>> = [&pre, &post, &sin]
        .iter()
        .map(|c| serde_json::to_vec_pretty(&hf_config(c, None)).expect("serialise"))
        .collect();
    // A Hugging Face config.json (no "gpt" key), GPT-2 and GPT-1.
    for c in [&pre, &post] {
        let mut v = hf_config(c, None);
        if let Some(o) = v.as_object_mut() {
            o.remove("gpt");
        }
        seeds.push(serde_json::to_vec_pretty(&v).expect("serialise"));
    }
    seeds
}

fn gpt_config_target() -> Target {
    let dir = scratch("gpt-config");
    let path = dir.join("config.json");
    (
        gpt_config_seeds(),
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            match load_config(&dir) {
                Ok(c) => {
                    let _ = c.validate();
                    true
                }
                Err(_) => false,
            }
        }),
    )
}

fn transformer_config() -> TransformerConfig {
    TransformerConfig::preset("transformer-tiny", 300, [297, 298, 299]).expect("preset")
}

fn transformer_config_target() -> Target {
    let dir = scratch("transformer-config");
    let path = dir.join("config.json");
    let cfg = transformer_config();
    let seed = json!({
        "architectures": ["EncoderDecoder"],
        "model_type": "gpt-rs-transformer",
        "vocab_size": cfg.vocab_size,
        "transformer": cfg,
    });
    let seeds = vec![serde_json::to_vec_pretty(&seed).expect("serialise")];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            gpt::translate::checkpoint::load_config(&dir).is_ok()
        }),
    )
}

fn trainer_state_seeds() -> Vec<Vec<u8>> {
    let to_map = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let gpt_task = to_map(json!({
        "model": GptConfig::tiny(65),
        "config": TrainConfig::default(),
        "sampler": {"rng": Rng::new(3), "batch_size": 4, "block_size": 16},
        "dropout_rng": Rng::new(4),
    }));
    let translate_task = to_map(json!({
        "model": transformer_config(),
        "config": TranslateConfig::default(),
        "cursor": BatchCursor { epoch: 2, pos: 7 },
        "dropout_rng": Rng::new(5),
    }));
    let mut v1 = to_map(json!({"version": 1, "step": 12}));
    v1.extend(gpt_task.clone());
    vec![
        TrainerState::to_json(12, 3.5, gpt_task),
        TrainerState::to_json(40, 120.25, translate_task),
        serde_json::to_vec(&Value::Object(v1)).expect("serialise"),
    ]
}

fn trainer_state_target() -> Target {
    let dir = scratch("trainer-state");
    let path = dir.join(gpt::train::checkpoint::STATE_FILE);
    (
        trainer_state_seeds(),
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            let Ok(s) = TrainerState::read(&dir) else {
                return false;
            };
            // Every field a task restores from it.
            if let Ok(c) = s.field::<GptConfig>("model") {
                let _ = c.validate();
            }
            if let Ok(c) = s.field::<TransformerConfig>("model") {
                let _ = c.validate();
            }
            if let Ok(c) = s.field::<TrainConfig>("config") {
                let _ = c.validate();
            }
            let _ = s.field::<TranslateConfig>("config");
            let _ = s.field::<gpt::data::loader::BatchSampler>("sampler");
            let _ = s.field::<Rng>("dropout_rng");
            let _ = s.field::<BatchCursor>("cursor");
            true
        }),
    )
}

fn optim_layout() -> ParamLayout {
    let mut l = ParamLayout::new();
    l.add("a.weight", &[2, 3], true, Init::Zeros)
        .expect("layout");
    l.add("a.bias", &[3], false, Init::Zeros).expect("layout");
    l
}

fn optimizer_state_target() -> Target {
    let dir = scratch("optimizer-state");
    let l = optim_layout();
    let mut opt = AdamW::new(&l, AdamWConfig::default());
    opt.m = (0..9).map(|i| i as f32).collect();
    opt.v = (0..9).map(|i| 0.5 * i as f32).collect();
    opt.step = 3;
    let sched = Schedule::InverseSqrt {
        scale: 1.0,
        d_model: 8,
        warmup: 2,
    };
    optim_state::save(&dir, &l, &opt, &sched).expect("save");
    let path = dir.join(optim_state::OPTIMIZER_FILE);
    let by_name = std::fs::read(&path).expect("read back");
    let meta: HashMap<String, String> = [("step".to_string(), "3".to_string())].into();
    let flat = serialize_f32(
        &[
            ("m".into(), vec![9], &opt.m[..]),
            ("v".into(), vec![9], &opt.v[..]),
        ],
        meta,
    )
    .expect("serialise");
    let mut back = AdamW::new(&l, AdamWConfig::default());
    (
        vec![by_name, flat],
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            optim_state::load(&dir, &l, &mut back, 3).is_ok()
        }),
    )
}

fn toml_target<T>(name: &str, validate: fn(&T) -> bool) -> Target
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + 'static,
{
    let dir = scratch(name);
    let path = dir.join("run.toml");
    let seeds = vec![
        toml::to_string(&T::default())
            .expect("serialise")
            .into_bytes(),
        [
            &b"# a comment\r\n"[..],
            toml::to_string(&T::default())
                .expect("serialise")
                .as_bytes(),
        ]
        .concat(),
    ];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            match gpt::train::config::read_toml::<T>(&path) {
                Ok(c) => {
                    let _ = validate(&c);
                    true
                }
                Err(_) => false,
            }
        }),
    )
}

fn tsv_target() -> Target {
    let dir = scratch("tsv");
    let path = dir.join("pairs.tsv");
    let seeds = vec![
        b"ein Haus\ta house\nzwei\ttwo\tand more\r\n\nno tab here\n \t \n\n\n".to_vec(),
        "der Hund\tthe dog\n日本\tJapan\n".as_bytes().to_vec(),
    ];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            let loose = read_tsv(&path, false);
            let strict = read_tsv(&path, true);
            // Property: without --strict, any UTF-8 file reads; with it, only files whose
            // every line is a pair, and then to the same pairs.
            if std::str::from_utf8(b).is_ok() {
                let loose = loose
                    .as_ref()
                    .expect("non-strict read of UTF-8 must succeed");
                if let Ok(s) = &strict {
                    assert_eq!(s.pairs, loose.pairs);
                    assert_eq!(loose.skipped, 0);
                }
            }
            loose.is_ok()
        }),
    )
}

fn jsonl_target() -> Target {
    let dir = scratch("jsonl");
    let path = dir.join("docs.jsonl");
    let seeds = vec![
        b"{\"text\": \"first doc\"}\n\n{\"text\": \"second \\u00e9\", \"id\": 2}\r\n".to_vec(),
        b"{\"text\": \"\"}\n{\"text\": \"x\"}".to_vec(),
    ];
    let inputs = vec![path.clone()];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            read_documents(&inputs).is_ok()
        }),
    )
}

fn metrics_jsonl_target() -> Target {
    let dir = scratch("metrics");
    let path = dir.join("metrics.jsonl");
    let seeds = vec![
        b"{\"step\":1,\"loss\":4.2,\"lr\":0.001,\"grad_norm\":1.5,\"tokens_per_sec\":1000.0}\n\
          {\"step\":2,\"loss\":4.1,\"lr\":0.001,\"grad_norm\":1.4,\"tokens_per_sec\":1001.0,\"val_loss\":4.0}\n"
            .to_vec(),
    ];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            // Never an error by design: unreadable lines are dropped.
            let _ = read_metrics(&path, 1);
            !read_metrics(&path, usize::MAX).is_empty()
        }),
    )
}

fn chat_records_target() -> Target {
    let dir = scratch("chat-records");
    let path = dir.join("chats.jsonl");
    let seeds = vec![
        br#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
{"prompt": "q", "completion": " a"}
{"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "assistant", "content": "y"}]}
"#
        .to_vec(),
        br#"{"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " yes", "rejected": " no"}
{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
"#
        .to_vec(),
    ];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            let sft = gpt::chat::records::read_sft(&path, false).is_ok();
            let pairs = gpt::chat::records::read_preferences(&path, false).is_ok();
            // With skip_bad every line is read or counted, never a panic.
            let _ = gpt::chat::records::read_sft(&path, true);
            let _ = gpt::chat::records::read_preferences(&path, true);
            sft || pairs
        }),
    )
}

fn chat_template_target() -> Target {
    use gpt::chat::{ChatTemplate, Message, Role};
    let dir = scratch("chat-template");
    let path = dir.join("tokenizer_config.json");
    let seeds = vec![
        serde_json::json!({
            "chat_template": gpt::chat::template::DEFAULT_TEMPLATE,
            "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|pad|>"
        })
        .to_string()
        .into_bytes(),
        br#"{"chat_template": "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'].strip() }}{% if not loop.last %}\n{% endif %}{% endfor %}", "eos_token": {"content": "</s>"}}"#
            .to_vec(),
    ];
    let convo = vec![
        Message::new(Role::System, "s"),
        Message::new(Role::User, "u"),
        Message::new(Role::Assistant, "a"),
    ];
    (
        seeds,
        Box::new(move |b| {
            // Owns the scratch directory: removed when the target is dropped.
            let _keep = &dir;
            put(&path, b);
            match ChatTemplate::load(&dir) {
                // A template that loads must render or fail with an error, never panic.
                Ok(Some(t)) => t.render(&convo, true, &path).is_ok(),
                _ => false,
            }
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Tests: a short run each in `cargo test`, a long `#[ignore]`d run each.

macro_rules! fuzz_tests {
    ($($short:ident, $long:ident, $target:expr, $cases:expr;)*) => {$(
        #[test]
        fn $short() {
            let (seeds, target) = $target;
            fuzz(stringify!($short), &seeds, short_cases($cases), target);
        }

        #[test]
        #[ignore = "long fuzz run: cargo test --test fuzz_parsers -- --ignored fuzz"]
        fn $long() {
            let (seeds, target) = $target;
            fuzz(stringify!($long), &seeds, long_cases(), target);
        }
    )*};
}

fuzz_tests! {
    fuzz_vocab_json, fuzz_vocab_json_long, vocab_json_target(), 300;
    fuzz_merges_txt, fuzz_merges_txt_long, merges_txt_target(), 300;
    fuzz_vocab_and_merges, fuzz_vocab_and_merges_long, vocab_merges_target(), 300;
    fuzz_tokenizer_json, fuzz_tokenizer_json_long, tokenizer_json_target(), 300;
    fuzz_char_tokenizer, fuzz_char_tokenizer_long, char_tokenizer_target(), 2000;
    fuzz_safetensors, fuzz_safetensors_long, safetensors_target(), 1000;
    fuzz_token_file, fuzz_token_file_long, token_file_target(), 1000;
    fuzz_gpt_config_json, fuzz_gpt_config_json_long, gpt_config_target(), 1000;
    fuzz_transformer_config_json, fuzz_transformer_config_json_long, transformer_config_target(), 1000;
    fuzz_trainer_state, fuzz_trainer_state_long, trainer_state_target(), 1000;
    fuzz_optimizer_state, fuzz_optimizer_state_long, optimizer_state_target(), 1000;
    fuzz_train_toml, fuzz_train_toml_long, toml_target::<TrainConfig>("train-toml", |c| c.validate().is_ok()), 1000;
    fuzz_translate_toml, fuzz_translate_toml_long, toml_target::<TranslateConfig>("translate-toml", |c| c.validate().is_ok()), 1000;
    fuzz_tsv_pairs, fuzz_tsv_pairs_long, tsv_target(), 1000;
    fuzz_jsonl_documents, fuzz_jsonl_documents_long, jsonl_target(), 1000;
    fuzz_metrics_jsonl, fuzz_metrics_jsonl_long, metrics_jsonl_target(), 1000;
    fuzz_chat_records, fuzz_chat_records_long, chat_records_target(), 1000;
    fuzz_chat_template, fuzz_chat_template_long, chat_template_target(), 500;
}

/// The other half of the property: the valid files the fuzzers start from read back to what
/// was saved.
#[test]
fn fuzz_seeds_round_trip() {
    // Tokenizers: every file form gives back the same files and ids.
    let t = small_bpe();
    let text = "hello world<|endoftext|> the mat 日本";
    for back in [
        Tokenizer::from_vocab_merges_bytes(
            t.to_vocab_json().as_bytes(),
            Path::new("v"),
            &t.to_merges_txt(),
            Path::new("m"),
        )
        .unwrap(),
        Tokenizer::from_tokenizer_json_bytes(t.to_tokenizer_json().as_bytes(), Path::new("t"))
            .unwrap(),
    ] {
        // (vocab.json has no special-token marker: `<pad>` comes back an ordinary token.)
        assert_eq!(back.to_vocab_json(), t.to_vocab_json());
        assert_eq!(back.to_merges_txt(), t.to_merges_txt());
        assert_eq!(back.encode_ordinary(text), t.encode_ordinary(text));
    }
    let back =
        Tokenizer::from_tokenizer_json_bytes(t.to_tokenizer_json().as_bytes(), Path::new("t"))
            .unwrap();
    assert_eq!(back.to_tokenizer_json(), t.to_tokenizer_json());
    assert_eq!(
        back.encode_with_specials(text),
        t.encode_with_specials(text)
    );
    let c = CharTokenizer::from_text("hello, world\n\t\"\\日本 ");
    assert_eq!(
        CharTokenizer::from_json_bytes(c.to_json().as_bytes(), Path::new("c")).unwrap(),
        c
    );

    // safetensors: the f32 seed's tensors, shapes and metadata.
    let dir = scratch("round-trip");
    let path = dir.join("model.safetensors");
    put(&path, &safetensors_seeds()[0]);
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(
        f.read_f32("a").unwrap(),
        (vec![2, 3], vec![1.0, -2.5, 3.25, 0.0, 7.0, 8.0])
    );
    assert_eq!(f.read_f32("s").unwrap(), (vec![], vec![0.5]));
    assert_eq!(f.read_f32("e").unwrap(), (vec![0, 4], vec![]));
    assert_eq!(f.metadata()["step"], "4");

    // Token files, both widths.
    let toks: Vec<u32> = (0..40).map(|i| (i * 7919 % 70_000) as u32).collect();
    for vocab in [65_536, 100_000] {
        let p = dir.join("t.bin");
        let narrow: Vec<u32> = toks.iter().map(|&x| x % vocab as u32).collect();
        put(&p, &encode_token_file(&narrow, vocab));
        let f = TokenFile::open(&p).unwrap();
        let mut out = vec![0; f.len()];
        f.read(0, &mut out);
        assert_eq!(out, narrow);
    }

    // config.json of each family; the transformer's config.json.
    for cfg in [
        GptConfig::tiny(65),
        GptConfig {
            norm: NormPlacement::Post,
            ..GptConfig::tiny(65)
        },
        GptConfig {
            positions: Positions::Sinusoidal,
            ..GptConfig::tiny(65)
        },
    ] {
        put(
            &dir.join("config.json"),
            &serde_json::to_vec(&hf_config(&cfg, None)).unwrap(),
        );
        assert_eq!(load_config(&dir).unwrap(), cfg);
    }
    let tc = transformer_config();
    put(
        &dir.join("config.json"),
        &serde_json::to_vec(&json!({"model_type": "gpt-rs-transformer", "transformer": tc}))
            .unwrap(),
    );
    assert_eq!(gpt::translate::checkpoint::load_config(&dir).unwrap(), tc);

    // trainer_state.json: the loop's fields and the task's.
    put(
        &dir.join(gpt::train::checkpoint::STATE_FILE),
        &trainer_state_seeds()[1],
    );
    let s = TrainerState::read(&dir).unwrap();
    assert_eq!((s.step, s.train_seconds), (40, 120.25));
    assert_eq!(s.field::<TransformerConfig>("model").unwrap(), tc);
    assert_eq!(
        s.field::<BatchCursor>("cursor").unwrap(),
        BatchCursor { epoch: 2, pos: 7 }
    );
    assert_eq!(s.field::<Rng>("dropout_rng").unwrap(), Rng::new(5));
    assert_eq!(
        s.field::<TranslateConfig>("config").unwrap(),
        TranslateConfig::default()
    );

    // TOML configs.
    let p = dir.join("run.toml");
    put(
        &p,
        toml::to_string(&TrainConfig::default()).unwrap().as_bytes(),
    );
    assert_eq!(
        TrainConfig::from_toml_file(&p).unwrap(),
        TrainConfig::default()
    );
    put(
        &p,
        toml::to_string(&TranslateConfig::default())
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(
        TranslateConfig::from_toml_file(&p).unwrap(),
        TranslateConfig::default()
    );
}
