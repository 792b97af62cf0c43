//! Reader for CTranslate2's `model.bin` (binary version 4 to 6; layout documented in
//! `fixtures/reference/whisper-tiny-en/CT2_FORMAT.md`):
//!
//! ```text
//! u32 version; string spec name; u32 spec revision; u32 variable count
//! per variable: string name; u8 rank; u32 dims[rank]; u8 dtype; u32 byte count; bytes
//! u32 alias count; per alias: string alias; string target
//! string = u16 length (with the trailing NUL), bytes, NUL
//! ```
//!
//! Little-endian, no alignment: tensors start at odd offsets, so values are copied out.

use std::collections::HashMap;

use half::f16;

use crate::weights::{Dtype, Problem, TensorMeta, TensorSource, WeightError, Weights};

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("model.bin: {what} at byte {offset}")]
    Malformed { what: String, offset: usize },
    #[error("model.bin: binary version {0} is not supported (4 to 6 are)")]
    Version(u32),
    #[error(transparent)]
    Weight(#[from] WeightError),
}

/// One variable: its shape and where its values are in the file. Values are converted
/// (to f32, integers too: the scalars are small) only when asked for, one variable at a
/// time, so that loading holds the file and the model's own tensors, not a third copy; an
/// alias is the same bytes under another name.
#[derive(Debug, Clone)]
pub struct Variable {
    pub shape: Vec<usize>,
    dtype: u8,
    bytes: std::ops::Range<usize>,
}

/// A parsed `model.bin`, borrowing the file's bytes.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    pub spec: String,
    pub variables: HashMap<String, Variable>,
    file: &'a [u8],
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Ct2Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Ct2Error::Malformed {
                what: format!("{what} runs past the end of the file"),
                offset: self.at,
            });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// A count just read, refused above `limit`.
    fn at_most(&self, count: u32, limit: u32, what: &str) -> Result<(), Ct2Error> {
        if count > limit {
            return Err(Ct2Error::Malformed {
                what: format!("{count} {what}, more than limits::MAX_VARIABLES = {limit}"),
                offset: self.at - 4,
            });
        }
        Ok(())
    }

    fn u8(&mut self, what: &str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, Ct2Error> {
        let at = self.at;
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        let text = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(text.to_vec()).map_err(|_| Ct2Error::Malformed {
            what: format!("{what} is not UTF-8"),
            offset: at,
        })
    }
}

/// Element size and conversion of each dtype id.
fn decode(dtype: u8, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        0 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        1 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])))
            .collect(),
        3 => bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        4 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        5 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn item_size(dtype: u8) -> usize {
    match dtype {
        0 | 3 => 4,
        1 => 1,
        _ => 2,
    }
}

/// What a `model.bin` may declare, with the reason for each bound.
pub mod limits {
    /// Dimensions of one variable: CTranslate2's own tensors have at most 4.
    pub const MAX_RANK: u8 = 8;
    /// Variables, and aliases, in one file: Whisper large has about 1,300 variables; the
    /// names and shapes of a crafted count's entries would be read one by one.
    pub const MAX_VARIABLES: u32 = 1 << 16;
}

impl<'a> Ct2Model<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Ct2Error> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u32("version")?;
        if !(4..=6).contains(&version) {
            return Err(Ct2Error::Version(version));
        }
        let spec = r.string("spec name")?;
        r.u32("spec revision")?;
        let count = r.u32("variable count")?;
        r.at_most(count, limits::MAX_VARIABLES, "variables")?;
        let mut variables = HashMap::new();
        for _ in 0..count {
            let name = r.string("variable name")?;
            let rank = r.u8("rank")?;
            if rank > limits::MAX_RANK {
                return Err(Ct2Error::Malformed {
                    what: format!(
                        "'{name}' has rank {rank}, more than limits::MAX_RANK = {}",
                        limits::MAX_RANK
                    ),
                    offset: r.at - 1,
                });
            }
            let shape = (0..rank)
                .map(|_| r.u32("dimension").map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let at = r.at;
            let dtype = r.u8("dtype")?;
            let n = r.u32("byte count")? as usize;
            let elements = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(usize::MAX);
            if elements.checked_mul(item_size(dtype)) != Some(n) {
                return Err(Ct2Error::Malformed {
                    what: format!("'{name}': {n} bytes do not hold shape {shape:?}"),
                    offset: at,
                });
            }
            if dtype > 5 {
                return Err(Ct2Error::Malformed {
                    what: format!("'{name}': unknown dtype {dtype}"),
                    offset: at,
                });
            }
            let start = r.at;
            r.take(n, "variable data")?;
            variables.insert(
                name,
                Variable {
                    shape,
                    dtype,
                    bytes: start..start + n,
                },
            );
        }
        if version >= 3 {
            let aliases = r.u32("alias count")?;
            r.at_most(aliases, limits::MAX_VARIABLES, "aliases")?;
            for _ in 0..aliases {
                let alias = r.string("alias")?;
                let target = r.string("alias target")?;
                let v = variables.get(&target).cloned().ok_or_else(|| {
                    Ct2Error::Weight(WeightError {
                        file: FILE.into(),
                        problem: Problem::Missing(target.clone()),
                    })
                })?;
                variables.insert(alias, v);
            }
        }
        Ok(Ct2Model {
            spec,
            variables,
            file: bytes,
        })
    }

    /// The variables as a model asks for them, each checked.
    pub fn weights(&self) -> Weights<'_> {
        Weights::new(self, FILE)
    }

    /// A variable, checked against the shape the model needs.
    fn variable(&self, name: &str, shape: &[usize]) -> Result<&Variable, Ct2Error> {
        self.weights().check(name, shape, &[])?;
        Ok(&self.variables[name])
    }

    /// A variable's values in f32 (integers too), checked against the shape the model needs.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Ct2Error> {
        let v = self.variable(name, shape)?;
        Ok(decode(v.dtype, &self.file[v.bytes.clone()]).unwrap_or_default())
    }

    /// A variable's values as the file stores them, when that is f16.
    pub fn get_f16(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f16>>, Ct2Error> {
        let v = self.variable(name, shape)?;
        Ok((v.dtype == 4).then(|| {
            self.file[v.bytes.clone()]
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect()
        }))
    }

    /// A scalar variable (such as `encoder/num_heads`), of rank 0.
    pub fn scalar(&self, name: &str) -> Result<f32, Ct2Error> {
        Ok(self.get(name, &[])?.first().copied().unwrap_or_default())
    }
}

/// What errors call the file: CTranslate2 names it so in every model folder.
const FILE: &str = "model.bin";

impl TensorSource for Ct2Model<'_> {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let v = self.variables.get(name)?;
        let dtype = match v.dtype {
            0 => Dtype::F32,
            1 => Dtype::I8,
            2 => Dtype::I16,
            3 => Dtype::I32,
            4 => Dtype::F16,
            5 => Dtype::BF16,
            _ => Dtype::Other,
        };
        Some(TensorMeta {
            dtype,
            shape: v.shape.clone(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `model.bin` (binary version 6) holding f32 variables `(name, shape, values)` and
    /// `(alias, target)` aliases.
    pub(crate) fn model_bin(vars: &[(&str, &[u32], &[f32])], aliases: &[(&str, &str)]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u16 + 1).to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        }
        let mut out = 6u32.to_le_bytes().to_vec();
        string(&mut out, "WhisperSpec");
        out.extend(1u32.to_le_bytes());
        out.extend((vars.len() as u32).to_le_bytes());
        for (name, shape, values) in vars {
            string(&mut out, name);
            out.push(shape.len() as u8);
            shape.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.push(0);
            out.extend((values.len() as u32 * 4).to_le_bytes());
            values.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        out.extend((aliases.len() as u32).to_le_bytes());
        for (alias, target) in aliases {
            string(&mut out, alias);
            string(&mut out, target);
        }
        out
    }

    #[test]
    fn variables_and_aliases_read_back() {
        let bytes = model_bin(
            &[("w", &[2], &[1.5, -2.0]), ("n", &[], &[6.0])],
            &[("w2", "w")],
        );
        let m = Ct2Model::parse(&bytes).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.get("w", &[2]).unwrap(), [1.5, -2.0]);
        assert_eq!(m.get("w2", &[2]).unwrap(), [1.5, -2.0]);
        assert_eq!(m.scalar("n").unwrap(), 6.0);
        let err = m.get("w", &[3]).unwrap_err().to_string();
        assert_eq!(
            err,
            "model.bin: tensor 'w' has shape [2], the model needs [3]"
        );
    }

    /// Issue 15: every way a file can be cut short, lie about its sizes or point an alias
    /// nowhere is an error naming it, never a panic.
    #[test]
    fn malformed_files_are_errors() {
        let good = model_bin(&[("w", &[2], &[1.5, -2.0])], &[]);
        for end in 0..good.len() {
            assert!(Ct2Model::parse(&good[..end]).is_err(), "cut at {end}");
        }
        let mut version = good.clone();
        version[0] = 9;
        assert!(matches!(
            Ct2Model::parse(&version),
            Err(Ct2Error::Version(9))
        ));
        let lying = model_bin(&[("w", &[3], &[1.5, -2.0])], &[]);
        let err = Ct2Model::parse(&lying).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("do not hold"), "{err}");
        let huge = model_bin(&[("w", &[u32::MAX, u32::MAX, u32::MAX], &[1.0])], &[]);
        assert!(Ct2Model::parse(&huge).is_err());
        let deep = model_bin(&[("w", &[1; 9], &[1.0])], &[]);
        let err = Ct2Model::parse(&deep).unwrap_err().to_string();
        assert!(err.contains("rank 9") && err.contains("MAX_RANK"), "{err}");
        // The variable count sits after the version, the spec name and its revision.
        let mut many = model_bin(&[], &[]);
        let at = 4 + 2 + "WhisperSpec".len() + 1 + 4;
        many[at..at + 4].copy_from_slice(&(limits::MAX_VARIABLES + 1).to_le_bytes());
        let err = Ct2Model::parse(&many).unwrap_err().to_string();
        assert!(
            err.contains("65537 variables") && err.contains("MAX_VARIABLES"),
            "{err}"
        );
        let mut aliases = model_bin(&[], &[]);
        let end = aliases.len();
        aliases[end - 4..].copy_from_slice(&(limits::MAX_VARIABLES + 1).to_le_bytes());
        let err = Ct2Model::parse(&aliases).unwrap_err().to_string();
        assert!(err.contains("65537 aliases"), "{err}");
        let nowhere = model_bin(&[("w", &[2], &[1.5, -2.0])], &[("v", "gone")]);
        assert!(matches!(
            Ct2Model::parse(&nowhere),
            Err(Ct2Error::Weight(WeightError { problem: Problem::Missing(t), .. })) if t == "gone"
        ));
    }
}
