//! The engine behind `gpt serve`: one scheduler thread owns the model and its KV cache and runs
//! **continuous batching**. Requests ([`Job`]s) wait in a bounded queue and join the running
//! batch between decode steps as soon as enough cache rows are free; every step runs, in one
//! forward pass, one token for each decoding row and a chunk of at most `prefill_chunk` prompt
//! tokens of the requests still in prefill (so a long prompt does not stall the others). A
//! finished, stopped or abandoned request leaves the batch at once and its rows are reused.
//!
//! A request with `n > 1` completions prefills its prompt once, in its first row, then copies
//! that row's cache to its other rows ([`KvCache::copy_row`]); each completion samples with its
//! own seed (`seed + i`). Results go back over an unbounded channel per request as [`Event`]s;
//! a client that disconnects drops its receiver, which the scheduler sees before the next step
//! ([`tokio::sync::mpsc::UnboundedSender::is_closed`]) and frees the rows.
//!
//! Log-probabilities are those of the model's raw distribution (before penalties, bias and
//! temperature), as OpenAI and vLLM report them; prompt log-probabilities (`echo`) are computed
//! from the prefill's hidden states, the same numbers as `gpt score`.

use super::metrics::Stats;
use crate::error::Result;
use crate::generate::sampler::{Sampler, SamplingConfig};
use crate::generate::stream::TextStream;
use crate::model::inference::{check_logits, InferenceModel};
use crate::nn::kv_cache::{KvCache, Scratch};
use crate::tokenizer::AnyTokenizer;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Settings of the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Cache rows, i.e. completions decoded together at most.
    pub max_batch: usize,
    /// Requests waiting for rows at most (more are refused with 429).
    pub max_queue: usize,
    /// Prompt tokens prefilled per step at most, over all requests in prefill.
    pub prefill_chunk: usize,
}

/// What one request asks of the engine (validated by the HTTP layer).
#[derive(Clone, Debug)]
pub struct JobParams {
    /// New tokens per completion at most (0: only the prompt's log-probabilities).
    pub max_tokens: usize,
    /// Completions of the prompt.
    pub n: usize,
    /// Temperature, top-k, top-p and repetition penalty.
    pub sampling: SamplingConfig,
    /// Seed of completion 0 (completion `i` uses `seed + i`).
    pub seed: u64,
    /// OpenAI's presence penalty: subtracted once from every token already generated.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted once per time a token was generated.
    pub frequency_penalty: f32,
    /// Added to the logits of these ids before sampling.
    pub logit_bias: Vec<(u32, f32)>,
    /// Log-probabilities of generated tokens with this many alternatives (`None`: none).
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt's tokens too (OpenAI's `echo` with `logprobs`).
    pub prompt_logprobs: bool,
    /// Stop strings (not part of the text).
    pub stop: Vec<String>,
    /// The id that ends a completion (end of text or end of turn); `None`: none.
    pub eos: Option<u32>,
}

/// A request handed to the engine.
pub struct Job {
    /// Prompt ids (non-empty, within the context with `max_tokens`).
    pub prompt: Vec<u32>,
    /// What to do.
    pub params: JobParams,
    /// Index of this job's first completion in the response (several prompts in one request
    /// number their completions one after another).
    pub first_choice: usize,
    /// Where results go; dropping the receiver cancels the job.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
}

/// A token with its log-probability and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub id: u32,
    /// `log p(token | before)`; `None` for a prompt's first token.
    pub logprob: Option<f32>,
    /// The most likely tokens there with their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Why a completion ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End of text, end of turn or a stop string.
    Stop,
    /// `max_tokens`, or cut by shutdown.
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What the engine reports about a job.
#[derive(Clone, Debug)]
pub enum Event {
    /// The prompt's tokens with their log-probabilities (only when asked for).
    Prompt {
        /// The job's first completion index.
        first_choice: usize,
        /// One per prompt token.
        tokens: Vec<TokenLogprob>,
    },
    /// A new token of completion `choice`.
    Token {
        /// Completion index in the response.
        choice: usize,
        /// Text that became safe to show with this token (may be empty).
        text: String,
        /// The token and its log-probabilities (only when asked for).
        logprob: Option<TokenLogprob>,
    },
    /// Completion `choice` ended.
    Done {
        /// Completion index.
        choice: usize,
        /// Why.
        finish: Finish,
        /// Text still held at the end (an incomplete character or a possible stop prefix).
        text: String,
        /// Tokens generated.
        tokens: usize,
    },
    /// The job failed (the model produced non-finite logits, or the server is stopping).
    Failed(String),
}

/// A handle to the scheduler thread.
pub struct Engine {
    jobs: Sender<Job>,
    stats: Arc<Stats>,
    cfg: EngineConfig,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why [`Engine::submit`] refused a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `max_queue` requests.
    QueueFull,
    /// The job needs more rows than the engine has.
    TooManyChoices,
    /// The engine is stopping.
    ShuttingDown,
}

impl Engine {
    /// Starts the scheduler thread over `model` (which it owns from now on).
    pub fn start(
        model: InferenceModel,
        tok: Arc<AnyTokenizer>,
        cfg: EngineConfig,
        stats: Arc<Stats>,
    ) -> Engine {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("gpt-serve-engine".into())
            .spawn(move || {
                let run = || Scheduler::new(&model, &tok, cfg, thread_stats).run(rx);
                // The loop runs on a worker of a pool of its own, as many threads as the global
                // one: each kernel's split then runs one part on this thread (see
                // `threads::on_pool` for why), and the loop, which never returns while serving,
                // cannot be picked up by a worker that another engine in the process waits on.
                match rayon::ThreadPoolBuilder::new()
                    .num_threads(rayon::current_num_threads())
                    .thread_name(|i| format!("gpt-serve-worker-{i}"))
                    .build()
                {
                    Ok(pool) => pool.install(run),
                    // Without a pool of its own the loop still runs, from outside the pool.
                    Err(_) => run(),
                }
            });
        Engine {
            jobs: tx,
            stats,
            cfg,
            // Spawning fails only when the OS cannot create a thread; then every submit fails.
            thread: thread.ok(),
        }
    }

    /// Queues `job`, or says why not.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        if self.stats.stopping.load(Ordering::SeqCst) || self.thread.is_none() {
            return Err(Refused::ShuttingDown);
        }
        if job.params.n > self.cfg.max_batch {
            return Err(Refused::TooManyChoices);
        }
        // Reserve a place, then give it back if the queue was already full.
        if self.stats.waiting.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_queue {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::QueueFull);
        }
        self.jobs.send(job).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            Refused::ShuttingDown
        })
    }

    /// The scheduler's settings.
    pub fn config(&self) -> EngineConfig {
        self.cfg
    }

    /// Stops the scheduler: running completions are cut (`finish_reason: "length"`), waiting
    /// requests fail; returns when the thread has ended.
    pub fn shutdown(&mut self) {
        self.stats.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One completion in the batch.
struct Choice<'t> {
    index: usize,
    row: usize,
    sampler: Sampler,
    /// Prompt and generated ids (the history of the repetition penalty).
    seq: Vec<u32>,
    counts: HashMap<u32, u32>,
    stream: TextStream<'t>,
    generated: usize,
    last_token: Option<Instant>,
    done: bool,
}

/// One job in the batch.
struct Active<'t> {
    job: Job,
    choices: Vec<Choice<'t>>,
    /// Prompt tokens fed so far (into the first choice's row).
    prefilled: usize,
    prompt_lp: Vec<TokenLogprob>,
}

impl Active<'_> {
    fn in_prefill(&self) -> bool {
        self.prefilled < self.job.prompt.len()
    }
}

/// What a gathered hidden row is for.
enum Want {
    /// Prompt position predicting prompt token `pos + 1` of job `a`.
    PromptLp { a: usize, pos: usize },
    /// The next token of job `a` (its choice `c`; all choices when `c` is `None`, right after
    /// prefill).
    Next { a: usize, c: Option<usize> },
}

struct Scheduler<'m> {
    model: &'m InferenceModel,
    tok: &'m AnyTokenizer,
    cfg: EngineConfig,
    stats: Arc<Stats>,
    cache: KvCache,
    free: Vec<usize>,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m InferenceModel,
        tok: &'m AnyTokenizer,
        cfg: EngineConfig,
        stats: Arc<Stats>,
    ) -> Self {
        Scheduler {
            model,
            tok,
            cfg,
            stats,
            cache: model.new_cache(cfg.max_batch),
            free: (0..cfg.max_batch).rev().collect(),
        }
    }

    fn run(mut self, rx: Receiver<Job>) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut active: Vec<Active<'m>> = Vec::new();
        let (mut s, mut hidden, mut gathered, mut logits) =
            (Scratch::default(), Vec::new(), Vec::new(), Vec::new());
        loop {
            // Take new jobs: block while there is nothing to do.
            if active.is_empty() && waiting.is_empty() {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(job) => waiting.push_back(job),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while let Ok(job) = rx.try_recv() {
                waiting.push_back(job);
            }
            if self.stats.stopping.load(Ordering::SeqCst) {
                self.stop_all(&mut waiting, &mut active);
                break;
            }
            // Abandoned jobs leave; waiting ones join while rows are free (first come first
            // served: a job with many completions is not overtaken).
            waiting.retain(|j| {
                let keep = !j.events.is_closed();
                if !keep {
                    self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                    self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                keep
            });
            active.retain(|a| {
                let keep = !a.job.events.is_closed();
                if !keep {
                    self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                    self.release(a);
                }
                keep
            });
            while waiting
                .front()
                .is_some_and(|j| j.params.n <= self.free.len())
            {
                let Some(job) = waiting.pop_front() else {
                    break;
                };
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                active.push(self.admit(job));
            }
            self.stats.running.store(active.len(), Ordering::Relaxed);
            if active.is_empty() {
                continue;
            }
            if let Err(e) = self.step(&mut active, &mut s, &mut hidden, &mut gathered, &mut logits)
            {
                // A failed step (non-finite logits) fails every job in it: their caches are
                // no longer trustworthy.
                for a in active.drain(..) {
                    let _ = a.job.events.send(Event::Failed(e.to_string()));
                    self.release(&a);
                }
            }
            active.retain(|a| {
                let keep = a.choices.iter().any(|c| !c.done) || a.in_prefill();
                if !keep {
                    self.stats.finished.fetch_add(1, Ordering::Relaxed);
                    self.release(a);
                }
                keep
            });
            let (used, total) = self.cache.usage();
            self.stats.kv_used.store(used, Ordering::Relaxed);
            self.stats.kv_total.store(total, Ordering::Relaxed);
            self.stats.running.store(active.len(), Ordering::Relaxed);
        }
        self.stats.running.store(0, Ordering::Relaxed);
    }

    /// Cuts running completions and fails waiting jobs (shutdown).
    fn stop_all(&mut self, waiting: &mut VecDeque<Job>, active: &mut Vec<Active<'m>>) {
        for j in waiting.drain(..) {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            let _ = j
                .events
                .send(Event::Failed("the server is shutting down".into()));
        }
        for mut a in active.drain(..) {
            for c in a.choices.iter_mut().filter(|c| !c.done) {
                c.done = true;
                let _ = a.job.events.send(Event::Done {
                    choice: c.index,
                    finish: Finish::Length,
                    text: c.stream.finish(),
                    tokens: c.generated,
                });
            }
            self.release(&a);
        }
    }

    fn admit(&mut self, job: Job) -> Active<'m> {
        let choices = (0..job.params.n)
            .map(|i| {
                // `submit` refuses jobs with more completions than rows, and admission waits
                // until `n` rows are free.
                let row = self.free.pop().unwrap_or(0);
                self.cache.clear_row(row);
                Choice {
                    index: job.first_choice + i,
                    row,
                    sampler: Sampler::new(
                        job.params.sampling,
                        job.params.seed.wrapping_add(i as u64),
                    ),
                    seq: job.prompt.clone(),
                    counts: HashMap::new(),
                    stream: TextStream::new(self.tok, &job.params.stop),
                    generated: 0,
                    last_token: None,
                    done: false,
                }
            })
            .collect();
        self.stats
            .prompt_tokens
            .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
        Active {
            job,
            choices,
            prefilled: 0,
            prompt_lp: Vec::new(),
        }
    }

    fn release(&mut self, a: &Active<'_>) {
        for c in &a.choices {
            self.cache.clear_row(c.row);
            self.free.push(c.row);
        }
    }

    /// One forward pass over the batch, then sampling.
    fn step(
        &mut self,
        active: &mut [Active<'m>],
        s: &mut Scratch,
        hidden: &mut Vec<f32>,
        gathered: &mut Vec<f32>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let (c_width, v) = (self.model.config.n_embd, self.model.config.vocab_size);
        let mut new = vec![0usize; self.cfg.max_batch];
        let mut feed: Vec<Vec<u32>> = vec![Vec::new(); self.cfg.max_batch];
        let mut budget = self.cfg.prefill_chunk.max(1);
        // (job, first prompt position fed) of the jobs prefilling in this step.
        let mut chunk_start: Vec<Option<usize>> = vec![None; active.len()];
        for (ai, a) in active.iter().enumerate() {
            if a.in_prefill() {
                if budget == 0 {
                    continue;
                }
                let take = (a.job.prompt.len() - a.prefilled).min(budget);
                budget -= take;
                let row = a.choices[0].row;
                feed[row].extend_from_slice(&a.job.prompt[a.prefilled..a.prefilled + take]);
                new[row] = take;
                chunk_start[ai] = Some(a.prefilled);
            } else {
                for c in a.choices.iter().filter(|c| !c.done) {
                    // A decoding choice has generated at least one token.
                    feed[c.row].push(*c.seq.last().unwrap_or(&0));
                    new[c.row] = 1;
                }
            }
        }
        let ids: Vec<u32> = feed.concat();
        if ids.is_empty() {
            return Ok(());
        }
        // Where each row's tokens start in the packed hidden states.
        let mut offset = vec![0usize; self.cfg.max_batch];
        let mut at = 0;
        for r in 0..self.cfg.max_batch {
            offset[r] = at;
            at += new[r];
        }
        self.model
            .forward_hidden(&ids, &new, &mut self.cache, s, hidden)?;
        // Gather the hidden rows whose logits are needed.
        let mut wants: Vec<Want> = Vec::new();
        gathered.clear();
        let mut take_row = |packed: usize, w: Want, wants: &mut Vec<Want>| {
            gathered.extend_from_slice(&hidden[packed * c_width..(packed + 1) * c_width]);
            wants.push(w);
        };
        for (ai, a) in active.iter().enumerate() {
            if let Some(start) = chunk_start[ai] {
                let row = a.choices[0].row;
                let n = new[row];
                let end = start + n;
                if a.job.params.prompt_logprobs {
                    for pos in start..end.min(a.job.prompt.len() - 1) {
                        take_row(
                            offset[row] + pos - start,
                            Want::PromptLp { a: ai, pos },
                            &mut wants,
                        );
                    }
                }
                if end == a.job.prompt.len() && a.job.params.max_tokens > 0 {
                    take_row(
                        offset[row] + n - 1,
                        Want::Next { a: ai, c: None },
                        &mut wants,
                    );
                }
            } else if !a.in_prefill() {
                for (ci, c) in a.choices.iter().enumerate().filter(|(_, c)| !c.done) {
                    take_row(offset[c.row], Want::Next { a: ai, c: Some(ci) }, &mut wants);
                }
            }
        }
        if !wants.is_empty() {
            self.model.logits(logits, gathered);
            check_logits(logits, v)?;
        }
        // Prompt bookkeeping first (a job leaves prefill in this step).
        for (ai, a) in active.iter_mut().enumerate() {
            if let Some(start) = chunk_start[ai] {
                let row = a.choices[0].row;
                a.prefilled = start + new[row];
                if a.job.params.prompt_logprobs && start == 0 {
                    a.prompt_lp.push(TokenLogprob {
                        id: a.job.prompt[0],
                        logprob: None,
                        top: Vec::new(),
                    });
                }
            }
        }
        let mut scratch = Vec::with_capacity(v);
        for (w, row_logits) in wants.iter().zip(logits.chunks_exact(v)) {
            match *w {
                Want::PromptLp { a, pos } => {
                    let job = &active[a].job;
                    let id = job.prompt[pos + 1];
                    let top = job.params.logprobs.unwrap_or(0);
                    let lp = token_logprob(row_logits, id, top);
                    active[a].prompt_lp.push(lp);
                }
                Want::Next { a, c } => {
                    let act = &mut active[a];
                    if c.is_none() {
                        self.finish_prefill(act);
                    }
                    let range = match c {
                        Some(ci) => ci..ci + 1,
                        None => 0..act.choices.len(),
                    };
                    for ci in range {
                        self.sample(act, ci, row_logits, &mut scratch);
                    }
                }
            }
        }
        // Jobs whose prompt is done but that generate nothing (max_tokens 0) or whose prompt
        // log-probs are complete.
        for a in active.iter_mut() {
            if !a.in_prefill() && a.job.params.max_tokens == 0 && a.choices.iter().any(|c| !c.done)
            {
                self.finish_prefill(a);
                for c in a.choices.iter_mut() {
                    c.done = true;
                    let _ = a.job.events.send(Event::Done {
                        choice: c.index,
                        finish: Finish::Length,
                        text: String::new(),
                        tokens: 0,
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends the prompt's log-probabilities and copies the prefilled row to the other
    /// completions' rows.
    fn finish_prefill(&mut self, a: &mut Active<'m>) {
        if a.job.params.prompt_logprobs && !a.prompt_lp.is_empty() {
            let _ = a.job.events.send(Event::Prompt {
                first_choice: a.job.first_choice,
                tokens: std::mem::take(&mut a.prompt_lp),
            });
        }
        let lead = a.choices[0].row;
        for c in &a.choices[1..] {
            self.cache.copy_row(lead, c.row);
        }
    }

    /// Samples the next token of choice `ci` of `a` from its raw logits and reports it.
    fn sample(&mut self, a: &mut Active<'m>, ci: usize, raw: &[f32], work: &mut Vec<f32>) {
        let p = &a.job.params;
        let c = &mut a.choices[ci];
        work.clear();
        work.extend_from_slice(raw);
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = work.get_mut(id as usize) {
                *l += bias;
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &n) in &c.counts {
                if let Some(l) = work.get_mut(id as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
        let id = c.sampler.sample(work, &c.seq);
        c.seq.push(id);
        *c.counts.entry(id).or_insert(0) += 1;
        c.generated += 1;
        let now = Instant::now();
        match c.last_token {
            None => self
                .stats
                .ttft
                .observe(now.duration_since(a.job.arrived).as_secs_f64()),
            Some(t) => self.stats.itl.observe(now.duration_since(t).as_secs_f64()),
        }
        c.last_token = Some(now);
        self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
        let logprob = p.logprobs.map(|top| token_logprob(raw, id, top));
        let finish = if p.eos == Some(id) {
            Some(Finish::Stop)
        } else {
            None
        };
        let text = if finish.is_some() {
            String::new()
        } else {
            // `push` fails only for an id the tokenizer has no bytes for (a model vocabulary
            // wider than its tokenizer): that token shows as nothing.
            c.stream.push(id).unwrap_or_default()
        };
        let finish = finish
            .or(c.stream.stopped().then_some(Finish::Stop))
            .or((c.generated >= p.max_tokens).then_some(Finish::Length));
        let _ = a.job.events.send(Event::Token {
            choice: c.index,
            text,
            logprob,
        });
        if let Some(f) = finish {
            c.done = true;
            let _ = a.job.events.send(Event::Done {
                choice: c.index,
                finish: f,
                text: c.stream.finish(),
                tokens: c.generated,
            });
        }
    }
}

/// `log p(id)` under `logits` and the `top` most likely tokens, computed in f64 as `gpt score`
/// does.
pub fn token_logprob(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits
        .iter()
        .map(|&x| f64::from(x - max).exp())
        .sum::<f64>()
        .ln();
    let lp = |x: f32| (f64::from(x - max) - lse) as f32;
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if best.len() < top || x > best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, y)| y >= x);
                best.insert(at, (i as u32, x));
                best.truncate(top);
            }
        }
    }
    TokenLogprob {
        id,
        logprob: Some(lp(logits
            .get(id as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY))),
        top: best.into_iter().map(|(i, x)| (i, lp(x))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_logprob_matches_log_softmax_and_orders_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let lse = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let t = token_logprob(&logits, 2, 3);
        assert!((t.logprob.unwrap() as f64 - (2.0 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = t.top.iter().map(|p| p.0).collect();
        assert_eq!(ids, [1, 3, 2], "ties keep the first index first");
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }
}
