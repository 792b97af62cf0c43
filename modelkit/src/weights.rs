//! One way for every weight file to hand tensors to the models (candle's `VarBuilder`
//! idea): a tensor asked for by name, its element type and shape checked against what the
//! model expects, in one place, with one error that names the file and the tensor.
//!
//! Each reader (GGUF, legacy torch pickle, ONNX, CTranslate2, safetensors, TensorFlow.js)
//! says what its file holds by implementing [`TensorSource`]; the loaders ask through
//! [`Weights`], then take the checked tensor's values in the form the reader keeps them
//! (quantized blocks, f16, f32). This file uses only std, `thiserror`, `half` and
//! `safetensors`, so the fuzz targets compile it without the burn stack.

use std::borrow::Cow;

/// Element types of the tensors weight files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I8,
    U8,
    I16,
    I32,
    I64,
    Bool,
    /// GGML's quantized blocks (of 32 weights, with their scales).
    Q4_0,
    Q4_1,
    Q8_0,
    /// Anything else a file may declare; no model reads it.
    Other,
}

impl Dtype {
    /// The types every float view ([`Weights::floats`]) converts from.
    pub const FLOATS: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::BF16];
}

/// What a file declares of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    pub dtype: Dtype,
    /// Outermost dimension first (PyTorch's order; a reader that stores them the other way
    /// round, GGUF, reverses them).
    pub shape: Vec<usize>,
}

/// A weight file's tensors by name.
pub trait TensorSource {
    /// The tensor's type and shape, `None` when the file has no tensor of that name.
    fn meta(&self, name: &str) -> Option<TensorMeta>;

    /// The tensor's values as f32, for a tensor of one of [`Dtype::FLOATS`]; borrowed
    /// where the reader holds them so. `None` where this reader keeps no float view.
    fn floats(&self, _name: &str) -> Option<Cow<'_, [f32]>> {
        None
    }
}

/// What is wrong with a tensor a model asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("has no tensor '{0}'")]
    Missing(String),
    #[error("tensor '{name}' has shape {got:?}, the model needs {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("tensor '{name}' is {got:?}, the model reads {want:?}")]
    Dtype {
        name: String,
        got: Dtype,
        want: Vec<Dtype>,
    },
}

/// A tensor a model cannot take from a file: which file, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct WeightError {
    pub file: String,
    pub problem: Problem,
}

impl WeightError {
    /// The tensor the error is about.
    pub fn tensor(&self) -> &str {
        match &self.problem {
            Problem::Missing(name) | Problem::Shape { name, .. } | Problem::Dtype { name, .. } => {
                name
            }
        }
    }
}

/// The tensors of one file as a model asks for them: by name under a prefix ("blk.3.",
/// "encoder/layer_0/"), each checked before it is handed over.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    source: &'a dyn TensorSource,
    file: &'a str,
}

impl<'a> Weights<'a> {
    /// `file` is what errors name (the file's path, or the model's name for it).
    pub fn new(source: &'a dyn TensorSource, file: &'a str) -> Self {
        Weights { source, file }
    }

    fn error(&self, problem: Problem) -> WeightError {
        WeightError {
            file: self.file.to_owned(),
            problem,
        }
    }

    /// Whether the file has a tensor `name` (an optional bias, say).
    pub fn has(&self, name: &str) -> bool {
        self.source.meta(name).is_some()
    }

    /// Tensor `name`'s type and shape as the file declares them, for a model that takes a
    /// size from the file (checked further by [`Weights::check`]).
    pub fn meta(&self, name: &str) -> Result<TensorMeta, WeightError> {
        self.source
            .meta(name)
            .ok_or_else(|| self.error(Problem::Missing(name.to_owned())))
    }

    /// Tensor `name`, present, of `shape`, and of one of `dtypes` (any type when empty).
    pub fn check(
        &self,
        name: &str,
        shape: &[usize],
        dtypes: &[Dtype],
    ) -> Result<TensorMeta, WeightError> {
        let meta = self.meta(name)?;
        if meta.shape != shape {
            return Err(self.error(Problem::Shape {
                name: name.to_owned(),
                got: meta.shape,
                want: shape.to_vec(),
            }));
        }
        if !dtypes.is_empty() && !dtypes.contains(&meta.dtype) {
            return Err(self.error(Problem::Dtype {
                name: name.to_owned(),
                got: meta.dtype,
                want: dtypes.to_vec(),
            }));
        }
        Ok(meta)
    }

    /// Tensor `name` of `shape` as f32 (from f32, f16 or bf16).
    pub fn floats(&self, name: &str, shape: &[usize]) -> Result<Cow<'a, [f32]>, WeightError> {
        let meta = self.check(name, shape, Dtype::FLOATS)?;
        self.source.floats(name).ok_or_else(|| {
            self.error(Problem::Dtype {
                name: name.to_owned(),
                got: meta.dtype,
                want: Dtype::FLOATS.to_vec(),
            })
        })
    }
}

/// The type of a safetensors dtype.
pub fn safetensors_dtype(dtype: safetensors::Dtype) -> Dtype {
    use safetensors::Dtype as S;
    match dtype {
        S::F32 => Dtype::F32,
        S::F16 => Dtype::F16,
        S::BF16 => Dtype::BF16,
        S::F64 => Dtype::F64,
        S::I8 => Dtype::I8,
        S::U8 => Dtype::U8,
        S::I16 => Dtype::I16,
        S::I32 => Dtype::I32,
        S::I64 => Dtype::I64,
        S::BOOL => Dtype::Bool,
        _ => Dtype::Other,
    }
}

/// A safetensors file's tensors.
impl TensorSource for safetensors::SafeTensors<'_> {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let view = self.tensor(name).ok()?;
        Some(TensorMeta {
            dtype: safetensors_dtype(view.dtype()),
            shape: view.shape().to_vec(),
        })
    }

    fn floats(&self, name: &str) -> Option<Cow<'_, [f32]>> {
        let view = self.tensor(name).ok()?;
        safetensors_floats(view.dtype(), view.data()).map(Cow::Owned)
    }
}

/// A safetensors tensor's little-endian F32, F16 or BF16 bytes as f32; `None` for other
/// dtypes.
pub fn safetensors_floats(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Table(HashMap<&'static str, (TensorMeta, Vec<f32>)>);

    impl TensorSource for Table {
        fn meta(&self, name: &str) -> Option<TensorMeta> {
            self.0.get(name).map(|(m, _)| m.clone())
        }
        fn floats(&self, name: &str) -> Option<Cow<'_, [f32]>> {
            self.0.get(name).map(|(_, v)| Cow::Borrowed(v.as_slice()))
        }
    }

    fn table() -> Table {
        let meta = |dtype, shape: &[usize]| TensorMeta {
            dtype,
            shape: shape.to_vec(),
        };
        Table(HashMap::from([
            ("w", (meta(Dtype::F32, &[2, 3]), vec![1.0; 6])),
            ("q", (meta(Dtype::Q4_1, &[32]), vec![])),
        ]))
    }

    #[test]
    fn a_tensor_is_checked_by_name_shape_and_type_and_errors_name_the_file() {
        let t = table();
        let w = Weights::new(&t, "m.bin");
        assert_eq!(w.floats("w", &[2, 3]).unwrap().len(), 6);
        assert!(w.has("q") && !w.has("x"));
        assert_eq!(
            w.check("q", &[32], &[Dtype::Q4_1]).unwrap().dtype,
            Dtype::Q4_1
        );

        let missing = w.floats("x", &[1]).unwrap_err();
        assert_eq!(missing.problem, Problem::Missing("x".into()));
        assert_eq!(missing.to_string(), "m.bin: has no tensor 'x'");
        let shape = w.floats("w", &[3, 2]).unwrap_err();
        assert_eq!(shape.tensor(), "w");
        assert_eq!(
            shape.to_string(),
            "m.bin: tensor 'w' has shape [2, 3], the model needs [3, 2]"
        );
        let dtype = w.floats("q", &[32]).unwrap_err();
        assert!(matches!(
            dtype.problem,
            Problem::Dtype {
                got: Dtype::Q4_1,
                ..
            }
        ));
    }

    #[test]
    fn safetensors_files_are_a_source() {
        let bytes: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bytes).unwrap();
        let file = safetensors::serialize([("v", view)], None).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let w = Weights::new(&st, "p.safetensors");
        assert_eq!(&*w.floats("v", &[2]).unwrap(), &[1.0, 2.0]);
        assert!(w.floats("v", &[1, 2]).is_err());
    }
}
