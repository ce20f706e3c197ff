//! `gpt honeypot`: a deceptive shell driven by a language model, with guard rails (the source
//! document's "give GPT a role, e.g. a terminal … but intercept answers that deviate").
//!
//! A hybrid, as LLMHoney: the emulator ([`shell`] over the virtual filesystem [`vfs`], seeded by
//! the [`profile`]) answers the common commands deterministically and consistently; other real
//! commands go to the model ([`responder`]: any OpenAI-compatible chat endpoint, or our own
//! `gpt serve` started in-process) with the persona, the examples and the session so far; every
//! model answer passes the [`guard`] rails before it is shown. [`session`] ties them together
//! with per-session limits and a JSONL log; [`server`] serves sessions over TCP or the terminal
//! and replays logs; [`load`] is its load generator;
//! [`transcripts`] makes training data for a honeypot model and measures one. Nothing is ever executed and no connection is opened but the endpoint's.

pub mod guard;
pub mod load;
pub mod profile;
pub mod responder;
pub mod server;
pub mod session;
pub mod shell;
pub mod transcripts;
pub mod vfs;
