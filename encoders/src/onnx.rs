//! Reader for the float tensors of an ONNX model: the initializers and the `Constant` nodes of
//! its graph and of every subgraph (an `If` node's branches hold Silero's weights).
//!
//! ONNX is a protobuf message; only the fields on the path to a tensor are decoded:
//!
//! ```text
//! ModelProto  7: graph
//! GraphProto  1: node*   5: initializer*
//! NodeProto   1: input*  2: output*  3: name  4: op_type  5: attribute*
//! Attribute   1: name  3: i  5: t (TensorProto)  6: g (GraphProto)  8: ints*  11: graphs*
//! TensorProto 1: dims*  2: data_type (1 = FLOAT)  4: float_data*  8: name  9: raw_data
//! ```
//!
//! Wire format: each field is a varint key `(number << 3) | type`, type 0 = varint,
//! 1 = 8 bytes, 2 = length-delimited, 5 = 4 bytes. Every length is checked against the buffer.

use std::borrow::Cow;

use crate::weights::{Dtype, TensorMeta, TensorSource, WeightError, Weights};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("ONNX file: {what} at byte {offset}")]
    Malformed { what: String, offset: usize },
    #[error(transparent)]
    Weight(#[from] WeightError),
}

/// One float tensor, with the path of the graph that holds it (`""` for the main graph,
/// `If_0/then_branch` for a branch of node `If_0`).
#[derive(Debug, Clone)]
pub struct OnnxTensor {
    pub graph: String,
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One node of a graph: its operator, the names of its inputs and outputs, and its integer
/// attributes (a convolution's `dilations`, `group`, `pads`, `strides`), which is what a
/// loader needs to find a tensor the exporter left unnamed (`onnx::Conv_8168`) by the node
/// that uses it, and to read a layer's hyper-parameters from the file.
#[derive(Debug, Clone, Default)]
pub struct OnnxNode {
    pub graph: String,
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub ints: Vec<(String, Vec<i64>)>,
}

impl OnnxNode {
    /// The integer attribute `name` (`i` or `ints`), if the node has it.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.ints
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The float tensors and the nodes of a model, each in file order.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    pub tensors: Vec<OnnxTensor>,
    pub nodes: Vec<OnnxNode>,
}

/// Every FLOAT tensor of a model, in file order. Tensors of other types are skipped.
pub fn float_tensors(bytes: &[u8]) -> Result<Vec<OnnxTensor>, OnnxError> {
    Ok(graph(bytes)?.tensors)
}

/// The float tensors and the nodes of a model and of its subgraphs.
pub fn graph(bytes: &[u8]) -> Result<OnnxGraph, OnnxError> {
    let mut out = OnnxGraph::default();
    for field in Fields::new(bytes, 0) {
        let (number, value) = field?;
        if let (7, Value::Bytes(graph, at)) = (number, value) {
            read_graph(graph, at, "", 0, &mut out)?;
        }
    }
    Ok(out)
}

/// The float tensors of one graph (`""` for the main graph) by name: a tensor named `name`,
/// or whose name ends in `__name` (ONNX exporters prefix inlined names, e.g.
/// `If_0_then_branch__Inline_0__`).
pub struct Scope<'a> {
    pub tensors: &'a [OnnxTensor],
    pub graph: &'a str,
}

impl<'a> Scope<'a> {
    pub fn lookup(&self, name: &str) -> Option<&'a OnnxTensor> {
        lookup(self.tensors, self.graph, name)
    }
}

fn lookup<'a>(tensors: &'a [OnnxTensor], graph: &str, name: &str) -> Option<&'a OnnxTensor> {
    let suffix = format!("__{name}");
    tensors
        .iter()
        .find(|t| t.graph == graph && (t.name == name || t.name.ends_with(&suffix)))
}

impl TensorSource for Scope<'_> {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.lookup(name).map(|t| TensorMeta {
            dtype: Dtype::F32,
            shape: t.shape.clone(),
        })
    }

    fn floats(&self, name: &str) -> Option<Cow<'_, [f32]>> {
        self.lookup(name).map(|t| Cow::Borrowed(t.data.as_slice()))
    }
}

/// The tensor of `graph` named `name` (as [`Scope`] finds it), checked against `shape`.
pub fn find<'a>(
    tensors: &'a [OnnxTensor],
    graph: &str,
    name: &str,
    shape: &[usize],
) -> Result<&'a OnnxTensor, OnnxError> {
    let scope = Scope { tensors, graph };
    let file = match graph {
        "" => "ONNX file".to_owned(),
        g => format!("ONNX file, graph '{g}'"),
    };
    Weights::new(&scope, &file).check(name, shape, &[Dtype::F32])?;
    Ok(lookup(tensors, graph, name).expect("checked"))
}

/// Deepest nesting of graphs in node attributes (`If` branches, `Loop` bodies): real models
/// nest two or three deep; a crafted file nesting thousands overflowed the stack.
pub const MAX_NESTING: usize = 16;

fn read_graph(
    bytes: &[u8],
    base: usize,
    path: &str,
    depth: usize,
    out: &mut OnnxGraph,
) -> Result<(), OnnxError> {
    if depth > MAX_NESTING {
        return Err(malformed(
            &format!("graphs nested more than {MAX_NESTING} deep"),
            base,
        ));
    }
    for field in Fields::new(bytes, base) {
        match field? {
            (1, Value::Bytes(node, at)) => read_node(node, at, path, depth, out)?,
            (5, Value::Bytes(tensor, at)) => {
                if let Some(t) = read_tensor(tensor, at, path, None)? {
                    out.tensors.push(t);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_node(
    bytes: &[u8],
    base: usize,
    path: &str,
    depth: usize,
    out: &mut OnnxGraph,
) -> Result<(), OnnxError> {
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut name = String::new();
    let mut op = String::new();
    let mut attributes = Vec::new();
    for field in Fields::new(bytes, base) {
        match field? {
            (1, Value::Bytes(s, at)) => inputs.push(text(s, at)?),
            (2, Value::Bytes(s, at)) => outputs.push(text(s, at)?),
            (3, Value::Bytes(s, at)) => name = text(s, at)?,
            (4, Value::Bytes(s, at)) => op = text(s, at)?,
            (5, Value::Bytes(a, at)) => attributes.push((a, at)),
            _ => {}
        }
    }
    let mut ints = Vec::new();
    for (attribute, at) in attributes {
        let mut attr_name = String::new();
        let mut tensor = None;
        let mut graphs = Vec::new();
        let mut values = Vec::new();
        for field in Fields::new(attribute, at) {
            match field? {
                (1, Value::Bytes(s, at)) => attr_name = text(s, at)?,
                // int64 attributes arrive as two's-complement varints.
                (3 | 8, Value::Varint(v)) => values.push(v as i64),
                (8, Value::Bytes(packed, at)) => {
                    for v in Fields::varints(packed, at) {
                        values.push(v? as i64);
                    }
                }
                (5, Value::Bytes(t, at)) => tensor = Some((t, at)),
                (6 | 11, Value::Bytes(g, at)) => graphs.push((g, at)),
                _ => {}
            }
        }
        if !values.is_empty() {
            ints.push((attr_name.clone(), values));
        }
        // A Constant's tensor is named by the node's output, not by the tensor itself.
        if let (Some((t, at)), "Constant", "value") = (tensor, op.as_str(), attr_name.as_str())
            && let Some(t) = read_tensor(t, at, path, outputs.first().cloned())?
        {
            out.tensors.push(t);
        }
        for (g, at) in graphs {
            let sub = if path.is_empty() {
                format!("{name}/{attr_name}")
            } else {
                format!("{path}/{name}/{attr_name}")
            };
            read_graph(g, at, &sub, depth + 1, out)?;
        }
    }
    out.nodes.push(OnnxNode {
        graph: path.to_string(),
        name,
        op,
        inputs,
        outputs,
        ints,
    });
    Ok(())
}

fn read_tensor(
    bytes: &[u8],
    base: usize,
    path: &str,
    name: Option<String>,
) -> Result<Option<OnnxTensor>, OnnxError> {
    let mut shape = Vec::new();
    let mut data_type = 0;
    let mut own_name = String::new();
    let mut data = Vec::new();
    let mut raw: Option<(&[u8], usize)> = None;
    for field in Fields::new(bytes, base) {
        match field? {
            (1, Value::Varint(d)) => shape.push(d as usize),
            (1, Value::Bytes(packed, at)) => {
                for v in Fields::varints(packed, at) {
                    shape.push(v? as usize);
                }
            }
            (2, Value::Varint(t)) => data_type = t,
            (4, Value::Fixed32(v)) => data.push(f32::from_bits(v)),
            (4, Value::Bytes(packed, _)) => data.extend(le_f32(packed)),
            (8, Value::Bytes(s, at)) => own_name = text(s, at)?,
            (9, Value::Bytes(r, at)) => raw = Some((r, at)),
            _ => {}
        }
    }
    const FLOAT: u64 = 1;
    if data_type != FLOAT {
        return Ok(None);
    }
    if let Some((r, at)) = raw {
        if r.len() % 4 != 0 {
            return Err(malformed("raw_data is not a whole number of floats", at));
        }
        data = le_f32(r).collect();
    }
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| malformed(&format!("tensor shape {shape:?} overflows"), base))?;
    if count != data.len() {
        return Err(malformed(
            &format!("tensor of shape {shape:?} holds {} values", data.len()),
            base,
        ));
    }
    Ok(Some(OnnxTensor {
        graph: path.to_string(),
        name: name.unwrap_or(own_name),
        shape,
        data,
    }))
}

fn le_f32(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn text(bytes: &[u8], at: usize) -> Result<String, OnnxError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a name is not UTF-8", at))
}

fn malformed(what: &str, offset: usize) -> OnnxError {
    OnnxError::Malformed {
        what: what.to_string(),
        offset,
    }
}

/// A field's value; `Bytes` carries its offset in the file for error messages.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8], usize),
    Fixed32(u32),
}

/// The fields of one protobuf message, in order.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    base: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Fields {
            bytes,
            at: 0,
            base,
            failed: false,
        }
    }

    /// A packed run of varints.
    fn varints(bytes: &'a [u8], base: usize) -> impl Iterator<Item = Result<u64, OnnxError>> + 'a {
        let mut f = Fields::new(bytes, base);
        std::iter::from_fn(move || (f.at < f.bytes.len()).then(|| f.varint()))
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(malformed("a varint runs past the end", self.base + self.at));
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("a varint is too long", self.base + self.at))
    }

    fn take(&mut self, n: usize) -> Result<(&'a [u8], usize), OnnxError> {
        let start = self.at;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| malformed("a field runs past the end", self.base + start))?;
        self.at = end;
        Ok((&self.bytes[start..end], self.base + start))
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), OnnxError> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                let (b, at) = self.take(n)?;
                Value::Bytes(b, at)
            }
            5 => {
                let (b, _) = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => {
                return Err(malformed(
                    &format!("wire type {t} is not supported"),
                    self.base + self.at,
                ));
            }
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), OnnxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-encoded model: graph { node { output "w" op_type "Constant"
    /// attribute { name "value" t { dims 2 data_type 1 raw_data [1.5, -2] } } } }
    fn tiny_model() -> Vec<u8> {
        fn field(number: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![(number << 3) | 2, body.len() as u8];
            v.extend_from_slice(body);
            v
        }
        let mut raw = 1.5f32.to_le_bytes().to_vec();
        raw.extend_from_slice(&(-2.0f32).to_le_bytes());
        let tensor = [vec![1 << 3, 2, 2 << 3, 1], field(9, &raw)].concat();
        let attribute = [field(1, b"value"), field(5, &tensor)].concat();
        let node = [field(2, b"w"), field(4, b"Constant"), field(5, &attribute)].concat();
        field(7, &field(1, &node))
    }

    #[test]
    fn reads_a_constant_node() {
        let tensors = float_tensors(&tiny_model()).unwrap();
        assert_eq!(tensors.len(), 1);
        assert_eq!(tensors[0].name, "w");
        assert_eq!(tensors[0].shape, vec![2]);
        assert_eq!(tensors[0].data, vec![1.5, -2.0]);
        assert!(find(&tensors, "", "w", &[2]).is_ok());
        let err = find(&tensors, "", "w", &[3]).unwrap_err().to_string();
        assert_eq!(
            err,
            "ONNX file: tensor 'w' has shape [2], the model needs [3]"
        );
    }

    /// Inputs, outputs and integer attributes (packed `ints`, a single `i`) of a node.
    #[test]
    fn reads_a_node_and_its_integer_attributes() {
        fn field(number: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![(number << 3) | 2, body.len() as u8];
            v.extend_from_slice(body);
            v
        }
        let dilations = [field(1, b"dilations"), field(8, &[2, 0x7f])].concat();
        let group = [field(1, b"group"), vec![3 << 3, 3]].concat();
        let node = [
            field(1, b"x"),
            field(1, b"w"),
            field(2, b"y"),
            field(4, b"Conv"),
            field(5, &dilations),
            field(5, &group),
        ]
        .concat();
        let graph = graph(&field(7, &field(1, &node))).unwrap();
        assert!(graph.tensors.is_empty());
        let conv = &graph.nodes[0];
        assert_eq!((conv.op.as_str(), conv.graph.as_str()), ("Conv", ""));
        assert_eq!(conv.inputs, ["x", "w"]);
        assert_eq!(conv.outputs, ["y"]);
        assert_eq!(conv.ints("dilations"), Some(&[2, 127][..]));
        assert_eq!(conv.ints("group"), Some(&[3][..]));
        assert_eq!(conv.ints("pads"), None);
    }

    /// A length-delimited field with a varint length.
    fn field_long(number: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![(number << 3) | 2];
        let mut n = body.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
        v.extend_from_slice(body);
        v
    }

    /// Issue 15: graphs nested in attributes recursed without limit (a stack overflow at a
    /// few thousand levels); shape products could wrap to the data's length.
    #[test]
    fn deep_nesting_and_overflowing_shapes_are_errors() {
        let mut graph = Vec::new();
        for _ in 0..5000 {
            let attribute = [field_long(1, b"g"), field_long(6, &graph)].concat();
            let node = [field_long(4, b"If"), field_long(5, &attribute)].concat();
            graph = field_long(1, &node);
        }
        let err = float_tensors(&field_long(7, &graph))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested more than 16 deep"), "{err}");

        // dims 2^32 x 2^32 (product 2^64 wraps to 0 = no data), FLOAT, no values.
        let mut dims = Vec::new();
        for _ in 0..2 {
            dims.extend([1 << 3, 0x80, 0x80, 0x80, 0x80, 0x10]);
        }
        let tensor = [dims, vec![2 << 3, 1]].concat();
        let model = field_long(7, &field_long(5, &tensor));
        let err = float_tensors(&model).unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn truncated_files_are_errors() {
        let model = tiny_model();
        for cut in 1..model.len() {
            assert!(
                float_tensors(&model[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
    }
}
