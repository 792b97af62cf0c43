//! EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
//! Neural Networks", 2019; the Lite variants of TensorFlow's model garden, 2020): the
//! EfficientNet-B0 layout without squeeze-and-excitation and with ReLU6 in place of swish,
//! so it quantizes and runs well on edge hardware.
//!
//! ```text
//! image [B,3,224,224]
//!   stem: conv 3x3 /2 -> BN -> ReLU6                               [B,32,112,112]
//!   16 MBConv blocks in 7 stages (expand 1x1 -> depthwise kxk -> project 1x1)
//!   head: conv 1x1 -> BN -> ReLU6                                  [B,1280,7,7]
//!   global average pool -> fully connected                         [B,1000]
//! ```
//!
//! Convolutions pad the TensorFlow way ([`super::layers`]). Batch norm is folded into the
//! preceding convolution when the weights are loaded (`w * g / sqrt(v + eps)`, bias
//! `b - m * g / sqrt(v + eps)`), so inference runs convolutions and clamps only.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

pub use super::layers::{Activation, ConvBn, ConvBnConfig, fold_batch_norm};

/// One MBConv stage: (expansion ratio, kernel, stride of its first block, output
/// channels, blocks).
pub const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];
pub const STEM_CHANNELS: usize = 32;
pub const FEATURES: usize = 1280;

/// The inverted residual block: a cheap depthwise convolution between a 1x1 expansion and
/// a linear 1x1 projection, with a skip connection when shapes allow.
#[derive(Config, Debug)]
pub struct MbConvConfig {
    pub input: usize,
    pub output: usize,
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
}

#[derive(Module, Debug)]
pub struct MbConv {
    /// Absent when the expansion ratio is 1.
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    pub skip: bool,
}

impl MbConvConfig {
    pub fn mid(&self) -> usize {
        self.input * self.expand
    }

    pub fn skip(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }

    pub fn expand_config(&self) -> Option<ConvBnConfig> {
        (self.expand != 1).then(|| ConvBnConfig::new([self.input, self.mid()], 1))
    }

    pub fn depthwise_config(&self) -> ConvBnConfig {
        ConvBnConfig::depthwise(self.mid(), self.kernel).with_stride(self.stride)
    }

    pub fn project_config(&self) -> ConvBnConfig {
        ConvBnConfig::new([self.mid(), self.output], 1).with_activation(Activation::Linear)
    }

    pub fn init(&self, device: &Device) -> MbConv {
        MbConv {
            expand: self.expand_config().map(|c| c.init(device)),
            depthwise: self.depthwise_config().init(device),
            project: self.project_config().init(device),
            skip: self.skip(),
        }
    }
}

impl MbConv {
    /// `y = project(depthwise(expand(x))) (+ x when stride 1 and C_in = C_out)`.
    ///
    /// # Shapes
    /// - input `[B, C_in, H, W]`
    /// - output `[B, C_out, ceil(H / stride), ceil(W / stride)]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let h = self.project.forward(self.depthwise.forward(h));
        if self.skip { h + x } else { h }
    }
}

#[derive(Config, Debug)]
pub struct EfficientNetConfig {
    #[config(default = 1000)]
    pub classes: usize,
}

#[derive(Module, Debug)]
pub struct EfficientNet {
    pub stem: ConvBn,
    pub blocks: Vec<MbConv>,
    pub head: ConvBn,
    pub classifier: Linear,
}

impl EfficientNetConfig {
    pub fn stem_config(&self) -> ConvBnConfig {
        ConvBnConfig::new([3, STEM_CHANNELS], 3).with_stride(2)
    }

    /// The 16 blocks, in order.
    pub fn block_configs(&self) -> Vec<MbConvConfig> {
        let mut input = STEM_CHANNELS;
        let mut blocks = Vec::new();
        for (expand, kernel, stride, output, repeats) in STAGES {
            for i in 0..repeats {
                let stride = if i == 0 { stride } else { 1 };
                blocks.push(MbConvConfig::new(input, output, expand, kernel, stride));
                input = output;
            }
        }
        blocks
    }

    pub fn head_config(&self) -> ConvBnConfig {
        ConvBnConfig::new([STAGES[6].3, FEATURES], 1)
    }

    pub fn classifier_config(&self) -> LinearConfig {
        LinearConfig::new(FEATURES, self.classes)
    }

    pub fn init(&self, device: &Device) -> EfficientNet {
        EfficientNet {
            stem: self.stem_config().init(device),
            blocks: self
                .block_configs()
                .iter()
                .map(|b| b.init(device))
                .collect(),
            head: self.head_config().init(device),
            classifier: self.classifier_config().init(device),
        }
    }
}

impl EfficientNet {
    /// The feature map before pooling: `head(blocks(stem(x)))`.
    ///
    /// # Shapes
    /// - input `[B, 3, H, W]`, normalised to [-1, 1]
    /// - output `[B, 1280, ceil(H / 32), ceil(W / 32)]`
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.stem.forward(x);
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.head.forward(h)
    }

    /// Class logits of pooled features: `W f + b`.
    ///
    /// # Shapes
    /// - input `[N, 1280]`
    /// - output `[N, classes]`
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(pooled)
    }

    /// Logits of whole images: `classify(mean_hw(features(x)))`.
    ///
    /// # Shapes
    /// - input `[B, 3, H, W]`
    /// - output `[B, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let f = self.features(x);
        let [b, c, _, _] = f.dims();
        let pooled = f.mean_dim(3).mean_dim(2).reshape([b, c]);
        self.classify(pooled)
    }
}
