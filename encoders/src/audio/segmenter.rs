//! Speech segments from per-chunk VAD probabilities, as they come: the rules of
//! silero-vad's `get_speech_timestamps` (thresholds with hysteresis, minimum speech and
//! silence, padding), run as a stream so a microphone's utterances are cut while it runs.
//!
//! A segment opens at a chunk with `p >= threshold`; chunks with `p < threshold - 0.15`
//! start a tentative end, confirmed once `min_silence` has passed with no chunk back above
//! the threshold; segments shorter than `min_speech` are dropped; each kept segment is
//! widened by `pad` on both sides (the gap between two segments is split when it is
//! shorter than two pads). With a silence minimum longer than two pads, as the defaults
//! have, the stream gives exactly the offline function's segments.

/// Parameters in samples at 16 kHz.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmenterConfig {
    pub threshold: f32,
    pub min_speech: usize,
    pub min_silence: usize,
    pub pad: usize,
    /// Samples per VAD chunk.
    pub chunk: usize,
    /// Longest segment: speech that never pauses is cut here and goes on in the next one,
    /// so the buffer behind it stays bounded (silero-vad's `max_speech_duration_s`).
    pub max_speech: usize,
}

impl Default for SegmenterConfig {
    /// silero-vad's defaults: 0.5, 250 ms of speech, 100 ms of silence, 30 ms of padding.
    fn default() -> Self {
        SegmenterConfig {
            threshold: 0.5,
            min_speech: 4000,
            min_silence: 1600,
            pad: 480,
            chunk: super::silero::CHUNK,
            // 30 s: Whisper's whole window.
            max_speech: 30 * 16_000,
        }
    }
}

/// A stretch of speech, in samples from the start of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
pub struct Segmenter {
    config: SegmenterConfig,
    /// Chunks seen.
    chunks: usize,
    /// Start of the open segment.
    start: Option<usize>,
    /// Start of the silence that may end it.
    silence_from: Option<usize>,
    /// End of the last segment emitted (padding never reaches back past it).
    last_end: usize,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Segmenter {
            config,
            chunks: 0,
            start: None,
            silence_from: None,
            last_end: 0,
        }
    }

    /// Whether a segment is open (speech heard, its end not yet confirmed).
    pub fn in_speech(&self) -> bool {
        self.start.is_some()
    }

    /// Takes the next chunk's probability; returns the segment it closed, if any.
    pub fn push(&mut self, p: f32) -> Option<Segment> {
        let c = self.config;
        let at = self.chunks * c.chunk;
        self.chunks += 1;
        let negative = (c.threshold - 0.15).max(0.01);
        if let Some(start) = self.start
            && at + c.chunk + c.pad - start >= c.max_speech
        {
            self.start = None;
            self.silence_from = None;
            return self.close(start, at + c.chunk, at + c.chunk);
        }
        if p >= c.threshold {
            self.silence_from = None;
            self.start.get_or_insert(at);
            return None;
        }
        let start = self.start?;
        if p >= negative {
            return None;
        }
        let from = *self.silence_from.get_or_insert(at);
        if at - from < c.min_silence {
            return None;
        }
        self.start = None;
        self.silence_from = None;
        self.close(start, from, usize::MAX)
    }

    /// Ends the stream of `total` samples: the open segment, if long enough.
    pub fn finish(&mut self, total: usize) -> Option<Segment> {
        let start = self.start.take()?;
        self.silence_from = None;
        self.close(start, total, total)
    }

    fn close(&mut self, start: usize, end: usize, total: usize) -> Option<Segment> {
        if end - start <= self.config.min_speech {
            return None;
        }
        let pad = self.config.pad;
        let segment = Segment {
            start: start.saturating_sub(pad).max(self.last_end),
            end: (end + pad).min(total),
        };
        self.last_end = segment.end;
        Some(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probs: &[f32], total: usize) -> Vec<Segment> {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let mut out: Vec<Segment> = probs.iter().filter_map(|&p| s.push(p)).collect();
        out.extend(s.finish(total));
        out
    }

    #[test]
    fn short_blips_are_dropped_and_pauses_within_speech_kept() {
        // 5 chunks of speech (2560 samples < 4000): dropped.
        let mut p = vec![0.0; 10];
        p.extend([0.9; 5]);
        p.extend([0.0; 10]);
        assert!(run(&p, p.len() * 512).is_empty());
        // 20 chunks of speech with a 3-chunk dip (1536 < 1600 samples): one segment.
        let mut p = vec![0.0; 4];
        p.extend([0.9; 10]);
        p.extend([0.1; 3]);
        p.extend([0.9; 10]);
        p.extend([0.0; 8]);
        let segs = run(&p, p.len() * 512);
        assert_eq!(
            segs,
            [Segment {
                start: 4 * 512 - 480,
                end: 27 * 512 + 480
            }]
        );
    }

    /// Issue 15: speech that never pauses kept the kiosk's buffer growing without end.
    #[test]
    fn unbroken_speech_is_cut_every_30_seconds() {
        let p = vec![0.9; 3 * 30 * 16_000 / 512 + 10];
        let segs = run(&p, p.len() * 512);
        assert_eq!(segs.len(), 4, "{segs:?}");
        for s in &segs[..3] {
            assert!(s.end - s.start <= 30 * 16_000, "{s:?}");
        }
        assert!(segs.windows(2).all(|w| w[0].end <= w[1].start));
    }

    #[test]
    fn speech_to_the_end_closes_at_the_stream_end() {
        let mut p = vec![0.0; 2];
        p.extend([0.8; 20]);
        let segs = run(&p, p.len() * 512 - 100);
        assert_eq!(
            segs,
            [Segment {
                start: 2 * 512 - 480,
                end: 22 * 512 - 100
            }]
        );
    }
}
