//! The vision encoders from the model cache: the classifier (what the frame looks like) and
//! the detector (the objects in it).

use anyhow::{Context, Result};
use burn::tensor::Device;
use encoders::vision::{Detector, RgbImage, Scene, VisionEncoder, VisionError};
use pipeline::Frame;
use publish::{Event, Sighting};

use crate::models;

/// EfficientNet-Lite0 and its ImageNet class names, as `percept models pull` cached them.
pub fn load(device: &Device) -> Result<VisionEncoder> {
    let weights = models::require("efficientnet-lite0")?;
    let labels = models::require_all("imagenet-labels")?;
    VisionEncoder::load(&weights, &labels[0], &labels[1], device)
        .context("cannot load the vision encoder")
}

/// CenterNet (COCO-80), as `percept models pull` cached it.
pub fn load_detector(device: &Device) -> Result<Detector> {
    let files = models::require_all("centernet")?;
    Detector::load(&files[0], device).context("cannot load the object detector")
}

/// What the encoders make of a pipeline frame: the classifier's labels, and the detector's
/// objects when there is one (the describe and kiosk stages drop a frame they refuse and
/// go on).
pub fn encode_frame(
    vision: &VisionEncoder,
    detector: Option<&Detector>,
    frame: &Frame,
) -> Result<Scene, VisionError> {
    let image = RgbImage {
        width: frame.width,
        height: frame.height,
        rgb: &frame.rgb,
    };
    let mut scene = vision.encode(image)?;
    if let Some(detector) = detector {
        scene.objects = detector.detect(image)?;
    }
    Ok(scene)
}

/// The classifier's first `n` labels for the whole frame, best first.
pub fn top_labels(scene: &Scene, n: usize) -> Vec<String> {
    scene
        .whole
        .labels
        .iter()
        .take(n)
        .map(|l| l.name.clone())
        .collect()
}

/// A frame and what the encoders made of it, for the publishers (the live page, MQTT).
pub fn sighting(frame: &Frame, scene: &Scene) -> Event {
    Event::Seen(Sighting {
        frame: frame.clone(),
        objects: serde_json::to_value(&scene.objects).unwrap_or_default(),
        labels: top_labels(scene, 3),
    })
}
