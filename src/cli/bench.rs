//! `gpt bench ...`: benchmarks (the full kernel bench is enabled once all kernels land).

use super::CliResult;
use clap::Subcommand;

/// Benchmark subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Every kernel forward+backward at GPT-2-small shapes.
    Kernels,
}

/// Runs a benchmark subcommand.
pub fn run(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Kernels => Ok(()),
    }
}
