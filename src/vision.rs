//! The vision encoder from the model cache.

use anyhow::{Context, Result};
use burn::tensor::Device;
use encoders::vision::VisionEncoder;

use crate::models;

/// EfficientNet-Lite0 and its ImageNet class names, as `percept models pull` cached them.
pub fn load(device: &Device) -> Result<VisionEncoder> {
    let weights = models::require("efficientnet-lite0")?;
    let labels = models::require_all("imagenet-labels")?;
    VisionEncoder::load(&weights, &labels[0], &labels[1], device)
        .context("cannot load the vision encoder")
}
