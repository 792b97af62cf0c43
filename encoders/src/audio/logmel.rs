//! Log-mel spectrogram exactly as Whisper computes it (openai-whisper's `audio.py`):
//!
//! ```text
//! x: 16 kHz mono, n samples
//! reflect-pad 200 samples each side; frames of 400 every 160 samples; periodic Hann
//! power[f, t] = |rfft(frame_t * hann)[f]|^2          f = 0..201, t = 0..n/160 (last dropped)
//! mel[m, t]   = Σ_f filters[m, f] power[f, t]        80 Slaney mel filters (librosa's)
//! y = log10(max(mel, 1e-10)); y = max(y, max(y) - 8); y = (y + 4) / 4
//! ```
//!
//! The FFT is realfft's (400 is not a power of two, which burn-signal's STFT requires).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
const BINS: usize = N_FFT / 2 + 1;

/// `[n_mels, frames]`, mel bin major.
#[derive(Debug, Clone, PartialEq)]
pub struct MelSpectrogram {
    pub n_mels: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

pub struct LogMel {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// `[N_MELS, BINS]`.
    filters: Vec<f32>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    pub fn new() -> Self {
        let window = (0..N_FFT)
            .map(|k| {
                let x = 2.0 * std::f64::consts::PI * k as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        LogMel {
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
            window,
            filters: mel_filters(),
        }
    }

    /// The filterbank, `[80, 201]` row-major.
    pub fn filters(&self) -> &[f32] {
        &self.filters
    }

    /// The log-mel of `samples` (16 kHz mono): `samples.len() / 160` frames. Empty or
    /// very short audio gives zero frames.
    pub fn compute(&self, samples: &[f32]) -> MelSpectrogram {
        let frames = samples.len() / HOP;
        let padded = reflect_pad(samples, N_FFT / 2);
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0f64; BINS];
        let mut mel = vec![0f64; N_MELS * frames];
        for t in 0..frames {
            let frame = &padded[t * HOP..t * HOP + N_FFT];
            for ((i, &x), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *i = x * w;
            }
            self.fft
                .process(&mut input, &mut spectrum)
                .expect("buffers come from the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = f64::from(c.re) * f64::from(c.re) + f64::from(c.im) * f64::from(c.im);
            }
            for m in 0..N_MELS {
                let row = &self.filters[m * BINS..(m + 1) * BINS];
                mel[m * frames + t] = row.iter().zip(&power).map(|(&f, p)| f64::from(f) * p).sum();
            }
        }
        let logs: Vec<f64> = mel.iter().map(|&v| v.max(1e-10).log10()).collect();
        let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let data = logs
            .iter()
            .map(|&y| ((y.max(top - 8.0) + 4.0) / 4.0) as f32)
            .collect();
        MelSpectrogram {
            n_mels: N_MELS,
            frames,
            data,
        }
    }
}

/// `x` with `pad` samples mirrored on each side, the edge sample not repeated (numpy's
/// and torch's "reflect"). Shorter inputs reflect as far as they go, then repeat zeros.
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f32> {
    let n = x.len() as isize;
    let at = |i: isize| -> f32 {
        if n == 0 {
            return 0.0;
        }
        let period = 2 * (n - 1).max(1);
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        x[j as usize]
    };
    (-(pad as isize)..n + pad as isize).map(at).collect()
}

/// librosa's `filters.mel(sr=16000, n_fft=400, n_mels=80)`: triangles on the Slaney mel
/// scale (linear below 1 kHz, logarithmic above), each normalised to unit area
/// (`2 / (f_hi - f_lo)`). Whisper ships these values in `mel_filters.npz`.
fn mel_filters() -> Vec<f32> {
    let fmax = SAMPLE_RATE as f64 / 2.0;
    let mel_max = hz_to_mel(fmax);
    let points: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(mel_max * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let fft_freqs: Vec<f64> = (0..BINS)
        .map(|k| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64)
        .collect();
    let mut filters = vec![0f32; N_MELS * BINS];
    for m in 0..N_MELS {
        let (lo, centre, hi) = (points[m], points[m + 1], points[m + 2]);
        let norm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let rising = (f - lo) / (centre - lo);
            let falling = (hi - f) / (hi - centre);
            filters[m * BINS + k] = (rising.min(falling).max(0.0) * norm) as f32;
        }
    }
    filters
}

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / log_step()
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (m - MIN_LOG_MEL)).exp()
    } else {
        F_SP * m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_pad_mirrors_without_repeating_the_edge() {
        assert_eq!(
            reflect_pad(&[1.0, 2.0, 3.0, 4.0], 2),
            [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]
        );
        assert_eq!(LogMel::new().compute(&[]).frames, 0);
        assert_eq!(LogMel::new().compute(&[0.5; 100]).frames, 0);
    }
}
