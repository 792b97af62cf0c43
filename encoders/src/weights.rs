//! What every weight-file reader says when a model asks for a tensor the file does not
//! have, or has in another shape: one wording for all formats; and the floats of a
//! safetensors tensor, for every reader of that format.

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("the weight file has no tensor '{0}'")]
    Missing(String),
    #[error("tensor '{name}' has shape {got:?}, the model needs {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
}

/// A safetensors tensor's little-endian F32, F16 or BF16 bytes as f32; `None` for other
/// dtypes.
pub fn safetensors_floats(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    let pairs = || {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(pairs().map(|h| half::f16::from_bits(h).to_f32()).collect()),
        Dtype::BF16 => Some(pairs().map(|h| half::bf16::from_bits(h).to_f32()).collect()),
        _ => None,
    }
}
