//! TensorFlow.js models (`model.json` + weight shards), as `tensorflowjs_converter` writes
//! them for graph and layers models.
//!
//! `model.json` holds `modelTopology` (a GraphDef as JSON for graph models) and
//! `weightsManifest`: groups, each with the shard files (`paths`) its weights are stored in,
//! back to back and in order, and the weights' `name`, `shape`, `dtype` and optional
//! `quantization` (`float16`: IEEE half; `uint8`/`uint16`: `q * scale + min`). Every
//! weight's byte range is computed from its shape and storage type and checked against the
//! shards' sizes before anything is read, so a file that lies about its sizes is refused,
//! never read past its end. Shard paths must be plain file names next to `model.json`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::borrow::Cow;

use crate::weights::{Dtype, TensorMeta, TensorSource, WeightError, Weights};

/// Refuse a `model.json` larger than this before parsing it (real ones are < 1 MB).
const MAX_JSON: u64 = 64 << 20;
/// Refuse weight shards larger than this in all (real models here are a few MB).
const MAX_WEIGHTS: u64 = 1 << 31;
/// Refuse tensors of more dimensions than this.
const MAX_RANK: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TfjsError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} is not a TensorFlow.js model: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: weight '{name}': {reason}")]
    Weight {
        path: String,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    Tensor(#[from] WeightError),
}

/// Gives a shard's bytes by name, told how many bytes were read before it.
type ReadShard<'a> = dyn FnMut(&str, u64) -> Result<Vec<u8>, TfjsError> + 'a;

/// How a weight's values are stored in the shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Storage {
    F32,
    I32,
    Bool,
    /// IEEE half, widened to f32 on reading.
    F16,
    /// Affine-quantized bytes: `q * scale + min`.
    U8 {
        scale: f32,
        min: f32,
    },
    U16 {
        scale: f32,
        min: f32,
    },
}

impl Storage {
    fn bytes(self) -> usize {
        match self {
            Storage::F32 | Storage::I32 => 4,
            Storage::F16 | Storage::U16 { .. } => 2,
            Storage::Bool | Storage::U8 { .. } => 1,
        }
    }
}

/// One weight: its shape and where its bytes are in the concatenated shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
    range: Range<usize>,
}

/// A node of the graph (`modelTopology.node`), for callers that check what they load.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: String,
    #[serde(default)]
    pub input: Vec<String>,
}

/// A loaded model: its weights' bytes, their table and the graph's nodes.
#[derive(Debug)]
pub struct TfjsModel {
    path: String,
    pub format: String,
    pub nodes: Vec<Node>,
    weights: HashMap<String, Weight>,
    data: Vec<u8>,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(default)]
    format: String,
    #[serde(default, rename = "modelTopology")]
    topology: Topology,
    #[serde(rename = "weightsManifest")]
    manifest: Vec<Group>,
}

#[derive(Deserialize, Default)]
struct Topology {
    #[serde(default)]
    node: Vec<Node>,
}

#[derive(Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    shape: Vec<u64>,
    dtype: String,
    quantization: Option<Quantization>,
}

#[derive(Deserialize)]
struct Quantization {
    dtype: String,
    scale: Option<f32>,
    min: Option<f32>,
}

impl TfjsModel {
    /// Reads `model.json` and the shards it names from the same folder.
    pub fn open(model_json: &Path) -> Result<Self, TfjsError> {
        let path = model_json.display().to_string();
        let io = |p: &Path, e: std::io::Error| TfjsError::Io {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        let size = std::fs::metadata(model_json)
            .map_err(|e| io(model_json, e))?
            .len();
        if size > MAX_JSON {
            return Err(format_error(
                &path,
                format!("{size} bytes is too large for a model.json"),
            ));
        }
        let json = std::fs::read(model_json).map_err(|e| io(model_json, e))?;
        let dir = model_json.parent().unwrap_or(Path::new("."));
        let mut read_shard = |name: &str, so_far: u64| -> Result<Vec<u8>, TfjsError> {
            let file = shard_path(dir, name).ok_or_else(|| {
                format_error(
                    &path,
                    format!("shard path '{name}' is not a plain file name"),
                )
            })?;
            let len = std::fs::metadata(&file).map_err(|e| io(&file, e))?.len();
            if so_far + len > MAX_WEIGHTS {
                return Err(format_error(
                    &path,
                    "weight shards larger than 2 GiB".into(),
                ));
            }
            std::fs::read(&file).map_err(|e| io(&file, e))
        };
        Self::parse_with(&path, &json, &mut read_shard)
    }

    /// The same from bytes in memory: `shards` maps each shard name to its bytes.
    pub fn parse(
        path: &str,
        json: &[u8],
        shards: &HashMap<String, Vec<u8>>,
    ) -> Result<Self, TfjsError> {
        let mut read = |name: &str, _: u64| {
            shards.get(name).cloned().ok_or_else(|| TfjsError::Io {
                path: name.to_owned(),
                reason: "no such shard".into(),
            })
        };
        Self::parse_with(path, json, &mut read)
    }

    fn parse_with(path: &str, json: &[u8], read_shard: &mut ReadShard) -> Result<Self, TfjsError> {
        let model: ModelJson =
            serde_json::from_slice(json).map_err(|e| format_error(path, e.to_string()))?;
        let mut data = Vec::new();
        let mut weights = HashMap::new();
        for group in &model.manifest {
            let start = data.len();
            for name in &group.paths {
                let shard = read_shard(name, data.len() as u64)?;
                if (data.len() + shard.len()) as u64 > MAX_WEIGHTS {
                    return Err(format_error(path, "weight shards larger than 2 GiB".into()));
                }
                data.extend(shard);
            }
            let mut at = start;
            for entry in &group.weights {
                let weight = weight(path, entry, at)?;
                if weight.range.end > data.len() {
                    return Err(weight_error(
                        path,
                        &entry.name,
                        format!(
                            "needs bytes {}..{} but the group's shards hold {} bytes",
                            weight.range.start - start,
                            weight.range.end - start,
                            data.len() - start
                        ),
                    ));
                }
                at = weight.range.end;
                if weights.insert(entry.name.clone(), weight).is_some() {
                    return Err(weight_error(path, &entry.name, "listed twice".into()));
                }
            }
            if at != data.len() {
                return Err(format_error(
                    path,
                    format!(
                        "the weights of a group take {} bytes, its shards hold {}",
                        at - start,
                        data.len() - start
                    ),
                ));
            }
        }
        Ok(TfjsModel {
            path: path.to_owned(),
            format: model.format,
            nodes: model.topology.node,
            weights,
            data,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every weight's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.weights.keys().map(String::as_str)
    }

    pub fn weight(&self, name: &str) -> Result<&Weight, TfjsError> {
        self.tensors().meta(name)?;
        Ok(&self.weights[name])
    }

    fn tensors(&self) -> Weights<'_> {
        Weights::new(self, &self.path)
    }

    /// A float weight of shape `want`, dequantized to f32.
    pub fn floats(&self, name: &str, want: &[usize]) -> Result<Vec<f32>, TfjsError> {
        Ok(self.tensors().floats(name, want)?.into_owned())
    }

    /// An int32 weight of shape `want` (shapes, axes, sizes in a graph).
    pub fn ints(&self, name: &str, want: &[usize]) -> Result<Vec<i32>, TfjsError> {
        self.tensors().check(name, want, &[Dtype::I32])?;
        let w = self.weight(name)?;
        Ok(self.data[w.range.clone()]
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A float weight's values, dequantized; `None` for int and bool weights.
    fn dequantized(&self, w: &Weight) -> Option<Vec<f32>> {
        let bytes = &self.data[w.range.clone()];
        let le2 = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
        Some(match w.storage {
            Storage::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Storage::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(le2(c)).to_f32())
                .collect(),
            Storage::U8 { scale, min } => {
                bytes.iter().map(|&q| f32::from(q) * scale + min).collect()
            }
            Storage::U16 { scale, min } => bytes
                .chunks_exact(2)
                .map(|c| f32::from(le2(c)) * scale + min)
                .collect(),
            Storage::I32 | Storage::Bool => return None,
        })
    }
}

/// The model's weights as the manifest declares them: an affine-quantized weight is the
/// float32 tensor it stands for, a float16 one f16 (both read as f32).
impl TensorSource for TfjsModel {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let w = self.weights.get(name)?;
        let dtype = match w.storage {
            Storage::F32 | Storage::U8 { .. } | Storage::U16 { .. } => Dtype::F32,
            Storage::F16 => Dtype::F16,
            Storage::I32 => Dtype::I32,
            Storage::Bool => Dtype::Bool,
        };
        Some(TensorMeta {
            dtype,
            shape: w.shape.clone(),
        })
    }

    fn floats(&self, name: &str) -> Option<Cow<'_, [f32]>> {
        self.dequantized(self.weights.get(name)?).map(Cow::Owned)
    }
}

/// `dir/name` when `name` is one plain file name (no folder, no `..`), else `None`.
fn shard_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    plain.then(|| dir.join(name))
}

/// The table entry of one manifest weight stored from byte `at`, its size checked for
/// overflow.
fn weight(path: &str, entry: &Entry, at: usize) -> Result<Weight, TfjsError> {
    let fail = |reason: String| weight_error(path, &entry.name, reason);
    let storage = match (entry.dtype.as_str(), &entry.quantization) {
        ("float32", None) => Storage::F32,
        ("int32", None) => Storage::I32,
        ("bool", None) => Storage::Bool,
        ("float32", Some(q)) => match (q.dtype.as_str(), q.scale, q.min) {
            ("float16", _, _) => Storage::F16,
            ("uint8", Some(scale), Some(min)) => Storage::U8 { scale, min },
            ("uint16", Some(scale), Some(min)) => Storage::U16 { scale, min },
            (d, _, _) => {
                return Err(fail(format!(
                    "quantization '{d}' without scale and min, or unknown (float16, uint8 and \
                     uint16 are read)"
                )));
            }
        },
        (d, q) => {
            return Err(fail(format!(
                "dtype '{d}'{} is not read (float32, int32, bool)",
                if q.is_some() { " quantized" } else { "" }
            )));
        }
    };
    if entry.shape.len() > MAX_RANK {
        return Err(fail(format!("{} dimensions", entry.shape.len())));
    }
    let count = entry
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_WEIGHTS)
        .ok_or_else(|| fail(format!("shape {:?} is too large", entry.shape)))?;
    let len = count as usize * storage.bytes();
    let end = at
        .checked_add(len)
        .ok_or_else(|| fail("byte offset overflows".into()))?;
    Ok(Weight {
        name: entry.name.clone(),
        shape: entry.shape.iter().map(|&d| d as usize).collect(),
        storage,
        range: at..end,
    })
}

fn format_error(path: &str, reason: String) -> TfjsError {
    TfjsError::Format {
        path: path.to_owned(),
        reason,
    }
}

fn weight_error(path: &str, name: &str, reason: String) -> TfjsError {
    TfjsError::Weight {
        path: path.to_owned(),
        name: name.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(manifest: &str, shard: &[u8]) -> Result<TfjsModel, TfjsError> {
        let json = format!(
            r#"{{"format": "graph-model", "modelTopology": {{"node": [{{"name": "x", "op": "Placeholder"}}]}},
                "weightsManifest": [{{"paths": ["w.bin"], "weights": {manifest}}}]}}"#
        );
        let shards = HashMap::from([("w.bin".to_string(), shard.to_vec())]);
        TfjsModel::parse("m.json", json.as_bytes(), &shards)
    }

    #[test]
    fn reads_every_storage_type_at_unaligned_offsets() {
        let mut shard = vec![];
        shard.extend(half::f16::from_f32(1.5).to_bits().to_le_bytes());
        // The smallest half subnormal.
        shard.extend(1u16.to_le_bytes());
        shard.extend(7i32.to_le_bytes()); // at byte 4
        shard.extend([0u8, 2]); // uint8
        shard.extend(3u16.to_le_bytes()); // uint16, at an odd offset
        shard.extend(2.5f32.to_le_bytes());
        let m = model(
            r#"[{"name": "h", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
                {"name": "i", "shape": [], "dtype": "int32"},
                {"name": "q", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1}},
                {"name": "r", "shape": [1], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 2, "min": 1}},
                {"name": "f", "shape": [1, 1], "dtype": "float32"}]"#,
            &shard,
        )
        .unwrap();
        let h = m.floats("h", &[2]).unwrap();
        assert_eq!(h[0], 1.5);
        assert_eq!(h[1], 2f32.powi(-24));
        assert_eq!(m.ints("i", &[]).unwrap(), vec![7]);
        assert_eq!(m.floats("q", &[2]).unwrap(), vec![-1.0, 0.0]);
        assert_eq!(m.floats("r", &[1]).unwrap(), vec![7.0]);
        assert_eq!(m.floats("f", &[1, 1]).unwrap(), vec![2.5]);
        assert_eq!(m.nodes[0].op, "Placeholder");
    }

    #[test]
    fn malformed_files_are_named_errors() {
        let f = r#"[{"name": "w", "shape": [2], "dtype": "float32"}]"#;
        let cases: [(&str, &[u8], &str); 8] = [
            (f, &[0; 4], "needs bytes 0..8 but the group's shards hold 4"),
            (f, &[0; 12], "take 8 bytes, its shards hold 12"),
            (
                r#"[{"name": "w", "shape": [4294967296, 4294967296], "dtype": "float32"}]"#,
                &[],
                "is too large",
            ),
            (
                r#"[{"name": "w", "shape": [1], "dtype": "string"}]"#,
                &[0; 4],
                "dtype 'string'",
            ),
            (
                r#"[{"name": "w", "shape": [1], "dtype": "float32", "quantization": {"dtype": "uint8"}}]"#,
                &[0],
                "without scale and min",
            ),
            (
                r#"[{"name": "w", "shape": [1], "dtype": "int32"}, {"name": "w", "shape": [1], "dtype": "int32"}]"#,
                &[0; 8],
                "listed twice",
            ),
            (
                r#"[{"name": "w", "shape": [1,1,1,1,1,1,1,1,1], "dtype": "bool"}]"#,
                &[0],
                "9 dimensions",
            ),
            (r#""x""#, &[], "is not a TensorFlow.js model"),
        ];
        for (manifest, shard, want) in cases {
            let err = model(manifest, shard).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("m.json"),
                "{manifest}: {err}"
            );
        }
        let m = model(f, &[0; 8]).unwrap();
        let err = m.floats("w", &[3]).unwrap_err().to_string();
        assert!(
            err.contains("'w' has shape [2], the model needs [3]"),
            "{err}"
        );
        let err = m.floats("v", &[2]).unwrap_err().to_string();
        assert!(err.contains("no tensor 'v'"), "{err}");
        let err = m.ints("w", &[2]).unwrap_err().to_string();
        assert_eq!(err, "m.json: tensor 'w' is F32, the model reads [I32]");
    }

    #[test]
    fn shards_must_sit_next_to_the_model() {
        let dir = Path::new("/models/m");
        assert_eq!(shard_path(dir, "w.bin"), Some(dir.join("w.bin")));
        for bad in ["../w.bin", "/etc/passwd", "a/b.bin", "..", ""] {
            assert_eq!(shard_path(dir, bad), None, "{bad}");
        }
    }
}
