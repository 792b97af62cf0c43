//! Q4_1 weights repacked at load for the CPU kernels: sixteen rows interleaved block by
//! block, one 32-bit lane per row.
//!
//! Why: in GGUF's layout a row's blocks follow one another, so a kernel takes one weight
//! row at a time and pays, for every block of 32 weights, a scale conversion, a scalar
//! multiply, a broadcast and a float multiply-add for that one row (about twelve
//! instructions per 20 bytes of weights, which kept decode and prompts compute-bound).
//! With sixteen rows side by side, a block's integer dot products for eight rows (one
//! 256-bit register) come from eight `vpdpbusd` (or `maddubs` + `madd`) against
//! activation bytes broadcast to every lane, and the eight rows' scales are converted,
//! multiplied and added as one vector each; with four activation rows per call (prompts)
//! the weights are unpacked once for the four. The layout is the file's bytes rearranged,
//! the same size, so the repacked copy replaces the mapped one (the loader lets the file's
//! pages go: `GgufFile::release`).
//!
//! Layout, per group of 16 rows and per block `b` of 32 columns, 320 bytes:
//! - `d[16]`, f16: the rows' scales; `m[16]`, f16: their minimums;
//! - four chunks `c` of 16 lanes x 4 bytes: lane `r` holds row `r`'s quant bytes
//!   `4c..4c + 4`, whose low nibbles are positions `4c..4c + 4` and whose high nibbles are
//!   positions `16 + 4c..16 + 4c + 4` (Q4_1 keeps position `j` in byte `j`'s low nibble
//!   and `j + 16` in its high one). Packing moves whole bytes; no nibble is shuffled.
//!
//! Groups follow one another, blocks within a group too, so a thread's share of rows is
//! one stream of memory.
//!
//! Arithmetic per weight row and activation row, the same in every kernel so that they
//! agree bit for bit: per block the exact integer sum `Σ q_w q_x`, then
//! `acc = fma(sum, d_w d_x, acc)` and `off = fma(m_w, s_x, off)`; the result `acc + off`.
//! (GGUF's kernels keep eight partial sums per block instead: the results differ in the
//! last bits, within what the logits tests against llama.cpp allow.)

use std::sync::OnceLock;

use half::f16;

use crate::quant::GgmlType;
use crate::quant_matmul::Q8Activations;

/// Rows interleaved together.
pub const GROUP: usize = 16;

/// What differs between the two kinds that are interleaved.
#[derive(Clone, Copy)]
struct Format {
    /// Bytes of one GGUF block.
    block: usize,
    /// Q4_1's minimums `m[16]` after the scales.
    minimum: bool,
    /// Chunks of 16 lanes x 4 bytes: 4 of nibbles, or 8 of bytes.
    chunks: usize,
    /// Where a block's quant bytes start in GGUF's layout.
    quants: usize,
    /// XORed into every quant byte: Q8_0's signed bytes become unsigned (`w + 128`), what
    /// `vpdpbusd` multiplies; the kernels take `128 Σ x` back off.
    flip: u8,
}

impl Format {
    fn of(kind: GgmlType) -> Option<Format> {
        match kind {
            GgmlType::Q4_1 => Some(Format {
                block: 20,
                minimum: true,
                chunks: 4,
                quants: 4,
                flip: 0,
            }),
            GgmlType::Q8_0 => Some(Format {
                block: 34,
                minimum: false,
                chunks: 8,
                quants: 2,
                flip: 0x80,
            }),
            _ => None,
        }
    }

    /// Where the chunks start in a group's block (after `d[16]` and, for Q4_1, `m[16]`).
    fn header(self) -> usize {
        if self.minimum { 4 * GROUP } else { 2 * GROUP }
    }

    fn group_block(self) -> usize {
        GROUP * self.block
    }

    /// The offsets in the packed layout of row `r`'s block `b`: its scale, its minimum
    /// (Q4_1) and chunk `c`'s 4 bytes.
    fn places(
        self,
        r: usize,
        b: usize,
        blocks: usize,
    ) -> (usize, usize, impl Iterator<Item = usize>) {
        let base = ((r / GROUP) * blocks + b) * self.group_block();
        let lane = r % GROUP;
        let chunks = (0..self.chunks).map(move |c| base + self.header() + c * 4 * GROUP + 4 * lane);
        (base + 2 * lane, base + 2 * GROUP + 2 * lane, chunks)
    }
}

/// Whether a `[rows, cols]` matrix of `kind` can be interleaved: Q4_1 or Q8_0, rows a
/// multiple of 16.
pub fn fits(kind: GgmlType, rows: usize, cols: usize) -> bool {
    Format::of(kind).is_some() && rows > 0 && rows.is_multiple_of(GROUP) && cols.is_multiple_of(32)
}

/// Repacks `rows` rows of `blocks` blocks each from GGUF's row-major layout.
///
/// # Panics
/// If `kind` does not [`fits`].
pub fn pack(kind: GgmlType, src: &[u8], rows: usize, blocks: usize) -> Vec<u8> {
    let f = Format::of(kind).expect("packed::pack: a kind without an interleaved layout");
    let mut out = vec![0u8; rows * blocks * f.block];
    for r in 0..rows {
        for b in 0..blocks {
            let blk = &src[(r * blocks + b) * f.block..][..f.block];
            let (d, m, chunks) = f.places(r, b, blocks);
            out[d..d + 2].copy_from_slice(&blk[0..2]);
            if f.minimum {
                out[m..m + 2].copy_from_slice(&blk[2..4]);
            }
            for (c, at) in chunks.enumerate() {
                for k in 0..4 {
                    out[at + k] = blk[f.quants + 4 * c + k] ^ f.flip;
                }
            }
        }
    }
    out
}

/// Row `r` back in GGUF's layout: its `blocks` blocks.
pub fn row(kind: GgmlType, packed: &[u8], r: usize, blocks: usize) -> Vec<u8> {
    let f = Format::of(kind).expect("packed::row: a kind without an interleaved layout");
    let mut out = vec![0u8; blocks * f.block];
    for (b, blk) in out.chunks_exact_mut(f.block).enumerate() {
        let (d, m, chunks) = f.places(r, b, blocks);
        blk[0..2].copy_from_slice(&packed[d..d + 2]);
        if f.minimum {
            blk[2..4].copy_from_slice(&packed[m..m + 2]);
        }
        for (c, at) in chunks.enumerate() {
            for k in 0..4 {
                blk[f.quants + 4 * c + k] = packed[at + k] ^ f.flip;
            }
        }
    }
    out
}

/// The whole matrix back in GGUF's layout.
pub fn unpack(kind: GgmlType, packed: &[u8], rows: usize, blocks: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|r| row(kind, packed, r, blocks))
        .collect()
}

/// One group's products with one activation row: `out[r]` for the group's 16 rows.
pub type Kernel1 = fn(&[u8], &Q8Activations) -> [f32; GROUP];
/// One group's products with four activation rows: `out[t][r]`.
pub type Kernel4 = fn(&[u8], [&Q8Activations; 4]) -> [[f32; GROUP]; 4];

/// One activation row and four, for one kind.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub x1: Kernel1,
    pub x4: Kernel4,
}

/// The kernels for `kind` on this CPU, chosen once: AVX-512 VNNI, AVX-VNNI, AVX2,
/// portable. `PERCEPT_NO_AVX512=1` skips the first, `PERCEPT_NO_VNNI=1` both VNNI paths
/// (to compare).
///
/// # Panics
/// If `kind` does not [`fits`].
pub fn kernels(kind: GgmlType) -> Kernels {
    let both = chosen().1;
    match kind {
        GgmlType::Q4_1 => both[0],
        GgmlType::Q8_0 => both[1],
        _ => panic!("packed::kernels: a kind without an interleaved layout"),
    }
}

/// The instruction set of the kernels [`kernels`] gives on this CPU: `avx512-vnni`,
/// `avx-vnni`, `avx2` or `portable` (for benchmarks' reports).
pub fn path() -> &'static str {
    chosen().0
}

fn chosen() -> (&'static str, [Kernels; 2]) {
    static CHOSEN: OnceLock<(&'static str, [Kernels; 2])> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if avx512_detected() && std::env::var_os("PERCEPT_NO_AVX512").is_none() {
                return ("avx512-vnni", avx512::KERNELS);
            }
            if crate::quant_matmul::vnni_detected() {
                return ("avx-vnni", vnni::KERNELS);
            }
            if crate::quant_matmul::avx2_detected() {
                return ("avx2", avx2::KERNELS);
            }
        }
        ("portable", portable::KERNELS)
    })
}

/// AVX-512 with VNNI and BW (and what the 256-bit kernels need), unless
/// `PERCEPT_NO_VNNI` is set.
#[cfg(target_arch = "x86_64")]
fn avx512_detected() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && crate::quant_matmul::avx2_detected()
        && std::env::var_os("PERCEPT_NO_VNNI").is_none()
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The kernels in plain Rust: the definition the SIMD ones must equal.
pub mod portable {
    use super::*;

    /// `Q4`: Q4_1 blocks, else Q8_0.
    fn kernel<const Q4: bool, const N: usize>(
        w: &[u8],
        acts: [&Q8Activations; N],
    ) -> [[f32; GROUP]; N] {
        let f = Format::of(if Q4 { GgmlType::Q4_1 } else { GgmlType::Q8_0 }).expect("a format");
        let mut acc = [[0f32; GROUP]; N];
        let mut off = [[0f32; GROUP]; N];
        for (b, blk) in w.chunks_exact(f.group_block()).enumerate() {
            for r in 0..GROUP {
                let dw = f16_at(blk, 2 * r);
                let chunk = |c: usize, k: usize| blk[f.header() + c * 4 * GROUP + 4 * r + k];
                for (t, a) in acts.iter().enumerate() {
                    let qx = |p: usize| i32::from(a.q[b * 32 + p]);
                    let mut sum = 0i32;
                    for c in 0..f.chunks {
                        for k in 0..4 {
                            let byte = chunk(c, k);
                            sum += if Q4 {
                                i32::from(byte & 15) * qx(4 * c + k)
                                    + i32::from(byte >> 4) * qx(16 + 4 * c + k)
                            } else {
                                (i32::from(byte) - 128) * qx(4 * c + k)
                            };
                        }
                    }
                    acc[t][r] = (sum as f32).mul_add(dw * a.d[b], acc[t][r]);
                    if Q4 {
                        let mw = f16_at(blk, 2 * GROUP + 2 * r);
                        off[t][r] = mw.mul_add(a.s[b], off[t][r]);
                    }
                }
            }
        }
        std::array::from_fn(|t| std::array::from_fn(|r| acc[t][r] + off[t][r]))
    }

    pub const KERNELS: [Kernels; 2] = [
        Kernels {
            x1: |w, a| kernel::<true, 1>(w, [a])[0],
            x4: kernel::<true, 4>,
        },
        Kernels {
            x1: |w, a| kernel::<false, 1>(w, [a])[0],
            x4: kernel::<false, 4>,
        },
    ];
}

/// The vector operations the x86 kernels are written in, once per register width: a
/// register of `LANES` rows (8 in 256 bits, 16 in 512), each a 32-bit lane.
#[cfg(target_arch = "x86_64")]
macro_rules! vector_ops {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $int:ty, $float:ty,
     load: $load:ident, and: $and:ident, shift: $shift:ident, bytes: $bytes:ident,
     words: $words:ident, zero: $zero:ident, zero_f: $zero_f:ident, cvt: $cvt:ident,
     half: $half:ty, load_half: $load_half:ident, cvtph: $cvtph:ident, mul: $mul:ident,
     splat: $splat:ident, fma: $fma:ident, add: $add:ident, store: $store:ident,
     sub: $sub:ident) => {
        $(#[$doc])*
        mod $name {
            use std::arch::x86_64::*;

            pub const LANES: usize = $lanes;
            pub type I = $int;
            pub type F = $float;

            /// # Safety
            /// `p` must point to `4 * LANES` readable bytes.
            #[inline]
            #[target_feature(enable = $features)]
            pub unsafe fn load(p: *const u8) -> I {
                // SAFETY: as the caller guarantees.
                unsafe { $load(p as *const _) }
            }
            /// Low and high nibbles of every byte.
            #[inline]
            #[target_feature(enable = $features)]
            pub fn nibbles(v: I) -> (I, I) {
                let mask = $bytes(0x0f);
                ($and(v, mask), $and($shift::<4>(v), mask))
            }
            /// Four bytes as a lane, in every lane.
            ///
            /// # Safety
            /// `p` must point to 4 readable bytes.
            #[inline]
            #[target_feature(enable = $features)]
            pub unsafe fn broadcast(p: *const i8) -> I {
                // SAFETY: as the caller guarantees.
                $words(unsafe { (p as *const i32).read_unaligned() })
            }
            #[inline]
            #[target_feature(enable = $features)]
            pub fn zero() -> I {
                $zero()
            }
            #[inline]
            #[target_feature(enable = $features)]
            pub fn zero_f() -> F {
                $zero_f()
            }
            /// `LANES` f16 values as f32.
            ///
            /// # Safety
            /// `p` must point to `2 * LANES` readable bytes.
            #[inline]
            #[target_feature(enable = $features)]
            pub unsafe fn f16s(p: *const u8) -> F {
                // SAFETY: as the caller guarantees.
                $cvtph(unsafe { $load_half(p as *const $half) })
            }
            /// `acc + Σ · (d · x)`: the block's sums converted, scaled per lane by `d` and
            /// the activation's scale `x`.
            #[inline]
            #[target_feature(enable = $features)]
            pub fn scale_add(acc: F, sums: I, d: F, x: f32) -> F {
                $fma($cvt(sums), $mul(d, $splat(x)), acc)
            }
            /// `v - k` in every lane.
            #[inline]
            #[target_feature(enable = $features)]
            pub fn minus(v: I, k: i32) -> I {
                $sub(v, $words(k))
            }
            /// `acc + m · s`.
            #[inline]
            #[target_feature(enable = $features)]
            pub fn offset_add(acc: F, m: F, s: f32) -> F {
                $fma(m, $splat(s), acc)
            }
            /// `a + b` stored to `LANES` floats.
            ///
            /// # Safety
            /// `p` must point to `LANES` writable floats.
            #[inline]
            #[target_feature(enable = $features)]
            pub unsafe fn store_sum(p: *mut f32, a: F, b: F) {
                // SAFETY: as the caller guarantees.
                unsafe { $store(p, $add(a, b)) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
vector_ops!(
    /// 256-bit registers (AVX2, FMA, F16C).
    v256, "avx2,fma,f16c", 8, __m256i, __m256,
    load: _mm256_loadu_si256, and: _mm256_and_si256, shift: _mm256_srli_epi16,
    bytes: _mm256_set1_epi8, words: _mm256_set1_epi32, zero: _mm256_setzero_si256,
    zero_f: _mm256_setzero_ps, cvt: _mm256_cvtepi32_ps, half: __m128i,
    load_half: _mm_loadu_si128, cvtph: _mm256_cvtph_ps, mul: _mm256_mul_ps,
    splat: _mm256_set1_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps, store: _mm256_storeu_ps,
    sub: _mm256_sub_epi32
);

#[cfg(target_arch = "x86_64")]
vector_ops!(
    /// 512-bit registers (AVX-512 F and BW).
    v512, "avx512f,avx512bw", 16, __m512i, __m512,
    load: _mm512_loadu_si512, and: _mm512_and_si512, shift: _mm512_srli_epi16,
    bytes: _mm512_set1_epi8, words: _mm512_set1_epi32, zero: _mm512_setzero_si512,
    zero_f: _mm512_setzero_ps, cvt: _mm512_cvtepi32_ps, half: __m256i,
    load_half: _mm256_loadu_si256, cvtph: _mm512_cvtph_ps, mul: _mm512_mul_ps,
    splat: _mm512_set1_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps, store: _mm512_storeu_ps,
    sub: _mm512_sub_epi32
);

/// The x86 kernels, written once over a register width ([`v256`], [`v512`]) and a way of
/// adding byte products into 32-bit lanes: [`avx2`], [`vnni`] (AVX-VNNI) and [`avx512`]
/// (AVX-512 VNNI). A group of 16 rows is `16 / LANES` passes over its blocks, a second
/// pass reading from L1 what the first brought in.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_packed {
    ($(#[$doc:meta])* $name:ident, $v:ident, $features:literal,
     |$acc:ident, $w:ident, $x:ident| $dot:expr,
     q8: |$acc8:ident, $w8:ident, $x8:ident| $dot8:expr, bias: $bias:literal) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;
            use super::$v as v;
            use std::arch::x86_64::*;

            /// As `quant_matmul`'s kernels: weights are asked for this far ahead (bytes).
            const PREFETCH: usize = 2048;

            /// `acc` plus, per 32-bit lane, the four products of `w`'s unsigned bytes with
            /// `x`'s signed ones.
            #[inline]
            #[target_feature(enable = $features)]
            fn dot($acc: v::I, $w: v::I, $x: v::I) -> v::I {
                $dot
            }

            /// `acc` plus, per lane, the four products of Q8_0's stored bytes (`w + 128`)
            /// with `x`'s, less `BIAS` times the sum of `x`'s four bytes.
            #[inline]
            #[target_feature(enable = $features)]
            fn dot8($acc8: v::I, $w8: v::I, $x8: v::I) -> v::I {
                $dot8
            }

            const BIAS: i32 = $bias;

            /// `Q4`: Q4_1 blocks, else Q8_0.
            #[target_feature(enable = $features)]
            fn kernel<const Q4: bool, const N: usize>(
                w: &[u8],
                acts: [&Q8Activations; N],
            ) -> [[f32; GROUP]; N] {
                let kind = if Q4 { GgmlType::Q4_1 } else { GgmlType::Q8_0 };
                let f = Format::of(kind).expect("a format");
                let (group_block, header) = (f.group_block(), f.header());
                let blocks = w.len() / group_block;
                for a in acts {
                    assert!(
                        a.q.len() >= blocks * 32
                            && a.d.len() >= blocks
                            && a.s.len() >= blocks
                            && a.qsum.len() >= blocks,
                        "activations shorter than the weight rows"
                    );
                }
                let mut out = [[0f32; GROUP]; N];
                for pass in 0..GROUP / v::LANES {
                    let mut acc = [v::zero_f(); N];
                    let mut off = [v::zero_f(); N];
                    for b in 0..blocks {
                        let blk = w[b * group_block..][..group_block].as_ptr();
                        if pass == 0 {
                            for line in (0..group_block).step_by(64) {
                                let ahead = blk.wrapping_add(PREFETCH + line) as *const i8;
                                _mm_prefetch::<_MM_HINT_T0>(ahead);
                            }
                        }
                        let mut sum = [v::zero(); N];
                        for c in 0..f.chunks {
                            // SAFETY: this pass's lanes of chunk c lie inside the block.
                            let chunk = unsafe {
                                v::load(blk.add(header + c * 4 * GROUP + 4 * v::LANES * pass))
                            };
                            if Q4 {
                                let (lo, hi) = v::nibbles(chunk);
                                for t in 0..N {
                                    // SAFETY: block b's 32 bytes exist (asserted above).
                                    let (xl, xh) = unsafe {
                                        let q = acts[t].q.as_ptr().add(b * 32);
                                        (v::broadcast(q.add(4 * c)), v::broadcast(q.add(16 + 4 * c)))
                                    };
                                    sum[t] = dot(dot(sum[t], lo, xl), hi, xh);
                                }
                            } else {
                                for t in 0..N {
                                    // SAFETY: as above.
                                    let x = unsafe {
                                        v::broadcast(acts[t].q.as_ptr().add(b * 32 + 4 * c))
                                    };
                                    sum[t] = dot8(sum[t], chunk, x);
                                }
                            }
                        }
                        // SAFETY: d[16] (and m[16]) are the block's first bytes.
                        let dw = unsafe { v::f16s(blk.add(2 * v::LANES * pass)) };
                        for t in 0..N {
                            let (d, s) = (acts[t].d[b], acts[t].s[b]);
                            if Q4 {
                                acc[t] = v::scale_add(acc[t], sum[t], dw, d);
                                // SAFETY: as above.
                                let mw = unsafe { v::f16s(blk.add(2 * GROUP + 2 * v::LANES * pass)) };
                                off[t] = v::offset_add(off[t], mw, s);
                            } else {
                                // The weights were stored as w + 128: what `dot8` left of
                                // 128 Σ x comes off.
                                let exact = v::minus(sum[t], BIAS * acts[t].qsum[b]);
                                acc[t] = v::scale_add(acc[t], exact, dw, d);
                            }
                        }
                    }
                    for t in 0..N {
                        // SAFETY: out[t] holds 16 floats; this pass writes LANES of them.
                        unsafe { v::store_sum(out[t].as_mut_ptr().add(v::LANES * pass), acc[t], off[t]) };
                    }
                }
                out
            }

            // SAFETY (all): only handed out by `kernels` after detecting the features.
            pub const KERNELS: [Kernels; 2] = [
                Kernels {
                    x1: |w, a| unsafe { kernel::<true, 1>(w, [a]) }[0],
                    x4: |w, acts| unsafe { kernel::<true, 4>(w, acts) },
                },
                Kernels {
                    x1: |w, a| unsafe { kernel::<false, 1>(w, [a]) }[0],
                    x4: |w, acts| unsafe { kernel::<false, 4>(w, acts) },
                },
            ];
        }
    };
}

#[cfg(target_arch = "x86_64")]
x86_packed!(
    /// AVX2: `maddubs` then `madd` (pairs of products never reach 16 bits' limit: 2 x 15
    /// x 127), added to the lanes.
    avx2, v256, "avx2,fma,f16c",
    |acc, w, x| _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))),
    // Q8_0: the signed weights back, then |w| times x carrying w's sign (unsigned bytes
    // up to 255 would saturate `maddubs`' pairs); nothing to take off.
    q8: |acc, w, x| {
        let w = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    },
    bias: 0
);

#[cfg(target_arch = "x86_64")]
x86_packed!(
    /// AVX-VNNI: `vpdpbusd` adds four byte products to each lane in one instruction.
    vnni, v256, "avx2,fma,f16c,avxvnni",
    |acc, w, x| _mm256_dpbusd_avx_epi32(acc, w, x),
    q8: |acc, w, x| _mm256_dpbusd_avx_epi32(acc, w, x),
    bias: 128
);

#[cfg(target_arch = "x86_64")]
x86_packed!(
    /// AVX-512 VNNI: `vpdpbusd` on 512 bits, all sixteen rows of a group in one register.
    avx512, v512, "avx512f,avx512bw,avx512vnni",
    |acc, w, x| _mm512_dpbusd_epi32(acc, w, x),
    q8: |acc, w, x| _mm512_dpbusd_epi32(acc, w, x),
    bias: 128
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant_matmul::{portable_kernel, quantize_q8};

    const KINDS: [GgmlType; 2] = [GgmlType::Q4_1, GgmlType::Q8_0];

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    /// Random blocks of `kind` with plausible scales; Q8_0's bytes include -128 and 127.
    fn random_blocks(kind: GgmlType, rows: usize, blocks: usize, seed: &mut u64) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rows * blocks {
            let d = 0.002 + (lcg(seed) % 1000) as f32 * 1e-5;
            out.extend(f16::from_f32(d).to_le_bytes());
            if kind == GgmlType::Q4_1 {
                let m = ((lcg(seed) % 2000) as f32 - 1000.0) * 1e-4;
                out.extend(f16::from_f32(m).to_le_bytes());
                out.extend((0..16).map(|_| lcg(seed) as u8));
            } else {
                out.extend((0..32).map(|i| match i {
                    0 => 0x80,
                    1 => 0x7f,
                    _ => lcg(seed) as u8,
                }));
            }
        }
        out
    }

    /// An activation row; its first block at ±max, where rounding puts ±127.
    fn random_acts(kind: GgmlType, cols: usize, seed: &mut u64) -> Q8Activations {
        let x: Vec<f32> = (0..cols)
            .map(|i| match i {
                0 => 1.0,
                1 => -1.0,
                _ => (lcg(seed) % 20001) as f32 / 10000.0 - 1.0,
            })
            .collect();
        quantize_q8(&x, kind)
    }

    #[test]
    fn packing_is_undone_exactly() {
        let mut seed = 3;
        for kind in KINDS {
            let (rows, blocks) = (32, 5);
            let src = random_blocks(kind, rows, blocks, &mut seed);
            let packed = pack(kind, &src, rows, blocks);
            assert_eq!(packed.len(), src.len());
            assert_ne!(packed, src);
            assert_eq!(unpack(kind, &packed, rows, blocks), src);
            let rb = src.len() / rows;
            assert_eq!(row(kind, &packed, 17, blocks), src[17 * rb..18 * rb]);
        }
    }

    /// The portable interleaved kernels against GGUF's portable kernels: the same
    /// products summed in another order (equal to rounding, not bit for bit).
    #[test]
    fn interleaved_products_equal_the_row_kernels_to_rounding() {
        let mut seed = 9;
        for kind in KINDS {
            let blocks = 18;
            let src = random_blocks(kind, GROUP, blocks, &mut seed);
            let packed = pack(kind, &src, GROUP, blocks);
            let a = random_acts(kind, blocks * 32, &mut seed);
            let got = (portable::KERNELS[usize::from(kind == GgmlType::Q8_0)].x1)(&packed, &a);
            let rb = src.len() / GROUP;
            for (r, g) in got.iter().enumerate() {
                let want = portable_kernel(kind)(&src[r * rb..][..rb], &a);
                assert!(
                    (g - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{kind:?} row {r}: {g} vs {want}"
                );
            }
        }
    }

    /// Every kernel this CPU can run equals the portable one bit for bit, one activation
    /// row and four, for both kinds.
    #[test]
    fn every_path_equals_the_portable_kernels() {
        let mut paths: Vec<(&str, [Kernels; 2])> =
            vec![("selected", [kernels(KINDS[0]), kernels(KINDS[1])])];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::quant_matmul::avx2_detected() {
                paths.push(("avx2", avx2::KERNELS));
                if is_x86_feature_detected!("avxvnni") {
                    paths.push(("vnni", vnni::KERNELS));
                }
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    paths.push(("avx512", avx512::KERNELS));
                }
            }
        }
        eprintln!("paths: {:?}", paths.iter().map(|p| p.0).collect::<Vec<_>>());
        let mut seed = 21;
        for (k, kind) in KINDS.into_iter().enumerate() {
            let reference = portable::KERNELS[k];
            for blocks in [1, 18, 48] {
                let packed = pack(
                    kind,
                    &random_blocks(kind, GROUP, blocks, &mut seed),
                    GROUP,
                    blocks,
                );
                let acts: [Q8Activations; 4] =
                    std::array::from_fn(|_| random_acts(kind, blocks * 32, &mut seed));
                let rows = acts.each_ref();
                let want4 = (reference.x4)(&packed, rows).map(|o| o.map(f32::to_bits));
                for t in 0..4 {
                    let one = (reference.x1)(&packed, rows[t]).map(f32::to_bits);
                    assert_eq!(one, want4[t], "{kind:?} portable x1 vs x4");
                }
                for (name, kernels) in &paths {
                    let got1 = (kernels[k].x1)(&packed, rows[0]).map(f32::to_bits);
                    let got4 = (kernels[k].x4)(&packed, rows).map(|o| o.map(f32::to_bits));
                    assert_eq!(got1, want4[0], "{name} {kind:?} x1, {blocks} blocks");
                    assert_eq!(got4, want4, "{name} {kind:?} x4, {blocks} blocks");
                }
            }
        }
    }
}
