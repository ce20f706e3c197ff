//! The numbers `README.md` and `bench/README.md` state about what the tests check, the presets
//! and the defaults, compared with the constants the tests use (`common::claims`), the
//! library's presets and defaults, and the binary's flag defaults, so that the documents cannot
//! drift silently. A failure here means: change the document, or the test, so they agree.
//!
//! The documents are compared with whitespace collapsed (a phrase may wrap across lines).

mod common;

use common::claims::*;
use gpt::model::GptConfig;
use gpt::train::config::TrainConfig;
use gpt::translate::trainer::TranslateConfig;
use std::path::Path;

/// A document of the repository with runs of whitespace collapsed to one space.
fn doc(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Asserts that every phrase occurs in document `rel`.
fn assert_mentions(rel: &str, phrases: &[String]) {
    let text = doc(rel);
    let missing: Vec<&String> = phrases
        .iter()
        .filter(|p| !text.contains(p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{rel} does not state {missing:?}; the tests check these numbers, so update the document \
         (or the constant in tests/common/mod.rs, if the contract changed)"
    );
}

/// `n` with thousands separators, as the documents write counts (`5,000`).
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn readme_states_the_tolerances_of_the_model_tests() {
    assert_mentions(
        "README.md",
        &[
            format!(
                "every parameter gradient ({MODEL_RTOL:e} relative + {MODEL_ATOL:e} absolute per element)"
            ),
            format!("{TRAJECTORY_STEPS}-step AdamW trajectory ({TRAJECTORY_RTOL:e} relative per step)"),
        ],
    );
}

#[test]
fn bench_readme_states_the_counts_and_limits_of_the_tests() {
    assert_mentions(
        "bench/README.md",
        &[
            format!("copy task — after {COPY_TASK_STEPS} steps"),
            format!("reproduce {COPY_TASK_HELD_OUT} held-out random sequences exactly"),
            format!("re-scored log-probability (to {COPY_TASK_RESCORE_RTOL:e} relative)"),
            format!("full recomputation (scores to {COPY_TASK_CACHE_RTOL:e} relative)"),
            format!("per-token log-probabilities of {BF16_SCORED_TOKENS} tokens"),
            format!("(limit {BF16_LOGPROB_LIMIT};"),
            format!("decode logits by at most 0.0125 (limit {BF16_LOGIT_LIMIT})"),
            format!("(test limit {BF16_RECOMPUTE_LIMIT:e};"),
            format!("within {TRANSFORMER_GRAD_REL:e} of each tensor's largest gradient"),
            format!("to ~{BLEU_TOL:e}"),
        ],
    );
}

#[test]
fn readme_presets_and_defaults_match_the_library() {
    let tiny = GptConfig::tiny(65);
    let t = TrainConfig::default();
    let tr = TranslateConfig::default();
    assert_eq!(
        t.preset, "tiny",
        "README: `gpt train` trains the `tiny` preset"
    );
    assert!(t.min_lr.is_none(), "README: cosine to lr/10 by default");
    assert_mentions(
        "README.md",
        &[
            format!(
                "`tiny` preset ({} layers, {} heads, {} wide, context {},",
                tiny.n_layer, tiny.n_head, tiny.n_embd, tiny.n_ctx
            ),
            format!(
                "for {} steps of {} × {} tokens",
                thousands(t.max_steps),
                t.batch_size,
                t.block_size
            ),
            format!(
                "AdamW ({}, {}), weight decay {} on matrices only, warmup then cosine to lr/10, clip {:.1}",
                t.beta1, t.beta2, t.weight_decay, t.grad_clip
            ),
            format!(
                "label smoothing {}, Adam ({}, {}, {:e})",
                tr.label_smoothing, tr.beta1, tr.beta2, tr.eps
            ),
        ],
    );
    // Every preset the README lists exists.
    let text = doc("README.md");
    let start = text.find("Presets: ").expect("README lists the presets") + 9;
    let list = &text[start..start + text[start..].find('.').unwrap()];
    let names: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    assert!(names.len() >= 5, "presets parsed from README: {names:?}");
    for name in names {
        assert!(
            GptConfig::preset(name, 65).is_ok(),
            "README lists preset `{name}`"
        );
    }
}

/// The `[default: X]` of `flag` in `gpt ARGS --help`.
fn flag_default(args: &[&str], flag: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = help
        .find(&format!("{flag} <"))
        .unwrap_or_else(|| panic!("gpt {args:?} --help has no {flag}"));
    let rest = &help[at..];
    let d = rest.find("[default: ").unwrap() + 10;
    rest[d..d + rest[d..].find(']').unwrap()].to_string()
}

#[test]
fn readme_flag_defaults_match_the_binary() {
    let sample = |f| flag_default(&["sample"], f);
    let translate = |f| flag_default(&["translate"], f);
    assert_mentions(
        "README.md",
        &[
            format!(
                "prompt a newline, {} tokens, temperature {}, top-k {}",
                sample("--max-new-tokens"),
                sample("--temperature"),
                sample("--top-k")
            ),
            format!(
                "(beam {}, length penalty {}, max length source + {} by default;",
                translate("--beam"),
                translate("--alpha"),
                translate("--max-extra")
            ),
        ],
    );
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(5000), "5,000");
    assert_eq!(thousands(800), "800");
    assert_eq!(thousands(1234567), "1,234,567");
}
