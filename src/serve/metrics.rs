//! The server's counters and latency histograms, shared by the HTTP handlers and the engine, and
//! their rendering in Prometheus' text exposition format (`GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A cumulative histogram of seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone)]
struct HistogramData {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, secs: f64) {
        // A poisoned lock only means another thread panicked mid-update; the counts stay usable.
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (i, &b) in BUCKETS.iter().enumerate() {
            if secs <= b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
    }
}

/// Everything `/metrics` reports, plus the flags the engine and the handlers share.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests waiting for cache rows.
    pub waiting: AtomicUsize,
    /// Requests in the running batch.
    pub running: AtomicUsize,
    /// Requests finished.
    pub finished: AtomicU64,
    /// Requests whose client went away before the end.
    pub cancelled: AtomicU64,
    /// HTTP requests answered with an error, by the handlers.
    pub errors: AtomicU64,
    /// Prompt tokens admitted.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Filled KV-cache positions.
    pub kv_used: AtomicUsize,
    /// KV-cache positions in all.
    pub kv_total: AtomicUsize,
    /// Time to first token (from arrival).
    pub ttft: Histogram,
    /// Time between two tokens of one completion.
    pub itl: Histogram,
    /// Set once shutdown has begun.
    pub stopping: AtomicBool,
}

impl Stats {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let r = Ordering::Relaxed;
        gauge(
            "gpt_requests_running",
            "gauge",
            "Requests in the running batch.",
            self.running.load(r).to_string(),
        );
        gauge(
            "gpt_requests_waiting",
            "gauge",
            "Requests waiting for a batch slot.",
            self.waiting.load(r).to_string(),
        );
        gauge(
            "gpt_requests_finished_total",
            "counter",
            "Requests finished.",
            self.finished.load(r).to_string(),
        );
        gauge(
            "gpt_requests_cancelled_total",
            "counter",
            "Requests abandoned by their client.",
            self.cancelled.load(r).to_string(),
        );
        gauge(
            "gpt_request_errors_total",
            "counter",
            "Requests answered with an error status.",
            self.errors.load(r).to_string(),
        );
        gauge(
            "gpt_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            self.prompt_tokens.load(r).to_string(),
        );
        gauge(
            "gpt_generation_tokens_total",
            "counter",
            "Tokens generated.",
            self.generated_tokens.load(r).to_string(),
        );
        let (used, total) = (self.kv_used.load(r), self.kv_total.load(r));
        gauge(
            "gpt_kv_cache_usage_ratio",
            "gauge",
            "Share of the KV-cache positions in use.",
            format!("{}", used as f64 / total.max(1) as f64),
        );
        self.ttft.render(
            &mut out,
            "gpt_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
        );
        self.itl.render(
            &mut out,
            "gpt_inter_token_latency_seconds",
            "Time between two tokens of one completion.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let s = Stats::default();
        s.ttft.observe(0.02);
        s.ttft.observe(3.0);
        let text = s.render();
        assert!(text.contains("gpt_time_to_first_token_seconds_bucket{le=\"0.01\"} 0"));
        assert!(text.contains("gpt_time_to_first_token_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("gpt_time_to_first_token_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("gpt_time_to_first_token_seconds_count 2"));
        assert!(text.contains("# TYPE gpt_requests_running gauge"));
    }
}
