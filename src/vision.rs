//! The vision encoder from the model cache.

use anyhow::{Context, Result};
use burn::tensor::Device;
use encoders::vision::{RgbImage, Scene, VisionEncoder, VisionError};
use pipeline::Frame;

use crate::models;

/// EfficientNet-Lite0 and its ImageNet class names, as `percept models pull` cached them.
pub fn load(device: &Device) -> Result<VisionEncoder> {
    let weights = models::require("efficientnet-lite0")?;
    let labels = models::require_all("imagenet-labels")?;
    VisionEncoder::load(&weights, &labels[0], &labels[1], device)
        .context("cannot load the vision encoder")
}

/// What the encoder makes of a pipeline frame (the describe and kiosk stages drop a frame it
/// refuses and go on).
pub fn encode_frame(vision: &VisionEncoder, frame: &Frame) -> Result<Scene, VisionError> {
    vision.encode(RgbImage {
        width: frame.width,
        height: frame.height,
        rgb: &frame.rgb,
    })
}
