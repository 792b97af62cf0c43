//! Maps a GGUF file's llama tensors (`token_embd`, `blk.N.attn_q`, ...) onto [`Llama`]'s
//! modules. The one place that knows GGUF's tensor names.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::gguf::{GgufError, GgufFile, TensorInfo};
use crate::linear::{QuantLinear, QuantLinearConfig};
use crate::llama::{Llama, LlamaConfig, RotaryConfig, TokenEmbedding};
use crate::quant::dequantize;
use crate::quant_matmul::QuantMatrix;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture '{0}' is not supported (only llama)")]
    Architecture(String),
    #[error("tensor '{name}' has dims {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("model hyper-parameter {0}")]
    Config(String),
}

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
        int("context_length")?,
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
    let cpu = cpu_kernels(device);
    let embedding = TokenEmbedding::new(matrix(gguf, "token_embd.weight", d, v)?);
    // No `output.weight`: the LM head is tied to the token embedding.
    let lm_head = match gguf.tensor_info("output.weight") {
        Some(_) => linear(gguf, "output.weight", d, v, device)?,
        None => QuantLinearConfig::new(d, v).from_matrix(embedding.table().clone(), device, cpu),
    };
    let total = config.n_layers + 1;
    let mut blocks = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let mut block = config.init_block(device);
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        let hd = config.head_dim();
        let (q, kv) = (config.n_heads * hd, config.n_kv_heads * hd);
        let a = &mut block.attn;
        a.wq = linear(gguf, &name("attn_q"), d, q, device)?;
        a.wk = linear(gguf, &name("attn_k"), d, kv, device)?;
        a.wv = linear(gguf, &name("attn_v"), d, kv, device)?;
        a.wo = linear(gguf, &name("attn_output"), q, d, device)?;
        let f = &mut block.ffn;
        f.gate = linear(gguf, &name("ffn_gate"), d, config.d_ff, device)?;
        f.up = linear(gguf, &name("ffn_up"), d, config.d_ff, device)?;
        f.down = linear(gguf, &name("ffn_down"), config.d_ff, d, device)?;
        block.attn_norm.gamma = vector(gguf, &name("attn_norm"), d, device)?;
        block.ffn_norm.gamma = vector(gguf, &name("ffn_norm"), d, device)?;
        blocks.push(block);
        progress(i + 1, total);
    }
    let mut model = Llama {
        embedding,
        blocks,
        norm: burn::nn::RmsNormConfig::new(d)
            .with_epsilon(config.norm_eps)
            .init(device),
        lm_head,
        rope: RotaryConfig::new(config.head_dim(), config.context_length)
            .with_base(config.rope_base)
            .init(device),
    };
    model.norm.gamma = vector(gguf, "output_norm.weight", d, device)?;
    progress(total, total);
    Ok(model)
}

/// A tensor's info and bytes, checked to have GGUF dims `dims`.
fn tensor<'a>(
    gguf: &'a GgufFile,
    name: &str,
    dims: &[usize],
) -> Result<(&'a TensorInfo, &'a [u8]), LoadError> {
    let (info, bytes) = gguf.tensor_data(name)?;
    let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    if info.dims != expected {
        return Err(LoadError::Shape {
            name: name.into(),
            found: info.dims.clone(),
            expected,
        });
    }
    Ok((info, bytes))
}

/// Whether linear layers run on the project's CPU kernels (CPU devices) or on the
/// device's own f32 matmul.
fn cpu_kernels(device: &Device) -> bool {
    #[allow(deprecated)]
    let ndarray = Device::ndarray();
    *device == Device::flex() || *device == ndarray
}

/// A `[d_out, d_in]` weight (GGUF dims `[d_in, d_out]`) as blocks in the mapped file.
fn matrix(
    gguf: &GgufFile,
    name: &str,
    d_in: usize,
    d_out: usize,
) -> Result<QuantMatrix, LoadError> {
    tensor(gguf, name, &[d_in, d_out])?;
    let (info, bytes, start) = gguf.shared_tensor(name)?;
    Ok(QuantMatrix::new(info.kind, d_out, d_in, bytes, start))
}

fn linear(
    gguf: &GgufFile,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<QuantLinear, LoadError> {
    let m = matrix(gguf, name, d_in, d_out)?;
    Ok(QuantLinearConfig::new(d_in, d_out).from_matrix(m, device, cpu_kernels(device)))
}

fn vector(
    gguf: &GgufFile,
    name: &str,
    n: usize,
    device: &Device,
) -> Result<Param<Tensor<1>>, LoadError> {
    let (info, bytes) = tensor(gguf, name, &[n])?;
    let mut values = vec![0f32; n];
    dequantize(info.kind, bytes, &mut values);
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(values, [n]),
        device,
    )))
}
