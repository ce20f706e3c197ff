//! Training: the one loop ([`trainer::run`]) over the [`task::Task`] trait, its checkpoints and
//! optimizer-state files, the loss plot, the rules of a run directory, and GPT pretraining as the
//! first task.

pub mod checkpoint;
pub mod config;
pub mod epoch_order;
pub mod optim_state;
pub mod plot;
pub mod pretrain;
pub mod run_dir;
pub mod task;
pub mod trainer;

pub use config::{OnNan, TrainConfig};
pub use pretrain::train;
pub use task::{FinalGrads, MicroStep, Task};
pub use trainer::{LoopConfig, TrainOptions, TrainOutcome};
