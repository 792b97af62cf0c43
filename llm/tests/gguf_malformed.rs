//! The GGUF reader on files built here: one valid, and one per kind of damage. Each damaged
//! file must be refused with an error naming what is wrong, never a panic.

use llm::gguf::{GgufError, GgufFile, Value};
use llm::quant::GgmlType;

/// Writes GGUF files field by field.
struct Builder {
    version: u32,
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, u64)>,
    data: Vec<u8>,
}

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            data: Vec::new(),
        }
    }

    fn kv(mut self, key: &str, kind: u32, value: Vec<u8>) -> Self {
        self.kvs.push((key.into(), kind, value));
        self
    }

    /// A tensor with the given GGUF dims, type id and data (placed at the next aligned offset).
    fn tensor(mut self, name: &str, dims: &[u64], kind: u32, bytes: &[u8]) -> Self {
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        self.tensors
            .push((name.into(), dims.to_vec(), kind, self.data.len() as u64));
        self.data.extend_from_slice(bytes);
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, kind, v) in &self.kvs {
            b.extend(string(k));
            b.extend(kind.to_le_bytes());
            b.extend(v);
        }
        for (name, dims, kind, offset) in &self.tensors {
            b.extend(string(name));
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(kind.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

fn q8_row(n_blocks: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..n_blocks {
        b.extend(half::f16::from_f32(0.5).to_le_bytes());
        b.extend((0..32u8).map(|i| i.wrapping_sub(16)));
    }
    b
}

/// A small valid file with every metadata type and two tensors.
fn valid() -> Builder {
    let mut array = 4u32.to_le_bytes().to_vec(); // element type u32
    array.extend(3u64.to_le_bytes());
    for v in [7u32, 8, 9] {
        array.extend(v.to_le_bytes());
    }
    Builder::new()
        .kv("u8", 0, vec![200])
        .kv("i8", 1, vec![0xff])
        .kv("u16", 2, 60000u16.to_le_bytes().to_vec())
        .kv("i16", 3, (-2i16).to_le_bytes().to_vec())
        .kv("u32", 4, 70000u32.to_le_bytes().to_vec())
        .kv("i32", 5, (-3i32).to_le_bytes().to_vec())
        .kv("f32", 6, 1.5f32.to_le_bytes().to_vec())
        .kv("bool", 7, vec![1])
        .kv("str", 8, string("héllo"))
        .kv("arr", 9, array)
        .kv("u64", 10, (1u64 << 40).to_le_bytes().to_vec())
        .kv("i64", 11, (-5i64).to_le_bytes().to_vec())
        .kv("f64", 12, 2.25f64.to_le_bytes().to_vec())
        .tensor("norm", &[4], 0, &[0u8; 16])
        .tensor("w", &[64, 2], 8, &q8_row(4))
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes)
}

#[test]
fn valid_file_reads_every_value_type_and_tensor() {
    let f = parse(valid().build()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-1)));
    assert_eq!(f.get("u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("i16"), Some(&Value::I16(-2)));
    assert_eq!(f.get("u32"), Some(&Value::U32(70000)));
    assert_eq!(f.get("i32"), Some(&Value::I32(-3)));
    assert_eq!(f.get("f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("str").and_then(Value::as_str), Some("héllo"));
    assert_eq!(
        f.get("arr"),
        Some(&Value::Array(vec![
            Value::U32(7),
            Value::U32(8),
            Value::U32(9)
        ]))
    );
    assert_eq!(f.get("u64"), Some(&Value::U64(1 << 40)));
    assert_eq!(f.get("i64"), Some(&Value::I64(-5)));
    assert_eq!(f.get("f64"), Some(&Value::F64(2.25)));
    let (info, bytes) = f.tensor_data("w").unwrap();
    assert_eq!(info.kind, GgmlType::Q8_0);
    assert_eq!(info.dims, vec![64, 2]);
    assert_eq!(bytes, &q8_row(4)[..]);
    assert!(matches!(
        f.tensor_data("nope"),
        Err(GgufError::MissingTensor(_))
    ));
}

#[test]
fn version_2_is_read_and_1_refused() {
    let mut b = valid();
    b.version = 2;
    assert_eq!(parse(b.build()).unwrap().version, 2);
    b.version = 1;
    assert!(matches!(
        parse(b.build()),
        Err(GgufError::UnsupportedVersion(1))
    ));
}

#[test]
fn bad_magic() {
    let mut bytes = valid().build();
    bytes[..4].copy_from_slice(b"GGML");
    let err = parse(bytes).unwrap_err();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
}

#[test]
fn every_truncation_of_the_header_is_an_error() {
    let bytes = valid().build();
    // Cut anywhere before the end of the data: always an error, never a panic.
    for len in 0..bytes.len() {
        let err = parse(bytes[..len].to_vec()).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. }
                    | GgufError::BadMagic { .. }
                    | GgufError::BadTensor { .. }
            ),
            "cut at {len}: {err}"
        );
    }
}

#[test]
fn string_length_past_the_end() {
    let mut s = (1u64 << 40).to_le_bytes().to_vec();
    s.extend(b"abc");
    let err = parse(Builder::new().kv("s", 8, s).build()).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                what: "metadata string",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn key_length_past_the_end() {
    let mut bytes = Builder::new().kv("k", 4, vec![0; 4]).build();
    // The key's length field follows the 24-byte fixed header.
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = parse(bytes).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                what: "metadata key",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn array_length_past_the_end() {
    let mut a = 0u32.to_le_bytes().to_vec();
    a.extend(u64::MAX.to_le_bytes());
    a.extend([1, 2, 3]);
    let err = parse(Builder::new().kv("a", 9, a).build()).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                what: "array elements",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend(0u64.to_le_bytes());
    for _ in 0..20 {
        let mut outer = 9u32.to_le_bytes().to_vec();
        outer.extend(1u64.to_le_bytes());
        // Inner arrays are written without their own type tag.
        outer.extend(v);
        v = outer;
    }
    let err = parse(Builder::new().kv("deep", 9, v).build()).unwrap_err();
    assert!(matches!(err, GgufError::TooDeep { .. }), "{err}");
}

#[test]
fn unknown_value_type() {
    let err = parse(Builder::new().kv("x", 13, vec![0; 8]).build()).unwrap_err();
    assert!(
        matches!(err, GgufError::UnknownValueType { kind: 13, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unknown metadata value type 13"));
}

#[test]
fn invalid_utf8_and_bool() {
    let mut s = 2u64.to_le_bytes().to_vec();
    s.extend([0xff, 0xfe]);
    let err = parse(Builder::new().kv("s", 8, s).build()).unwrap_err();
    assert!(matches!(err, GgufError::BadUtf8 { .. }), "{err}");
    let err = parse(Builder::new().kv("b", 7, vec![2]).build()).unwrap_err();
    assert!(err.to_string().contains("neither 0 nor 1"), "{err}");
}

#[test]
fn unknown_tensor_type() {
    let err = parse(Builder::new().tensor("t", &[32], 99, &[0; 64]).build()).unwrap_err();
    assert!(
        matches!(err, GgufError::UnknownTensorType { kind: 99, .. }),
        "{err}"
    );
}

#[test]
fn tensor_data_past_the_end() {
    // Declares 4 Q8_0 blocks (136 bytes) but carries one.
    let err = parse(Builder::new().tensor("w", &[128], 8, &q8_row(1)).build()).unwrap_err();
    assert!(
        matches!(&err, GgufError::BadTensor { name, reason } if name == "w" && reason.contains("past the end")),
        "{err}"
    );
}

#[test]
fn tensor_offset_overflow_and_misalignment() {
    let mut b = Builder::new().tensor("w", &[32], 8, &q8_row(1));
    b.tensors[0].3 = u64::MAX - 7;
    let err = parse(b.build()).unwrap_err();
    assert!(matches!(err, GgufError::BadTensor { .. }), "{err}");
    b.tensors[0].3 = 4;
    let err = parse(b.build()).unwrap_err();
    assert!(err.to_string().contains("not aligned"), "{err}");
}

#[test]
fn shape_product_overflow() {
    let err = parse(
        Builder::new()
            .tensor("big", &[1 << 32, 1 << 32, 1 << 32], 0, &[])
            .build(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, GgufError::BadTensor { reason, .. } if reason.contains("overflows")),
        "{err}"
    );
}

#[test]
fn bad_rank_and_partial_blocks() {
    let err = parse(
        Builder::new()
            .tensor("t", &[1, 1, 1, 1, 1], 0, &[0; 4])
            .build(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("rank 5"), "{err}");
    let err = parse(Builder::new().tensor("t", &[33], 8, &q8_row(2)).build()).unwrap_err();
    assert!(err.to_string().contains("not a multiple"), "{err}");
}

#[test]
fn duplicate_keys_and_tensors() {
    let err = parse(
        Builder::new()
            .kv("k", 0, vec![1])
            .kv("k", 0, vec![2])
            .build(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::Duplicate {
                what: "metadata key",
                ..
            }
        ),
        "{err}"
    );
    let err = parse(
        Builder::new()
            .tensor("t", &[1], 0, &[0; 4])
            .tensor("t", &[1], 0, &[0; 4])
            .build(),
    )
    .unwrap_err();
    assert!(
        matches!(err, GgufError::Duplicate { what: "tensor", .. }),
        "{err}"
    );
}

#[test]
fn bad_alignment_value() {
    let err = parse(
        Builder::new()
            .kv("general.alignment", 4, 3u32.to_le_bytes().to_vec())
            .build(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("general.alignment"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
}

/// Issue 15: `llama.context_length` up to 2^24 sized the rotary tables (gigabytes); the
/// model now takes at most `MAX_CONTEXT` positions of what the file declares.
#[test]
fn a_huge_declared_context_is_capped() {
    let u32kv = |v: u32| v.to_le_bytes().to_vec();
    let mut tokens = 8u32.to_le_bytes().to_vec(); // element type string
    tokens.extend(2u64.to_le_bytes());
    tokens.extend(string("a"));
    tokens.extend(string("b"));
    let file = |context: u32| {
        let bytes = Builder::new()
            .kv("general.architecture", 8, string("llama"))
            .kv("llama.embedding_length", 4, u32kv(64))
            .kv("llama.attention.head_count", 4, u32kv(4))
            .kv("llama.block_count", 4, u32kv(1))
            .kv("llama.feed_forward_length", 4, u32kv(128))
            .kv("llama.context_length", 4, u32kv(context))
            .kv("tokenizer.ggml.tokens", 9, tokens.clone())
            .build();
        parse(bytes).unwrap()
    };
    let config = llm::gguf_loader::llama_config(&file(1 << 24)).unwrap();
    assert_eq!(config.context_length, llm::gguf_loader::MAX_CONTEXT);
    let config = llm::gguf_loader::llama_config(&file(8192)).unwrap();
    assert_eq!(config.context_length, 8192);
}
