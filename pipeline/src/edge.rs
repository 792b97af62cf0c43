//! Bounded edges between stages.
//!
//! An edge is a `crossbeam-channel` of fixed capacity with a policy for a full queue:
//! - `block`: the producer waits (lossless back-pressure: audio, text, replay);
//! - `latest`: the oldest queued item is dropped and counted (live camera frames, so that
//!   latency stays bounded when the consumer is slower than the source).
//!
//! Items move, never copy: a frame travels as whatever owns its pixels (an `Arc`, a `Vec`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Duration;

use crossbeam_channel::{
    Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError, bounded,
};
use serde::{Deserialize, Serialize};

/// How often a blocked producer checks that its consumer is still there.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// What a full edge does with a new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Block,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeConfig {
    pub capacity: usize,
    pub policy: Policy,
}

impl EdgeConfig {
    pub fn block(capacity: usize) -> Self {
        EdgeConfig {
            capacity: capacity.max(1),
            policy: Policy::Block,
        }
    }

    pub fn latest(capacity: usize) -> Self {
        EdgeConfig {
            capacity: capacity.max(1),
            policy: Policy::Latest,
        }
    }
}

/// Counters of one edge, shared by both ends and the metrics reporter.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
}

/// A snapshot of an edge's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EdgeStats {
    pub sent: u64,
    pub received: u64,
    pub dropped: u64,
    pub queued: usize,
}

/// The consumer went away (it finished or failed): nothing more can be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the downstream stage has stopped")]
pub struct Closed;

/// What [`Input::recv_timeout`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv<T> {
    Item(T),
    /// End of stream: every producer is gone and the queue is drained.
    End,
    Timeout,
}

/// The producing end of an edge.
pub struct Output<T> {
    tx: Sender<T>,
    /// For `latest`: a handle on the queue to take the oldest item out when full.
    oldest: Option<Receiver<T>>,
    consumer_alive: Arc<AtomicBool>,
    counters: Arc<EdgeCounters>,
}

/// The consuming end of an edge.
pub struct Input<T> {
    rx: Receiver<T>,
    consumer_alive: Arc<AtomicBool>,
    counters: Arc<EdgeCounters>,
}

/// A monitor on an edge, for metrics.
#[derive(Clone)]
pub struct EdgeProbe<T> {
    rx: Receiver<T>,
    counters: Arc<EdgeCounters>,
}

/// Creates an edge.
pub fn edge<T>(config: EdgeConfig) -> (Output<T>, Input<T>, EdgeProbe<T>) {
    let (tx, rx) = bounded(config.capacity.max(1));
    let counters = Arc::new(EdgeCounters::default());
    let consumer_alive = Arc::new(AtomicBool::new(true));
    let oldest = (config.policy == Policy::Latest).then(|| rx.clone());
    let probe = EdgeProbe {
        rx: rx.clone(),
        counters: counters.clone(),
    };
    (
        Output {
            tx,
            oldest,
            consumer_alive: consumer_alive.clone(),
            counters: counters.clone(),
        },
        Input {
            rx,
            consumer_alive,
            counters,
        },
        probe,
    )
}

/// A second producer on the same edge: the stream ends when every producer has gone.
impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        Output {
            tx: self.tx.clone(),
            oldest: self.oldest.clone(),
            consumer_alive: self.consumer_alive.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> Output<T> {
    /// Sends one item, waiting (`block`) or dropping the oldest queued item (`latest`) when
    /// the queue is full. Fails once the consumer has gone.
    pub fn send(&self, item: T) -> Result<(), Closed> {
        if !self.consumer_alive.load(Ordering::Acquire) {
            return Err(Closed);
        }
        match &self.oldest {
            // The metrics probe holds a receiver too, so a blocked send would not see the
            // consumer go: wait in slices and look.
            None => {
                let mut item = item;
                loop {
                    match self.tx.send_timeout(item, CHECK_EVERY) {
                        Ok(()) => break,
                        Err(SendTimeoutError::Disconnected(_)) => return Err(Closed),
                        Err(SendTimeoutError::Timeout(back)) => {
                            if !self.consumer_alive.load(Ordering::Acquire) {
                                return Err(Closed);
                            }
                            item = back;
                        }
                    }
                }
            }
            Some(oldest) => {
                let mut item = item;
                loop {
                    match self.tx.try_send(item) {
                        Ok(()) => break,
                        Err(TrySendError::Disconnected(_)) => return Err(Closed),
                        Err(TrySendError::Full(back)) => {
                            item = back;
                            if oldest.try_recv().is_ok() {
                                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            if !self.consumer_alive.load(Ordering::Acquire) {
                                return Err(Closed);
                            }
                        }
                    }
                }
            }
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl<T> Input<T> {
    /// The next item, or `None` at end of stream (every producer gone and the queue drained).
    pub fn recv(&self) -> Option<T> {
        let item = self.rx.recv().ok()?;
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        Some(item)
    }

    /// Like [`Input::recv`], but gives up after `timeout`, so that a stage waiting on a
    /// quiet input can look at the stop flag.
    pub fn recv_timeout(&self, timeout: Duration) -> Recv<T> {
        match self.rx.recv_timeout(timeout) {
            Ok(item) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                Recv::Item(item)
            }
            Err(RecvTimeoutError::Disconnected) => Recv::End,
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
        }
    }

    /// Items waiting in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl<T> Iterator for Input<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.recv()
    }
}

impl<T> Drop for Input<T> {
    fn drop(&mut self) {
        // A `latest` producer holds a receiver of its own, so the channel alone would not
        // tell it that the consumer is gone.
        self.consumer_alive.store(false, Ordering::Release);
    }
}

impl<T> EdgeProbe<T> {
    pub fn stats(&self) -> EdgeStats {
        EdgeStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            received: self.counters.received.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            queued: self.rx.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_drops_the_oldest_and_counts_it() {
        let (tx, rx, probe) = edge(EdgeConfig::latest(2));
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(rx.collect::<Vec<_>>(), vec![3, 4]);
        let s = probe.stats();
        assert_eq!((s.sent, s.dropped, s.received, s.queued), (5, 3, 2, 0));
    }

    #[test]
    fn a_gone_consumer_closes_both_policies() {
        for config in [EdgeConfig::block(1), EdgeConfig::latest(1)] {
            let (tx, rx, _) = edge(config);
            tx.send(1).unwrap();
            drop(rx);
            assert_eq!(tx.send(2), Err(Closed), "{config:?}");
        }
    }

    #[test]
    fn a_blocked_producer_sees_its_consumer_go() {
        let (tx, rx, _probe) = edge(EdgeConfig::block(1));
        tx.send(1).unwrap();
        let t = std::thread::spawn(move || tx.send(2));
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert_eq!(t.join().unwrap(), Err(Closed));
    }

    #[test]
    fn end_of_stream_after_the_queue_drains() {
        let (tx, rx, _) = edge(EdgeConfig::block(4));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Recv::Timeout);
        tx.send("a").unwrap();
        tx.send("b").unwrap();
        drop(tx);
        assert_eq!(rx.recv(), Some("a"));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Recv::Item("b"));
        assert_eq!(rx.recv(), None);
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Recv::End);
    }
}
