//! `gpt logs`: log anomaly detection subcommands.

use super::logs_model;
use super::CliResult;

/// The `gpt logs` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LogsCommand {
    /// Train a GPT over log keys on normal sessions (DeepLog's format) and choose the
    /// surprisal threshold on validation sessions.
    Train(Box<logs_model::TrainArgs>),
    /// Flag anomalous sessions (top-g or surprisal), with the keys the model expected.
    Detect(logs_model::DetectArgs),
    /// Precision, recall, F1, ROC-AUC and PR-AUC on normal and anomalous test sessions.
    Eval(logs_model::EvalArgs),
}

/// Runs a `gpt logs` subcommand.
pub fn run(cmd: LogsCommand) -> CliResult {
    match cmd {
        LogsCommand::Train(a) => logs_model::run_train(*a),
        LogsCommand::Detect(a) => logs_model::run_detect(a),
        LogsCommand::Eval(a) => logs_model::run_eval(a),
    }
}
