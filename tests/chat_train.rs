//! Chat training end to end on a tiny char-level base: the assistant-only mask, packing equal
//! to padding, SFT that learns and resumes exactly, a reward model and DPO that learn on
//! separable pairs with their metrics written, chat models that load and answer, context
//! overflow, and bad input named by file and line.

mod common;

use common::finetune_base::{quiet, tmp, write};
use gpt::chat::config::{ChatTrainConfig, Method};
use gpt::chat::encode::ChatEncoder;
use gpt::chat::model::{load_chat_base, load_reward_model};
use gpt::chat::pairs::encode_pairs_file;
use gpt::chat::records::SftRecord;
use gpt::chat::reward::evaluate_reward_model;
use gpt::chat::session::ChatModel;
use gpt::chat::sft::{sft_forward_backward, SftBatch};
use gpt::chat::{dpo, reward, sft, ChatTemplate, Message, Role};
use gpt::generate::{GenerateConfig, SamplingConfig};
use gpt::io::save_tokenizer;
use gpt::model::weight_dtype::WeightDtype;
use gpt::model::{checkpoint, Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::mlp::Activation;
use gpt::rng::Rng;
use gpt::tokenizer::{AnyTokenizer, CharTokenizer};
use gpt::train::TrainOptions;
use std::path::{Path, PathBuf};

/// A tiny char-level base (newline, digits and punctuation included) with context `n_ctx`.
fn base(dir: &Path, n_ctx: usize) -> PathBuf {
    let tok = CharTokenizer::from_text(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ?.,!'\n=+-:",
    );
    let cfg = GptConfig {
        vocab_size: tok.vocab_size(),
        n_ctx,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        dropout: 0.0,
        bias: true,
        norm: NormPlacement::Pre,
        positions: Positions::Learned,
        activation: Activation::Gelu,
        ln_eps: 1e-5,
    };
    let model = Gpt::new(cfg, &mut Rng::new(1)).unwrap();
    checkpoint::save(&model, dir, None).unwrap();
    save_tokenizer(&AnyTokenizer::Char(tok), dir).unwrap();
    dir.to_path_buf()
}

fn convo(user: &str, answer: &str) -> String {
    serde_json::json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer}
    ]})
    .to_string()
}

fn config(method: Method, model: &Path, data: &Path, out: &Path) -> ChatTrainConfig {
    ChatTrainConfig {
        model: model.to_path_buf(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        batch_size: 4,
        ..ChatTrainConfig::new(method)
    }
}

#[test]
fn only_assistant_answers_and_their_end_of_turn_are_trained() {
    let dir = tmp("chat", "mask");
    let b = base(&dir.join("base"), 64);
    let cb = load_chat_base(&b, 1, |_, _| Ok(())).unwrap();
    let enc = ChatEncoder::new(&cb.tokenizer, &cb.template, &cb.template_origin).unwrap();
    let rec = SftRecord::Chat(vec![
        Message::new(Role::System, "sys"),
        Message::new(Role::User, "hi"),
        Message::new(Role::Assistant, "yo"),
        Message::new(Role::User, "more"),
        Message::new(Role::Assistant, "ok!"),
    ]);
    let e = enc.sft(&rec).unwrap();
    let trained: Vec<u32> = e
        .ids
        .iter()
        .zip(&e.trained)
        .filter(|(_, &t)| t)
        .map(|(&i, _)| i)
        .collect();
    let eos = cb.tokenizer.special_id("<|endoftext|>").unwrap();
    let want: Vec<u32> = [
        cb.tokenizer.encode("yo", false).unwrap(),
        vec![eos],
        cb.tokenizer.encode("ok!", false).unwrap(),
        vec![eos],
    ]
    .concat();
    assert_eq!(trained, want);
    // Role tokens are single ids, never trained.
    let user = cb.tokenizer.special_id("<|user|>").unwrap();
    assert_eq!(e.ids.iter().filter(|&&i| i == user).count(), 2);
    // Plain prompt/completion: the completion and one appended EOS.
    let t = enc
        .sft(&SftRecord::Text {
            prompt: "q ".into(),
            completion: "ab".into(),
        })
        .unwrap();
    assert_eq!(t.trained, vec![false, false, true, true, true]);
    assert_eq!(*t.ids.last().unwrap(), eos);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn packed_batches_give_the_padded_loss_and_gradients() {
    let dir = tmp("chat", "pack");
    let b = base(&dir.join("base"), 64);
    let cb = load_chat_base(&b, 1, |_, _| Ok(())).unwrap();
    let enc = ChatEncoder::new(&cb.tokenizer, &cb.template, &cb.template_origin).unwrap();
    let recs: Vec<_> = [
        ("hi", "yes"),
        ("what is 2+2", "4"),
        ("name a colour", "red or blue"),
    ]
    .iter()
    .map(|(u, a)| {
        enc.sft(&SftRecord::Chat(vec![
            Message::new(Role::User, *u),
            Message::new(Role::Assistant, *a),
        ]))
        .unwrap()
    })
    .collect();
    let refs: Vec<_> = recs.iter().collect();
    let padded = SftBatch::padded(&refs, cb.pad);
    let packed = SftBatch::packed(&refs, cb.pad, 64);
    assert!(packed.b < padded.b, "three short examples share a row");
    let run = |batch: &SftBatch| {
        let mut g = load_chat_base(&b, 1, |_, _| Ok(())).unwrap().gpt;
        g.params.zero_grad();
        let loss = sft_forward_backward(&mut g, batch, 1.0, &mut Rng::new(0)).unwrap();
        (loss, g.params.grad.clone())
    };
    let ((l1, g1), (l2, g2)) = (run(&padded), run(&packed));
    assert!((l1 - l2).abs() < 1e-6, "{l1} vs {l2}");
    let scale = g1.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = g1
        .iter()
        .zip(&g2)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst < 1e-5 * scale,
        "gradients differ by {worst} (scale {scale})"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sft_learns_a_demonstration_answers_it_in_chat_and_resumes_exactly() {
    let dir = tmp("chat", "sft");
    let b = base(&dir.join("base"), 64);
    let lines: Vec<String> = (0..8)
        .map(|i| convo(&format!("is {i} a number"), "yes it is"))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let data = write(&dir, "sft.jsonl", &refs);
    let mut cfg = config(Method::Sft, &b, &data, &dir.join("run"));
    cfg.max_steps = Some(100);
    cfg.lr = 3e-3;
    cfg.packing = true;
    let full = sft::sft(&cfg, &quiet()).unwrap();
    let l = &full.train.losses;
    assert!(
        l[l.len() - 1] < 0.1 * l[0],
        "SFT loss {} -> {}",
        l[0],
        l[l.len() - 1]
    );
    let chat = ChatModel::load(&dir.join("run"), WeightDtype::F32).unwrap();
    let greedy = GenerateConfig {
        max_new_tokens: 16,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let conv = vec![
        Message::new(Role::System, "be brief"),
        Message::new(Role::User, "is 3 a number"),
    ];
    let answers = chat.reply_batch(&[conv], &greedy).unwrap();
    assert_eq!(
        answers[0], "yes it is",
        "the model stops at its end-of-turn token"
    );
    // Interrupted at step 40, resumed: the losses of the uninterrupted run.
    let mut cfg2 = cfg.clone();
    cfg2.out = dir.join("interrupted");
    let stop = TrainOptions {
        stop_at: Some(40),
        ..quiet()
    };
    sft::sft(&cfg2, &stop).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..quiet()
    };
    let second = sft::sft(&cfg2, &resume).unwrap();
    assert_eq!(second.train.losses, full.train.losses[40..], "exact resume");
    std::fs::remove_dir_all(&dir).ok();
}

fn pairs_file(dir: &Path) -> PathBuf {
    let lines: Vec<String> = (0..12)
        .map(|i| {
            serde_json::json!({
                "prompt": format!("\n\nHuman: is {i} a number?\n\nAssistant:"),
                "chosen": " yes it is",
                "rejected": " no",
            })
            .to_string()
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    write(dir, "pairs.jsonl", &refs)
}

#[test]
fn reward_model_learns_separable_pairs_and_reloads() {
    let dir = tmp("chat", "rm");
    let b = base(&dir.join("base"), 64);
    let data = pairs_file(&dir);
    let mut cfg = config(Method::Reward, &b, &data, &dir.join("rm"));
    cfg.valid = Some(data.clone());
    cfg.max_steps = Some(30);
    cfg.lr = 3e-3;
    let o = reward::train_reward(&cfg, &quiet()).unwrap();
    assert_eq!(o.train_report.accuracy, 1.0, "{:?}", o.train_report);
    // On these pairs the chosen answer is the longer one: the length heuristic gets none.
    assert_eq!(o.train_report.shorter_wins, 0.0);
    let metrics = std::fs::read_to_string(dir.join("rm/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"accuracy\"") && metrics.contains("\"eval/accuracy\""));
    let mut rm = load_reward_model(&dir.join("rm")).unwrap();
    let origin = dir.join("rm/checkpoint/tokenizer_config.json");
    let pairs = {
        let enc = ChatEncoder::new(&rm.tokenizer, &rm.template, &origin).unwrap();
        encode_pairs_file(&data, &enc, 64, false).unwrap().pairs
    };
    let r = evaluate_reward_model(&mut rm, &pairs).unwrap();
    assert_eq!(r.accuracy, 1.0);
    assert!(
        (r.loss - o.train_report.loss).abs() < 1e-5,
        "reloaded model scores the same"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dpo_starts_at_ln2_learns_the_preference_and_writes_its_metrics() {
    let dir = tmp("chat", "dpo");
    let b = base(&dir.join("base"), 64);
    let data = pairs_file(&dir);
    let mut cfg = config(Method::Dpo, &b, &data, &dir.join("dpo"));
    cfg.valid = Some(data.clone());
    cfg.max_steps = Some(12);
    cfg.lr = 3e-3;
    cfg.eval_every = Some(4);
    let o = dpo::dpo(&cfg, &quiet()).unwrap();
    let (before, kl0) = o.valid_before.unwrap();
    assert!(
        (before.loss - std::f64::consts::LN_2).abs() < 1e-6,
        "{}",
        before.loss
    );
    assert_eq!((before.accuracies, before.margins, kl0), (0.0, 0.0, 0.0));
    let (after, kl) = o.valid_after.unwrap();
    assert_eq!(after.accuracies, 1.0, "{after:?}");
    assert!(after.margins > 0.0 && after.loss < before.loss && kl > 0.0);
    let metrics = std::fs::read_to_string(dir.join("dpo/metrics.jsonl")).unwrap();
    for key in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "eval/kl",
    ] {
        assert!(metrics.contains(key), "{key} in metrics.jsonl");
    }
    assert!(dir.join("dpo/metrics.png").exists());
    // Interrupted at step 5 and resumed: the uninterrupted run's losses (the reference
    // log-probabilities are recomputed from the starting model).
    let mut cfg2 = cfg.clone();
    cfg2.out = dir.join("interrupted");
    let stop = TrainOptions {
        stop_at: Some(5),
        ..quiet()
    };
    dpo::dpo(&cfg2, &stop).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..quiet()
    };
    let second = dpo::dpo(&cfg2, &resume).unwrap();
    assert_eq!(second.train.losses, o.train.losses[5..], "exact resume");
    // The policy is saved as a chat model with the base's template.
    let chat = ChatModel::load(&dir.join("dpo"), WeightDtype::F32).unwrap();
    assert_eq!(
        chat.template.source(),
        ChatTemplate::default_template().source()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_overlong_conversation_drops_its_oldest_turns_and_keeps_the_system_message() {
    let dir = tmp("chat", "fit");
    let b = base(&dir.join("base"), 64);
    let data = write(&dir, "one.jsonl", &[&convo("hi", "yo")]);
    let mut cfg = config(Method::Sft, &b, &data, &dir.join("run"));
    cfg.max_steps = Some(1);
    sft::sft(&cfg, &quiet()).unwrap();
    let chat = ChatModel::load(&dir.join("run"), WeightDtype::F32).unwrap();
    let mut history = vec![Message::new(Role::System, "sys")];
    for i in 0..6 {
        history.push(Message::new(Role::User, format!("question {i}")));
        history.push(Message::new(Role::Assistant, format!("answer {i}")));
    }
    history.push(Message::new(Role::User, "last"));
    let (ids, dropped) = chat.fit(&mut history, 16).unwrap();
    assert!(dropped > 0 && ids.len() <= 64 - 16);
    assert_eq!(history[0].role, Role::System);
    assert_eq!(history.last().unwrap().content, "last");
    let mut huge = vec![Message::new(Role::User, "x".repeat(200))];
    let e = chat.fit(&mut huge, 16).unwrap_err().to_string();
    assert!(e.contains("context is 64 tokens"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_records_are_named_by_file_and_line_or_counted() {
    let dir = tmp("chat", "bad");
    let b = base(&dir.join("base"), 32);
    let unknown = write(
        &dir,
        "role.jsonl",
        &[
            &convo("hi", "yo"),
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
        ],
    );
    let cfg = config(Method::Sft, &b, &unknown, &dir.join("a"));
    let e = sft::sft(&cfg, &quiet()).unwrap_err().to_string();
    assert!(
        e.contains("role.jsonl") && e.contains("line 2") && e.contains("\"robot\""),
        "{e}"
    );

    let mixed = write(
        &dir,
        "mixed.jsonl",
        &[
            &convo("hi", "yo"),
            r#"{"messages": [{"role": "user", "content": "no answer"}]}"#,
            &convo(
                "a long question that goes past the context for sure",
                "and a long answer too",
            ),
        ],
    );
    let mut cfg = config(Method::Sft, &b, &mixed, &dir.join("b"));
    cfg.max_steps = Some(1);
    let o = sft::sft(&cfg, &quiet()).unwrap();
    assert_eq!(o.data.read.no_assistant, 1);
    assert_eq!(
        o.data.cuts.answer, 1,
        "the long conversation is cut (keeping its start)"
    );

    let same = write(
        &dir,
        "same.jsonl",
        &[
            r#"{"prompt": "q", "chosen": " a", "rejected": " b"}"#,
            r#"{"prompt": "q", "chosen": " a", "rejected": " a"}"#,
        ],
    );
    let mut cfg = config(Method::Dpo, &b, &same, &dir.join("c"));
    cfg.max_steps = Some(1);
    assert_eq!(dpo::dpo(&cfg, &quiet()).unwrap().data.read.identical, 1);

    // A model whose template raises: the error names its tokenizer_config.json.
    let raising = dir.join("raising");
    base(&raising, 32);
    std::fs::write(
        raising.join("tokenizer_config.json"),
        r#"{"chat_template": "{{ raise_exception('only user turns') }}", "eos_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    let data = write(&dir, "ok.jsonl", &[&convo("hi", "yo")]);
    let cfg = config(Method::Sft, &raising, &data, &dir.join("d"));
    let e = sft::sft(&cfg, &quiet()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("only user turns"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_with_its_own_chat_template_keeps_it() {
    let dir = tmp("chat", "own");
    let b = base(&dir.join("base"), 64);
    // A template of its own: ChatML-like text markers, no role tokens, EOS after each turn.
    let tpl = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
    std::fs::write(
        b.join("tokenizer_config.json"),
        serde_json::json!({"chat_template": tpl, "eos_token": "<|endoftext|>"}).to_string(),
    )
    .unwrap();
    let data = write(&dir, "one.jsonl", &[&convo("hi", "yo")]);
    let mut cfg = config(Method::Sft, &b, &data, &dir.join("run"));
    cfg.max_steps = Some(1);
    sft::sft(&cfg, &quiet()).unwrap();
    let chat = ChatModel::load(&dir.join("run"), WeightDtype::F32).unwrap();
    assert_eq!(chat.template.source(), tpl);
    assert!(
        chat.tok.special_id("<|user|>").is_none(),
        "no role tokens were added"
    );
    let text = chat
        .template
        .render(&[Message::new(Role::User, "hi")], true, Path::new("x"))
        .unwrap();
    assert_eq!(text, "user: hi<|endoftext|>assistant: ");
    std::fs::remove_dir_all(&dir).ok();
}
