//! Maps the weights of MB3-CenterNet's TensorFlow.js graph (`centernet.json`, read by
//! [`crate::tfjs`]) onto [`CenterNet`]. Batch norm is already folded in the file
//! (`*_weights` scaled, `*_bn_offset` the bias); kernels are stored HWIO (`[kh, kw, in,
//! out]`, depthwise `[kh, kw, C, 1]`) and become burn's OIHW here. Every weight's shape is
//! checked against the configuration, so a file of another network is refused by name.

use burn::tensor::{Device, Tensor, TensorData};

use super::centernet::{
    BLOCKS, CenterNet, CenterNetConfig, InvertedResidual, LATERALS, Lateral, SeparableConv,
    UPSAMPLES, Upsample, lateral_squeeze_config, separable_configs,
};
use super::layers::{Activation, ConvBn, ConvBnConfig, SqueezeExcite};
use crate::tfjs::{TfjsError, TfjsModel};

const BACKBONE: &str = "tower_0/MobilenetV3";
/// Some of the head's weights have the `tower_0/` prefix, some do not (as exported).
const HEAD: &str = "tower_0/CenternetHead";
const HEAD_BARE: &str = "CenternetHead";

struct Weights<'a> {
    model: &'a TfjsModel,
    device: &'a Device,
}

impl Weights<'_> {
    /// A convolution from an HWIO kernel `weight` and an optional `bias`.
    fn conv(
        &self,
        config: &ConvBnConfig,
        weight: &str,
        bias: Option<&str>,
    ) -> Result<ConvBn, TfjsError> {
        let [o, i_per_group, kh, kw] = config.weight_shape();
        let depthwise = config.groups > 1;
        // Stored: [kh, kw, in, out], or [kh, kw, C, 1] for a depthwise kernel.
        let stored = if depthwise {
            [kh, kw, o, 1]
        } else {
            [kh, kw, i_per_group, o]
        };
        let hwio = self.model.floats(weight, &stored)?;
        let (cin, cout) = (stored[2], stored[3]);
        let mut oihw = vec![0.0f32; hwio.len()];
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..cin {
                    for j in 0..cout {
                        let v = hwio[((y * kw + x) * cin + i) * cout + j];
                        // Depthwise: output channel i, one input channel each.
                        let (oc, ic) = if depthwise { (i, 0) } else { (j, i) };
                        oihw[((oc * i_per_group + ic) * kh + y) * kw + x] = v;
                    }
                }
            }
        }
        let weight =
            Tensor::from_data(TensorData::new(oihw, [o, i_per_group, kh, kw]), self.device);
        let bias = match (bias, config.bias) {
            (Some(name), true) => Some(Tensor::from_data(
                TensorData::new(self.model.floats(name, &[o])?, [o]),
                self.device,
            )),
            _ => None,
        };
        Ok(config.with_weights(weight, bias))
    }

    /// A convolution named `P/Conv2D_weights` with bias `P/Conv2D_bn_offset`.
    fn conv_bn(&self, config: &ConvBnConfig, prefix: &str) -> Result<ConvBn, TfjsError> {
        self.conv(
            config,
            &format!("{prefix}/Conv2D_weights"),
            Some(&format!("{prefix}/Conv2D_bn_offset")),
        )
    }

    fn block(
        &self,
        n: usize,
        row: &super::centernet::InvertedResidualConfig,
    ) -> Result<InvertedResidual, TfjsError> {
        let scope = if n == 0 {
            "expanded_conv".to_owned()
        } else {
            format!("expanded_conv_{n}")
        };
        let p = format!("{BACKBONE}/{scope}");
        let expand = match row.expand_config() {
            Some(c) => Some(self.conv_bn(&c, &format!("{p}/expand"))?),
            None => None,
        };
        let depthwise = self.conv(
            &row.depthwise_config(),
            &format!("{p}/depthwise/depthwise_weights"),
            Some(&format!("{p}/depthwise/depthwise_bn_offset")),
        )?;
        let se = match row.se_configs() {
            Some([r, e]) => {
                let s = format!("MobilenetV3/{scope}/squeeze_excite");
                Some(SqueezeExcite {
                    reduce: self.conv(
                        &r,
                        &format!("{s}/Conv/weights"),
                        Some(&format!("{s}/Conv/biases")),
                    )?,
                    expand: self.conv(
                        &e,
                        &format!("{s}/Conv_1/weights"),
                        Some(&format!("{s}/Conv_1/biases")),
                    )?,
                })
            }
            None => None,
        };
        Ok(InvertedResidual {
            expand,
            depthwise,
            se,
            project: self.conv_bn(&row.project_config(), &format!("{p}/project"))?,
            skip: row.skip(),
        })
    }

    /// A separable convolution of the head: depthwise `HEAD_BARE/S/depthwise_weights`, then
    /// pointwise `HEAD/S/separable_conv2d_weights` + `..._bn_offset`.
    fn separable(
        &self,
        channels: [usize; 2],
        kernel: usize,
        scope: &str,
    ) -> Result<SeparableConv, TfjsError> {
        let (d, p) = separable_configs(channels, kernel, Activation::Linear);
        Ok(SeparableConv {
            depthwise: self.conv(&d, &format!("{HEAD_BARE}/{scope}/depthwise_weights"), None)?,
            pointwise: self.conv(
                &p,
                &format!("{HEAD}/{scope}/separable_conv2d_weights"),
                Some(&format!("{HEAD}/{scope}/separable_conv2d_bn_offset")),
            )?,
        })
    }

    /// An output head `S`: depthwise, pointwise and biases all under `HEAD_BARE/S/`.
    fn output(
        &self,
        (d, p): (ConvBnConfig, ConvBnConfig),
        scope: &str,
    ) -> Result<SeparableConv, TfjsError> {
        let s = format!("{HEAD_BARE}/{scope}");
        Ok(SeparableConv {
            depthwise: self.conv(&d, &format!("{s}/depthwise_weights"), None)?,
            pointwise: self.conv(
                &p,
                &format!("{s}/pointwise_weights"),
                Some(&format!("{s}/biases")),
            )?,
        })
    }
}

/// Builds the detector from the graph model's weights.
pub fn load_centernet(model: &TfjsModel, device: &Device) -> Result<CenterNet, TfjsError> {
    let w = Weights { model, device };
    let config = CenterNetConfig::new();
    let blocks = config
        .block_configs()
        .iter()
        .enumerate()
        .map(|(n, row)| w.block(n, row))
        .collect::<Result<Vec<_>, _>>()?;
    debug_assert_eq!(blocks.len(), BLOCKS.len());
    let laterals = LATERALS
        .into_iter()
        .zip(["c2", "c3", "c4"])
        .map(|(row, c)| {
            Ok(Lateral {
                squeeze: w.conv_bn(
                    &lateral_squeeze_config(row),
                    &format!("{HEAD}/{c}_reverse/1x1"),
                )?,
                conv: w.separable([row.1, row.2], 5, &format!("{c}_reverse/3x3"))?,
            })
        })
        .collect::<Result<Vec<_>, TfjsError>>()?;
    let upsamples = UPSAMPLES
        .into_iter()
        .zip(["c5", "c4", "c3"])
        .map(|((i, o), c)| {
            let scope = |b: &str| format!("{c}_upsample/branch_{b}_upsample_resize");
            Ok(Upsample {
                branch_x: w.separable([i, o], 3, &scope("x"))?,
                branch_y: w.separable([i, o], 5, &scope("y"))?,
            })
        })
        .collect::<Result<Vec<_>, TfjsError>>()?;
    let [reduce, expand] = config.head_se_configs();
    Ok(CenterNet {
        stem: w.conv_bn(&config.stem_config(), &format!("{BACKBONE}/Conv"))?,
        blocks,
        extern1: w.conv_bn(&config.extern1_config(), "tower_0/extern1")?,
        laterals,
        upsamples,
        head_se: SqueezeExcite {
            reduce: w.conv_bn(&reduce, &format!("{HEAD}/conv1x1_se_a"))?,
            expand: w.conv(&expand, &format!("{HEAD_BARE}/conv1x1_se_b/weights"), None)?,
        },
        heatmap: w.output(config.heatmap_configs(), "centernet_cls_output")?,
        distances: w.output(config.distance_configs(), "centernet_wh_output")?,
    })
}
