//! Maps the tensors of the EfficientNet-PyTorch state dict (legacy torch pickle, read by
//! [`crate::torch_pickle`]) onto [`EfficientNet`], folding each batch norm into its
//! convolution. Every tensor's shape is checked against the configuration.

use std::borrow::Cow;
use std::collections::HashMap;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use super::efficientnet::{
    ConvBn, ConvBnConfig, EfficientNet, EfficientNetConfig, MbConv, fold_batch_norm,
};
use crate::torch_pickle::TorchTensor;

/// Batch-norm epsilon of the TensorFlow-trained weights (1e-5 classifies the test photos
/// less confidently and fits the stored running statistics worse; see the vision tests).
pub const BN_EPS: f32 = 1e-3;

pub use crate::weights::WeightError;
use crate::weights::{Dtype, TensorMeta, TensorSource, Weights};

/// The state dict by name (its values already f32).
struct StateDict(HashMap<String, TorchTensor>);

impl TensorSource for StateDict {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.0.get(name).map(|t| TensorMeta {
            dtype: Dtype::F32,
            shape: t.shape.clone(),
        })
    }

    fn floats(&self, name: &str) -> Option<Cow<'_, [f32]>> {
        self.0.get(name).map(|t| Cow::Borrowed(t.data.as_slice()))
    }
}

struct Tensors<'a>(Weights<'a>);

impl Tensors<'_> {
    fn get(&self, name: &str, want: &[usize]) -> Result<Cow<'_, [f32]>, WeightError> {
        self.0.floats(name, want)
    }

    /// Convolution `conv` followed by batch norm `bn`, folded.
    fn conv_bn(
        &self,
        conv: &str,
        bn: &str,
        config: &ConvBnConfig,
        device: &Device,
    ) -> Result<ConvBn, WeightError> {
        let shape = config.weight_shape();
        let out = [shape[0]];
        let w = self.get(&format!("{conv}.weight"), &shape)?;
        let p = |field: &str| self.get(&format!("{bn}.{field}"), &out);
        let (w, b) = fold_batch_norm(
            &w,
            &p("weight")?,
            &p("bias")?,
            &p("running_mean")?,
            &p("running_var")?,
            BN_EPS,
        );
        Ok(config.with_weights(
            Tensor::from_data(TensorData::new(w, shape), device),
            Some(Tensor::from_data(TensorData::new(b, out), device)),
        ))
    }
}

/// Builds the model from the file's tensors (in the EfficientNet-PyTorch layout:
/// `_conv_stem`, `_bn0`, `_blocks.N._{expand,depthwise,project}_conv` with `_bn0/1/2`,
/// `_conv_head`, `_bn1`, `_fc`).
pub fn load_efficientnet(
    tensors: Vec<TorchTensor>,
    file: &str,
    device: &Device,
) -> Result<EfficientNet, WeightError> {
    let dict = StateDict(tensors.into_iter().map(|t| (t.name.clone(), t)).collect());
    let t = Tensors(Weights::new(&dict, file));
    let config = EfficientNetConfig::new();
    let stem = t.conv_bn("_conv_stem", "_bn0", &config.stem_config(), device)?;
    let blocks = config
        .block_configs()
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let name = |part: &str| format!("_blocks.{i}.{part}");
            let expand = match b.expand_config() {
                Some(c) => Some(t.conv_bn(&name("_expand_conv"), &name("_bn0"), &c, device)?),
                None => None,
            };
            Ok(MbConv {
                expand,
                depthwise: t.conv_bn(
                    &name("_depthwise_conv"),
                    &name("_bn1"),
                    &b.depthwise_config(),
                    device,
                )?,
                project: t.conv_bn(
                    &name("_project_conv"),
                    &name("_bn2"),
                    &b.project_config(),
                    device,
                )?,
                skip: b.skip(),
            })
        })
        .collect::<Result<Vec<_>, WeightError>>()?;
    let head = t.conv_bn("_conv_head", "_bn1", &config.head_config(), device)?;
    let fc = config.classifier_config();
    let (d_in, d_out) = (fc.d_input, fc.d_output);
    // torch keeps [out, in]; burn's Linear multiplies by [in, out].
    let w = t.get("_fc.weight", &[d_out, d_in])?;
    let weight =
        Tensor::<2>::from_data(TensorData::new(w.to_vec(), [d_out, d_in]), device).transpose();
    let bias = t.get("_fc.bias", &[d_out])?;
    let classifier = Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias.to_vec(), [d_out]),
            device,
        ))),
    };
    Ok(EfficientNet {
        stem,
        blocks,
        head,
        classifier,
    })
}
