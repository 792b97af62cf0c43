//! A Piper voice: its `.onnx` generator and its `.onnx.json` settings (sample rate, espeak
//! voice, phoneme ids, default noise), speaking a sentence at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use pipeline::AudioChunk;
use serde::Deserialize;

use crate::espeak::{self, EspeakError};
use crate::normalize::normalize;
use crate::vits::{Noise, Vits, VitsError};

/// Piper's `scales` input: noise, length, noise_w.
pub type Scales = Noise;

/// One sentence spoken.
pub type Speech = AudioChunk;

/// Phonemes per piece of a sentence: a sentence without punctuation can be any length, and
/// attention costs the square of it, so longer ones are spoken in pieces split between words.
pub const MAX_PHONEMES: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error(transparent)]
    Espeak(#[from] EspeakError),
    #[error(transparent)]
    Model(#[from] VitsError),
    #[error("voice settings {path}: {reason}")]
    Config { path: String, reason: String },
}

#[derive(Deserialize)]
struct Config {
    audio: AudioConfig,
    espeak: EspeakConfig,
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    phoneme_type: Option<String>,
}

#[derive(Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

pub struct Voice {
    model: Vits,
    ids: HashMap<char, Vec<i64>>,
    espeak_voice: String,
    pub sample_rate: u32,
    /// The voice's own defaults (`inference` in its settings).
    pub scales: Scales,
}

/// The settings file next to a voice: `voice.onnx.json` for `voice.onnx`.
pub fn settings_path(onnx: &Path) -> PathBuf {
    let mut name = onnx.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

impl Voice {
    /// Loads `voice.onnx` and its `voice.onnx.json`.
    pub fn load(onnx: &Path, device: &Device) -> Result<Self, VoiceError> {
        let settings = settings_path(onnx);
        let fail = |reason: String| VoiceError::Config {
            path: settings.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&settings).map_err(|e| fail(e.to_string()))?;
        let config: Config = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if config
            .phoneme_type
            .as_deref()
            .is_some_and(|t| t != "espeak")
        {
            return Err(fail(format!(
                "phoneme_type {:?}: only espeak voices are supported",
                config.phoneme_type
            )));
        }
        let mut ids = HashMap::new();
        for (symbol, id) in config.phoneme_id_map {
            let mut chars = symbol.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    ids.insert(c, id);
                }
                _ => return Err(fail(format!("phoneme {symbol:?} is not one character"))),
            }
        }
        for c in ['^', '$', '_'] {
            if !ids.contains_key(&c) {
                return Err(fail(format!("phoneme_id_map has no {c:?}")));
            }
        }
        if !(8_000..=96_000).contains(&config.audio.sample_rate) {
            return Err(fail(format!(
                "sample rate {} Hz is outside 8-96 kHz",
                config.audio.sample_rate
            )));
        }
        let model = Vits::load(onnx, device)?;
        Ok(Voice {
            model,
            ids,
            espeak_voice: config.espeak.voice,
            sample_rate: config.audio.sample_rate,
            scales: Scales {
                noise_scale: config.inference.noise_scale,
                length_scale: config.inference.length_scale,
                noise_w: config.inference.noise_w,
            },
        })
    }

    /// Each sentence of `text` as phonemes (prices spelled out first), long ones in pieces.
    pub fn phonemes(&self, text: &str) -> Result<Vec<Vec<char>>, VoiceError> {
        let sentences = espeak::phonemize(&normalize(text), &self.espeak_voice)?;
        Ok(sentences.into_iter().flat_map(split_long).collect())
    }

    /// Piper's ids of one sentence: `^`, then each phoneme followed by the pad `_`, then `$`.
    /// Phonemes the voice has no id for are left out, as Piper does.
    pub fn ids(&self, phonemes: &[char]) -> Vec<i64> {
        let pad = &self.ids[&'_'];
        let mut out = self.ids[&'^'].clone();
        out.extend(pad);
        for p in phonemes {
            if let Some(id) = self.ids.get(p) {
                out.extend(id);
                out.extend(pad);
            }
        }
        out.extend(&self.ids[&'$']);
        out
    }

    /// The samples of one sentence's ids.
    pub fn synthesize(&self, ids: &[i64], scales: Scales) -> Speech {
        AudioChunk::new(self.sample_rate, self.model.forward(ids, scales))
    }

    /// [`Voice::synthesize`] in pieces, each handed over as soon as it is made.
    pub fn synthesize_streaming(&self, ids: &[i64], scales: Scales, mut piece: impl FnMut(Speech)) {
        self.model.stream(ids, scales, |samples| {
            piece(AudioChunk::new(self.sample_rate, samples.to_vec()))
        });
    }

    /// Several sentences' ids in turn, `piece(sentence, sound)` for each piece as soon as
    /// it is made (the next sentence is prepared while one is generated); a `Break` stops
    /// before the next sentence.
    pub fn synthesize_sentences(
        &self,
        sentences: &[Vec<i64>],
        scales: Scales,
        mut piece: impl FnMut(usize, Speech) -> std::ops::ControlFlow<()>,
    ) {
        self.model
            .stream_sentences(sentences, scales, |i, samples| {
                piece(i, AudioChunk::new(self.sample_rate, samples.to_vec()))
            });
    }

    /// Every sentence of `text`, spoken in turn.
    pub fn speak(&self, text: &str, scales: Scales) -> Result<Vec<Speech>, VoiceError> {
        Ok(self
            .phonemes(text)?
            .iter()
            .map(|p| self.synthesize(&self.ids(p), scales))
            .collect())
    }
}

/// A sentence longer than [`MAX_PHONEMES`], split at the spaces between words.
fn split_long(sentence: Vec<char>) -> Vec<Vec<char>> {
    if sentence.len() <= MAX_PHONEMES {
        return vec![sentence];
    }
    let mut pieces = Vec::new();
    let mut rest = sentence.as_slice();
    while rest.len() > MAX_PHONEMES {
        let cut = rest[..MAX_PHONEMES]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|&i| i > 0)
            .unwrap_or(MAX_PHONEMES);
        pieces.push(rest[..cut].to_vec());
        rest = &rest[cut..];
        while rest.first() == Some(&' ') {
            rest = &rest[1..];
        }
    }
    if !rest.is_empty() {
        pieces.push(rest.to_vec());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sentences_split_between_words() {
        let word: Vec<char> = "abcdefghi ".chars().collect();
        let sentence: Vec<char> = word.iter().cycle().take(1005).copied().collect();
        let pieces = split_long(sentence.clone());
        assert!(pieces.len() >= 3);
        assert!(
            pieces
                .iter()
                .all(|p| p.len() <= MAX_PHONEMES && p[0] != ' ')
        );
        let joined: usize = pieces
            .iter()
            .map(|p| p.iter().filter(|c| **c != ' ').count())
            .sum();
        assert_eq!(joined, sentence.iter().filter(|c| **c != ' ').count());
        assert_eq!(split_long(word.clone()), vec![word]);
    }
}
