//! The HTTP side of `gpt serve` (axum on tokio): routes, the API key, CORS, bounded bodies, and
//! the completion endpoints in OpenAI's JSON and Server-Sent-Events shapes. The handlers parse
//! and validate, hand [`Job`]s to the [`Engine`] and turn its [`Event`]s into responses; they
//! never run the model, so the async runtime is never blocked by it.

use super::api_error::ApiError;
use super::engine::{Engine, Event, Finish, Job, JobParams, Refused, TokenLogprob};
use super::metrics::Stats;
use super::prompt::{encode_text, ids_text, token_bytes, token_text, ChatFormat};
use super::request::{parse_chat, parse_completion, Common, Prompt};
use crate::generate::sampler::SamplingConfig;
use crate::tokenizer::AnyTokenizer;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// The chat page served at `/`.
const CHAT_PAGE: &str = include_str!("chat_page.html");

/// Limits and identity of the HTTP side.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The model id clients name (`/v1/models`, the `model` field).
    pub model_name: String,
    /// Required `Authorization: Bearer` key (`None`: open).
    pub api_key: Option<String>,
    /// Request bodies over this many bytes get 413.
    pub max_body_bytes: usize,
    /// A body must arrive within this time (slow clients get 408).
    pub body_timeout: Duration,
    /// `max_tokens` at most per request (also bounded by the context).
    pub max_tokens_limit: usize,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors: Vec<String>,
}

/// What exists once the model is loaded.
pub struct Loaded {
    /// The scheduler.
    pub engine: Engine,
    /// The tokenizer.
    pub tok: Arc<AnyTokenizer>,
    /// How conversations become prompts.
    pub chat: ChatFormat,
    /// The model's context.
    pub n_ctx: usize,
    /// The model's vocabulary size.
    pub vocab: usize,
}

/// The state every handler shares.
pub struct AppState {
    /// Limits and identity.
    pub cfg: HttpConfig,
    /// Counters and histograms.
    pub stats: Arc<Stats>,
    /// Set when loading has finished (`/health` is 503 before).
    pub loaded: OnceLock<Loaded>,
    /// Unix time the server started (`created` of the model).
    pub created: u64,
}

type App = Arc<AppState>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The router with every route and the API-key and CORS layers.
pub fn router(app: App) -> Router {
    let protected = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model_by_id))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_key,
        ));
    Router::new()
        .route("/", get(|| async { axum::response::Html(CHAT_PAGE) }))
        .route("/health", get(health))
        .merge(protected)
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError {
                status: 405,
                message: format!("{} is not allowed on {}", req.method(), req.uri().path()),
                kind: "invalid_request_error",
                param: None,
                code: Some("method_not_allowed"),
            }
            .into_response()
        })
        .fallback(|req: Request| async move {
            if req.method() == Method::OPTIONS {
                return StatusCode::NO_CONTENT.into_response();
            }
            ApiError::no_route(req.uri().path()).into_response()
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), cors))
        .with_state(app)
}

async fn require_key(State(app): State<App>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.cfg.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            app.stats.errors.fetch_add(1, Ordering::Relaxed);
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn cors(State(app): State<App>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight = req.method() == Method::OPTIONS;
    let allowed = origin.as_ref().and_then(|o| {
        let o = o.to_str().ok()?;
        app.cfg
            .cors
            .iter()
            .any(|a| a == "*" || a == o)
            .then(|| HeaderValue::from_str(o).ok())
            .flatten()
    });
    let mut resp = if preflight && allowed.is_some() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let Some(o) = allowed {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn health(State(app): State<App>) -> Response {
    if app.stats.stopping.load(Ordering::SeqCst) {
        return ApiError::unavailable("The server is shutting down").into_response();
    }
    match app.loaded.get() {
        Some(_) => axum::Json(json!({"status": "ok"})).into_response(),
        None => ApiError::unavailable("The model is loading").into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.stats.render(),
    )
        .into_response()
}

fn model_card(app: &AppState) -> Value {
    // `max_model_len` as vLLM reports it: the chat page sizes its requests with it.
    let ctx = app.loaded.get().map(|m| m.n_ctx);
    json!({"id": app.cfg.model_name, "object": "model", "created": app.created, "owned_by": "gpt",
           "max_model_len": ctx})
}

async fn models(State(app): State<App>) -> Response {
    axum::Json(json!({"object": "list", "data": [model_card(&app)]})).into_response()
}

async fn model_by_id(
    State(app): State<App>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if id != app.cfg.model_name {
        return ApiError::model_not_found(&id, &app.cfg.model_name).into_response();
    }
    axum::Json(model_card(&app)).into_response()
}

/// Reads the body within the size and time limits.
async fn read_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.cfg.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match tokio::time::timeout(app.cfg.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::body_timeout(app.cfg.body_timeout.as_secs())),
        Ok(Err(e)) => {
            if format!("{e:?}").contains("LengthLimit") {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::bad_json(format!(
                    "The body could not be read: {e}"
                )))
            }
        }
        Ok(Ok(b)) => Ok(b),
    }
}

/// The loaded model, or 503.
fn loaded(app: &AppState) -> Result<&Loaded, ApiError> {
    if app.stats.stopping.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("The server is shutting down"));
    }
    app.loaded
        .get()
        .ok_or_else(|| ApiError::unavailable("The model is loading; retry when /health says ok"))
}

/// Which endpoint a response is for, with its own fields.
#[derive(Clone, Copy)]
enum Kind {
    Completion { echo: bool, logprobs: Option<usize> },
    Chat { logprobs: bool },
}

/// A validated request, ready for the engine.
struct Plan {
    kind: Kind,
    prompts: Vec<Vec<u32>>,
    /// Texts of the prompts (for `echo`).
    prompt_texts: Vec<String>,
    params: JobParams,
    stream: bool,
    include_usage: bool,
}

fn check_model(app: &AppState, c: &Common) -> Result<(), ApiError> {
    match &c.model {
        Some(m) if m != &app.cfg.model_name => {
            Err(ApiError::model_not_found(m, &app.cfg.model_name))
        }
        _ => Ok(()),
    }
}

/// The engine parameters of the shared fields; `max_tokens` checked against the limit and the
/// context of the longest prompt.
fn job_params(
    app: &AppState,
    m: &Loaded,
    c: &Common,
    prompts: &[Vec<u32>],
    default_max: Option<usize>,
    param: &str,
) -> Result<JobParams, ApiError> {
    if c.n > m.engine.config().max_batch {
        return Err(ApiError::invalid(
            "n",
            format!(
                "`n` is {}; this server decodes at most {} completions at once (--max-batch)",
                c.n,
                m.engine.config().max_batch
            ),
        ));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = m.n_ctx.saturating_sub(longest);
    let max_tokens = c
        .max_tokens
        .or(default_max)
        .unwrap_or(room)
        .min(if c.max_tokens.is_none() {
            room
        } else {
            usize::MAX
        });
    if max_tokens > app.cfg.max_tokens_limit {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "`max_tokens` is {max_tokens}; this server allows at most {} (--max-tokens-limit)",
                app.cfg.max_tokens_limit
            ),
        ));
    }
    if longest + max_tokens > m.n_ctx || longest == 0 {
        return Err(ApiError::context_length(
            param,
            format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens ({longest} in the prompt, {max_tokens} for the completion). Please reduce the prompt or the completion length.",
                m.n_ctx,
                longest + max_tokens
            ),
        ));
    }
    let seed = c.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    Ok(JobParams {
        max_tokens,
        n: c.n,
        sampling: SamplingConfig {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            repetition_penalty: c.repetition_penalty,
        },
        seed,
        presence_penalty: c.presence_penalty,
        frequency_penalty: c.frequency_penalty,
        logit_bias: c.logit_bias.clone(),
        logprobs: None,
        prompt_logprobs: false,
        stop: c.stop.clone(),
        eos: None,
    })
}

fn completion_plan(app: &AppState, m: &Loaded, body: &[u8]) -> Result<Plan, ApiError> {
    let r = parse_completion(body, m.vocab)?;
    check_model(app, &r.common)?;
    let (prompts, prompt_texts) = match r.prompt {
        Prompt::Texts(texts) => {
            let ids = texts
                .iter()
                .map(|t| encode_text(&m.tok, t))
                .collect::<Result<Vec<_>, _>>()?;
            (ids, texts)
        }
        Prompt::Ids(ids) => {
            let texts = ids.iter().map(|p| ids_text(&m.tok, p)).collect();
            (ids, texts)
        }
    };
    if prompts.len() * r.common.n > m.engine.config().max_batch.max(1) * 64 {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "{} prompts × n = {} completions is too many for one request",
                prompts.len(),
                r.common.n
            ),
        ));
    }
    let mut params = job_params(app, m, &r.common, &prompts, Some(16), "prompt")?;
    if params.max_tokens == 0 && !r.echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "`max_tokens` 0 generates nothing; it is allowed only with `echo` (for the prompt's log-probabilities)",
        ));
    }
    params.logprobs = r.logprobs;
    params.prompt_logprobs = r.echo && r.logprobs.is_some();
    params.eos = crate::generate::text::eos_id(&m.tok);
    Ok(Plan {
        kind: Kind::Completion {
            echo: r.echo,
            logprobs: r.logprobs,
        },
        prompts,
        prompt_texts,
        params,
        stream: r.common.stream,
        include_usage: r.common.include_usage,
    })
}

fn chat_plan(app: &AppState, m: &Loaded, body: &[u8]) -> Result<Plan, ApiError> {
    let r = parse_chat(body, m.vocab)?;
    check_model(app, &r.common)?;
    let p = m.chat.prompt(&m.tok, &r.messages)?;
    let prompts = vec![p.ids];
    let mut params = job_params(app, m, &r.common, &prompts, None, "messages")?;
    params.logprobs = r.logprobs.then_some(r.top_logprobs);
    params.eos = p.eos;
    params.stop.extend(p.stops);
    Ok(Plan {
        kind: Kind::Chat {
            logprobs: r.logprobs,
        },
        prompt_texts: vec![String::new()],
        prompts,
        params,
        stream: r.common.stream,
        include_usage: r.common.include_usage,
    })
}

async fn completions(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    respond(&app, headers, body, completion_plan).await
}

async fn chat_completions(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    respond(&app, headers, body, chat_plan).await
}

async fn respond(
    app: &App,
    headers: HeaderMap,
    body: Body,
    plan: fn(&AppState, &Loaded, &[u8]) -> Result<Plan, ApiError>,
) -> Response {
    let result = async {
        let bytes = read_body(app, &headers, body).await?;
        let m = loaded(app)?;
        let plan = plan(app, m, &bytes)?;
        let rx = submit(app, m, &plan)?;
        Ok::<_, ApiError>((plan, rx))
    }
    .await;
    let (plan, rx) = match result {
        Ok(x) => x,
        Err(e) => {
            app.stats.errors.fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    };
    // `loaded` succeeded above, so the tokenizer is there.
    let Some(m) = app.loaded.get() else {
        return ApiError::unavailable("The model is loading").into_response();
    };
    let out = Output::new(app, m.tok.clone(), plan);
    if out.plan.stream {
        stream_response(out, rx)
    } else {
        match collect(out, rx).await {
            Ok(v) => axum::Json(v).into_response(),
            Err(e) => {
                app.stats.errors.fetch_add(1, Ordering::Relaxed);
                e.into_response()
            }
        }
    }
}

fn submit(app: &AppState, m: &Loaded, plan: &Plan) -> Result<UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let arrived = Instant::now();
    for (i, p) in plan.prompts.iter().enumerate() {
        let job = Job {
            prompt: p.clone(),
            params: plan.params.clone(),
            first_choice: i * plan.params.n,
            events: tx.clone(),
            arrived,
        };
        m.engine.submit(job).map_err(|r| match r {
            Refused::QueueFull => ApiError::queue_full(m.engine.config().max_queue),
            Refused::TooManyChoices => ApiError::invalid("n", "`n` is over --max-batch"),
            Refused::ShuttingDown => ApiError::unavailable("The server is shutting down"),
        })?;
    }
    let _ = app;
    Ok(rx)
}

/// One completion's accumulated result.
#[derive(Default, Clone)]
struct ChoiceState {
    text: String,
    finish: Option<Finish>,
    tokens: usize,
    logprobs: Vec<TokenLogprob>,
    /// Prompt tokens with log-probabilities (echo).
    prompt_lp: Vec<TokenLogprob>,
    /// Bytes of text already sent (offsets of streamed logprobs).
    offset: usize,
}

/// Turns engine events into response JSON.
struct Output {
    plan: Plan,
    tok: Arc<AnyTokenizer>,
    id: String,
    created: u64,
    model: String,
    choices: Vec<ChoiceState>,
}

impl Output {
    fn new(app: &AppState, tok: Arc<AnyTokenizer>, plan: Plan) -> Output {
        let n_choices = plan.prompts.len() * plan.params.n;
        let prefix = match plan.kind {
            Kind::Completion { .. } => "cmpl",
            Kind::Chat { .. } => "chatcmpl",
        };
        let created = unix_now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Output {
            tok,
            id: format!(
                "{prefix}-{nanos:x}{:x}",
                app.stats.finished.load(Ordering::Relaxed)
            ),
            created,
            model: app.cfg.model_name.clone(),
            choices: vec![ChoiceState::default(); n_choices],
            plan,
        }
    }

    fn n(&self) -> usize {
        self.plan.params.n
    }

    fn prompt_of(&self, choice: usize) -> usize {
        choice / self.n().max(1)
    }

    fn usage(&self) -> Value {
        let prompt: usize = self.plan.prompts.iter().map(Vec::len).sum();
        let completion: usize = self.choices.iter().map(|c| c.tokens).sum();
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    /// Completions' legacy logprobs object for `tokens`, text offsets from `offset`.
    fn completion_logprobs(&self, tokens: &[TokenLogprob], mut offset: usize) -> Value {
        let (mut toks, mut lps, mut tops, mut offs) = (vec![], vec![], vec![], vec![]);
        for t in tokens {
            let s = token_text(&self.tok, t.id);
            offs.push(offset);
            offset += s.len();
            toks.push(json!(s));
            lps.push(json!(t.logprob));
            if t.logprob.is_none() {
                tops.push(Value::Null);
            } else {
                let mut m = serde_json::Map::new();
                for &(id, lp) in &t.top {
                    m.entry(token_text(&self.tok, id)).or_insert(json!(lp));
                }
                tops.push(Value::Object(m));
            }
        }
        json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
    }

    /// Chat's logprobs content entries.
    fn chat_logprobs(&self, tokens: &[TokenLogprob]) -> Value {
        let entry = |id: u32, lp: f32| json!({"token": token_text(&self.tok, id), "logprob": lp, "bytes": token_bytes(&self.tok, id)});
        Value::Array(
            tokens
                .iter()
                .map(|t| {
                    let mut e = entry(t.id, t.logprob.unwrap_or(0.0));
                    e["top_logprobs"] =
                        Value::Array(t.top.iter().map(|&(id, lp)| entry(id, lp)).collect());
                    e
                })
                .collect(),
        )
    }

    fn echo_text(&self, choice: usize) -> Option<&str> {
        match self.plan.kind {
            Kind::Completion { echo: true, .. } => {
                Some(&self.plan.prompt_texts[self.prompt_of(choice)])
            }
            _ => None,
        }
    }

    /// The non-streaming response.
    fn response(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let finish = c.finish.map(Finish::as_str);
                match self.plan.kind {
                    Kind::Completion { logprobs, .. } => {
                        let mut text = self.echo_text(i).unwrap_or("").to_string();
                        text.push_str(&c.text);
                        let lp = match logprobs {
                            None => Value::Null,
                            Some(_) => {
                                let all: Vec<TokenLogprob> =
                                    c.prompt_lp.iter().chain(&c.logprobs).cloned().collect();
                                self.completion_logprobs(&all, 0)
                            }
                        };
                        json!({"index": i, "text": text, "logprobs": lp, "finish_reason": finish})
                    }
                    Kind::Chat { logprobs } => {
                        let lp = if logprobs {
                            json!({"content": self.chat_logprobs(&c.logprobs), "refusal": null})
                        } else {
                            Value::Null
                        };
                        json!({"index": i, "message": {"role": "assistant", "content": c.text, "refusal": null},
                               "logprobs": lp, "finish_reason": finish})
                    }
                }
            })
            .collect();
        let object = match self.plan.kind {
            Kind::Completion { .. } => "text_completion",
            Kind::Chat { .. } => "chat.completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
               "system_fingerprint": null, "choices": choices, "usage": self.usage()})
    }

    /// One streamed chunk around `choices`.
    fn chunk(&self, choices: Vec<Value>) -> String {
        let object = match self.plan.kind {
            Kind::Completion { .. } => "text_completion",
            Kind::Chat { .. } => "chat.completion.chunk",
        };
        let mut v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
                           "system_fingerprint": null, "choices": choices});
        if self.plan.include_usage {
            v["usage"] = Value::Null;
        }
        format!("data: {v}\n\n")
    }

    /// A streamed choice delta: text, logprob tokens (with text offsets), finish.
    fn delta(
        &mut self,
        i: usize,
        text: &str,
        tokens: &[TokenLogprob],
        finish: Option<Finish>,
    ) -> Value {
        let finish = finish.map(Finish::as_str);
        let offset = self.choices[i].offset;
        self.choices[i].offset += text.len();
        match self.plan.kind {
            Kind::Completion { logprobs, .. } => {
                let lp = match logprobs {
                    Some(_) if !tokens.is_empty() => self.completion_logprobs(tokens, offset),
                    _ => Value::Null,
                };
                json!({"index": i, "text": text, "logprobs": lp, "finish_reason": finish})
            }
            Kind::Chat { logprobs } => {
                let lp = if logprobs && !tokens.is_empty() {
                    json!({"content": self.chat_logprobs(tokens), "refusal": null})
                } else {
                    Value::Null
                };
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish})
            }
        }
    }

    /// Chunks that start the stream: the assistant role (chat) or the echoed prompt (when its
    /// log-probabilities are not awaited).
    fn opening(&mut self) -> String {
        let mut out = String::new();
        for i in 0..self.choices.len() {
            match self.plan.kind {
                Kind::Chat { .. } => {
                    let c = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                    out.push_str(&self.chunk(vec![c]));
                }
                Kind::Completion { echo: true, .. } if !self.plan.params.prompt_logprobs => {
                    let text = self.echo_text(i).unwrap_or("").to_string();
                    let c = self.delta(i, &text, &[], None);
                    out.push_str(&self.chunk(vec![c]));
                }
                Kind::Completion { .. } => {}
            }
        }
        out
    }

    /// Applies one event; returns the SSE text it produces (for streaming) or an error.
    fn apply(&mut self, ev: Event, streaming: bool) -> Result<String, ApiError> {
        let mut out = String::new();
        match ev {
            Event::Prompt {
                first_choice,
                tokens,
            } => {
                for i in first_choice..first_choice + self.n() {
                    if streaming {
                        let text = self.echo_text(i).unwrap_or("").to_string();
                        let c = self.delta(i, &text, &tokens, None);
                        out.push_str(&self.chunk(vec![c]));
                    } else {
                        self.choices[i].prompt_lp = tokens.clone();
                    }
                }
            }
            Event::Token {
                choice,
                text,
                logprob,
            } => {
                let lp: Vec<TokenLogprob> = logprob.into_iter().collect();
                if streaming && (!text.is_empty() || !lp.is_empty()) {
                    let c = self.delta(choice, &text, &lp, None);
                    out.push_str(&self.chunk(vec![c]));
                }
                let c = &mut self.choices[choice];
                c.text.push_str(&text);
                c.logprobs.extend(lp);
            }
            Event::Done {
                choice,
                finish,
                text,
                tokens,
            } => {
                if streaming {
                    let c = self.delta(choice, &text, &[], Some(finish));
                    out.push_str(&self.chunk(vec![c]));
                }
                let c = &mut self.choices[choice];
                c.text.push_str(&text);
                c.finish = Some(finish);
                c.tokens = tokens;
            }
            Event::Failed(why) => return Err(ApiError::internal(why)),
        }
        Ok(out)
    }

    fn all_done(&self) -> bool {
        self.choices.iter().all(|c| c.finish.is_some())
    }

    /// The chunks after the last choice ended.
    fn closing(&self) -> String {
        let mut out = String::new();
        if self.plan.include_usage {
            let object = match self.plan.kind {
                Kind::Completion { .. } => "text_completion",
                Kind::Chat { .. } => "chat.completion.chunk",
            };
            let v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
                           "system_fingerprint": null, "choices": [], "usage": self.usage()});
            out.push_str(&format!("data: {v}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

async fn collect(mut out: Output, mut rx: UnboundedReceiver<Event>) -> Result<Value, ApiError> {
    while !out.all_done() {
        match rx.recv().await {
            Some(ev) => {
                out.apply(ev, false)?;
            }
            None => {
                return Err(ApiError::internal(
                    "The engine stopped before the completion ended",
                ))
            }
        }
    }
    Ok(out.response())
}

fn stream_response(mut out: Output, rx: UnboundedReceiver<Event>) -> Response {
    let first = out.opening();
    let state = (out, rx, Some(first), false);
    let stream =
        futures_util::stream::unfold(state, |(mut out, mut rx, pending, ended)| async move {
            if let Some(p) = pending {
                if !p.is_empty() {
                    return Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(p)),
                        (out, rx, None, ended),
                    ));
                }
            }
            if ended {
                return None;
            }
            loop {
                if out.all_done() {
                    let closing = out.closing();
                    return Some((Ok(Bytes::from(closing)), (out, rx, None, true)));
                }
                let text = match rx.recv().await {
                    Some(ev) => match out.apply(ev, true) {
                        Ok(t) => t,
                        Err(e) => {
                            // Mid-stream errors go out as an error event, then the stream ends.
                            let t = format!("data: {}\n\ndata: [DONE]\n\n", e.body());
                            return Some((Ok(Bytes::from(t)), (out, rx, None, true)));
                        }
                    },
                    None => {
                        let e =
                            ApiError::internal("The engine stopped before the completion ended");
                        let t = format!("data: {}\n\ndata: [DONE]\n\n", e.body());
                        return Some((Ok(Bytes::from(t)), (out, rx, None, true)));
                    }
                };
                if !text.is_empty() {
                    return Some((Ok(Bytes::from(text)), (out, rx, None, false)));
                }
            }
        });
    // The charset as OpenAI sends it: SSE is UTF-8 by definition, but tools that decode the
    // body by its header (Chromium's DevTools protocol, hence Playwright) read a `text/*`
    // type without one as Latin-1.
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the stream").into_response())
}
