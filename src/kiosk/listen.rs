//! Listening: audio at any rate in, utterances out (16 kHz, Silero VAD per 512 samples,
//! the segmenter), each stamped with the moment its end was confirmed (the end of speech,
//! from which the kiosk's latencies count).

use std::time::Instant;

use encoders::audio::silero::CHUNK;
use encoders::audio::{Segmenter, SegmenterConfig, Silero};
use pipeline::audio::To16k;
use pipeline::{AudioChunk, Envelope, Input, Output, StageContext, StageResult};

/// Speech cut out of the stream; `captured` of its envelope is the end of speech.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// Where it was in the 16 kHz stream, samples.
    pub start: usize,
    pub end: usize,
    pub samples: Vec<f32>,
}

impl Utterance {
    /// Its place in the audio, seconds.
    pub fn span_s(&self) -> (f64, f64) {
        (self.start as f64 / 16_000.0, self.end as f64 / 16_000.0)
    }
}

/// Audio at any rate in, utterances out: 16 kHz, VAD per 512 samples, segmenter.
pub fn listen(
    ctx: &StageContext,
    vad: &Silero,
    input: Input<Envelope<AudioChunk>>,
    output: &Output<Envelope<Utterance>>,
) -> StageResult {
    let device = vad.stft.weight.val().device();
    let mut state = vad.start(&device);
    let mut segmenter = Segmenter::new(SegmenterConfig::default());
    let mut to16k = To16k::default();
    // Everything heard so far that a segment may still need (from the oldest open start).
    let (mut heard, mut heard_from) = (Vec::<f32>::new(), 0usize);
    let mut pending = Vec::<f32>::new();
    let mut seq = 0;
    let mut emit = |segment: encoders::audio::Segment, heard: &[f32], heard_from: usize| {
        let a = segment.start.saturating_sub(heard_from).min(heard.len());
        let b = segment.end.saturating_sub(heard_from).min(heard.len());
        let u = Utterance {
            start: segment.start,
            end: segment.end,
            samples: heard[a..b].to_vec(),
        };
        let sent = output.send(Envelope::new(seq, Instant::now(), u));
        seq += 1;
        sent
    };
    for chunk in input {
        ctx.item_in();
        for c in to16k.push(chunk)? {
            pending.extend_from_slice(&c.payload.samples);
        }
        while pending.len() >= CHUNK {
            let block: Vec<f32> = pending.drain(..CHUNK).collect();
            let p = ctx.busy(|| vad.forward(&block, &mut state));
            heard.extend_from_slice(&block);
            if let Some(segment) = segmenter.push(p) {
                emit(segment, &heard, heard_from)?;
                ctx.item_out();
            }
            if !segmenter.in_speech() {
                // Keep a little before the next speech for its padding.
                let keep = heard.len().min(2 * CHUNK);
                heard_from += heard.len() - keep;
                heard.drain(..heard.len() - keep);
            }
        }
    }
    if let Some(c) = to16k.finish() {
        pending.extend_from_slice(&c.payload.samples);
    }
    if !pending.is_empty() {
        let p = vad.forward(&pending, &mut state);
        heard.extend_from_slice(&pending);
        if let Some(segment) = segmenter.push(p) {
            emit(segment, &heard, heard_from)?;
        }
    }
    if let Some(segment) = segmenter.finish(heard_from + heard.len()) {
        emit(segment, &heard, heard_from)?;
    }
    Ok(())
}
