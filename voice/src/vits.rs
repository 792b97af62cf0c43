//! VITS, the generator of a Piper voice (Kim et al. 2021, "Conditional Variational
//! Autoencoder with Adversarial Learning for End-to-End Text-to-Speech"), inference only, for
//! one sentence at a time, weights read from the voice's ONNX file.
//!
//! ```text
//! ids [t]  -> TextEncoder: emb * sqrt(h), 6 x (relative-position attention, FFN)   m, logs [h, t]
//!          -> DurationPredictor (stochastic, run backwards from noise z ~ N(0, noise_w))
//!             logw [t]; d = ceil(exp(logw) * length_scale)
//! m, logs  -> each column repeated d[i] times                                 [h, sum d]
//! z_p = m + N(0, 1) * exp(logs) * noise_scale
//!          -> Flow backwards: 4 x (flip channels, z1 -= WaveNet(z0))              z [h, T]
//!          -> Generator (HiFi-GAN): conv, 3 x (upsample, mean of 3 residual blocks), tanh
//!                                                                     samples [256 * T]
//! ```
//!
//! The file fixes every hyper-parameter: channel counts and kernel sizes come from the
//! tensors' shapes, dilations, groups, paddings and strides from the attributes of the
//! `Conv`/`ConvTranspose` node that uses each weight. Tensors the exporter left unnamed
//! (`onnx::Conv_8168`, the flow's WaveNet weights after weight norm was folded) are found by
//! the node that also takes their named bias.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, Conv1dConfig, ConvTranspose1d, ConvTranspose1dConfig};
use burn::tensor::activation::{leaky_relu, relu, sigmoid, softmax, tanh};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use encoders::onnx::{OnnxNode, OnnxTensor, Scope};
use modelkit::fastmath::gelu;
use modelkit::weights::Dtype;

use std::ops::ControlFlow;

use crate::conv;

/// HiFi-GAN's slope inside the generator; the last activation uses torch's default, 0.01.
const LRELU_SLOPE: f64 = 0.1;
/// The duration flows' rational-quadratic splines: bins, and the interval they cover.
const SPLINE_BINS: usize = 10;
const SPLINE_TAIL: f32 = 5.0;
const MIN_BIN: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;
/// Relative positions seen by the text encoder's attention: -4..=4.
const WINDOW: usize = 4;
const HEADS: usize = 2;
/// Latent frames (256 samples, 11.6 ms each) in the first piece a sentence is generated in,
/// and in each later one.
pub const FIRST_PIECE: usize = 24;
pub const PIECE: usize = 200;
/// Frames of context on each side of a piece. The generator sees 10.7 frames either way:
/// conv_pre 3, the first upsampling 1, its residual blocks 45 samples at 8 a frame (5.6),
/// the later stages 1.1 together.
pub const GENERATOR_CONTEXT: usize = 12;

#[derive(Debug, thiserror::Error)]
#[error("voice model {path}: {reason}")]
pub struct VitsError {
    pub path: String,
    pub reason: String,
}

/// How much randomness goes into a sentence: Piper's `scales` input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    /// Spread of the prior sample around its mean (0: the mean itself).
    pub noise_scale: f32,
    /// Speaking slowness: durations are multiplied by it.
    pub length_scale: f32,
    /// Spread of the duration predictor's noise (0: the most likely durations).
    pub noise_w: f32,
}

/// Layer norm over the channels of a `[1, C, T]` sequence (VITS's `modules.LayerNorm`).
#[derive(Module, Debug)]
pub struct ChannelNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
}

impl ChannelNorm {
    /// `y = (x - mean_c x) / sqrt(var_c x + 1e-5) * gamma + beta`
    ///
    /// # Shapes
    /// - x: `[1, C, T]` -> `[1, C, T]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [_, c, _] = x.dims();
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        let y = centred / (var + 1e-5).sqrt();
        y * self.gamma.val().reshape([1, c, 1]) + self.beta.val().reshape([1, c, 1])
    }
}

/// Multi-head self-attention with learned relative-position embeddings for keys and values
/// (Shaw et al. 2018), shared by the heads, positions further than [`WINDOW`] apart getting
/// none.
#[derive(Module, Debug)]
pub struct RelativeAttention {
    pub q: Conv1d,
    pub k: Conv1d,
    pub v: Conv1d,
    pub o: Conv1d,
    /// `[2 * WINDOW + 1, C / heads]` each.
    pub rel_k: Param<Tensor<2>>,
    pub rel_v: Param<Tensor<2>>,
}

/// `[t, 2W + 1, t]`: one where key `j` sits at offset `k - W` from query `i` (at `[i, k, j]`).
fn offsets(t: usize, device: &Device) -> Tensor<3> {
    let r = 2 * WINDOW + 1;
    let mut data = vec![0f32; t * r * t];
    for i in 0..t {
        for k in 0..r {
            let j = i as isize + k as isize - WINDOW as isize;
            if (0..t as isize).contains(&j) {
                data[(i * r + k) * t + j as usize] = 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [t, r, t]), device)
}

impl RelativeAttention {
    /// `s_ij = q_i . (k_j + E^k_{j-i}) / sqrt(d)`, `p = softmax_j s`,
    /// `y_i = W_o sum_j p_ij (v_j + E^v_{j-i})`, with `E_{j-i} = 0` beyond the window.
    ///
    /// # Shapes
    /// - x: `[1, C, t]` -> `[1, C, t]`
    pub fn forward(&self, x: Tensor<3>, host: Option<&HostLayer>) -> Tensor<3> {
        let [_, c, t] = x.dims();
        let d = c / HEADS;
        let heads = |y: Tensor<3>| y.reshape([HEADS, d, t]).swap_dims(1, 2); // [H, t, d]
        let (q, k, v) = match host {
            Some(h) => {
                let qkv = on_host(&h.qkv, x, conv::Input::Plain);
                let part = |i: usize| qkv.clone().narrow(1, i * c, c);
                (part(0), part(1), part(2))
            }
            None => (
                self.q.forward(x.clone()),
                self.k.forward(x.clone()),
                self.v.forward(x),
            ),
        };
        let q = heads(q) / (d as f64).sqrt();
        let k = heads(k);
        let v = heads(v);
        let offsets = offsets(t, &q.device()); // [t, r, t]
        let r = 2 * WINDOW + 1;
        // Relative logits q_i . E^k_o, [H, t, r], moved onto the key axis through `offsets`.
        let rel = q
            .clone()
            .reshape([HEADS * t, d])
            .matmul(self.rel_k.val().transpose())
            .reshape([HEADS, t, r]);
        let local = rel.swap_dims(0, 1).matmul(offsets.clone()).swap_dims(0, 1); // [H, t, t]
        let scores = q.matmul(k.swap_dims(1, 2)) + local;
        let p = softmax(scores, 2);
        // Attention mass per offset, [H, t, r], times E^v.
        let by_offset = p
            .clone()
            .swap_dims(0, 1)
            .matmul(offsets.swap_dims(1, 2))
            .swap_dims(0, 1);
        let rel_out = by_offset
            .reshape([HEADS * t, r])
            .matmul(self.rel_v.val())
            .reshape([HEADS, t, d]);
        let y = (p.matmul(v) + rel_out).swap_dims(1, 2).reshape([1, c, t]); // [H, t, d]
        match host {
            Some(h) => on_host(&h.o, y, conv::Input::Plain),
            None => self.o.forward(y),
        }
    }
}

/// The text encoder's position-wise part: two convolutions (kernel 3) with a ReLU between.
#[derive(Module, Debug)]
pub struct Ffn {
    pub up: Conv1d,
    pub down: Conv1d,
}

#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub attention: RelativeAttention,
    pub norm1: ChannelNorm,
    pub ffn: Ffn,
    pub norm2: ChannelNorm,
}

impl EncoderLayer {
    /// `x = LN(x + Attn(x))`, `x = LN(x + W2 relu(W1 x))` (post-norm, as VITS).
    ///
    /// # Shapes
    /// - x: `[1, C, t]` -> `[1, C, t]`
    pub fn forward(&self, x: Tensor<3>, host: Option<&HostLayer>) -> Tensor<3> {
        let x = self
            .norm1
            .forward(x.clone() + self.attention.forward(x.clone(), host));
        let y = match host {
            // The ReLU between the two is the second's input activation.
            Some(h) => {
                let [_, _, t] = x.dims();
                let up = h.ffn_up.forward(&to_signal(x.clone()), conv::Input::Plain);
                let down = h.ffn_down.forward(&up, conv::Input::LeakyRelu(0.0));
                from_signal(down, &x.device(), t)
            }
            None => self.ffn.down.forward(relu(self.ffn.up.forward(x.clone()))),
        };
        self.norm2.forward(x + y)
    }
}

#[derive(Module, Debug)]
pub struct TextEncoder {
    /// `[symbols, C]`.
    pub embedding: Param<Tensor<2>>,
    pub layers: Vec<EncoderLayer>,
    /// `C -> 2C`: the prior's mean and log-deviation.
    pub proj: Conv1d,
}

impl TextEncoder {
    /// `h = Layers(E[ids] * sqrt(C))`, `(m, logs) = split(W h)`. With `host`, the layers'
    /// convolutions run on [`crate::conv`]'s kernels.
    ///
    /// # Shapes
    /// - ids: `[t]` -> `(h, m, logs)`, each `[1, C, t]`
    pub fn forward(
        &self,
        ids: Tensor<1, Int>,
        host: Option<&[HostLayer]>,
    ) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let [t] = ids.dims();
        let [_, c] = self.embedding.val().dims();
        let x = self.embedding.val().select(0, ids) * (c as f64).sqrt();
        let mut x = x.transpose().reshape([1, c, t]);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, host.and_then(|h| h.get(i)));
        }
        let stats = self.proj.forward(x.clone());
        let m = stats.clone().narrow(1, 0, c);
        let logs = stats.narrow(1, c, c);
        (x, m, logs)
    }
}

/// Dilated depth-separable convolutions (VITS's `DDSConv`): dilation 1, 3, 9.
#[derive(Module, Debug)]
pub struct DdsConv {
    pub depthwise: Vec<Conv1d>,
    pub norm1: Vec<ChannelNorm>,
    pub pointwise: Vec<Conv1d>,
    pub norm2: Vec<ChannelNorm>,
}

impl DdsConv {
    /// `x += gelu(LN(P_i gelu(LN(D_i x))))` for each layer `i`.
    ///
    /// # Shapes
    /// - x: `[1, C, t]` -> `[1, C, t]`
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for i in 0..self.depthwise.len() {
            let y = gelu(self.norm1[i].forward(self.depthwise[i].forward(x.clone())));
            let y = gelu(self.norm2[i].forward(self.pointwise[i].forward(y)));
            x = x + y;
        }
        x
    }
}

/// A coupling layer of the duration predictor: the second channel through a monotonic
/// rational-quadratic spline whose knots a small network computes from the first.
#[derive(Module, Debug)]
pub struct ConvFlow {
    pub pre: Conv1d,
    pub convs: DdsConv,
    /// `C -> 3 * bins - 1`: widths, heights, inner derivatives.
    pub proj: Conv1d,
}

impl ConvFlow {
    /// Backwards: `z1 = spline^-1_{theta(z0, g)}(z1)`, `z0` unchanged.
    ///
    /// # Shapes
    /// - z: `[1, 2, t]`, g: `[1, C, t]` -> `[1, 2, t]`
    pub fn reverse(&self, z: Tensor<3>, g: Tensor<3>) -> Tensor<3> {
        let [_, _, t] = z.dims();
        let device = z.device();
        let z0 = z.clone().narrow(1, 0, 1);
        let z1 = z.narrow(1, 1, 1);
        let h = self
            .proj
            .forward(self.convs.forward(self.pre.forward(z0.clone()) + g));
        // The knots are scaled by the square root of the filter channels (pre's outputs).
        let [c, _, _] = self.pre.weight.val().dims();
        // The spline works on a handful of numbers per phoneme: on the host, in f32.
        let knots = floats(h);
        let mut x = floats(z1);
        let scale = (c as f32).sqrt();
        let params = 3 * SPLINE_BINS - 1;
        for (i, xi) in x.iter_mut().enumerate() {
            let column: Vec<f32> = (0..params).map(|p| knots[p * t + i]).collect();
            let widths: Vec<f32> = column[..SPLINE_BINS].iter().map(|w| w / scale).collect();
            let heights: Vec<f32> = column[SPLINE_BINS..2 * SPLINE_BINS]
                .iter()
                .map(|h| h / scale)
                .collect();
            *xi = spline_inverse(*xi, &widths, &heights, &column[2 * SPLINE_BINS..]);
        }
        let z1 = Tensor::from_data(TensorData::new(x, [1, 1, t]), &device);
        Tensor::cat(vec![z0, z1], 1)
    }
}

fn floats<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

fn softmax_host(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// Knot positions from unnormalised bin sizes: `min + (1 - min * n) * softmax`, summed, on
/// `[-tail, tail]` with exact ends; returns the cumulative positions and the bin sizes.
fn knots(unnormalised: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = unnormalised.len();
    let sizes: Vec<f32> = softmax_host(unnormalised)
        .iter()
        .map(|s| MIN_BIN + (1.0 - MIN_BIN * n as f32) * s)
        .collect();
    let mut cum = vec![0f32; n + 1];
    let mut acc = 0f32;
    for (k, s) in sizes.iter().enumerate() {
        acc += s;
        cum[k + 1] = acc;
    }
    let (left, right) = (-SPLINE_TAIL, SPLINE_TAIL);
    let mut cum: Vec<f32> = cum.iter().map(|c| (right - left) * c + left).collect();
    cum[0] = left;
    cum[n] = right;
    let sizes = cum.windows(2).map(|w| w[1] - w[0]).collect();
    (cum, sizes)
}

/// The inverse of a rational-quadratic spline with linear tails (Durkan et al. 2019,
/// "Neural Spline Flows", as in nflows): identity outside `[-tail, tail]`; inside, the root
/// of the bin's quadratic.
fn spline_inverse(y: f32, widths: &[f32], heights: &[f32], inner_derivatives: &[f32]) -> f32 {
    if !(-SPLINE_TAIL..=SPLINE_TAIL).contains(&y) {
        return y;
    }
    // The outer derivatives are padded so that softplus gives exactly 1 - MIN_DERIVATIVE.
    let edge = ((1.0f64 - f64::from(MIN_DERIVATIVE)).exp() - 1.0).ln() as f32;
    let derivatives: Vec<f32> = std::iter::once(edge)
        .chain(inner_derivatives.iter().copied())
        .chain(std::iter::once(edge))
        .map(|d| MIN_DERIVATIVE + softplus(d))
        .collect();
    let (cum_w, w) = knots(widths);
    let (mut cum_h, h) = knots(heights);
    let n = w.len();
    cum_h[n] += 1e-6;
    let bin = (cum_h.iter().filter(|&&c| y >= c).count().max(1) - 1).min(n - 1);
    let delta = h[bin] / w[bin];
    let (d0, d1) = (derivatives[bin], derivatives[bin + 1]);
    let dy = y - cum_h[bin];
    let a = dy * (d0 + d1 - 2.0 * delta) + h[bin] * (delta - d0);
    let b = h[bin] * d0 - dy * (d0 + d1 - 2.0 * delta);
    let c = -delta * dy;
    let discriminant = (b * b - 4.0 * a * c).max(0.0);
    let root = (2.0 * c) / (-b - discriminant.sqrt());
    root * w[bin] + cum_w[bin]
}

/// VITS's stochastic duration predictor, run backwards: from noise to log-durations.
#[derive(Module, Debug)]
pub struct DurationPredictor {
    pub pre: Conv1d,
    pub convs: DdsConv,
    pub proj: Conv1d,
    /// In the order they run backwards (the file's flows 7, 5, 3; flow 1 is never used
    /// backwards).
    pub flows: Vec<ConvFlow>,
    /// The first flow, elementwise affine: `x = (x - m) * exp(-logs)`, `[2, 1]` each.
    pub affine_m: Param<Tensor<2>>,
    pub affine_inv_scale: Param<Tensor<2>>,
}

impl DurationPredictor {
    /// `g = W2 DDS(W1 h)`; `z ~ N(0, noise_w)`; for each flow: flip, `z = f^-1(z; g)`;
    /// `z = (z - m) * exp(-logs)`; `logw = z_0`.
    ///
    /// # Shapes
    /// - h: `[1, C, t]` -> logw `[t]`
    pub fn forward(&self, h: Tensor<3>, noise_w: f32) -> Vec<f32> {
        let [_, _, t] = h.dims();
        let device = h.device();
        let g = self.proj.forward(self.convs.forward(self.pre.forward(h)));
        let mut z = if noise_w > 0.0 {
            Tensor::<3>::random([1, 2, t], Distribution::Normal(0.0, 1.0), &device) * noise_w
        } else {
            Tensor::zeros([1, 2, t], &device)
        };
        for flow in &self.flows {
            z = flow.reverse(z.flip([1]), g.clone());
        }
        let z = z.flip([1]);
        let z = (z - self.affine_m.val().reshape([1, 2, 1]))
            * self.affine_inv_scale.val().reshape([1, 2, 1]);
        floats(z.narrow(1, 0, 1))
    }
}

/// WaveNet-style stack without conditioning (VITS's `WN`): gated dilated convolutions with
/// residual and skip outputs.
#[derive(Module, Debug)]
pub struct WaveNet {
    pub input: Vec<Conv1d>,
    pub res_skip: Vec<Conv1d>,
}

impl WaveNet {
    /// `a_i = tanh(u) * sigmoid(v)` with `(u, v) = split(I_i x)`; `(r, s) = split(R_i a_i)`;
    /// `x += r`; output `sum_i s` (the last layer's output is all skip).
    ///
    /// # Shapes
    /// - x: `[1, C, T]` -> `[1, C, T]`
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        let [_, c, _] = x.dims();
        let mut out = x.zeros_like();
        let last = self.input.len() - 1;
        for (i, (input, res_skip)) in self.input.iter().zip(&self.res_skip).enumerate() {
            let u = input.forward(x.clone());
            let a = tanh(u.clone().narrow(1, 0, c)) * sigmoid(u.narrow(1, c, c));
            let rs = res_skip.forward(a);
            if i < last {
                x = x + rs.clone().narrow(1, 0, c);
                out = out + rs.narrow(1, c, c);
            } else {
                out = out + rs;
            }
        }
        out
    }
}

/// A mean-only affine coupling layer of the flow.
#[derive(Module, Debug)]
pub struct Coupling {
    pub pre: Conv1d,
    pub wavenet: WaveNet,
    pub post: Conv1d,
}

impl Coupling {
    /// Backwards: `z1 -= W_post WN(W_pre z0)`, `z0` unchanged.
    ///
    /// # Shapes
    /// - z: `[1, C, T]` -> `[1, C, T]`
    pub fn reverse(&self, z: Tensor<3>) -> Tensor<3> {
        let [_, c, _] = z.dims();
        let half = c / 2;
        let z0 = z.clone().narrow(1, 0, half);
        let z1 = z.narrow(1, half, half);
        let m = self
            .post
            .forward(self.wavenet.forward(self.pre.forward(z0.clone())));
        Tensor::cat(vec![z0, z1 - m], 1)
    }
}

/// HiFi-GAN residual block, type 2: two dilated convolutions, each with its own skip.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub convs: Vec<Conv1d>,
}

impl ResBlock {
    /// `x += C_j lrelu(x)` for each convolution `j`.
    ///
    /// # Shapes
    /// - x: `[1, C, T]` -> `[1, C, T]`
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for conv in &self.convs {
            x = x.clone() + conv.forward(leaky_relu(x, LRELU_SLOPE));
        }
        x
    }
}

/// HiFi-GAN generator: latent frames to samples.
#[derive(Module, Debug)]
pub struct Generator {
    pub pre: Conv1d,
    pub ups: Vec<ConvTranspose1d>,
    /// `ups.len() * kernels` blocks, grouped by upsampling stage.
    pub resblocks: Vec<ResBlock>,
    pub post: Conv1d,
}

impl Generator {
    /// `x = W_pre z`; per stage: `x = mean_k R_k(Up(lrelu(x)))`; `y = tanh(W_post lrelu(x))`.
    ///
    /// # Shapes
    /// - z: `[1, C, T]` -> samples `[1, 1, T * prod(strides)]`
    pub fn forward(&self, z: Tensor<3>) -> Tensor<3> {
        let kernels = self.resblocks.len() / self.ups.len();
        let mut x = self.pre.forward(z);
        for (i, up) in self.ups.iter().enumerate() {
            let u = up.forward(leaky_relu(x, LRELU_SLOPE));
            let blocks = &self.resblocks[i * kernels..(i + 1) * kernels];
            let mut sum = blocks[0].forward(u.clone());
            for block in &blocks[1..] {
                sum = sum + block.forward(u.clone());
            }
            x = sum / kernels as f64;
        }
        tanh(self.post.forward(leaky_relu(x, 0.01)))
    }
}

/// The encoder's convolutions, the flow and the generator on the CPU: the same weights and
/// the same formulas as [`EncoderLayer`], [`Coupling`] and [`Generator`], run by
/// [`crate::conv`]'s direct convolutions instead of burn's im2col ones (2-3 times faster
/// at these shapes: together they are nine tenths of the work). Built where
/// [`modelkit::is_cpu`] (flex, ndarray); on a GPU the burn modules run.
#[derive(Debug, Clone)]
pub struct Host {
    encoder: Vec<HostLayer>,
    flow: Vec<HostCoupling>,
    generator: HostGenerator,
}

impl Host {
    /// Takes the convolutions' weights over from burn's modules, one module at a time,
    /// each let go (or emptied, for the encoder's) once copied: the weights are never held
    /// twice over.
    fn new(
        encoder: &mut TextEncoder,
        flow: Vec<Coupling>,
        generator: Generator,
    ) -> Result<Self, String> {
        let mut layers = Vec::new();
        for layer in &mut encoder.layers {
            layers.push(HostLayer::new(layer)?);
            let a = &mut layer.attention;
            for c in [&mut a.q, &mut a.k, &mut a.v, &mut a.o] {
                hollow(c);
            }
            hollow(&mut layer.ffn.up);
            hollow(&mut layer.ffn.down);
        }
        Ok(Host {
            encoder: layers,
            flow: flow
                .into_iter()
                .map(|c| HostCoupling::new(&c))
                .collect::<Result<_, _>>()?,
            generator: HostGenerator::new(&generator)?,
        })
    }
}

/// An [`EncoderLayer`]'s convolutions on the host (the rest stays in burn: at the phoneme
/// rate it is small): the three projections of the attention as one.
#[derive(Debug, Clone)]
pub struct HostLayer {
    qkv: conv::Conv1d,
    o: conv::Conv1d,
    ffn_up: conv::Conv1d,
    ffn_down: conv::Conv1d,
}

impl HostLayer {
    fn new(l: &EncoderLayer) -> Result<Self, String> {
        let a = &l.attention;
        let qkv = Conv1d {
            weight: Param::from_tensor(Tensor::cat(
                vec![a.q.weight.val(), a.k.weight.val(), a.v.weight.val()],
                0,
            )),
            bias: match (&a.q.bias, &a.k.bias, &a.v.bias) {
                (Some(q), Some(k), Some(v)) => Some(Param::from_tensor(Tensor::cat(
                    vec![q.val(), k.val(), v.val()],
                    0,
                ))),
                _ => return Err("attention projections without biases".into()),
            },
            ..a.q.clone()
        };
        Ok(HostLayer {
            qkv: host_conv(&qkv, 1.0)?,
            o: host_conv(&a.o, 1.0)?,
            ffn_up: host_conv(&l.ffn.up, 1.0)?,
            ffn_down: host_conv(&l.ffn.down, 1.0)?,
        })
    }
}

/// `[1, C, t]` to a host signal.
fn to_signal(x: Tensor<3>) -> conv::Signal {
    let [_, c, t] = x.dims();
    conv::Signal::from_rows(c, t, &floats(x))
}

fn from_signal(s: conv::Signal, device: &Device, t: usize) -> Tensor<3> {
    let c = s.channels;
    Tensor::from_data(TensorData::new(s.into_rows(), [1, c, t]), device)
}

/// A burn tensor through a host convolution and back.
fn on_host(c: &conv::Conv1d, x: Tensor<3>, act: conv::Input) -> Tensor<3> {
    let device = x.device();
    let y = c.forward(&to_signal(x), act);
    let t = y.len;
    from_signal(y, &device, t)
}

/// [`Coupling`] on the host.
#[derive(Debug, Clone)]
struct HostCoupling {
    pre: conv::Conv1d,
    input: Vec<conv::Conv1d>,
    res_skip: Vec<conv::Conv1d>,
    post: conv::Conv1d,
}

impl HostCoupling {
    fn new(c: &Coupling) -> Result<Self, String> {
        let all = |v: &[Conv1d]| {
            v.iter()
                .map(|c| host_conv(c, 1.0))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(HostCoupling {
            pre: host_conv(&c.pre, 1.0)?,
            input: all(&c.wavenet.input)?,
            res_skip: all(&c.wavenet.res_skip)?,
            post: host_conv(&c.post, 1.0)?,
        })
    }

    /// As [`Coupling::reverse`] of [`WaveNet::forward`], on `z` in place.
    ///
    /// # Shapes
    /// - z: `[C, T]` -> `[C, T]`
    fn reverse(&self, z: &mut conv::Signal) {
        let half = z.channels / 2;
        let mut x = self.pre.forward(&z.narrow(0, half), conv::Input::Plain);
        let c = x.channels;
        let mut out = conv::Signal::zeros(c, z.len);
        let last = self.input.len() - 1;
        for (i, (input, res_skip)) in self.input.iter().zip(&self.res_skip).enumerate() {
            let u = input.forward(&x, conv::Input::Plain);
            let mut a = u.narrow(0, c);
            a.zip_rows(&u, c, conv::gate);
            let rs = res_skip.forward(&a, conv::Input::Plain);
            if i < last {
                x.add_rows(0, &rs, 0, c, 1.0);
                out.add_rows(0, &rs, c, c, 1.0);
            } else {
                out.add_rows(0, &rs, 0, c, 1.0);
            }
        }
        let m = self.post.forward(&out, conv::Input::Plain);
        z.add_rows(half, &m, 0, half, -1.0);
    }
}

/// [`Generator`] on the host.
#[derive(Debug, Clone)]
pub struct HostGenerator {
    pre: conv::Conv1d,
    ups: Vec<conv::ConvTranspose1d>,
    resblocks: Vec<Vec<conv::Conv1d>>,
    post: conv::Conv1d,
}

impl HostGenerator {
    /// The generator's convolutions copied into the host kernels' layout.
    ///
    /// Each stage ends in the mean of its residual blocks; the `1 / kernels` is folded into
    /// the weights of the layer after (its activation commutes with a positive scale).
    pub fn new(g: &Generator) -> Result<Self, String> {
        let mean = 1.0 / (g.resblocks.len() / g.ups.len().max(1)).max(1) as f32;
        Ok(HostGenerator {
            pre: host_conv(&g.pre, 1.0)?,
            ups: g
                .ups
                .iter()
                .enumerate()
                .map(|(i, up)| host_conv_transpose(up, if i == 0 { 1.0 } else { mean }))
                .collect::<Result<_, _>>()?,
            resblocks: g
                .resblocks
                .iter()
                .map(|b| b.convs.iter().map(|c| host_conv(c, 1.0)).collect())
                .collect::<Result<_, _>>()?,
            post: host_conv(&g.post, mean)?,
        })
    }

    /// As [`Generator::forward`].
    ///
    /// # Shapes
    /// - z: `[C, T]` -> samples `[T * prod(strides)]`
    pub fn forward(&self, z: &conv::Signal) -> Vec<f32> {
        let kernels = self.resblocks.len() / self.ups.len();
        let slope = conv::Input::LeakyRelu(LRELU_SLOPE as f32);
        let mut x = self.pre.forward(z, conv::Input::Plain);
        for (i, up) in self.ups.iter().enumerate() {
            let u = up.forward(&x, slope);
            let mut sum: Option<conv::Signal> = None;
            for block in &self.resblocks[i * kernels..(i + 1) * kernels] {
                let mut y = u.clone();
                for c in block {
                    c.residual(&mut y, slope);
                }
                match &mut sum {
                    Some(s) => s.add(&y),
                    None => sum = Some(y),
                }
            }
            // The sum: the next layer's weights divide it by `kernels`.
            x = sum.unwrap_or(u);
        }
        let mut y = self.post.forward(&x, conv::Input::LeakyRelu(0.01));
        y.map(modelkit::fastmath::tanh);
        y.into_rows()
    }
}

/// A convolution's weights, times `scale`, in the host kernels' layout.
fn host_conv(c: &Conv1d, scale: f32) -> Result<conv::Conv1d, String> {
    let PaddingConfig1d::Explicit(left, right) = c.padding else {
        return Err("a convolution without explicit padding (the host kernels need it)".into());
    };
    if c.stride != 1 || c.groups != 1 {
        return Err("a strided or grouped convolution (the host kernels take neither)".into());
    }
    let shape = c.weight.val().dims();
    let bias = c.bias.as_ref().map(|b| floats(b.val()));
    Ok(conv::Conv1d::new(
        &floats(c.weight.val() * scale),
        shape,
        bias.as_deref(),
        c.dilation,
        [left, right],
    ))
}

fn host_conv_transpose(c: &ConvTranspose1d, scale: f32) -> Result<conv::ConvTranspose1d, String> {
    if c.groups != 1 || c.dilation != 1 || c.padding_out != 0 {
        return Err("a grouped, dilated or output-padded upsampling".into());
    }
    let shape = c.weight.val().dims();
    let bias = c.bias.as_ref().map(|b| floats(b.val()));
    Ok(conv::ConvTranspose1d::new(
        &floats(c.weight.val() * scale),
        shape,
        bias.as_deref(),
        c.stride,
        c.padding,
    ))
}

#[derive(Module, Debug)]
pub struct Vits {
    pub encoder: TextEncoder,
    pub durations: DurationPredictor,
    /// The flow's couplings in file order (0, 2, 4, 6); they run backwards. Empty when
    /// `host` holds them.
    pub flow: Vec<Coupling>,
    /// `None` when `host` holds it.
    pub generator: Option<Generator>,
    /// The encoder's convolutions, the flow and the generator on the host, when the
    /// device is the CPU; burn's copies of those weights are then let go.
    #[module(skip)]
    pub host: Option<Host>,
}

/// The generator run over `frames` latent frames in pieces ([`FIRST_PIECE`], then
/// [`PIECE`]), each with [`GENERATOR_CONTEXT`] frames either side: `generate(lo, hi)` gives
/// the samples of frames `lo..hi`, of which `piece` gets the middle. With `parallel`, the
/// pieces after the first are generated as many at a time as rayon has threads (each
/// piece on one thread: no hand-over inside a piece), and handed over in order.
fn pieces(
    frames: usize,
    parallel: bool,
    mut piece: impl FnMut(&[f32]),
    generate: impl Fn(usize, usize) -> Vec<f32> + Sync,
) {
    let mut spans = Vec::new();
    let mut start = 0;
    while start < frames {
        let len = if start == 0 { FIRST_PIECE } else { PIECE }.min(frames - start);
        spans.push((start, len));
        start += len;
    }
    let run = |&(start, len): &(usize, usize)| {
        let lo = start.saturating_sub(GENERATOR_CONTEXT);
        let hi = (start + len + GENERATOR_CONTEXT).min(frames);
        let samples = generate(lo, hi);
        let hop = samples.len() / (hi - lo);
        samples[(start - lo) * hop..(start - lo + len) * hop].to_vec()
    };
    let Some((first, rest)) = spans.split_first() else {
        return;
    };
    // The first piece alone, so that it is heard as soon as possible.
    piece(&run(first));
    let batch = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    for group in rest.chunks(batch) {
        let done: Vec<Vec<f32>> = if group.len() > 1 {
            use rayon::prelude::*;
            group.par_iter().map(run).collect()
        } else {
            group.iter().map(run).collect()
        };
        done.iter().for_each(|samples| piece(samples));
    }
}

/// A sentence's latent frames `[C, T]`, where the generator will read them.
enum Latents {
    Host(conv::Signal),
    Burn(Box<Tensor<3>>),
}

/// The frame each output step copies: phoneme `i` held for `durations[i]` frames.
fn expand(durations: &[usize]) -> Vec<i64> {
    durations
        .iter()
        .enumerate()
        .flat_map(|(i, &d)| std::iter::repeat_n(i as i64, d))
        .collect()
}

impl Vits {
    /// Samples of one sentence's phoneme ids (Piper's `infer` with batch 1).
    ///
    /// # Shapes
    /// - ids: `[t]` -> samples, `256 * sum(durations)` of them
    pub fn forward(&self, ids: &[i64], noise: Noise) -> Vec<f32> {
        let mut out = Vec::new();
        self.stream(ids, noise, |piece| out.extend_from_slice(piece));
        out
    }

    /// [`Vits::forward`] handing the samples over in pieces as the generator makes them,
    /// the first after [`FIRST_PIECE`] frames: a listener hears the start of a sentence
    /// while the rest is still being generated. Each piece is generated with
    /// [`GENERATOR_CONTEXT`] latent frames of context on both sides, more than the
    /// generator's receptive field, so the pieces join into what one pass would give.
    pub fn stream(&self, ids: &[i64], noise: Noise, piece: impl FnMut(&[f32])) {
        self.generate(&self.latents(ids, noise), piece);
    }

    /// [`Vits::stream`] over several sentences in turn, `piece(sentence, samples)`; a
    /// `Break` from it stops before the next sentence. With more than one thread, each
    /// sentence's latents (encoder, durations, flow: work that keeps few threads busy) are
    /// made by a task of their own while the sentence before is being generated.
    pub fn stream_sentences(
        &self,
        sentences: &[Vec<i64>],
        noise: Noise,
        mut piece: impl FnMut(usize, &[f32]) -> ControlFlow<()>,
    ) {
        let stop = std::cell::Cell::new(false);
        let mut piece = |i: usize, p: &[f32]| {
            if !stop.get() {
                stop.set(piece(i, p).is_break());
            }
        };
        let ahead = self.host.is_some() && rayon::current_num_threads() > 1;
        let mut next = sentences.first().map(|ids| self.latents(ids, noise));
        for i in 0..sentences.len() {
            let Some(z) = next.take() else { return };
            if stop.get() {
                return;
            }
            let upcoming = sentences.get(i + 1);
            if ahead {
                // A task of rayon's pool, not a thread of its own: the pool's threads are
                // all the cores asked for.
                let mut made = None;
                rayon::in_place_scope(|s| {
                    if let Some(ids) = upcoming {
                        let made = &mut made;
                        s.spawn(move |_| *made = Some(self.latents(ids, noise)));
                    }
                    self.generate(&z, |p| piece(i, p));
                });
                next = made;
            } else {
                self.generate(&z, |p| piece(i, p));
                next = upcoming.map(|ids| self.latents(ids, noise));
            }
        }
    }

    /// The prior run backwards through the flow: the generator's input, on the host when
    /// the device is the CPU.
    fn latents(&self, ids: &[i64], noise: Noise) -> Latents {
        let prior = self.prior(ids, noise);
        match &self.host {
            Some(host) => {
                let [_, channels, frames] = prior.dims();
                let mut z = conv::Signal::from_rows(channels, frames, &floats(prior));
                for coupling in host.flow.iter().rev() {
                    z.flip_channels();
                    coupling.reverse(&mut z);
                }
                Latents::Host(z)
            }
            None => Latents::Burn(Box::new(self.flow_reverse(prior))),
        }
    }

    /// The samples of a sentence's latents, in pieces.
    fn generate(&self, z: &Latents, piece: impl FnMut(&[f32])) {
        match (z, &self.host) {
            (Latents::Host(z), Some(host)) => pieces(z.len, true, piece, |lo, hi| {
                host.generator.forward(&z.narrow_time(lo, hi - lo))
            }),
            (Latents::Burn(z), _) => {
                let [_, _, frames] = z.dims();
                let Some(generator) = &self.generator else {
                    unreachable!("burn latents come with burn's generator")
                };
                pieces(frames, false, piece, |lo, hi| {
                    floats(generator.forward(z.clone().narrow(2, lo, hi - lo)))
                });
            }
            (Latents::Host(_), None) => unreachable!("host latents come from the host flow"),
        }
    }

    /// The prior run backwards through the flow: the generator's input.
    ///
    /// # Shapes
    /// - z_p: `[1, C, T]` -> z `[1, C, T]`
    fn flow_reverse(&self, mut z: Tensor<3>) -> Tensor<3> {
        for coupling in self.flow.iter().rev() {
            z = coupling.reverse(z.flip([1]));
        }
        z
    }

    /// The prior: each phoneme's mean (plus scaled noise) held for its duration.
    ///
    /// # Shapes
    /// - ids: `[t]` -> z_p `[1, C, sum(durations)]`
    fn prior(&self, ids: &[i64], noise: Noise) -> Tensor<3> {
        let device = self.encoder.embedding.device();
        let t = ids.len();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [t]), &device);
        let host = self.host.as_ref().map(|h| &h.encoder[..]);
        let (h, m, logs) = self.encoder.forward(ids, host);
        let logw = self.durations.forward(h, noise.noise_w);
        let durations: Vec<usize> = logw
            .iter()
            .map(|l| (l.exp() * noise.length_scale).ceil().max(0.0) as usize)
            .collect();
        let mut frames = expand(&durations);
        if frames.is_empty() {
            // Piper clamps the length to at least one frame.
            frames.push(0);
        }
        let n = frames.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(frames, [n]), &device);
        let m = m.select(2, index.clone());
        if noise.noise_scale > 0.0 {
            let logs = logs.select(2, index);
            let e = Tensor::<3>::random(m.dims(), Distribution::Normal(0.0, 1.0), &device);
            m + e * logs.exp() * noise.noise_scale
        } else {
            m
        }
    }

    /// Reads the generator from a Piper voice's ONNX file.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self, VitsError> {
        let fail = |reason: String| VitsError {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let graph = encoders::onnx::graph(&bytes).map_err(|e| fail(e.to_string()))?;
        // The file's bytes go before the modules are made, and each tensor's floats move
        // into its module: at most two copies of the weights are ever held.
        drop(bytes);
        let file = Weights {
            nodes: graph.nodes,
            tensors: std::cell::RefCell::new(graph.tensors),
            device,
        };
        Self::from_file(&file).map_err(fail)
    }

    fn from_file(f: &Weights) -> Result<Self, String> {
        // The embedding is the table the `Gather` on the `input` ids reads.
        let gather = f
            .nodes
            .iter()
            .find(|n| n.op == "Gather" && n.inputs.get(1).map(String::as_str) == Some("input"))
            .ok_or("no Gather node reads the phoneme ids")?;
        let embedding = f.param::<2>(&gather.inputs[0], None)?;
        let mut layers = Vec::new();
        while f.has(&format!(
            "enc_p.encoder.attn_layers.{}.conv_q.weight",
            layers.len()
        )) {
            let i = layers.len();
            let a = format!("enc_p.encoder.attn_layers.{i}");
            let rel = |name: &str| -> Result<Param<Tensor<2>>, String> {
                let name = format!("{a}.{name}");
                match f.checked(&name, None)?[..] {
                    [1, r, d] if r == 2 * WINDOW + 1 => f.param_shaped(f.take(&name)?, [r, d]),
                    ref got => Err(format!(
                        "tensor '{name}' has shape {got:?}, the model needs [1, {}, width]",
                        2 * WINDOW + 1
                    )),
                }
            };
            layers.push(EncoderLayer {
                attention: RelativeAttention {
                    q: f.conv(&format!("{a}.conv_q"))?,
                    k: f.conv(&format!("{a}.conv_k"))?,
                    v: f.conv(&format!("{a}.conv_v"))?,
                    o: f.conv(&format!("{a}.conv_o"))?,
                    rel_k: rel("emb_rel_k")?,
                    rel_v: rel("emb_rel_v")?,
                },
                norm1: f.norm(&format!("enc_p.encoder.norm_layers_1.{i}"))?,
                ffn: Ffn {
                    up: same(f.conv(&format!("enc_p.encoder.ffn_layers.{i}.conv_1"))?),
                    down: same(f.conv(&format!("enc_p.encoder.ffn_layers.{i}.conv_2"))?),
                },
                norm2: f.norm(&format!("enc_p.encoder.norm_layers_2.{i}"))?,
            });
        }
        if layers.is_empty() {
            return Err("no text encoder layers (enc_p.encoder.attn_layers.*)".into());
        }
        let mut encoder = TextEncoder {
            embedding,
            layers,
            proj: f.conv("enc_p.proj")?,
        };
        let dds = |p: &str| -> Result<DdsConv, String> {
            let mut d = DdsConv {
                depthwise: vec![],
                norm1: vec![],
                pointwise: vec![],
                norm2: vec![],
            };
            while f.has(&format!("{p}.convs_sep.{}.weight", d.depthwise.len())) {
                let i = d.depthwise.len();
                d.depthwise.push(f.conv(&format!("{p}.convs_sep.{i}"))?);
                d.norm1.push(f.norm(&format!("{p}.norms_1.{i}"))?);
                d.pointwise.push(f.conv(&format!("{p}.convs_1x1.{i}"))?);
                d.norm2.push(f.norm(&format!("{p}.norms_2.{i}"))?);
            }
            Ok(d)
        };
        // The backward pass uses the flows from the last to the third (index 3), then the
        // affine flow 0: the exporter dropped the rest.
        let mut flows = Vec::new();
        let mut k = 15;
        while k >= 3 {
            let p = format!("dp.flows.{k}");
            if f.has(&format!("{p}.pre.weight")) {
                flows.push(ConvFlow {
                    pre: f.conv(&format!("{p}.pre"))?,
                    convs: dds(&format!("{p}.convs"))?,
                    proj: f.conv(&format!("{p}.proj"))?,
                });
            }
            k -= 2;
        }
        if flows.is_empty() {
            return Err("no duration flows (dp.flows.*)".into());
        }
        let affine = f.consumer_of("dp.flows.0.m", "Sub")?;
        let mul = f
            .nodes
            .iter()
            .find(|n| n.op == "Mul" && n.inputs.first() == affine.outputs.first())
            .ok_or("the duration predictor's affine flow has no scale")?;
        let durations = DurationPredictor {
            pre: f.conv("dp.pre")?,
            convs: dds("dp.convs")?,
            proj: f.conv("dp.proj")?,
            flows,
            affine_m: f.param("dp.flows.0.m", Some(&[2, 1]))?,
            affine_inv_scale: f.param(&mul.inputs[1], Some(&[2, 1]))?,
        };
        let mut flow = Vec::new();
        for k in (0..16).step_by(2) {
            let p = format!("flow.flows.{k}");
            if !f.has(&format!("{p}.pre.weight")) {
                continue;
            }
            let mut wavenet = WaveNet {
                input: vec![],
                res_skip: vec![],
            };
            while f.has(&format!("{p}.enc.in_layers.{}.bias", wavenet.input.len())) {
                let i = wavenet.input.len();
                wavenet
                    .input
                    .push(f.conv(&format!("{p}.enc.in_layers.{i}"))?);
                wavenet
                    .res_skip
                    .push(f.conv(&format!("{p}.enc.res_skip_layers.{i}"))?);
            }
            flow.push(Coupling {
                pre: f.conv(&format!("{p}.pre"))?,
                wavenet,
                post: f.conv(&format!("{p}.post"))?,
            });
        }
        if flow.is_empty() {
            return Err("no flow couplings (flow.flows.*)".into());
        }
        let mut ups = Vec::new();
        while f.has(&format!("dec.ups.{}.weight", ups.len())) {
            ups.push(f.conv_transpose(&format!("dec.ups.{}", ups.len()))?);
        }
        let mut resblocks = Vec::new();
        while f.has(&format!("dec.resblocks.{}.convs.0.weight", resblocks.len())) {
            let b = format!("dec.resblocks.{}", resblocks.len());
            let mut convs = Vec::new();
            while f.has(&format!("{b}.convs.{}.weight", convs.len())) {
                convs.push(f.conv(&format!("{b}.convs.{}", convs.len()))?);
            }
            resblocks.push(ResBlock { convs });
        }
        if ups.is_empty() || resblocks.is_empty() || resblocks.len() % ups.len() != 0 {
            return Err(format!(
                "{} upsampling layers and {} residual blocks do not make a HiFi-GAN generator",
                ups.len(),
                resblocks.len()
            ));
        }
        let generator = Generator {
            pre: f.conv("dec.conv_pre")?,
            ups,
            resblocks,
            post: f.conv("dec.conv_post")?,
        };
        if modelkit::is_cpu(f.device) {
            let host = Host::new(&mut encoder, flow, generator)?;
            return Ok(Vits {
                encoder,
                durations,
                flow: Vec::new(),
                generator: None,
                host: Some(host),
            });
        }
        Ok(Vits {
            encoder,
            durations,
            flow,
            generator: Some(generator),
            host: None,
        })
    }
}

/// The ONNX graph as a source of modules: each tensor's floats are taken out as its module
/// is made.
struct Weights<'a> {
    nodes: Vec<OnnxNode>,
    tensors: std::cell::RefCell<Vec<OnnxTensor>>,
    device: &'a Device,
}

impl Weights<'_> {
    fn has(&self, name: &str) -> bool {
        self.tensors.borrow().iter().any(|t| t.name == name)
            || self
                .nodes
                .iter()
                .any(|n| n.inputs.iter().skip(1).any(|i| i == name))
    }

    /// The tensor of the main graph named `name`, its floats moved out (a second use of
    /// one tensor finds it empty and fails on its size).
    fn take(&self, name: &str) -> Result<OnnxTensor, String> {
        let mut tensors = self.tensors.borrow_mut();
        let t = tensors
            .iter_mut()
            .find(|t| t.name == name && t.graph.is_empty())
            .ok_or_else(|| format!("no float tensor '{name}'"))?;
        Ok(OnnxTensor {
            graph: String::new(),
            name: t.name.clone(),
            shape: t.shape.clone(),
            data: std::mem::take(&mut t.data),
        })
    }

    /// The shape of main-graph tensor `name`, checked to be f32 and `want` when given
    /// (else the model takes its sizes from it).
    fn checked(&self, name: &str, want: Option<&[usize]>) -> Result<Vec<usize>, String> {
        let tensors = self.tensors.borrow();
        let scope = Scope {
            tensors: &tensors,
            graph: "",
        };
        let weights = modelkit::weights::Weights::new(&scope, "voice ONNX file");
        let meta = match want {
            Some(shape) => weights.check(name, shape, &[Dtype::F32]),
            None => weights.meta(name),
        };
        meta.map(|m| m.shape).map_err(|e| e.to_string())
    }

    fn consumer_of(&self, name: &str, op: &str) -> Result<&OnnxNode, String> {
        self.nodes
            .iter()
            .find(|n| n.op == op && n.inputs.iter().any(|i| i == name))
            .ok_or_else(|| format!("no {op} node takes '{name}'"))
    }

    fn param<const D: usize>(
        &self,
        name: &str,
        want: Option<&[usize]>,
    ) -> Result<Param<Tensor<D>>, String> {
        let shape = self.checked(name, want)?;
        let shape: [usize; D] = shape.try_into().map_err(|got: Vec<usize>| {
            format!("tensor '{name}' has shape {got:?}, the model needs {D} dimensions")
        })?;
        self.param_shaped(self.take(name)?, shape)
    }

    fn param_shaped<const D: usize>(
        &self,
        t: OnnxTensor,
        shape: [usize; D],
    ) -> Result<Param<Tensor<D>>, String> {
        if shape.iter().product::<usize>() != t.data.len() {
            return Err(format!("tensor '{}' cannot be read as {shape:?}", t.name));
        }
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(t.data, shape),
            self.device,
        )))
    }

    fn norm(&self, prefix: &str) -> Result<ChannelNorm, String> {
        let gamma = self.param::<1>(&format!("{prefix}.gamma"), None)?;
        let c = gamma.val().dims()[0];
        Ok(ChannelNorm {
            gamma,
            beta: self.param(&format!("{prefix}.beta"), Some(&[c]))?,
        })
    }

    /// The node of `op` that takes `prefix.weight` or `prefix.bias`: the weight is its
    /// second input whatever the exporter called it.
    fn layer(&self, prefix: &str, op: &str) -> Result<&OnnxNode, String> {
        let (w, b) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        self.nodes
            .iter()
            .find(|n| {
                n.op == op
                    && n.graph.is_empty()
                    && (n.inputs.get(1) == Some(&w) || n.inputs.get(2) == Some(&b))
            })
            .ok_or_else(|| format!("no {op} node uses {prefix}"))
    }

    fn conv(&self, prefix: &str) -> Result<Conv1d, String> {
        let node = self.layer(prefix, "Conv")?;
        let weight = self.param::<3>(&node.inputs[1], None)?;
        let [out, per_group, kernel] = weight.val().dims();
        let groups = attr(node, "group", 1)?;
        let pads = node.ints("pads").unwrap_or(&[0, 0]);
        let [left, right] = [pads.first(), pads.get(1)].map(|p| p.copied().unwrap_or(0));
        let bias = match node.inputs.get(2) {
            Some(b) if !b.is_empty() => Some(self.param::<1>(b, Some(&[out]))?),
            _ => None,
        };
        let mut conv = Conv1dConfig::new(per_group * groups, out, kernel)
            .with_stride(attr(node, "strides", 1)?)
            .with_dilation(attr(node, "dilations", 1)?)
            .with_groups(groups)
            .with_padding(PaddingConfig1d::Explicit(
                to_size(left, node)?,
                to_size(right, node)?,
            ))
            .with_bias(bias.is_some())
            .init(self.device);
        conv.weight = weight;
        conv.bias = bias;
        Ok(conv)
    }

    fn conv_transpose(&self, prefix: &str) -> Result<ConvTranspose1d, String> {
        let node = self.layer(prefix, "ConvTranspose")?;
        let weight = self.param::<3>(&node.inputs[1], None)?;
        let [inputs, per_group, kernel] = weight.val().dims();
        let groups = attr(node, "group", 1)?;
        let pads = node.ints("pads").unwrap_or(&[0, 0]);
        if pads.len() == 2 && pads[0] != pads[1] {
            return Err(format!("{prefix}: asymmetric padding {pads:?}"));
        }
        let bias = match node.inputs.get(2) {
            Some(b) if !b.is_empty() => Some(self.param::<1>(b, Some(&[per_group * groups]))?),
            _ => None,
        };
        let mut conv = ConvTranspose1dConfig::new([inputs, per_group * groups], kernel)
            .with_stride(attr(node, "strides", 1)?)
            .with_dilation(attr(node, "dilations", 1)?)
            .with_groups(groups)
            .with_padding(to_size(pads.first().copied().unwrap_or(0), node)?)
            .with_bias(bias.is_some())
            .init(self.device);
        conv.weight = weight;
        conv.bias = bias;
        Ok(conv)
    }
}

/// A convolution whose weights live elsewhere (on the host): burn's copy emptied.
fn hollow(c: &mut Conv1d) {
    let device = c.weight.device();
    c.weight = Param::from_tensor(Tensor::zeros([0, 0, 0], &device));
    c.bias = None;
}

/// The FFN pads with a separate `Pad` node (VITS's `_same_padding`: `(k-1)/2` left, `k/2`
/// right) before a convolution that has none: that padding moves into the convolution.
fn same(mut conv: Conv1d) -> Conv1d {
    let k = conv.kernel_size;
    conv.padding = PaddingConfig1d::Explicit((k - 1) / 2, k / 2);
    conv
}

fn to_size(v: i64, node: &OnnxNode) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("node {}: negative size {v}", node.name))
}

/// A one-dimensional layer's integer attribute (`[v]` or `v`), `default` when absent.
fn attr(node: &OnnxNode, name: &str, default: usize) -> Result<usize, String> {
    match node.ints(name) {
        None => Ok(default),
        Some([v]) => to_size(*v, node),
        Some(v) => Err(format!(
            "node {}: {name} = {v:?}, expected one value",
            node.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward spline of nflows, written out, to check the inverse against.
    fn spline_forward(x: f32, widths: &[f32], heights: &[f32], inner: &[f32]) -> f32 {
        let edge = ((1.0f64 - f64::from(MIN_DERIVATIVE)).exp() - 1.0).ln() as f32;
        let d: Vec<f32> = std::iter::once(edge)
            .chain(inner.iter().copied())
            .chain(std::iter::once(edge))
            .map(|d| MIN_DERIVATIVE + softplus(d))
            .collect();
        let (cw, w) = knots(widths);
        let (ch, h) = knots(heights);
        let bin = (cw.iter().filter(|&&c| x >= c).count().max(1) - 1).min(w.len() - 1);
        let theta = (x - cw[bin]) / w[bin];
        let delta = h[bin] / w[bin];
        let num = h[bin] * (delta * theta * theta + d[bin] * theta * (1.0 - theta));
        let den = delta + (d[bin] + d[bin + 1] - 2.0 * delta) * theta * (1.0 - theta);
        ch[bin] + num / den
    }

    #[test]
    fn the_spline_inverse_undoes_the_spline() {
        let widths: Vec<f32> = (0..SPLINE_BINS).map(|i| (i as f32 * 0.7).sin()).collect();
        let heights: Vec<f32> = (0..SPLINE_BINS).map(|i| (i as f32 * 1.3).cos()).collect();
        let inner: Vec<f32> = (0..SPLINE_BINS - 1).map(|i| i as f32 * 0.3 - 1.0).collect();
        for k in 0..=100 {
            let x = -4.99 + 9.98 * k as f32 / 100.0;
            let y = spline_forward(x, &widths, &heights, &inner);
            let back = spline_inverse(y, &widths, &heights, &inner);
            assert!((back - x).abs() < 1e-3, "x {x} -> y {y} -> {back}");
        }
        // Linear tails: identity outside the interval.
        assert_eq!(spline_inverse(7.5, &widths, &heights, &inner), 7.5);
        assert_eq!(spline_inverse(-6.0, &widths, &heights, &inner), -6.0);
    }

    #[test]
    fn offsets_place_each_key_at_its_distance() {
        let t = 7;
        let o = floats(offsets(t, &Device::flex()));
        let r = 2 * WINDOW + 1;
        for i in 0..t {
            for j in 0..t {
                let hits: Vec<usize> = (0..r).filter(|&k| o[(i * r + k) * t + j] == 1.0).collect();
                let d = j as isize - i as isize;
                if d.unsigned_abs() <= WINDOW {
                    assert_eq!(hits, vec![(d + WINDOW as isize) as usize]);
                } else {
                    assert!(hits.is_empty());
                }
            }
        }
    }

    #[test]
    fn durations_expand_to_frames() {
        assert_eq!(expand(&[2, 0, 3]), vec![0, 0, 2, 2, 2]);
    }
}
