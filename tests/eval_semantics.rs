//! Golden tests of `gpt eval`'s lm-eval semantics that need no outside fixture: the moved
//! trailing space, left truncation, the rolling windows for lengths 1, 1023, 1024, 1025 and
//! 2049 (context 1024), ties in acc / acc_norm / acc_bytes, lm-eval's stderr, the WikiText
//! detokenizer and word count, and the shared-context scorer against the plain forward.

use gpt::eval::metrics::{argmax, choice_scores, mean_stderr};
use gpt::eval::request::{encode_pair, move_trailing_space, truncate, TokenRequest};
use gpt::eval::scorer::{score, score_naive};
use gpt::eval::wikitext::{count_words, detokenize};
use gpt::eval::windows::{rolling_windows, Window};
use gpt::model::inference::InferenceModel;
use gpt::tokenizer::AnyTokenizer;

#[test]
fn trailing_whitespace_moves_to_the_continuation() {
    assert_eq!(
        move_trailing_space("Answer: ", "B"),
        ("Answer:".to_string(), " B".to_string())
    );
    assert_eq!(
        move_trailing_space("a \n\t", " x"),
        ("a".to_string(), " \n\t x".to_string())
    );
    assert_eq!(
        move_trailing_space("no space", " y"),
        ("no space".to_string(), " y".to_string())
    );
}

#[test]
fn continuation_ids_are_the_whole_minus_the_context() {
    let tok = AnyTokenizer::load("gpt2").unwrap();
    // "Answer: " + "yes": the space moves, so the continuation is " yes" (one token), not "yes".
    let r = encode_pair(&tok, "Question: Is it?\nAnswer: ", "yes", 50256).unwrap();
    assert_eq!(
        r.context,
        tok.encode("Question: Is it?\nAnswer:", true).unwrap()
    );
    assert_eq!(r.continuation, tok.encode(" yes", true).unwrap());
    let whole = tok.encode("Question: Is it?\nAnswer: yes", true).unwrap();
    assert_eq!([r.context.clone(), r.continuation.clone()].concat(), whole);
    // An empty context becomes the end-of-text token.
    let r = encode_pair(&tok, "", "Hello world", 50256).unwrap();
    assert_eq!(r.context, vec![50256]);
    assert_eq!(r.continuation, tok.encode("Hello world", true).unwrap());
}

#[test]
fn requests_are_cut_on_the_left_to_context_plus_one() {
    let mut r = TokenRequest {
        context: (0..10).collect(),
        continuation: vec![100, 101, 102],
    };
    assert!(!truncate(&mut r.clone(), 12, "x").unwrap());
    assert!(truncate(&mut r, 8, "x").unwrap());
    // Last 9 tokens of the 13: context 4.., continuation kept whole.
    assert_eq!(r.context, vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(r.continuation, vec![100, 101, 102]);
    // A continuation longer than the context cannot be scored.
    let mut long = TokenRequest {
        context: vec![1],
        continuation: (0..9).collect(),
    };
    assert!(truncate(&mut long, 8, "doc 3")
        .unwrap_err()
        .to_string()
        .contains("doc 3"));
}

fn w(context: std::ops::Range<u32>, continuation: std::ops::Range<u32>) -> Window {
    Window {
        context: context.collect(),
        continuation: continuation.collect(),
    }
}

const EOT: u32 = 50256;

fn first(n: u32) -> Window {
    Window {
        context: vec![EOT],
        continuation: (0..n).collect(),
    }
}

#[test]
fn rolling_windows_golden_for_context_1024() {
    let toks = |n: u32| (0..n).collect::<Vec<u32>>();
    assert_eq!(rolling_windows(&toks(1), EOT, 1024), vec![first(1)]);
    assert_eq!(rolling_windows(&toks(1023), EOT, 1024), vec![first(1023)]);
    assert_eq!(rolling_windows(&toks(1024), EOT, 1024), vec![first(1024)]);
    // The last, one-token window re-reads the 1024 tokens before it.
    assert_eq!(
        rolling_windows(&toks(1025), EOT, 1024),
        vec![first(1024), w(0..1024, 1024..1025)]
    );
    // A full window has one token of context.
    assert_eq!(
        rolling_windows(&toks(2049), EOT, 1024),
        vec![
            first(1024),
            w(1023..1024, 1024..2048),
            w(1024..2048, 2048..2049)
        ]
    );
    assert!(rolling_windows(&[], EOT, 1024).is_empty());
    // Every token predicted once, every input within the context + 1.
    for n in [1u32, 5, 1023, 1024, 1025, 2047, 2048, 2049, 5000] {
        let ws = rolling_windows(&toks(n), EOT, 1024);
        let all: Vec<u32> = ws.iter().flat_map(|w| w.continuation.clone()).collect();
        assert_eq!(all, toks(n), "n = {n}");
        assert!(ws
            .iter()
            .all(|w| w.context.len() + w.continuation.len() <= 1025));
    }
}

#[test]
fn ties_go_to_the_lowest_index() {
    assert_eq!(argmax(&[-1.0, -1.0, -2.0]), 0);
    assert_eq!(argmax(&[-3.0, -1.0, -1.0]), 1);
    let ch = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // acc: equal log-likelihoods → choice 0. acc_norm: -4/4 = -2/2 → choice 0 again;
    // gold 1 scores 0 on both.
    assert_eq!(
        choice_scores(&[-4.0, -4.0], &ch(&["abcd", "wxyz"]), 1),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(
        choice_scores(&[-4.0, -2.0], &ch(&["abcd", "ab"]), 0),
        (0.0, 1.0, 1.0)
    );
    // acc_norm counts characters, acc_bytes UTF-8 bytes: "éé" is 2 characters, 4 bytes.
    // acc: -2.9 > -3.5 → 1; chars: -3.5/2 < -2.9/3 → 1; bytes: -3.5/4 > -2.9/3 → 0.
    assert_eq!(
        choice_scores(&[-3.5, -2.9], &ch(&["éé", "abc"]), 0),
        (0.0, 0.0, 1.0)
    );
}

#[test]
fn stderr_is_lm_evals_sample_stderr() {
    // 0/1 scores: sqrt(p (1 - p) / (n - 1)).
    let xs = [1.0, 0.0, 0.0, 1.0, 1.0];
    let p: f64 = 0.6;
    let want = (p * (1.0 - p) / 4.0).sqrt();
    assert!((mean_stderr(&xs).unwrap() - want).abs() < 1e-15);
    assert_eq!(mean_stderr(&[1.0]), None);
}

#[test]
fn wikitext_detokenizer_and_word_count() {
    let page = " = Valkyria = \n Senjō no Valkyria 3 : <unk> Chronicles ( Japanese : 戦場 ) is a \
                tactical role @-@ playing game , released in 2011 @,@ 000 . It 's \" great \" \n";
    assert_eq!(
        detokenize(page),
        " = Valkyria =\nSenjō no Valkyria 3: <unk> Chronicles (Japanese: 戦場) is a tactical \
         role-playing game, released in 2011,000. It's \"great\"\n"
    );
    // re.split(r"\s+") counts the leading and trailing runs.
    assert_eq!(count_words(" a  b\nc "), 5);
    assert_eq!(count_words("a b"), 2);
}

fn tiny_gpt2() -> InferenceModel {
    InferenceModel::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hf_gpt2"
    )))
    .unwrap()
}

#[test]
fn shared_context_scoring_equals_the_plain_forward() {
    let model = tiny_gpt2();
    let tok = AnyTokenizer::load("gpt2").unwrap();
    let mut reqs = Vec::new();
    for (ctx, conts) in [
        (
            "Question: Which is a fruit?\nAnswer:",
            vec![" apple", " a red brick house", " rock"],
        ),
        ("The cat sat on the", vec![" mat", " roof of the old barn"]),
        ("", vec!["Hello there, general."]),
        ("One more", vec![" time"]),
    ] {
        for c in conts {
            reqs.push(encode_pair(&tok, ctx, c, 50256).unwrap());
        }
    }
    for batch in [1, 2, 8] {
        let got = score(&model, &reqs, batch, &mut |_| {}).unwrap();
        for (r, g) in reqs.iter().zip(&got) {
            let want = score_naive(&model, r).unwrap();
            assert!(
                (g.ll - want.ll).abs() < 1e-4,
                "batch {batch}: {} vs {}",
                g.ll,
                want.ll
            );
            assert_eq!(g.greedy, want.greedy);
        }
    }
}

#[test]
fn templates_fill_fields_and_keep_escaped_braces() {
    use gpt::eval::template::{Doc, Template};
    let fields = serde_json::json!({"q": "Why?", "n": 3, "c": ["a", "b"]});
    let doc = Doc {
        fields: fields.as_object().unwrap().clone(),
        file: "d.jsonl".into(),
        line: 7,
    };
    let t = Template::parse("{{Q}}: {q} ({n})", "t.toml:1: doc_to_text").unwrap();
    assert_eq!(t.render(&doc).unwrap(), "{Q}: Why? (3)");
    // A list field is only usable as the choice list; each element fills the template.
    let c = Template::parse(" {c}", "t.toml:2: doc_to_choice").unwrap();
    assert_eq!(c.single_field(), Some("c"));
    assert_eq!(c.render_over(&doc, "c", "a").unwrap(), " a");
    assert!(c
        .render(&doc)
        .unwrap_err()
        .to_string()
        .contains("d.jsonl line 7"));
    assert!(Template::parse("{open", "x").is_err());
    assert!(Template::parse("a } b", "x").is_err());
}

#[test]
fn wikitext_pages_split_as_the_document_level_data_set() {
    use gpt::eval::wikitext::documents;
    let text = " \n = A = \n \n a text . \n \n = = Sub = = \n \n more \n \n = B = \n \n b \n";
    let docs = documents(std::path::Path::new("w.tokens"), text);
    let pages: Vec<&str> = docs
        .iter()
        .map(|d| d.fields["page"].as_str().unwrap())
        .collect();
    assert_eq!(
        pages,
        [
            " = A = \n \n a text . \n \n = = Sub = = \n \n more \n ",
            " = B = \n \n b \n"
        ]
    );
    assert_eq!((docs[0].line, docs[1].line), (2, 10));
    // The test file of WikiText-2 has 62 pages, as EleutherAI/wikitext_document_level.
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/eval/wikitext2/wiki.test.tokens");
    if let Ok(t) = std::fs::read_to_string(&p) {
        assert_eq!(documents(&p, &t).len(), 62);
    }
}
