//! An f16 matrix times one f32 vector, on the CPU, split over rayon's pool: Whisper's output
//! projection (the `[51864, 384]` embedding table, read once per decoded token).
//!
//! Decoding is bound by reading that table: in f32 through burn's matmul it is 80 MB per
//! token, 6.3 ms at 2 threads (measured); in f16, as `model.bin` stores it (so nothing is
//! lost), half of that. Each row's dot product keeps eight f32 partial sums, reduced in one
//! fixed order, so the AVX2 and the portable paths give the same bits.

use half::f16;
use rayon::prelude::*;

/// Rows handed to one task.
const ROWS_PER_TASK: usize = 2048;

/// A row-major `[rows, cols]` f16 matrix.
#[derive(Debug, Clone)]
pub struct HalfMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f16>,
}

impl HalfMatrix {
    /// `data` row-major; `None` if it does not hold `rows * cols` values.
    pub fn new(data: Vec<f16>, rows: usize, cols: usize) -> Option<Self> {
        (data.len() == rows * cols).then_some(HalfMatrix { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` (an embedding lookup). Panics if `i` is not below `rows`, as slice indexing.
    pub fn row(&self, i: usize) -> &[f16] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// `y = M x`.
    ///
    /// # Shapes
    /// - x: `[cols]` -> `[rows]`
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "matvec: x has the wrong length");
        let dot = select_dot();
        let mut y = vec![0f32; self.rows];
        y.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * ROWS_PER_TASK;
                for (i, o) in out.iter_mut().enumerate() {
                    let row = &self.data[(first + i) * self.cols..(first + i + 1) * self.cols];
                    *o = dot(row, x);
                }
            });
        y
    }
}

type Dot = fn(&[f16], &[f32]) -> f32;

fn select_dot() -> Dot {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        return avx2::dot;
    }
    portable_dot
}

/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`, the AVX2 reduction's order.
fn reduce(l: &[f32; 8]) -> f32 {
    let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (h[0] + h[2]) + (h[1] + h[3])
}

/// Lane `j` sums positions `j, j + 8, j + 16, ...` with fused multiply-adds; the tail past
/// a multiple of 8 is added to lane 0..n in order, as the AVX2 path does.
fn portable_dot(row: &[f16], x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let whole = row.len() / 8 * 8;
    for (w, v) in row[..whole].chunks_exact(8).zip(x[..whole].chunks_exact(8)) {
        for j in 0..8 {
            lanes[j] = w[j].to_f32().mul_add(v[j], lanes[j]);
        }
    }
    for (j, (w, v)) in row[whole..].iter().zip(&x[whole..]).enumerate() {
        lanes[j] = w.to_f32().mul_add(*v, lanes[j]);
    }
    reduce(&lanes)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::reduce;

    /// # Safety
    /// Only called after detecting AVX2, FMA and F16C (`select_dot`).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_avx2(row: &[f16], x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let whole = row.len() / 8 * 8;
        let mut k = 0;
        while k < whole {
            // SAFETY: k + 8 <= whole <= len of both slices.
            let (w, v) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(k) as *const __m128i)),
                    _mm256_loadu_ps(x.as_ptr().add(k)),
                )
            };
            acc = _mm256_fmadd_ps(w, v, acc);
            k += 8;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: lanes holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        for (j, (w, v)) in row[whole..].iter().zip(&x[whole..]).enumerate() {
            lanes[j] = w.to_f32().mul_add(*v, lanes[j]);
        }
        reduce(&lanes)
    }

    pub fn dot(row: &[f16], x: &[f32]) -> f32 {
        // SAFETY: handed out by `select_dot` only after the features were detected.
        unsafe { dot_avx2(row, x) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_matches_f64_and_both_paths_agree_bit_for_bit() {
        let (rows, cols) = (4099, 389);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let data: Vec<f16> = (0..rows * cols).map(|_| f16::from_f32(next())).collect();
        let x: Vec<f32> = (0..cols).map(|_| next()).collect();
        let m = HalfMatrix::new(data.clone(), rows, cols).unwrap();
        let y = m.matvec(&x);
        for r in (0..rows).step_by(97) {
            let row = &data[r * cols..(r + 1) * cols];
            let exact: f64 = row
                .iter()
                .zip(&x)
                .map(|(w, v)| f64::from(w.to_f32()) * f64::from(*v))
                .sum();
            assert!((f64::from(y[r]) - exact).abs() < 1e-4, "row {r}");
            assert_eq!(y[r].to_bits(), portable_dot(row, &x).to_bits(), "row {r}");
        }
        assert!(HalfMatrix::new(data, rows, cols + 1).is_none());
    }
}
