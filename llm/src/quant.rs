//! ggml tensor types and their block layouts, and dequantization to f32.
//!
//! A quantized row is a sequence of blocks of 32 values; each block stores f16 scale
//! (and offset, for Q4_1) followed by the packed integers:
//! - Q8_0: `d: f16, q: [i8; 32]`, value = d * q
//! - Q4_0: `d: f16, q: [u8; 16]`, value = d * (nibble - 8)
//! - Q4_1: `d: f16, m: f16, q: [u8; 16]`, value = d * nibble + m
//!
//! For the 4-bit types, byte j holds value j in its low nibble and value j + 16 in its high
//! nibble.

use half::{bf16, f16};

/// The ggml tensor types this project reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    /// The type for ggml's numeric id, or `None` for ids this reader does not handle.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + 16,
            GgmlType::Q4_1 => 2 + 2 + 16,
            GgmlType::Q8_0 => 2 + 32,
        }
    }

    /// Bytes taken by `n` values (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `kind`) into `out`, which must hold exactly the
/// number of values those blocks encode.
///
/// # Panics
/// If `bytes` and `out` disagree in length; callers size both from the same tensor info.
pub fn dequantize(kind: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let bs = kind.block_size();
    let bb = kind.block_bytes();
    assert_eq!(
        bytes.len() / bb * bs,
        out.len(),
        "dequantize: size mismatch"
    );
    assert_eq!(bytes.len() % bb, 0, "dequantize: partial block");
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bs));
    match kind {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, o) in blocks {
                o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for (o, &q) in o.iter_mut().zip(&b[2..34]) {
                    *o = d * f32::from(q as i8);
                }
            }
        }
        GgmlType::Q4_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                unpack_nibbles(&b[2..18], o, |q| d * (f32::from(q) - 8.0));
            }
        }
        GgmlType::Q4_1 => {
            for (b, o) in blocks {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                unpack_nibbles(&b[4..20], o, |q| d * f32::from(q) + m);
            }
        }
    }
}

/// Q4_1 blocks split the way its dot product is computed: `out` gets the scaled nibbles
/// `d * q` and `minimums` each block's `m`, so that `x · w = x · (d q) + Σ_blocks m · Σ x`.
/// Other kinds have no offset: `out` is [`dequantize`]'s and `minimums` is left alone.
///
/// # Panics
/// As [`dequantize`]; and for Q4_1 if `minimums` does not have one entry per block.
pub fn dequantize_split(kind: GgmlType, bytes: &[u8], out: &mut [f32], minimums: &mut [f32]) {
    if kind != GgmlType::Q4_1 {
        return dequantize(kind, bytes, out);
    }
    let bb = kind.block_bytes();
    assert_eq!(
        bytes.len() / bb * 32,
        out.len(),
        "dequantize: size mismatch"
    );
    assert_eq!(
        bytes.len() / bb,
        minimums.len(),
        "dequantize: one minimum per block"
    );
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(32));
    for ((b, o), m) in blocks.zip(minimums.iter_mut()) {
        let d = f16_at(b, 0);
        *m = f16_at(b, 2);
        unpack_nibbles(&b[4..20], o, |q| d * f32::from(q));
    }
}

fn unpack_nibbles(q: &[u8], out: &mut [f32], value: impl Fn(u8) -> f32) {
    let (lo, hi) = out.split_at_mut(16);
    for ((&byte, l), h) in q.iter().zip(lo).zip(hi) {
        *l = value(byte & 0x0f);
        *h = value(byte >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_layout() {
        // d = 0.5, m = -1.0; byte j = (j % 16) | (15 - j % 16) << 4
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q4_0_and_q8_0_blocks() {
        let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend([0x80u8; 16]); // low nibble 0 -> -8, high nibble 8 -> 0
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out);
        assert!(out[..16].iter().all(|&v| v == -16.0));
        assert!(out[16..].iter().all(|&v| v == 0.0));

        let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        dequantize(GgmlType::Q8_0, &b, &mut out);
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, 0.25 * (i as f32 - 16.0));
        }
    }
}
