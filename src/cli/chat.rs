//! `gpt chat`: talk to a chat model (interactive, streaming, multi-turn), or answer a file of
//! conversations at once (`--batch`), scoring exact-match accuracy where they carry the
//! expected answer.

use super::CliResult;
use gpt::chat::records::{messages, sft_record, SftRecord};
use gpt::chat::session::ChatModel;
use gpt::chat::suite::exact_match;
use gpt::chat::{Message, Role};
use gpt::generate::{FinishReason, GenerateConfig, SamplingConfig};
use gpt::model::weight_dtype::WeightDtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Options of `gpt chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// Chat model directory (`gpt sft` / `gpt dpo` output, or any model with a chat template).
    #[arg(long)]
    pub model: PathBuf,
    /// A system message opening the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per answer. Default 256 (and at most the context).
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0: greedy). Default 0.7; 0 with --batch.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights in f32 (default) or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Answer every conversation of this JSONL file ({"messages": [...]}, whose final
    /// assistant turn, if any, is the expected answer, or {"prompt": text or messages}, HH-RLHF
    /// dialogue text included) and
    /// write {"messages", "completion", "reference"} lines to --out (standard output by
    /// default); prints exact-match accuracy (per "kind" too) where answers are expected.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Where --batch writes its answers.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Conversations per batched generation with --batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// With --batch: print the accuracy summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print, for every conversation of this JSONL file ({"messages": [...]}), the text the
    /// chat template renders (with the generation prompt when the last turn is not the
    /// assistant's) and its token ids, as {"text", "ids"} lines: what
    /// `tools/check_chat_template.py` compares with transformers' `apply_chat_template`.
    #[arg(long)]
    pub render: Option<PathBuf>,
}

fn sampling(args: &ChatArgs, default_temperature: f32) -> Result<GenerateConfig, gpt::Error> {
    let temperature = args.temperature.unwrap_or(default_temperature);
    let sampling = if temperature == 0.0 {
        SamplingConfig::greedy()
    } else {
        SamplingConfig {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: 1.0,
        }
    };
    sampling.validate()?;
    Ok(GenerateConfig {
        max_new_tokens: args.max_new_tokens.max(1),
        sampling,
        seed: args.seed,
        eos: None,
    })
}

/// Runs `gpt chat`.
pub fn run(args: ChatArgs) -> CliResult {
    let precision = WeightDtype::parse_for("--dtype", &args.dtype)?;
    let chat = ChatModel::load(&args.model, precision)?;
    if let Some(path) = &args.render {
        return render(&chat, path);
    }
    match &args.batch {
        Some(path) => run_batch(&chat, &args, path),
        None => interactive(&chat, &args),
    }
}

/// Ctrl-C sets a flag (stopping the answer being written) instead of ending the program.
fn ctrl_c_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    {
        let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone());
    }
    #[cfg(not(unix))]
    {
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    }
    flag
}

fn interactive(chat: &ChatModel, args: &ChatArgs) -> CliResult {
    let cfg = sampling(args, 0.7)?;
    let stop = ctrl_c_flag();
    let system = args.system.clone();
    let fresh = |system: &Option<String>| -> Vec<Message> {
        system
            .iter()
            .map(|s| Message::new(Role::System, s.clone()))
            .collect()
    };
    let mut history = fresh(&system);
    let mut system = system;
    eprintln!(
        "chatting with {} (context {} tokens). /reset starts over, /system TEXT sets the system message, /quit or Ctrl-D ends; Ctrl-C stops an answer.",
        args.model.display(),
        chat.model.config.n_ctx
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        eprint!("you> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        stop.store(false, Ordering::SeqCst);
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => return Ok(()),
            "/reset" => {
                history = fresh(&system);
                eprintln!("(conversation cleared)");
                continue;
            }
            s if s.starts_with("/system") => {
                let text = s["/system".len()..].trim();
                system = (!text.is_empty()).then(|| text.to_string());
                history.retain(|m| m.role != Role::System);
                if let Some(s) = &system {
                    history.insert(0, Message::new(Role::System, s.clone()));
                }
                eprintln!(
                    "(system message {})",
                    if system.is_some() { "set" } else { "cleared" }
                );
                continue;
            }
            _ => {}
        }
        history.push(Message::new(Role::User, line));
        eprint!("bot> ");
        let reply = chat.reply(&mut history, &cfg, |piece| {
            print!("{piece}");
            let _ = out.flush();
            stop.swap(false, Ordering::SeqCst)
        });
        println!();
        match reply {
            Ok(r) => {
                if r.dropped_turns > 0 {
                    eprintln!(
                        "(the {} oldest turns were dropped to fit the context of {} tokens)",
                        r.dropped_turns, chat.model.config.n_ctx
                    );
                }
                match r.finish {
                    FinishReason::Stop => eprintln!("(stopped)"),
                    FinishReason::Length => {
                        eprintln!("(cut at {} tokens: --max-new-tokens)", r.tokens)
                    }
                    FinishReason::Eos => {}
                }
                history.push(Message::new(Role::Assistant, r.text));
            }
            Err(e) => {
                eprintln!("error: {e}");
                history.pop();
            }
        }
    }
}

/// One conversation of a --batch file: the turns to answer, the expected answer, its kind.
type BatchRecord = (Vec<Message>, Option<String>, Option<String>);

/// Reads one line of a --batch file.
fn batch_record(v: &Value) -> Result<BatchRecord, String> {
    let kind = v.get("kind").and_then(Value::as_str).map(str::to_string);
    if let Some(p) = v.get("prompt") {
        let turns = match p {
            // HH-RLHF dialogue text becomes its turns; other text is one user turn.
            Value::String(s) => gpt::chat::records::parse_dialogue(s)
                .unwrap_or_else(|| vec![Message::new(Role::User, s.clone())]),
            list => messages(list, "prompt")?,
        };
        let reference = v
            .get("completion")
            .and_then(Value::as_str)
            .map(str::to_string);
        return Ok((turns, reference, kind));
    }
    match sft_record(v)? {
        Some(SftRecord::Chat(mut turns)) => {
            let reference = if turns.last().is_some_and(|m| m.role == Role::Assistant) {
                turns.pop().map(|m| m.content)
            } else {
                None
            };
            Ok((turns, reference, kind))
        }
        _ => {
            let turns = messages(v.get("messages").unwrap_or(&Value::Null), "messages")?;
            Ok((turns, None, kind))
        }
    }
}

fn run_batch(chat: &ChatModel, args: &ChatArgs, path: &PathBuf) -> CliResult {
    let cfg = sampling(args, 0.0)?;
    let text = std::fs::read_to_string(path).map_err(|e| gpt::Error::io(path, e))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| gpt::Error::file(path, format!("line {}: not valid JSON: {e}", i + 1)))?;
        let r =
            batch_record(&v).map_err(|e| gpt::Error::file(path, format!("line {}: {e}", i + 1)))?;
        records.push(r);
    }
    let mut lines = String::new();
    // kind -> (right, total)
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for chunk in records.chunks(args.batch_size.max(1)) {
        let convs: Vec<Vec<Message>> = chunk.iter().map(|r| r.0.clone()).collect();
        let answers = chat.reply_batch(&convs, &cfg)?;
        for ((turns, reference, kind), answer) in chunk.iter().zip(answers) {
            if let Some(want) = reference {
                let right = exact_match(&answer, want) as usize;
                for k in ["all".to_string(), kind.clone().unwrap_or_default()] {
                    if k.is_empty() {
                        continue;
                    }
                    let e = tally.entry(k).or_default();
                    e.0 += right;
                    e.1 += 1;
                }
            }
            lines.push_str(&serde_json::to_string(&json!({
                "messages": turns, "completion": answer, "reference": reference, "kind": kind,
            }))?);
            lines.push('\n');
        }
    }
    match &args.out {
        Some(p) => gpt::io::write_atomic(p, lines.as_bytes())?,
        None => print!("{lines}"),
    }
    if !tally.is_empty() {
        super::chat_train::report_tally(&tally, args.json);
    }
    Ok(())
}

/// `--render`: each conversation's rendered text and ids.
fn render(chat: &ChatModel, path: &PathBuf) -> CliResult {
    let text = std::fs::read_to_string(path).map_err(|e| gpt::Error::io(path, e))?;
    let enc = gpt::chat::encode::ChatEncoder::new(&chat.tok, &chat.template, &chat.origin)?;
    let mut out = std::io::stdout().lock();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |e: String| gpt::Error::file(path, format!("line {}: {e}", i + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let turns = messages(v.get("messages").unwrap_or(&Value::Null), "messages").map_err(bad)?;
        let generation_prompt = turns.last().is_none_or(|m| m.role != Role::Assistant);
        let text = chat
            .template
            .render(&turns, generation_prompt, &chat.origin)?;
        let ids = enc.encode_spans(&text, &[])?.ids;
        writeln!(
            out,
            "{}",
            json!({"text": text, "ids": ids, "add_generation_prompt": generation_prompt})
        )?;
    }
    Ok(())
}
