//! `gpt honeypot`: the deceptive shell (see [`gpt::honeypot`]) on the terminal or over TCP, and
//! `gpt honeypot replay` for its logs. This file turns flags into the profile, the model
//! endpoint (or an in-process `gpt serve` for `--model`), the log and the limits.

use super::interrupt::StopSignal;
use super::CliResult;
use gpt::honeypot::profile::Profile;
use gpt::honeypot::responder::Endpoint;
use gpt::honeypot::server::{interactive, read_log, replay, serve_tcp, Shared, TcpConfig};
use gpt::honeypot::session::{Limits, LogSink};
use gpt::model::weight_dtype::WeightDtype;
use gpt::serve::engine::EngineConfig;
use gpt::serve::http::HttpConfig;
use gpt::serve::{ServeOptions, Server};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `gpt honeypot` and its subcommand.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HoneypotArgs {
    #[command(subcommand)]
    command: Option<HoneypotCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// Subcommands of `gpt honeypot`.
#[derive(clap::Subcommand, Debug)]
enum HoneypotCommand {
    /// Print logged sessions as the attacker saw them, with who answered each command.
    Replay {
        /// The JSONL session log.
        #[arg(long)]
        log: PathBuf,
        /// Only this session.
        #[arg(long)]
        session: Option<String>,
    },
    /// Write SFT records of terminal sessions (the emulator's answers and a library of outputs
    /// of the commands the model answers) in the honeypot's message layout, for `gpt sft`.
    Transcripts {
        /// Output JSONL.
        #[arg(long)]
        out: PathBuf,
        /// Records.
        #[arg(long, default_value_t = 2_000)]
        n: usize,
        /// Earlier turns per record at most (as `--history-turns` at run time).
        #[arg(long, default_value_t = 2)]
        history_turns: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The attacker script (46 commands the model answers, half not in the transcripts) in one
    /// session: the share of model answers that pass the guard rails and their latency.
    Bench {
        /// Our model directory (served in-process).
        #[arg(long, conflicts_with = "endpoint")]
        model: Option<PathBuf>,
        /// An OpenAI-compatible endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// New tokens per answer at most.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Earlier turns sent with each command.
        #[arg(long, default_value_t = 2)]
        history_turns: usize,
        /// Print every command with its answer and verdict.
        #[arg(long)]
        verbose: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load: concurrent TCP sessions on loopback against a honeypot started for the run (or
    /// `--connect ADDR`), checking that sessions stay isolated; reports commands/s, latency,
    /// errors and the server's memory.
    Load {
        /// Concurrent sessions.
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 60.0)]
        secs: f64,
        /// An honeypot already listening (default: start `gpt honeypot --listen 127.0.0.1:0
        /// --canned`, or with `--model DIR` / `--endpoint URL` when given).
        #[arg(long)]
        connect: Option<SocketAddr>,
        /// Model directory for the started honeypot.
        #[arg(long, conflicts_with = "endpoint")]
        model: Option<PathBuf>,
        /// Endpoint for the started honeypot.
        #[arg(long)]
        endpoint: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Options of a honeypot run.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Our model directory: served in-process by `gpt serve` (its chat template, if any, is
    /// used).
    #[arg(long, conflicts_with = "endpoint")]
    model: Option<PathBuf>,
    /// An OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (http only).
    #[arg(long)]
    endpoint: Option<String>,
    /// Environment variable holding the endpoint's API key.
    #[arg(long)]
    api_key_env: Option<String>,
    /// The `model` field sent to the endpoint.
    #[arg(long)]
    endpoint_model: Option<String>,
    /// Serve sessions over TCP on this address (line-oriented, telnet-like); without it, one
    /// session on the terminal.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Profile TOML (default: the built-in Ubuntu web server).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Append session records to this JSONL file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Sessions at once at most (TCP).
    #[arg(long, default_value_t = 64)]
    max_sessions: usize,
    /// Seconds without input before a TCP session is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// Commands per minute per session at most.
    #[arg(long, default_value_t = 120)]
    per_minute: usize,
    /// Commands per session at most (then it is logged out).
    #[arg(long, default_value_t = 2_000)]
    max_commands: usize,
    /// Model tokens per session at most.
    #[arg(long, default_value_t = 100_000)]
    max_model_tokens: usize,
    /// New tokens per model answer at most.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Earlier turns of the session sent to the model with each command.
    #[arg(long, default_value_t = 12)]
    history_turns: usize,
    /// Sampling temperature of the model's answers.
    #[arg(long, default_value_t = 0.2)]
    temperature: f32,
    /// No model: model commands get the profile's example output for the same command, or
    /// nothing (for load tests and demos).
    #[arg(long, conflicts_with_all = ["model", "endpoint"])]
    canned: bool,
    /// Print the built-in profile (to copy and edit) and exit.
    #[arg(long)]
    print_profile: bool,
}

/// Runs `gpt honeypot`.
pub fn run(args: HoneypotArgs) -> CliResult {
    match args.command {
        Some(HoneypotCommand::Replay { log, session }) => {
            let records = read_log(&log)?;
            let out = replay(&records, session.as_deref());
            if out.is_empty() {
                return Err(match session {
                    Some(s) => format!("{}: no session {s:?}", log.display()).into(),
                    None => format!("{}: no sessions", log.display()).into(),
                });
            }
            for text in out.values() {
                println!("{text}");
            }
            Ok(())
        }
        Some(HoneypotCommand::Load {
            sessions,
            secs,
            connect,
            model,
            endpoint,
            json,
        }) => run_load(sessions, secs, connect, model, endpoint, json),
        Some(HoneypotCommand::Transcripts {
            out,
            n,
            history_turns,
            seed,
        }) => {
            let records = gpt::honeypot::transcripts::transcripts(
                &Profile::default_profile(),
                n,
                history_turns,
                seed,
            );
            let mut text = String::new();
            for r in &records {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            gpt::io::write_atomic(&out, text.as_bytes())?;
            eprintln!("wrote {} records to {}", records.len(), out.display());
            Ok(())
        }
        Some(HoneypotCommand::Bench {
            model,
            endpoint,
            max_tokens,
            history_turns,
            verbose,
            json,
        }) => {
            let (url, name, _server) = endpoint_for(model.as_ref(), endpoint.as_ref(), None, 4)?;
            let mut e = Endpoint::new(&url, None, name)?;
            e.max_tokens = max_tokens;
            e.history_turns = history_turns;
            e.temperature = 0.0;
            let r = gpt::honeypot::transcripts::bench(&Profile::default_profile(), &e);
            if json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(());
            }
            if verbose {
                for (c, a, v) in &r.answers {
                    println!("$ {c}\n{a}\n    [{v}]");
                }
            }
            let share = |k: usize| 100.0 * k as f64 / r.asked.max(1) as f64;
            println!("| model-answered commands | passed | cleaned | refused | failed | p50 latency | p90 latency |");
            println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            println!(
                "| {} | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {:.0} ms | {:.0} ms |",
                r.asked,
                share(r.passed),
                share(r.cleaned),
                share(r.refused),
                share(r.failed),
                r.p50_ms,
                r.p90_ms
            );
            Ok(())
        }
        None => run_honeypot(args.run),
    }
}

/// An endpoint URL, the `model` field to send, and the in-process server behind it (kept alive
/// while the endpoint is used).
type ModelEndpoint = (String, Option<String>, Option<Server>);

/// The endpoint URL and model name for `--model` (our server started in-process, returned to
/// keep it alive) or `--endpoint`.
fn endpoint_for(
    model: Option<&PathBuf>,
    endpoint: Option<&String>,
    endpoint_model: Option<String>,
    batch: usize,
) -> Result<ModelEndpoint, Box<dyn std::error::Error + Send + Sync>> {
    match (model, endpoint) {
        (Some(dir), _) => {
            let server = Server::start(ServeOptions {
                model: dir.clone(),
                dtype: WeightDtype::F32,
                addr: "127.0.0.1:0".parse()?,
                http: HttpConfig {
                    model_name: "honeypot".into(),
                    api_key: None,
                    max_body_bytes: 1 << 20,
                    body_timeout: Duration::from_secs(30),
                    max_tokens_limit: usize::MAX,
                    cors: Vec::new(),
                },
                engine: EngineConfig {
                    max_batch: batch.clamp(1, 16),
                    max_queue: batch.max(1) * 2,
                    prefill_chunk: 64,
                },
            })?;
            Ok((format!("http://{}/v1", server.addr), Some("honeypot".to_string()), Some(server)))
        }
        (None, Some(url)) => Ok((url.clone(), endpoint_model, None)),
        (None, None) => Err("give --model DIR (our model, served in-process), --endpoint URL (an OpenAI-compatible server) or --canned (no model)".into()),
    }
}

/// Kills the child honeypot when the load run ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_load(
    sessions: usize,
    secs: f64,
    connect: Option<SocketAddr>,
    model: Option<PathBuf>,
    endpoint: Option<String>,
    json: bool,
) -> CliResult {
    if sessions == 0 || !(secs > 0.0 && secs <= 3600.0) {
        return Err("--sessions must be at least 1 and --secs in (0, 3600]".into());
    }
    let mut child = None;
    let (addr, pid) = match connect {
        Some(a) => (a, None),
        None => {
            let mut cmd = std::process::Command::new(std::env::current_exe()?);
            // The clients send thousands of commands a minute: lift the rate and count limits,
            // which would answer them with the prompt only, then log them out.
            cmd.args([
                "honeypot",
                "--listen",
                "127.0.0.1:0",
                "--per-minute",
                "100000000",
            ])
            .args(["--max-commands", "100000000", "--max-sessions"])
            .arg((sessions + 4).to_string());
            match (&model, &endpoint) {
                (Some(m), _) => cmd.arg("--model").arg(m),
                (None, Some(e)) => cmd.arg("--endpoint").arg(e),
                (None, None) => cmd.arg("--canned"),
            };
            let mut c = Child(
                cmd.stderr(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .spawn()?,
            );
            let pid = c.0.id();
            let stderr = c.0.stderr.take().ok_or("no stderr from the honeypot")?;
            let mut lines = std::io::BufReader::new(stderr).lines();
            let addr = loop {
                let line = lines
                    .next()
                    .ok_or("the honeypot exited before listening")??;
                if let Some(rest) = line.split("listening on ").nth(1) {
                    break rest
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .parse::<SocketAddr>()?;
                }
            };
            // Keep draining its stderr so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            child = Some(c);
            (addr, Some(pid))
        }
    };
    let r = gpt::honeypot::load::run(addr, sessions, secs, "$ ", pid);
    drop(child);
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} sessions for {:.0} s: {} commands ({:.0}/s), latency p50 {:.2} ms p99 {:.2} ms, isolation failures {}, errors {}",
            r.sessions, r.secs, r.commands, r.commands_per_sec, r.p50_ms, r.p99_ms, r.isolation_failures, r.errors
        );
        if let Some((a, b, peak)) = r.rss_kib {
            println!(
                "honeypot memory: VmRSS {a} KiB at the start, {b} KiB at the end, peak {peak} KiB"
            );
        }
    }
    if r.isolation_failures > 0 || r.errors > 0 {
        return Err(format!(
            "{} isolation failures, {} errors",
            r.isolation_failures, r.errors
        )
        .into());
    }
    Ok(())
}

fn run_honeypot(a: RunArgs) -> CliResult {
    if a.print_profile {
        print!("{}", gpt::honeypot::profile::DEFAULT_PROFILE);
        return Ok(());
    }
    let profile = match &a.profile {
        Some(p) => Profile::load(p)?,
        None => Profile::default_profile(),
    };
    let api_key = match &a.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| format!("--api-key-env: the variable {var} is not set"))?,
        ),
        None => None,
    };
    // `--model`: our server in-process on a free loopback port, kept alive for the run.
    let (endpoint_url, model_name, _server) = if a.canned {
        ("canned".to_string(), None, None)
    } else {
        endpoint_for(
            a.model.as_ref(),
            a.endpoint.as_ref(),
            a.endpoint_model.clone(),
            a.max_sessions,
        )?
    };
    let responder: Box<dyn gpt::honeypot::responder::Responder> = if a.canned {
        Box::new(gpt::honeypot::responder::Canned)
    } else {
        let mut endpoint = Endpoint::new(&endpoint_url, api_key, model_name)?;
        endpoint.max_tokens = a.max_tokens;
        endpoint.temperature = a.temperature;
        endpoint.history_turns = a.history_turns;
        Box::new(endpoint)
    };
    let log = match &a.log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            Some(LogSink::new(Box::new(f)))
        }
        None => None,
    };
    let limits = Limits {
        per_minute: a.per_minute.max(1),
        max_commands: a.max_commands.max(1),
        max_model_tokens: a.max_model_tokens,
        ..Limits::default()
    };
    let shared = Shared {
        profile,
        responder,
        log,
    };
    match a.listen {
        None => interactive(&shared, limits)?,
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            eprintln!(
                "gpt honeypot: listening on {} (model at {endpoint_url}); Ctrl-C stops",
                listener.local_addr()?
            );
            let stop = StopSignal::install("stopping the honeypot (sessions are closed)");
            serve_tcp(
                listener,
                Arc::new(shared),
                TcpConfig {
                    max_sessions: a.max_sessions.max(1),
                    idle_timeout: Duration::from_secs(a.idle_timeout_secs.max(1)),
                    limits,
                },
                stop.flag(),
            )?;
        }
    }
    Ok(())
}
