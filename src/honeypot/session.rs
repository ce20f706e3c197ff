//! One attacker session: every input line is answered by the emulator or, for the real commands
//! it does not run, by the model through the guard rails, and always followed by the prompt.
//! Each command is logged (JSONL) with who answered it and the guard's verdict. Limits per
//! session: input line length, commands per minute, commands and time in all, model tokens.

use super::guard::{self, Verdict};
use super::profile::Profile;
use super::responder::{Responder, Turn, HISTORY_TURNS};
use super::shell::{self, Parsed, Path, ShellState};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Per-session limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of one input line at most (longer lines are cut there).
    pub max_line: usize,
    /// Commands per minute at most (more are answered with the prompt only).
    pub per_minute: usize,
    /// Commands per session at most (then the session ends).
    pub max_commands: usize,
    /// Session length at most.
    pub max_duration: Duration,
    /// Model tokens per session at most (then the model is no longer asked).
    pub max_model_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 4096,
            per_minute: 120,
            max_commands: 2_000,
            max_duration: Duration::from_secs(3600),
            max_model_tokens: 100_000,
        }
    }
}

/// One logged command.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Record {
    /// Unix time in seconds.
    pub time: f64,
    /// Session id.
    pub session: String,
    /// Peer address (`stdin` for an interactive session).
    pub peer: String,
    /// Working directory before the command.
    pub cwd: String,
    /// The line as received (cut at the line limit).
    pub command: String,
    /// What was shown (without the prompt).
    pub answer: String,
    /// Who answered: `emulator`, `model`, `fallback` (a model answer refused or failed),
    /// `limit` (a limit was hit), `banner` (session start) or `end`.
    pub path: String,
    /// The guard's verdict on model answers (`passed`, `cleaned`, or the refusal reason).
    pub verdict: Option<String>,
    /// Milliseconds to answer.
    pub latency_ms: f64,
    /// Model tokens spent on this command.
    pub tokens: usize,
}

/// Where records go: a JSONL file shared by all sessions (one line per record, whole lines).
pub struct LogSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl LogSink {
    /// A sink writing to `w`.
    pub fn new(w: Box<dyn Write + Send>) -> LogSink {
        LogSink { out: Mutex::new(w) }
    }

    /// Appends one record; a failing log does not stop the session (said once on stderr).
    pub fn write(&self, r: &Record) {
        let Ok(line) = serde_json::to_string(r) else {
            return;
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            eprintln!("warning: cannot write the session log");
        }
    }
}

/// What the attacker sees after a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// Output then the prompt (or only the output when the session ends).
    pub text: String,
    /// The session is over.
    pub end: bool,
}

/// A session.
pub struct Session<'a> {
    profile: &'a Profile,
    responder: &'a dyn Responder,
    log: Option<&'a LogSink>,
    limits: Limits,
    /// The emulator's state.
    pub state: ShellState,
    turns: Vec<Turn>,
    model_tokens: usize,
    started: Instant,
    recent: VecDeque<Instant>,
    commands: usize,
    /// Session id.
    pub id: String,
    peer: String,
    ended: bool,
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<'a> Session<'a> {
    /// A new session for `peer`.
    pub fn new(
        profile: &'a Profile,
        responder: &'a dyn Responder,
        log: Option<&'a LogSink>,
        limits: Limits,
        id: String,
        peer: String,
    ) -> Session<'a> {
        Session {
            profile,
            responder,
            log,
            limits,
            state: ShellState::new(profile),
            turns: Vec::new(),
            model_tokens: 0,
            started: Instant::now(),
            recent: VecDeque::new(),
            commands: 0,
            id,
            peer,
            ended: false,
        }
    }

    /// The prompt in the current directory.
    pub fn prompt(&self) -> String {
        self.profile.prompt_for(&self.state.cwd)
    }

    /// The banner and the first prompt.
    pub fn start(&mut self) -> String {
        self.record("", &self.profile.banner.clone(), "banner", None, 0.0, 0);
        format!("{}{}", self.profile.banner, self.prompt())
    }

    /// Whether the session is over.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn record(
        &self,
        command: &str,
        answer: &str,
        path: &str,
        verdict: Option<String>,
        ms: f64,
        tokens: usize,
    ) {
        if let Some(log) = self.log {
            log.write(&Record {
                time: unix_time(),
                session: self.id.clone(),
                peer: self.peer.clone(),
                cwd: self.state.cwd.clone(),
                command: command.to_string(),
                answer: answer.to_string(),
                path: path.to_string(),
                verdict,
                latency_ms: ms,
                tokens,
            });
        }
    }

    fn with_prompt(&self, output: &str) -> String {
        if output.is_empty() {
            self.prompt()
        } else {
            format!("{output}\n{}", self.prompt())
        }
    }

    /// Answers one input line.
    pub fn handle(&mut self, line: &str) -> Reply {
        let t0 = Instant::now();
        if self.ended {
            return Reply {
                text: String::new(),
                end: true,
            };
        }
        let mut line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.len() > self.limits.max_line {
            let mut cut = self.limits.max_line;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        // Limits: session length and command count end the session; the rate limit answers
        // with the prompt only.
        if self.started.elapsed() > self.limits.max_duration
            || self.commands >= self.limits.max_commands
        {
            self.ended = true;
            self.record(&line, "", "limit", Some("session limit".into()), 0.0, 0);
            return Reply {
                text: "logout".into(),
                end: true,
            };
        }
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limits.per_minute {
            self.record(&line, "", "limit", Some("rate limit".into()), 0.0, 0);
            return Reply {
                text: self.prompt(),
                end: false,
            };
        }
        self.recent.push_back(now);
        self.commands += 1;
        if line.trim().is_empty() {
            return Reply {
                text: self.prompt(),
                end: false,
            };
        }
        let cwd_before = self.state.cwd.clone();
        self.state.remember(&line);
        let (output, path, verdict, tokens, end) = self.run_line(&line);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if let Some(log) = self.log {
            log.write(&Record {
                time: unix_time(),
                session: self.id.clone(),
                peer: self.peer.clone(),
                cwd: cwd_before,
                command: line.clone(),
                answer: output.clone(),
                path: path.to_string(),
                verdict,
                latency_ms: ms,
                tokens,
            });
        }
        self.turns.push(Turn {
            command: line,
            output: output.clone(),
        });
        // Only the last turns are sent to the model: keep no more (memory stays bounded).
        if self.turns.len() > 2 * HISTORY_TURNS {
            self.turns.drain(..self.turns.len() - HISTORY_TURNS);
        }
        if end {
            self.ended = true;
            return Reply {
                text: output,
                end: true,
            };
        }
        Reply {
            text: self.with_prompt(&output),
            end: false,
        }
    }

    /// Runs a line: (output, path, verdict, model tokens, session ends).
    fn run_line(&mut self, line: &str) -> (String, &'static str, Option<String>, usize, bool) {
        let cmds = match shell::parse(line, &self.state.env) {
            Parsed::Error(e) => return (e, "emulator", None, 0, false),
            Parsed::Complex { first } => {
                // `cat x | grep y` is as real as `ps | grep y`: the model answers both.
                return if shell::is_model_command(&first) || shell::is_emulated(&first) {
                    self.ask_model(line, &first)
                } else {
                    (
                        format!("bash: {first}: command not found"),
                        "emulator",
                        None,
                        0,
                        false,
                    )
                };
            }
            Parsed::Commands(c) => c,
        };
        let mut outputs: Vec<String> = Vec::new();
        let (mut status, mut path, mut verdict, mut tokens) = (0, "emulator", None, 0);
        for cmd in cmds {
            let run = match cmd.join {
                "&&" => status == 0,
                "||" => status != 0,
                _ => true,
            };
            if !run {
                continue;
            }
            // Expand variables when the command runs, as bash does (`export X=1; echo $X`).
            let cmd = match shell::parse(&cmd.source, &self.state.env) {
                Parsed::Commands(mut v) if v.len() == 1 => shell::Simple {
                    join: cmd.join,
                    ..v.remove(0)
                },
                _ => cmd,
            };
            let o = shell::run(&mut self.state, self.profile, &cmd);
            let (text, st) = if o.path == Path::Model {
                let (text, p, v, t, _) = self.ask_model(&cmd.source, &cmd.words[0]);
                path = p;
                verdict = v;
                tokens += t;
                (text, if p == "model" { 0 } else { 127 })
            } else {
                (o.output, o.status)
            };
            status = st;
            if o.exit {
                outputs.push(text);
                return (outputs.join("\n"), path, verdict, tokens, true);
            }
            match &cmd.redirect {
                Some((target, append)) => {
                    let p = super::vfs::normalize(&self.state.cwd, &self.profile.home, target);
                    let now = self.state.now.clone();
                    let body = if text.is_empty() {
                        String::new()
                    } else {
                        format!("{text}\n")
                    };
                    if target == "/dev/null" {
                        continue;
                    }
                    if let Err(e) = self.state.fs.write(&p, &body, *append, &now) {
                        status = 1;
                        outputs.push(format!("bash: {target}: {}", e.message()));
                    }
                }
                None => {
                    if !text.is_empty() {
                        outputs.push(text);
                    }
                }
            }
        }
        (outputs.join("\n"), path, verdict, tokens, false)
    }

    /// Asks the model about `command` (whose first word is `name`), through the guard rails.
    fn ask_model(
        &mut self,
        command: &str,
        name: &str,
    ) -> (String, &'static str, Option<String>, usize, bool) {
        let fallback = self.profile.fallback_for(name);
        if self.model_tokens >= self.limits.max_model_tokens {
            return (
                fallback,
                "fallback",
                Some("model token limit".into()),
                0,
                false,
            );
        }
        match self
            .responder
            .answer(self.profile, &self.state.cwd, &self.turns, command)
        {
            Err(e) => (
                fallback,
                "fallback",
                Some(format!("model error: {e}")),
                0,
                false,
            ),
            Ok(a) => {
                self.model_tokens += a.tokens;
                let (text, v) = guard::check(&a.text, &self.prompt(), &self.profile.persona);
                let verdict = match &v {
                    Verdict::Passed => "passed".to_string(),
                    Verdict::Cleaned => "cleaned".to_string(),
                    Verdict::Refused(why) => format!("refused: {why}"),
                };
                match text {
                    Some(t) => (t, "model", Some(verdict), a.tokens, false),
                    None => (fallback, "fallback", Some(verdict), a.tokens, false),
                }
            }
        }
    }
}
