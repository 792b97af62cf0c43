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
//! The integer sums are exact, and the float accumulation is the same in both kernels
//! (eight lanes of fused multiply-adds, one fixed reduction per row), so the AVX2 kernels
//! (selected at run time) and the portable ones give the same results bit for bit.

use std::sync::Mutex;

use half::f16;

use crate::gguf::SharedBytes;
use crate::packed;
use crate::pool::Pool;
use crate::quant::{GgmlType, dequantize, dequantize_split};

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
    /// Whether `blocks` holds the rows interleaved in sixteens ([`packed`]) rather than
    /// GGUF's row-major layout.
    interleaved: bool,
}

/// Activations quantized to 8-bit blocks: per block a scale, the integers, and
/// `scale * Σ integers` (the Q8_1 term that Q4_1's offset needs), and `Σ integers` itself
/// (what the interleaved Q8_0 kernels take back off, [`packed`]).
#[derive(Debug, Default, Clone)]
pub struct Q8Activations {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub qsum: Vec<i32>,
}

/// Four activation rows for the four-row kernels, with each block's four scales and four
/// sums side by side: a kernel scales all four rows' products with one vector multiply
/// and adds Q4_1's four offset terms with another, instead of four scalar loads and
/// multiplies each.
pub struct Quad<'a> {
    pub rows: [&'a Q8Activations; 4],
    pub d: Vec<[f32; 4]>,
    pub s: Vec<[f32; 4]>,
}

impl<'a> Quad<'a> {
    pub fn new(rows: [&'a Q8Activations; 4]) -> Self {
        let blocks = rows
            .iter()
            .map(|r| r.d.len().min(r.s.len()))
            .min()
            .unwrap_or(0);
        Quad {
            rows,
            d: (0..blocks).map(|b| rows.map(|r| r.d[b])).collect(),
            s: (0..blocks).map(|b| rows.map(|r| r.s[b])).collect(),
        }
    }
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
            interleaved: false,
        }
    }

    /// The matrix repacked for the CPU kernels where that layout exists for it (Q4_1 and
    /// Q8_0, rows a multiple of 16: every weight of the bundled model); otherwise
    /// itself. The copy no longer refers to the buffer it came from.
    pub fn interleaved(self) -> QuantMatrix {
        if !packed::fits(self.kind, self.rows, self.cols) || self.interleaved {
            return self;
        }
        let blocks = packed::pack(self.kind, self.bytes(), self.rows, self.cols / QK);
        QuantMatrix {
            blocks: std::sync::Arc::new(blocks),
            start: 0,
            interleaved: true,
            ..self
        }
    }

    pub fn is_interleaved(&self) -> bool {
        self.interleaved
    }

    /// Where the matrix's bytes lie in its buffer.
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.kind.bytes_for(self.rows * self.cols)
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

    fn row(&self, r: usize) -> std::borrow::Cow<'_, [u8]> {
        if self.interleaved {
            return packed::row(self.kind, self.bytes(), r, self.cols / QK).into();
        }
        let rb = self.row_bytes();
        self.bytes()[r * rb..(r + 1) * rb].into()
    }

    /// The blocks in GGUF's row-major layout.
    fn gguf_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.interleaved {
            return packed::unpack(self.kind, self.bytes(), self.rows, self.cols / QK).into();
        }
        self.bytes().into()
    }

    /// The whole matrix in f32, row-major (for devices that multiply in f32).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize(self.kind, &self.gguf_bytes(), &mut out);
        out
    }

    /// The whole matrix split as [`dequantize_split`]: `(scaled, minimums)`, row-major
    /// `[rows, cols]` and `[rows, cols / 32]`; `minimums` is `None` for kinds without an
    /// offset (all but Q4_1).
    pub fn dequantize_split(&self) -> (Vec<f32>, Option<Vec<f32>>) {
        if self.kind != GgmlType::Q4_1 {
            return (self.dequantize(), None);
        }
        let mut out = vec![0f32; self.rows * self.cols];
        let mut minimums = vec![0f32; self.rows * self.cols / QK];
        dequantize_split(self.kind, &self.gguf_bytes(), &mut out, &mut minimums);
        (out, Some(minimums))
    }

    /// Rows `ids`, dequantized and concatenated (an embedding lookup).
    ///
    /// # Panics
    /// If an id is not below `rows`; callers check ids from outside first.
    pub fn dequantize_rows(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            dequantize(self.kind, &self.row(id as usize), o);
        }
        out
    }

    /// `out[t][r] = Σ_c W[r][c] x[t][c]` for the `n` rows of `x` (`[n, cols]` row-major);
    /// `out` is `[n, rows]`. Rows of `W` are split across the matmul [`Pool`].
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        Self::matmul_many(&[self], x, n, &mut [out]);
    }

    /// [`Self::matmul`] for several matrices with the same columns and the same input (Q,
    /// K and V; gate and up): the input quantized once and every product in one round of
    /// the pool, instead of one quantization and one round (with its wait for the other
    /// threads) per matrix. Each output is exactly what `matmul` gives for its matrix.
    ///
    /// # Panics
    /// If the matrices' columns or activation formats differ, or a slice's length is not
    /// `[n, cols]` / `[n, rows]`.
    pub fn matmul_many(mats: &[&QuantMatrix], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
        let Some(first) = mats.first() else { return };
        assert_eq!(mats.len(), outs.len(), "matmul: one output per matrix");
        let (cols, kind) = (first.cols, first.kind);
        assert_eq!(x.len(), n * cols, "matmul: input is not [n, cols]");
        for (m, out) in mats.iter().zip(outs.iter()) {
            assert_eq!(m.cols, cols, "matmul_many: matrices of different widths");
            // Every block kind multiplies the same 8-bit activations; float kinds raw ones.
            assert_eq!(
                m.kind.block_size(),
                kind.block_size(),
                "matmul_many: mixed kinds"
            );
            assert_eq!(out.len(), n * m.rows, "matmul: output is not [n, rows]");
        }
        let pool = Pool::global();
        let acts = quantize_rows(x, cols, kind, pool);
        // The threads claim runs of weight rows, of every matrix in turn, from a shared
        // counter, and run every input row against them: a weight row is read from memory
        // once per call, whatever `n` is, and a thread that starts late (or is slowed by
        // the other work of its core) takes fewer rows instead of keeping the others
        // waiting. Rows come in whole bands of 16 (a band never shares a cache line of
        // output, and an interleaved band is one group), four bands a claim.
        const BAND: usize = packed::GROUP;
        const CLAIM: usize = 4;
        let run_parts = |outs: Vec<&mut [f32]>| {
            let mut bands: Vec<(&QuantMatrix, usize, &mut [f32])> = mats
                .iter()
                .zip(outs)
                .flat_map(|(m, o)| {
                    o.chunks_mut(BAND * n)
                        .enumerate()
                        .map(move |(b, o)| (*m, b * BAND, o))
                })
                .collect();
            pool.for_each_claimed(&mut bands, CLAIM, |(m, row, out)| {
                if m.interleaved {
                    m.run_groups(&acts, *row, out)
                } else {
                    m.run_rows(&acts, *row, out)
                }
            });
        };
        if n == 1 {
            run_parts(outs.iter_mut().map(|o| &mut **o).collect());
            return;
        }
        let mut by_row: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows * n]).collect();
        run_parts(by_row.iter_mut().map(|o| o.as_mut_slice()).collect());
        // `[rows, n]` into `[n, rows]`, each part taking a range of output rows of every
        // matrix, in one round of the pool.
        let per_t = n.div_ceil(pool.parts());
        let parts: Vec<Vec<Mutex<&mut [f32]>>> = mats
            .iter()
            .zip(outs.iter_mut())
            .map(|(m, out)| out.chunks_mut(per_t * m.rows).map(Mutex::new).collect())
            .collect();
        pool.run(&|p| {
            for ((m, parts), by_row) in mats.iter().zip(&parts).zip(&by_row) {
                if let Some(part) = parts.get(p) {
                    let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
                    for (i, o) in part.chunks_exact_mut(m.rows).enumerate() {
                        let t = p * per_t + i;
                        for (r, v) in o.iter_mut().enumerate() {
                            *v = by_row[r * n + t];
                        }
                    }
                }
            }
        });
    }
}

impl QuantMatrix {
    /// Weight rows `first..` (as many as `rows_out` holds, `n` outputs each, `[rows, n]`)
    /// against every activation row, GGUF's layout: a row at a time.
    fn run_rows(&self, acts: &[Q8Activations], first: usize, rows_out: &mut [f32]) {
        let n = acts.len();
        let kernel = select_kernel(self.kind);
        let kernel4 = select_kernel4(self.kind);
        let quads: Vec<Quad> = match kernel4 {
            Some(_) => acts
                .chunks_exact(4)
                .map(|a| Quad::new([&a[0], &a[1], &a[2], &a[3]]))
                .collect(),
            None => Vec::new(),
        };
        let rb = self.row_bytes();
        // The part's weight rows sliced once: a decode row is only 18 blocks, and finding
        // each row through the mapped file again was 3% of a decode step.
        let band = &self.bytes()[first * rb..][..rows_out.len() / n * rb];
        for (w, row_out) in band.chunks_exact(rb).zip(rows_out.chunks_exact_mut(n)) {
            let mut done = 0;
            if let Some(k4) = kernel4 {
                for (o, quad) in row_out.chunks_exact_mut(4).zip(&quads) {
                    o.copy_from_slice(&k4(w, quad));
                    done += 4;
                }
            }
            for (o, a) in row_out[done..].iter_mut().zip(&acts[done..]) {
                *o = kernel(w, a);
            }
        }
    }

    /// As [`Self::run_rows`] for the interleaved layout: a group of 16 rows at a time,
    /// against four activation rows per call while four remain (the group's weights,
    /// at most 15 KB here, stay in L1 across the calls).
    fn run_groups(&self, acts: &[Q8Activations], first: usize, rows_out: &mut [f32]) {
        let n = acts.len();
        let packed::Kernels { x1: k1, x4: k4 } = packed::kernels(self.kind);
        let group_bytes = packed::GROUP * self.row_bytes();
        let groups =
            &self.bytes()[first * self.row_bytes()..][..rows_out.len() / n * self.row_bytes()];
        for (w, out) in groups
            .chunks_exact(group_bytes)
            .zip(rows_out.chunks_exact_mut(packed::GROUP * n))
        {
            let mut t = 0;
            while t + 4 <= n {
                let four = k4(w, [&acts[t], &acts[t + 1], &acts[t + 2], &acts[t + 3]]);
                for (i, rows) in four.iter().enumerate() {
                    for (r, v) in rows.iter().enumerate() {
                        out[r * n + t + i] = *v;
                    }
                }
                t += 4;
            }
            for (i, a) in acts.iter().enumerate().skip(t) {
                for (r, v) in k1(w, a).iter().enumerate() {
                    out[r * n + i] = *v;
                }
            }
        }
    }
}

/// Quantizes one activation row to 8-bit blocks as llama.cpp does for `kind`'s dot product:
/// `d = max|x| / 127`, `q = round(x / d)`, `d` stored as f16 (and `s = d Σ q`, also f16,
/// for Q8_1). Non-quantized kinds keep the f32 row in `d`.
pub fn quantize_q8(x: &[f32], kind: GgmlType) -> Q8Activations {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { quantize_q8_avx2(x, kind) };
    }
    quantize_q8_portable(x, kind)
}

/// The same code compiled for AVX2: rounding becomes one instruction (`vroundps`, half to
/// even as `round_ties_even`) instead of a libm call per value (12% of prompt processing).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_q8_avx2(x: &[f32], kind: GgmlType) -> Q8Activations {
    quantize_q8_portable(x, kind)
}

#[inline(always)]
fn quantize_q8_portable(x: &[f32], kind: GgmlType) -> Q8Activations {
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
        qsum: vec![0; nb],
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
        a.qsum[b] = sum;
    }
    a
}

type Kernel = fn(&[u8], &Q8Activations) -> f32;

fn select_kernel(kind: GgmlType) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if vnni_detected() {
        return match kind {
            GgmlType::Q4_0 => vnni::dot_q4_0,
            GgmlType::Q4_1 => vnni::dot_q4_1,
            GgmlType::Q8_0 => vnni::dot_q8_0,
            _ => dot_float_kernel(kind),
        };
    }
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

/// AVX-VNNI with everything the AVX2 kernels need; `PERCEPT_NO_VNNI=1` turns it off (to
/// compare the two paths).
#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni_detected() -> bool {
    std::arch::is_x86_feature_detected!("avxvnni")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::env::var_os("PERCEPT_NO_VNNI").is_none()
}

/// AVX2 with FMA and F16C, which every x86 kernel here needs.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_detected() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

type Kernel4 = fn(&[u8], &Quad) -> [f32; 4];

/// A kernel taking four activation rows at once, where one exists; its results equal
/// four calls of the single-row kernel.
fn select_kernel4(kind: GgmlType) -> Option<Kernel4> {
    #[cfg(target_arch = "x86_64")]
    if vnni_detected() {
        return match kind {
            GgmlType::Q4_1 => Some(vnni::dot_q4_1_x4),
            GgmlType::Q8_0 => Some(vnni::dot_q8_0_x4),
            _ => None,
        };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        return match kind {
            GgmlType::Q4_1 => Some(avx2::dot_q4_1_x4),
            GgmlType::Q8_0 => Some(avx2::dot_q8_0_x4),
            _ => None,
        };
    }
    let _ = kind;
    None
}

/// Each row of `x` (`[n, cols]`) quantized for the kernels; a prompt's rows are split
/// across the pool (done on the calling thread alone, this was 7% of a prompt's time, a
/// serial part that kept two threads from doubling the speed).
fn quantize_rows(x: &[f32], cols: usize, kind: GgmlType, pool: &Pool) -> Vec<Q8Activations> {
    let n = x.len() / cols;
    if n < 2 * pool.parts() {
        return x.chunks_exact(cols).map(|r| quantize_q8(r, kind)).collect();
    }
    let per_part = n.div_ceil(pool.parts());
    let parts: Vec<Mutex<Vec<Q8Activations>>> =
        (0..pool.parts()).map(|_| Mutex::new(Vec::new())).collect();
    pool.run(&|p| {
        let rows = x.chunks_exact(cols).skip(p * per_part).take(per_part);
        let done: Vec<Q8Activations> = rows.map(|r| quantize_q8(r, kind)).collect();
        if let Some(part) = parts.get(p) {
            *part.lock().unwrap_or_else(|e| e.into_inner()) = done;
        }
    });
    parts
        .into_iter()
        .flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
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

/// Eight float accumulators, summed at the end of a row in one fixed order: the way the
/// AVX2 kernels keep one `__m256` of partial sums instead of a horizontal sum per block.
/// Lane `j` of a block holds the products of positions `4j..4j + 4` (what `maddubs` then
/// `madd` leave in 32-bit lane `j`).
type Lanes = [f32; 8];

/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`: the order of the AVX2 reduction
/// (high half onto low, then the two 64-bit halves, then the two remaining lanes).
#[inline]
fn reduce(l: &Lanes) -> f32 {
    let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (h[0] + h[2]) + (h[1] + h[3])
}

/// The block dot products in plain Rust: the reference the SIMD kernels must equal, with
/// the same lanes, the same fused multiply-adds and the same final order.
mod portable {
    use super::{Lanes, Q8Activations, f16_at, reduce};

    /// Adds a block's integer lane sums, scaled, to the accumulators.
    fn accumulate(acc: &mut Lanes, lanes: [i32; 8], scale: f32) {
        for (a, l) in acc.iter_mut().zip(lanes) {
            *a = (l as f32).mul_add(scale, *a);
        }
    }

    /// Lane sums of `w_p * x_p` where `w` gives the weight at position `p`.
    fn lanes(w: impl Fn(usize) -> i32, qx: &[i8]) -> [i32; 8] {
        std::array::from_fn(|j| (4 * j..4 * j + 4).map(|p| w(p) * i32::from(qx[p])).sum())
    }

    /// Position `p` of a 4-bit block: low nibbles hold positions 0..16, high ones 16..32.
    fn nibble(qw: &[u8], p: usize) -> i32 {
        i32::from(if p < 16 { qw[p] & 15 } else { qw[p - 16] >> 4 })
    }

    pub fn dot_q4_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = Lanes::default();
        for (b, blk) in w.chunks_exact(18).enumerate() {
            let qx = &a.q[b * 32..b * 32 + 32];
            let l = lanes(|p| nibble(&blk[2..18], p) - 8, qx);
            accumulate(&mut acc, l, f16_at(blk, 0) * a.d[b]);
        }
        reduce(&acc)
    }

    pub fn dot_q4_1(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = Lanes::default();
        let mut offsets = 0f32;
        for (b, blk) in w.chunks_exact(20).enumerate() {
            let qx = &a.q[b * 32..b * 32 + 32];
            let l = lanes(|p| nibble(&blk[4..20], p), qx);
            accumulate(&mut acc, l, f16_at(blk, 0) * a.d[b]);
            offsets += f16_at(blk, 2) * a.s[b];
        }
        reduce(&acc) + offsets
    }

    pub fn dot_q8_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = Lanes::default();
        for (b, blk) in w.chunks_exact(34).enumerate() {
            let qx = &a.q[b * 32..b * 32 + 32];
            let l = lanes(|p| i32::from(blk[2 + p] as i8), qx);
            accumulate(&mut acc, l, f16_at(blk, 0) * a.d[b]);
        }
        reduce(&acc)
    }
}

/// The x86 kernels, written once for two ways of summing a block's byte products
/// ([`avx2`], [`vnni`]): a block's 32 integer products in a few instructions, converted to
/// float and fused-multiply-added into eight float lanes; one horizontal sum per row.
/// Exactly the portable kernels' arithmetic.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_kernels {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes_features:literal,
     |$w:ident, $x:ident| $lanes:expr) => {
        $(#[$doc])*
        mod $name {
    use super::{Q8Activations, Quad};
    use std::arch::x86_64::*;

    /// The f16 at `b[i..i + 2]`, converted by the F16C instruction (the `half` crate's
    /// portable conversion was 15% of a decode step).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn f16_at(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// How far ahead of the block in use the weights are prefetched, in bytes. Measured on
    /// the 2-core EPYC VMs (decode tok/s at 1 thread): none 26.8, 640 B 45.4, 1280 B 53.5,
    /// 2048 B 56.3, 4096 B 55.5. The hardware prefetcher alone left the kernel waiting
    /// on its weight loads 40% of the time.
    const PREFETCH: usize = 2048;

    /// The portable `reduce`: high half onto low, then 64-bit halves, then the last two.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn reduce(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
        _mm_cvtss_f32(s)
    }

    /// Eight lane sums of byte products: `w` unsigned, `x` signed.
    #[inline]
    #[target_feature(enable = $lanes_features)]
    fn lanes($w: __m256i, $x: __m256i) -> __m256i {
        $lanes
    }

    /// The 32 nibbles of a 4-bit block as bytes: positions 0..16 low, 16..32 high.
    ///
    /// # Safety
    /// `qw` must point to 16 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles(qw: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes.
        let packed = unsafe { _mm_loadu_si128(qw as *const __m128i) };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(packed, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// # Safety
    /// `x` must point to 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load32(x: *const i8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe { _mm256_loadu_si256(x as *const __m256i) }
    }

    /// Lanes of signed weights times signed activations (`maddubs` needs one unsigned
    /// side: |w| times x carrying w's sign).
    #[inline]
    #[target_feature(enable = $lanes_features)]
    fn signed_lanes(w: __m256i, x: __m256i) -> __m256i {
        lanes(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    }

    #[target_feature(enable = $features)]
    fn q4_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_epi8(8);
        for (b, blk) in w.chunks_exact(18).enumerate() {
            // The weights stream from memory once per token: ask for them ahead of use.
            _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PREFETCH) as *const i8);
            let qx = &a.q[b * 32..b * 32 + 32];
            // SAFETY: a block holds 16 packed bytes after its scale; qx is 32 bytes.
            let (qw, x) = unsafe { (nibbles(blk[2..].as_ptr()), load32(qx.as_ptr())) };
            let l = signed_lanes(_mm256_sub_epi8(qw, eight), x);
            let scale = _mm256_set1_ps(f16_at(blk, 0) * a.d[b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), scale, acc);
        }
        reduce(acc)
    }

    #[target_feature(enable = $features)]
    fn q4_1(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0f32;
        let row = Row::new(a, w.len() / 20);
        for (b, blk) in w.chunks_exact(20).enumerate() {
            // The weights stream from memory once per token: ask for them ahead of use.
            _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PREFETCH) as *const i8);
            // SAFETY: a block holds 16 packed bytes after its scale and offset; b is below
            // the blocks `Row::new` checked.
            let (qw, (x, d, s)) = unsafe { (nibbles(blk[4..].as_ptr()), row.block(b)) };
            let (dw, mw) = f16_pair(blk);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes(qw, x)), _mm256_set1_ps(dw * d), acc);
            offsets += mw * s;
        }
        reduce(acc) + offsets
    }

    #[target_feature(enable = $features)]
    fn q8_0(w: &[u8], a: &Q8Activations) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let row = Row::new(a, w.len() / 34);
        for (b, blk) in w.chunks_exact(34).enumerate() {
            // The weights stream from memory once per token: ask for them ahead of use.
            _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PREFETCH) as *const i8);
            // SAFETY: a block holds 32 bytes after its scale; b is below the blocks
            // `Row::new` checked.
            let (qw, (x, d, _)) = unsafe { (load32(blk[2..].as_ptr() as *const i8), row.block(b)) };
            let scale = _mm256_set1_ps(f16_at(blk, 0) * d);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(signed_lanes(qw, x)), scale, acc);
        }
        reduce(acc)
    }

    /// `d` and `m` of a Q4_1 block (its first four bytes), converted by one instruction.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn f16_pair(b: &[u8]) -> (f32, f32) {
        let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// Four activation rows against one weight row: each block's weights are unpacked and
    /// its scales converted once for the four, the four rows' scales and offset terms
    /// computed as one vector each. Per row, the arithmetic is `q4_1`'s.
    #[target_feature(enable = $features)]
    fn q4_1_x4(w: &[u8], quad: &Quad) -> [f32; 4] {
        let blocks = w.len() / 20;
        let rows = Rows::new(quad, blocks);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offsets = _mm_setzero_ps();
        let mut scales = [0f32; 4];
        for (b, blk) in w.chunks_exact(20).enumerate() {
            // The weights stream from memory once per token: ask for them ahead of use.
            _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PREFETCH) as *const i8);
            // SAFETY: a block holds 16 packed bytes after its scale and offset; b < blocks,
            // which `Rows::new` checked every row holds.
            let (qw, (d, s)) = unsafe { (nibbles(blk[4..].as_ptr()), rows.scales(b)) };
            let (dw, mw) = f16_pair(blk);
            // Separate multiply and add, as the portable kernel's `offsets += m * s`.
            offsets = _mm_add_ps(offsets, _mm_mul_ps(_mm_set1_ps(mw), s));
            // SAFETY: `scales` holds four floats.
            unsafe { _mm_storeu_ps(scales.as_mut_ptr(), _mm_mul_ps(_mm_set1_ps(dw), d)) };
            for (r, (acc, scale)) in acc.iter_mut().zip(&scales).enumerate() {
                // SAFETY: as above.
                let x = unsafe { rows.block(r, b) };
                let l = _mm256_cvtepi32_ps(lanes(qw, x));
                *acc = _mm256_fmadd_ps(l, _mm256_broadcast_ss(scale), *acc);
            }
        }
        let mut off = [0f32; 4];
        // SAFETY: `off` holds four floats.
        unsafe { _mm_storeu_ps(off.as_mut_ptr(), offsets) };
        std::array::from_fn(|r| reduce(acc[r]) + off[r])
    }

    /// Four activation rows against one weight row, as `q8_0` does each.
    #[target_feature(enable = $features)]
    fn q8_0_x4(w: &[u8], quad: &Quad) -> [f32; 4] {
        let blocks = w.len() / 34;
        let rows = Rows::new(quad, blocks);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut scales = [0f32; 4];
        for (b, blk) in w.chunks_exact(34).enumerate() {
            // The weights stream from memory once per token: ask for them ahead of use.
            _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PREFETCH) as *const i8);
            // SAFETY: a block holds 32 bytes after its scale; b < blocks, which
            // `Rows::new` checked every row holds.
            let (qw, (d, _)) = unsafe { (load32(blk[2..].as_ptr() as *const i8), rows.scales(b)) };
            let abs_w = _mm256_sign_epi8(qw, qw);
            let dw = _mm_set1_ps(f16_at(blk, 0));
            // SAFETY: `scales` holds four floats.
            unsafe { _mm_storeu_ps(scales.as_mut_ptr(), _mm_mul_ps(dw, d)) };
            for (r, (acc, scale)) in acc.iter_mut().zip(&scales).enumerate() {
                // SAFETY: as above.
                let x = unsafe { rows.block(r, b) };
                let l = _mm256_cvtepi32_ps(lanes(abs_w, _mm256_sign_epi8(x, qw)));
                *acc = _mm256_fmadd_ps(l, _mm256_broadcast_ss(scale), *acc);
            }
        }
        std::array::from_fn(|r| reduce(acc[r]))
    }

    /// One activation row as raw pointers, its length checked once.
    struct Row {
        q: *const i8,
        d: *const f32,
        s: *const f32,
    }

    impl Row {
        fn new(a: &Q8Activations, blocks: usize) -> Self {
            assert!(
                a.q.len() >= blocks * 32 && a.d.len() >= blocks && a.s.len() >= blocks,
                "activations shorter than the weight row"
            );
            Row { q: a.q.as_ptr(), d: a.d.as_ptr(), s: a.s.as_ptr() }
        }

        /// Block `b`: its 32 bytes, scale and sum.
        ///
        /// # Safety
        /// `b` below the `blocks` given to `new`.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn block(&self, b: usize) -> (__m256i, f32, f32) {
            // SAFETY: the caller keeps b within what `new` checked.
            unsafe { (load32(self.q.add(b * 32)), *self.d.add(b), *self.s.add(b)) }
        }
    }

    /// Four activation rows as raw pointers, their lengths checked once (the checks and
    /// reloads at every block were a fifth of the four-row kernels' time).
    struct Rows {
        q: [*const i8; 4],
        d: *const [f32; 4],
        s: *const [f32; 4],
    }

    impl Rows {
        fn new(quad: &Quad, blocks: usize) -> Self {
            assert!(
                quad.rows.iter().all(|r| r.q.len() >= blocks * 32)
                    && quad.d.len() >= blocks
                    && quad.s.len() >= blocks,
                "activations shorter than the weight row"
            );
            Rows {
                q: quad.rows.map(|r| r.q.as_ptr()),
                d: quad.d.as_ptr(),
                s: quad.s.as_ptr(),
            }
        }

        /// Row `r`'s 32 bytes of block `b`.
        ///
        /// # Safety
        /// `r < 4` and `b` below the `blocks` given to `new`.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn block(&self, r: usize, b: usize) -> __m256i {
            // SAFETY: the caller keeps b within what `new` checked.
            unsafe { load32(self.q[r].add(b * 32)) }
        }

        /// Block `b`'s four scales and four sums.
        ///
        /// # Safety
        /// `b` below the `blocks` given to `new`.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn scales(&self, b: usize) -> (__m128, __m128) {
            // SAFETY: the caller keeps b within what `new` checked.
            unsafe {
                (
                    _mm_loadu_ps(self.d.add(b) as *const f32),
                    _mm_loadu_ps(self.s.add(b) as *const f32),
                )
            }
        }
    }

    // SAFETY (all below): only handed out by `select_kernel` / `select_kernel4` after
    // detecting this module's features (`vnni_detected` or the AVX2 check).
    pub fn dot_q4_1_x4(w: &[u8], quad: &Quad) -> [f32; 4] {
        unsafe { q4_1_x4(w, quad) }
    }
    pub fn dot_q8_0_x4(w: &[u8], quad: &Quad) -> [f32; 4] {
        unsafe { q8_0_x4(w, quad) }
    }
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
    };
}

#[cfg(target_arch = "x86_64")]
x86_kernels!(
    /// AVX2: `maddubs` multiplies unsigned by signed bytes and adds pairs (into 16 bits,
    /// never saturating for these blocks), `madd` adds pairs again into eight 32-bit lanes.
    avx2,
    "avx2,fma,f16c",
    "avx2",
    |w, x| _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
);

#[cfg(target_arch = "x86_64")]
x86_kernels!(
    /// AVX-VNNI: `vpdpbusd` sums four byte products into each 32-bit lane in one
    /// instruction (what llama.cpp uses where the CPU has it).
    vnni,
    "avx2,fma,f16c,avxvnni",
    "avx2,avxvnni",
    |w, x| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w, x)
);

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

    /// Four activation rows of `cols` values in `±scale`, quantized for `kind`.
    fn random_rows(kind: GgmlType, cols: usize, scale: f32, seed: &mut u64) -> [Q8Activations; 4] {
        std::array::from_fn(|_| {
            let x: Vec<f32> = (0..cols).map(|_| lcg(seed) * scale).collect();
            quantize_q8(&x, kind)
        })
    }

    /// Every kernel against dequantize-then-f32 on random data, for odd sizes too. The
    /// difference comes only from rounding the activations to 8 bits: bounded by
    /// `Σ |w| * d/2` per output, i.e. by `|w|₁ * max|x| / 254`.
    #[test]
    fn kernels_match_f32_within_activation_rounding() {
        let mut seed = 42;
        for kind in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let shapes = [
                (1, 32, 1),
                (7, 96, 1),
                (33, 160, 3),
                (17, 576, 5),
                (32, 576, 6),
                (48, 160, 9),
            ];
            for ((rows, cols, n), interleave) in
                shapes.into_iter().flat_map(|s| [(s, false), (s, true)])
            {
                let blocks: SharedBytes =
                    std::sync::Arc::new(random_blocks(kind, rows, cols, &mut seed));
                let mut m = QuantMatrix::new(kind, rows, cols, blocks, 0);
                if interleave {
                    m = m.interleaved();
                    let expected = kind != GgmlType::Q4_0 && rows % 16 == 0;
                    assert_eq!(m.is_interleaved(), expected, "{kind:?} {rows}x{cols}");
                }
                let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut got = vec![0f32; n * rows];
                m.matmul(&x, n, &mut got);
                let w = m.dequantize();
                assert_eq!(
                    m.dequantize_rows(&[rows as u32 - 1]),
                    w[(rows - 1) * cols..]
                );
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
            for cols in [32, 320, 1536] {
                let w = random_blocks(kind, 1, cols, &mut seed);
                let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed) * 4.0).collect();
                let a = quantize_q8(&x, kind);
                assert_eq!(
                    portable_kernel(kind)(&w, &a).to_bits(),
                    select_kernel(kind)(&w, &a).to_bits(),
                    "{kind:?} {cols}"
                );
            }
        }
    }

    /// Both x86 paths (whichever the CPU has), not only the selected one, equal the
    /// portable kernels bit for bit, one row and four.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_x86_path_equals_the_portable_kernels() {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let mut paths: Vec<(&str, [Kernel; 3], [Kernel4; 2])> = Vec::new();
        if avx2 {
            paths.push((
                "avx2",
                [avx2::dot_q4_0, avx2::dot_q4_1, avx2::dot_q8_0],
                [avx2::dot_q4_1_x4, avx2::dot_q8_0_x4],
            ));
        }
        if avx2 && is_x86_feature_detected!("avxvnni") {
            paths.push((
                "vnni",
                [vnni::dot_q4_0, vnni::dot_q4_1, vnni::dot_q8_0],
                [vnni::dot_q4_1_x4, vnni::dot_q8_0_x4],
            ));
        }
        let mut seed = 5;
        for (name, single, four) in &paths {
            let kinds = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0];
            for (kind, kernel) in kinds.into_iter().zip(single) {
                let cols = 1536;
                let w = random_blocks(kind, 1, cols, &mut seed);
                let acts = random_rows(kind, cols, 3.0, &mut seed);
                let want: Vec<u32> = acts
                    .iter()
                    .map(|a| portable_kernel(kind)(&w, a).to_bits())
                    .collect();
                assert_eq!(kernel(&w, &acts[0]).to_bits(), want[0], "{name} {kind:?}");
                let k4 = match kind {
                    GgmlType::Q4_1 => four[0],
                    GgmlType::Q8_0 => four[1],
                    _ => continue,
                };
                let got = k4(&w, &Quad::new(acts.each_ref()));
                assert_eq!(got.map(f32::to_bits).to_vec(), want, "{name} {kind:?} x4");
            }
        }
    }

    #[test]
    fn four_row_kernels_equal_the_single_row_kernel() {
        let mut seed = 11;
        for kind in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let Some(k4) = select_kernel4(kind) else {
                continue;
            };
            let cols = 576;
            let w = random_blocks(kind, 1, cols, &mut seed);
            let acts = random_rows(kind, cols, 2.0, &mut seed);
            let four = k4(&w, &Quad::new(acts.each_ref()));
            for (r, a) in acts.iter().enumerate() {
                assert_eq!(
                    four[r].to_bits(),
                    portable_kernel(kind)(&w, a).to_bits(),
                    "{kind:?}"
                );
            }
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
