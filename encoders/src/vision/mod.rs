//! The vision encoders: EfficientNet-Lite0 over a frame, giving what the scene looks like
//! (ImageNet classes), where (left, centre, right), and a pooled feature vector for
//! telling whether the scene changed; and CenterNet, giving the objects in it (COCO
//! classes, with boxes), people first among them.

pub mod centernet;
pub mod detect;
pub mod efficientnet;
pub mod labels;
pub mod layers;
pub mod preprocess;
pub mod pth_loader;
pub mod tfjs_loader;

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

pub use centernet::{CenterNet, CenterNetConfig};
pub use detect::{BoundingBox, Detection, Detector, DetectorConfig};
pub use efficientnet::{EfficientNet, EfficientNetConfig};
pub use labels::Labels;
pub use preprocess::RgbImage;

/// How many labels a view keeps.
pub const TOP_K: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("cannot read the vision weights {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error(transparent)]
    Labels(#[from] labels::LabelError),
    #[error(transparent)]
    Image(#[from] preprocess::ImageError),
}

/// A part of the frame, from the columns of the final feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Left,
    Centre,
    Right,
}

impl Region {
    pub const ALL: [Region; 3] = [Region::Left, Region::Centre, Region::Right];

    /// The third a point `fraction` of the way across the frame is in.
    pub fn at(fraction: f32) -> Region {
        if fraction < 1.0 / 3.0 {
            Region::Left
        } else if fraction > 2.0 / 3.0 {
            Region::Right
        } else {
            Region::Centre
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Region::Left => "left",
            Region::Centre => "centre",
            Region::Right => "right",
        }
    }

    /// Columns `[start, end)` of a feature map `width` wide: overlapping thirds.
    fn columns(self, width: usize) -> (usize, usize) {
        let third = width.div_ceil(3);
        match self {
            Region::Left => (0, third),
            Region::Centre => ((width - third) / 2, (width + third) / 2),
            Region::Right => (width - third, width),
        }
    }
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub class: usize,
    pub name: String,
    pub prob: f32,
}

/// What the classifier sees in the whole frame or in a region of it.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The most probable classes, best first.
    pub labels: Vec<Label>,
    /// Probabilities of every class.
    pub probs: Vec<f32>,
    /// The pooled 1280-d feature vector.
    pub feature: Vec<f32>,
}

/// The encoders' output for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// The classifier on the whole frame.
    pub whole: View,
    /// The classifier on each third.
    pub regions: Vec<(Region, View)>,
    /// The detector's objects, best first (empty when no detector ran).
    pub objects: Vec<Detection>,
}

pub struct VisionEncoder {
    model: EfficientNet,
    labels: Labels,
    device: Device,
}

impl VisionEncoder {
    /// Loads the weights (legacy torch pickle) and the class names.
    pub fn load(
        weights: &Path,
        synsets: &Path,
        lemmas: &Path,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let fail = |reason: String| VisionError::Weights {
            path: weights.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(weights).map_err(|e| fail(e.to_string()))?;
        let tensors =
            crate::torch_pickle::read_legacy_state_dict(&bytes).map_err(|e| fail(e.to_string()))?;
        let model = pth_loader::load_efficientnet(tensors, &weights.display().to_string(), device)
            .map_err(|e| fail(e.problem.to_string()))?;
        let labels = Labels::load(synsets, lemmas)?;
        Ok(VisionEncoder {
            model,
            labels,
            device: device.clone(),
        })
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    pub fn model(&self) -> &EfficientNet {
        &self.model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Classifies a frame and each of its regions.
    pub fn encode(&self, image: RgbImage) -> Result<Scene, VisionError> {
        let crop = preprocess::crop_rgb(image)?;
        Ok(self.encode_input(preprocess::to_input(&crop)))
    }

    /// The same from a prepared `[3, 224, 224]` input.
    pub fn encode_input(&self, chw: Vec<f32>) -> Scene {
        let n = preprocess::INPUT as usize;
        let x = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, n, n]), &self.device);
        let f = self.model.features(x);
        let [_, c, h, w] = f.dims();
        // Rows: the whole frame, then each region's columns, pooled over their area.
        let mut pooled = vec![f.clone().mean_dim(3).mean_dim(2).reshape([1, c])];
        for region in Region::ALL {
            let (a, b) = region.columns(w);
            let part = f.clone().slice([0..1, 0..c, 0..h, a..b]);
            pooled.push(part.mean_dim(3).mean_dim(2).reshape([1, c]));
        }
        let pooled = Tensor::cat(pooled, 0);
        let probs = softmax(self.model.classify(pooled.clone()), 1);
        let probs = rows(probs.into_data(), 1 + Region::ALL.len());
        let features = rows(pooled.into_data(), 1 + Region::ALL.len());
        let mut views = probs
            .into_iter()
            .zip(features)
            .map(|(p, f)| self.view(p, f));
        let whole = views.next().expect("one row per view");
        Scene {
            whole,
            regions: Region::ALL.into_iter().zip(views).collect(),
            objects: Vec::new(),
        }
    }

    fn view(&self, probs: Vec<f32>, feature: Vec<f32>) -> View {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let labels = order[..TOP_K.min(order.len())]
            .iter()
            .map(|&class| Label {
                class,
                name: self.labels.name(class).to_owned(),
                prob: probs[class],
            })
            .collect();
        View {
            labels,
            probs,
            feature,
        }
    }
}

/// A `[n, d]` tensor's data as `n` rows.
fn rows(data: TensorData, n: usize) -> Vec<Vec<f32>> {
    let flat: Vec<f32> = data.try_to_vec().unwrap_or_default();
    let d = flat.len() / n.max(1);
    flat.chunks(d.max(1)).map(<[f32]>::to_vec).collect()
}
