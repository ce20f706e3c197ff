//! Where sessions come from: a line-oriented TCP service (telnet-like; telnet negotiation bytes
//! are dropped) serving many sessions at once, one thread each, bounded in number and idle time;
//! or one interactive session on the terminal. And `replay`: a logged session printed as the
//! attacker saw it, with who answered each command.

use super::profile::Profile;
use super::responder::Responder;
use super::session::{Limits, LogSink, Record, Session};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of the TCP service.
#[derive(Clone, Copy, Debug)]
pub struct TcpConfig {
    /// Sessions at once at most (more connections are closed at once).
    pub max_sessions: usize,
    /// A session with no input for this long is closed.
    pub idle_timeout: Duration,
    /// Per-session limits.
    pub limits: Limits,
}

/// What the service shares between sessions.
pub struct Shared {
    /// The profile.
    pub profile: Profile,
    /// The model.
    pub responder: Box<dyn Responder>,
    /// The session log.
    pub log: Option<LogSink>,
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new session id: time-based and unique in this process.
pub fn session_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{t:x}-{}", SESSION_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Serves sessions on `listener` until `stop` is set.
pub fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    cfg: TcpConfig,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::usage("honeypot", e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::usage("honeypot", format!("{addr}: {e}")))?;
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if active.load(Ordering::SeqCst) >= cfg.max_sessions {
                    drop(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (shared, mine, stop) = (shared.clone(), active.clone(), stop.clone());
                let spawned = std::thread::Builder::new()
                    .name("honeypot-session".into())
                    .spawn(move || {
                        let _ = serve_connection(stream, &peer.to_string(), &shared, cfg, &stop);
                        mine.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    // No thread for it: the connection went with the closure and is closed.
                    active.fetch_sub(1, Ordering::SeqCst);
                    eprintln!("warning: cannot start a session thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => eprintln!("warning: accept failed: {e}"),
        }
    }
    // Wait for sessions to notice the stop (their reads time out within a second).
    for _ in 0..100 {
        if active.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Removes telnet negotiation (IAC sequences) from `bytes`.
fn strip_telnet(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xFF {
            // IAC IAC is a literal 0xFF; WILL/WONT/DO/DONT take an option byte; SB..SE blocks.
            match bytes.get(i + 1) {
                Some(0xFF) => {
                    out.push(0xFF);
                    i += 2;
                }
                Some(251..=254) => i += 3,
                Some(250) => {
                    i += 2;
                    while i + 1 < bytes.len() && !(bytes[i] == 0xFF && bytes[i + 1] == 240) {
                        i += 1;
                    }
                    i += 2;
                }
                _ => i += 2,
            }
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn serve_connection(
    mut stream: TcpStream,
    peer: &str,
    shared: &Shared,
    cfg: TcpConfig,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nodelay(true).ok();
    // Short reads so the stop flag and the idle limit are seen.
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut session = Session::new(
        &shared.profile,
        shared.responder.as_ref(),
        shared.log.as_ref(),
        cfg.limits,
        session_id(),
        peer.to_string(),
    );
    stream.write_all(session.start().replace('\n', "\r\n").as_bytes())?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut idle = Duration::ZERO;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                idle += Duration::from_millis(500);
                if idle >= cfg.idle_timeout {
                    let _ = stream.write_all(b"\r\ntimed out waiting for input: auto-logout\r\n");
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        idle = Duration::ZERO;
        buf.extend_from_slice(&strip_telnet(&chunk[..n]));
        loop {
            let line = match buf.iter().position(|&b| b == b'\n') {
                Some(at) => buf.drain(..=at).collect::<Vec<u8>>(),
                // A line longer than the limit without a newline is taken as it is.
                None if buf.len() > cfg.limits.max_line => std::mem::take(&mut buf),
                None => break,
            };
            let text = String::from_utf8_lossy(&line).into_owned();
            let reply = session.handle(&text);
            let mut out = reply.text.replace('\n', "\r\n");
            if reply.end {
                out.push_str("\r\n");
            }
            stream.write_all(out.as_bytes())?;
            if reply.end {
                return Ok(());
            }
        }
    }
}

/// One interactive session on standard input and output.
pub fn interactive(shared: &Shared, limits: Limits) -> Result<()> {
    let mut session = Session::new(
        &shared.profile,
        shared.responder.as_ref(),
        shared.log.as_ref(),
        limits,
        session_id(),
        "stdin".into(),
    );
    let stdout = std::io::stdout();
    let io_err = |e: std::io::Error| Error::usage("honeypot", e.to_string());
    {
        let mut out = stdout.lock();
        out.write_all(session.start().as_bytes()).map_err(io_err)?;
        out.flush().map_err(io_err)?;
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line).map_err(io_err)? == 0 {
            println!();
            return Ok(());
        }
        let reply = session.handle(&line);
        let mut out = stdout.lock();
        out.write_all(reply.text.as_bytes()).map_err(io_err)?;
        if reply.end {
            out.write_all(b"\n").map_err(io_err)?;
            return Ok(());
        }
        out.flush().map_err(io_err)?;
    }
}

/// Reads a session log; malformed lines are errors naming the line.
pub fn read_log(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// The sessions of a log as transcripts (session id → text), optionally one session only.
pub fn replay(records: &[Record], only: Option<&str>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| only.is_none_or(|s| s == r.session))
    {
        let t = out
            .entry(r.session.clone())
            .or_insert_with(|| format!("=== session {} from {} ===\n", r.session, r.peer));
        if r.path == "banner" {
            t.push_str(&r.answer);
            continue;
        }
        t.push_str(&format!("{}$ {}\n", r.cwd, r.command));
        if !r.answer.is_empty() {
            t.push_str(&r.answer);
            t.push('\n');
        }
        let verdict = r
            .verdict
            .as_deref()
            .map(|v| format!(", {v}"))
            .unwrap_or_default();
        t.push_str(&format!(
            "    [{}{verdict}, {:.0} ms]\n",
            r.path, r.latency_ms
        ));
    }
    out
}
