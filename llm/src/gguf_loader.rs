//! Maps a GGUF file's llama tensors (`token_embd`, `blk.N.attn_q`, ...) onto [`Llama`]'s
//! modules. The one place that knows GGUF's tensor names.

use burn::module::Param;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor, TensorData};

use modelkit::weights::{Dtype, TensorMeta, TensorSource, WeightError, Weights};

use crate::gguf::{GgufError, GgufFile};
use crate::linear::{QuantLinear, QuantLinearConfig};
use crate::llama::{
    Attention, Block, FeedForward, Llama, LlamaConfig, RotaryConfig, TokenEmbedding,
};
use crate::quant::{GgmlType, dequantize};
use crate::quant_matmul::QuantMatrix;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture '{0}' is not supported (only llama)")]
    Architecture(String),
    #[error(transparent)]
    Weight(#[from] WeightError),
    #[error("model hyper-parameter {0}")]
    Config(String),
}

/// The longest context percept gives a model, whatever its file declares: far beyond what a
/// small edge model is asked, and its rotary tables stay under a few tens of MB.
pub const MAX_CONTEXT: usize = 32_768;

/// Reads the hyper-parameters from `{arch}.*` metadata.
pub fn llama_config(gguf: &GgufFile) -> Result<LlamaConfig, LoadError> {
    let arch = gguf.require_str("general.architecture")?;
    if arch != "llama" {
        return Err(LoadError::Architecture(arch.into()));
    }
    let int = |key: &str| -> Result<usize, LoadError> {
        let v = gguf.require_u64(&format!("llama.{key}"))?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0 && v <= 1 << 24)
            .ok_or_else(|| LoadError::Config(format!("llama.{key} = {v} is out of range")))
    };
    let n_heads = int("attention.head_count")?;
    let n_kv_heads = match gguf.get("llama.attention.head_count_kv") {
        Some(_) => int("attention.head_count_kv")?,
        None => n_heads,
    };
    let d_model = int("embedding_length")?;
    let vocab_size = gguf.require_array("tokenizer.ggml.tokens")?.len();
    if d_model % n_heads != 0 || n_heads % n_kv_heads != 0 || (d_model / n_heads) % 2 != 0 {
        return Err(LoadError::Config(format!(
            "{n_heads} heads and {n_kv_heads} KV heads do not divide width {d_model} into even heads"
        )));
    }
    let float = |key: &str, default: f64| {
        gguf.get(&format!("llama.{key}"))
            .and_then(|v| v.as_f64())
            .unwrap_or(default)
    };
    Ok(LlamaConfig::new(
        vocab_size,
        d_model,
        int("block_count")?,
        n_heads,
        n_kv_heads,
        int("feed_forward_length")?,
        // The rotary tables are sized by the context (2^24 positions would be 4 GB):
        // percept uses at most MAX_CONTEXT of a file's declared context.
        int("context_length")?.min(MAX_CONTEXT),
    )
    .with_rope_base(float("rope.freq_base", 10000.0))
    .with_norm_eps(float("attention.layer_norm_rms_epsilon", 1e-5)))
}

/// Builds the model from a GGUF file on `device`. `progress(done, total)` is called after
/// each block.
pub fn load_llama(
    gguf: &GgufFile,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Llama, LoadError> {
    let config = llama_config(gguf)?;
    let (d, v) = (config.d_model, config.vocab_size);
    // CPU devices multiply on the project's kernels, others on the device's f32 matmul.
    let cpu = modelkit::is_cpu(device);
    let mut table = matrix(gguf, "token_embd.weight", d, v)?;
    if cpu {
        // Interleaved for the tied LM head; the lookup reads its rows back out.
        table = interleaved(gguf, table);
    }
    let embedding = TokenEmbedding::new(table);
    // No `output.weight`: the LM head is tied to the token embedding.
    let lm_head = match gguf.tensor_info("output.weight") {
        Some(_) => linear(gguf, "output.weight", d, v, device, cpu)?,
        None => QuantLinearConfig::new(d, v).from_matrix(embedding.table().clone(), device, cpu),
    };
    let total = config.n_layers + 1;
    let (hd, eps) = (config.head_dim(), config.norm_eps);
    let (q, kv, ff) = (config.n_heads * hd, config.n_kv_heads * hd, config.d_ff);
    let mut blocks = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        let lin = |t: &str, d_in, d_out| linear(gguf, &name(t), d_in, d_out, device, cpu);
        blocks.push(Block {
            attn_norm: norm(gguf, &name("attn_norm"), d, eps, device)?,
            attn: Attention {
                wq: lin("attn_q", d, q)?,
                wk: lin("attn_k", d, kv)?,
                wv: lin("attn_v", d, kv)?,
                wo: lin("attn_output", q, d)?,
                n_heads: config.n_heads,
                n_kv_heads: config.n_kv_heads,
            },
            ffn_norm: norm(gguf, &name("ffn_norm"), d, eps, device)?,
            ffn: FeedForward {
                gate: lin("ffn_gate", d, ff)?,
                up: lin("ffn_up", d, ff)?,
                down: lin("ffn_down", ff, d)?,
            },
        });
        progress(i + 1, total);
    }
    let model = Llama {
        embedding,
        blocks,
        norm: norm(gguf, "output_norm.weight", d, eps, device)?,
        lm_head,
        rope: RotaryConfig::new(hd, config.context_length)
            .with_base(config.rope_base)
            .init(device),
        host: Default::default(),
    };
    progress(total, total);
    Ok(model)
}

/// A GGUF file's tensors, outermost dimension first (the file lists them innermost first).
impl TensorSource for GgufFile {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let info = self.tensor_info(name)?;
        let dtype = match info.kind {
            GgmlType::F32 => Dtype::F32,
            GgmlType::F16 => Dtype::F16,
            GgmlType::BF16 => Dtype::BF16,
            GgmlType::Q4_0 => Dtype::Q4_0,
            GgmlType::Q4_1 => Dtype::Q4_1,
            GgmlType::Q8_0 => Dtype::Q8_0,
        };
        // Dims past usize cannot be a tensor this machine holds; u64::MAX never matches.
        let shape = info
            .dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        Some(TensorMeta { dtype, shape })
    }
}

/// Tensor `name` of `shape` (outermost first), of any type the reader takes (each is
/// dequantized or multiplied by the kernels).
fn check(gguf: &GgufFile, name: &str, shape: &[usize]) -> Result<(), LoadError> {
    Weights::new(gguf, "GGUF file").check(name, shape, &[])?;
    Ok(())
}

/// A `[d_out, d_in]` weight (GGUF dims `[d_in, d_out]`) as blocks in the mapped file.
fn matrix(
    gguf: &GgufFile,
    name: &str,
    d_in: usize,
    d_out: usize,
) -> Result<QuantMatrix, LoadError> {
    check(gguf, name, &[d_out, d_in])?;
    let (info, bytes, start) = gguf.shared_tensor(name)?;
    Ok(QuantMatrix::new(info.kind, d_out, d_in, bytes, start))
}

fn linear(
    gguf: &GgufFile,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
    cpu: bool,
) -> Result<QuantLinear, LoadError> {
    let mut m = matrix(gguf, name, d_in, d_out)?;
    if cpu {
        m = interleaved(gguf, m);
    }
    Ok(QuantLinearConfig::new(d_in, d_out).from_matrix(m, device, cpu))
}

/// The CPU kernels read Q4_1 and Q8_0 weights interleaved (`llm::packed`); the file's
/// pages of the copied matrix are then let go, so the weights are not resident twice.
fn interleaved(gguf: &GgufFile, m: QuantMatrix) -> QuantMatrix {
    let range = m.byte_range();
    let m = m.interleaved();
    if m.is_interleaved() {
        gguf.release(range);
    }
    m
}

/// An RMSNorm whose gain is the vector `name` of length `n`.
fn norm(
    gguf: &GgufFile,
    name: &str,
    n: usize,
    eps: f64,
    device: &Device,
) -> Result<RmsNorm, LoadError> {
    check(gguf, name, &[n])?;
    let (info, bytes) = gguf.tensor_data(name)?;
    let mut values = vec![0f32; n];
    dequantize(info.kind, bytes, &mut values);
    let mut norm = RmsNormConfig::new(n).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device));
    Ok(norm)
}
