//! Training checkpoints: where they live in a run's output directory, the loop's
//! `trainer_state.json`, and finding the one to resume from.
//!
//! A checkpoint is a model directory (what [`super::task::Task::save`] writes) plus
//! `optimizer.safetensors` ([`super::optim_state`]) and `trainer_state.json`
//! (`{"version", "step", "train_seconds", ...the task's fields}`). Each is written into a
//! temporary directory that replaces the previous one by renames ([`crate::io::replace_dir`]).
//!
//! Two layouts: [`CheckpointLayout::Single`] keeps `OUT/checkpoint` (GPT pretraining);
//! [`CheckpointLayout::Numbered`] keeps the newest `keep` of `OUT/checkpoints/step_NNNNNNN` and
//! names the newest in `OUT/latest` (translation, whose checkpoints are averaged).
//!
//! Compatibility: `trainer_state.json` version 1 (written before the one loop: GPT without
//! `train_seconds`) reads as version 2 — the task fields kept their names.

use crate::error::{Error, Result};
use crate::io::atomic::old_sibling;
use crate::io::{replace_dir, write_atomic};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Name of the single checkpoint directory of [`CheckpointLayout::Single`].
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// Subdirectory of a run with one directory per saved step ([`CheckpointLayout::Numbered`]).
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// File in a run directory naming its newest numbered checkpoint.
pub const LATEST_FILE: &str = "latest";
/// The loop's state file inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// Version of `trainer_state.json` this code writes (1: before the one loop; read as well).
pub const STATE_VERSION: u64 = 2;

/// Where a run keeps its checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// `OUT/checkpoint`, replaced at each save.
    Single,
    /// `OUT/checkpoints/step_NNNNNNN`, the newest `keep` kept, the newest named in `OUT/latest`.
    Numbered {
        /// Checkpoints kept (at least 1).
        keep: usize,
    },
}

/// The loop's `trainer_state.json`: its own fields and the task's.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Training time so far (0 in GPT checkpoints of version 1).
    pub train_seconds: f64,
    /// The whole JSON object (the task reads its fields from it).
    pub fields: Map<String, Value>,
    /// The file it was read from (for errors).
    pub path: PathBuf,
}

impl TrainerState {
    /// The JSON object to write: the task's fields plus the loop's.
    pub fn to_json(step: usize, train_seconds: f64, task: Map<String, Value>) -> Vec<u8> {
        let mut m = task;
        m.insert("version".into(), STATE_VERSION.into());
        m.insert("step".into(), step.into());
        m.insert("train_seconds".into(), train_seconds.into());
        // A Map of plain values always serialises.
        serde_json::to_vec_pretty(&Value::Object(m)).unwrap_or_default()
    }

    /// Reads `dir/trainer_state.json` (version 1 or 2).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
        let Value::Object(fields) = v else {
            return Err(Error::file(&path, "expected a JSON object"));
        };
        let version = fields.get("version").and_then(Value::as_u64).unwrap_or(0);
        if !(1..=STATE_VERSION).contains(&version) {
            return Err(Error::file(
                &path,
                format!("version {version} is not one this build reads (1..={STATE_VERSION}); use the gpt that wrote it"),
            ));
        }
        let mut s = TrainerState {
            step: 0,
            train_seconds: 0.0,
            fields,
            path,
        };
        s.step = s.field("step")?;
        if s.fields.contains_key("train_seconds") {
            s.train_seconds = s.field("train_seconds")?;
        }
        Ok(s)
    }

    /// The field `name`, deserialised; errors name the file and the field.
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let v = self
            .fields
            .get(name)
            .ok_or_else(|| Error::file(&self.path, format!("missing field `{name}`")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| Error::file(&self.path, format!("field `{name}`: {e}")))
    }
}

/// Field `name` of a task's saved state map, deserialised; errors name `dir`'s state file.
pub fn state_field<T: DeserializeOwned>(
    dir: &Path,
    state: &Map<String, Value>,
    name: &str,
) -> Result<T> {
    let path = dir.join(STATE_FILE);
    let v = state
        .get(name)
        .ok_or_else(|| Error::file(&path, format!("missing field `{name}`")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| Error::file(&path, format!("field `{name}`: {e}")))
}

impl CheckpointLayout {
    /// The directory the checkpoint of `step` is written to.
    pub fn dir(self, out: &Path, step: usize) -> PathBuf {
        match self {
            CheckpointLayout::Single => out.join(CHECKPOINT_DIR),
            CheckpointLayout::Numbered { .. } => {
                out.join(CHECKPOINTS_DIR).join(format!("step_{step:07}"))
            }
        }
    }

    /// Writes the checkpoint of `step` atomically (`fill` writes the files into a temporary
    /// directory); for [`CheckpointLayout::Numbered`], then points `latest` at it and prunes.
    /// Returns the checkpoint's directory.
    pub fn save(
        self,
        out: &Path,
        step: usize,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dst = self.dir(out, step);
        replace_dir(&dst, fill)?;
        if let CheckpointLayout::Numbered { keep } = self {
            let name = format!("{CHECKPOINTS_DIR}/step_{step:07}\n");
            write_atomic(&out.join(LATEST_FILE), name.as_bytes())?;
            let all = list_checkpoints(out)?;
            if all.len() > keep {
                for old in &all[..all.len() - keep] {
                    std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
                }
            }
        }
        Ok(dst)
    }

    /// The checkpoint directory to resume from: `checkpoint` (or `checkpoint.old`, left by a
    /// crash between the two renames of a save), or the one `latest` names.
    pub fn resume_dir(self, out: &Path) -> Result<PathBuf> {
        match self {
            CheckpointLayout::Single => {
                let dir = out.join(CHECKPOINT_DIR);
                for d in [dir.clone(), old_sibling(&dir)] {
                    if d.join(STATE_FILE).exists() {
                        return Ok(d);
                    }
                }
                Err(Error::file(
                    out,
                    format!(
                        "--resume: no checkpoint here (expected {}); start the run without --resume",
                        dir.join(STATE_FILE).display()
                    ),
                ))
            }
            CheckpointLayout::Numbered { .. } => {
                let latest = out.join(LATEST_FILE);
                let name = std::fs::read_to_string(&latest).map_err(|_| {
                    Error::file(
                        out,
                        format!(
                            "--resume: no checkpoint here (expected {}); start the run without --resume",
                            latest.display()
                        ),
                    )
                })?;
                Ok(out.join(name.trim()))
            }
        }
    }
}

/// Numbered checkpoint directories of a run, oldest first (by step).
pub fn list_checkpoints(run: &Path) -> Result<Vec<PathBuf>> {
    let dir = run.join(CHECKPOINTS_DIR);
    let mut out: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let e = e.map_err(|err| Error::io(&dir, err))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step_").and_then(|s| s.parse().ok()) {
            if e.path()
                .join(crate::model::checkpoint::CONFIG_FILE)
                .exists()
            {
                out.push((step, e.path()));
            }
        }
    }
    out.sort();
    Ok(out.into_iter().map(|p| p.1).collect())
}
