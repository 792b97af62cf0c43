//! Speech to text from the model cache: Whisper tiny.en with its vocabulary and the
//! decoding rules of its config, over audio of any length (30 s windows).

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use encoders::audio::LogMel;
use encoders::audio::logmel::HOP;
use encoders::audio::whisper::{Decoded, Greedy, MAX_FRAMES, Whisper};
use encoders::ct2::Ct2Model;

use crate::models;

/// The shortest encoder window, in frames (15 s).
const MIN_WINDOW: usize = 1500;

/// faster-whisper's fallback: when a window's greedy transcript repeats itself (its text
/// compresses by more than `compression_ratio` with zlib) or the model is unsure of it (mean
/// log probability per token below `log_prob`), decode again sampling at the next
/// temperature. When every temperature fails, keep the decoding with the best mean log
/// probability among those that do not repeat (among all if they all do).
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub temperatures: Vec<f32>,
    pub compression_ratio: f32,
    pub log_prob: f32,
}

impl Default for Fallback {
    /// faster-whisper's defaults.
    fn default() -> Self {
        Fallback {
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio: 2.4,
            log_prob: -1.0,
        }
    }
}

impl Fallback {
    /// Greedy decoding only (how the reference transcripts were made).
    pub fn none() -> Self {
        Fallback {
            temperatures: vec![0.0],
            ..Fallback::default()
        }
    }
}

/// How one decoding of a window went.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub temperature: f32,
    pub tokens: Vec<u32>,
    /// Text bytes over zlib-compressed bytes (high: the text repeats itself).
    pub compression_ratio: f32,
    /// `sum ln p / (tokens + 1)`, the end of text counted, as faster-whisper does.
    pub avg_logprob: f32,
}

/// `len(text) / len(zlib(text))`, faster-whisper's repetition measure.
pub fn compression_ratio(text: &[u8]) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = std::io::Write::write_all(&mut z, text)
        .and_then(|()| z.finish())
        .map_or(text.len(), |c| c.len());
    text.len() as f32 / compressed.max(1) as f32
}

/// `tokens` with a loop at its end cut after the loop's first turn: the shortest period
/// (up to 32 tokens) whose turns repeat at least three times back to back at the end.
pub fn cut_loop(tokens: &[u32]) -> Vec<u32> {
    for period in 1..=32.min(tokens.len() / 3) {
        let end = tokens.len();
        let unit = &tokens[end - period..];
        let mut start = end - period;
        while start >= period && &tokens[start - period..start] == unit {
            start -= period;
        }
        if (end - start) / period >= 3 {
            return tokens[..start + period].to_vec();
        }
    }
    tokens.to_vec()
}

/// What was said.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub tokens: Vec<u32>,
}

pub struct Transcriber {
    pub fallback: Fallback,
    model: Whisper,
    greedy: Greedy,
    logmel: LogMel,
    /// Each token's bytes.
    vocabulary: Vec<Vec<u8>>,
    device: Device,
}

impl Transcriber {
    /// Whisper tiny.en as `percept models pull` cached it.
    pub fn load(device: &Device) -> Result<Self> {
        let files = models::require_all("whisper-tiny-en")?;
        let bytes = std::fs::read(&files[0])
            .with_context(|| format!("cannot read {}", files[0].display()))?;
        let ct2 = Ct2Model::parse(&bytes)?;
        let model = Whisper::load(&ct2, device)?;
        // The file's 78 MB are not needed once the weights are made.
        drop(ct2);
        drop(bytes);
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[1])?)
            .with_context(|| format!("{} is not JSON", files[1].display()))?;
        let ids = |key: &str| -> Vec<u32> {
            config[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_u64())
                        .map(|t| t as u32)
                        .collect()
                })
                .unwrap_or_default()
        };
        let vocabulary: Vec<Vec<u8>> = std::fs::read_to_string(&files[2])?
            .lines()
            .map(llm::tokenizer::byte_level_bytes)
            .collect();
        let token = |text: &str| -> Result<u32> {
            let bytes = text.as_bytes();
            vocabulary
                .iter()
                .position(|t| t == bytes)
                .map(|i| i as u32)
                .with_context(|| format!("the Whisper vocabulary has no {text}"))
        };
        let greedy = Greedy {
            prompt: vec![token("<|startoftranscript|>")?, token("<|notimestamps|>")?],
            end: token("<|endoftext|>")?,
            suppress: ids("suppress_ids"),
            suppress_first: ids("suppress_ids_begin"),
            timestamps_from: token("<|0.00|>")?,
        };
        Ok(Transcriber {
            fallback: Fallback::default(),
            model,
            greedy,
            logmel: LogMel::new(),
            vocabulary,
            device: device.clone(),
        })
    }

    /// Transcribes 16 kHz mono audio: each 30 s window on its own, the windows' texts
    /// joined; a short window is padded to twice its length (at least 15 s), not to 30 s.
    pub fn transcribe(&self, samples: &[f32]) -> Transcript {
        let window = MAX_FRAMES * HOP;
        let mut tokens = Vec::new();
        for part in samples.chunks(window) {
            tokens.extend(self.window(part));
        }
        let bytes = self.text_bytes(&tokens);
        Transcript {
            text: String::from_utf8_lossy(&bytes).trim().to_owned(),
            tokens,
        }
    }

    fn window(&self, samples: &[f32]) -> Vec<u32> {
        self.decode_window(samples, None)
            .pop()
            .map(|a| a.tokens)
            .unwrap_or_default()
    }

    /// Every decoding of one window of at most 30 s, the one kept last. `frames` overrides
    /// the encoder window's length (for tests and measurements).
    pub fn decode_window(&self, samples: &[f32], frames: Option<usize>) -> Vec<Attempt> {
        let mel = self.logmel.compute(samples);
        // The encoder window: twice the audio, at least 15 s, at most 30 s; frames past the
        // audio are 0.0, as Whisper pads the log-mel. Measured on fixtures/speech (3-4 s
        // clips), transcripts identical to faster-whisper's (30 s): 10/10 with 30 s and
        // with 15 s windows, 8/10 with 10 s, and with the clip's own length Whisper never
        // says end-of-text and repeats itself. 15 s is 2.4x less work than 30 s.
        let frames = frames
            .unwrap_or((2 * mel.frames).clamp(MIN_WINDOW, MAX_FRAMES))
            .clamp(2, MAX_FRAMES)
            .next_multiple_of(2);
        let mut data = vec![0f32; mel.n_mels * frames];
        let n = mel.frames.min(frames);
        for m in 0..mel.n_mels {
            data[m * frames..m * frames + n]
                .copy_from_slice(&mel.data[m * mel.frames..m * mel.frames + n]);
        }
        let x = Tensor::from_data(TensorData::new(data, [mel.n_mels, frames]), &self.device);
        let encoded = self.model.encode(x);
        let mut attempts = Vec::new();
        for (k, &temperature) in self.fallback.temperatures.iter().enumerate() {
            let decoded = self.decode(encoded.clone(), temperature, k as u64);
            let attempt = self.judge(temperature, decoded);
            let good = attempt.compression_ratio <= self.fallback.compression_ratio
                && attempt.avg_logprob >= self.fallback.log_prob;
            attempts.push(attempt);
            if good {
                return attempts;
            }
        }
        // Every temperature failed: the most confident decoding that does not repeat.
        let repeats = |a: &Attempt| a.compression_ratio > self.fallback.compression_ratio;
        let unlooped: Vec<&Attempt> = attempts.iter().filter(|a| !repeats(a)).collect();
        let pool = if unlooped.is_empty() {
            attempts.iter().collect()
        } else {
            unlooped
        };
        let best = pool
            .into_iter()
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .cloned();
        if let Some(best) = best {
            let mut kept = best;
            if repeats(&kept) {
                // Still looping at every temperature (faster-whisper would keep the loop):
                // the loop is cut after its first turn.
                kept.tokens = cut_loop(&kept.tokens);
                kept.compression_ratio = compression_ratio(&self.text_bytes(&kept.tokens));
            }
            attempts.push(kept);
        }
        attempts
    }

    /// One decoding at `temperature` (0: greedy).
    fn decode(&self, encoded: Tensor<2>, temperature: f32, seed: u64) -> Decoded {
        let params = llm::SamplingParams {
            temperature: if temperature.is_finite() {
                temperature.max(0.0)
            } else {
                0.0
            },
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed,
        };
        let mut sampler = llm::sampling::Sampler::new(params).unwrap_or_else(|_| {
            llm::sampling::Sampler::new(llm::SamplingParams::greedy()).expect("greedy is valid")
        });
        self.greedy
            .run_with(&self.model, encoded, |logits| sampler.sample(logits, &[]))
    }

    fn judge(&self, temperature: f32, decoded: Decoded) -> Attempt {
        let text = self.text_bytes(&decoded.tokens);
        Attempt {
            temperature,
            compression_ratio: compression_ratio(&text),
            avg_logprob: decoded.sum_logprob / (decoded.tokens.len() + 1) as f32,
            tokens: decoded.tokens,
        }
    }

    fn text_bytes(&self, tokens: &[u32]) -> Vec<u8> {
        tokens
            .iter()
            .flat_map(|&t| self.vocabulary.get(t as usize).cloned().unwrap_or_default())
            .collect()
    }
}
