//! `gpt bench serve`: a load generator for OpenAI-compatible servers, run against `gpt serve`
//! (this binary in a fresh process, as users start it) and, with `vs_transformers`, against
//! `transformers serve` on the same model directory, threads and load, in one run.
//!
//! The load: at each concurrency level, K clients each loop over the same streaming
//! `POST /v1/completions` (a fixed ~32-token prompt, `max_tokens`, one temperature and seed,
//! `stream: true`, `stream_options.include_usage`) for `duration` seconds. Every SSE event is
//! stamped as it arrives ([`super::http_client`]: raw HTTP/1.1 on tokio, loopback only).
//! Per level:
//! - aggregate generated tokens/s: token chunks (events with text) that arrived in the window,
//!   over the window;
//! - time to first token (TTFT): from sending the request to its first token chunk, for every
//!   request sent in the window;
//! - inter-token latency (ITL): between successive token chunks of a request, in the window;
//! - requests completed in the window, and errors: a non-200 answer, an error event, or a body
//!   that ends before `data: [DONE]` or a chunk with a `finish_reason` (transformers ends its
//!   streams with the latter only; both count as complete).
//!
//! At the deadline no new request is sent, but the streams in flight go on until every request
//! of the level has its first token, so that the last TTFTs are measured under the level's
//! load too (up to a grace of one more window; a request still waiting then counts with its
//! wait so far, a lower bound, and a percentile such a bound can move is printed with `≥`, see
//! [`percentile`]). Then every stream is cut (the connection is dropped, which both servers
//! treat as a cancellation) and the next level starts after a pause. Before the first level
//! each server answers one untimed warm-up request with the same sampling settings
//! (transformers' continuous batching fixes them at its first request).
//!
//! The runs alternate the servers (ours, then the peer, each started afresh), and the table
//! holds the medians over `runs`, beside the f32 matmul peak measured in the same run.

use super::harness::{
    current_exe, find_python, matmul_peak_gflops, random_gpt2_base, run_peer, PYTHON_HINT,
};
use super::http_client::{get, request, SseParser};
use crate::error::{Error, Result};
use crate::model::GptConfig;
use serde_json::{json, Value};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// The prompt every request sends: 32 tokens with the GPT-2 tokenizer.
pub const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz combined movable metal type, oil-based ink and a";

/// transformers' continuous-batching cache is counted in blocks of this many tokens (its
/// `ContinuousBatchingConfig.page_size` default).
const TRANSFORMERS_BLOCK_TOKENS: usize = 256;

/// Pause between levels, so that the cut requests of one are gone before the next starts.
const LEVEL_PAUSE: Duration = Duration::from_secs(3);

/// How long a server may take to answer `/health` with 200 after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings of `gpt bench serve`.
#[derive(Clone, Debug)]
pub struct ServeBench {
    /// Model directory (Hugging Face GPT-2 layout with its tokenizer); `None`: a random GPT-2
    /// 124M with the GPT-2 tokenizer, created here.
    pub model: Option<PathBuf>,
    /// Concurrency levels (clients), in the order run.
    pub clients: Vec<usize>,
    /// Seconds per level.
    pub duration_secs: f64,
    /// Requests started per level at most, over all clients (`None`: only the time bounds it).
    pub max_requests: Option<usize>,
    /// `max_tokens` of every request.
    pub max_tokens: usize,
    /// `temperature` of every request (0: greedy).
    pub temperature: f32,
    /// `seed` of every request.
    pub seed: u64,
    /// Runs per server (medians reported).
    pub runs: usize,
    /// Our server's `--max-batch` (`None`: the largest level, so every client has a row).
    pub max_batch: Option<usize>,
    /// Also run `transformers serve`.
    pub vs_transformers: bool,
    /// Configurations of `transformers serve`, each its flags after the model, host, port,
    /// device and dtype; each is run as a peer of its own (empty: one, continuous batching with
    /// a KV cache of ours' size, see [`transformers_default_args`]).
    pub transformers_args: Vec<Vec<String>>,
    /// Python interpreter with transformers (and its serving extras).
    pub python: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Latencies and percentiles

/// A latency in seconds that may be only a lower bound (`censored`: the request was cut at the
/// deadline before the event happened).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// Seconds.
    pub secs: f64,
    /// Only a lower bound.
    pub censored: bool,
}

/// The `p`-th percentile (0 < p ≤ 100, nearest rank: the smallest value with at least p% of
/// the values at or below it) of `values`; `None` when empty. The result is `censored` when a
/// lower bound sits at or below the chosen rank: the true values of such bounds may be larger
/// and move the percentile up, so it is itself only a lower bound; bounds above the chosen rank
/// cannot move it.
pub fn percentile(values: &[Latency], p: f64) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let n = v.len();
    let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as usize;
    let censored = v[..rank].iter().any(|l| l.censored);
    Some(Latency {
        secs: v[rank - 1].secs,
        censored,
    })
}

/// The median (upper middle) of `xs`, by value, keeping the chosen element's `censored`.
fn median_latency(xs: &[Latency]) -> Option<Latency> {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v.get(v.len() / 2).copied()
}

fn median_f64(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// One streamed request

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The stream ended cleanly; `done_marker`: with `data: [DONE]` (else after a chunk with a
    /// `finish_reason`).
    Completed {
        /// Whether `data: [DONE]` came.
        done_marker: bool,
    },
    /// Still streaming (or waiting) at the deadline.
    Cut,
    /// A non-200 answer, an error event, or a stream that ended early.
    Failed(String),
}

/// What the client saw of one request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// When it was sent.
    pub sent: Instant,
    /// Arrival of each token chunk (an event with non-empty text).
    pub token_times: Vec<Instant>,
    /// `usage.completion_tokens`, when a chunk carried it.
    pub usage_tokens: Option<u64>,
    /// The generated text.
    pub text: String,
    /// When it completed, failed or was cut.
    pub ended: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
}

impl RequestRecord {
    fn new(sent: Instant) -> RequestRecord {
        RequestRecord {
            sent,
            token_times: Vec::new(),
            usage_tokens: None,
            text: String::new(),
            ended: None,
            outcome: Outcome::Cut,
        }
    }
}

/// One SSE event of a streamed completion, as the load generator reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// `data: [DONE]`.
    Done,
    /// An error event (or data that is not JSON).
    Error(String),
    /// A completion chunk: its text (completions' `text` or chat's `delta.content`), whether it
    /// carries a `finish_reason`, and the usage's completion tokens if present.
    Data {
        /// Text of the first choice.
        text: String,
        /// A `finish_reason` was set.
        finished: bool,
        /// `usage.completion_tokens`.
        usage_tokens: Option<u64>,
    },
}

/// Reads the data of one SSE event.
pub fn interpret(data: &str) -> Chunk {
    if data.trim() == "[DONE]" {
        return Chunk::Done;
    }
    let v: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return Chunk::Error(format!("an event is not JSON ({e}): {data:.200}")),
    };
    if let Some(e) = v.get("error") {
        let msg = e
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| e.to_string(), str::to_string);
        return Chunk::Error(format!("error event: {msg:.300}"));
    }
    let choice = v.get("choices").and_then(|c| c.get(0));
    let text = choice
        .and_then(|c| {
            c.get("text")
                .or_else(|| c.get("delta").and_then(|d| d.get("content")))
        })
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let finished = choice
        .and_then(|c| c.get("finish_reason"))
        .is_some_and(|f| !f.is_null());
    let usage_tokens = v
        .get("usage")
        .and_then(|u| u.get("completion_tokens"))
        .and_then(Value::as_u64);
    Chunk::Data {
        text,
        finished,
        usage_tokens,
    }
}

/// Counts a request among those of its level waiting for their first token, until its first
/// token arrives or it ends (drop).
struct AwaitingFirst<'a> {
    count: &'a AtomicUsize,
    counted: AtomicBool,
}

impl<'a> AwaitingFirst<'a> {
    fn new(count: &'a AtomicUsize) -> AwaitingFirst<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        AwaitingFirst {
            count,
            counted: AtomicBool::new(true),
        }
    }

    /// The first token came (or the request ended): no longer waiting.
    fn done(&self) {
        if self.counted.swap(false, Ordering::SeqCst) {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for AwaitingFirst<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// Sends one streaming request and records into `rec` as events arrive (a cut drops this
/// future and leaves `rec` as it was, outcome [`Outcome::Cut`]); `first` hears of the first
/// token.
async fn stream_one(
    addr: SocketAddr,
    body: &[u8],
    rec: &mut RequestRecord,
    first: &AwaitingFirst<'_>,
) {
    rec.outcome = match stream_inner(addr, body, rec, first).await {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    };
    rec.ended = Some(Instant::now());
}

async fn stream_inner(
    addr: SocketAddr,
    body: &[u8],
    rec: &mut RequestRecord,
    first: &AwaitingFirst<'_>,
) -> std::result::Result<Outcome, String> {
    let mut resp = request(addr, "POST", "/v1/completions", Some(body)).await?;
    if resp.status != 200 {
        let b = resp.body().await.unwrap_or_default();
        return Err(format!(
            "HTTP {}: {:.300}",
            resp.status,
            String::from_utf8_lossy(&b)
        ));
    }
    let mut sse = SseParser::default();
    let (mut done, mut finished) = (false, false);
    while let Some(bytes) = resp.next_bytes().await? {
        let at = Instant::now();
        for data in sse.feed(&bytes) {
            match interpret(&data) {
                Chunk::Done => done = true,
                Chunk::Error(e) => return Err(e),
                Chunk::Data {
                    text,
                    finished: f,
                    usage_tokens,
                } => {
                    if !text.is_empty() {
                        rec.token_times.push(at);
                        rec.text.push_str(&text);
                        first.done();
                    }
                    finished |= f;
                    if usage_tokens.is_some() {
                        rec.usage_tokens = usage_tokens;
                    }
                }
            }
        }
        if done {
            break;
        }
    }
    if done || finished {
        Ok(Outcome::Completed { done_marker: done })
    } else {
        Err("the stream ended without `data: [DONE]` or a finish_reason".into())
    }
}

/// The JSON body every request of a run sends.
fn request_body(opts: &ServeBench, max_tokens: usize) -> Vec<u8> {
    json!({
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": opts.temperature,
        "seed": opts.seed,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// One concurrency level

/// What one level measured on one server.
#[derive(Clone, Debug)]
pub struct LevelStats {
    /// Concurrent clients.
    pub clients: usize,
    /// Length of the window in seconds.
    pub secs: f64,
    /// Token chunks that arrived in the window.
    pub tokens: usize,
    /// `tokens / secs`.
    pub tokens_per_sec: f64,
    /// Requests that completed in the window.
    pub completed: usize,
    /// Requests in flight at the deadline (cut, or completed after it).
    pub cut: usize,
    /// Failed requests.
    pub errors: usize,
    /// The first error's message.
    pub first_error: Option<String>,
    /// Completed streams that ended without `data: [DONE]`.
    pub without_done: usize,
    /// Over completed requests that reported usage: (usage completion tokens, token chunks).
    pub usage_vs_chunks: (u64, u64),
    /// TTFT percentiles.
    pub ttft_p50: Option<Latency>,
    /// See `ttft_p50`.
    pub ttft_p99: Option<Latency>,
    /// ITL percentiles.
    pub itl_p50: Option<Latency>,
    /// See `itl_p50`.
    pub itl_p99: Option<Latency>,
    /// The text of the first completed request (the same-model check).
    pub sample_text: Option<String>,
}

/// Summarises the records of a level whose window ran from `start` to `end` (events after
/// `end` only give the TTFT of requests sent before it).
pub fn summarize(
    records: &[RequestRecord],
    clients: usize,
    start: Instant,
    end: Instant,
) -> LevelStats {
    let secs = end.saturating_duration_since(start).as_secs_f64();
    let mut ttft = Vec::new();
    let mut itl = Vec::new();
    let (mut tokens, mut completed, mut cut, mut errors, mut without_done) = (0, 0, 0, 0, 0);
    let mut first_error = None;
    let mut usage_vs_chunks = (0u64, 0u64);
    let mut sample_text = None;
    for r in records {
        let in_window: Vec<Instant> = r
            .token_times
            .iter()
            .copied()
            .filter(|&t| t <= end)
            .collect();
        tokens += in_window.len();
        match r.token_times.first() {
            Some(&t) => ttft.push(Latency {
                secs: t.saturating_duration_since(r.sent).as_secs_f64(),
                censored: false,
            }),
            None if r.outcome == Outcome::Cut => ttft.push(Latency {
                secs: r
                    .ended
                    .unwrap_or(end)
                    .saturating_duration_since(r.sent)
                    .as_secs_f64(),
                censored: true,
            }),
            None => {}
        }
        itl.extend(in_window.windows(2).map(|w| Latency {
            secs: w[1].saturating_duration_since(w[0]).as_secs_f64(),
            censored: false,
        }));
        let after = r.ended.is_none_or(|e| e > end);
        match &r.outcome {
            Outcome::Completed { .. } if after => cut += 1,
            Outcome::Completed { done_marker } => {
                completed += 1;
                if !done_marker {
                    without_done += 1;
                }
                if let Some(u) = r.usage_tokens {
                    usage_vs_chunks.0 += u;
                    usage_vs_chunks.1 += r.token_times.len() as u64;
                }
                if sample_text.is_none() {
                    sample_text = Some(r.text.clone());
                }
            }
            Outcome::Cut => cut += 1,
            Outcome::Failed(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    LevelStats {
        clients,
        secs,
        tokens,
        tokens_per_sec: if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        },
        completed,
        cut,
        errors,
        first_error,
        without_done,
        usage_vs_chunks,
        ttft_p50: percentile(&ttft, 50.0),
        ttft_p99: percentile(&ttft, 99.0),
        itl_p50: percentile(&itl, 50.0),
        itl_p99: percentile(&itl, 99.0),
        sample_text,
    }
}

/// When one level's clients stop.
#[derive(Clone, Copy)]
struct Window {
    /// No request is sent after this.
    deadline: tokio::time::Instant,
    /// Streams are cut once no request awaits its first token, or at this instant.
    grace_end: tokio::time::Instant,
}

/// One client: sends `body` again and again until the deadline (or until the level's request
/// budget `left` is spent), one request at a time; `awaiting` counts the level's requests
/// waiting for their first token.
async fn client(
    addr: SocketAddr,
    body: Arc<Vec<u8>>,
    window: Window,
    left: Option<Arc<AtomicUsize>>,
    awaiting: Arc<AtomicUsize>,
) -> Vec<RequestRecord> {
    let mut records = Vec::new();
    while tokio::time::Instant::now() < window.deadline {
        if let Some(l) = &left {
            // Take one request from the budget, if any is left.
            if l.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                break;
            }
        }
        let mut rec = RequestRecord::new(Instant::now());
        let first = AwaitingFirst::new(&awaiting);
        let finished = {
            let stream = stream_one(addr, &body, &mut rec, &first);
            tokio::pin!(stream);
            let mut finished = tokio::select! {
                _ = &mut stream => true,
                _ = tokio::time::sleep_until(window.deadline) => false,
            };
            // Past the deadline: keep streaming while a request of the level awaits its first
            // token, so that it is served under the level's load.
            while !finished
                && awaiting.load(Ordering::SeqCst) > 0
                && tokio::time::Instant::now() < window.grace_end
            {
                finished = tokio::select! {
                    _ = &mut stream => true,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => false,
                };
            }
            finished
        };
        drop(first);
        if !finished {
            rec.outcome = Outcome::Cut;
            rec.ended = Some(Instant::now());
        }
        let failed = matches!(rec.outcome, Outcome::Failed(_));
        records.push(rec);
        if failed {
            // A server that refuses at once must not turn the client into a busy loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    records
}

/// Runs one level: `clients` clients for `duration` against `addr`.
fn run_level(
    rt: &Runtime,
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    max_requests: Option<usize>,
    body: &[u8],
) -> LevelStats {
    let body = Arc::new(body.to_vec());
    let left = max_requests.map(|n| Arc::new(AtomicUsize::new(n)));
    let awaiting = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + duration;
        let window = Window {
            deadline,
            grace_end: deadline + duration,
        };
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                tokio::spawn(client(
                    addr,
                    body.clone(),
                    window,
                    left.clone(),
                    awaiting.clone(),
                ))
            })
            .collect();
        let mut records = Vec::new();
        for t in tasks {
            // A client task only ends by returning its records (it does not panic).
            records.extend(t.await.unwrap_or_default());
        }
        let end = Instant::now().min(start + duration);
        summarize(&records, clients, start, end)
    })
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// A server started as a child process; killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

/// A free loopback port (bound and released: another process could take it in between, which
/// the server's start would then report).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::usage("bench serve", format!("cannot find a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::usage("bench serve", e.to_string()))
}

/// The last `n` lines of the file at `path` (a server's log, for error messages).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl ServerProcess {
    /// Starts `cmd` (a server listening on `addr`) with its output in `log`, and waits until
    /// `GET /health` answers 200.
    fn start(
        rt: &Runtime,
        mut cmd: Command,
        addr: SocketAddr,
        log: PathBuf,
    ) -> Result<ServerProcess> {
        let out = File::create(&log).map_err(|e| Error::io(&log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
        let program = PathBuf::from(cmd.get_program());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::file(&program, format!("could not start: {e}")))?;
        let mut server = ServerProcess { child, addr, log };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(Error::file(
                    &program,
                    format!(
                        "{:?} exited ({status}) before it was ready; the end of its log {}:\n{}",
                        cmd.get_args().collect::<Vec<_>>(),
                        server.log.display(),
                        tail(&server.log, 15)
                    ),
                ));
            }
            if let Ok((200, _)) = rt.block_on(get(addr, "/health")) {
                return Ok(server);
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(Error::file(
                    &program,
                    format!(
                        "not ready after {} s; the end of its log {}:\n{}",
                        READY_TIMEOUT.as_secs(),
                        server.log.display(),
                        tail(&server.log, 15)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which server a measurement is of: ours, or the `i`-th configuration of transformers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    Transformers(usize),
}

/// One configuration of `transformers serve`.
struct Peer {
    /// Its name in the report: `transformers` (`transformers-cb` and `transformers-generate`
    /// when several are run).
    label: String,
    /// Its flags.
    args: Vec<String>,
}

/// The peers for `configs` (flags of each), named for the report.
fn peers(configs: Vec<Vec<String>>) -> Vec<Peer> {
    let several = configs.len() > 1;
    let mut out: Vec<Peer> = Vec::new();
    for args in configs {
        let mut label = if !several {
            "transformers".to_string()
        } else if args.iter().any(|a| a == "--continuous-batching") {
            "transformers-cb".to_string()
        } else {
            "transformers-generate".to_string()
        };
        if out.iter().any(|p| p.label == label) {
            label = format!("{label}-{}", out.len() + 1);
        }
        out.push(Peer { label, args });
    }
    out
}

/// The flags `transformers serve` gets by default: continuous batching (what its users pick
/// for concurrent load) with a KV cache of as many tokens as ours holds (`max_batch` rows of
/// `n_ctx`), instead of its CPU default of 90% of the machine's memory.
pub fn transformers_default_args(max_batch: usize, n_ctx: usize) -> Vec<String> {
    let blocks = (max_batch * n_ctx).div_ceil(TRANSFORMERS_BLOCK_TOKENS);
    vec![
        "--continuous-batching".into(),
        "--cb-num-blocks".into(),
        blocks.to_string(),
    ]
}

/// What both servers are started with.
struct Setup {
    model: PathBuf,
    threads: usize,
    max_batch: usize,
    peers: Vec<Peer>,
    python: PathBuf,
    tmp: PathBuf,
}

impl Setup {
    fn name(&self, side: Side) -> &str {
        match side {
            Side::Ours => "ours",
            Side::Transformers(i) => &self.peers[i].label,
        }
    }
}

fn start_server(rt: &Runtime, side: Side, s: &Setup, run: usize) -> Result<ServerProcess> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = s.tmp.join(format!("{}_run{run}.log", s.name(side)));
    let cmd = match side {
        Side::Ours => {
            let mut c = Command::new(current_exe()?);
            c.arg("--threads")
                .arg(s.threads.to_string())
                .arg("serve")
                .arg("--model")
                .arg(&s.model)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--max-batch", &s.max_batch.to_string()])
                .args(["--max-queue", &(4 * s.max_batch).max(64).to_string()]);
            c
        }
        Side::Transformers(i) => {
            let mut c = Command::new(&s.python);
            c.args(["-m", "transformers.cli.transformers", "serve"])
                .arg(&s.model)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--device", "cpu", "--dtype", "float32"])
                .args(&s.peers[i].args)
                .env("OMP_NUM_THREADS", s.threads.to_string())
                .env("MKL_NUM_THREADS", s.threads.to_string())
                .env("HF_HUB_OFFLINE", "1")
                .env("HF_HUB_DISABLE_UPDATE_CHECK", "1")
                .env("HF_HUB_DISABLE_TELEMETRY", "1");
            c
        }
    };
    ServerProcess::start(rt, cmd, addr, log).map_err(|e| match (side, e) {
        (Side::Transformers(_), Error::File { path, reason }) => Error::File {
            path,
            reason: format!("{reason}\n({PYTHON_HINT}, transformers and its serving extras: fastapi, uvicorn, openai)"),
        },
        (_, e) => e,
    })
}

/// One run of one server: start, warm up, every level, stop.
fn run_side(
    rt: &Runtime,
    side: Side,
    s: &Setup,
    opts: &ServeBench,
    run: usize,
) -> Result<Vec<LevelStats>> {
    let server = start_server(rt, side, s, run)?;
    let warm = request_body(opts, opts.max_tokens.min(8));
    let mut rec = RequestRecord::new(Instant::now());
    let none_waiting = AtomicUsize::new(0);
    rt.block_on(stream_one(
        server.addr,
        &warm,
        &mut rec,
        &AwaitingFirst::new(&none_waiting),
    ));
    if let Outcome::Failed(e) = &rec.outcome {
        return Err(Error::usage(
            "bench serve",
            format!(
                "the warm-up request to {} failed: {e}; the end of its log {}:\n{}",
                s.name(side),
                server.log.display(),
                tail(&server.log, 15)
            ),
        ));
    }
    let body = request_body(opts, opts.max_tokens);
    let mut levels = Vec::new();
    for (i, &k) in opts.clients.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(LEVEL_PAUSE);
        }
        let st = run_level(
            rt,
            server.addr,
            k,
            Duration::from_secs_f64(opts.duration_secs),
            opts.max_requests,
            &body,
        );
        println!("run {run} {:<12} {}", s.name(side), level_line(&st));
        levels.push(st);
    }
    drop(server);
    Ok(levels)
}

// ---------------------------------------------------------------------------------------------
// Report

fn ms(l: Option<Latency>) -> String {
    match l {
        None => "-".into(),
        Some(l) => format!("{}{:.0}", if l.censored { "≥" } else { "" }, l.secs * 1e3),
    }
}

fn level_line(s: &LevelStats) -> String {
    let mut line = format!(
        "clients {:>2}: {:7.1} tokens/s, TTFT p50 {} ms p99 {} ms, ITL p50 {} ms p99 {} ms, {} completed, {} cut, {} errors",
        s.clients,
        s.tokens_per_sec,
        ms(s.ttft_p50),
        ms(s.ttft_p99),
        ms(s.itl_p50),
        ms(s.itl_p99),
        s.completed,
        s.cut,
        s.errors
    );
    if let Some(e) = &s.first_error {
        line.push_str(&format!(" (first: {e})"));
    }
    line
}

/// The medians over runs of one level of one server.
struct Medians {
    tokens_per_sec: f64,
    completed: f64,
    errors: usize,
    ttft_p50: Option<Latency>,
    ttft_p99: Option<Latency>,
    itl_p50: Option<Latency>,
    itl_p99: Option<Latency>,
}

fn medians(runs: &[Vec<LevelStats>], level: usize) -> Medians {
    let at: Vec<&LevelStats> = runs.iter().filter_map(|r| r.get(level)).collect();
    let lat = |f: fn(&LevelStats) -> Option<Latency>| {
        median_latency(&at.iter().filter_map(|s| f(s)).collect::<Vec<_>>())
    };
    Medians {
        tokens_per_sec: median_f64(&at.iter().map(|s| s.tokens_per_sec).collect::<Vec<_>>()),
        completed: median_f64(&at.iter().map(|s| s.completed as f64).collect::<Vec<_>>()),
        errors: at.iter().map(|s| s.errors).sum(),
        ttft_p50: lat(|s| s.ttft_p50),
        ttft_p99: lat(|s| s.ttft_p99),
        itl_p50: lat(|s| s.itl_p50),
        itl_p99: lat(|s| s.itl_p99),
    }
}

/// The table of medians: ours alone (`peer` `None`), or ours beside one peer.
fn print_table(
    opts: &ServeBench,
    ours: &[Vec<LevelStats>],
    peer: Option<(&str, &[Vec<LevelStats>])>,
) {
    let (name, theirs) = peer.unwrap_or(("", &[]));
    let peer = !theirs.is_empty();
    if peer {
        println!("| clients | ours tokens/s | {name} tokens/s | ratio | TTFT p50 ms (ours / {name}) | TTFT p99 ms (ours / {name}) | ITL p50 ms (ours / {name}) | ITL p99 ms (ours / {name}) | requests (ours / {name}) | errors (ours / {name}) |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        println!("| clients | ours tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | requests | errors |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for (i, &k) in opts.clients.iter().enumerate() {
        let o = medians(ours, i);
        if peer {
            let t = medians(theirs, i);
            println!(
                "| {k} | {:.1} | {:.1} | **{:.2}x** | {} / {} | {} / {} | {} / {} | {} / {} | {:.0} / {:.0} | {} / {} |",
                o.tokens_per_sec,
                t.tokens_per_sec,
                o.tokens_per_sec / t.tokens_per_sec,
                ms(o.ttft_p50),
                ms(t.ttft_p50),
                ms(o.ttft_p99),
                ms(t.ttft_p99),
                ms(o.itl_p50),
                ms(t.itl_p50),
                ms(o.itl_p99),
                ms(t.itl_p99),
                o.completed,
                t.completed,
                o.errors,
                t.errors
            );
        } else {
            println!(
                "| {k} | {:.1} | {} | {} | {} | {} | {:.0} | {} |",
                o.tokens_per_sec,
                ms(o.ttft_p50),
                ms(o.ttft_p99),
                ms(o.itl_p50),
                ms(o.itl_p99),
                o.completed,
                o.errors
            );
        }
    }
    // The issue's targets, where the levels they name were run.
    let level = |k: usize| opts.clients.iter().position(|&c| c == k);
    if let (false, Some(one), Some(eight)) = (peer, level(1), level(8)) {
        let (a, b) = (medians(ours, one), medians(ours, eight));
        let r = b.tokens_per_sec / a.tokens_per_sec;
        println!(
            "target: ours at 8 clients / ours at 1 client = {r:.2}x aggregate tokens/s (target ≥ 3x: {})",
            if r >= 3.0 { "met" } else { "NOT met" }
        );
    }
    if let (true, Some(eight)) = (peer, level(8)) {
        let (o, t) = (medians(ours, eight), medians(theirs, eight));
        let r = o.tokens_per_sec / t.tokens_per_sec;
        // Ours must be below theirs for sure: a lower bound of ours proves nothing.
        let lower = match (o.ttft_p99, t.ttft_p99) {
            (Some(a), Some(b)) if a.censored => {
                if a.secs >= b.secs {
                    "NOT met"
                } else {
                    "undetermined: ours is a lower bound"
                }
            }
            (Some(a), Some(b)) if a.secs < b.secs => "met",
            _ => "NOT met",
        };
        println!(
            "target: at 8 clients ours / {name} = {r:.2}x aggregate tokens/s (target ≥ 3x: {}); p99 TTFT {} ms vs {} ms (target lower: {})",
            if r >= 3.0 { "met" } else { "NOT met" },
            ms(o.ttft_p99),
            ms(t.ttft_p99),
            lower
        );
    }
}

/// Notes on what the streams looked like: missing `[DONE]`, usage vs token chunks, the first
/// completions' texts.
fn print_notes(name: &str, runs: &[Vec<LevelStats>]) {
    let all: Vec<&LevelStats> = runs.iter().flatten().collect();
    let completed: usize = all.iter().map(|s| s.completed).sum();
    let without: usize = all.iter().map(|s| s.without_done).sum();
    let (usage, chunks) = all.iter().fold((0, 0), |(u, c), s| {
        (u + s.usage_vs_chunks.0, c + s.usage_vs_chunks.1)
    });
    let mut parts = vec![format!("{completed} completed streams")];
    if without > 0 {
        parts.push(format!(
            "{without} of them ended without `data: [DONE]` (after a chunk with a finish_reason)"
        ));
    }
    if chunks > 0 {
        parts.push(format!(
            "usage.completion_tokens / token chunks = {usage} / {chunks} = {:.3}",
            usage as f64 / chunks as f64
        ));
    }
    println!("{name}: {}", parts.join("; "));
}

fn sample_text(runs: &[Vec<LevelStats>]) -> Option<&str> {
    runs.iter().flatten().find_map(|s| s.sample_text.as_deref())
}

/// The transformers and torch versions of `python`, for the report.
fn peer_versions(python: &Path) -> String {
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import transformers, torch; print(f'transformers {transformers.__version__}, torch {torch.__version__}')",
    ]);
    run_peer(&mut cmd, PYTHON_HINT)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("versions unknown: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The benchmark

/// Runs `gpt bench serve`, printing its report to standard output.
pub fn run(opts: &ServeBench) -> Result<()> {
    for (flag, v) in [("--max-tokens", opts.max_tokens), ("--runs", opts.runs)] {
        if v == 0 {
            return Err(Error::field(flag, "must be at least 1"));
        }
    }
    if opts.clients.is_empty() || opts.clients.contains(&0) {
        return Err(Error::field(
            "--clients",
            "give one or more client counts of at least 1, e.g. 1,4,8,16,32",
        ));
    }
    if !(opts.duration_secs > 0.0 && opts.duration_secs.is_finite()) {
        return Err(Error::field(
            "--duration-secs",
            "must be a positive number of seconds",
        ));
    }
    let tmp = std::env::temp_dir().join(format!("gpt-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = run_in(opts, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(opts: &ServeBench, tmp: &Path) -> Result<()> {
    let threads = crate::threads::current();
    let model = match &opts.model {
        Some(m) => crate::model::inference::resolve_dir(m),
        None => {
            let dir = tmp.join("gpt2-124m");
            eprintln!(
                "creating a random GPT-2 124M (GPT-2 tokenizer) in {} ...",
                dir.display()
            );
            random_gpt2_base(
                GptConfig {
                    dropout: 0.0,
                    ..GptConfig::gpt2()
                },
                &dir,
            )?;
            dir
        }
    };
    let config = crate::model::checkpoint::load_config(&model)?;
    let tok = crate::io::load_tokenizer(&model)?;
    let prompt_tokens = tok
        .encode(PROMPT, true)
        .map_err(|e| {
            Error::file(
                &model,
                format!("its tokenizer cannot encode the prompt: {e}"),
            )
        })?
        .len();
    if prompt_tokens + opts.max_tokens > config.n_ctx {
        return Err(Error::field(
            "--max-tokens",
            format!(
                "the {prompt_tokens}-token prompt and {} new tokens are over the model's context {}",
                opts.max_tokens, config.n_ctx
            ),
        ));
    }
    let max_batch = opts
        .max_batch
        .unwrap_or_else(|| opts.clients.iter().copied().max().unwrap_or(1));
    let python = find_python(opts.python.as_deref());
    let configs = if opts.transformers_args.is_empty() {
        vec![transformers_default_args(max_batch, config.n_ctx)]
    } else {
        opts.transformers_args.clone()
    };
    let setup = Setup {
        peers: if opts.vs_transformers {
            peers(configs)
        } else {
            Vec::new()
        },
        model: model.clone(),
        threads,
        max_batch,
        python: python.clone(),
        tmp: tmp.to_path_buf(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::usage(
                "bench serve",
                format!("cannot start the async runtime: {e}"),
            )
        })?;

    let peak = matmul_peak_gflops();
    println!(
        "gpt bench serve: {threads} threads, model {} ({} layers, {} heads, width {}, context {}, vocabulary {}), streaming /v1/completions: prompt {prompt_tokens} tokens, max_tokens {}, temperature {}, seed {}; levels {:?} clients, {} s each{}; {} run(s) per server, medians; f32 matmul peak {peak:.1} GFLOP/s (1024x768x3072); {}",
        model.display(),
        config.n_layer,
        config.n_head,
        config.n_embd,
        config.n_ctx,
        config.vocab_size,
        opts.max_tokens,
        opts.temperature,
        opts.seed,
        opts.clients,
        opts.duration_secs,
        opts.max_requests.map_or(String::new(), |n| format!(" or {n} requests")),
        opts.runs,
        load_average(),
    );
    println!(
        "ours: gpt --threads {threads} serve --max-batch {max_batch} (continuous batching, the binary as users start it)"
    );
    if !setup.peers.is_empty() {
        let versions = peer_versions(&python);
        for p in &setup.peers {
            println!(
                "{}: {} -m transformers.cli.transformers serve MODEL --device cpu --dtype float32 {} with OMP_NUM_THREADS={threads} ({versions})",
                p.label,
                python.display(),
                p.args.join(" "),
            );
        }
    }
    let mut ours = Vec::new();
    let mut theirs: Vec<Vec<Vec<LevelStats>>> = vec![Vec::new(); setup.peers.len()];
    for run in 1..=opts.runs {
        ours.push(run_side(&rt, Side::Ours, &setup, opts, run)?);
        for (i, t) in theirs.iter_mut().enumerate() {
            std::thread::sleep(LEVEL_PAUSE);
            t.push(run_side(&rt, Side::Transformers(i), &setup, opts, run)?);
        }
    }
    println!(
        "medians over {} run(s); TTFT/ITL in ms; ≥: a lower bound (requests still waiting for their first token at the deadline count with their wait so far)",
        opts.runs
    );
    print_table(opts, &ours, None);
    for (p, t) in setup.peers.iter().zip(&theirs) {
        print_table(opts, &ours, Some((&p.label, t)));
    }
    print_notes("ours", &ours);
    for (p, t) in setup.peers.iter().zip(&theirs) {
        print_notes(&p.label, t);
        if opts.temperature == 0.0 {
            if let (Some(a), Some(b)) = (sample_text(&ours), sample_text(t)) {
                let same = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
                println!(
                    "greedy text of the first completed request, ours vs {}: {} ({} of {} / {} characters agree before the first difference)",
                    p.label,
                    if a == b { "identical" } else { "differs" },
                    same,
                    a.chars().count(),
                    b.chars().count()
                );
            }
        }
    }
    if !setup.peers.is_empty() {
        println!("ratio = ours / peer aggregate tokens/s (above 1: we are faster)");
    }
    println!("at the end: {}", load_average());
    Ok(())
}

/// The machine's 1-minute load average, in words: other work on the cores slows both servers,
/// and PyTorch's OpenMP threads far more than their share (they spin at every barrier while a
/// peer thread waits for a core), so a figure taken with a load near the thread count is not
/// a comparison.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .map_or_else(
            || "load average unknown".into(),
            |l| format!("1-minute load average {l}"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(secs: f64) -> Latency {
        Latency {
            secs,
            censored: false,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_and_know_their_lower_bounds() {
        let v: Vec<Latency> = (1..=100).rev().map(|i| lat(i as f64)).collect();
        assert_eq!(percentile(&v, 50.0), Some(lat(50.0)));
        assert_eq!(percentile(&v, 99.0), Some(lat(99.0)));
        assert_eq!(percentile(&v, 100.0), Some(lat(100.0)));
        assert_eq!(percentile(&[lat(7.0)], 99.0), Some(lat(7.0)));
        // Four values: p50 is the 2nd, p99 the 4th.
        let four = [lat(4.0), lat(1.0), lat(3.0), lat(2.0)];
        assert_eq!(percentile(&four, 50.0), Some(lat(2.0)));
        assert_eq!(percentile(&four, 99.0), Some(lat(4.0)));
        assert_eq!(percentile(&[], 50.0), None);
        // A lower bound above the chosen rank cannot move it; one at or below it can.
        let mut c = four.to_vec();
        c[0].censored = true; // 4.0, the largest
        assert!(!percentile(&c, 50.0).unwrap().censored);
        assert!(percentile(&c, 99.0).unwrap().censored);
        c[0].censored = false;
        c[1].censored = true; // 1.0, the smallest
        assert_eq!(percentile(&c, 50.0).unwrap().secs, 2.0);
        assert!(percentile(&c, 50.0).unwrap().censored);
    }

    #[test]
    fn sse_chunks_of_both_servers_are_read_alike() {
        // gpt serve: a completion chunk, the usage chunk, then [DONE].
        assert_eq!(
            interpret(
                r#"{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" the","logprobs":null,"finish_reason":null}],"usage":null}"#
            ),
            Chunk::Data {
                text: " the".into(),
                finished: false,
                usage_tokens: None
            }
        );
        assert_eq!(
            interpret(
                r#"{"choices":[],"usage":{"prompt_tokens":32,"completion_tokens":64,"total_tokens":96}}"#
            ),
            Chunk::Data {
                text: String::new(),
                finished: false,
                usage_tokens: Some(64)
            }
        );
        assert_eq!(interpret("[DONE]"), Chunk::Done);
        // transformers serve: no finish_reason key mid-stream; the last chunk has it and usage.
        assert_eq!(
            interpret(
                r#"{"id":"x","choices":[{"index":0,"text":"amd"}],"object":"text_completion"}"#
            ),
            Chunk::Data {
                text: "amd".into(),
                finished: false,
                usage_tokens: None
            }
        );
        assert_eq!(
            interpret(
                r#"{"choices":[{"finish_reason":"length","index":0,"text":""}],"usage":{"completion_tokens":16}}"#
            ),
            Chunk::Data {
                text: String::new(),
                finished: true,
                usage_tokens: Some(16)
            }
        );
        // Chat deltas, and errors of either shape.
        assert_eq!(
            interpret(r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#),
            Chunk::Data {
                text: "Hi".into(),
                finished: false,
                usage_tokens: None
            }
        );
        assert!(
            matches!(interpret(r#"{"error":{"message":"boom","type":"server_error"}}"#), Chunk::Error(e) if e.contains("boom"))
        );
        assert!(
            matches!(interpret(r#"{"error": "CB worker died"}"#), Chunk::Error(e) if e.contains("CB worker died"))
        );
        assert!(matches!(interpret("{oops"), Chunk::Error(_)));
    }

    #[test]
    fn a_level_counts_tokens_latencies_and_outcomes() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let rec = |sent: u64, tokens: &[u64], ended: u64, outcome: Outcome| RequestRecord {
            sent: at(sent),
            token_times: tokens.iter().map(|&t| at(t)).collect(),
            usage_tokens: matches!(outcome, Outcome::Completed { .. })
                .then_some(tokens.len() as u64),
            text: "x".repeat(tokens.len()),
            ended: Some(at(ended)),
            outcome,
        };
        // The window is 0..1000 ms.
        let records = [
            // TTFT 100 ms, ITLs 50, 50.
            rec(
                0,
                &[100, 150, 200],
                200,
                Outcome::Completed { done_marker: true },
            ),
            // TTFT 300 ms, ITL 100; no [DONE] (transformers' way).
            rec(
                200,
                &[500, 600],
                600,
                Outcome::Completed { done_marker: false },
            ),
            // In flight at the deadline after one token: TTFT 200 ms, no ITL; cut at 1050.
            rec(600, &[800], 1050, Outcome::Cut),
            // Its first token after the deadline (the load held until then): TTFT 150 ms,
            // exact, but the token is not the window's; then cut.
            rec(900, &[1050], 1050, Outcome::Cut),
            // Completed after the deadline: in flight at it, not completed in the window;
            // ITL 150 in the window, not the one after it.
            rec(
                650,
                &[700, 850, 1020],
                1020,
                Outcome::Completed { done_marker: true },
            ),
            // Still without a token when the grace ended at 2000: TTFT ≥ 1050 ms.
            rec(950, &[], 2000, Outcome::Cut),
            rec(960, &[], 970, Outcome::Failed("HTTP 429: busy".into())),
        ];
        let s = summarize(&records, 2, t0, at(1000));
        assert_eq!((s.tokens, s.completed, s.cut, s.errors), (8, 2, 4, 1));
        assert!((s.tokens_per_sec - 8.0).abs() < 1e-9);
        assert_eq!(s.first_error.as_deref(), Some("HTTP 429: busy"));
        assert_eq!(s.without_done, 1);
        assert_eq!(s.usage_vs_chunks, (5, 5));
        assert_eq!(s.sample_text.as_deref(), Some("xxx"));
        // TTFTs: 100, 300, 200, 150, 50, ≥1050 → sorted 50, 100, 150, 200, 300, ≥1050: p50 is
        // the 3rd and exact; p99 the 6th, a lower bound.
        assert_eq!(
            s.ttft_p50,
            Some(Latency {
                secs: 0.15,
                censored: false
            })
        );
        let p99 = s.ttft_p99.unwrap();
        assert!((p99.secs - 1.05).abs() < 1e-9 && p99.censored);
        // ITLs in the window: 50, 50, 100, 150.
        assert!((s.itl_p50.unwrap().secs - 0.05).abs() < 1e-9);
        assert!((s.itl_p99.unwrap().secs - 0.15).abs() < 1e-9);
    }

    #[test]
    fn the_prompt_is_32_gpt2_tokens() {
        let tok = crate::tokenizer::Tokenizer::gpt2();
        assert_eq!(tok.encode_ordinary(PROMPT).len(), 32);
    }

    #[test]
    fn peers_are_named_for_their_configuration() {
        let names = |configs: Vec<Vec<&str>>| -> Vec<String> {
            peers(
                configs
                    .into_iter()
                    .map(|c| c.into_iter().map(String::from).collect())
                    .collect(),
            )
            .into_iter()
            .map(|p| p.label)
            .collect()
        };
        assert_eq!(names(vec![vec!["--continuous-batching"]]), ["transformers"]);
        assert_eq!(
            names(vec![vec!["--continuous-batching"], vec![], vec![]]),
            [
                "transformers-cb",
                "transformers-generate",
                "transformers-generate-3"
            ]
        );
    }

    #[test]
    fn transformers_gets_a_cache_of_our_size() {
        assert_eq!(
            transformers_default_args(32, 1024),
            ["--continuous-batching", "--cb-num-blocks", "128"]
        );
        assert_eq!(transformers_default_args(3, 100)[2], "2");
    }
}
