//! `gpt honeypot`: the deceptive shell (see [`gpt::honeypot`]) on the terminal or over TCP, and
//! `gpt honeypot replay` for its logs. This file turns flags into the profile, the model
//! endpoint (or an in-process `gpt serve` for `--model`), the log and the limits.

use super::interrupt::StopSignal;
use super::CliResult;
use gpt::honeypot::profile::Profile;
use gpt::honeypot::responder::Endpoint;
use gpt::honeypot::server::{interactive, read_log, replay, serve_tcp, Shared, TcpConfig};
use gpt::honeypot::session::{Limits, LogSink};
use gpt::nn::precision::Precision;
use gpt::serve::engine::EngineConfig;
use gpt::serve::http::HttpConfig;
use gpt::serve::{ServeOptions, Server};
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
    /// Model tokens per session at most.
    #[arg(long, default_value_t = 100_000)]
    max_model_tokens: usize,
    /// New tokens per model answer at most.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature of the model's answers.
    #[arg(long, default_value_t = 0.2)]
    temperature: f32,
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
        None => run_honeypot(args.run),
    }
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
    let (endpoint_url, model_name, _server) = match (&a.model, &a.endpoint) {
        (Some(dir), _) => {
            let server = Server::start(ServeOptions {
                model: dir.clone(),
                dtype: Precision::F32,
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
                    max_batch: a.max_sessions.clamp(1, 16),
                    max_queue: a.max_sessions.max(1) * 2,
                    prefill_chunk: 64,
                },
            })?;
            (format!("http://{}/v1", server.addr), Some("honeypot".to_string()), Some(server))
        }
        (None, Some(url)) => (url.clone(), a.endpoint_model.clone(), None),
        (None, None) => return Err("give --model DIR (our model, served in-process) or --endpoint URL (an OpenAI-compatible server)".into()),
    };
    let mut endpoint = Endpoint::new(&endpoint_url, api_key, model_name)?;
    endpoint.max_tokens = a.max_tokens;
    endpoint.temperature = a.temperature;
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
        max_model_tokens: a.max_model_tokens,
        ..Limits::default()
    };
    let shared = Shared {
        profile,
        responder: Box::new(endpoint),
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
