//! A run's output directory is never silently replaced or ignored.
//!
//! - Starting a run ([`claim`]) in a directory that already holds one is an error unless the
//!   caller says what to do with it: `--resume` continues it, `--overwrite` replaces it.
//! - `--overwrite` does not delete the old run up front: its entries are moved into
//!   `OUT/.previous-run` (a rename, in the same directory) and removed only once the new run has
//!   saved its first checkpoint ([`discard_previous`]). If the new run fails before that, the old
//!   one is still there, in `.previous-run`.
//! - A resume takes the saved configuration; [`reconcile`] applies the fields a resume may
//!   change (budgets, the learning-rate schedule, reporting intervals) and reports every other
//!   differing field as ignored.
//!
//! The entries that make a directory a run are the ones the loop and the tasks write, listed in
//! [`RUN_ENTRIES`]; GPT pretraining's on-the-fly `data/` is not one (it is prepared again).

use super::checkpoint::CheckpointLayout;
use super::trainer::Resume;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Entries of an output directory that belong to a run (checkpoints, their leftovers after a
/// crash, metrics, the plot, the resolved configuration, a translation run's tokenizer).
pub const RUN_ENTRIES: &[&str] = &[
    "checkpoint",
    "checkpoint.old",
    "checkpoint.tmp",
    "checkpoints",
    "latest",
    "metrics.jsonl",
    "loss.png",
    "train_config.json",
    "tokenizer",
];

/// Where `--overwrite` keeps the replaced run until the new run's first checkpoint.
pub const PREVIOUS_RUN_DIR: &str = ".previous-run";

/// The run entries present in `out`.
pub fn run_entries(out: &Path) -> Vec<PathBuf> {
    RUN_ENTRIES
        .iter()
        .map(|n| out.join(n))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

/// Prepares `out` for a run that starts from step 0: fine if it holds no run; an error naming
/// `out` and both flags if it does and `overwrite` is false; with `overwrite`, the old run's
/// entries are moved into `out/.previous-run` (replacing an older one there). Returns whether a
/// run was moved aside.
pub fn claim(out: &Path, overwrite: bool) -> Result<bool> {
    let entries = run_entries(out);
    if entries.is_empty() {
        return Ok(false);
    }
    if !overwrite {
        let names: Vec<String> = entries
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        return Err(Error::file(
            out,
            format!(
                "already holds a run ({}); pass --resume to continue it or --overwrite to replace it (or choose another --out)",
                names.join(", ")
            ),
        ));
    }
    let prev = out.join(PREVIOUS_RUN_DIR);
    crate::io::atomic::remove_dir_if_exists(&prev)?;
    std::fs::create_dir(&prev).map_err(|e| Error::io(&prev, e))?;
    for p in &entries {
        if let Some(name) = p.file_name() {
            let to = prev.join(name);
            std::fs::rename(p, &to).map_err(|e| Error::io(p, e))?;
        }
    }
    crate::io::atomic::sync_dir(out);
    Ok(true)
}

/// Removes the run that `--overwrite` moved aside, if any (called once the new run has a
/// checkpoint of its own).
pub fn discard_previous(out: &Path) -> Result<()> {
    crate::io::atomic::remove_dir_if_exists(&out.join(PREVIOUS_RUN_DIR))
}

/// What a resume did with the fields of the given configuration that differ from the saved one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResumeChanges {
    /// Fields taken from the given configuration: `name: saved → given`.
    pub applied: Vec<String>,
    /// Fields that kept their saved values: `name: saved (given: …)`.
    pub ignored: Vec<String>,
}

impl ResumeChanges {
    /// The messages to print (a note for the changes, a warning for the ignored fields), empty
    /// when nothing differed. `rule` states which fields a resume may change.
    pub fn messages(&self, rule: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !self.applied.is_empty() {
            out.push(format!(
                "resume: changed {} (the learning-rate schedule is recomputed at the saved step)",
                self.applied.join(", ")
            ));
        }
        if !self.ignored.is_empty() {
            out.push(format!(
                "warning: --resume keeps the saved configuration; ignored: {}. {rule}",
                self.ignored.join(", ")
            ));
        }
        out
    }
}

/// The configuration a resume runs with: `saved`, with the `changeable` fields taken from
/// `given`; fields in `skip` (e.g. `out`, which is where the run was found) are not compared.
/// Every other field where `given` differs is reported as ignored.
pub fn reconcile<T: Serialize + DeserializeOwned>(
    saved: &T,
    given: &T,
    changeable: &[&str],
    skip: &[&str],
) -> Result<(T, ResumeChanges)> {
    let to_map = |v: &T| match serde_json::to_value(v) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::usage("reconcile", "a configuration is a struct")),
        Err(e) => Err(Error::usage("reconcile", e.to_string())),
    };
    let mut merged = to_map(saved)?;
    let given = to_map(given)?;
    let mut changes = ResumeChanges::default();
    for (key, new) in &given {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let old = merged.get(key).cloned().unwrap_or(Value::Null);
        if &old == new {
            continue;
        }
        let (o, n) = (show(&old), show(new));
        if changeable.contains(&key.as_str()) {
            changes.applied.push(format!("{key} {o} → {n}"));
            merged.insert(key.clone(), new.clone());
        } else {
            changes.ignored.push(format!("{key} {o} (given {n})"));
        }
    }
    let cfg = serde_json::from_value(Value::Object(merged))
        .map_err(|e| Error::usage("reconcile", e.to_string()))?;
    Ok((cfg, changes))
}

/// A configuration value for a message: an f32 field (which JSON holds as the nearest f64,
/// `0.003000000026077032`) is printed as the f32 it is (`0.003`).
fn show(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() && f64::from(x as f32) == x => format!("{}", x as f32),
        _ => v.to_string(),
    }
}

/// The checkpoint a run resumes from: `None` for a fresh run, else the latest one of `out` in
/// `layout`. `resume` and `overwrite` together are an error (one continues the run, the other
/// replaces it).
pub fn find_resume(
    out: &Path,
    layout: CheckpointLayout,
    resume: bool,
    overwrite: bool,
) -> Result<Option<Resume>> {
    if resume && overwrite {
        return Err(Error::field(
            "--overwrite",
            "cannot be combined with --resume: one continues the run, the other replaces it",
        ));
    }
    if !resume {
        return Ok(None);
    }
    Resume::find(out, layout).map(Some)
}

/// The configuration a run starts with: `given` for a fresh run (`resume` is `None`); for a
/// resume, the configuration saved in its checkpoint reconciled with `given` ([`reconcile`]:
/// the changeable fields from `given`, the others named as ignored, the rule printed with them
/// unless `quiet`), with the output directory `out` (where the run was found) and at least one
/// step left to train ([`check_steps_left`]).
pub fn resumed<T: Serialize + DeserializeOwned + Clone>(
    resume: Option<&Resume>,
    given: &T,
    out: &Path,
    rules: &ResumeRules<T>,
    quiet: bool,
) -> Result<T> {
    let Some(r) = resume else {
        return Ok(given.clone());
    };
    let saved: T = r.state.field("config")?;
    let (mut c, changes) = reconcile(&saved, given, rules.changeable, &["out"])?;
    (rules.set_out)(&mut c, out.to_path_buf());
    if !quiet {
        for m in changes.messages(rules.rule) {
            eprintln!("{m}");
        }
    }
    check_steps_left(out, r.state.step, (rules.max_steps)(&c))?;
    Ok(c)
}

/// How a fine-tuning-style run (one `OUT/checkpoint`) starts: the checkpoint to resume from
/// ([`find_resume`]), the configuration ([`resumed`]) checked by `validate`, and for a fresh run
/// the output directory claimed ([`claim`]; what `--overwrite` did is said unless quiet). The
/// one start of `gpt finetune`, `gpt sft`/`reward`/`dpo` and `gpt logs train`.
pub fn start_single<T: Serialize + DeserializeOwned + Clone>(
    given: &T,
    out: &Path,
    rules: &ResumeRules<T>,
    opts: &super::trainer::TrainOptions,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<(T, Option<Resume>)> {
    let resume = find_resume(out, CheckpointLayout::Single, opts.resume, opts.overwrite)?;
    let cfg = resumed(resume.as_ref(), given, out, rules, opts.quiet)?;
    validate(&cfg)?;
    // Ranks of a data-parallel run may share `out`: rank 0 claims it while the others wait.
    let world = &opts.world;
    if resume.is_none() && world.is_root() && claim(out, opts.overwrite)? && !opts.quiet {
        eprintln!(
            "--overwrite: the previous run in {} is kept in {} until this run's first checkpoint",
            out.display(),
            out.join(PREVIOUS_RUN_DIR).display()
        );
    }
    world.barrier()?;
    Ok((cfg, resume))
}

/// What [`resumed`] needs to know of a run's configuration type `T`.
pub struct ResumeRules<T> {
    /// Fields a resume may change.
    pub changeable: &'static [&'static str],
    /// The rule, printed with the fields a resume ignored.
    pub rule: &'static str,
    /// Sets the output directory.
    pub set_out: fn(&mut T, PathBuf),
    /// The step budget.
    pub max_steps: fn(&T) -> usize,
}

/// The error for a resume with nothing left to do: `max_steps` at or below the saved step.
pub fn check_steps_left(out: &Path, step: usize, max_steps: usize) -> Result<()> {
    if max_steps > step {
        return Ok(());
    }
    Err(Error::field(
        "max_steps",
        format!(
            "the run in {} is already at step {step} and max_steps is {max_steps}: nothing to resume; pass --max-steps above {step} to train further",
            out.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
    struct C {
        lr: f32,
        batch: usize,
        out: String,
    }

    #[test]
    fn reconcile_applies_changeable_fields_and_reports_the_rest() {
        let saved = C {
            lr: 0.5,
            batch: 4,
            out: "a".into(),
        };
        let given = C {
            lr: 0.003,
            batch: 8,
            out: "b".into(),
        };
        let (c, ch) = reconcile(&saved, &given, &["lr"], &["out"]).unwrap();
        assert_eq!((c.lr, c.batch, c.out.as_str()), (0.003, 4, "a"));
        assert_eq!(ch.applied, ["lr 0.5 → 0.003"]);
        assert_eq!(ch.ignored, ["batch 4 (given 8)"]);
        let (_, none) = reconcile(&saved, &saved, &["lr"], &[]).unwrap();
        assert!(none.messages("rule").is_empty());
    }

    #[test]
    fn claim_refuses_a_run_and_overwrite_moves_it_aside() {
        let root = std::env::temp_dir().join(format!("gpt-run-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data")).unwrap();
        assert!(!claim(&root, false).unwrap(), "data/ alone is not a run");
        std::fs::write(root.join("metrics.jsonl"), "{}\n").unwrap();
        let err = claim(&root, false).unwrap_err().to_string();
        assert!(
            err.contains("--resume") && err.contains("--overwrite") && err.contains("metrics"),
            "{err}"
        );
        assert!(claim(&root, true).unwrap());
        assert!(run_entries(&root).is_empty());
        assert!(root.join(PREVIOUS_RUN_DIR).join("metrics.jsonl").exists());
        discard_previous(&root).unwrap();
        assert!(!root.join(PREVIOUS_RUN_DIR).exists() && root.join("data").exists());
        std::fs::remove_dir_all(&root).ok();
    }
}
