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
