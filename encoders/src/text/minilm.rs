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
//! encoder keeps only its norms, biases and positions (1 MB): each layer's matrices (7 MB)
//! are read from the file when the layer runs and dropped after it, and the word-embedding
//! table (30522 rows, 47 MB) is read row by row. A question costs 42 MB of reads, from the
//! page cache once the file has been read (not timed alone: the kiosk's first token moved
//! +36 ms in an A/B, within its spread); the facts of a
//! knowledge file are embedded together, one read for all ([`MiniLm::embed_all`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use memmap2::Mmap;
use modelkit::fastmath::gelu;
use safetensors::{Dtype, SafeTensors};

use super::wordpiece::{VocabError, WordPiece};
use crate::weights::{Dtype as Kind, Problem, WeightError, Weights};

#[derive(Debug, thiserror::Error)]
pub enum MiniLmError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors file: {what}")]
    Format { path: String, what: String },
    #[error(transparent)]
    Weight(#[from] WeightError),
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

/// Where a tensor's bytes are in the file.
#[derive(Debug, Clone)]
struct Stored {
    /// Byte offset from the start of the file.
    offset: u64,
    dtype: Dtype,
    elements: usize,
}

impl Stored {
    /// The values, read from `file` now, through a small buffer (the only large allocation
    /// is the result).
    fn read(&self, file: &File) -> std::io::Result<Vec<f32>> {
        let width = if self.dtype == Dtype::F32 { 4 } else { 2 };
        let mut out = Vec::with_capacity(self.elements);
        let mut chunk = vec![0u8; READ_CHUNK];
        let (mut at, total) = (0, (self.elements * width) as u64);
        while at < total {
            let n = (total - at).min(READ_CHUNK as u64) as usize;
            file.read_exact_at(&mut chunk[..n], self.offset + at)?;
            out.extend(
                crate::weights::safetensors_floats(self.dtype, &chunk[..n]).unwrap_or_default(),
            );
            at += n as u64;
        }
        Ok(out)
    }
}

/// Bytes read at a time (a multiple of every dtype's width).
const READ_CHUNK: usize = 1 << 16;

/// `y = x Wᵀ + b`, W `[out, in]` read from the file for each use.
#[derive(Debug, Clone)]
struct Linear {
    weight: Stored,
    bias: Vec<f32>,
    d_in: usize,
}

impl Linear {
    /// W `[out, in]`, read now.
    fn weight(&self, file: &File, device: &Device) -> std::io::Result<Tensor<2>> {
        let w = self.weight.read(file)?;
        Ok(Tensor::from_data(
            TensorData::new(w, [self.bias.len(), self.d_in]),
            device,
        ))
    }

    /// `x Wᵀ + b`, as `(W xᵀ)ᵀ`: only the small activations are transposed, never W.
    ///
    /// # Shapes
    /// - x `[n, in]`, w `[out, in]` -> `[n, out]`
    fn apply(&self, x: Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
        let b = Tensor::<1>::from_data(
            TensorData::new(self.bias.clone(), [self.bias.len()]),
            &x.device(),
        );
        w.clone().matmul(x.transpose()).transpose() + b.unsqueeze()
    }
}

/// One post-norm transformer layer of BERT.
#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    ffn_norm: LayerNorm,
}

impl Layer {
    /// `x = LN(x + O · softmax(Q Kᵀ / √dₕ) V)`, then `x = LN(x + W₂ GELU(W₁ x))`, for each
    /// sentence (every position sees every other: one sentence, no padding, no mask). Each
    /// matrix is read once for all the sentences, and dropped before the next is read.
    ///
    /// # Shapes
    /// - each x `[n, d]` -> `[n, d]`
    fn forward(
        &self,
        xs: Vec<Tensor<2>>,
        heads: usize,
        file: &File,
    ) -> std::io::Result<Vec<Tensor<2>>> {
        let Some(device) = xs.first().map(|x| x.device()) else {
            return Ok(xs);
        };
        let each = |l: &Linear, inputs: &[Tensor<2>]| -> std::io::Result<Vec<Tensor<2>>> {
            let w = l.weight(file, &device)?;
            Ok(inputs.iter().map(|x| l.apply(x.clone(), &w)).collect())
        };
        let (q, k, v) = (
            each(&self.query, &xs)?,
            each(&self.key, &xs)?,
            each(&self.value, &xs)?,
        );
        let attended: Vec<Tensor<2>> = q
            .into_iter()
            .zip(k)
            .zip(v)
            .map(|((q, k), v)| {
                let [n, d] = q.dims();
                let hd = d / heads;
                let split = |t: Tensor<2>| t.reshape([n, heads, hd]).swap_dims(0, 1);
                let scores = split(q).matmul(split(k).swap_dims(1, 2)) / (hd as f64).sqrt();
                softmax(scores, 2)
                    .matmul(split(v))
                    .swap_dims(0, 1)
                    .reshape([n, d])
            })
            .collect();
        let xs: Vec<Tensor<2>> = xs
            .into_iter()
            .zip(each(&self.out, &attended)?)
            .map(|(x, o)| self.attn_norm.forward(x + o))
            .collect();
        let hidden: Vec<Tensor<2>> = each(&self.up, &xs)?.into_iter().map(gelu).collect();
        Ok(xs
            .into_iter()
            .zip(each(&self.down, &hidden)?)
            .map(|(x, h)| self.ffn_norm.forward(x + h))
            .collect())
    }
}

/// all-MiniLM-L6-v2 with its tokenizer.
#[derive(Debug)]
pub struct MiniLm {
    vocab: WordPiece,
    /// The safetensors file: the layers' matrices and the word rows are read from it when
    /// used (see the module's note on memory).
    file: File,
    words: Stored,
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
        let file = File::open(model).map_err(io)?;
        // SAFETY: the file is only read; percept does not write model files while running.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let st = SafeTensors::deserialize(&map).map_err(|e| MiniLmError::Format {
            path: path.clone(),
            what: e.to_string(),
        })?;
        let w = Reader {
            st: &st,
            base: map.as_ptr() as usize,
            path: &path,
            device,
            eps: config.layer_norm_eps,
        };
        let name = "embeddings.word_embeddings.weight";
        let shape = w.view(name)?.shape().to_vec();
        let [rows, d] = match shape[..] {
            [r, d] if r >= vocab.len() && d > 0 && d % config.heads == 0 => [r, d],
            _ => {
                let problem = Problem::Shape {
                    name: name.into(),
                    got: shape,
                    want: vec![vocab.len(), 384],
                };
                let file = path.clone();
                return Err(WeightError { file, problem }.into());
            }
        };
        let words = w.stored(name, &[rows, d])?;
        let positions = w.view("embeddings.position_embeddings.weight")?;
        // A rank-0 table is refused by the shape check of `floats`.
        let max_pos = positions.shape().first().copied().unwrap_or(0);
        let mut positions = w.floats("embeddings.position_embeddings.weight", &[max_pos, d])?;
        let types = w.floats("embeddings.token_type_embeddings.weight", &[2, d])?;
        for row in positions.chunks_mut(d) {
            row.iter_mut().zip(&types[..d]).for_each(|(p, t)| *p += t);
        }
        let embed_norm = w.norm("embeddings.LayerNorm", d)?;
        let layers = (0..)
            .take_while(|i| {
                st.tensor(&format!("encoder.layer.{i}.attention.self.query.weight"))
                    .is_ok()
            })
            .map(|i| w.layer(&format!("encoder.layer.{i}."), d))
            .collect::<Result<Vec<_>, _>>()?;
        let config = MiniLmConfig {
            max_tokens: config.max_tokens.min(max_pos),
            ..config
        };
        Ok(MiniLm {
            vocab,
            file,
            words,
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
    pub fn embed(&self, text: &str) -> Result<SentenceEmbedding, MiniLmError> {
        Ok(self.embed_all(&[text])?.remove(0))
    }

    /// [`MiniLm::embed`] of each text, reading the weights once for all of them.
    pub fn embed_all<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<SentenceEmbedding>, MiniLmError> {
        let io = |source| MiniLmError::Io {
            path: "the sentence encoder's model.safetensors".into(),
            source,
        };
        let mut xs = texts
            .iter()
            .map(|t| self.embedded(t.as_ref()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io)?;
        for layer in &self.layers {
            xs = layer
                .forward(xs, self.config.heads, &self.file)
                .map_err(io)?;
        }
        Ok(xs.into_iter().map(pooled).collect())
    }

    /// The tokens' embeddings after the first norm.
    ///
    /// # Shapes
    /// - `[n, d]`, n the tokens with `[CLS]` and `[SEP]`
    fn embedded(&self, text: &str) -> std::io::Result<Tensor<2>> {
        let ids = self.vocab.encode(text, self.config.max_tokens);
        let n = ids.len();
        let mut x = Vec::with_capacity(n * self.d);
        for (pos, &id) in ids.iter().enumerate() {
            let at = x.len();
            x.extend(self.word_row(id as usize)?);
            let p = &self.positions[pos * self.d..(pos + 1) * self.d];
            x[at..].iter_mut().zip(p).for_each(|(v, p)| *v += p);
        }
        Ok(self.embed_norm.forward(Tensor::from_data(
            TensorData::new(x, [n, self.d]),
            &self.device,
        )))
    }

    /// One row of the word-embedding table (an id past the table reads `[UNK]`'s).
    fn word_row(&self, id: usize) -> std::io::Result<Vec<f32>> {
        let id = if id < self.rows {
            id
        } else {
            self.vocab.unk as usize
        };
        let width = if self.words.dtype == Dtype::F32 { 4 } else { 2 };
        let row = Stored {
            offset: self.words.offset + (id * self.d * width) as u64,
            dtype: self.words.dtype,
            elements: self.d,
        };
        row.read(&self.file)
    }
}

/// The mean over positions, scaled to unit length.
///
/// # Shapes
/// - `[n, d]` -> `[d]`
fn pooled(x: Tensor<2>) -> SentenceEmbedding {
    let mean: Vec<f32> = x
        .mean_dim(0)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    SentenceEmbedding(mean.into_iter().map(|v| v / norm).collect())
}

/// Maps the checkpoint's tensor names (Hugging Face `BertModel`'s) onto the layers.
struct Reader<'a> {
    st: &'a SafeTensors<'a>,
    /// Where the mapped file starts, to turn a tensor's bytes into a file offset.
    base: usize,
    path: &'a str,
    device: &'a Device,
    eps: f64,
}

impl<'a> Reader<'a> {
    fn weights(&self) -> Weights<'_> {
        Weights::new(self.st, self.path)
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'a>, MiniLmError> {
        self.weights().meta(name)?;
        Ok(self.st.tensor(name).expect("listed"))
    }

    /// The tensor's values as f32, after checking its shape.
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, MiniLmError> {
        Ok(self.weights().floats(name, shape)?.into_owned())
    }

    /// Where the tensor is in the file, after checking its shape and dtype.
    fn stored(&self, name: &str, shape: &[usize]) -> Result<Stored, MiniLmError> {
        self.weights().check(name, shape, Kind::FLOATS)?;
        let v = self.st.tensor(name).expect("checked");
        Ok(Stored {
            offset: (v.data().as_ptr() as usize - self.base) as u64,
            dtype: v.dtype(),
            elements: shape.iter().product(),
        })
    }

    fn tensor1(&self, name: &str, d: usize) -> Result<Tensor<1>, MiniLmError> {
        let v = self.floats(name, &[d])?;
        Ok(Tensor::from_data(TensorData::new(v, [d]), self.device))
    }

    fn norm(&self, p: &str, d: usize) -> Result<LayerNorm, MiniLmError> {
        let mut n = LayerNormConfig::new(d)
            .with_epsilon(self.eps)
            .init(self.device);
        n.gamma = Param::from_tensor(self.tensor1(&format!("{p}.weight"), d)?);
        n.beta = Some(Param::from_tensor(self.tensor1(&format!("{p}.bias"), d)?));
        Ok(n)
    }

    /// `{p}.weight` `[out, in]` (torch layout), left in the file, and `{p}.bias`.
    fn linear(&self, p: &str, d_in: usize, d_out: usize) -> Result<Linear, MiniLmError> {
        Ok(Linear {
            weight: self.stored(&format!("{p}.weight"), &[d_out, d_in])?,
            bias: self.floats(&format!("{p}.bias"), &[d_out])?,
            d_in,
        })
    }

    fn layer(&self, p: &str, d: usize) -> Result<Layer, MiniLmError> {
        let inner = self
            .view(&format!("{p}intermediate.dense.bias"))?
            .shape()
            .first()
            .copied()
            .unwrap_or(0);
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
