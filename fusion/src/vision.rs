//! Vision projectors: what the camera sees, as rows the language model reads.

use std::path::Path;

use encoders::vision::{Detection, Label, Region, Scene};
use llm::{Llm, Segment};

use crate::FusionError;

/// Turns a scene into prefix rows of the language model's embedding space.
pub trait VisionProjector: Send + Sync {
    fn project(&self, scene: &Scene, lm: &Llm) -> Result<Segment, FusionError>;
}

/// Labels below this probability are not mentioned: they are guesses, and a small model
/// repeats whatever it is told.
pub const MENTION: f32 = 0.08;

/// The default projector: what the encoders saw written as a short text (the detector's
/// objects with counts and places, then the classifier's whole-frame labels where they add
/// something) and embedded by the model's own token embedding table, so a frozen text-only
/// model reads them as it reads words.
#[derive(Debug, Clone, Default)]
pub struct LabelProjector;

impl LabelProjector {
    /// The text the rows stand for, e.g. "In view: two people on the left and a horse in
    /// the centre. It looks like: seashore (41%), sandbar (12%)." With nothing detected,
    /// only what it looks like; with nothing above the mention threshold either: "Nothing
    /// clear in view."
    pub fn describe(scene: &Scene) -> String {
        let looks = looks_like(scene);
        let objects = objects_phrase(&scene.objects);
        if objects.is_empty() && looks.is_empty() {
            return "Nothing clear in view.".into();
        }
        let mut parts = Vec::new();
        if !objects.is_empty() {
            parts.push(format!("In view: {objects}."));
        }
        if !looks.is_empty() {
            let named: Vec<String> = looks
                .iter()
                .map(|l| format!("{} ({:.0}%)", l.name, l.prob * 100.0))
                .collect();
            parts.push(format!("It looks like: {}.", named.join(", ")));
        }
        parts.join(" ")
    }
}

/// The classifier's whole-frame labels worth mentioning: at most three above [`MENTION`],
/// leaving out a label that only repeats a detected object's name.
pub fn looks_like(scene: &Scene) -> Vec<&Label> {
    scene
        .whole
        .labels
        .iter()
        .filter(|l| l.prob >= MENTION)
        .filter(|l| !scene.objects.iter().any(|o| o.label == l.name))
        .take(3)
        .collect()
}

/// The detected objects as words, counted and placed: "two people on the left and a horse
/// in the centre" (a place only when all of one kind are in the same third). Kinds in the
/// order of their best score.
pub fn objects_phrase(objects: &[Detection]) -> String {
    let mut kinds: Vec<(&str, usize, Option<Region>)> = Vec::new();
    for o in objects {
        match kinds.iter_mut().find(|k| k.0 == o.label) {
            Some(k) => {
                k.1 += 1;
                if k.2 != Some(o.region) {
                    k.2 = None;
                }
            }
            None => kinds.push((o.label, 1, Some(o.region))),
        }
    }
    let parts: Vec<String> = kinds
        .into_iter()
        .map(|(label, n, region)| {
            let mut part = counted(label, n);
            if let Some(r) = region {
                part.push_str(match r {
                    Region::Left => " on the left",
                    Region::Centre => " in the centre",
                    Region::Right => " on the right",
                });
            }
            part
        })
        .collect();
    match parts.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// "a cat", "an umbrella", "two people", "12 cups".
pub fn counted(noun: &str, n: usize) -> String {
    const WORDS: [&str; 9] = [
        "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    match n {
        1 => format!("{} {noun}", article(noun)),
        2..=10 => format!("{} {}", WORDS[n - 2], plural(noun)),
        _ => format!("{n} {}", plural(noun)),
    }
}

/// "a" or "an" before `word` (by its first letter, which is right for every COCO and
/// ImageNet name but the rare "hour"-like exception).
pub fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The plural of a (last) noun: the irregular ones of the COCO names, else English's
/// regular rules.
pub fn plural(noun: &str) -> String {
    let (head, last) = match noun.rsplit_once(' ') {
        Some((h, l)) => (format!("{h} "), l),
        None => (String::new(), noun),
    };
    let last = match last {
        "person" => "people".to_owned(),
        "mouse" => "mice".to_owned(),
        "knife" => "knives".to_owned(),
        "sheep" | "skis" | "scissors" | "broccoli" => last.to_owned(),
        w if w.ends_with(['s', 'x']) || w.ends_with("sh") || w.ends_with("ch") => format!("{w}es"),
        w if w.ends_with('y') && !w.ends_with(['a', 'e', 'o', 'u']) && w.len() > 1 => {
            format!("{}ies", &w[..w.len() - 1])
        }
        w => format!("{w}s"),
    };
    format!("{head}{last}")
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
        let shown = path.display().to_string();
        let weights = encoders::weights::Weights::new(&file, &shown);
        let problem = |e: encoders::weights::WeightError| fail(e.problem.to_string());
        let (wname, bname) = (format!("{prefix}weight"), format!("{prefix}bias"));
        // The sizes come from the weight's own shape; the bias must agree with it.
        let wshape = weights.meta(&wname).map_err(problem)?.shape;
        let [d_out, d_in] = wshape[..] else {
            return Err(fail(format!(
                "{wname} has shape {wshape:?}, not [d_out, d_in]"
            )));
        };
        let weight = weights.floats(&wname, &[d_out, d_in]).map_err(problem)?;
        let bias = weights.floats(&bname, &[d_out]).map_err(problem)?;
        Self::new(weight.into_owned(), bias.into_owned(), d_in).map_err(|e| fail(e.to_string()))
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.d_in)
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b)
            .collect()
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

    fn object(label: &'static str, region: Region) -> Detection {
        let class = encoders::vision::detect::COCO
            .iter()
            .position(|c| *c == label)
            .unwrap();
        Detection {
            class,
            label,
            score: 0.5,
            bbox: encoders::vision::BoundingBox {
                x1: 0.0,
                y1: 0.0,
                x2: 1.0,
                y2: 1.0,
            },
            region,
        }
    }

    #[test]
    fn the_scene_is_written_with_counts_places_and_what_it_looks_like() {
        let mut s = scene();
        assert_eq!(
            LabelProjector::describe(&s),
            "It looks like: tiger cat (39%), tabby (20%)."
        );
        s.objects = vec![
            object("person", Region::Left),
            object("horse", Region::Centre),
            object("person", Region::Left),
            object("umbrella", Region::Left),
            object("umbrella", Region::Right),
        ];
        assert_eq!(
            LabelProjector::describe(&s),
            "In view: two people on the left, a horse in the centre and two umbrellas. It looks \
             like: tiger cat (39%), tabby (20%)."
        );
        s.whole.labels.iter_mut().for_each(|l| l.prob = 0.01);
        s.objects.clear();
        assert_eq!(LabelProjector::describe(&s), "Nothing clear in view.");
        for (noun, n, want) in [
            ("cup", 3, "three cups"),
            ("bus", 2, "two buses"),
            ("wine glass", 2, "two wine glasses"),
            ("sheep", 12, "12 sheep"),
            ("apple", 1, "an apple"),
            ("teddy bear", 1, "a teddy bear"),
            ("butterfly", 2, "two butterflies"),
        ] {
            assert_eq!(counted(noun, n), want);
        }
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
