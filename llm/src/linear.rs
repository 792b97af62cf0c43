//! `QuantLinear`: the one interface every weight matrix of the LLM goes through.
//!
//! The weights stay in their GGUF blocks ([`QuantMatrix`]). On a CPU device the product
//! runs on the project's own kernels (8-bit activations, integer dot products, rayon
//! threads), which is both what makes decode fast and what makes the logits match
//! llama.cpp's.
//!
//! On other devices (the GPU) the blocks are dequantized once at load into f32 tensors and
//! the product is burn's matmul, computed with the kernels' roundings: activations rounded
//! to llama.cpp's 8-bit blocks (f16 scales), and a Q4_1 matrix split into its scaled
//! nibbles `d·q` plus a per-block offset term `m · Σx` whose block sums are rounded to f16
//! as llama.cpp's Q8_1 blocks keep them. The two paths then agree to 1e-5 on one product
//! (`blocks_multiply_like_the_dense_matrix`) where either is 1/200 from the f32 product;
//! without the roundings every top-10 logit of the chat prompt sits 0.37 to 0.68 above
//! llama.cpp's (see `tests/llm_reference.rs` for why single runs still differ).
//!
//! Why not burn's quantized tensors on the GPU: Q8_0 maps exactly onto burn's 8-bit
//! symmetric blocks with f16 scales, but every matrix of this model except the embedding is
//! Q4_1, whose blocks are asymmetric (`d·q + m`): they fit burn's symmetric 4-bit scheme
//! only after the same split, with `q` recentred to `q - 8` and `8d` moved into the offset.
//! burn's quantized matmul multiplies f32 activations by the dequantized weights inside its
//! kernel, so the activations would still have to be rounded first, and it falls back to
//! dequantizing the whole operand where its kernels decline a block layout
//! (`launch_matmul_naive` in burn-cubecl). What quantized tensors would save is memory: the
//! f32 copy of this 135M model is 0.55 GB of device memory, which every GPU we target has.
//! One f32 product for every matrix is the simpler path, and it is what the tests check.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, FloatDType, Tensor, TensorData, module::linear};

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
            minimums: None,
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
                minimums: None,
                blocks: Some(matrix),
                d_input: self.d_input,
                d_output: self.d_output,
            };
        }
        let (rows, minimums) = matrix.dequantize_split();
        let on_device = |values: Vec<f32>, d_input: usize| {
            let t = transpose(&values, self.d_output, d_input);
            Param::from_tensor(Tensor::from_data(
                TensorData::new(t, [d_input, self.d_output]),
                device,
            ))
        };
        QuantLinear {
            dense: Some(on_device(rows, self.d_input)),
            minimums: minimums.map(|m| on_device(m, self.d_input / 32)),
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
    /// `Wᵀ` in f32, `[d_input, d_output]`, on devices that multiply in f32; for Q4_1 only
    /// the scaled nibbles `d·q`.
    pub dense: Option<Param<Tensor<2>>>,
    /// Q4_1's block minimums `m`, `[d_input / 32, d_output]`, on those devices.
    pub minimums: Option<Param<Tensor<2>>>,
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
        match Self::forward_many(&[self], x).pop() {
            Some(y) => y,
            None => unreachable!("one layer gives one output"),
        }
    }

    /// Several layers applied to the same input (Q, K and V; gate and up), one output
    /// each. On the CPU kernels the input is quantized once and all the products share
    /// one round of the thread pool ([`QuantMatrix::matmul_many`]); the outputs equal
    /// those of separate `forward`s exactly.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - outputs: `[..., d_output]` of each layer
    pub fn forward_many<const D: usize>(layers: &[&QuantLinear], x: Tensor<D>) -> Vec<Tensor<D>> {
        let matrices: Option<Vec<&QuantMatrix>> =
            layers.iter().map(|l| l.blocks.as_ref()).collect();
        let Some(matrices) = matrices else {
            return layers.iter().map(|l| l.forward_dense(x.clone())).collect();
        };
        let device = x.device();
        let shape = x.dims();
        let n = shape[..D - 1].iter().product();
        let input = x
            .into_data()
            .try_into_vec::<f32>()
            .expect("the model computes in f32");
        let mut outs: Vec<Vec<f32>> = layers.iter().map(|l| vec![0f32; n * l.d_output]).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        QuantMatrix::matmul_many(&matrices, &input, n, &mut slices);
        outs.into_iter()
            .zip(layers)
            .map(|(out, l)| {
                let mut shape = shape;
                shape[D - 1] = l.d_output;
                Tensor::from_data(TensorData::new(out, shape), &device)
            })
            .collect()
    }
}

impl QuantLinear {
    /// The f32 product: `y = x̃ (d·q)ᵀ + s̃ mᵀ`, with `x̃` the activations rounded to 8-bit
    /// blocks and `s̃` their block sums (see [`round_to_q8_blocks`]); the second term only
    /// for Q4_1.
    fn forward_dense<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let w = self
            .dense
            .as_ref()
            .expect("a QuantLinear holds blocks or a dense weight");
        let (rounded, sums) = round_to_q8_blocks(x, self.minimums.is_some());
        let y = linear(rounded, w.val(), None);
        match (&self.minimums, sums) {
            (Some(m), Some(sums)) => y + linear(sums, m.val(), None),
            _ => y,
        }
    }
}

/// Rounds activations to llama.cpp's 8-bit blocks of 32 (Q8_0, Q8_1), which the CPU
/// kernels multiply by: `q = round(x · 127 / max|x|)` (half to even), value `q · f16(d)`
/// with `d = max|x| / 127`; and, with `sums`, each block's `f16(d · Σq)` as Q8_1 keeps it
/// for Q4_1's offset term.
///
/// # Shapes
/// - input: `[..., d]` with `d` a multiple of 32
/// - output: `[..., d]`, and sums `[..., d / 32]`
fn round_to_q8_blocks<const D: usize>(x: Tensor<D>, sums: bool) -> (Tensor<D>, Option<Tensor<D>>) {
    let dims = x.dims();
    let blocks = dims.iter().product::<usize>() / 32;
    let b = x.reshape([blocks, 32]);
    let amax = b.clone().abs().max_dim(1);
    let d = amax.clone() / 127.0;
    // An all-zero block stays zero: its scale is clamped away from 0 before dividing.
    let inverse = amax.clone().ones_like().mul_scalar(127.0) / amax.clamp_min(1e-30);
    let q = (b * inverse).round();
    let block_sums = sums.then(|| {
        let mut sum_dims = dims;
        sum_dims[D - 1] /= 32;
        to_f16(d.clone() * q.clone().sum_dim(1)).reshape(sum_dims)
    });
    ((q * to_f16(d)).reshape(dims), block_sums)
}

/// Rounds to the nearest f16, kept in f32.
fn to_f16<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::F16).cast(FloatDType::F32)
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
        let (rounded, sums) = round_to_q8_blocks(input, true);
        let rounded = rounded.into_data().try_into_vec::<f32>().unwrap();
        let a = crate::quant_matmul::quantize_q8(&x, GgmlType::Q4_1);
        for (i, &r) in rounded.iter().enumerate() {
            assert_eq!(r, f32::from(a.q[i]) * a.d[i / 32], "value {i}");
        }
        let sums = sums.unwrap().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(sums, a.s, "block sums");
        let (zeros, _) = round_to_q8_blocks(Tensor::<1>::zeros([32], &device), false);
        assert_eq!(
            zeros.into_data().try_into_vec::<f32>().unwrap(),
            vec![0.0; 32]
        );
    }

    /// `rows` rows of `cols` inputs in `kind` (Q8_0 or Q4_1) with varied scales, offsets
    /// and integers; with the f32 values they stand for.
    fn blocks(kind: GgmlType, rows: usize, cols: usize) -> (QuantMatrix, Vec<f32>) {
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        for b in 0..rows * cols / 32 {
            let d = f16::from_f32(0.01 * (b % 7 + 1) as f32);
            let m = f16::from_f32(-0.03 * (b % 5 + 1) as f32);
            let q = |i: usize| (i * 7 + b * 3) % 16;
            bytes.extend(d.to_le_bytes());
            match kind {
                GgmlType::Q8_0 => {
                    bytes.extend((0..32).map(|i| (q(i) as i8 * 8 - 60) as u8));
                    values.extend((0..32).map(|i| d.to_f32() * f32::from(q(i) as i8 * 8 - 60)));
                }
                _ => {
                    bytes.extend(m.to_le_bytes());
                    bytes.extend((0..16).map(|i| (q(i) | q(i + 16) << 4) as u8));
                    values.extend((0..32).map(|i| d.to_f32() * q(i) as f32 + m.to_f32()));
                }
            }
        }
        let matrix = QuantMatrix::new(kind, rows, cols, Arc::new(bytes), 0);
        (matrix, values)
    }

    /// Both paths (CPU kernels, dense f32) against the f32 product, and against each
    /// other: the dense path rounds as the kernels do, so they agree far closer than
    /// either agrees with f32.
    #[test]
    fn blocks_multiply_like_the_dense_matrix() {
        let device = Device::flex();
        let (rows, cols, n) = (3, 128, 2);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| (i as f32 * 0.37).sin() * 2.0)
            .collect();
        for kind in [GgmlType::Q8_0, GgmlType::Q4_1] {
            let (matrix, w) = blocks(kind, rows, cols);
            let mut outputs = Vec::new();
            for cpu in [true, false] {
                let layer =
                    QuantLinearConfig::new(cols, rows).from_matrix(matrix.clone(), &device, cpu);
                let input = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
                let y = layer
                    .forward(input)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap();
                for (k, &y) in y.iter().enumerate() {
                    let (t, o) = (k / rows, k % rows);
                    let xs = &x[t * cols..(t + 1) * cols];
                    let want: f32 = xs.iter().zip(&w[o * cols..]).map(|(a, b)| a * b).sum();
                    // 8-bit activations: half a step (1/254 of a block's max) per value.
                    let bound: f32 = xs
                        .iter()
                        .zip(&w[o * cols..])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert!(
                        (y - want).abs() < bound / 200.0,
                        "{kind:?} cpu={cpu} {k}: {y} vs {want}"
                    );
                }
                outputs.push(y);
            }
            for (k, (a, b)) in outputs[0].iter().zip(&outputs[1]).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{kind:?} {k}: kernels {a}, dense {b}"
                );
            }
        }
    }
}
