//! MB3-CenterNet: a MobileNetV3-Large (width 0.75) backbone (Howard et al., "Searching for
//! MobileNetV3", 2019) under a CenterNet head (Zhou et al., "Objects as Points", 2019) with
//! an FPN-like upsampling path, trained on COCO at 512x512
//! (github.com/610265158/mobilenetv3_centernet; the TensorFlow.js conversion that
//! `@vladmandic/human` ships). `fixtures/reference/centernet/ARCHITECTURE.md` describes every
//! layer as read from the graph.
//!
//! ```text
//! image [B,3,512,512], RGB 0..255 (no normalisation)
//!   stem: conv 3x3 /2, hard-swish                                  [B,16,256,256]
//!   15 inverted residual blocks (expand 1x1 -> depthwise -> [SE] -> project 1x1)
//!     taps: C2 = block 3's expansion [B,72,128,128], C3 = block 5's [B,96,64,64],
//!           C4 = block 11's output [B,88,32,32], C5 = 1x1 -> 480, hard-swish [B,480,16,16]
//!   head: P4 = relu([lateral(C4), up(C5)])                         [B,256,32,32]
//!         P3 = relu([lateral(C3), up(P4)])                         [B,192,64,64]
//!         P2 = relu([lateral(C2), up(P3)]), squeeze-excite         [B,128,128,128]
//!   heatmap = sigmoid(sep_conv(P2))                                [B,80,128,128]
//!   distances = 16 * sep_conv(P2): left, top, right, bottom        [B,4,128,128]
//! ```
//!
//! Decoding ([`decode`]) is the graph's own: a heatmap value is an object where it is the
//! maximum of its 3x3 neighbourhood in its class, and its box is the four distances from
//! the cell's top-left input pixel `(4x, 4y)`.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::layers::{Activation, ConvBn, ConvBnConfig, SqueezeExcite};

/// The input side, fixed by the graph's upsampling sizes.
pub const INPUT: usize = 512;
/// Input pixels per heatmap cell.
pub const STRIDE: usize = 4;
/// Heatmap side: `INPUT / STRIDE`.
pub const CELLS: usize = INPUT / STRIDE;
/// Scale of the distance head's output (`tower_0/mul/y`).
const DISTANCE_SCALE: f32 = 16.0;

/// A row of [`BLOCKS`].
pub type BlockRow = (
    usize,
    Option<usize>,
    usize,
    usize,
    Option<usize>,
    usize,
    bool,
);

/// One inverted residual block: input channels, expansion channels (`None`: no expansion),
/// depthwise kernel, stride, squeeze-excite channels, output channels, hard-swish (else
/// ReLU).
pub const BLOCKS: [BlockRow; 15] = [
    (16, None, 3, 1, None, 16, false),
    (16, Some(64), 3, 2, None, 24, false),
    (24, Some(72), 3, 1, None, 24, false),
    (24, Some(72), 5, 2, Some(24), 32, false),
    (32, Some(96), 5, 1, Some(24), 32, false),
    (32, Some(96), 5, 1, Some(24), 32, false),
    (32, Some(192), 3, 2, None, 64, true),
    (64, Some(160), 3, 1, None, 64, true),
    (64, Some(144), 3, 1, None, 64, true),
    (64, Some(144), 3, 1, None, 64, true),
    (64, Some(384), 3, 1, Some(96), 88, true),
    (88, Some(528), 3, 1, Some(136), 88, true),
    (88, Some(528), 5, 2, Some(136), 120, true),
    (120, Some(720), 5, 1, Some(184), 120, true),
    (120, Some(720), 5, 1, Some(184), 120, true),
];
/// Blocks whose expansion (C2, C3) or output (C4) the head taps.
const C2_BLOCK: usize = 3;
const C3_BLOCK: usize = 5;
const C4_BLOCK: usize = 11;
const C5_CHANNELS: usize = 480;
/// Lateral branches: input channels, squeezed channels, output channels (C2, C3, C4).
pub const LATERALS: [(usize, usize, usize); 3] = [(72, 18, 64), (96, 24, 96), (88, 22, 128)];
/// Upsampling blocks: input channels, output channels (of C5, P4, P3).
pub const UPSAMPLES: [(usize, usize); 3] = [(480, 128), (256, 96), (192, 64)];
const HEAD_CHANNELS: usize = 128;
const HEAD_SQUEEZE: usize = 32;

/// Configuration of one inverted residual block (a row of [`BLOCKS`]).
#[derive(Config, Debug)]
pub struct InvertedResidualConfig {
    pub input: usize,
    pub expand: Option<usize>,
    pub kernel: usize,
    pub stride: usize,
    pub squeeze: Option<usize>,
    pub output: usize,
    pub hard_swish: bool,
}

#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub expand: Option<ConvBn>,
    pub depthwise: ConvBn,
    pub se: Option<SqueezeExcite>,
    pub project: ConvBn,
    pub skip: bool,
}

impl InvertedResidualConfig {
    pub fn from_row(row: BlockRow) -> Self {
        let (input, expand, kernel, stride, squeeze, output, hard_swish) = row;
        InvertedResidualConfig {
            input,
            expand,
            kernel,
            stride,
            squeeze,
            output,
            hard_swish,
        }
    }

    fn act(&self) -> Activation {
        if self.hard_swish {
            Activation::HardSwish
        } else {
            Activation::Relu
        }
    }

    pub fn mid(&self) -> usize {
        self.expand.unwrap_or(self.input)
    }

    pub fn expand_config(&self) -> Option<ConvBnConfig> {
        self.expand
            .map(|e| ConvBnConfig::new([self.input, e], 1).with_activation(self.act()))
    }

    pub fn depthwise_config(&self) -> ConvBnConfig {
        ConvBnConfig::depthwise(self.mid(), self.kernel)
            .with_stride(self.stride)
            .with_activation(self.act())
    }

    /// Squeeze-excite: reduce (ReLU) and expand (hard-sigmoid), both with bias.
    pub fn se_configs(&self) -> Option<[ConvBnConfig; 2]> {
        self.squeeze.map(|s| {
            [
                ConvBnConfig::new([self.mid(), s], 1).with_activation(Activation::Relu),
                ConvBnConfig::new([s, self.mid()], 1).with_activation(Activation::HardSigmoid),
            ]
        })
    }

    pub fn project_config(&self) -> ConvBnConfig {
        ConvBnConfig::new([self.mid(), self.output], 1).with_activation(Activation::Linear)
    }

    pub fn skip(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }

    pub fn init(&self, device: &Device) -> InvertedResidual {
        InvertedResidual {
            expand: self.expand_config().map(|c| c.init(device)),
            depthwise: self.depthwise_config().init(device),
            se: self.se_configs().map(|[r, e]| SqueezeExcite {
                reduce: r.init(device),
                expand: e.init(device),
            }),
            project: self.project_config().init(device),
            skip: self.skip(),
        }
    }
}

impl InvertedResidual {
    /// `y = project(se(depthwise(expand(x)))) (+ x when stride 1 and C_in = C_out)`;
    /// returns `y` and the expansion `expand(x)` (which the head taps for some blocks).
    ///
    /// # Shapes
    /// - input `[B, C_in, H, W]`
    /// - output `[B, C_out, ceil(H / stride), ceil(W / stride)]`, expansion `[B, C_mid, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let expanded = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let mut h = self.depthwise.forward(expanded.clone());
        if let Some(se) = &self.se {
            h = se.forward(h);
        }
        let h = self.project.forward(h);
        (if self.skip { h + x } else { h }, expanded)
    }
}

/// A depthwise convolution without bias, then a 1x1 convolution with bias.
#[derive(Module, Debug)]
pub struct SeparableConv {
    pub depthwise: ConvBn,
    pub pointwise: ConvBn,
}

/// `(depthwise, pointwise)` of a separable convolution `[in, out]` with a `kernel` x
/// `kernel` depthwise part; the pointwise part ends in `activation`.
pub fn separable_configs(
    channels: [usize; 2],
    kernel: usize,
    activation: Activation,
) -> (ConvBnConfig, ConvBnConfig) {
    (
        ConvBnConfig::depthwise(channels[0], kernel)
            .with_activation(Activation::Linear)
            .with_bias(false),
        ConvBnConfig::new(channels, 1).with_activation(activation),
    )
}

impl SeparableConv {
    fn init(channels: [usize; 2], kernel: usize, activation: Activation, device: &Device) -> Self {
        let (d, p) = separable_configs(channels, kernel, activation);
        SeparableConv {
            depthwise: d.init(device),
            pointwise: p.init(device),
        }
    }

    /// `act(pointwise(depthwise(x)))`.
    ///
    /// # Shapes
    /// - input `[B, C_in, H, W]`, output `[B, C_out, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pointwise.forward(self.depthwise.forward(x))
    }
}

/// A lateral branch: squeeze 1x1 (ReLU), then a 5x5 separable convolution.
#[derive(Module, Debug)]
pub struct Lateral {
    pub squeeze: ConvBn,
    pub conv: SeparableConv,
}

/// The squeeze's configuration of a lateral branch (a row of [`LATERALS`]).
pub fn lateral_squeeze_config((input, squeezed, _): (usize, usize, usize)) -> ConvBnConfig {
    ConvBnConfig::new([input, squeezed], 1).with_activation(Activation::Relu)
}

impl Lateral {
    /// `sep5x5(relu(conv1x1(x)))`.
    ///
    /// # Shapes
    /// - input `[B, C_in, H, W]`, output `[B, C_out, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(self.squeeze.forward(x))
    }
}

/// An upsampling block: two separable convolutions (3x3 and 5x5) summed, then twice the size.
#[derive(Module, Debug)]
pub struct Upsample {
    pub branch_x: SeparableConv,
    pub branch_y: SeparableConv,
}

impl Upsample {
    /// `up2(sep3x3(x) + sep5x5(x))`, `up2` the legacy bilinear resize of [`upsample2`].
    ///
    /// # Shapes
    /// - input `[B, C_in, H, W]`, output `[B, C_out, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        upsample2(self.branch_x.forward(x.clone()) + self.branch_y.forward(x))
    }
}

/// TensorFlow's legacy bilinear resize (`align_corners = false, half_pixel_centers =
/// false`) to exactly twice the size: output `2i` is input `i`, output `2i + 1` is halfway
/// to input `i + 1`, the last input repeated past the edge. Columns first, then rows, as
/// the graph's 2-D formula nests them.
///
/// # Shapes
/// - input `[B, C, H, W]`, output `[B, C, 2H, 2W]`
pub fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let next = Tensor::cat(
        vec![
            x.clone().slice_dim(3, 1..w),
            x.clone().slice_dim(3, w - 1..w),
        ],
        3,
    );
    let half = x.clone() + (next - x.clone()).mul_scalar(0.5);
    let x = Tensor::stack::<5>(vec![x, half], 4).reshape([b, c, h, 2 * w]);
    let next = Tensor::cat(
        vec![
            x.clone().slice_dim(2, 1..h),
            x.clone().slice_dim(2, h - 1..h),
        ],
        2,
    );
    let half = x.clone() + (next - x.clone()).mul_scalar(0.5);
    Tensor::stack::<5>(vec![x, half], 3).reshape([b, c, 2 * h, 2 * w])
}

#[derive(Config, Debug)]
pub struct CenterNetConfig {
    #[config(default = 80)]
    pub classes: usize,
}

#[derive(Module, Debug)]
pub struct CenterNet {
    pub stem: ConvBn,
    pub blocks: Vec<InvertedResidual>,
    /// Block 14's output to C5: 1x1, hard-swish.
    pub extern1: ConvBn,
    /// Of C2, C3, C4.
    pub laterals: Vec<Lateral>,
    /// Of C5, P4, P3.
    pub upsamples: Vec<Upsample>,
    pub head_se: SqueezeExcite,
    pub heatmap: SeparableConv,
    pub distances: SeparableConv,
}

/// The network's two maps.
#[derive(Debug, Clone)]
pub struct CenterNetOutput {
    /// Class probabilities per cell, `[B, classes, 128, 128]`.
    pub heatmap: Tensor<4>,
    /// Distances in input pixels from the cell's anchor to the box's left, top, right and
    /// bottom edges, `[B, 4, 128, 128]`.
    pub distances: Tensor<4>,
}

impl CenterNetConfig {
    pub fn stem_config(&self) -> ConvBnConfig {
        ConvBnConfig::new([3, 16], 3)
            .with_stride(2)
            .with_activation(Activation::HardSwish)
    }

    pub fn block_configs(&self) -> Vec<InvertedResidualConfig> {
        BLOCKS
            .into_iter()
            .map(InvertedResidualConfig::from_row)
            .collect()
    }

    pub fn extern1_config(&self) -> ConvBnConfig {
        ConvBnConfig::new([BLOCKS[14].5, C5_CHANNELS], 1).with_activation(Activation::HardSwish)
    }

    /// The head's squeeze-excite: reduce 1x1 with bias (ReLU), expand 1x1 without bias
    /// (a true sigmoid, unlike the backbone's hard one).
    pub fn head_se_configs(&self) -> [ConvBnConfig; 2] {
        [
            ConvBnConfig::new([HEAD_CHANNELS, HEAD_SQUEEZE], 1).with_activation(Activation::Relu),
            ConvBnConfig::new([HEAD_SQUEEZE, HEAD_CHANNELS], 1)
                .with_activation(Activation::Sigmoid)
                .with_bias(false),
        ]
    }

    pub fn heatmap_configs(&self) -> (ConvBnConfig, ConvBnConfig) {
        separable_configs([HEAD_CHANNELS, self.classes], 3, Activation::Sigmoid)
    }

    pub fn distance_configs(&self) -> (ConvBnConfig, ConvBnConfig) {
        separable_configs([HEAD_CHANNELS, 4], 3, Activation::Linear)
    }

    /// Zero weights of the right shapes (a loader replaces them).
    pub fn init(&self, device: &Device) -> CenterNet {
        let [reduce, expand] = self.head_se_configs();
        let (hd, hp) = self.heatmap_configs();
        let (dd, dp) = self.distance_configs();
        CenterNet {
            stem: self.stem_config().init(device),
            blocks: self
                .block_configs()
                .iter()
                .map(|b| b.init(device))
                .collect(),
            extern1: self.extern1_config().init(device),
            laterals: LATERALS
                .into_iter()
                .map(|row| Lateral {
                    squeeze: lateral_squeeze_config(row).init(device),
                    conv: SeparableConv::init([row.1, row.2], 5, Activation::Linear, device),
                })
                .collect(),
            upsamples: UPSAMPLES
                .into_iter()
                .map(|(i, o)| Upsample {
                    branch_x: SeparableConv::init([i, o], 3, Activation::Linear, device),
                    branch_y: SeparableConv::init([i, o], 5, Activation::Linear, device),
                })
                .collect(),
            head_se: SqueezeExcite {
                reduce: reduce.init(device),
                expand: expand.init(device),
            },
            heatmap: SeparableConv {
                depthwise: hd.init(device),
                pointwise: hp.init(device),
            },
            distances: SeparableConv {
                depthwise: dd.init(device),
                pointwise: dp.init(device),
            },
        }
    }
}

impl CenterNet {
    /// The heatmap and box distances of a batch of images.
    ///
    /// `P_i = relu([lateral_i(C_i), up_i(P_{i+1})])` from `P5 = C5`;
    /// `heatmap = sigmoid(sep(se(P2)))`, `distances = 16 sep(se(P2))`.
    ///
    /// # Shapes
    /// - input `[B, 3, 512, 512]`, RGB 0..255
    /// - output heatmap `[B, classes, 128, 128]`, distances `[B, 4, 128, 128]`
    pub fn forward(&self, x: Tensor<4>) -> CenterNetOutput {
        let mut h = self.stem.forward(x);
        let mut taps = Vec::with_capacity(3);
        for (i, block) in self.blocks.iter().enumerate() {
            let (out, expanded) = block.forward(h);
            h = out;
            match i {
                C2_BLOCK | C3_BLOCK => taps.push(expanded),
                C4_BLOCK => taps.push(h.clone()),
                _ => {}
            }
        }
        // Top-down: C5, then P4 from C4, P3 from C3, P2 from C2.
        let mut p = self.extern1.forward(h);
        for (tap, (lateral, up)) in taps
            .into_iter()
            .rev()
            .zip(self.laterals.iter().rev().zip(&self.upsamples))
        {
            p = relu(Tensor::cat(vec![lateral.forward(tap), up.forward(p)], 1));
        }
        let p2 = self.head_se.forward(p);
        CenterNetOutput {
            heatmap: self.heatmap.forward(p2.clone()),
            distances: self.distances.forward(p2).mul_scalar(DISTANCE_SCALE),
        }
    }
}

/// One row of the graph's decoder: a box in input pixels, its score and its class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class: usize,
}

/// The graph's decoder on one image's maps (`heatmap` `[classes, 128, 128]` and `distances`
/// `[4, 128, 128]`, flattened row-major): every value that is the maximum of its 3x3
/// neighbourhood in its class (the graph's 3x3 max-pool equality) and at least
/// `min_score`, best first, at most `k` (the graph keeps 100). Ties keep the graph's order:
/// the lower flat index `(y * 128 + x) * classes + class` first.
pub fn decode(
    heatmap: &[f32],
    distances: &[f32],
    classes: usize,
    min_score: f32,
    k: usize,
) -> Vec<RawDetection> {
    let n = CELLS;
    let at = |c: usize, y: usize, x: usize| heatmap[(c * n + y) * n + x];
    let mut peaks = Vec::new();
    for c in 0..classes {
        for y in 0..n {
            for x in 0..n {
                let v = at(c, y, x);
                if v < min_score {
                    continue;
                }
                let ys = y.saturating_sub(1)..=(y + 1).min(n - 1);
                let is_peak = ys.into_iter().all(|yy| {
                    (x.saturating_sub(1)..=(x + 1).min(n - 1)).all(|xx| at(c, yy, xx) <= v)
                });
                if is_peak {
                    peaks.push(((y * n + x) * classes + c, v));
                }
            }
        }
    }
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    peaks.truncate(k);
    let plane = n * n;
    peaks
        .into_iter()
        .map(|(index, score)| {
            let cell = index / classes;
            let (y, x) = (cell / n, cell % n);
            let d = |i: usize| distances[i * plane + cell];
            let (ax, ay) = ((STRIDE * x) as f32, (STRIDE * y) as f32);
            RawDetection {
                x1: ax - d(0),
                y1: ay - d(1),
                x2: ax + d(2),
                y2: ay + d(3),
                score,
                class: index % classes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn upsample2_is_the_legacy_resize() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 3.0, 5.0, 9.0], [1, 1, 2, 2]),
            &device,
        );
        let y = upsample2(x).into_data().try_to_vec::<f32>().unwrap();
        #[rustfmt::skip]
        let want = vec![
            1.0, 2.0, 3.0, 3.0,
            3.0, 4.5, 6.0, 6.0,
            5.0, 7.0, 9.0, 9.0,
            5.0, 7.0, 9.0, 9.0,
        ];
        assert_eq!(y, want);
    }

    #[test]
    fn decode_keeps_neighbourhood_maxima_best_first() {
        let n = CELLS;
        let mut heat = vec![0.0f32; 2 * n * n];
        let mut dist = vec![0.0f32; 4 * n * n];
        // Class 1: a peak at (y 10, x 20) with a weaker neighbour; class 0: a peak at (0, 0).
        heat[n * n + 10 * n + 20] = 0.9;
        heat[n * n + 10 * n + 21] = 0.5;
        heat[0] = 0.4;
        for (i, v) in [3.0, 4.0, 5.0, 6.0].into_iter().enumerate() {
            dist[i * n * n + 10 * n + 20] = v;
        }
        let d = decode(&heat, &dist, 2, 0.1, 100);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            RawDetection {
                x1: 77.0,
                y1: 36.0,
                x2: 85.0,
                y2: 46.0,
                score: 0.9,
                class: 1
            }
        );
        assert_eq!((d[1].class, d[1].score), (0, 0.4));
        assert_eq!(decode(&heat, &dist, 2, 0.1, 1).len(), 1);
        assert!(decode(&heat, &dist, 2, 0.95, 100).is_empty());
    }
}
