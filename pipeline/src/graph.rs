//! Running stages: one named thread each, a shared stop flag, and a join that waits for all
//! of them and reports the first failure by stage name.
//!
//! Shutdown is always the same orderly path: sources stop producing (end of input, or
//! the stop flag set by Ctrl-C or by a failed stage), their outputs close, and every
//! stage downstream drains its input and returns. A stage that fails or panics drops its
//! input, so the stages feeding it see [`crate::edge::Closed`] and return too.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;

use crate::edge::{Closed, EdgeConfig, EdgeProbe, EdgeStats, Input, Output, edge};
use crate::metrics::{LatencyHistogram, Percentiles};

/// What a stage returns; any error type will do.
pub type StageResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("stage '{stage}' failed: {message}")]
    Failed { stage: String, message: String },
    #[error("stage '{stage}' panicked: {message}")]
    Panicked { stage: String, message: String },
    #[error("cannot start a thread for stage '{stage}': {message}")]
    Spawn { stage: String, message: String },
}

/// Sets the graph's stop flag: what Ctrl-C does. Cheap to clone and to call from a signal
/// handler thread.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Counters a stage keeps about itself.
#[derive(Debug, Default)]
pub struct StageCounters {
    items_in: AtomicU64,
    items_out: AtomicU64,
    busy_ns: AtomicU64,
    /// Age of items (since capture) as this stage sends them on, or as a sink finishes them.
    latency: Mutex<LatencyHistogram>,
}

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStats {
    pub stage: String,
    pub items_in: u64,
    pub items_out: u64,
    pub busy_ms: f64,
    pub latency: Percentiles,
}

/// What a stage's thread gets: its name, the stop flag that sources poll, and its counters.
#[derive(Debug, Clone)]
pub struct StageContext {
    name: Arc<str>,
    stop: StopHandle,
    counters: Arc<StageCounters>,
}

impl StageContext {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the graph is stopping: a source should stop producing and return.
    pub fn stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// Counts an item taken from an input.
    pub fn item_in(&self) {
        self.counters.items_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an item sent on an output.
    pub fn item_out(&self) {
        self.counters.items_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an item sent on an output and records its age since capture.
    pub fn item_out_since(&self, captured: Instant) {
        self.item_out();
        self.record_latency(captured);
    }

    /// Records the age of an item since capture: what a sink calls as it finishes one.
    pub fn record_latency(&self, captured: Instant) {
        self.counters
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(captured.elapsed());
    }

    /// Runs `work`, counting its time as busy (as opposed to waiting on an edge).
    pub fn busy<R>(&self, work: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let r = work();
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters.busy_ns.fetch_add(ns, Ordering::Relaxed);
        r
    }
}

/// Each stage's name and counters, in spawn order.
type Registry = Vec<(String, Arc<StageCounters>)>;

/// Each watched edge's name and a reader of its counters: the probes are typed by what the
/// edge carries, the readers are not.
type EdgeRegistry = Vec<(String, Box<dyn Fn() -> EdgeStats + Send>)>;

/// A snapshot of one named edge's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedEdgeStats {
    pub edge: String,
    #[serde(flatten)]
    pub stats: EdgeStats,
}

/// Reads every stage's and every watched edge's counters, during the run or after it.
#[derive(Clone, Default)]
pub struct Monitor {
    stages: Arc<Mutex<Registry>>,
    edges: Arc<Mutex<EdgeRegistry>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("stages", &self.stages().len())
            .field("edges", &self.edges().len())
            .finish()
    }
}

impl Monitor {
    /// Adds an edge to the ones [`Monitor::edges`] reports.
    pub fn watch<T: Send + 'static>(&self, name: &str, probe: EdgeProbe<T>) {
        self.edges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), Box::new(move || probe.stats())));
    }

    /// Every watched edge's counters, in the order they were watched.
    pub fn edges(&self) -> Vec<NamedEdgeStats> {
        let edges = self.edges.lock().unwrap_or_else(|p| p.into_inner());
        edges
            .iter()
            .map(|(name, read)| NamedEdgeStats {
                edge: name.clone(),
                stats: read(),
            })
            .collect()
    }

    pub fn stages(&self) -> Vec<StageStats> {
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        stages
            .iter()
            .map(|(name, c)| StageStats {
                stage: name.clone(),
                items_in: c.items_in.load(Ordering::Relaxed),
                items_out: c.items_out.load(Ordering::Relaxed),
                busy_ms: c.busy_ns.load(Ordering::Relaxed) as f64 / 1e6,
                latency: c
                    .latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .percentiles(),
            })
            .collect()
    }
}

/// A running graph of stages.
#[derive(Default)]
pub struct Graph {
    threads: Vec<(String, JoinHandle<()>)>,
    stop: StopHandle,
    first_failure: Arc<Mutex<Option<GraphError>>>,
    monitor: Monitor,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Per-stage counters, readable while the graph runs and after [`Graph::join`].
    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }

    /// A new edge whose counters the graph's [`Monitor`] reports under `name`.
    pub fn edge<T: Send + 'static>(&self, name: &str, config: EdgeConfig) -> (Output<T>, Input<T>) {
        let (tx, rx, probe) = edge(config);
        self.monitor.watch(name, probe);
        (tx, rx)
    }

    /// Starts a stage on its own thread. Its failure or panic stops the graph.
    pub fn spawn<F>(&mut self, name: &str, stage: F) -> Result<(), GraphError>
    where
        F: FnOnce(StageContext) -> StageResult + Send + 'static,
    {
        let counters = Arc::new(StageCounters::default());
        self.monitor
            .stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), counters.clone()));
        let ctx = StageContext {
            name: name.into(),
            stop: self.stop.clone(),
            counters,
        };
        let stop = self.stop.clone();
        let first_failure = self.first_failure.clone();
        let stage_name = name.to_string();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let failure = match catch_unwind(AssertUnwindSafe(|| stage(ctx))) {
                    Ok(Ok(())) => return,
                    // Its consumer went away (finished, or failed and reported itself):
                    // stopping is the right response, not a failure of this stage.
                    Ok(Err(e)) if e.is::<Closed>() => return,
                    Ok(Err(e)) => GraphError::Failed {
                        stage: stage_name,
                        message: e.to_string(),
                    },
                    Err(panic) => GraphError::Panicked {
                        stage: stage_name,
                        message: panic_message(panic.as_ref()),
                    },
                };
                let mut first = first_failure.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(failure);
                stop.stop();
            })
            .map_err(|e| GraphError::Spawn {
                stage: name.to_string(),
                message: e.to_string(),
            })?;
        self.threads.push((name.to_string(), handle));
        Ok(())
    }

    /// Waits for every stage; the first failure, if any, names its stage.
    pub fn join(self) -> Result<(), GraphError> {
        for (_, handle) in self.threads {
            // Panics were caught inside the thread; a join error cannot carry anything new.
            let _ = handle.join();
        }
        let first = self
            .first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".into()
    }
}
