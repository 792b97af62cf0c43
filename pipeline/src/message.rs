//! The envelope every item travels in.

use std::time::{Duration, Instant};

/// An item with the sequence number its source gave it and the time it was captured, so
/// a sink can report end-to-end latency and a stage can align modalities in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    pub seq: u64,
    pub captured: Instant,
    pub payload: T,
}

impl<T> Envelope<T> {
    pub fn new(seq: u64, captured: Instant, payload: T) -> Self {
        Envelope {
            seq,
            captured,
            payload,
        }
    }

    /// The same envelope around another payload: what a stage emits for what it received.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            seq: self.seq,
            captured: self.captured,
            payload: f(self.payload),
        }
    }

    /// Time since capture.
    pub fn age(&self) -> Duration {
        self.captured.elapsed()
    }
}

/// What a graph file's edges carry: its port types are the variants' names ("text",
/// "frame", "audio"), checked to match before the graph starts, so a stage never meets
/// a payload of the wrong kind. Graphs built in code use their own types directly.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Text(String),
    Frame(crate::frame::Frame),
    Audio(crate::audio::AudioChunk),
}

impl Payload {
    pub fn port_type(&self) -> &'static str {
        match self {
            Payload::Text(_) => "text",
            Payload::Frame(_) => "frame",
            Payload::Audio(_) => "audio",
        }
    }

    /// One line for a human: the text itself, or what the frame or chunk is.
    pub fn summary(&self) -> String {
        match self {
            Payload::Text(t) => t.clone(),
            Payload::Frame(f) => format!("frame {}x{}", f.width, f.height),
            Payload::Audio(a) => format!("audio {:.3} s at {} Hz", a.duration_s(), a.sample_rate),
        }
    }
}
