//! Vision projectors: what the camera sees, as rows the language model reads.

use std::path::Path;

use encoders::vision::{Label, Scene};
use llm::{Llm, Segment};

use crate::FusionError;

/// Turns a scene into prefix rows of the language model's embedding space.
pub trait VisionProjector: Send + Sync {
    fn project(&self, scene: &Scene, lm: &Llm) -> Result<Segment, FusionError>;
}

/// Labels below this probability are not mentioned: they are guesses, and a small model
/// repeats whatever it is told.
const MENTION: f32 = 0.08;

/// The default projector: the scene's top labels (whole frame, then left, centre and right)
/// written as a short text and embedded by the model's own token embedding table, so a
/// frozen text-only model reads them as it reads words.
#[derive(Debug, Clone, Default)]
pub struct LabelProjector;

impl LabelProjector {
    /// The text the rows stand for, e.g. "Objects in view: tiger cat (39%), Egyptian cat
    /// (36%). Left: tiger cat. Centre: tabby. Right: tiger cat."
    pub fn describe(scene: &Scene) -> String {
        let named = |labels: &[Label], with_prob: bool| -> Vec<String> {
            let mut out: Vec<String> = labels
                .iter()
                .filter(|l| l.prob >= MENTION)
                .take(3)
                .map(|l| {
                    if with_prob {
                        format!("{} ({:.0}%)", l.name, l.prob * 100.0)
                    } else {
                        l.name.clone()
                    }
                })
                .collect();
            if out.is_empty() {
                out.push(
                    labels
                        .first()
                        .map_or("nothing clear".into(), |l| l.name.clone()),
                );
            }
            out
        };
        let mut text = format!(
            "Objects in view: {}.",
            named(&scene.whole.labels, true).join(", ")
        );
        for (region, view) in &scene.regions {
            let mut name = region.name().to_owned();
            name[..1].make_ascii_uppercase();
            text.push_str(&format!(" {name}: {}.", named(&view.labels, false)[0]));
        }
        text
    }
}

impl VisionProjector for LabelProjector {
    fn project(&self, scene: &Scene, lm: &Llm) -> Result<Segment, FusionError> {
        let ids = lm
            .tokenizer
            .encode(&Self::describe(scene), false)
            .map_err(llm::LlmError::from)?;
        Ok(Segment::Embeddings(lm.embed(&[Segment::Tokens(ids)])?))
    }
}

/// A learned projector: each pooled feature vector (the whole frame, then each region)
/// through `y = W x + b` into one embedding row, as LLaVA's linear projector does.
#[derive(Debug, Clone)]
pub struct LinearProjector {
    /// `[d_out, d_in]`, row-major (torch's `nn.Linear` layout).
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

impl LinearProjector {
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, d_in: usize) -> Result<Self, FusionError> {
        let d_out = bias.len();
        if weight.len() != d_in * d_out {
            return Err(FusionError::Weights {
                path: "(in memory)".into(),
                reason: format!(
                    "weight has {} values, bias {d_out}: not [{d_out}, {d_in}]",
                    weight.len()
                ),
            });
        }
        Ok(LinearProjector {
            weight,
            bias,
            d_in,
            d_out,
        })
    }

    /// Reads `{prefix}weight` `[d_out, d_in]` and `{prefix}bias` `[d_out]` (f32, f16 or
    /// bf16) from a safetensors file.
    pub fn from_safetensors(path: &Path, prefix: &str) -> Result<Self, FusionError> {
        let fail = |reason: String| FusionError::Weights {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let file =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| fail(e.to_string()))?;
        let read = |name: String| -> Result<(Vec<usize>, Vec<f32>), FusionError> {
            let t = file
                .tensor(&name)
                .map_err(|e| fail(format!("{name}: {e}")))?;
            let data = floats(t.dtype(), t.data()).ok_or_else(|| {
                fail(format!(
                    "{name}: dtype {:?} is not f32, f16 or bf16",
                    t.dtype()
                ))
            })?;
            Ok((t.shape().to_vec(), data))
        };
        let (wshape, weight) = read(format!("{prefix}weight"))?;
        let (bshape, bias) = read(format!("{prefix}bias"))?;
        match (wshape.as_slice(), bshape.as_slice()) {
            ([o, i], [b]) if o == b => Self::new(weight, bias, *i).map_err(|e| fail(e.to_string())),
            _ => Err(fail(format!(
                "weight {wshape:?} and bias {bshape:?} are not [d_out, d_in] and [d_out]"
            ))),
        }
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.d_in)
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b)
            .collect()
    }
}

fn floats(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    let pairs = || {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(pairs().map(|h| half::f16::from_bits(h).to_f32()).collect()),
        Dtype::BF16 => Some(pairs().map(|h| half::bf16::from_bits(h).to_f32()).collect()),
        _ => None,
    }
}

impl LinearProjector {
    /// One row per pooled feature vector: the whole frame, then each region.
    pub fn rows(&self, scene: &Scene) -> Result<Vec<f32>, FusionError> {
        let features = std::iter::once(&scene.whole.feature)
            .chain(scene.regions.iter().map(|(_, v)| &v.feature));
        let mut rows = Vec::with_capacity(self.d_out * (1 + scene.regions.len()));
        for feature in features {
            if feature.len() != self.d_in {
                return Err(FusionError::Width {
                    projector: self.d_in,
                    scene: feature.len(),
                });
            }
            rows.extend(self.apply(feature));
        }
        Ok(rows)
    }
}

impl VisionProjector for LinearProjector {
    fn project(&self, scene: &Scene, lm: &Llm) -> Result<Segment, FusionError> {
        if self.d_out != lm.model.d_model() {
            return Err(FusionError::Width {
                projector: self.d_out,
                scene: lm.model.d_model(),
            });
        }
        Ok(Segment::Embeddings(self.rows(scene)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoders::vision::{Region, View};

    fn view(feature: Vec<f32>, labels: &[(&str, f32)]) -> View {
        View {
            labels: labels
                .iter()
                .enumerate()
                .map(|(class, (name, prob))| Label {
                    class,
                    name: name.to_string(),
                    prob: *prob,
                })
                .collect(),
            probs: vec![],
            feature,
        }
    }

    fn scene() -> Scene {
        Scene {
            whole: view(
                vec![1.0, 2.0, 3.0],
                &[("tiger cat", 0.39), ("tabby", 0.2), ("lynx", 0.01)],
            ),
            regions: vec![
                (Region::Left, view(vec![0.0, 0.0, 1.0], &[("tabby", 0.5)])),
                (
                    Region::Centre,
                    view(vec![1.0, 0.0, 0.0], &[("tiger cat", 0.6)]),
                ),
                (Region::Right, view(vec![0.0, 1.0, 0.0], &[("lynx", 0.02)])),
            ],
            objects: vec![],
        }
    }

    #[test]
    fn labels_are_written_as_a_short_text() {
        assert_eq!(
            LabelProjector::describe(&scene()),
            "Objects in view: tiger cat (39%), tabby (20%). Left: tabby. Centre: tiger cat. \
             Right: lynx."
        );
    }

    /// A 2x3 matrix written to safetensors in f16 and read back: y = W x + b per view.
    #[test]
    fn linear_projector_from_safetensors_maps_each_view_to_a_row() {
        let w = [1.0f32, 0.0, -1.0, 0.5, 0.5, 0.5];
        let b = [0.25f32, -1.0];
        let f16 = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect()
        };
        let (wb, bb) = (f16(&w), f16(&b));
        let tensors = [
            (
                "mm.weight",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 3], &wb)
                    .unwrap(),
            ),
            (
                "mm.bias",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &bb)
                    .unwrap(),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projector.safetensors");
        safetensors::serialize_to_file(tensors, None, &path).unwrap();
        let p = LinearProjector::from_safetensors(&path, "mm.").unwrap();
        let rows = p.rows(&scene()).unwrap();
        // whole [1,2,3] -> [1-3+0.25, 3-1]; left [0,0,1] -> [-1+0.25, 0.5-1]; ...
        assert_eq!(rows, vec![-1.75, 2.0, -0.75, -0.5, 1.25, -0.5, 0.25, -0.5]);
        let err = LinearProjector::from_safetensors(&path, "nope.").unwrap_err();
        assert!(err.to_string().contains("nope.weight"), "{err}");
        let narrow = LinearProjector::new(vec![1.0; 4], vec![0.0; 2], 2).unwrap();
        assert!(matches!(
            narrow.rows(&scene()),
            Err(FusionError::Width { .. })
        ));
    }
}
