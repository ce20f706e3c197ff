//! `gpt bench finetune`: fine-tuning examples/s of `gpt finetune` (the command users run, in a
//! fresh process of this binary) beside the PyTorch reference `bench/finetune_torch.py`
//! (`transformers`' GPT2Model, fused AdamW) on the same base model, task file, batch size, λ
//! and threads, in one run.
//!
//! Each side runs `steps + 2` optimizer steps of the paper's recipe and prints one JSON line
//! per step; this process stamps each line as it arrives, so both sides are timed the same way
//! (data order, padding, forward, both losses, backward, clip and the AdamW step all inside).
//! The rate of a run is the examples of steps 3.. over their time (the first two warm up).
//! The two sides alternate `runs` times and the medians are compared, beside the f32 matmul
//! peak measured in the same run.

use super::harness::{
    find_python, matmul_peak_gflops, median, random_gpt2_base, rate_after_warmup, script,
    stamp_steps, PYTHON_HINT,
};
use crate::error::{Error, Result};
use crate::nn::precision::Precision;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of `gpt bench finetune`.
#[derive(Clone, Debug)]
pub struct FinetuneBench {
    /// Base model directory (ours or a Hugging Face GPT-2 directory, with its tokenizer);
    /// `None`: a random GPT-2 124M with the GPT-2 tokenizer, made in a temporary directory.
    pub model: Option<PathBuf>,
    /// classify, entail, similar or choice.
    pub task: String,
    /// Training records (JSONL) of that task.
    pub train: PathBuf,
    /// Timed optimizer steps per run (after two warm-up steps).
    pub steps: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// λ of the auxiliary LM loss.
    pub aux_lm: f32,
    /// Precision of our matrix products; with bf16, PyTorch runs under `torch.autocast` beside
    /// its eager f32.
    pub precision: Precision,
    /// Alternating runs per side (medians reported).
    pub runs: usize,
    /// Also run the PyTorch reference.
    pub vs_torch: bool,
    /// Python interpreter with PyTorch, transformers and tokenizers.
    pub python: Option<PathBuf>,
}

/// Runs `cmd` (which prints one JSON object per optimizer step, then anything else) and
/// returns examples/s over steps 3..; `examples(step, line)` gives a step's examples.
fn timed_steps(cmd: &mut Command, examples: impl Fn(usize, &Value) -> usize) -> Result<f64> {
    let steps = stamp_steps(cmd, |v| v.get("step").is_some() && v.get("loss").is_some())?;
    Ok(rate_after_warmup(&steps, |i, v| examples(i, v) as f64))
}

/// Examples in step `step` (1-based) of an epoch-ordered run over `n` examples in batches of
/// `bs` (the last batch of an epoch may be smaller).
fn examples_of_step(step: usize, n: usize, bs: usize) -> usize {
    let per_epoch = n.div_ceil(bs).max(1);
    let i = (step - 1) % per_epoch;
    bs.min(n - i * bs)
}

/// Records (non-empty lines) in `path`.
fn count_records(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// Runs `gpt bench finetune`, printing its report to standard output.
pub fn run(opts: &FinetuneBench) -> Result<()> {
    for (flag, v) in [
        ("--steps", opts.steps),
        ("--batch-size", opts.batch_size),
        ("--runs", opts.runs),
    ] {
        if v == 0 {
            return Err(Error::field(flag, "must be at least 1"));
        }
    }
    let threads = crate::threads::current();
    let n_train = count_records(&opts.train)?;
    let tmp_base = std::env::temp_dir().join(format!("gpt-bench-ft-base-{}", std::process::id()));
    let model = match &opts.model {
        Some(m) => m.clone(),
        None => {
            eprintln!(
                "creating a random GPT-2 124M base (GPT-2 tokenizer) in {} ...",
                tmp_base.display()
            );
            random_gpt2_base(crate::model::GptConfig::gpt2(), &tmp_base)?;
            tmp_base.clone()
        }
    };
    let steps = opts.steps + 2;
    let peak = matmul_peak_gflops();
    println!(
        "gpt bench finetune: {threads} threads, task {}, {} ({n_train} records), base {}, batch {}, λ {}, {} timed steps after 2 warm-up, {} runs per side; f32 matmul peak {peak:.1} GFLOP/s (1024x768x3072)",
        opts.task,
        opts.train.display(),
        model.display(),
        opts.batch_size,
        opts.aux_lm,
        opts.steps,
        opts.runs,
    );
    let out_dir = std::env::temp_dir().join(format!("gpt-bench-finetune-{}", std::process::id()));
    // The work both sides are given, in flags both understand.
    let same_work: Vec<std::ffi::OsString> = [
        ("--model", model.as_os_str().to_owned()),
        ("--task", opts.task.clone().into()),
        ("--train", opts.train.as_os_str().to_owned()),
        ("--max-steps", steps.to_string().into()),
        ("--batch-size", opts.batch_size.to_string().into()),
        ("--aux-lm", opts.aux_lm.to_string().into()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.into(), value])
    .chain(["--json".into()])
    .collect();
    let ours = |precision: Precision| -> Result<f64> {
        let mut cmd = Command::new(super::harness::current_exe()?);
        cmd.arg("--threads")
            .arg(threads.to_string())
            .arg("finetune")
            .args(&same_work)
            .arg("--out")
            .arg(&out_dir)
            .arg("--overwrite")
            .arg("--precision")
            .arg(precision.name());
        timed_steps(&mut cmd, |step, _| {
            examples_of_step(step, n_train, opts.batch_size)
        })
    };
    let python = find_python(opts.python.as_deref());
    let torch = |autocast: bool| -> Result<f64> {
        let mut cmd = Command::new(&python);
        cmd.arg(script("finetune_torch.py"))
            .args(&same_work)
            .arg("--threads")
            .arg(threads.to_string());
        if autocast {
            cmd.arg("--autocast");
        }
        timed_steps(&mut cmd, |_, v| {
            v.get("examples").and_then(Value::as_u64).unwrap_or(0) as usize
        })
        .map_err(|e| match e {
            Error::File { path, reason } => Error::File {
                path,
                reason: format!("{reason} ({PYTHON_HINT}, transformers and tokenizers)"),
            },
            other => other,
        })
    };
    let bf16 = opts.precision == Precision::Bf16;
    let (mut f32s, mut bf16s, mut eager, mut autocast) = (vec![], vec![], vec![], vec![]);
    for run in 1..=opts.runs {
        f32s.push(ours(Precision::F32)?);
        if bf16 {
            bf16s.push(ours(Precision::Bf16)?);
        }
        if opts.vs_torch {
            eager.push(torch(false)?);
            if bf16 {
                autocast.push(torch(true)?);
            }
        }
        let last = |v: &[f64]| v.last().map_or("-".into(), |x| format!("{x:.1}"));
        println!(
            "run {run}: ours f32 {} ex/s, ours bf16 {}, PyTorch eager f32 {}, PyTorch autocast bf16 {}",
            last(&f32s),
            last(&bf16s),
            last(&eager),
            last(&autocast)
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    let _ = std::fs::remove_dir_all(&tmp_base);
    let med = |v: &mut Vec<f64>| (!v.is_empty()).then(|| median(v));
    let (f, b, e, a) = (
        med(&mut f32s),
        med(&mut bf16s),
        med(&mut eager),
        med(&mut autocast),
    );
    let show = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => format!("{:.2}x", x / y),
        _ => "-".into(),
    };
    println!(
        "medians (examples/s): ours f32 {}, PyTorch eager f32 {}, ratio {}",
        show(f),
        show(e),
        ratio(f, e)
    );
    if bf16 {
        println!(
            "medians (examples/s): ours bf16 {}, PyTorch autocast bf16 {}, ratio {}; ours bf16 / PyTorch eager f32 {}",
            show(b),
            show(a),
            ratio(b, a),
            ratio(b, e)
        );
    }
    println!("ratio = ours / PyTorch (above 1: we are faster)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::examples_of_step;

    #[test]
    fn last_batch_of_an_epoch_is_short() {
        // 70 examples in batches of 32: 32, 32, 6, then the next epoch.
        let got: Vec<usize> = (1..=5).map(|s| examples_of_step(s, 70, 32)).collect();
        assert_eq!(got, vec![32, 32, 6, 32, 32]);
    }
}
