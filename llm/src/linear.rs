//! `QuantLinear`: the one interface every weight matrix of the LLM goes through.
//!
//! The weights stay in their GGUF blocks ([`QuantMatrix`]). On a CPU device the product
//! runs on the project's own kernels (8-bit activations, integer dot products, rayon
//! threads), which is both what makes decode fast and what makes the logits match
//! llama.cpp's. On other devices (the GPU) the blocks are dequantized once at load into an
//! f32 tensor and the product is burn's matmul.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData, module::linear};

use crate::quant_matmul::QuantMatrix;

/// Configuration of a [`QuantLinear`] layer.
#[derive(Config, Debug)]
pub struct QuantLinearConfig {
    pub d_input: usize,
    pub d_output: usize,
}

impl QuantLinearConfig {
    /// A layer of zeros multiplying on `device`, to be replaced by a loaded one.
    pub fn init(&self, device: &Device) -> QuantLinear {
        QuantLinear {
            dense: Some(Param::from_tensor(Tensor::zeros(
                [self.d_input, self.d_output],
                device,
            ))),
            blocks: None,
            d_input: self.d_input,
            d_output: self.d_output,
        }
    }

    /// A layer over a `[d_output, d_input]` matrix of blocks. With `cpu_kernels` the blocks
    /// are multiplied in place; otherwise they are dequantized onto `device`.
    pub fn from_matrix(
        &self,
        matrix: QuantMatrix,
        device: &Device,
        cpu_kernels: bool,
    ) -> QuantLinear {
        assert_eq!(
            (matrix.rows(), matrix.cols()),
            (self.d_output, self.d_input),
            "QuantLinear: matrix shape"
        );
        if cpu_kernels {
            return QuantLinear {
                dense: None,
                blocks: Some(matrix),
                d_input: self.d_input,
                d_output: self.d_output,
            };
        }
        let rows = matrix.dequantize();
        let w = transpose(&rows, self.d_output, self.d_input);
        QuantLinear {
            dense: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [self.d_input, self.d_output]),
                device,
            ))),
            blocks: None,
            d_input: self.d_input,
            d_output: self.d_output,
        }
    }
}

/// `[rows, cols]` row-major into `[cols, rows]` row-major, in cache-sized tiles.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    let mut dst = vec![0f32; src.len()];
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    dst
}

/// A bias-free linear layer whose weights come from quantized GGUF blocks.
///
/// `y = x Wᵀ`, with `W` of shape `[d_output, d_input]` as GGUF stores it.
#[derive(Module, Debug)]
pub struct QuantLinear {
    /// `Wᵀ` in f32, `[d_input, d_output]`, on devices that multiply in f32.
    pub dense: Option<Param<Tensor<2>>>,
    /// The blocks, on CPU devices.
    #[module(skip)]
    pub blocks: Option<QuantMatrix>,
    pub d_input: usize,
    pub d_output: usize,
}

impl QuantLinear {
    /// Applies the layer.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let Some(matrix) = &self.blocks else {
            let w = self
                .dense
                .as_ref()
                .expect("a QuantLinear holds blocks or a dense weight");
            return linear(round_to_q8_blocks(x), w.val(), None);
        };
        let device = x.device();
        let mut shape = x.dims();
        let n = shape[..D - 1].iter().product();
        let input = x
            .into_data()
            .try_into_vec::<f32>()
            .expect("the model computes in f32");
        let mut out = vec![0f32; n * self.d_output];
        matrix.matmul(&input, n, &mut out);
        shape[D - 1] = self.d_output;
        Tensor::from_data(TensorData::new(out, shape), &device)
    }
}

/// Rounds activations to what the CPU kernels multiply by: blocks of 32 values, each
/// `round(x · 127 / max|x|) · max|x| / 127`. Without it the f32 product lands about 0.6 away
/// from llama.cpp's logits on this model (see `quant_matmul`); with it the devices agree.
///
/// # Shapes
/// - input: `[..., d]` with `d` a multiple of 32
/// - output: `[..., d]`
fn round_to_q8_blocks<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let blocks = dims.iter().product::<usize>() / 32;
    let b = x.reshape([blocks, 32]);
    // An all-zero block stays zero: its scale is clamped away from 0 before dividing.
    let amax = b.clone().abs().max_dim(1).clamp_min(1e-30);
    let q = (b * (amax.clone().recip() * 127.0)).round();
    (q * (amax / 127.0)).reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;
    use half::f16;
    use std::sync::Arc;

    #[test]
    fn q8_rounding_of_the_dense_path_matches_the_kernels() {
        let device = Device::flex();
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let input = Tensor::<2>::from_data(TensorData::new(x.clone(), [2, 32]), &device);
        let rounded = round_to_q8_blocks(input)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let a = crate::quant_matmul::quantize_q8(&x, GgmlType::Q8_0);
        for (i, &r) in rounded.iter().enumerate() {
            // The kernels keep the scale in f16, the dense path in f32.
            let k = f32::from(a.q[i]) * a.d[i / 32];
            assert!((r - k).abs() <= 2e-3 * k.abs().max(1e-3), "{i}: {r} vs {k}");
        }
        let zeros = round_to_q8_blocks(Tensor::<1>::zeros([32], &device));
        assert_eq!(
            zeros.into_data().try_into_vec::<f32>().unwrap(),
            vec![0.0; 32]
        );
    }

    /// Both paths (CPU kernels, dense f32) against a hand-computed product.
    #[test]
    fn blocks_multiply_like_the_dense_matrix() {
        let device = Device::flex();
        // Two output rows of 32 inputs, Q8_0: row o holds (i - 16) * (o + 1) * 0.5.
        let mut bytes = Vec::new();
        for o in 0..2 {
            bytes.extend(f16::from_f32(0.5 * (o + 1) as f32).to_le_bytes());
            bytes.extend((0..32).map(|i| (i as i8 - 16) as u8));
        }
        let matrix = QuantMatrix::new(GgmlType::Q8_0, 2, 32, Arc::new(bytes), 0);
        // The kernels round x to 8 bits (half a step, 4/254, at most): hence 1%.
        let x: Vec<f32> = (0..32).map(|i| (i % 5) as f32).collect();
        for cpu in [true, false] {
            let layer = QuantLinearConfig::new(32, 2).from_matrix(matrix.clone(), &device, cpu);
            let y = layer
                .forward(Tensor::<2>::from_data(
                    TensorData::new(x.clone(), [1, 32]),
                    &device,
                ))
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            for (o, &y) in y.iter().enumerate() {
                let want: f32 = (0..32)
                    .map(|i| x[i] * (i as f32 - 16.0) * 0.5 * (o + 1) as f32)
                    .sum();
                assert!(
                    (y - want).abs() < 1e-2 * want.abs().max(1.0),
                    "cpu={cpu} row {o}: {y} vs {want}"
                );
            }
        }
    }
}
