//! Whisper (Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision",
//! 2022), tiny.en, from CTranslate2's `model.bin`: an encoder over the log-mel
//! spectrogram and a decoder that writes the transcript token by token.
//!
//! ```text
//! encoder: mel [80, T] -> conv k3 -> GELU -> conv k3 /2 -> GELU -> + sinusoids   [T/2, 384]
//!          4 x (x += attn(LN x); x += MLP(LN x)) -> LN
//! decoder: tokens -> embedding + learned positions
//!          4 x (x += causal self-attn(LN x); x += cross-attn(LN x, encoder); x += MLP(LN x))
//!          LN -> logits = x · embeddingᵀ (tied)
//! ```
//!
//! The encoder takes the clip's own length (up to 30 s), not always 30 s of padding: its
//! positions are absolute, so a shorter window only drops the padding's frames.

use burn::module::{Module, Param};
use burn::nn::conv::Conv1d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, PaddingConfig1d};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use modelkit::fastmath::gelu;

use crate::ct2::{Ct2Error, Ct2Model};
use crate::half_matvec::HalfMatrix;

pub const N_MELS: usize = 80;
/// Encoder positions: 30 s of 20 ms frames.
pub const MAX_FRAMES: usize = 3000;

#[derive(Debug, Clone, Copy)]
pub struct WhisperDims {
    pub d: usize,
    pub heads: usize,
    pub layers: usize,
    pub vocab: usize,
    pub text_positions: usize,
}

/// Multi-head attention with Whisper's fused projections.
#[derive(Module, Debug)]
pub struct Attention {
    pub norm: LayerNorm,
    /// `[d] -> [3d]` (q, k, v) for self-attention, `[d] -> [d]` (q) for cross-attention.
    pub query: Linear,
    /// Cross-attention only: `[d] -> [2d]` (k, v) over the encoder output.
    pub key_value: Option<Linear>,
    pub out: Linear,
    pub heads: usize,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub norm: LayerNorm,
    pub up: Linear,
    pub down: Linear,
}

impl Mlp {
    /// `x + W2 gelu(W1 LN(x))`
    ///
    /// # Shapes
    /// - `[T, d]` -> `[T, d]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self
            .down
            .forward(gelu(self.up.forward(self.norm.forward(x.clone()))));
        x + h
    }
}

/// `softmax(q kᵀ / √dₕ + mask) v` per head.
///
/// # Shapes
/// - q `[Tq, d]`, k and v `[Tk, d]` -> `[Tq, d]`
fn attend(q: Tensor<2>, k: Tensor<2>, v: Tensor<2>, heads: usize, causal: bool) -> Tensor<2> {
    let tk = k.dims()[0];
    let (k_t, v) = (split_heads(k, heads).swap_dims(1, 2), split_heads(v, heads));
    let tq = q.dims()[0];
    // One query (a decode step) sees every key: no mask.
    let mask =
        (causal && tq > 1).then(|| modelkit::causal_mask(tq, tk, &q.device()).reshape([1, tq, tk]));
    if tq <= QUERY_BLOCK {
        return attend_heads(q, k_t, v, mask);
    }
    // The encoder's 750 to 1500 queries in blocks: the scores of all of them at once are
    // `heads * tq * tk` floats (54 MB for a 30 s window), a block's a fifth of that or less.
    let blocks = (0..tq)
        .step_by(QUERY_BLOCK)
        .map(|at| {
            let n = QUERY_BLOCK.min(tq - at);
            let m = mask.as_ref().map(|m| m.clone().narrow(1, at, n));
            attend_heads(q.clone().narrow(0, at, n), k_t.clone(), v.clone(), m)
        })
        .collect();
    Tensor::cat(blocks, 0)
}

/// Queries whose attention scores are computed together.
const QUERY_BLOCK: usize = 256;

/// `[T, d]` -> `[heads, T, d / heads]`.
fn split_heads(x: Tensor<2>, heads: usize) -> Tensor<3> {
    let [t, d] = x.dims();
    x.reshape([t, heads, d / heads]).swap_dims(0, 1)
}

/// [`attend`] with keys (transposed) and values already split into heads.
///
/// # Shapes
/// - q `[Tq, d]`, k_t `[heads, dₕ, Tk]`, v `[heads, Tk, dₕ]` -> `[Tq, d]`
fn attend_heads(q: Tensor<2>, k_t: Tensor<3>, v: Tensor<3>, mask: Option<Tensor<3>>) -> Tensor<2> {
    let [tq, d] = q.dims();
    let [heads, hd, _] = k_t.dims();
    let mut scores = split_heads(q, heads).matmul(k_t) / (hd as f64).sqrt();
    if let Some(mask) = mask {
        scores = scores + mask;
    }
    softmax(scores, 2)
        .matmul(v)
        .swap_dims(0, 1)
        .reshape([tq, d])
}

/// A tensor's values laid out in order (a copy made once, so that later products do not
/// copy a strided view at every step).
fn contiguous(x: Tensor<3>) -> Tensor<3> {
    let device = x.device();
    Tensor::from_data(x.into_data(), &device)
}

/// The encoder output as one cross-attention's keys (split into heads, transposed) and
/// values (split into heads).
#[derive(Debug, Clone)]
pub struct Memory {
    /// `[heads, dₕ, T]`.
    keys_t: Tensor<3>,
    /// `[heads, T, dₕ]`.
    values: Tensor<3>,
}

impl Attention {
    /// Self-attention: `x + Wo attend(Wq LN x, Wk LN x, Wv LN x)`, keys and values of
    /// earlier positions taken from (and appended to) `cache` when given.
    ///
    /// # Shapes
    /// - `[T, d]` -> `[T, d]`
    pub fn forward_self(
        &self,
        x: Tensor<2>,
        cache: Option<&mut (Tensor<2>, Tensor<2>)>,
        causal: bool,
    ) -> Tensor<2> {
        let d = x.dims()[1];
        let qkv = self.query.forward(self.norm.forward(x.clone()));
        let q = qkv.clone().narrow(1, 0, d);
        let mut k = qkv.clone().narrow(1, d, d);
        let mut v = qkv.narrow(1, 2 * d, d);
        if let Some(cache) = cache {
            if cache.0.dims()[0] > 0 {
                k = Tensor::cat(vec![cache.0.clone(), k], 0);
                v = Tensor::cat(vec![cache.1.clone(), v], 0);
            }
            *cache = (k.clone(), v.clone());
        }
        x + self.out.forward(attend(q, k, v, self.heads, causal))
    }

    /// Cross-attention over the encoder's keys and values (see [`Attention::memory`]).
    pub fn forward_cross(&self, x: Tensor<2>, memory: &Memory) -> Tensor<2> {
        let q = self.query.forward(self.norm.forward(x.clone()));
        x + self.out.forward(attend_heads(
            q,
            memory.keys_t.clone(),
            memory.values.clone(),
            None,
        ))
    }

    /// The encoder output's keys and values for this cross-attention, computed once per
    /// utterance.
    pub fn memory(&self, encoded: Tensor<2>) -> Memory {
        let d = encoded.dims()[1];
        let kv = self
            .key_value
            .as_ref()
            .expect("cross-attention has a key/value projection")
            .forward(encoded);
        let (k, v) = (kv.clone().narrow(1, 0, d), kv.narrow(1, d, d));
        Memory {
            keys_t: contiguous(split_heads(k, self.heads).swap_dims(1, 2)),
            values: contiguous(split_heads(v, self.heads)),
        }
    }
}

#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub attn: Attention,
    pub mlp: Mlp,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub attn: Attention,
    pub cross: Attention,
    pub mlp: Mlp,
}

#[derive(Module, Debug)]
pub struct Whisper {
    pub conv1: Conv1d,
    pub conv2: Conv1d,
    /// `[1500, d]` sinusoids.
    pub encoder_positions: Param<Tensor<2>>,
    pub encoder_layers: Vec<EncoderLayer>,
    pub encoder_norm: LayerNorm,
    /// `[vocab, d]`, also the output projection. None on the CPU, where the table is kept
    /// only as `output`.
    pub embedding: Option<Param<Tensor<2>>>,
    /// The same table in f16, as model.bin stores it, for the CPU: the output projection
    /// (decoding reads it whole for every token; see `half_matvec`) and the token lookup.
    /// Kept once, in f16, it is 40 MB where an f32 copy beside it was 80 MB more. None on
    /// other devices, or when the file does not store it in f16.
    #[module(skip)]
    pub output: Option<HalfMatrix>,
    /// `[448, d]`.
    pub decoder_positions: Param<Tensor<2>>,
    pub decoder_layers: Vec<DecoderLayer>,
    pub decoder_norm: LayerNorm,
}

/// What decoding carries between steps: the encoder's keys and values per layer, and
/// each self-attention's cache.
pub struct DecoderState {
    memory: Vec<Memory>,
    cache: Vec<(Tensor<2>, Tensor<2>)>,
    position: usize,
}

impl Whisper {
    /// The encoder output for a log-mel spectrogram of `frames` (even, at most 3000).
    ///
    /// # Shapes
    /// - mel `[80, frames]` -> `[frames / 2, d]`
    pub fn encode(&self, mel: Tensor<2>) -> Tensor<2> {
        let [m, t] = mel.dims();
        let x = gelu(self.conv1.forward(mel.reshape([1, m, t])));
        let x = gelu(self.conv2.forward(x));
        let [_, d, t2] = x.dims();
        let x = x.reshape([d, t2]).transpose();
        let mut x = x + self.encoder_positions.val().narrow(0, 0, t2);
        for layer in &self.encoder_layers {
            x = layer.attn.forward_self(x, None, false);
            x = layer.mlp.forward(x);
        }
        self.encoder_norm.forward(x)
    }

    /// Starts decoding over an encoder output.
    pub fn start(&self, encoded: Tensor<2>) -> DecoderState {
        let device = encoded.device();
        let d = encoded.dims()[1];
        DecoderState {
            memory: self
                .decoder_layers
                .iter()
                .map(|l| l.cross.memory(encoded.clone()))
                .collect(),
            cache: self
                .decoder_layers
                .iter()
                .map(|_| {
                    (
                        Tensor::zeros([0, d], &device),
                        Tensor::zeros([0, d], &device),
                    )
                })
                .collect(),
            position: 0,
        }
    }

    /// Feeds tokens after those `state` holds; returns the logits after the last one.
    ///
    /// # Shapes
    /// - tokens: `n` ids -> `[vocab]` logits
    pub fn decode(&self, tokens: &[u32], state: &mut DecoderState) -> Vec<f32> {
        let positions = self.decoder_positions.val();
        let device = positions.device();
        let n = tokens.len();
        let embedded = match (&self.embedding, &self.output) {
            (Some(table), _) => {
                let ids = Tensor::<1, burn::tensor::Int>::from_data(
                    TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n]),
                    &device,
                );
                table.val().select(0, ids)
            }
            (None, Some(half)) => {
                let rows: Vec<f32> = tokens
                    .iter()
                    .flat_map(|&t| half.row(t as usize).iter().map(|v| v.to_f32()))
                    .collect();
                Tensor::from_data(TensorData::new(rows, [n, half.cols()]), &device)
            }
            (None, None) => unreachable!("Whisper::load keeps the table one way or the other"),
        };
        let mut x = embedded + positions.narrow(0, state.position, n);
        for (i, layer) in self.decoder_layers.iter().enumerate() {
            x = layer.attn.forward_self(x, Some(&mut state.cache[i]), true);
            x = layer.cross.forward_cross(x, &state.memory[i]);
            x = layer.mlp.forward(x);
        }
        state.position += n;
        let last = self.decoder_norm.forward(x.narrow(0, n - 1, 1));
        // E · lastᵀ rather than last · Eᵀ: transposing the [1, d] row is free, while a
        // transposed [vocab, d] table was copied (80 MB) at every step on the CPU backend.
        match (&self.output, &self.embedding) {
            (Some(output), _) => {
                let x = last.into_data().try_to_vec::<f32>().unwrap_or_default();
                output.matvec(&x)
            }
            (None, Some(table)) => {
                let logits = table.val().matmul(last.transpose());
                logits.into_data().try_to_vec::<f32>().unwrap_or_default()
            }
            (None, None) => unreachable!("Whisper::load keeps the table one way or the other"),
        }
    }

    /// Longest transcript, in positions (prompt included).
    pub fn text_positions(&self) -> usize {
        self.decoder_positions.val().dims()[0]
    }

    /// Loads `model.bin` (CTranslate2's WhisperSpec).
    pub fn load(model: &Ct2Model, device: &Device) -> Result<Self, Ct2Error> {
        let width = |name: &str| {
            let meta = model.weights().meta(name)?;
            meta.shape
                .first()
                .copied()
                .ok_or_else(|| Ct2Error::Malformed {
                    what: format!("{name} has rank 0"),
                    offset: 0,
                })
        };
        let d = width("encoder/conv1/bias")?;
        let heads = model.scalar("encoder/num_heads")? as usize;
        if heads == 0 || d % heads != 0 {
            return Err(Ct2Error::Malformed {
                what: format!("encoder/num_heads = {heads} does not divide the width {d}"),
                offset: 0,
            });
        }
        let vocab = width("decoder/embeddings/weight")?;
        let layers = (0..)
            .take_while(|i| {
                model
                    .variables
                    .contains_key(&format!("encoder/layer_{i}/ffn/linear_0/weight"))
            })
            .count();
        let w = Weights { model, device, d };
        let output = cpu_output(model, device, vocab, d)?;
        let encoder_layers = (0..layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(EncoderLayer {
                    attn: w.attention(&format!("{p}/self_attention"), 3 * d, false, heads)?,
                    mlp: w.mlp(&format!("{p}/ffn"))?,
                })
            })
            .collect::<Result<Vec<_>, Ct2Error>>()?;
        let decoder_layers = (0..layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    attn: w.attention(&format!("{p}/self_attention"), 3 * d, false, heads)?,
                    cross: w.attention(&format!("{p}/attention"), d, true, heads)?,
                    mlp: w.mlp(&format!("{p}/ffn"))?,
                })
            })
            .collect::<Result<Vec<_>, Ct2Error>>()?;
        Ok(Whisper {
            conv1: w.conv("encoder/conv1", N_MELS, 1)?,
            conv2: w.conv("encoder/conv2", d, 2)?,
            encoder_positions: w.matrix(
                "encoder/position_encodings/encodings",
                MAX_FRAMES / 2,
                d,
            )?,
            encoder_layers,
            encoder_norm: w.norm("encoder/layer_norm")?,
            embedding: match &output {
                Some(_) => None,
                None => Some(w.matrix("decoder/embeddings/weight", vocab, d)?),
            },
            output,
            decoder_positions: w.matrix(
                "decoder/position_encodings/encodings",
                // A rank-0 variable of that name is refused by the shape check below.
                model
                    .variables
                    .get("decoder/position_encodings/encodings")
                    .map_or(448, |v| v.shape.first().copied().unwrap_or(0)),
                d,
            )?,
            decoder_layers,
            decoder_norm: w.norm("decoder/layer_norm")?,
        })
    }
}

/// The embedding table in f16 for the CPU, when model.bin stores it so (nothing is lost).
fn cpu_output(
    model: &Ct2Model,
    device: &Device,
    vocab: usize,
    d: usize,
) -> Result<Option<HalfMatrix>, Ct2Error> {
    if !modelkit::is_cpu(device) {
        return Ok(None);
    }
    let half = model.get_f16("decoder/embeddings/weight", &[vocab, d])?;
    Ok(half.and_then(|h| HalfMatrix::new(h, vocab, d)))
}

/// Maps `model.bin`'s names onto burn layers.
struct Weights<'a> {
    model: &'a Ct2Model<'a>,
    device: &'a Device,
    d: usize,
}

impl Weights<'_> {
    fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>, Ct2Error> {
        let v = self.model.get(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(v, shape), self.device))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Param<Tensor<2>>, Ct2Error> {
        Ok(Param::from_tensor(self.tensor(name, [rows, cols])?))
    }

    /// `{p}/weight` `[out, in]` (torch layout) and `{p}/bias`.
    fn linear(&self, p: &str, d_in: usize, d_out: usize) -> Result<Linear, Ct2Error> {
        Ok(Linear {
            weight: Param::from_tensor(
                self.tensor(&format!("{p}/weight"), [d_out, d_in])?
                    .transpose(),
            ),
            bias: Some(Param::from_tensor(
                self.tensor(&format!("{p}/bias"), [d_out])?,
            )),
        })
    }

    fn norm(&self, p: &str) -> Result<LayerNorm, Ct2Error> {
        let mut n = LayerNormConfig::new(self.d)
            .with_epsilon(1e-5)
            .init(self.device);
        n.gamma = Param::from_tensor(self.tensor(&format!("{p}/gamma"), [self.d])?);
        n.beta = Some(Param::from_tensor(
            self.tensor(&format!("{p}/beta"), [self.d])?,
        ));
        Ok(n)
    }

    fn conv(&self, p: &str, d_in: usize, stride: usize) -> Result<Conv1d, Ct2Error> {
        let d = self.d;
        Ok(Conv1d {
            weight: Param::from_tensor(self.tensor(&format!("{p}/weight"), [d, d_in, 3])?),
            bias: Some(Param::from_tensor(self.tensor(&format!("{p}/bias"), [d])?)),
            stride,
            kernel_size: 3,
            dilation: 1,
            groups: 1,
            padding: PaddingConfig1d::Explicit(1, 1),
        })
    }

    fn mlp(&self, p: &str) -> Result<Mlp, Ct2Error> {
        let d = self.d;
        Ok(Mlp {
            norm: self.norm(&format!("{p}/layer_norm"))?,
            up: self.linear(&format!("{p}/linear_0"), d, 4 * d)?,
            down: self.linear(&format!("{p}/linear_1"), 4 * d, d)?,
        })
    }

    fn attention(
        &self,
        p: &str,
        query_out: usize,
        cross: bool,
        heads: usize,
    ) -> Result<Attention, Ct2Error> {
        let d = self.d;
        let (key_value, out) = if cross {
            (
                Some(self.linear(&format!("{p}/linear_1"), d, 2 * d)?),
                self.linear(&format!("{p}/linear_2"), d, d)?,
            )
        } else {
            (None, self.linear(&format!("{p}/linear_1"), d, d)?)
        };
        Ok(Attention {
            norm: self.norm(&format!("{p}/layer_norm"))?,
            query: self.linear(&format!("{p}/linear_0"), d, query_out)?,
            key_value,
            out,
            heads,
        })
    }
}

/// Greedy decoding for English-only Whisper, as faster-whisper does with beam size 1 and
/// no timestamps: prompt `<|startoftranscript|><|notimestamps|>`, the model's suppressed
/// tokens masked at every step (and blank / end of text at the first), until end of text.
pub struct Greedy {
    pub prompt: Vec<u32>,
    pub end: u32,
    pub suppress: Vec<u32>,
    pub suppress_first: Vec<u32>,
    /// Tokens at or above this are timestamps, never produced without timestamps.
    pub timestamps_from: u32,
}

/// One decoding: the transcript's token ids (prompt and end excluded) and the sum of their
/// log probabilities under the masked distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tokens: Vec<u32>,
    pub sum_logprob: f32,
}

impl Greedy {
    /// Token ids of the transcript (prompt and end excluded).
    pub fn run(&self, model: &Whisper, encoded: Tensor<2>) -> Vec<u32> {
        self.run_with(model, encoded, |logits| {
            (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap_or(0) as u32
        })
        .tokens
    }

    /// Decodes with `choose` picking each token from the masked logits (the largest for
    /// greedy decoding, a sample for temperature fallback).
    pub fn run_with(
        &self,
        model: &Whisper,
        encoded: Tensor<2>,
        mut choose: impl FnMut(&mut [f32]) -> u32,
    ) -> Decoded {
        let mut out = Decoded {
            tokens: Vec::new(),
            sum_logprob: 0.0,
        };
        // A prompt that fills the text context leaves no room for a transcript.
        let limit = model.text_positions().saturating_sub(self.prompt.len());
        if limit == 0 {
            return out;
        }
        let mut state = model.start(encoded);
        let mut logits = model.decode(&self.prompt, &mut state);
        while out.tokens.len() < limit {
            self.mask(&mut logits, out.tokens.is_empty());
            let next = choose(&mut logits.clone());
            out.sum_logprob += log_softmax_at(&logits, next as usize);
            if next == self.end {
                break;
            }
            out.tokens.push(next);
            logits = model.decode(&[next], &mut state);
        }
        out
    }

    /// The suppressed tokens (and at the first step blank and end of text) and every
    /// timestamp token to -inf.
    fn mask(&self, logits: &mut [f32], first: bool) {
        let extra: &[u32] = if first { &self.suppress_first } else { &[] };
        for &t in self.suppress.iter().chain(extra) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        for l in logits.iter_mut().skip(self.timestamps_from as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// `ln softmax(logits)[i]`; -inf for a masked or missing token.
fn log_softmax_at(logits: &[f32], i: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    logits
        .get(i)
        .map_or(f32::NEG_INFINITY, |l| l - max - z.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ct2::tests::model_bin;

    /// Issue 15: `num_heads = 0` would divide by zero sizing the heads.
    #[test]
    fn a_head_count_that_does_not_divide_the_width_is_refused() {
        for heads in [0.0, 5.0] {
            let bytes = model_bin(
                &[
                    ("encoder/conv1/bias", &[4], &[0.0; 4]),
                    ("encoder/num_heads", &[], &[heads]),
                ],
                &[],
            );
            let model = Ct2Model::parse(&bytes).unwrap();
            let err = Whisper::load(&model, &Device::flex())
                .unwrap_err()
                .to_string();
            assert!(err.contains("num_heads"), "{err}");
        }
    }
}
