//! A trained log-key model as `gpt logs detect` and `gpt logs eval` use it: the GPT, its key
//! vocabulary and its detector settings, and the verdicts on sessions.

use super::detect::{session_score, verdict, DetectorSettings, Rule, Verdict};
use super::score::{score_sequences, PositionScore};
use super::sessions::Session;
use super::vocab::KeyVocab;
use crate::error::{Error, Result};
use crate::model::Gpt;
use std::path::{Path, PathBuf};

/// Windows per forward when scoring.
pub const SCORE_BATCH: usize = 256;

/// A log-key model loaded for detection.
pub struct LogModel {
    /// The model directory.
    pub dir: PathBuf,
    /// The GPT over keys.
    pub gpt: Gpt,
    /// Its keys.
    pub vocab: KeyVocab,
    /// Its detector settings.
    pub settings: DetectorSettings,
}

impl LogModel {
    /// Loads `dir` (or `dir/checkpoint`), checking that the vocabulary matches the model.
    pub fn load(dir: &Path) -> Result<LogModel> {
        let dir = crate::model::inference::resolve_dir(dir);
        let vocab = KeyVocab::load(&dir)?;
        let settings = DetectorSettings::load(&dir)?;
        let gpt = crate::model::checkpoint::load(&dir)?;
        if gpt.config.vocab_size != vocab.size() {
            return Err(Error::file(
                &dir.join(super::vocab::KEYS_FILE),
                format!(
                    "{} keys and 3 special tokens, but the model has a vocabulary of {} (files from different models?)",
                    vocab.n_keys(),
                    gpt.config.vocab_size
                ),
            ));
        }
        Ok(LogModel {
            dir,
            gpt,
            vocab,
            settings,
        })
    }

    /// The sessions' token ids (`<s> keys [</s>]`, unseen keys as `<unk>`).
    pub fn encode(&self, sessions: &[Session]) -> Vec<Vec<u32>> {
        sessions
            .iter()
            .map(|s| self.vocab.encode(&s.keys, self.settings.end_token))
            .collect()
    }

    /// Every position's score of every session (`top`: the most likely tokens kept per
    /// position).
    pub fn score(&mut self, sessions: &[Session], top: usize) -> Result<Vec<Vec<PositionScore>>> {
        let seqs = self.encode(sessions);
        score_sequences(&mut self.gpt, &seqs, SCORE_BATCH, top)
    }

    /// The surprisal threshold to use: `given`, else the one chosen in training; an error
    /// saying how to get one when neither exists.
    pub fn threshold(&self, given: Option<f64>) -> Result<f64> {
        given.or(self.settings.threshold).ok_or_else(|| {
            Error::file(
                &self.dir.join(super::detect::DETECTOR_FILE),
                "no surprisal threshold: the model was trained without validation sessions; pass --threshold X or retrain with --valid-fraction > 0",
            )
        })
    }

    /// The verdicts of `rule` on `sessions`, with the model's `top_g` expected keys at each
    /// flagged position.
    pub fn detect(
        &mut self,
        sessions: &[Session],
        rule: Rule,
        top_g: usize,
        threshold: f64,
    ) -> Result<Vec<Verdict>> {
        let seqs = self.encode(sessions);
        let scores = score_sequences(&mut self.gpt, &seqs, SCORE_BATCH, top_g)?;
        Ok(sessions
            .iter()
            .zip(&seqs)
            .zip(&scores)
            .map(|((s, ids), sc)| verdict(rule, &self.vocab, &s.keys, ids, sc, top_g, threshold))
            .collect())
    }

    /// Session scores under `rule` (largest rank or NLL) — for ROC and PR curves.
    pub fn session_scores(&mut self, sessions: &[Session], rule: Rule) -> Result<Vec<f64>> {
        Ok(self
            .score(sessions, 0)?
            .iter()
            .map(|s| session_score(rule, s))
            .collect())
    }
}
