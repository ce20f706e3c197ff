//! What every benchmark shares: the median of timed repetitions, seeded random inputs, this
//! process's peak memory, and running a peer (a PyTorch / transformers script, or this binary
//! in a fresh process) that answers with one JSON line.
//!
//! Peer failures are [`Error::File`] errors naming the program or script that failed, with the
//! last line of its standard error.

use crate::error::{Error, Result};
use crate::rng::Rng;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Median wall time in milliseconds of `reps` calls of `f` (at least one), after one untimed
/// warm-up call.
pub fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The f32 matrix-product peak of this machine now, in GFLOP/s: the median of 10 products of
/// 1024×768 by 768×3072 (GPT-2 small's MLP shape), for MFU and for judging a noisy run.
pub fn matmul_peak_gflops() -> f64 {
    let (m, k, n) = (1024, 768, 3072);
    let mut rng = Rng::new(1);
    let x = randn(m * k, 1.0, &mut rng);
    let w = randn(k * n, 1.0, &mut rng);
    let mut y = vec![0.0; m * n];
    let ms = median_ms(10, || {
        crate::kernels::matmul::matmul(&mut y, &x, &w, m, k, n, false, false, false)
    });
    2.0 * (m * k * n) as f64 / ms / 1e6
}

/// The median of `values` (which must not be empty), sorting them in place.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `n` normal draws with standard deviation `std`.
pub fn randn(n: usize, std: f32, rng: &mut Rng) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 0.0, std);
    v
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The Python interpreter for the reference side: `explicit`, else `$GPT_PYTHON`, else
/// `~/.cache/gpt-refenv/bin/python` when it exists, else `python3`.
pub fn find_python(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("GPT_PYTHON") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cache/gpt-refenv/bin/python");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("python3")
}

/// A reference script of the repository's `bench/` folder (`name` like `kernels_torch.py`).
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join(name)
}

/// The program a [`Command`] runs, as a path (for error messages).
pub fn program(cmd: &Command) -> PathBuf {
    PathBuf::from(cmd.get_program())
}

/// The hint of a failure to start the reference Python.
pub const PYTHON_HINT: &str = "pass --python PATH to a Python with PyTorch";

/// Runs `cmd` to completion and returns its standard output; a failure to start or a non-zero
/// exit is an error naming the program (and `hint`, e.g. which flag picks it).
pub fn run_peer(cmd: &mut Command, hint: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        let hint = if hint.is_empty() {
            String::new()
        } else {
            format!(" ({hint})")
        };
        Error::file(&program(cmd), format!("could not run: {e}{hint}"))
    })?;
    if !out.status.success() {
        return Err(peer_failed(cmd, &out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The error for a peer `cmd` that exited unsuccessfully: its program, arguments and the last
/// line of its standard error.
pub fn peer_failed(cmd: &Command, stderr: &[u8]) -> Error {
    Error::file(
        &program(cmd),
        format!(
            "{:?} failed: {}",
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(stderr).lines().last().unwrap_or("")
        ),
    )
}

/// One optimizer step's JSON line of a training peer, stamped when it arrived.
#[derive(Clone, Debug)]
pub struct StampedStep {
    /// When this process read the line.
    pub at: Instant,
    /// The line.
    pub line: Value,
}

/// Runs `cmd`, a training run that prints one JSON object per optimizer step (and anything
/// else), and stamps each line for which `is_step` holds as it arrives; at least three are
/// needed (two warm-up steps and one timed).
///
/// Stamping here, rather than trusting each side's own clock, times both sides the same way:
/// everything between two step lines (data, forward, backward, clip, optimizer) counts.
pub fn stamp_steps(
    cmd: &mut Command,
    is_step: impl Fn(&Value) -> bool,
) -> Result<Vec<StampedStep>> {
    let name = program(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::file(&name, format!("could not run: {e}")))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::usage(
            "stamp_steps",
            "stdout and stderr are piped above",
        ));
    };
    // Standard error is drained beside standard output, so a chatty peer cannot fill its pipe
    // and stall while we wait for its next step.
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let mut steps = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Error::io(&name, e))?;
        let at = Instant::now();
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if is_step(&v) {
                steps.push(StampedStep { at, line: v });
            }
        }
    }
    let status = child.wait().map_err(|e| Error::io(&name, e))?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(peer_failed(cmd, &stderr));
    }
    if steps.len() < 3 {
        return Err(Error::file(
            &name,
            format!("printed {} step lines; at least 3 are needed", steps.len()),
        ));
    }
    Ok(steps)
}

/// The rate of `amount` per second over steps 3.. of `steps` (the first two warm up): the sum
/// of `amount(step, line)` (`step` 1-based) over those steps, divided by the time from the
/// second line to the last.
pub fn rate_after_warmup(steps: &[StampedStep], amount: impl Fn(usize, &Value) -> f64) -> f64 {
    let (Some(second), Some(last)) = (steps.get(1), steps.last()) else {
        return 0.0;
    };
    let secs = last.at.duration_since(second.at).as_secs_f64();
    let n: f64 = steps
        .iter()
        .enumerate()
        .skip(2)
        .map(|(i, s)| amount(i + 1, &s.line))
        .sum();
    n / secs
}

/// Runs `cmd` (see [`run_peer`] for `hint`) and parses the last line of its standard output
/// as JSON.
pub fn run_json(cmd: &mut Command, hint: &str) -> Result<serde_json::Value> {
    let text = run_peer(cmd, hint)?;
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| Error::file(&program(cmd), format!("bad JSON line `{line}`: {e}")))
}

/// This executable, for benchmarks that measure themselves in a fresh process.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io(Path::new("the running gpt executable"), e))
}

/// Writes a model of `config` with random weights (seed 0) and the bundled GPT-2 tokenizer into
/// `dir`, as one of our checkpoints (which `transformers` also loads): the default model of
/// the benchmarks that need one on a fresh machine, with no download.
pub fn random_gpt2_base(config: crate::model::GptConfig, dir: &Path) -> Result<()> {
    let gpt = crate::model::Gpt::new(config, &mut Rng::new(0))?;
    let tok = crate::tokenizer::AnyTokenizer::Bpe(Box::new(crate::tokenizer::Tokenizer::gpt2()));
    crate::model::checkpoint::save_with_tokenizer(&gpt, dir, None, &tok)
}

/// `value` formatted with `f`, or `-` when absent (a table cell of an optional column).
pub fn cell(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or("-".into(), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_skip_the_two_warm_up_steps() {
        let t0 = Instant::now();
        // Steps at 10 s (a slow first step), 11 s, 12 s, 14 s, with 100, 100, 30 and 50 tokens.
        let steps: Vec<StampedStep> = [(10, 100), (11, 100), (12, 30), (14, 50)]
            .iter()
            .map(|&(s, tokens)| StampedStep {
                at: t0 + Duration::from_secs(s),
                line: serde_json::json!({ "step": 1, "tokens": tokens }),
            })
            .collect();
        // Steps 3 and 4 over the 3 s after step 2.
        assert!((rate_after_warmup(&steps, |_, _| 1.0) - 2.0 / 3.0).abs() < 1e-12);
        let tokens = rate_after_warmup(&steps, |_, v| v["tokens"].as_f64().unwrap());
        assert!((tokens - 80.0 / 3.0).abs() < 1e-12);
        let numbered = rate_after_warmup(&steps, |step, _| step as f64);
        assert!((numbered - 7.0 / 3.0).abs() < 1e-12);
    }
}
