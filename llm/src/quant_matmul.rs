//! Matrix products straight from GGUF blocks, with activations quantized to 8 bits the way
//! llama.cpp does it (`quantize_row_q8_0` / `q8_1`, then integer dot products per block).
//!
//! Why not dequantize and multiply in f32: a decode step reads every weight once, so it is
//! bound by memory traffic, and 4-bit blocks are an eighth of f32. And the model's logits
//! depend measurably on quantizing the activations (about 0.6 on this model's top logits),
//! so computing like llama.cpp is also what makes our numbers match its.
//!
//! Per block of 32 with weight scale `dw` (and offset `mw` for Q4_1) and activation scale
//! `dx`, integers `qw`, `qx`, and `sx = dx Σ qx`:
//! - Q8_0 · Q8_0: `dw dx Σ qw qx`
//! - Q4_0 · Q8_0: `dw dx Σ (qw - 8) qx`
//! - Q4_1 · Q8_1: `dw dx Σ qw qx + mw sx`
//!
//! The integer sums are exact and the float accumulation is the same scalar loop, so the
//! AVX2 kernels (selected at run time) and the portable ones give the same results bit for
//! bit.

use half::f16;
use rayon::prelude::*;

use crate::gguf::SharedBytes;
use crate::quant::{GgmlType, dequantize};

const QK: usize = 32;

/// A `[rows, cols]` weight matrix kept in its GGUF blocks, one row after another.
#[derive(Clone)]
pub struct QuantMatrix {
    kind: GgmlType,
    rows: usize,
    cols: usize,
    blocks: SharedBytes,
    /// Byte offset of row 0 in `blocks` (a matrix may be a view into a shared buffer).
    start: usize,
}

/// Activations quantized to 8-bit blocks: per block a scale, the integers, and
/// `scale * Σ integers` (the Q8_1 term that Q4_1's offset needs).
#[derive(Debug, Default, Clone)]
pub struct Q8Activations {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    /// `Σ q` per block (Q4_0's `- 8` term).
    pub sum: Vec<i32>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuantMatrix({:?}, {}x{})",
            self.kind, self.rows, self.cols
        )
    }
}

impl QuantMatrix {
    /// `blocks[start..]` must hold `rows * cols` values of `kind`, row-major.
    pub fn new(
        kind: GgmlType,
        rows: usize,
        cols: usize,
        blocks: SharedBytes,
        start: usize,
    ) -> Self {
        let len = (*blocks).as_ref().len();
        assert!(
            len >= start + kind.bytes_for(rows * cols),
            "QuantMatrix: {rows}x{cols} {kind:?} does not fit in {} bytes",
            len - start.min(len)
        );
        assert_eq!(cols % kind.block_size(), 0, "QuantMatrix: partial block");
        QuantMatrix {
            kind,
            rows,
            cols,
            blocks,
            start,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    fn row_bytes(&self) -> usize {
        self.kind.bytes_for(self.cols)
    }

    fn bytes(&self) -> &[u8] {
        &(*self.blocks).as_ref()
            [self.start..self.start + self.kind.bytes_for(self.rows * self.cols)]
    }

    fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes()[r * rb..(r + 1) * rb]
    }

    /// The whole matrix in f32, row-major (for devices that multiply in f32).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize(self.kind, self.bytes(), &mut out);
        out
    }

    /// Rows `ids`, dequantized and concatenated (an embedding lookup).
    ///
    /// # Panics
    /// If an id is not below `rows`; callers check ids from outside first.
    pub fn dequantize_rows(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            dequantize(self.kind, self.row(id as usize), o);
        }
        out
    }

    /// `out[t][r] = Σ_c W[r][c] x[t][c]` for the `n` rows of `x` (`[n, cols]` row-major);
    /// `out` is `[n, rows]`. Rows of `W` are split across rayon's pool.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.cols, "matmul: input is not [n, cols]");
        assert_eq!(out.len(), n * self.rows, "matmul: output is not [n, rows]");
        let acts: Vec<Q8Activations> = x
            .chunks_exact(self.cols)
            .map(|r| quantize_q8(r, self.kind))
            .collect();
        let kernel = select_kernel(self.kind);
        // Each task takes a band of weight rows and runs every input row against it,
        // so a weight row is read from memory once per call, whatever `n` is.
        const BAND: usize = 16;
        if n == 1 {
            out.par_chunks_mut(BAND).enumerate().for_each(|(b, chunk)| {
                for (i, o) in chunk.iter_mut().enumerate() {
                    *o = kernel(self.row(b * BAND + i), &acts[0]);
                }
            });
            return;
        }
        let mut by_row = vec![0f32; self.rows * n];
        by_row
            .par_chunks_mut(BAND * n)
            .enumerate()
            .for_each(|(b, chunk)| {
                for (i, row_out) in chunk.chunks_exact_mut(n).enumerate() {
                    let w = self.row(b * BAND + i);
                    for (o, a) in row_out.iter_mut().zip(&acts) {
                        *o = kernel(w, a);
                    }
                }
            });
        for (r, row) in by_row.chunks_exact(n).enumerate() {
            for (t, &v) in row.iter().enumerate() {
                out[t * self.rows + r] = v;
            }
        }
    }
}

/// Quantizes one activation row to 8-bit blocks as llama.cpp does for `kind`'s dot product:
/// `d = max|x| / 127`, `q = round(x / d)`, `d` stored as f16 (and `s = d Σ q`, also f16,
/// for Q8_1). Non-quantized kinds keep the f32 row in `d`.
pub fn quantize_q8(x: &[f32], kind: GgmlType) -> Q8Activations {
    if kind.block_size() == 1 {
        return Q8Activations {
            d: x.to_vec(),
            ..Default::default()
        };
    }
    let nb = x.len() / QK;
    let mut a = Q8Activations {
        q: vec![0; x.len()],
        d: vec![0.0; nb],
        s: vec![0.0; nb],
        sum: vec![0; nb],
    };
    for (b, (xs, qs)) in x.chunks_exact(QK).zip(a.q.chunks_exact_mut(QK)).enumerate() {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        // As ggml's AVX2 path: scale by 127 / max, round half to even.
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v * id).round_ties_even() as i8;
            sum += i32::from(*q);
        }
        a.d[b] = f16::from_f32(d).to_f32();
        a.s[b] = f16::from_f32(d * sum as f32).to_f32();
        a.sum[b] = sum;
    }
    a
}

type Kernel = fn(&[u8], &Q8Activations) -> f32;

fn select_kernel(kind: GgmlType) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        return match kind {
            GgmlType::Q4_0 => avx2::dot_q4_0,
            GgmlType::Q4_1 => avx2::dot_q4_1,
            GgmlType::Q8_0 => avx2::dot_q8_0,
            _ => dot_float_kernel(kind),
        };
    }
    portable_kernel(kind)
}

/// The kernels without any instruction-set assumption.
pub fn portable_kernel(kind: GgmlType) -> Kernel {
    match kind {
        GgmlType::Q4_0 => portable::dot_q4_0,
        GgmlType::Q4_1 => portable::dot_q4_1,
        GgmlType::Q8_0 => portable::dot_q8_0,
        _ => dot_float_kernel(kind),
    }
}

fn dot_float_kernel(kind: GgmlType) -> Kernel {
    match kind {
        GgmlType::F32 => |w, a| dot_float(w, a, GgmlType::F32),
        GgmlType::F16 => |w, a| dot_float(w, a, GgmlType::F16),
        _ => |w, a| dot_float(w, a, GgmlType::BF16),
    }
}

/// Float weights: dequantize the row and take an f32 dot product with the raw activations.
fn dot_float(w: &[u8], a: &Q8Activations, kind: GgmlType) -> f32 {
    let mut row = vec![0f32; a.d.len()];
    dequantize(kind, w, &mut row);
    row.iter().zip(&a.d).map(|(w, x)| w * x).sum()
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The block dot products in plain Rust: the reference the SIMD kernels must equal.
mod portable {
    use super::{Q8Activations, f16_at};

    fn q4_sum(qw: &[u8], qx: &[i8]) -> i32 {
        let (lo, hi) = qx.split_at(16);
        let mut s = 0i32;
        for j in 0..16 {
            s +=
                i32::from(qw[j] & 15) * i32::from(lo[j]) + i32::from(qw[j] >> 4) * i32::from(hi[j]);
        }
        s
    }

    pub fn dot_q4_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(18).enumerate() {
            // Σ (qw - 8) qx = Σ qw qx - 8 Σ qx
            let s = q4_sum(&blk[2..18], &a.q[b * 32..b * 32 + 32]) - 8 * a.sum[b];
            acc += s as f32 * (f16_at(blk, 0) * a.d[b]);
        }
        acc
    }

    pub fn dot_q4_1(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(20).enumerate() {
            let s = q4_sum(&blk[4..20], &a.q[b * 32..b * 32 + 32]);
            acc += s as f32 * (f16_at(blk, 0) * a.d[b]) + f16_at(blk, 2) * a.s[b];
        }
        acc
    }

    pub fn dot_q8_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(34).enumerate() {
            let qx = &a.q[b * 32..b * 32 + 32];
            let s: i32 = blk[2..34]
                .iter()
                .zip(qx)
                .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
                .sum();
            acc += s as f32 * (f16_at(blk, 0) * a.d[b]);
        }
        acc
    }
}

/// AVX2 kernels: the 32 integer products of a block in a few instructions
/// (`maddubs` multiplies unsigned by signed bytes and adds pairs), then the same scalar
/// float accumulation as the portable kernels, so results are identical.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Q8Activations;
    use std::arch::x86_64::*;

    /// The f16 at `b[i..i + 2]`, converted by the F16C instruction (the `half` crate's
    /// portable conversion was 15% of a decode step).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn f16_at(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// Σ of the 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// Σ nibble_j · qx_j for 16 packed bytes (low nibbles are values 0..16, high 16..32).
    ///
    /// # Safety
    /// `qw` must point to 16 readable bytes and `qx` to 32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn q4_sum(qw: *const u8, qx: *const i8) -> i32 {
        // SAFETY: the caller guarantees both loads are in bounds.
        let (packed, x) = unsafe {
            (
                _mm_loadu_si128(qw as *const __m128i),
                _mm256_loadu_si256(qx as *const __m256i),
            )
        };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(packed, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        let w = _mm256_set_m128i(hi, lo);
        let pairs = _mm256_maddubs_epi16(w, x);
        hsum(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(18).enumerate() {
            let qx = &a.q[b * 32..b * 32 + 32];
            // SAFETY: a block holds 16 packed bytes after its scale; qx is 32 bytes.
            let s = unsafe { q4_sum(blk[2..].as_ptr(), qx.as_ptr()) } - 8 * a.sum[b];
            acc += s as f32 * (f16_at(blk, 0) * a.d[b]);
        }
        acc
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4_1(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(20).enumerate() {
            let qx = &a.q[b * 32..b * 32 + 32];
            // SAFETY: a block holds 16 packed bytes after its scale and offset; qx is 32 bytes.
            let s = unsafe { q4_sum(blk[4..].as_ptr(), qx.as_ptr()) };
            acc += s as f32 * (f16_at(blk, 0) * a.d[b]) + f16_at(blk, 2) * a.s[b];
        }
        acc
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q8_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(34).enumerate() {
            let x = &a.q[b * 32..b * 32 + 32];
            // SAFETY: a block holds 32 bytes after its scale; x is 32 bytes.
            let (qw, qx) = unsafe {
                (
                    _mm256_loadu_si256(blk[2..].as_ptr() as *const __m256i),
                    _mm256_loadu_si256(x.as_ptr() as *const __m256i),
                )
            };
            // maddubs needs an unsigned operand: |w| times x carrying w's sign.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
            let s = hsum(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
            acc += s as f32 * (f16_at(blk, 0) * a.d[b]);
        }
        acc
    }

    // SAFETY (all three): only handed out by `select_kernel` after detecting AVX2, FMA and
    // F16C.
    pub fn dot_q4_0(w: &[u8], a: &Q8Activations) -> f32 {
        unsafe { q4_0(w, a) }
    }
    pub fn dot_q4_1(w: &[u8], a: &Q8Activations) -> f32 {
        unsafe { q4_1(w, a) }
    }
    pub fn dot_q8_0(w: &[u8], a: &Q8Activations) -> f32 {
        unsafe { q8_0(w, a) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test data.
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Random blocks of `kind` for a `[rows, cols]` matrix.
    fn random_blocks(kind: GgmlType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let nblocks = rows * cols / 32;
        let mut out = Vec::new();
        for _ in 0..nblocks {
            out.extend(f16::from_f32(0.01 + lcg(seed).abs() * 0.05).to_le_bytes());
            if kind == GgmlType::Q4_1 {
                out.extend(f16::from_f32(lcg(seed) * 0.1).to_le_bytes());
            }
            let n = if kind == GgmlType::Q8_0 { 32 } else { 16 };
            out.extend((0..n).map(|_| (lcg(seed) * 127.0) as i8 as u8));
        }
        out
    }

    /// Every kernel against dequantize-then-f32 on random data, for odd sizes too. The
    /// difference comes only from rounding the activations to 8 bits: bounded by
    /// `Σ |w| * d/2` per output, i.e. by `|w|₁ * max|x| / 254`.
    #[test]
    fn kernels_match_f32_within_activation_rounding() {
        let mut seed = 42;
        for kind in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for (rows, cols, n) in [(1, 32, 1), (7, 96, 1), (33, 160, 3), (17, 576, 5)] {
                let blocks: SharedBytes =
                    std::sync::Arc::new(random_blocks(kind, rows, cols, &mut seed));
                let m = QuantMatrix::new(kind, rows, cols, blocks, 0);
                let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut got = vec![0f32; n * rows];
                m.matmul(&x, n, &mut got);
                let w = m.dequantize();
                for t in 0..n {
                    let xr = &x[t * cols..(t + 1) * cols];
                    let xmax = xr.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for r in 0..rows {
                        let wr = &w[r * cols..(r + 1) * cols];
                        let want: f32 = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
                        let l1: f32 = wr.iter().map(|v| v.abs()).sum();
                        let bound = l1 * xmax / 254.0 * 1.01 + 1e-3;
                        let diff = (got[t * rows + r] - want).abs();
                        assert!(
                            diff <= bound,
                            "{kind:?} {rows}x{cols} n={n} t={t} r={r}: {diff} > {bound}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn portable_and_selected_kernels_agree_exactly() {
        let mut seed = 7;
        for kind in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let cols = 320;
            let w = random_blocks(kind, 1, cols, &mut seed);
            let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
            let a = quantize_q8(&x, kind);
            assert_eq!(
                portable_kernel(kind)(&w, &a),
                select_kernel(kind)(&w, &a),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn activation_quantization_is_llama_cpp_rounding() {
        let mut x = vec![0f32; 32];
        x[0] = 1.27;
        x[1] = -0.641;
        x[2] = 0.004;
        let a = quantize_q8(&x, GgmlType::Q4_1);
        assert_eq!(&a.q[..4], &[127, -64, 0, 0]);
        assert_eq!(a.d[0], f16::from_f32(0.01).to_f32());
        assert_eq!(a.s[0], f16::from_f32(0.01 * 63.0).to_f32());
        let zero = quantize_q8(&[0.0; 32], GgmlType::Q8_0);
        assert!(zero.q.iter().all(|&q| q == 0) && zero.d[0] == 0.0);
    }
}
