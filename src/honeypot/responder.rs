//! Who answers the commands the emulator does not know: a language model behind an
//! OpenAI-compatible chat endpoint (any server, or our own `gpt serve` started in-process for
//! `--model DIR`), asked with the persona as the system message, the profile's few-shot
//! examples, and the session so far as turns ("multi-turn dialogue extends the input").
//!
//! The HTTP client is a few lines of HTTP/1.1 over `TcpStream` (plain `http://` only), so the
//! honeypot opens no connection but the one to its endpoint.

use super::profile::Profile;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One exchange of the session: a command and what was shown.
#[derive(Clone, Debug)]
pub struct Turn {
    /// The command line.
    pub command: String,
    /// The output shown (without the prompt).
    pub output: String,
}

/// A model's answer with the tokens it cost.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// The text (unchecked; the guard rails come after).
    pub text: String,
    /// Tokens the endpoint reported (prompt + completion), 0 if it did not say.
    pub tokens: usize,
}

/// Answers a command given the profile and the session so far.
pub trait Responder: Send + Sync {
    /// The model's raw answer to `command` after `history` (most recent last).
    fn answer(
        &self,
        profile: &Profile,
        cwd: &str,
        history: &[Turn],
        command: &str,
    ) -> Result<Answer>;
}

/// Turns of history sent to the model at most (older ones are dropped).
pub const HISTORY_TURNS: usize = 12;

/// The chat messages for a command: persona (with the session's cwd), examples, history, the
/// command.
pub fn messages(profile: &Profile, cwd: &str, history: &[Turn], command: &str) -> Vec<Value> {
    let system = format!(
        "{}\nHost: {}. User: {} (uid {}). Current directory: {cwd}.",
        profile.persona.trim(),
        profile.hostname,
        profile.user,
        profile.uid
    );
    let mut m = vec![json!({"role": "system", "content": system})];
    for e in &profile.examples {
        m.push(json!({"role": "user", "content": e.command}));
        m.push(json!({"role": "assistant", "content": e.output}));
    }
    let start = history.len().saturating_sub(HISTORY_TURNS);
    for t in &history[start..] {
        m.push(json!({"role": "user", "content": t.command}));
        m.push(json!({"role": "assistant", "content": t.output}));
    }
    m.push(json!({"role": "user", "content": command}));
    m
}

/// An OpenAI-compatible chat endpoint (`http://host:port/v1`).
pub struct Endpoint {
    addr: SocketAddr,
    host: String,
    path: String,
    api_key: Option<String>,
    model: Option<String>,
    /// New tokens per answer at most.
    pub max_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Earlier turns of the session sent with each command at most.
    pub history_turns: usize,
    timeout: Duration,
}

impl Endpoint {
    /// An endpoint at `url` (`http://host:port/v1`); `model` is sent as the `model` field.
    pub fn new(url: &str, api_key: Option<String>, model: Option<String>) -> Result<Endpoint> {
        let bad = |why: &str| Error::field("--endpoint", format!("{url:?}: {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("only http:// endpoints are supported (put a TLS proxy in front for https)")
        })?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve {hostport}: {e}")))?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(Endpoint {
            addr,
            host: hostport.to_string(),
            path: format!("{path}/chat/completions"),
            api_key,
            model,
            max_tokens: 256,
            temperature: 0.2,
            history_turns: HISTORY_TURNS,
            timeout: Duration::from_secs(60),
        })
    }

    fn post(&self, body: &Value) -> Result<Value> {
        let err = |why: String| Error::usage("honeypot endpoint", format!("{}: {why}", self.host));
        let body = body.to_string();
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        s.set_read_timeout(Some(self.timeout)).ok();
        s.set_write_timeout(Some(self.timeout)).ok();
        let auth = self
            .api_key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        )
        .map_err(|e| err(format!("cannot send: {e}")))?;
        let (status, text) =
            read_http(&mut BufReader::new(s)).map_err(|e| err(format!("bad response: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| err(format!("the response is not JSON ({e})")))?;
        if status != 200 {
            let msg = v["error"]["message"].as_str().unwrap_or("no message");
            return Err(err(format!("HTTP {status}: {msg}")));
        }
        Ok(v)
    }
}

impl Responder for Endpoint {
    fn answer(
        &self,
        profile: &Profile,
        cwd: &str,
        history: &[Turn],
        command: &str,
    ) -> Result<Answer> {
        // A session longer than the model's context: fewer earlier turns until it fits.
        let mut turns = self.history_turns.min(history.len());
        let v = loop {
            let mut body = json!({
                "messages": messages(profile, cwd, &history[history.len() - turns..], command),
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "stop": [format!("\n{}@", profile.user)],
            });
            if let Some(m) = &self.model {
                body["model"] = json!(m);
            }
            match self.post(&body) {
                Err(e) if turns > 0 && e.to_string().contains("context length") => turns -= 1,
                r => break r?,
            }
        };
        Ok(Answer {
            text: v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            tokens: v["usage"]["total_tokens"].as_u64().unwrap_or(0) as usize,
        })
    }
}

/// No model: answers a command with the output of the profile's example of the same command, or
/// nothing. For load tests and demos without a model.
pub struct Canned;

impl Responder for Canned {
    fn answer(
        &self,
        profile: &Profile,
        _cwd: &str,
        _history: &[Turn],
        command: &str,
    ) -> Result<Answer> {
        let text = profile
            .examples
            .iter()
            .find(|e| e.command.trim() == command.trim())
            .map(|e| e.output.clone())
            .unwrap_or_default();
        Ok(Answer { text, tokens: 0 })
    }
}

/// Reads an HTTP/1.1 response: status and body (Content-Length, chunked, or to the end), at
/// most 4 MiB.
fn read_http(r: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    const LIMIT: usize = 4 << 20;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                length = v.trim().parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk size"))?;
            if body.len() + n > LIMIT {
                return Err(bad("body over 4 MiB"));
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        if n > LIMIT {
            return Err(bad("body over 4 MiB"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(LIMIT as u64).read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_hold_persona_examples_history_and_command() {
        let p = Profile::default_profile();
        let history: Vec<Turn> = (0..20)
            .map(|i| Turn {
                command: format!("c{i}"),
                output: format!("o{i}"),
            })
            .collect();
        let m = messages(&p, "/srv", &history, "netstat -tlnp");
        assert_eq!(m[0]["role"], "system");
        assert!(m[0]["content"]
            .as_str()
            .unwrap()
            .contains("Current directory: /srv"));
        assert_eq!(m.len(), 1 + 2 * p.examples.len() + 2 * HISTORY_TURNS + 1);
        assert_eq!(m[m.len() - 1]["content"], "netstat -tlnp");
        assert_eq!(m[m.len() - 3]["content"], "c19");
        assert!(Endpoint::new("https://x/v1", None, None).is_err());
        let e = Endpoint::new("http://127.0.0.1:9/v1", None, None).unwrap();
        assert_eq!(e.path, "/v1/chat/completions");
        let mut r = std::io::Cursor::new(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\":\r\n2\r\n1}\r\n0\r\n\r\n".to_vec());
        assert_eq!(read_http(&mut r).unwrap(), (200, "{\"a\":1}".into()));
    }
}
