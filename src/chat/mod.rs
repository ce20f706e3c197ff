//! From a pretrained GPT to a chat model, InstructGPT's recipe with DPO as its last step:
//! supervised fine-tuning on demonstrations ([`sft`]), a reward model on preference pairs
//! ([`reward`]), direct preference optimisation ([`dpo`]), and chatting with the result

//!
//! The pieces: chat templates as `transformers` stores and renders them ([`template`]), the
//! record formats of TRL and Anthropic HH-RLHF ([`records`]), their encoding with the mask of
//! trained tokens ([`encode`], [`pairs`]), the model directories ([`model`]), and the one
//! configuration of the three trainings ([`config`]). Each training is a task of the one loop
//! ([`crate::train::trainer::run`]).

pub mod config;
pub mod dpo;
pub mod encode;
pub mod model;
pub mod pairs;
pub mod records;
pub mod reward;
pub mod session;
pub mod sft;
pub mod suite;
pub mod template;

pub use config::{ChatTrainConfig, DpoLoss, Method};
pub use template::{ChatTemplate, Message, Role};
