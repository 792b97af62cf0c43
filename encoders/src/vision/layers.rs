//! The layers the vision models share: a convolution padded the TensorFlow way, with its
//! batch norm folded into weights and bias, then an activation; and the activations of
//! MobileNet-family networks.
//!
//! Convolutions pad "SAME" (the output is `ceil(in / stride)`, the odd pixel of padding at
//! the bottom and right), because every vision checkpoint here was trained in TensorFlow;
//! symmetric padding changes every border activation.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

/// 1/6 as TensorFlow graphs store it for hard-swish and hard-sigmoid: a float16 constant,
/// `0.1666259765625` (= 1365 / 8192). Using the exact 1/6 moves CenterNet's heatmap by up to 1.6e-3.
pub const SIXTH_F16: f32 = 1365.0 / 8192.0;

/// What follows a convolution.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum Activation {
    Linear,
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x * c * relu6(x + 3)` with `c` = [`SIXTH_F16`] (MobileNetV3).
    HardSwish,
    /// `relu6(x + 3) * c` (MobileNetV3's squeeze-excite gate).
    HardSigmoid,
    Sigmoid,
}

impl Activation {
    /// The activation applied elementwise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Linear => x,
            Activation::Relu => relu(x),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::HardSwish => {
                let gate = x.clone().add_scalar(3.0).clamp(0.0, 6.0);
                x.mul_scalar(SIXTH_F16) * gate
            }
            Activation::HardSigmoid => x.add_scalar(3.0).clamp(0.0, 6.0).mul_scalar(SIXTH_F16),
            Activation::Sigmoid => sigmoid(x),
        }
    }
}

/// A convolution (batch norm folded in), then an activation.
#[derive(Config, Debug)]
pub struct ConvBnConfig {
    /// `[in, out]`.
    pub channels: [usize; 2],
    pub kernel: usize,
    #[config(default = 1)]
    pub stride: usize,
    /// `channels[0]` for a depthwise convolution.
    #[config(default = 1)]
    pub groups: usize,
    #[config(default = "Activation::Relu6")]
    pub activation: Activation,
    #[config(default = true)]
    pub bias: bool,
}

#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    #[module(skip)]
    pub activation: Activation,
}

impl ConvBnConfig {
    /// A depthwise convolution of `channels` channels.
    pub fn depthwise(channels: usize, kernel: usize) -> Self {
        Self::new([channels, channels], kernel).with_groups(channels)
    }

    /// Zero weights of the right shapes (a loader replaces them).
    pub fn init(&self, device: &Device) -> ConvBn {
        let conv = Conv2dConfig::new(self.channels, [self.kernel, self.kernel])
            .with_stride([self.stride, self.stride])
            .with_groups(self.groups)
            .with_padding(PaddingConfig2d::Same)
            .with_bias(self.bias)
            .with_initializer(burn::nn::Initializer::Zeros)
            .init(device);
        ConvBn {
            conv,
            activation: self.activation,
        }
    }

    /// The layer with its weights: `weight` `[out, in / groups, k, k]` and `bias` `[out]`
    /// (batch norm already folded in, see [`fold_batch_norm`]); `bias` is `None` when the
    /// configuration has none.
    pub fn with_weights(&self, weight: Tensor<4>, bias: Option<Tensor<1>>) -> ConvBn {
        let conv = Conv2d {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            stride: [self.stride, self.stride],
            kernel_size: [self.kernel, self.kernel],
            dilation: [1, 1],
            groups: self.groups,
            padding: PaddingConfig2d::Same,
        };
        ConvBn {
            conv,
            activation: self.activation,
        }
    }

    /// `[out, in / groups, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        let [i, o] = self.channels;
        [o, i / self.groups, self.kernel, self.kernel]
    }
}

impl ConvBn {
    /// `y = act(conv(x) + b)` with TensorFlow SAME padding.
    ///
    /// # Shapes
    /// - input `[B, C_in, H, W]`
    /// - output `[B, C_out, ceil(H / stride), ceil(W / stride)]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.activation.apply(self.conv.forward(x))
    }
}

/// Batch norm after a bias-free convolution, folded into the convolution:
/// `s = gamma / sqrt(var + eps)`, `w' = w * s` (per output channel), `b' = beta - mean * s`.
/// `weight` is `[out, rest...]` flattened row-major; returns `(w', b')`.
pub fn fold_batch_norm(
    weight: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let out = gamma.len();
    let per = weight.len() / out.max(1);
    let mut w = weight.to_vec();
    let mut b = Vec::with_capacity(out);
    for c in 0..out {
        let s = gamma[c] / (var[c] + eps).sqrt();
        w[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= s);
        b.push(beta[c] - mean[c] * s);
    }
    (w, b)
}

/// Squeeze-and-excitation (Hu et al., 2018): channels reweighted by a gate computed from
/// their means.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// 1x1, `C -> C / r`, ReLU.
    pub reduce: ConvBn,
    /// 1x1, `C / r -> C`, a gate activation.
    pub expand: ConvBn,
}

impl SqueezeExcite {
    /// `x * gate(expand(reduce(mean_hw(x))))`.
    ///
    /// # Shapes
    /// - input and output `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = x.clone().mean_dim(3).mean_dim(2);
        let s = self.expand.forward(self.reduce.forward(s));
        let shape = x.shape();
        x * s.expand(shape)
    }
}
