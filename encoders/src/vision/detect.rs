//! The object detector: a frame letterboxed into CenterNet's 512x512 input, the network,
//! its decoder, then non-maximum suppression, and boxes mapped back to the frame's pixels.
//!
//! Letterbox, not stretch: `@vladmandic/human` stretches the frame to a square, but the
//! model's own repository letterboxes, and on the reference photos that is what finds the
//! subject (chelsea: "cat" 0.52 letterboxed, "dog" 0.48 stretched; coffee: cup 0.58 vs
//! 0.45; `fixtures/reference/centernet/README.md`). The resize is TensorFlow's bilinear
//! with half-pixel centres, computed as TensorFlow.js computes it (in f64), so the input
//! is the reference's to the last bit on decoder-independent (PNG) pixels.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use super::centernet::{self, CenterNet, INPUT, RawDetection};
use super::preprocess::{ImageError, RgbImage};
use super::{Region, VisionError};
use crate::tfjs::TfjsModel;

/// The 80 COCO classes in the model's order (0-based, as Human's `labels.ts`).
pub const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// What the detector keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Lowest score kept. Human keeps > 0.2 on stretched frames; letterboxed, the reference
    /// photos' subjects score 0.5-0.75 while what scores 0.2-0.3 there is mostly wrong (a
    /// "bed" in a micrograph, a "car" beside the cameraman), so 0.3.
    pub min_score: f32,
    /// Boxes of one class overlapping more than this are one object (Human's 0.4).
    pub iou: f32,
    /// Boxes of different classes overlapping more than this are one object under two
    /// names (the decoder gives a cell one row per class): the better score wins.
    pub same_object_iou: f32,
    /// Most detections kept, best first.
    pub max_detections: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            min_score: 0.3,
            iou: 0.4,
            same_object_iou: 0.7,
            max_detections: 20,
        }
    }
}

/// A box in pixels: left, top, right, bottom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundingBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BoundingBox {
    fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union.
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// One object found in a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// 0-based COCO class.
    pub class: usize,
    pub label: &'static str,
    pub score: f32,
    /// In the frame's own pixels, clipped to the frame.
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    /// Which third of the frame the box's centre is in.
    #[serde(serialize_with = "region_name")]
    pub region: Region,
}

fn region_name<S: serde::Serializer>(r: &Region, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.name())
}

/// A frame as the network's input: `[3, 512, 512]` RGB 0..255, and where the frame sits
/// in it.
#[derive(Debug, Clone)]
pub struct Letterboxed {
    pub chw: Vec<f32>,
    /// Input pixels per frame pixel.
    pub scale: f64,
    /// The frame's top-left corner in the input.
    pub dx: usize,
    pub dy: usize,
    /// The frame's size in the input.
    pub width: usize,
    pub height: usize,
}

impl Letterboxed {
    /// `s = min(512 / W, 512 / H)`; the frame resized to `round(W s) x round(H s)` (bilinear,
    /// half-pixel centres) and placed at `((512 - w) / 2, (512 - h) / 2)` on black.
    pub fn new(image: RgbImage) -> Result<Self, ImageError> {
        image.check()?;
        let (iw, ih) = (image.width as usize, image.height as usize);
        let scale = (INPUT as f64 / iw as f64).min(INPUT as f64 / ih as f64);
        let w = ((iw as f64 * scale).round() as usize).clamp(1, INPUT);
        let h = ((ih as f64 * scale).round() as usize).clamp(1, INPUT);
        let (dx, dy) = ((INPUT - w) / 2, (INPUT - h) / 2);
        let cols: Vec<(usize, usize, f64)> = (0..w).map(|c| source(c, iw, w)).collect();
        let plane = INPUT * INPUT;
        let mut chw = vec![0.0f32; 3 * plane];
        let px = |y: usize, x: usize, ch: usize| f64::from(image.rgb[(y * iw + x) * 3 + ch]);
        for r in 0..h {
            let (y0, y1, fy) = source(r, ih, h);
            for (c, &(x0, x1, fx)) in cols.iter().enumerate() {
                for ch in 0..3 {
                    let top = px(y0, x0, ch) + (px(y0, x1, ch) - px(y0, x0, ch)) * fx;
                    let bottom = px(y1, x0, ch) + (px(y1, x1, ch) - px(y1, x0, ch)) * fx;
                    chw[ch * plane + (dy + r) * INPUT + dx + c] =
                        (top + (bottom - top) * fy) as f32;
                }
            }
        }
        Ok(Letterboxed {
            chw,
            scale,
            dx,
            dy,
            width: iw,
            height: ih,
        })
    }

    /// A box in input pixels as frame pixels, clipped to the frame.
    pub fn to_frame(&self, d: &RawDetection) -> BoundingBox {
        let back = |v: f32, offset: usize, limit: usize| {
            (((f64::from(v) - offset as f64) / self.scale) as f32).clamp(0.0, limit as f32)
        };
        BoundingBox {
            x1: back(d.x1, self.dx, self.width),
            y1: back(d.y1, self.dy, self.height),
            x2: back(d.x2, self.dx, self.width),
            y2: back(d.y2, self.dy, self.height),
        }
    }
}

/// TensorFlow.js's half-pixel-centre source of output index `i` of `out` from `len`:
/// the two source indices and the weight of the second.
fn source(i: usize, len: usize, out: usize) -> (usize, usize, f64) {
    let frac = len as f64 / out as f64 * (i as f64 + 0.5) - 0.5;
    let lo = frac.floor().max(0.0);
    let hi = frac.ceil().min(len as f64 - 1.0).max(0.0);
    (lo as usize, hi as usize, frac - lo)
}

/// Keeps the best of each group of overlapping boxes: within a class above `config.iou`,
/// across classes above `config.same_object_iou`; best first, at most
/// `config.max_detections`.
pub fn suppress(mut found: Vec<Detection>, config: &DetectorConfig) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        let overlaps = kept.iter().any(|k| {
            let limit = if k.class == d.class {
                config.iou
            } else {
                config.same_object_iou
            };
            k.bbox.iou(&d.bbox) > limit
        });
        if !overlaps {
            kept.push(d);
            if kept.len() == config.max_detections {
                break;
            }
        }
    }
    kept
}

/// CenterNet with its pre- and post-processing.
pub struct Detector {
    model: CenterNet,
    device: Device,
    pub config: DetectorConfig,
}

impl Detector {
    /// Loads `centernet.json` and its weight shard.
    pub fn load(model_json: &Path, device: &Device) -> Result<Self, VisionError> {
        let fail = |reason: String| VisionError::Weights {
            path: model_json.display().to_string(),
            reason,
        };
        let file = TfjsModel::open(model_json).map_err(|e| fail(e.to_string()))?;
        let model =
            super::tfjs_loader::load_centernet(&file, device).map_err(|e| fail(e.to_string()))?;
        Ok(Detector {
            model,
            device: device.clone(),
            config: DetectorConfig::default(),
        })
    }

    pub fn model(&self) -> &CenterNet {
        &self.model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The objects in a frame, best first.
    pub fn detect(&self, image: RgbImage) -> Result<Vec<Detection>, VisionError> {
        let input = Letterboxed::new(image)?;
        let raw = self.raw(&input, self.config.min_score);
        let found = raw
            .iter()
            .map(|d| {
                let bbox = input.to_frame(d);
                Detection {
                    class: d.class,
                    label: COCO[d.class],
                    score: d.score,
                    region: Region::at((bbox.x1 + bbox.x2) / 2.0 / input.width as f32),
                    bbox,
                }
            })
            .collect();
        Ok(suppress(found, &self.config))
    }

    /// The decoder's rows (input pixels) scoring at least `min_score`, best first, at most
    /// the graph's 100.
    pub fn raw(&self, input: &Letterboxed, min_score: f32) -> Vec<RawDetection> {
        let (heatmap, distances) = self.maps(input);
        centernet::decode(&heatmap, &distances, COCO.len(), min_score, 100)
    }

    /// The heatmap `[80, 128, 128]` and distances `[4, 128, 128]`, flattened.
    pub fn maps(&self, input: &Letterboxed) -> (Vec<f32>, Vec<f32>) {
        let x = Tensor::<4>::from_data(
            TensorData::new(input.chw.clone(), [1, 3, INPUT, INPUT]),
            &self.device,
        );
        let out = self.model.forward(x);
        let flat = |t: Tensor<4>| {
            t.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        };
        (flat(out.heatmap), flat(out.distances))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: usize, score: f32, x1: f32) -> Detection {
        Detection {
            class,
            label: COCO[class],
            score,
            bbox: BoundingBox {
                x1,
                y1: 0.0,
                x2: x1 + 10.0,
                y2: 10.0,
            },
            region: Region::Left,
        }
    }

    #[test]
    fn suppression_is_by_class_and_merges_one_object_under_two_names() {
        let config = DetectorConfig::default();
        // Two cats overlapping by IoU 0.82 (one), a cat beside them (kept), a dog on the
        // first cat's exact box (the same object: dropped), a dog half over it (kept).
        let kept = suppress(
            vec![
                det(15, 0.5, 1.0),
                det(15, 0.9, 0.0),
                det(15, 0.4, 30.0),
                det(16, 0.6, 0.0),
                det(16, 0.35, 5.0),
            ],
            &config,
        );
        let got: Vec<(usize, f32)> = kept.iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(got, vec![(15, 0.9), (15, 0.4), (16, 0.35)]);
    }

    #[test]
    fn letterbox_places_and_maps_back() {
        // A 4x2 frame: scale 128, 512x256 at dy 128.
        let rgb: Vec<u8> = (0..24).map(|i| i as u8 * 10).collect();
        let l = Letterboxed::new(RgbImage {
            width: 4,
            height: 2,
            rgb: &rgb,
        })
        .unwrap();
        assert_eq!((l.scale, l.dx, l.dy), (128.0, 0, 128));
        let plane = INPUT * INPUT;
        assert_eq!(l.chw[0], 0.0); // the black band above
        // The first row's first pixel (red 0) and the last row's last (blue 230).
        assert_eq!(l.chw[128 * INPUT], 0.0);
        assert_eq!(l.chw[2 * plane + 383 * INPUT + 511], 230.0);
        let raw = RawDetection {
            x1: -10.0,
            y1: 128.0,
            x2: 256.0,
            y2: 600.0,
            score: 0.5,
            class: 0,
        };
        assert_eq!(
            l.to_frame(&raw),
            BoundingBox {
                x1: 0.0,
                y1: 0.0,
                x2: 2.0,
                y2: 2.0
            }
        );
        assert!(
            Letterboxed::new(RgbImage {
                width: 0,
                height: 2,
                rgb: &[]
            })
            .is_err()
        );
        assert!(
            Letterboxed::new(RgbImage {
                width: 2,
                height: 2,
                rgb: &[0; 3]
            })
            .is_err()
        );
    }
}
