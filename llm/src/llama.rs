//! The Llama architecture (Touvron et al. 2023) as llama.cpp runs it on GGUF weights:
//! pre-norm decoder blocks of RMSNorm, grouped-query attention with rotary position
//! embedding and a KV cache, and a SwiGLU feed-forward; the LM head may be tied to the
//! token embedding.
//!
//! ```text
//! h = embed(tokens)                       (or raw embedding rows from an encoder)
//! for each block:
//!     h = h + Wo · Attention(RoPE(Wq·n), RoPE(Wk·n), Wv·n)   with n = RMSNorm(h)
//!     h = h + Wdown · (silu(Wgate·n) ⊙ Wup·n)                with n = RMSNorm(h)
//! logits = Whead · RMSNorm(h)
//! ```

use std::sync::{Arc, OnceLock};

use burn::config::Config;
use burn::module::Module;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::host::{self, HostKv, HostWeights, Output};
use crate::linear::{QuantLinear, QuantLinearConfig};
use crate::quant::GgmlType;
use crate::quant_matmul::QuantMatrix;

/// Hyper-parameters of a Llama model.
#[derive(Config, Debug)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    pub context_length: usize,
    #[config(default = 10000.0)]
    pub rope_base: f64,
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// A model of zeros with this shape, to be filled by a loader.
    pub fn init(&self, device: &Device) -> Llama {
        Llama {
            embedding: TokenEmbedding::zeros(self.vocab_size, self.d_model),
            blocks: (0..self.n_layers)
                .map(|_| self.init_block(device))
                .collect(),
            norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.norm_eps)
                .init(device),
            lm_head: QuantLinearConfig::new(self.d_model, self.vocab_size).init(device),
            rope: RotaryConfig::new(self.head_dim(), self.context_length)
                .with_base(self.rope_base)
                .init(device),
            host: OnceLock::new(),
        }
    }

    fn init_block(&self, device: &Device) -> Block {
        let (d, hd) = (self.d_model, self.head_dim());
        let lin = |i, o| QuantLinearConfig::new(i, o).init(device);
        let norm = || {
            RmsNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device)
        };
        Block {
            attn_norm: norm(),
            attn: Attention {
                wq: lin(d, self.n_heads * hd),
                wk: lin(d, self.n_kv_heads * hd),
                wv: lin(d, self.n_kv_heads * hd),
                wo: lin(self.n_heads * hd, d),
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
            },
            ffn_norm: norm(),
            ffn: FeedForward {
                gate: lin(d, self.d_ff),
                up: lin(d, self.d_ff),
                down: lin(self.d_ff, d),
            },
        }
    }
}

/// The token embedding table, kept in its GGUF blocks: a lookup dequantizes only the
/// rows it needs, so a 49k-row table costs its quantized size in memory.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    table: QuantMatrix,
}

impl TokenEmbedding {
    /// `table` is `[vocab_size, d_model]`.
    pub fn new(table: QuantMatrix) -> Self {
        TokenEmbedding { table }
    }

    fn zeros(vocab_size: usize, d_model: usize) -> Self {
        let kind = GgmlType::F32;
        let bytes = vec![0u8; kind.bytes_for(vocab_size * d_model)];
        Self::new(QuantMatrix::new(
            kind,
            vocab_size,
            d_model,
            Arc::new(bytes),
            0,
        ))
    }

    pub fn vocab_size(&self) -> usize {
        self.table.rows()
    }

    pub fn d_model(&self) -> usize {
        self.table.cols()
    }

    /// The table itself (the tied LM head multiplies by it).
    pub fn table(&self) -> &QuantMatrix {
        &self.table
    }

    /// The embedding rows of `ids`, concatenated (`ids.len() * d_model` values).
    /// Ids must be below `vocab_size` (the caller checks input from outside).
    pub fn lookup(&self, ids: &[u32]) -> Vec<f32> {
        self.table.dequantize_rows(ids)
    }
}

/// Configuration of [`Rotary`] position embedding.
#[derive(Config, Debug)]
pub struct RotaryConfig {
    pub head_dim: usize,
    pub max_positions: usize,
    #[config(default = 10000.0)]
    pub base: f64,
}

impl RotaryConfig {
    /// Precomputes `cos(p θ_i)` and `sin(p θ_i)` with `θ_i = base^(-2i/head_dim)`.
    pub fn init(&self, device: &Device) -> Rotary {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(self.max_positions * half);
        let mut sin = Vec::with_capacity(self.max_positions * half);
        for p in 0..self.max_positions {
            for i in 0..half {
                let theta = self.base.powf(-2.0 * i as f64 / self.head_dim as f64);
                let angle = p as f64 * theta;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let table = |v| Tensor::from_data(TensorData::new(v, [self.max_positions, half]), device);
        Rotary {
            cos: table(cos),
            sin: table(sin),
        }
    }
}

/// Rotary position embedding in llama.cpp's "normal" mode, the one it applies to GGUF
/// llama weights (whose Q and K rows the converter permuted for it): each adjacent pair
/// `(x[2i], x[2i+1])` is rotated by the angle `p θ_i`.
#[derive(Module, Debug)]
pub struct Rotary {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rotary {
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// The `cos` and `sin` tables, `[max_positions, head_dim / 2]`.
    pub fn tables(&self) -> (Tensor<2>, Tensor<2>) {
        (self.cos.clone(), self.sin.clone())
    }

    /// `[x0, x1] -> [x0 cos - x1 sin, x0 sin + x1 cos]` per pair, at positions
    /// `start..start + seq`.
    ///
    /// # Shapes
    /// - input: `[batch, seq, heads, head_dim]`
    /// - output: `[batch, seq, heads, head_dim]`
    pub fn forward(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [b, t, h, hd] = x.dims();
        let half = hd / 2;
        let pairs = x.reshape([b, t, h, half, 2]);
        let x0 = pairs.clone().narrow(4, 0, 1).reshape([b, t, h, half]);
        let x1 = pairs.narrow(4, 1, 1).reshape([b, t, h, half]);
        let cos = self
            .cos
            .clone()
            .narrow(0, start, t)
            .reshape([1, t, 1, half]);
        let sin = self
            .sin
            .clone()
            .narrow(0, start, t)
            .reshape([1, t, 1, half]);
        let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let r1 = x0 * sin + x1 * cos;
        Tensor::stack::<5>(vec![r0, r1], 4).reshape([b, t, h, hd])
    }
}

/// Keys and values of every position seen so far, per block.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// The CPU path's cache ([`host`]), instead of `layers`.
    host: Vec<HostKv>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on, keeping a shared prefix (a system prompt)
    /// for the next request.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for layer in &mut self.layers {
            *layer = layer
                .take()
                .filter(|_| len > 0)
                .map(|(k, v)| (k.narrow(2, 0, len), v.narrow(2, 0, len)));
        }
        for layer in &mut self.host {
            layer.truncate(len, self.len);
        }
        self.len = len;
    }

    /// Appends a block's new keys and values and returns all of them.
    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let kv = match self.layers[layer].take() {
            None => (k, v),
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
        };
        self.layers[layer] = Some(kv.clone());
        kv
    }
}

/// Grouped-query self-attention: `n_heads` query heads share `n_kv_heads` key/value
/// heads, query head `h` reading key/value head `h / (n_heads / n_kv_heads)`.
#[derive(Module, Debug)]
pub struct Attention {
    pub wq: QuantLinear,
    pub wk: QuantLinear,
    pub wv: QuantLinear,
    pub wo: QuantLinear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
}

impl Attention {
    /// `softmax(Q Kᵀ / √d + causal mask) V`, then the output projection. Appends this
    /// call's keys and values to `cache` (whose length is the position of `x`'s first row).
    ///
    /// # Shapes
    /// - input: `[batch, seq, d_model]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rotary,
        cache: &mut KvCache,
        layer: usize,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let start = cache.len();
        let (nh, nkv) = (self.n_heads, self.n_kv_heads);
        let hd = self.wq.d_output / nh;
        let heads = |y: Tensor<3>, n| y.reshape([b, t, n, hd]);
        let [q, k, v] = three(QuantLinear::forward_many(
            &[&self.wq, &self.wk, &self.wv],
            x,
        ));
        let q = rope.forward(heads(q, nh), start);
        let k = rope.forward(heads(k, nkv), start);
        let v = heads(v, nkv);
        let (k, v) = cache.append(layer, k.swap_dims(1, 2), v.swap_dims(1, 2));
        let total = k.dims()[2];
        let group = |kv: Tensor<4>| {
            kv.unsqueeze_dim::<5>(2)
                .expand([b, nkv, nh / nkv, total, hd])
                .reshape([b, nh, total, hd])
        };
        let q = q.swap_dims(1, 2);
        let mut scores = q.matmul(group(k).swap_dims(2, 3)) / (hd as f64).sqrt();
        if t > 1 {
            let mask = modelkit::causal_mask(t, total, &scores.device()).reshape([1, 1, t, total]);
            scores = scores + mask;
        }
        let out = softmax(scores, 3).matmul(group(v));
        self.wo
            .forward(out.swap_dims(1, 2).reshape([b, t, nh * hd]))
    }
}

/// SwiGLU feed-forward network.
#[derive(Module, Debug)]
pub struct FeedForward {
    pub gate: QuantLinear,
    pub up: QuantLinear,
    pub down: QuantLinear,
}

impl FeedForward {
    /// `Wdown (silu(Wgate x) ⊙ Wup x)`
    ///
    /// # Shapes
    /// - input: `[batch, seq, d_model]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [gate, up] = two(QuantLinear::forward_many(&[&self.gate, &self.up], x));
        self.down.forward(silu(gate) * up)
    }
}

/// The outputs of a `forward_many` over three layers.
fn three(ys: Vec<Tensor<3>>) -> [Tensor<3>; 3] {
    ys.try_into()
        .unwrap_or_else(|_| unreachable!("three layers give three outputs"))
}

/// The outputs of a `forward_many` over two layers.
fn two(ys: Vec<Tensor<3>>) -> [Tensor<3>; 2] {
    ys.try_into()
        .unwrap_or_else(|_| unreachable!("two layers give two outputs"))
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block {
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub ffn_norm: RmsNorm,
    pub ffn: FeedForward,
}

impl Block {
    /// `h = x + Attn(RMSNorm(x)); h + FFN(RMSNorm(h))`
    ///
    /// # Shapes
    /// - input: `[batch, seq, d_model]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rotary,
        cache: &mut KvCache,
        layer: usize,
    ) -> Tensor<3> {
        let h = x.clone()
            + self
                .attn
                .forward(self.attn_norm.forward(x), rope, cache, layer);
        h.clone() + self.ffn.forward(self.ffn_norm.forward(h))
    }
}

/// The whole decoder.
#[derive(Module, Debug)]
pub struct Llama {
    #[module(skip)]
    pub embedding: TokenEmbedding,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    pub lm_head: QuantLinear,
    pub rope: Rotary,
    /// The CPU path's vectors ([`host`]), made on first use; `None` on other devices.
    #[module(skip)]
    pub host: OnceLock<Option<Arc<HostWeights>>>,
}

impl Llama {
    pub fn d_model(&self) -> usize {
        self.embedding.d_model()
    }

    pub fn vocab_size(&self) -> usize {
        self.embedding.vocab_size()
    }

    pub fn context_length(&self) -> usize {
        self.rope.max_positions()
    }

    /// Runs new positions (already embedded) through the decoder after those in `cache`,
    /// appends their keys and values to it, and returns the logits of the last position.
    ///
    /// # Shapes
    /// - input: `[1, seq, d_model]`
    /// - output: `[1, vocab_size]`
    pub fn forward(&self, x: Tensor<3>, cache: &mut KvCache) -> Tensor<2> {
        if let Some(y) = self.on_host(&x, cache, Output::LastLogits) {
            return y;
        }
        let [b, t, d] = x.dims();
        let h = self.hidden(x, cache);
        let last = h.narrow(1, t - 1, 1).reshape([b, d]);
        self.lm_head.forward(self.norm.forward(last))
    }

    /// [`Llama::forward`] returning the logits of every new position (for scoring a text).
    ///
    /// # Shapes
    /// - input: `[1, seq, d_model]`
    /// - output: `[seq, vocab_size]`
    pub fn forward_all(&self, x: Tensor<3>, cache: &mut KvCache) -> Tensor<2> {
        if let Some(y) = self.on_host(&x, cache, Output::AllLogits) {
            return y;
        }
        let [_, t, d] = x.dims();
        let h = self.hidden(x, cache).reshape([t, d]);
        self.lm_head.forward(self.norm.forward(h))
    }

    /// [`Llama::forward`] stopping before the output head: the normalised hidden state of
    /// the last position, which the language model reads its next word from (a sentence's
    /// vector, after a prompt that asks for its meaning).
    ///
    /// # Shapes
    /// - input: `[1, seq, d_model]`
    /// - output: `[1, d_model]`
    pub fn forward_hidden(&self, x: Tensor<3>, cache: &mut KvCache) -> Tensor<2> {
        if let Some(y) = self.on_host(&x, cache, Output::LastHidden) {
            return y;
        }
        let [b, t, d] = x.dims();
        let h = self.hidden(x, cache);
        self.norm.forward(h.narrow(1, t - 1, 1).reshape([b, d]))
    }

    /// The whole pass on the CPU path ([`host`]) where the model has it (CPU devices, one
    /// sequence, a cache it has filled): `output`'s rows as a `[rows, width]` tensor.
    fn on_host(&self, x: &Tensor<3>, cache: &mut KvCache, output: Output) -> Option<Tensor<2>> {
        let weights = self
            .host
            .get_or_init(|| HostWeights::of(self).map(Arc::new))
            .as_ref()?;
        let [b, t, _] = x.dims();
        if b != 1 || cache.layers.iter().any(Option::is_some) {
            return None;
        }
        let device = x.device();
        let input = crate::engine::to_vec(x.clone());
        let y = host::forward(self, weights, input, cache.len, &mut cache.host, output);
        cache.len += t;
        let rows = if output == Output::AllLogits { t } else { 1 };
        let width = y.len() / rows;
        Some(Tensor::from_data(
            TensorData::new(y, [rows, width]),
            &device,
        ))
    }

    /// The decoder blocks over new positions, extending `cache`.
    fn hidden(&self, x: Tensor<3>, cache: &mut KvCache) -> Tensor<3> {
        let t = x.dims()[1];
        let mut h = x;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(h, &self.rope, cache, i);
        }
        cache.len += t;
        h
    }
}
