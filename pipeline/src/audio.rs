//! Audio as the pipeline carries it: mono f32 chunks at 16 kHz (what Silero VAD and
//! Whisper read), whatever rate and channel count the microphone or file delivered.
//!
//! Every audio path (microphone, audio file, replay) goes through [`Resampler16k`], so a
//! recording replays through the very code that handled it live.

use std::sync::Arc;
use std::time::Instant;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::edge::{Input, Output};
use crate::graph::{StageContext, StageResult};
use crate::message::Envelope;

/// The pipeline's audio rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// A stretch of mono audio. The samples are shared, so chunks move between stages
/// without copying.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    pub sample_rate: u32,
    pub samples: Arc<[f32]>,
}

impl AudioChunk {
    pub fn new(sample_rate: u32, samples: Vec<f32>) -> Self {
        AudioChunk {
            sample_rate,
            samples: samples.into(),
        }
    }

    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    #[error("cannot resample from {rate} Hz: {reason}")]
    Resampler { rate: u32, reason: String },
}

/// Interleaved samples of `channels` channels, averaged to one.
pub fn to_mono(interleaved: &[f32], channels: usize) -> Vec<f32> {
    match channels {
        0 => Vec::new(),
        1 => interleaved.to_vec(),
        n => interleaved
            .chunks_exact(n)
            .map(|frame| frame.iter().sum::<f32>() / n as f32)
            .collect(),
    }
}

/// Streaming conversion of mono audio at any rate to 16 kHz: push chunks of any size as
/// they come, take what is ready, and [`Resampler16k::finish`] at the end of the stream.
///
/// The output is aligned with the input: the filter's start-up delay is trimmed and
/// `finish` flushes the tail, so `n` input samples become `round(n * 16000 / rate)` output
/// samples in all (a plain copy when the rate is already 16 kHz).
pub struct Resampler16k {
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    /// Output samples still to discard: the filter's delay.
    to_trim: usize,
    samples_in: u64,
    samples_out: u64,
    rate: u32,
}

impl Resampler16k {
    /// About how many input samples the FFT resampler works on at a time: short enough
    /// for a small delay, long enough for an efficient FFT.
    const CHUNK: usize = 1024;

    /// The chunk actually used: a multiple of twice the rate's smallest FFT block
    /// (`rate / gcd(rate, 16000)`), so the FFT's input length is even. With an odd length
    /// (1323 at 44.1 kHz) the filter's centre falls half an input sample off its nominal
    /// delay and every output sample comes early by that much.
    fn chunk_for(rate: u32) -> usize {
        let (mut a, mut b) = (rate as usize, SAMPLE_RATE as usize);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        let block = 2 * (rate as usize / a.max(1));
        Self::CHUNK.div_ceil(block) * block
    }

    pub fn new(input_rate: u32) -> Result<Self, AudioError> {
        let inner = if input_rate == SAMPLE_RATE {
            None
        } else {
            // One FFT per chunk (no sub-chunks, which would bring back odd lengths).
            let fft = Fft::new_custom(
                input_rate as usize,
                SAMPLE_RATE as usize,
                Self::chunk_for(input_rate),
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .map_err(|e| AudioError::Resampler {
                rate: input_rate,
                reason: e.to_string(),
            })?;
            Some(fft)
        };
        let to_trim = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Resampler16k {
            inner,
            pending: Vec::new(),
            to_trim,
            samples_in: 0,
            samples_out: 0,
            rate: input_rate,
        })
    }

    /// Feeds samples; returns the 16 kHz samples that are ready.
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        self.samples_in += samples.len() as u64;
        let Some(fft) = self.inner.as_mut() else {
            self.samples_out += samples.len() as u64;
            return samples.iter().map(|&v| sane(v)).collect();
        };
        self.pending.extend(samples.iter().map(|&v| sane(v)));
        let mut out = Vec::new();
        let mut used = 0;
        while self.pending.len() - used >= fft.input_frames_next() {
            let n = fft.input_frames_next();
            let chunk = &self.pending[used..used + n];
            out.extend(process(fft, chunk));
            used += n;
        }
        self.pending.drain(..used);
        self.emit(out)
    }

    /// Ends the stream: the samples still inside the filter.
    pub fn finish(&mut self) -> Vec<f32> {
        if self.inner.is_none() {
            return Vec::new();
        }
        let expected =
            (self.samples_in as f64 * f64::from(SAMPLE_RATE) / f64::from(self.rate)).round() as u64;
        let mut out = Vec::new();
        let mut tail = std::mem::take(&mut self.pending);
        // Silence after the end pushes the last real samples through the filter's delay.
        while self.samples_out < expected {
            let Some(fft) = self.inner.as_mut() else {
                break;
            };
            tail.resize(fft.input_frames_next(), 0.0);
            let produced = process(fft, &tail);
            tail.clear();
            let ready = self.emit(produced);
            out.extend(ready);
        }
        let excess = (self.samples_out - expected) as usize;
        out.truncate(out.len().saturating_sub(excess));
        self.samples_out = expected;
        out
    }

    fn emit(&mut self, mut out: Vec<f32>) -> Vec<f32> {
        let trim = self.to_trim.min(out.len());
        out.drain(..trim);
        self.to_trim -= trim;
        self.samples_out += out.len() as u64;
        out
    }
}

/// Audio envelopes at any rate in, 16 kHz envelopes out: what the resampling stage does
/// per chunk, usable inline by a source too. Each output carries the envelope (sequence,
/// capture time) of the input chunk that completed it.
#[derive(Default)]
pub struct To16k {
    current: Option<(u32, Resampler16k)>,
    last: Option<(u64, Instant)>,
}

impl To16k {
    pub fn push(
        &mut self,
        chunk: Envelope<AudioChunk>,
    ) -> Result<Vec<Envelope<AudioChunk>>, AudioError> {
        let rate = chunk.payload.sample_rate;
        let mut out = Vec::new();
        if self.current.as_ref().is_none_or(|(r, _)| *r != rate) {
            // A device that changes rate: flush what the old filter holds, start anew.
            out.extend(self.finish());
            self.current = Some((rate, Resampler16k::new(rate)?));
        }
        self.last = Some((chunk.seq, chunk.captured));
        if let Some((_, r)) = self.current.as_mut() {
            let samples = r.push(&chunk.payload.samples);
            out.extend(wrap(chunk.seq, chunk.captured, samples));
        }
        Ok(out)
    }

    /// The end of the stream: what is left in the filter.
    pub fn finish(&mut self) -> Option<Envelope<AudioChunk>> {
        let (_, mut r) = self.current.take()?;
        let (seq, at) = self.last?;
        wrap(seq, at, r.finish())
    }
}

fn wrap(seq: u64, captured: Instant, samples: Vec<f32>) -> Option<Envelope<AudioChunk>> {
    (!samples.is_empty())
        .then(|| Envelope::new(seq, captured, AudioChunk::new(SAMPLE_RATE, samples)))
}

/// The resampling stage: mono audio at any rate in, 16 kHz out.
pub fn resample_stream(
    ctx: &StageContext,
    input: Input<Envelope<AudioChunk>>,
    output: &Output<Envelope<AudioChunk>>,
) -> StageResult {
    let mut to16k = To16k::default();
    for chunk in input {
        ctx.item_in();
        for out in ctx.busy(|| to16k.push(chunk))? {
            let captured = out.captured;
            output.send(out)?;
            ctx.item_out_since(captured);
        }
    }
    if let Some(out) = to16k.finish() {
        let captured = out.captured;
        output.send(out)?;
        ctx.item_out_since(captured);
    }
    Ok(())
}

/// Loudest sample passed on, in full scales: far past any real signal, small enough that the
/// FFT's sums stay finite.
const LOUDEST: f32 = 16.0;

/// A sample as the resampler may take it: a NaN or infinity (a float WAV can hold them)
/// is silence, and a wild value is clipped. rubato's FFT panics when NaN reaches it
/// ("Imaginary part of first value was non-zero"; found by `tests/fuzz_smoke.rs`).
fn sane(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(-LOUDEST, LOUDEST)
    } else {
        0.0
    }
}

/// One chunk of exactly `input_frames_next()` samples through the resampler.
fn process(fft: &mut Fft<f32>, chunk: &[f32]) -> Vec<f32> {
    let frames = chunk.len();
    let mut out = vec![0.0f32; fft.output_frames_next()];
    let out_frames = out.len();
    let input = InterleavedSlice::new(chunk, 1, frames).expect("one channel of `frames` samples");
    let mut output =
        InterleavedSlice::new_mut(&mut out, 1, out_frames).expect("one channel, sized by rubato");
    let (_, written) = fft
        .process_into_buffer(&input, &mut output, None)
        .expect("buffers sized from the resampler's own figures");
    out.truncate(written);
    out
}

/// What the kiosk's voice is doing, sent over an edge to the stage that captures sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaking {
    /// The first sample goes to the speaker after this instant.
    Started(std::time::Instant),
    /// The last sample was handed over at this instant.
    Ended(std::time::Instant),
}

/// The capturing stage's view of the voice: sound captured while the kiosk speaks, and for
/// [`Mute::TAIL`] after, is replaced by silence, so the kiosk never hears (and answers)
/// itself. Fed by [`Mute::note`] from the edge the speaking stage writes [`Speaking`] to.
#[derive(Debug, Clone, Default)]
pub struct Mute {
    since: Option<std::time::Instant>,
    ended: Option<std::time::Instant>,
}

impl Mute {
    /// Room echo and the speaker's own latency outlast the last sample written.
    pub const TAIL: std::time::Duration = std::time::Duration::from_millis(300);

    pub fn note(&mut self, event: Speaking) {
        match event {
            Speaking::Started(at) => (self.since, self.ended) = (Some(at), None),
            Speaking::Ended(at) => self.ended = Some(at),
        }
    }

    /// Whether sound captured at `at` falls while speaking or within the tail after.
    pub fn is_muted(&self, at: std::time::Instant) -> bool {
        self.since
            .is_some_and(|s| at >= s && self.ended.is_none_or(|e| at <= e + Self::TAIL))
    }

    /// `chunk` as it should reach the listener: silence of the same length when muted.
    pub fn gate(&self, chunk: crate::Envelope<AudioChunk>) -> crate::Envelope<AudioChunk> {
        if !self.is_muted(chunk.captured) {
            return chunk;
        }
        chunk.map(|c| AudioChunk::new(c.sample_rate, vec![0.0; c.samples.len()]))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn mute_silences_what_is_heard_while_speaking_and_just_after() {
        use std::time::{Duration, Instant};
        let mut mute = Mute::default();
        let chunk = |at| crate::Envelope::new(0, at, AudioChunk::new(16_000, vec![0.5; 160]));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(mute.gate(chunk(at(0))).payload.samples[0], 0.5);
        mute.note(Speaking::Started(at(100)));
        assert!(!mute.is_muted(at(99)), "captured before the voice started");
        let during = mute.gate(chunk(at(150))).payload;
        assert!(during.samples.len() == 160 && during.samples.iter().all(|&s| s == 0.0));
        assert!(mute.is_muted(at(5000)), "still speaking");
        mute.note(Speaking::Ended(at(1000)));
        assert!(mute.is_muted(at(1000) + Mute::TAIL));
        assert!(!mute.is_muted(at(1001) + Mute::TAIL));
        mute.note(Speaking::Started(at(2000)));
        assert!(!mute.is_muted(at(1900)) && mute.is_muted(at(2100)));
    }
    use super::*;

    fn sine(rate: u32, freq: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Issue 15: NaN samples (a mutated float WAV) panicked inside rubato's FFT.
    #[test]
    fn non_finite_and_wild_samples_pass_as_silence_or_clipped() {
        for rate in [44_100, 16_000] {
            let mut input = sine(rate, 440.0, rate as usize / 2);
            input[100] = f32::NAN;
            input[200] = f32::INFINITY;
            input[300] = f32::NEG_INFINITY;
            input[400] = 1e38;
            let mut r = Resampler16k::new(rate).unwrap();
            let mut out = r.push(&input);
            out.extend(r.finish());
            assert_eq!(out.len(), 8_000, "{rate} Hz");
            assert!(
                out.iter()
                    .all(|v| v.is_finite() && v.abs() <= 2.0 * LOUDEST),
                "{rate} Hz"
            );
        }
    }

    #[test]
    fn resampled_sine_is_the_sine_sampled_at_16k() {
        for rate in [44_100, 48_000, 8_000, 22_050] {
            let input = sine(rate, 440.0, rate as usize * 2);
            let mut r = Resampler16k::new(rate).unwrap();
            let mut out = Vec::new();
            // Odd chunk sizes, as callbacks deliver.
            for chunk in input.chunks(333) {
                out.extend(r.push(chunk));
            }
            out.extend(r.finish());
            assert_eq!(out.len(), 32_000, "{rate} Hz");
            let want = sine(SAMPLE_RATE, 440.0, out.len());
            // Away from the edges (where the filter sees the step into silence). The bound
            // is -54 dB of the tone; half an input sample of misalignment (the odd-length
            // FFT this avoids) gives 8e-3 at 44.1 kHz.
            let err = out[800..31_200]
                .iter()
                .zip(&want[800..31_200])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-3, "{rate} Hz: max error {err}");
        }
    }

    #[test]
    fn sixteen_khz_passes_through_and_mono_averages() {
        let mut r = Resampler16k::new(16_000).unwrap();
        assert_eq!(r.push(&[0.1, 0.2]), vec![0.1, 0.2]);
        assert!(r.finish().is_empty());
        assert_eq!(to_mono(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
    }
}
