//! A bounded load generator for the honeypot's TCP service (`gpt honeypot load`): `sessions`
//! concurrent clients on loopback for `secs` seconds, each running a script that writes files of
//! its own and checks that it never sees another session's files or state (`ls`, `cat`, `pwd`
//! after `cd`), and model commands. Reports commands/s, latency percentiles, isolation failures
//! and errors, and the server's memory (VmRSS sampled from `/proc/PID/status`) if its PID is
//! known.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a load run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadReport {
    /// Concurrent sessions.
    pub sessions: usize,
    /// Seconds of load.
    pub secs: f64,
    /// Commands answered.
    pub commands: usize,
    /// Commands per second over all sessions.
    pub commands_per_sec: f64,
    /// Median latency (ms) from sending a line to reading the prompt back.
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// Answers that showed another session's state or lost this session's.
    pub isolation_failures: usize,
    /// Connections that failed or closed early, and reads that timed out.
    pub errors: usize,
    /// Server memory at the start and at the end, and its peak over the run (KiB), if known.
    pub rss_kib: Option<(u64, u64, u64)>,
}

/// VmRSS and VmHWM of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Reads until `s` ends with `prompt`; `None` on close or timeout.
fn read_prompt(c: &mut TcpStream, prompt: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = c.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(prompt.as_bytes()) {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        if out.len() > 1 << 20 {
            return None;
        }
    }
}

struct Tally {
    latencies: Vec<f64>,
    isolation: usize,
    errors: usize,
}

/// One client: connects and runs its script until `stop`.
fn client(addr: SocketAddr, i: usize, prompt_end: &str, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let fail = |t: &Mutex<Tally>| t.lock().unwrap_or_else(|e| e.into_inner()).errors += 1;
    let Ok(mut c) = TcpStream::connect(addr) else {
        return fail(tally);
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    if read_prompt(&mut c, prompt_end).is_none() {
        return fail(tally);
    }
    let mut k = 0usize;
    let mut lat = Vec::new();
    let mut isolation = 0;
    let send = |c: &mut TcpStream, line: &str, lat: &mut Vec<f64>| -> Option<String> {
        let t = Instant::now();
        c.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let out = read_prompt(c, prompt_end)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        Some(out)
    };
    let mine = format!("s{i}");
    let script_ok = (|| -> Option<()> {
        send(&mut c, &format!("mkdir {mine} && cd {mine}"), &mut lat)?;
        while !stop.load(Ordering::Relaxed) {
            let file = format!("f{k}");
            send(&mut c, &format!("echo {mine}-{k} > {file}"), &mut lat)?;
            let out = send(&mut c, &format!("cat {file}"), &mut lat)?;
            if !out.starts_with(&format!("{mine}-{k}\r\n")) {
                isolation += 1;
            }
            let out = send(&mut c, "ls ~", &mut lat)?;
            // Only this session's directory beside the profile's file.
            let names: Vec<&str> = out
                .lines()
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if names != ["notes.txt", mine.as_str()] {
                isolation += 1;
            }
            let out = send(&mut c, "pwd", &mut lat)?;
            if !out.starts_with(&format!("/home/deploy/{mine}\r\n")) {
                isolation += 1;
            }
            send(
                &mut c,
                if k.is_multiple_of(2) {
                    "free -m"
                } else {
                    "ps aux | head -5"
                },
                &mut lat,
            )?;
            if k >= 50 {
                // Keep the session's filesystem bounded: start over in a fresh directory.
                send(
                    &mut c,
                    &format!("cd ~ && rm -rf {mine} && mkdir {mine} && cd {mine}"),
                    &mut lat,
                )?;
                k = 0;
            }
            k += 1;
        }
        c.write_all(b"exit\r\n").ok()
    })();
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    t.latencies.extend(lat);
    t.isolation += isolation;
    if script_ok.is_none() {
        t.errors += 1;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Runs `sessions` clients against `addr` for `secs` seconds; `prompt_end` is how every reply
/// ends (`$ `); `pid` is the server's process for memory readings.
pub fn run(
    addr: SocketAddr,
    sessions: usize,
    secs: f64,
    prompt_end: &str,
    pid: Option<u32>,
) -> LoadReport {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally {
        latencies: Vec::new(),
        isolation: 0,
        errors: 0,
    }));
    let rss0 = pid.and_then(rss_kib);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..sessions)
        .map(|i| {
            let (stop, tally, p) = (stop.clone(), tally.clone(), prompt_end.to_string());
            std::thread::spawn(move || client(addr, i, &p, &stop, &tally))
        })
        .collect();
    let mut peak = rss0.map_or(0, |r| r.0);
    while t0.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(250));
        if let Some((rss, _)) = pid.and_then(rss_kib) {
            peak = peak.max(rss);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let rss1 = pid.and_then(rss_kib);
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let mut lat = t.latencies.clone();
    lat.sort_by(f64::total_cmp);
    LoadReport {
        sessions,
        secs: elapsed,
        commands: lat.len(),
        commands_per_sec: lat.len() as f64 / elapsed.max(1e-9),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        isolation_failures: t.isolation,
        errors: t.errors,
        rss_kib: match (rss0, rss1) {
            (Some(a), Some(b)) => Some((a.0, b.0, peak.max(b.0))),
            _ => None,
        },
    }
}
