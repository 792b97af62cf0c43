//! MiniLM sentence encoder: all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", 2019;
//! Wang et al., "MiniLM", 2020), a 6-layer BERT whose mean-pooled, unit-length output puts
//! sentences that mean the same near each other ("where can I wash my hands" near "Toilets
//! are in the basement"), from its `model.safetensors`.
//!
//! ```text
//! ids [n] -> word + position + type-0 embeddings -> LN                     [n, 384]
//! 6 x (x = LN(x + attn(x)); x = LN(x + W2 GELU(W1 x)))   (post-norm, 12 heads)
//! mean over the n positions -> / |.|                                        [384]
//! ```
//!
//! Memory: the kiosk shares a 300 MiB budget with the language model and Whisper, so the
//! layers' matrices are kept in f16 (21 MB instead of 42) and widened to f32 one layer at a
//! time for the product; the word-embedding table (30522 rows, 47 MB in f32) is read row
//! by row from the memory-mapped file, so only the rows of words actually seen are resident.

use std::path::Path;

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::module::Param;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::wordpiece::{VocabError, WordPiece};
use crate::weights::WeightError;

#[derive(Debug, thiserror::Error)]
pub enum MiniLmError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors file: {what}")]
    Format { path: String, what: String },
    #[error("{path}: {source}")]
    Weight { path: String, source: WeightError },
    #[error("{path}: tensor '{name}' is {dtype:?}; the encoder reads F32, F16 or BF16")]
    Dtype {
        path: String,
        name: String,
        dtype: Dtype,
    },
    #[error(transparent)]
    Vocab(#[from] VocabError),
}

/// What the checkpoint's `config.json` says and the tensors do not.
#[derive(Debug, Clone, Copy)]
pub struct MiniLmConfig {
    pub heads: usize,
    pub layer_norm_eps: f64,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers'
    /// `max_seq_length`).
    pub max_tokens: usize,
}

impl Default for MiniLmConfig {
    /// all-MiniLM-L6-v2's.
    fn default() -> Self {
        MiniLmConfig {
            heads: 12,
            layer_norm_eps: 1e-12,
            max_tokens: 256,
        }
    }
}

/// A sentence as a unit vector: the cosine of two is their dot product.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceEmbedding(pub Vec<f32>);

impl SentenceEmbedding {
    /// Cosine similarity, in [-1, 1].
    pub fn similarity(&self, other: &SentenceEmbedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

/// `y = x Wᵀ + b` with W `[out, in]` kept in f16.
#[derive(Debug, Clone)]
struct HalfLinear {
    weight: Vec<f16>,
    bias: Vec<f32>,
    d_in: usize,
}

impl HalfLinear {
    /// # Shapes
    /// - x `[n, in]` -> `[n, out]`
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let device = x.device();
        let d_out = self.bias.len();
        let mut w = vec![0f32; self.weight.len()];
        self.weight.convert_to_f32_slice(&mut w);
        let w = Tensor::<2>::from_data(TensorData::new(w, [d_out, self.d_in]), &device);
        let b = Tensor::<1>::from_data(TensorData::new(self.bias.clone(), [d_out]), &device);
        x.matmul(w.transpose()) + b.unsqueeze()
    }
}

/// One post-norm transformer layer of BERT.
#[derive(Debug, Clone)]
struct Layer {
    query: HalfLinear,
    key: HalfLinear,
    value: HalfLinear,
    out: HalfLinear,
    attn_norm: LayerNorm,
    up: HalfLinear,
    down: HalfLinear,
    ffn_norm: LayerNorm,
}

impl Layer {
    /// `x = LN(x + O · softmax(Q Kᵀ / √dₕ) V)`, then `x = LN(x + W₂ GELU(W₁ x))`; every
    /// position sees every other (one sentence, no padding, no mask).
    ///
    /// # Shapes
    /// - x `[n, d]` -> `[n, d]`
    fn forward(&self, x: Tensor<2>, heads: usize) -> Tensor<2> {
        let [n, d] = x.dims();
        let hd = d / heads;
        let split = |t: Tensor<2>| t.reshape([n, heads, hd]).swap_dims(0, 1);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(1, 2)) / (hd as f64).sqrt();
        let attended = softmax(scores, 2).matmul(v).swap_dims(0, 1).reshape([n, d]);
        let x = self.attn_norm.forward(x + self.out.forward(attended));
        let h = self.down.forward(gelu(self.up.forward(x.clone())));
        self.ffn_norm.forward(x + h)
    }
}

/// all-MiniLM-L6-v2 with its tokenizer.
#[derive(Debug)]
pub struct MiniLm {
    vocab: WordPiece,
    /// The safetensors file, for the word-embedding rows.
    file: Mmap,
    /// Byte offset of the word-embedding table in `file`, and its dtype.
    words_at: usize,
    words_dtype: Dtype,
    rows: usize,
    d: usize,
    /// `[positions, d]` plus the type-0 row, summed once.
    positions: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    config: MiniLmConfig,
    device: Device,
}

impl MiniLm {
    pub fn load(
        model: &Path,
        vocab: &Path,
        config: MiniLmConfig,
        device: &Device,
    ) -> Result<Self, MiniLmError> {
        let vocab = WordPiece::load(vocab)?;
        let path = model.display().to_string();
        let io = |source| MiniLmError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(model).map_err(io)?;
        // SAFETY: the file is only read; percept does not write model files while running.
        let file = unsafe { Mmap::map(&file) }.map_err(io)?;
        let st = SafeTensors::deserialize(&file).map_err(|e| MiniLmError::Format {
            path: path.clone(),
            what: e.to_string(),
        })?;
        let w = Reader {
            st: &st,
            path: &path,
            device,
            eps: config.layer_norm_eps,
        };
        let words = w.view("embeddings.word_embeddings.weight")?;
        let [rows, d] = match words.shape() {
            &[r, d] if r > 0 && d > 0 && d % config.heads == 0 => [r, d],
            s => return Err(w.shape_error("embeddings.word_embeddings.weight", s, &[30522, 384])),
        };
        if rows > vocab.len().max(1) * 2 {
            // The table must cover the vocabulary; far more rows than tokens is another model.
            return Err(w.shape_error("embeddings.word_embeddings.weight", words.shape(), &[vocab.len(), d]));
        }
        w.dtype_of("embeddings.word_embeddings.weight", words.dtype())?;
        let words_at = words.data().as_ptr() as usize - file.as_ptr() as usize;
        let words_dtype = words.dtype();
        let max_pos = w.view("embeddings.position_embeddings.weight")?.shape()[0];
        let mut positions = w.floats("embeddings.position_embeddings.weight", &[max_pos, d])?;
        let types = w.floats("embeddings.token_type_embeddings.weight", &[2, d])?;
        for row in positions.chunks_mut(d) {
            row.iter_mut().zip(&types[..d]).for_each(|(p, t)| *p += t);
        }
        let embed_norm = w.norm("embeddings.LayerNorm", d)?;
        let layers = (0..)
            .take_while(|i| st.tensor(&format!("encoder.layer.{i}.attention.self.query.weight")).is_ok())
            .map(|i| w.layer(&format!("encoder.layer.{i}."), d))
            .collect::<Result<Vec<_>, _>>()?;
        let config = MiniLmConfig {
            max_tokens: config.max_tokens.min(max_pos),
            ..config
        };
        Ok(MiniLm {
            vocab,
            file,
            words_at,
            words_dtype,
            rows,
            d,
            positions,
            embed_norm,
            layers,
            config,
            device: device.clone(),
        })
    }

    /// The sentence's embedding: the mean of the last layer over every token (the frame
    /// included, as sentence-transformers pools), scaled to unit length.
    pub fn embed(&self, text: &str) -> SentenceEmbedding {
        let ids = self.vocab.encode(text, self.config.max_tokens);
        let n = ids.len();
        let mut x = Vec::with_capacity(n * self.d);
        for (pos, &id) in ids.iter().enumerate() {
            let at = x.len();
            x.extend(self.word_row(id as usize));
            let p = &self.positions[pos * self.d..(pos + 1) * self.d];
            x[at..].iter_mut().zip(p).for_each(|(v, p)| *v += p);
        }
        let mut x = self
            .embed_norm
            .forward(Tensor::from_data(TensorData::new(x, [n, self.d]), &self.device));
        for layer in &self.layers {
            x = layer.forward(x, self.config.heads);
        }
        let mean: Vec<f32> = x.mean_dim(0).into_data().try_to_vec::<f32>().unwrap_or_default();
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        SentenceEmbedding(mean.into_iter().map(|v| v / norm).collect())
    }

    /// One row of the word-embedding table, widened to f32 (an id past the table reads
    /// `[UNK]`'s row).
    fn word_row(&self, id: usize) -> Vec<f32> {
        let id = if id < self.rows { id } else { self.vocab.unk as usize };
        let width = if self.words_dtype == Dtype::F32 { 4 } else { 2 };
        let at = self.words_at + id * self.d * width;
        let bytes = &self.file[at..at + self.d * width];
        to_floats(self.words_dtype, bytes)
    }
}

/// Little-endian F32, F16 or BF16 bytes as f32.
fn to_floats(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// Maps the checkpoint's tensor names (Hugging Face `BertModel`'s) onto the layers.
struct Reader<'a> {
    st: &'a SafeTensors<'a>,
    path: &'a str,
    device: &'a Device,
    eps: f64,
}

impl<'a> Reader<'a> {
    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'a>, MiniLmError> {
        self.st.tensor(name).map_err(|_| MiniLmError::Weight {
            path: self.path.into(),
            source: WeightError::Missing(name.into()),
        })
    }

    fn shape_error(&self, name: &str, got: &[usize], want: &[usize]) -> MiniLmError {
        MiniLmError::Weight {
            path: self.path.into(),
            source: WeightError::Shape {
                name: name.into(),
                got: got.to_vec(),
                want: want.to_vec(),
            },
        }
    }

    fn dtype_of(&self, name: &str, dtype: Dtype) -> Result<(), MiniLmError> {
        match dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
            dtype => Err(MiniLmError::Dtype {
                path: self.path.into(),
                name: name.into(),
                dtype,
            }),
        }
    }

    /// The tensor's values as f32, after checking its shape.
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, MiniLmError> {
        let v = self.view(name)?;
        if v.shape() != shape {
            return Err(self.shape_error(name, v.shape(), shape));
        }
        self.dtype_of(name, v.dtype())?;
        Ok(to_floats(v.dtype(), v.data()))
    }

    fn tensor1(&self, name: &str, d: usize) -> Result<Tensor<1>, MiniLmError> {
        let v = self.floats(name, &[d])?;
        Ok(Tensor::from_data(TensorData::new(v, [d]), self.device))
    }

    fn norm(&self, p: &str, d: usize) -> Result<LayerNorm, MiniLmError> {
        let mut n = LayerNormConfig::new(d).with_epsilon(self.eps).init(self.device);
        n.gamma = Param::from_tensor(self.tensor1(&format!("{p}.weight"), d)?);
        n.beta = Some(Param::from_tensor(self.tensor1(&format!("{p}.bias"), d)?));
        Ok(n)
    }

    /// `{p}.weight` `[out, in]` (torch layout) in f16, and `{p}.bias`.
    fn linear(&self, p: &str, d_in: usize, d_out: usize) -> Result<HalfLinear, MiniLmError> {
        let w = self.floats(&format!("{p}.weight"), &[d_out, d_in])?;
        Ok(HalfLinear {
            weight: w.iter().map(|&v| f16::from_f32(v)).collect(),
            bias: self.floats(&format!("{p}.bias"), &[d_out])?,
            d_in,
        })
    }

    fn layer(&self, p: &str, d: usize) -> Result<Layer, MiniLmError> {
        let inner = self.view(&format!("{p}intermediate.dense.bias"))?.shape().first().copied().unwrap_or(0);
        Ok(Layer {
            query: self.linear(&format!("{p}attention.self.query"), d, d)?,
            key: self.linear(&format!("{p}attention.self.key"), d, d)?,
            value: self.linear(&format!("{p}attention.self.value"), d, d)?,
            out: self.linear(&format!("{p}attention.output.dense"), d, d)?,
            attn_norm: self.norm(&format!("{p}attention.output.LayerNorm"), d)?,
            up: self.linear(&format!("{p}intermediate.dense"), d, inner)?,
            down: self.linear(&format!("{p}output.dense"), inner, d)?,
            ffn_norm: self.norm(&format!("{p}output.LayerNorm"), d)?,
        })
    }
}
