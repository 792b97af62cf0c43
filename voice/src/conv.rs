//! One-dimensional f32 convolutions on host memory, for the HiFi-GAN generator on the CPU.
//!
//! The generator is a stack of dilated convolutions over long sequences with few channels
//! (128, 64 and 32 channels at 8, 64 and 256 times the frame rate): shapes for which
//! im2col plus a general matrix product (burn's path) spends more time gathering than
//! multiplying. Here each convolution runs directly: a tile of output rows by a few
//! vectors of time steps is held in registers while the input rows stream past, one
//! broadcast weight and one fused multiply-add per row, tap and vector. The input is read
//! in place (a dilated tap is an offset into its row) from a copy that carries the zero
//! padding and, fused into the copy, the activation that precedes every convolution here.
//! A transposed convolution is the same kernel once per output phase (polyphase form).
//!
//! Kernels: AVX-512 (8 rows x 48 steps), AVX2 with FMA (4 x 24), and portable Rust
//! (4 x 16, vectorised by the compiler), chosen at run time; `PERCEPT_NO_AVX512=1` turns the
//! first off (to compare).

use modelkit::fastmath::{exp, tanh};
use rayon::prelude::*;

/// Every signal's rows are a multiple of this many steps long: the widest tile's
/// columns, so any kernel can write whole tiles (the steps past `len` are scratch).
const COLS_QUANTUM: usize = 48;
/// Columns of output per task: a band whose input (channels x (band + taps' span)) stays
/// in the level-2 cache while every row block is computed over it.
const COLS_TASK: usize = 8 * COLS_QUANTUM;

/// Floats per task of an element-wise pass (the rows of one signal may be few and long).
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

/// `f(index, chunk)` for each `chunk`-long piece of `data`, on rayon's threads when there
/// are several (with one, a plain loop: waking a worker for every step costs more than the
/// small steps here).
fn for_each_chunk(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if rayon::current_num_threads() > 1 {
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// A `[channels, len]` sequence, row-major, each row `stride` floats long.
#[derive(Debug, Clone)]
pub struct Signal {
    pub channels: usize,
    pub len: usize,
    stride: usize,
    data: Vec<f32>,
}

impl Signal {
    pub fn zeros(channels: usize, len: usize) -> Self {
        let stride = len.div_ceil(COLS_QUANTUM).max(1) * COLS_QUANTUM;
        Signal {
            channels,
            len,
            stride,
            data: vec![0.0; channels * stride],
        }
    }

    /// From `channels * len` floats, row after row.
    pub fn from_rows(channels: usize, len: usize, rows: &[f32]) -> Self {
        let mut s = Signal::zeros(channels, len);
        for c in 0..channels {
            s.row_mut(c).copy_from_slice(&rows[c * len..(c + 1) * len]);
        }
        s
    }

    pub fn row(&self, c: usize) -> &[f32] {
        &self.data[c * self.stride..c * self.stride + self.len]
    }

    pub fn row_mut(&mut self, c: usize) -> &mut [f32] {
        &mut self.data[c * self.stride..c * self.stride + self.len]
    }

    /// Channels `first..first + n`, copied.
    pub fn narrow(&self, first: usize, n: usize) -> Signal {
        let mut s = Signal::zeros(n, self.len);
        for c in 0..n {
            s.row_mut(c).copy_from_slice(self.row(first + c));
        }
        s
    }

    /// Steps `first..first + n` of every channel, copied.
    pub fn narrow_time(&self, first: usize, n: usize) -> Signal {
        let mut s = Signal::zeros(self.channels, n);
        for c in 0..self.channels {
            s.row_mut(c).copy_from_slice(&self.row(c)[first..first + n]);
        }
        s
    }

    /// The channels in reverse order.
    pub fn flip_channels(&mut self) {
        let (n, stride) = (self.channels, self.stride);
        for c in 0..n / 2 {
            let (head, tail) = self.data.split_at_mut((n - 1 - c) * stride);
            head[c * stride..(c + 1) * stride].swap_with_slice(&mut tail[..stride]);
        }
    }

    /// `f(self[c], other[from + c])` on every channel `c`, a row at a time.
    pub fn zip_rows(&mut self, other: &Signal, from: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
        assert_eq!(self.len, other.len);
        let len = self.len;
        for_each_chunk(&mut self.data, self.stride, |c, row| {
            f(&mut row[..len], other.row(from + c))
        });
    }

    /// `self[at + c] += scale * other[from + c]` for the `n` channels `c`.
    pub fn add_rows(&mut self, at: usize, other: &Signal, from: usize, n: usize, scale: f32) {
        assert_eq!(self.len, other.len);
        for c in 0..n {
            let src = other.row(from + c);
            for (a, b) in self.row_mut(at + c).iter_mut().zip(src) {
                *a += scale * b;
            }
        }
    }

    /// `self += other`, element by element.
    pub fn add(&mut self, other: &Signal) {
        assert_eq!((self.channels, self.len), (other.channels, other.len));
        // Same length, same stride: the scratch steps past `len` add up harmlessly.
        for_each_chunk(&mut self.data, ELEMENTWISE_CHUNK, |i, part| {
            let start = i * ELEMENTWISE_CHUNK;
            for (a, b) in part.iter_mut().zip(&other.data[start..]) {
                *a += b;
            }
        });
    }

    pub fn map(&mut self, f: impl Fn(f32) -> f32 + Sync + Send) {
        for_each_chunk(&mut self.data, ELEMENTWISE_CHUNK, |_, part| {
            part.iter_mut().for_each(|v| *v = f(*v));
        });
    }

    /// The rows one after another, `channels * len` floats.
    pub fn into_rows(self) -> Vec<f32> {
        (0..self.channels)
            .flat_map(|c| self.row(c).to_vec())
            .collect()
    }
}

/// The activation applied to a convolution's input as it is padded.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    Plain,
    /// `x` where positive, `slope * x` elsewhere.
    LeakyRelu(f32),
}

impl Input {
    fn apply(self, v: f32) -> f32 {
        match self {
            Input::Plain => v,
            Input::LeakyRelu(slope) => {
                if v >= 0.0 {
                    v
                } else {
                    v * slope
                }
            }
        }
    }
}

/// Which kernel this CPU runs: its tile height decides the weights' packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::env::var_os("PERCEPT_NO_AVX512").is_none()
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Output rows held in one tile.
    fn rows(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Avx2 | Isa::Portable => 4,
        }
    }
}

/// `y[o, t] = b[o] + sum_i sum_k w[o, i, k] * act(x)[i, t + k * dilation - pad_left]`, with
/// zeros outside the input (stride 1, one group).
#[derive(Debug, Clone)]
pub struct Conv1d {
    cin: usize,
    cout: usize,
    kernel: usize,
    dilation: usize,
    pad_left: usize,
    pad_right: usize,
    isa: Isa,
    /// `[cout / rows][cin][kernel][rows]`, the last block padded with zero rows.
    packed: Vec<f32>,
    /// `cout` rounded up to whole tiles.
    bias: Vec<f32>,
}

impl Conv1d {
    /// From a `[cout, cin, kernel]` weight (torch's and ONNX's layout).
    pub fn new(
        weight: &[f32],
        [cout, cin, kernel]: [usize; 3],
        bias: Option<&[f32]>,
        dilation: usize,
        [pad_left, pad_right]: [usize; 2],
    ) -> Self {
        Self::with_isa(
            weight,
            [cout, cin, kernel],
            bias,
            dilation,
            [pad_left, pad_right],
            Isa::detect(),
        )
    }

    fn with_isa(
        weight: &[f32],
        [cout, cin, kernel]: [usize; 3],
        bias: Option<&[f32]>,
        dilation: usize,
        [pad_left, pad_right]: [usize; 2],
        isa: Isa,
    ) -> Self {
        assert_eq!(weight.len(), cout * cin * kernel, "weight shape");
        let rows = isa.rows();
        let blocks = cout.div_ceil(rows);
        let mut packed = vec![0.0; blocks * cin * kernel * rows];
        for o in 0..cout {
            let (block, r) = (o / rows, o % rows);
            for i in 0..cin {
                for k in 0..kernel {
                    packed[((block * cin + i) * kernel + k) * rows + r] =
                        weight[(o * cin + i) * kernel + k];
                }
            }
        }
        let mut b = vec![0.0; blocks * rows];
        if let Some(bias) = bias {
            b[..cout].copy_from_slice(&bias[..cout]);
        }
        Conv1d {
            cin,
            cout,
            kernel,
            dilation,
            pad_left,
            pad_right,
            isa,
            packed,
            bias: b,
        }
    }

    fn out_len(&self, len: usize) -> usize {
        (len + self.pad_left + self.pad_right).saturating_sub((self.kernel - 1) * self.dilation)
    }

    /// `W * act(x) + b`.
    ///
    /// # Shapes
    /// - x: `[cin, t]` -> `[cout, t + pad_left + pad_right - (kernel - 1) * dilation]`
    pub fn forward(&self, x: &Signal, act: Input) -> Signal {
        let mut out = Signal::zeros(self.cout, self.out_len(x.len));
        self.run(x, act, &mut out, false);
        out
    }

    /// `x += W * act(x) + b`: a residual connection (`cin == cout`, same length).
    pub fn residual(&self, x: &mut Signal, act: Input) {
        assert_eq!((x.channels, x.len), (self.cout, self.out_len(x.len)));
        let padded = self.pad(x, act, x.stride);
        self.compute(&padded, x, true);
    }

    fn run(&self, x: &Signal, act: Input, out: &mut Signal, accumulate: bool) {
        let padded = self.pad(x, act, out.stride);
        self.compute(&padded, out, accumulate);
    }

    /// The input activated and padded: `cin` rows of `cols + span` floats, so that every
    /// tap of every output column below `cols` reads inside it.
    fn pad(&self, x: &Signal, act: Input, cols: usize) -> Vec<f32> {
        assert_eq!(x.channels, self.cin, "input channels");
        let stride = cols + (self.kernel - 1) * self.dilation;
        let mut padded = vec![0.0f32; self.cin * stride];
        let left = self.pad_left;
        for_each_chunk(&mut padded, stride, |i, row| {
            let n = x.len.min(stride - left);
            for (p, v) in row[left..left + n].iter_mut().zip(x.row(i)) {
                *p = act.apply(*v);
            }
        });
        padded
    }

    /// The output in column bands of [`COLS_TASK`], one task each (or a few, by row
    /// blocks), every row block of a band in turn: the band's input stays in cache while
    /// all the rows are made.
    fn compute(&self, padded: &[f32], out: &mut Signal, accumulate: bool) {
        let cols = out.stride;
        let stride = cols + (self.kernel - 1) * self.dilation;
        assert_eq!(padded.len(), self.cin * stride);
        assert!(out.data.len() >= self.cout * cols);
        let rows = self.isa.rows();
        let block_weights = self.cin * self.kernel * rows;
        let blocks = self.cout.div_ceil(rows);
        let base = OutPtr(out.data.as_mut_ptr());
        // Short signals (the flow's, at the frame rate) have few bands: their row blocks
        // are split into groups too, so that every thread has work.
        let bands = cols.div_ceil(COLS_TASK);
        let threads = rayon::current_num_threads();
        let groups = if threads > 1 {
            (2 * threads).div_ceil(bands).clamp(1, blocks)
        } else {
            1
        };
        let per_group = blocks.div_ceil(groups);
        let task = |task: usize| {
            let (band, group) = (task / groups, task % groups);
            let from = band * COLS_TASK;
            let to = (from + COLS_TASK).min(cols);
            for block in group * per_group..((group + 1) * per_group).min(blocks) {
                let tile = Tile {
                    x: padded.as_ptr(),
                    x_stride: stride,
                    cin: self.cin,
                    kernel: self.kernel,
                    dilation: self.dilation,
                    w: self.packed[block * block_weights..].as_ptr(),
                    bias: self.bias[block * rows..].as_ptr(),
                    // SAFETY: row block * rows is inside `out` (blocks = ceil(cout / rows)).
                    out: unsafe { base.get().add(block * rows * cols) },
                    out_stride: cols,
                    rows: (self.cout - block * rows).min(rows),
                    from,
                    to,
                    accumulate,
                };
                // SAFETY: `padded` holds `cin` rows of `cols + span` floats, which covers
                // every tap of every column below `cols`; the weights and bias hold a
                // whole tile; the tile's rows are inside `out`, its columns `from..to`
                // are this task's alone; and the kernel chosen is one this CPU has.
                unsafe { tile.run(self.isa) }
            }
        };
        let tasks = bands * groups;
        if threads > 1 && tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}

/// The output of a convolution, shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: the tasks holding it write disjoint columns, and the owner waits for them all.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `y[o, j] = b[o] + sum_i sum_k x[i, q] * w[i, o, k]` over `j = q * stride + k - pad`
/// (torch's ConvTranspose1d, one group, no output padding), run as `stride` interleaved
/// convolutions of `ceil(kernel / stride)` taps.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    phases: Conv1d,
    cout: usize,
    stride: usize,
    kernel: usize,
    pad: usize,
    bias: Vec<f32>,
}

impl ConvTranspose1d {
    /// From a `[cin, cout, kernel]` weight (torch's and ONNX's layout).
    pub fn new(
        weight: &[f32],
        [cin, cout, kernel]: [usize; 3],
        bias: Option<&[f32]>,
        stride: usize,
        pad: usize,
    ) -> Self {
        assert_eq!(weight.len(), cin * cout * kernel, "weight shape");
        let taps = kernel.div_ceil(stride);
        // Phase r's output q sums w[.., m * stride + r] * x[q - m]: a convolution over x
        // padded by taps - 1 on each side, with the taps in reverse.
        let mut w = vec![0.0; stride * cout * cin * taps];
        for r in 0..stride {
            for o in 0..cout {
                for i in 0..cin {
                    for m in 0..taps {
                        let k = m * stride + r;
                        if k < kernel {
                            w[(((r * cout + o) * cin + i) * taps) + taps - 1 - m] =
                                weight[(i * cout + o) * kernel + k];
                        }
                    }
                }
            }
        }
        ConvTranspose1d {
            phases: Conv1d::new(
                &w,
                [stride * cout, cin, taps],
                None,
                1,
                [taps - 1, taps - 1],
            ),
            cout,
            stride,
            kernel,
            pad,
            bias: bias.map_or_else(|| vec![0.0; cout], <[f32]>::to_vec),
        }
    }

    /// # Shapes
    /// - x: `[cin, t]` -> `[cout, (t - 1) * stride + kernel - 2 * pad]`
    pub fn forward(&self, x: &Signal, act: Input) -> Signal {
        let phases = self.phases.forward(x, act);
        let len = ((x.len.max(1) - 1) * self.stride + self.kernel).saturating_sub(2 * self.pad);
        let mut out = Signal::zeros(self.cout, len);
        let (s, pad, cout) = (self.stride, self.pad, self.cout);
        for_each_chunk(&mut out.data, out.stride, |o, row| {
            let b = self.bias[o];
            let sources: Vec<&[f32]> = (0..s).map(|r| phases.row(r * cout + o)).collect();
            // Output j is phase (j + pad) % s of step (j + pad) / s: whole steps of `s`
            // outputs after the first partial one.
            let mut j = 0;
            let (mut q, mut r) = (pad / s, pad % s);
            while j < len {
                let n = (s - r).min(len - j);
                for (k, v) in row[j..j + n].iter_mut().enumerate() {
                    *v = sources[r + k][q] + b;
                }
                j += n;
                q += 1;
                r = 0;
            }
        });
        out
    }
}

/// One block of output rows over all columns: the kernels' arguments.
struct Tile {
    x: *const f32,
    x_stride: usize,
    cin: usize,
    kernel: usize,
    dilation: usize,
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
    out_stride: usize,
    /// Rows to store (the last block may have fewer than the kernel's tile).
    rows: usize,
    /// Columns to compute, both multiples of every kernel's tile width.
    from: usize,
    to: usize,
    accumulate: bool,
}

impl Tile {
    /// # Safety
    /// The pointers must cover what [`Conv1d::run`] promises, and `isa` must be this CPU's.
    unsafe fn run(&self, isa: Isa) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller passes what `Isa::detect` found.
            Isa::Avx512 => unsafe { x86::tile_avx512(self) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::tile_avx2(self) },
            _ => unsafe { tile_portable(self) },
        }
    }
}

/// The portable kernel: 4 rows by 16 columns, plain arrays the compiler vectorises.
///
/// # Safety
/// As [`Tile::run`].
unsafe fn tile_portable(t: &Tile) {
    const R: usize = 4;
    const C: usize = 16;
    let mut t0 = t.from;
    while t0 < t.to {
        let mut acc = [[0.0f32; C]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: the bias holds a whole tile; stored rows are inside `out`.
            let b = unsafe { *t.bias.add(r) };
            for (c, v) in a.iter_mut().enumerate() {
                *v = if t.accumulate && r < t.rows {
                    b + unsafe { *t.out.add(r * t.out_stride + t0 + c) }
                } else {
                    b
                };
            }
        }
        for i in 0..t.cin {
            for k in 0..t.kernel {
                // SAFETY: row i, columns t0 + k * dilation .. + C are inside the padding.
                let xs: &[f32] = unsafe {
                    std::slice::from_raw_parts(t.x.add(i * t.x_stride + t0 + k * t.dilation), C)
                };
                let ws: &[f32] =
                    unsafe { std::slice::from_raw_parts(t.w.add((i * t.kernel + k) * R), R) };
                for (a, &w) in acc.iter_mut().zip(ws) {
                    for (v, &x) in a.iter_mut().zip(xs) {
                        *v += w * x;
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(t.rows) {
            // SAFETY: row r < rows, columns t0 .. t0 + C <= cols <= out_stride.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(t.out.add(r * t.out_stride + t0), C) };
            dst.copy_from_slice(a);
        }
        t0 += C;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Tile;
    use std::arch::x86_64::*;

    /// One x86 kernel: `R` rows by `V` vectors of `L` lanes, every accumulator in a
    /// register; the weights of a tap are broadcast one row at a time.
    macro_rules! tile_kernel {
        ($name:ident, $features:literal, $vec:ty, $lanes:literal, $rows:literal, $vecs:literal,
         $zero:ident, $set1:ident, $loadu:ident, $storeu:ident, $add:ident, $fmadd:ident) => {
            /// # Safety
            /// As [`Tile::run`], on a CPU with the features named.
            #[target_feature(enable = $features)]
            pub unsafe fn $name(t: &Tile) {
                const R: usize = $rows;
                const V: usize = $vecs;
                const L: usize = $lanes;
                let mut t0 = t.from;
                while t0 < t.to {
                    let mut acc: [[$vec; V]; R] = [[$zero(); V]; R];
                    for r in 0..R {
                        // SAFETY (all of this block): the pointers cover what
                        // `Conv1d::run` promises; rows past `t.rows` are never loaded
                        // or stored.
                        let b = unsafe { $set1(*t.bias.add(r)) };
                        for v in 0..V {
                            acc[r][v] = if t.accumulate && r < t.rows {
                                let p = unsafe { t.out.add(r * t.out_stride + t0 + v * L) };
                                $add(b, unsafe { $loadu(p) })
                            } else {
                                b
                            };
                        }
                    }
                    for i in 0..t.cin {
                        let xr = unsafe { t.x.add(i * t.x_stride + t0) };
                        let wr = unsafe { t.w.add(i * t.kernel * R) };
                        for k in 0..t.kernel {
                            let xk = unsafe { xr.add(k * t.dilation) };
                            let mut xs: [$vec; V] = [$zero(); V];
                            for v in 0..V {
                                xs[v] = unsafe { $loadu(xk.add(v * L)) };
                            }
                            for r in 0..R {
                                let w = unsafe { $set1(*wr.add(k * R + r)) };
                                for v in 0..V {
                                    acc[r][v] = $fmadd(w, xs[v], acc[r][v]);
                                }
                            }
                        }
                    }
                    for r in 0..R.min(t.rows) {
                        for v in 0..V {
                            unsafe { $storeu(t.out.add(r * t.out_stride + t0 + v * L), acc[r][v]) };
                        }
                    }
                    t0 += V * L;
                }
            }
        };
    }

    tile_kernel!(
        tile_avx512,
        "avx512f",
        __m512,
        16,
        8,
        3,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_add_ps,
        _mm512_fmadd_ps
    );
    tile_kernel!(
        tile_avx2,
        "avx2,fma",
        __m256,
        8,
        4,
        3,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_add_ps,
        _mm256_fmadd_ps
    );
}

/// WaveNet's gate, `a = tanh(a) * sigmoid(b)`, element by element.
pub fn gate(a: &mut [f32], b: &[f32]) {
    for (a, &b) in a.iter_mut().zip(b) {
        *a = tanh(*a) / (1.0 + exp(-b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic pseudo-random sequence in [-1, 1).
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The definition, one output at a time, in f64.
    #[allow(clippy::too_many_arguments)]
    fn conv_reference(
        x: &[f32],
        [cin, len]: [usize; 2],
        w: &[f32],
        [cout, kernel]: [usize; 2],
        b: &[f32],
        dilation: usize,
        [pl, pr]: [usize; 2],
        slope: f32,
    ) -> Vec<f32> {
        let out_len = len + pl + pr - (kernel - 1) * dilation;
        let mut y = vec![0.0; cout * out_len];
        for o in 0..cout {
            for t in 0..out_len {
                let mut s = f64::from(b[o]);
                for i in 0..cin {
                    for k in 0..kernel {
                        let p = (t + k * dilation) as isize - pl as isize;
                        if (0..len as isize).contains(&p) {
                            let v = x[i * len + p as usize];
                            let v = if v >= 0.0 { v } else { v * slope };
                            s += f64::from(w[(o * cin + i) * kernel + k]) * f64::from(v);
                        }
                    }
                }
                y[o * out_len + t] = s as f32;
            }
        }
        y
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "[{i}] {x} vs {y}");
        }
    }

    #[test]
    fn every_kernel_computes_the_dilated_convolution() {
        // Odd sizes: a partial row block, lengths that are no multiple of any tile.
        for (cin, cout, kernel, dilation, pads, len) in [
            (5, 7, 3, 1, [1, 1], 50),
            (16, 12, 5, 6, [12, 12], 97),
            (3, 1, 7, 1, [3, 3], 131),
            (8, 9, 2, 1, [1, 1], 1),
            (4, 8, 7, 12, [36, 36], 20),
        ] {
            let x = noise(cin * len, 1);
            let w = noise(cout * cin * kernel, 2);
            let b = noise(cout, 3);
            let want = conv_reference(&x, [cin, len], &w, [cout, kernel], &b, dilation, pads, 0.1);
            for isa in isas() {
                let conv = Conv1d::with_isa(&w, [cout, cin, kernel], Some(&b), dilation, pads, isa);
                let got = conv.forward(&Signal::from_rows(cin, len, &x), Input::LeakyRelu(0.1));
                close(&got.clone().into_rows(), &want);
                // The residual form adds the same onto what is there.
                if cin == cout && pads[0] + pads[1] == (kernel - 1) * dilation {
                    let mut y = Signal::from_rows(cin, len, &x);
                    conv.residual(&mut y, Input::LeakyRelu(0.1));
                    let sum: Vec<f32> = want.iter().zip(&x).map(|(a, b)| a + b).collect();
                    close(&y.into_rows(), &sum);
                }
            }
        }
    }

    #[test]
    fn the_gate_is_tanh_times_sigmoid() {
        let (mut a, b) = (vec![0.5f32, -2.0], vec![1.0f32, -30.0]);
        gate(&mut a, &b);
        assert!((a[0] - 0.5f32.tanh() / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert!(a[1].abs() < 1e-12);
    }

    #[test]
    fn signals_narrow_flip_and_add_by_channel() {
        let mut s = Signal::from_rows(3, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(s.narrow(1, 2).into_rows(), [3.0, 4.0, 5.0, 6.0]);
        assert_eq!(s.narrow_time(1, 1).into_rows(), [2.0, 4.0, 6.0]);
        s.flip_channels();
        assert_eq!(s.clone().into_rows(), [5.0, 6.0, 3.0, 4.0, 1.0, 2.0]);
        let other = s.narrow(0, 1);
        s.add_rows(2, &other, 0, 1, -1.0);
        assert_eq!(s.into_rows(), [5.0, 6.0, 3.0, 4.0, -4.0, -4.0]);
    }

    #[test]
    fn the_transposed_convolution_is_torchs() {
        for (cin, cout, kernel, stride, pad, len) in
            [(6, 4, 16, 8, 4, 9), (3, 5, 8, 4, 2, 13), (2, 3, 5, 2, 1, 7)]
        {
            let x = noise(cin * len, 4);
            let w = noise(cin * cout * kernel, 5);
            let b = noise(cout, 6);
            // y[o, q * stride + k - pad] += x[i, q] * w[i, o, k]
            let out_len = (len - 1) * stride + kernel - 2 * pad;
            let mut want = vec![0.0f64; cout * out_len];
            for o in 0..cout {
                for j in 0..out_len {
                    want[o * out_len + j] = f64::from(b[o]);
                }
                for i in 0..cin {
                    for q in 0..len {
                        for k in 0..kernel {
                            let j = (q * stride + k) as isize - pad as isize;
                            if (0..out_len as isize).contains(&j) {
                                want[o * out_len + j as usize] += f64::from(x[i * len + q])
                                    * f64::from(w[(i * cout + o) * kernel + k]);
                            }
                        }
                    }
                }
            }
            let want: Vec<f32> = want.into_iter().map(|v| v as f32).collect();
            let up = ConvTranspose1d::new(&w, [cin, cout, kernel], Some(&b), stride, pad);
            let got = up.forward(&Signal::from_rows(cin, len, &x), Input::Plain);
            close(&got.into_rows(), &want);
        }
    }
}
