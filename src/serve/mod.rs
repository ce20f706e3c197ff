//! `gpt serve`: an OpenAI-compatible HTTP server over one model, with continuous batching.
//!
//! - [`engine`]: the scheduler thread that owns the model and the KV cache and batches requests
//!   continuously (chunked prefill, per-request sampling, `n` sharing one prefill).
//! - [`http`]: routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/health`,
//!   `/metrics`, the chat page at `/`), the API key, CORS and bounded bodies; JSON and SSE.
//! - [`request`]: parsing and validating request bodies, errors naming the field.
//! - [`prompt`]: prompts from texts, ids and conversations (chat template or plain).
//! - [`api_error`]: OpenAI's error shape.
//! - [`metrics`]: counters and histograms, Prometheus text.
//!
//! [`Server::start`] runs it on a thread of its own (tests, benchmarks); [`run`] runs it until
//! SIGINT/SIGTERM (the command). The listener answers at once: `/health` is 503 until the model
//! has loaded.

pub mod api_error;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod prompt;
pub mod request;

use crate::error::{Error, Result};
use crate::model::checkpoint::NonFinite;
use crate::model::inference::load_with_tokenizer_as;
use crate::model::weight_dtype::WeightDtype;
use engine::{Engine, EngineConfig};
use http::{AppState, HttpConfig, Loaded};
use metrics::Stats;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// Everything `gpt serve` is started with.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The model directory.
    pub model: PathBuf,
    /// Weights' precision for inference.
    pub dtype: WeightDtype,
    /// Address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// The HTTP side's limits.
    pub http: HttpConfig,
    /// The scheduler's limits.
    pub engine: EngineConfig,
}

/// Loads the model of `opts` and starts the engine.
fn load(opts: &ServeOptions, stats: Arc<Stats>) -> Result<Loaded> {
    // An f32 model comes with its matrices packed in panels (`InferenceModel::pack_all_panels`),
    // which decoding steps read.
    let (model, tok, dir) = load_with_tokenizer_as(&opts.model, opts.dtype, NonFinite::Refuse)?;
    let chat = prompt::ChatFormat::load(&dir, &tok)?;
    let (n_ctx, vocab) = (model.config.n_ctx, model.config.vocab_size);
    let tok = Arc::new(tok);
    let engine = Engine::start(model, tok.clone(), opts.engine, stats);
    Ok(Loaded {
        engine,
        tok,
        chat,
        n_ctx,
        vocab,
    })
}

/// Serves on `listener` until `shutdown` resolves, then stops the engine (running completions
/// are cut with `finish_reason: "length"`) and waits for open responses to end. `on_loaded`
/// hears once whether the model loaded.
async fn serve(
    opts: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_loaded: impl FnOnce(&Result<()>) + Send + 'static,
) -> Result<()> {
    let stats = Arc::new(Stats::default());
    let app = Arc::new(AppState {
        cfg: opts.http.clone(),
        stats: stats.clone(),
        loaded: OnceLock::new(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    // A request head gets the time a body gets (30 s).
    let head_timeout = opts.http.body_timeout;
    let loader_app = app.clone();
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<Error>();
    tokio::task::spawn_blocking(move || {
        let r = load(&opts, stats).map(|l| {
            // Set once, here only.
            let _ = loader_app.loaded.set(l);
        });
        on_loaded(&r);
        if let Err(e) = r {
            let _ = fail_tx.send(e);
        }
    });
    let stop_app = app.clone();
    let router = http::router(app.clone());
    let stopped = async move {
        tokio::select! {
            _ = shutdown => {}
            // A model that fails to load stops the server (the error is returned below).
            Ok(_) = fail_rx => {}
        }
        stop_app.stats.stopping.store(true, Ordering::SeqCst);
    };
    serve_http(listener, router, stopped, head_timeout).await;
    app.stats.stopping.store(true, Ordering::SeqCst);
    Ok(())
}

/// Serves HTTP/1.1 connections from `listener` until `stopped` resolves, then waits for the
/// open ones to finish (idle ones are closed at once).
///
/// Why not `axum::serve`: a client must send its request head within `head_timeout`, on a new
/// connection and between keep-alive requests, or be disconnected. hyper has that timeout
/// (`header_read_timeout`) but it needs a timer, which `axum::serve` does not give it; without
/// it a client that connects and sends nothing, or sends its head a byte at a time, holds its
/// connection (and a file descriptor) forever (`tools/serve_fuzz.py`, slow heads).
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stopped: impl Future<Output = ()>,
    head_timeout: std::time::Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = hyper_util::service::TowerToHyperService::new(router.clone());
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        // A connection's errors (a reset, a malformed head) end only it.
                        let _ = conn.await;
                    });
                }
                // Out of file descriptors and the like: the condition may pass (axum::serve
                // waits the same way).
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            },
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs the server on the current thread until SIGINT or SIGTERM; `on_ready(addr)` is called once
/// the socket listens, `on_loaded` once the model has loaded (or failed to).
pub fn run(
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
    on_loaded: impl FnOnce(&Result<()>) + Send + 'static,
) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = bind(opts.addr).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::usage("serve", e.to_string()))?;
        on_ready(addr);
        let (load_tx, load_rx) = tokio::sync::oneshot::channel::<std::result::Result<(), String>>();
        let served = serve(opts, listener, shutdown_signal(), move |r| {
            on_loaded(r);
            let _ = load_tx.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        });
        let out = served.await;
        if let Ok(Err(e)) = load_rx.await {
            return Err(Error::usage(
                "serve",
                format!("the model did not load: {e}"),
            ));
        }
        out
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::usage("serve", format!("cannot start the async runtime: {e}")))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::usage(
            "serve",
            format!("cannot listen on {addr}: {e} (is another server on that port? try --port)"),
        )
    })
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A server running on a thread of its own (tests and benchmarks); stopped on drop.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Starts a server and waits until its model has loaded.
    pub fn start(opts: ServeOptions) -> Result<Server> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let rt = runtime()?;
            rt.block_on(async move {
                let listener = match bind(opts.addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(Error::usage("serve", e.to_string())));
                        return Err(e);
                    }
                };
                let addr = listener
                    .local_addr()
                    .map_err(|e| Error::usage("serve", e.to_string()))?;
                let _ = addr_tx.send(Ok(addr));
                serve(
                    opts,
                    listener,
                    async move {
                        let _ = stop_rx.await;
                    },
                    move |r| {
                        let _ = loaded_tx.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    },
                )
                .await
            })
        });
        let addr = addr_rx
            .recv()
            .map_err(|_| Error::usage("serve", "the server thread ended before listening"))??;
        match loaded_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::usage(
                    "serve",
                    format!("the model did not load: {e}"),
                ))
            }
            Err(_) => {
                return Err(Error::usage(
                    "serve",
                    "the server thread ended while loading",
                ))
            }
        }
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the server (as SIGTERM does) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::usage("serve", "the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
