//! The optimizer state of a checkpoint: one format for every task, read back from the two
//! formats written before the one loop.
//!
//! Written (version 2): `optimizer.safetensors` with f32 tensors `m.{name}` and `v.{name}` for
//! every tensor of the parameter layout (so a moment can be looked up, inspected or carried over
//! by name), and in the header's metadata `gpt-rs: adamw`, `version: 2`, `step`, the AdamW
//! hyper-parameters and the schedule as JSON. The schedule is a pure function of the step
//! ([`Schedule::lr`]), so `step` is all the schedule state there is.
//!
//! Read as well:
//! - GPT pretraining, version 1: `optimizer.safetensors` with two flat tensors `m` and `v` of the
//!   layout's total length (in layout order) and `step` in the metadata;
//! - translation, version 1: `optimizer.m.safetensors` / `optimizer.v.safetensors` with tensors
//!   `m.{name}` / `v.{name}` and no step (it is in `trainer_state.json`).

use crate::error::{Error, Result};
use crate::io::{write_f32, TensorFile};
use crate::model::checkpoint::{layout_tensors, read_layout};
use crate::nn::params::ParamLayout;
use crate::optim::{AdamW, Schedule};
use std::collections::HashMap;
use std::path::Path;

/// File name of the optimizer state in a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Version written in the metadata.
pub const OPTIMIZER_VERSION: &str = "2";

/// The format an optimizer state was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimFormat {
    /// `m.{name}` / `v.{name}` in one file (this code).
    ByName,
    /// Flat `m` / `v` (GPT checkpoints before the one loop).
    LegacyFlat,
    /// Two files `optimizer.{m,v}.safetensors` (translation checkpoints before the one loop).
    LegacyTwoFiles,
}

/// Writes `opt`'s moments and step (and, for the record, its hyper-parameters and `schedule`)
/// to `dir/optimizer.safetensors`.
pub fn save(dir: &Path, layout: &ParamLayout, opt: &AdamW, schedule: &Schedule) -> Result<()> {
    let mut tensors = layout_tensors(layout, &opt.m, |n| format!("m.{n}"));
    tensors.extend(layout_tensors(layout, &opt.v, |n| format!("v.{n}")));
    let c = opt.config;
    let meta: HashMap<String, String> = [
        ("gpt-rs", "adamw".to_string()),
        ("version", OPTIMIZER_VERSION.to_string()),
        ("step", opt.step.to_string()),
        ("beta1", c.beta1.to_string()),
        ("beta2", c.beta2.to_string()),
        ("eps", c.eps.to_string()),
        ("weight_decay", c.weight_decay.to_string()),
        (
            "schedule",
            serde_json::to_string(schedule).unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    write_f32(&dir.join(OPTIMIZER_FILE), &tensors, meta)
}

/// Reads the moments saved in checkpoint directory `dir` (any of the three formats) into `opt`
/// (whose moments have `layout`'s length) and sets its step to `step` (the trainer state's),
/// checking it against the step the file records, if any.
pub fn load(dir: &Path, layout: &ParamLayout, opt: &mut AdamW, step: usize) -> Result<OptimFormat> {
    let one = dir.join(OPTIMIZER_FILE);
    let format = if one.exists() {
        let file = TensorFile::open(&one)?;
        let format = if file.get("m").is_some() {
            for (name, dst) in [("m", &mut opt.m), ("v", &mut opt.v)] {
                let t = file.find(&[name])?;
                file.read_f32_into(t, &[layout.total()], dst).map_err(|e| {
                    Error::file(&one, format!("{e} (a checkpoint of another model?)"))
                })?;
            }
            OptimFormat::LegacyFlat
        } else {
            read_layout(&file, layout, &mut opt.m, |n| vec![format!("m.{n}")])?;
            read_layout(&file, layout, &mut opt.v, |n| vec![format!("v.{n}")])?;
            OptimFormat::ByName
        };
        if let Some(s) = file.metadata().get("step") {
            if s.parse::<usize>().ok() != Some(step) {
                return Err(Error::file(
                    &one,
                    format!("holds the optimizer state of step {s}, but trainer_state.json is at step {step}; the checkpoint mixes two saves"),
                ));
            }
        }
        format
    } else {
        let m_path = dir.join("optimizer.m.safetensors");
        if !m_path.exists() {
            return Err(Error::file(
                dir,
                format!("no optimizer state ({OPTIMIZER_FILE}); this is not a training checkpoint, or it is incomplete"),
            ));
        }
        for (prefix, dst) in [("m", &mut opt.m), ("v", &mut opt.v)] {
            let file = TensorFile::open(&dir.join(format!("optimizer.{prefix}.safetensors")))?;
            read_layout(&file, layout, dst, |n| vec![format!("{prefix}.{n}")])?;
        }
        OptimFormat::LegacyTwoFiles
    };
    opt.step = step as u64;
    opt.attach(layout);
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::Init;
    use crate::optim::AdamWConfig;

    fn layout() -> ParamLayout {
        let mut l = ParamLayout::new();
        l.add("a.weight", &[2, 3], true, Init::Zeros).unwrap();
        l.add("a.bias", &[3], false, Init::Zeros).unwrap();
        l
    }

    #[test]
    fn by_name_round_trip_and_both_legacy_formats() {
        let dir = std::env::temp_dir().join(format!("gpt-optim-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let l = layout();
        let mut opt = AdamW::new(&l, AdamWConfig::default());
        opt.m = (0..9).map(|i| i as f32).collect();
        opt.v = (0..9).map(|i| 0.5 * i as f32).collect();
        opt.step = 3;
        let sched = Schedule::InverseSqrt {
            scale: 1.0,
            d_model: 8,
            warmup: 2,
        };
        save(&dir, &l, &opt, &sched).unwrap();
        let f = TensorFile::open(&dir.join(OPTIMIZER_FILE)).unwrap();
        assert_eq!(f.read_f32("v.a.bias").unwrap().1, vec![3.0, 3.5, 4.0]);
        let mut back = AdamW::new(&l, AdamWConfig::default());
        assert_eq!(load(&dir, &l, &mut back, 3).unwrap(), OptimFormat::ByName);
        assert_eq!(
            (back.m.clone(), back.v.clone(), back.step),
            (opt.m.clone(), opt.v.clone(), 3)
        );
        let err = load(&dir, &l, &mut back, 4).unwrap_err().to_string();
        assert!(err.contains("step 3") && err.contains("step 4"), "{err}");

        // Legacy GPT: flat m, v.
        let legacy = dir.join("flat");
        let meta = [("step".to_string(), "3".to_string())]
            .into_iter()
            .collect();
        write_f32(
            &legacy.join(OPTIMIZER_FILE),
            &[
                ("m".into(), vec![9], &opt.m[..]),
                ("v".into(), vec![9], &opt.v[..]),
            ],
            meta,
        )
        .unwrap();
        let mut back = AdamW::new(&l, AdamWConfig::default());
        assert_eq!(
            load(&legacy, &l, &mut back, 3).unwrap(),
            OptimFormat::LegacyFlat
        );
        assert_eq!((back.m, back.v), (opt.m.clone(), opt.v.clone()));

        // Legacy translation: two files.
        let two = dir.join("two");
        for (p, data) in [("m", &opt.m), ("v", &opt.v)] {
            write_f32(
                &two.join(format!("optimizer.{p}.safetensors")),
                &layout_tensors(&l, data, |n| format!("{p}.{n}")),
                HashMap::new(),
            )
            .unwrap();
        }
        let mut back = AdamW::new(&l, AdamWConfig::default());
        assert_eq!(
            load(&two, &l, &mut back, 5).unwrap(),
            OptimFormat::LegacyTwoFiles
        );
        assert_eq!((&back.m, &back.v, back.step), (&opt.m, &opt.v, 5));

        let err = load(&dir.join("none"), &l, &mut back, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no optimizer state"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
