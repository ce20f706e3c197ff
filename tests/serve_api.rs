//! `gpt serve` over loopback: every endpoint, the completion fields, streaming against
//! non-streaming, seeds, `echo` + `logprobs` against `gpt score`'s log-probabilities, stop
//! strings, usage, every error status with OpenAI's body shape, the API key, a client that
//! disconnects, a full queue and graceful shutdown. The client is a few lines of HTTP/1.1 over
//! `TcpStream`, so malformed requests can be sent as bytes.

use gpt::chat::template::ChatTemplate;
use gpt::generate::score::token_logprobs;
use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
use gpt::io::save_tokenizer;
use gpt::model::weight_dtype::WeightDtype;
use gpt::model::{checkpoint, Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::mlp::Activation;
use gpt::rng::Rng;
use gpt::serve::engine::EngineConfig;
use gpt::serve::http::HttpConfig;
use gpt::serve::{ServeOptions, Server};
use gpt::tokenizer::{AnyTokenizer, Tokenizer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const EOT: u32 = 50256;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-serve-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gpt2_tok() -> AnyTokenizer {
    AnyTokenizer::Bpe(Box::new(Tokenizer::gpt2_shared().clone()))
}

/// A random GPT-2-vocabulary model in `dir`, with the GPT-2 tokenizer and, if asked, a chat
/// template that uses only `<|endoftext|>`.
fn model_dir(name: &str, n_ctx: usize, n_embd: usize, template: bool) -> PathBuf {
    let dir = tmp(name);
    let cfg = GptConfig {
        vocab_size: 50257,
        n_ctx,
        n_layer: 2,
        n_head: 4,
        n_embd,
        dropout: 0.0,
        bias: true,
        norm: NormPlacement::Pre,
        positions: Positions::Learned,
        activation: Activation::Gelu,
        ln_eps: 1e-5,
    };
    let model = Gpt::new(cfg, &mut Rng::new(7)).unwrap();
    checkpoint::save(&model, &dir, None).unwrap();
    save_tokenizer(&gpt2_tok(), &dir).unwrap();
    if template {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
            "<|endoftext|>",
            "<|endoftext|>",
            None,
            Path::new("test template"),
        )
        .unwrap();
        t.save(&dir, &[("<|endoftext|>".into(), EOT)], n_ctx)
            .unwrap();
    }
    dir
}

fn options(dir: &Path) -> ServeOptions {
    ServeOptions {
        model: dir.to_path_buf(),
        dtype: WeightDtype::F32,
        addr: "127.0.0.1:0".parse().unwrap(),
        http: HttpConfig {
            model_name: "tiny".into(),
            api_key: None,
            max_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(2),
            max_tokens_limit: 100_000,
            cors: vec!["http://example.test".into()],
        },
        engine: EngineConfig {
            max_batch: 4,
            max_queue: 8,
            prefill_chunk: 5,
        },
    }
}

/// A response: status, headers (lower-cased names) and the de-chunked body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body, `[DONE]` included.
    fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(s))
}

fn read_response(r: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = get("content-length") {
        let mut b = vec![0; n.parse().unwrap()];
        r.read_exact(&mut b).unwrap();
        body = b;
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Resp {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_raw(addr, req.as_bytes())
}

fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    request(addr, "POST", path, None, Some(&body))
}

/// Concatenated text of a stream's chunks per choice, the finish reasons and the usage.
fn stream_text(r: &Resp, chat: bool) -> (Vec<String>, Vec<Option<String>>, Option<Value>) {
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{}", r.body);
    let (mut texts, mut finish, mut usage) = (Vec::<String>::new(), Vec::new(), None);
    let mut id = None;
    for e in &ev[..ev.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        let this_id = v["id"].as_str().unwrap().to_string();
        assert!(
            id.get_or_insert(this_id.clone()) == &this_id,
            "one id per stream"
        );
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
            assert!(v["choices"].as_array().unwrap().is_empty());
        }
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
                finish.resize(i + 1, None);
            }
            assert!(
                finish[i].is_none(),
                "no chunk after a choice's finish_reason"
            );
            let piece = if chat {
                &c["delta"]["content"]
            } else {
                &c["text"]
            };
            texts[i].push_str(piece.as_str().unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish[i] = Some(f.to_string());
            }
        }
    }
    (texts, finish, usage)
}

fn load(dir: &Path) -> InferenceModel {
    InferenceModel::load(dir).unwrap()
}

fn greedy_ids(model: &InferenceModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let cfg = GenerateConfig {
        max_new_tokens: n,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: Some(EOT),
    };
    generate(model, &[prompt.to_vec()], &cfg, |_, _| Ok(false))
        .unwrap()
        .0[0]
        .ids
        .clone()
}

fn decode(ids: &[u32]) -> String {
    let tok = gpt2_tok();
    let bytes: Vec<u8> = ids
        .iter()
        .filter(|&&i| i != EOT)
        .flat_map(|&i| tok.token_bytes(i).unwrap())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn completions_match_generate_score_and_their_own_stream() {
    let dir = model_dir("completions", 64, 32, false);
    let server = Server::start(options(&dir)).unwrap();
    let addr = server.addr;
    let model = load(&dir);
    let tok = gpt2_tok();
    let prompt = "The quick brown fox jumps over";
    let ids = tok.encode(prompt, true).unwrap();

    // Greedy = `gpt generate`'s greedy tokens, usage counts them.
    let want = greedy_ids(&model, &ids, 12);
    let r = post(
        addr,
        "/v1/completions",
        json!({"model": "tiny", "prompt": prompt, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], decode(&want));
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    assert_eq!(v["usage"]["completion_tokens"], want.len());
    assert_eq!(v["usage"]["total_tokens"], ids.len() + want.len());
    let finish = if want.last() == Some(&EOT) {
        "stop"
    } else {
        "length"
    };
    assert_eq!(v["choices"][0]["finish_reason"], finish);

    // Token-id prompts, several at once, give the same.
    let r = post(
        addr,
        "/v1/completions",
        json!({"prompt": [ids.clone(), ids.clone()], "max_tokens": 12, "temperature": 0}),
    );
    let v = r.json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    for c in v["choices"].as_array().unwrap() {
        assert_eq!(c["text"], decode(&want));
    }

    // Streaming = non-streaming at temperature 0, with the usage chunk last.
    let r = post(
        addr,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 12, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let (texts, finishes, usage) = stream_text(&r, false);
    assert_eq!(texts, [decode(&want)]);
    assert_eq!(finishes, [Some(finish.to_string())]);
    assert_eq!(usage.unwrap()["completion_tokens"], want.len());

    // echo + logprobs: the prompt's log-probabilities are `gpt score`'s (first one null).
    let scored = token_logprobs(&model, &ids, 64).unwrap();
    let r = post(
        addr,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 0, "echo": true, "logprobs": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(v["choices"][0]["text"], prompt);
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    for (j, want) in scored.iter().enumerate().skip(1) {
        let got = lp["token_logprobs"][j].as_f64().unwrap();
        assert!(
            (got - f64::from(want.unwrap())).abs() < 1e-4,
            "token {j}: {got} vs {want:?}"
        );
        assert_eq!(lp["top_logprobs"][j].as_object().unwrap().len(), 2);
    }
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), prompt);
    // Prefilled in chunks of 5 with other rows around, the numbers stay the same; with one
    // generated token, its logprob is the greedy token's and the best alternative.
    let r = post(
        addr,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0}),
    );
    let lp = r.json()["choices"][0]["logprobs"].clone();
    let n = ids.len();
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), n + 1);
    let last = lp["token_logprobs"][n].as_f64().unwrap();
    let best = lp["top_logprobs"][n]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(
        (last - best).abs() < 1e-6,
        "greedy token is the top alternative"
    );

    // Stop strings end the text before them, with finish_reason "stop".
    let full = decode(&want);
    if let Some(cut) = full.char_indices().nth(6).map(|(i, _)| i) {
        let stop = &full[cut..(cut + 3).min(full.len())];
        let r = post(
            addr,
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": [stop]}),
        );
        let v = r.json();
        let text = v["choices"][0]["text"].as_str().unwrap();
        assert_eq!(text, &full[..full.find(stop).unwrap()]);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    // A seed reproduces a sampled completion; choice i of n uses seed + i.
    let body = |seed: u64, n: usize| json!({"prompt": prompt, "max_tokens": 10, "temperature": 1.0, "seed": seed, "n": n});
    let a = post(addr, "/v1/completions", body(5, 2)).json();
    let b = post(addr, "/v1/completions", body(5, 2)).json();
    assert_eq!(a["choices"], b["choices"]);
    let c = post(addr, "/v1/completions", body(6, 1)).json();
    assert_eq!(
        a["choices"][1]["text"], c["choices"][0]["text"],
        "n shares the prefill; choice 1 = seed + 1"
    );
    let texts: Vec<String> = (0..6)
        .map(|s| {
            post(addr, "/v1/completions", body(100 + s, 1)).json()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        texts.iter().any(|t| t != &texts[0]),
        "different seeds sample differently"
    );

    // logit_bias forces a token; penalties are accepted.
    let r = post(
        addr,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 3, "temperature": 0,
        "logit_bias": {"9999": 100}, "presence_penalty": 1.5, "frequency_penalty": 0.5}),
    );
    assert_eq!(r.json()["choices"][0]["text"], decode(&[9999, 9999, 9999]));
}

#[test]
fn chat_follows_the_template_streams_and_reports_logprobs() {
    let dir = model_dir("chat", 64, 32, true);
    let server = Server::start(options(&dir)).unwrap();
    let addr = server.addr;
    let model = load(&dir);
    let rendered = "system: be brief\nuser: hi there\nassistant:";
    let ids = gpt2_tok().encode(rendered, true).unwrap();
    let want = greedy_ids(&model, &ids, 20);
    let msgs =
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]);
    let r = post(
        addr,
        "/v1/chat/completions",
        json!({"messages": msgs, "max_completion_tokens": 20, "temperature": 0,
        "logprobs": true, "top_logprobs": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], decode(&want));
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), want.len());
    for (e, &id) in content.iter().zip(&want) {
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, gpt2_tok().token_bytes(id).unwrap());
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(
            top[0]["logprob"], e["logprob"],
            "greedy picks the most likely token"
        );
    }
    // The stream says the role first, then the same text, then the finish reason.
    let r = post(
        addr,
        "/v1/chat/completions",
        json!({"messages": msgs, "max_tokens": 20, "temperature": 0, "stream": true}),
    );
    let ev = r.events();
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (texts, finish, usage) = stream_text(&r, true);
    assert_eq!(texts, [decode(&want)]);
    assert!(finish[0].is_some());
    assert!(usage.is_none());
    // Without max tokens, the answer may use the rest of the context.
    let r = post(
        addr,
        "/v1/chat/completions",
        json!({"messages": msgs, "temperature": 0, "logit_bias": {"50256": -100}}),
    );
    assert_eq!(r.json()["usage"]["completion_tokens"], 64 - ids.len());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
}

#[test]
fn every_error_has_its_status_and_openai_shape() {
    let dir = model_dir("errors", 64, 16, false);
    let mut opts = options(&dir);
    opts.http.api_key = Some("sekret".into());
    let server = Server::start(opts).unwrap();
    let addr = server.addr;
    let shape = |r: &Resp, status: u16| {
        assert_eq!(r.status, status, "{}", r.body);
        let e = &r.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert!(e["type"].is_string(), "{e}");
        assert!(
            e.as_object().unwrap().contains_key("param")
                && e.as_object().unwrap().contains_key("code")
        );
        e.clone()
    };
    // The key: public health and page, everything else needs it.
    assert_eq!(
        request(addr, "GET", "/health", None, None).json()["status"],
        "ok"
    );
    let page = request(addr, "GET", "/", None, None);
    assert!(
        page.body.contains("/v1/chat/completions")
            && page.header("content-type").unwrap().contains("text/html")
    );
    let e = shape(&request(addr, "GET", "/v1/models", None, None), 401);
    assert_eq!(e["code"], "invalid_api_key");
    shape(
        &request(addr, "GET", "/v1/models", Some("wrong"), None),
        401,
    );
    let k = Some("sekret");
    let models = request(addr, "GET", "/v1/models", k, None).json();
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["max_model_len"], 64);
    assert_eq!(request(addr, "GET", "/v1/models/tiny", k, None).status, 200);
    let metrics = request(addr, "GET", "/metrics", k, None);
    assert!(
        metrics.body.contains("gpt_requests_running")
            && metrics
                .body
                .contains("gpt_time_to_first_token_seconds_bucket")
    );
    let call = |body: &str| {
        let req = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer sekret\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        send_raw(addr, req.as_bytes())
    };
    // 400s name the field.
    for (body, param, code) in [
        ("{bad json", Value::Null, Value::Null),
        (
            r#"{"prompt": "hi", "max_tokens": "many"}"#,
            json!("max_tokens"),
            Value::Null,
        ),
        (
            r#"{"prompt": "hi", "temperature": -1}"#,
            json!("temperature"),
            Value::Null,
        ),
        (r#"{"prompt": "hi", "n": 5}"#, json!("n"), Value::Null),
        (r#"{"prompt": [50257]}"#, json!("prompt"), Value::Null),
        (
            r#"{"prompt": "hi", "max_tokens": 64}"#,
            json!("prompt"),
            json!("context_length_exceeded"),
        ),
        (
            r#"{"prompt": "hi", "max_tokens": 0}"#,
            json!("max_tokens"),
            Value::Null,
        ),
    ] {
        let e = shape(&call(body), 400);
        assert_eq!((&e["param"], &e["code"]), (&param, &code), "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    let e = shape(&call(r#"{"prompt": "hi", "model": "gpt-4"}"#), 404);
    assert_eq!(e["code"], "model_not_found");
    shape(&request(addr, "GET", "/nowhere", k, None), 404);
    let e = shape(&request(addr, "GET", "/v1/completions", k, None), 405);
    assert_eq!(e["code"], "method_not_allowed");
    // 413 for a body over the limit, declared or not.
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(70_000));
    shape(&call(&big), 413);
    let chunked = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer sekret\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    shape(&send_raw(addr, chunked.as_bytes()), 413);
    // 408 for a body that stops arriving (the test server waits 2 s).
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sekret\r\nContent-Length: 100\r\n\r\n{\"pro").unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 408, "{}", r.body);
    // CORS for the allowed origin only.
    let pre = send_raw(addr, b"OPTIONS /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: http://example.test\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://example.test")
    );
    let other = send_raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: http://evil.test\r\n\r\n",
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
    // Still serving correctly after all that.
    let r = call(r#"{"prompt": "hi", "max_tokens": 2, "temperature": 0}"#);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Reads an SSE response's head and first event, leaving the connection open.
fn open_stream(addr: SocketAddr, body: &Value) -> BufReader<TcpStream> {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    // Headers, then the first chunk's size line and data line.
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.contains("data: ") {
            return r;
        }
    }
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let m = request(addr, "GET", "/metrics", None, None).body;
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in {m}"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn disconnects_free_slots_a_full_queue_gets_429_and_shutdown_cuts_streams() {
    // A model slow enough (width 256, context 1024) that a long completion is still running
    // while the test looks.
    let dir = model_dir("queue", 1024, 256, false);
    let mut opts = options(&dir);
    opts.engine = EngineConfig {
        max_batch: 1,
        max_queue: 1,
        prefill_chunk: 64,
    };
    let mut server = Server::start(opts).unwrap();
    let addr = server.addr;
    let long = json!({"prompt": "hello", "max_tokens": 1000, "temperature": 0, "stream": true,
                      "logit_bias": {"50256": -100}});
    // A holds the only row; B waits in the queue; C finds it full.
    let a = open_stream(addr, &long);
    assert_eq!(metric(addr, "gpt_requests_running"), 1.0);
    let b = std::thread::spawn(move || {
        post(
            addr,
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": 3, "temperature": 0}),
        )
    });
    wait_until("B to wait", || metric(addr, "gpt_requests_waiting") == 1.0);
    let c = post(
        addr,
        "/v1/completions",
        json!({"prompt": "hi", "max_tokens": 3}),
    );
    assert_eq!(c.status, 429, "{}", c.body);
    assert_eq!(c.json()["error"]["code"], "queue_full");
    // A's client goes away: its row is freed and B runs.
    drop(a);
    let b = b.join().unwrap();
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(metric(addr, "gpt_requests_cancelled_total"), 1.0);
    let generated = metric(addr, "gpt_generation_tokens_total");
    assert!(
        generated < 1000.0,
        "A stopped early: {generated} tokens in all"
    );
    // Shutdown cuts a running stream with finish_reason "length" and ends it properly.
    let mut d = open_stream(addr, &long);
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = d.read_to_string(&mut rest);
        rest
    });
    server.stop().unwrap();
    let rest = reader.join().unwrap();
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(rest.contains("data: [DONE]"), "{rest}");
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}
