//! The dataflow runtime: every stage is a thread, joined to the next by a bounded edge
//! whose policy says what happens when the consumer is slower than the producer.
//!
//! - [`edge`]: bounded channels with a `block` (lossless back-pressure) or `latest` (drop
//!   the oldest, for live frames) policy, and their counters.
//! - [`frame`]: raw camera frames (YUYV, MJPEG) and their conversion to RGB.
//! - [`message`]: the envelope every item travels in (sequence number, capture time).
//! - [`graph`]: spawning stages, orderly end of stream, stop on Ctrl-C, on error or panic.
//! - [`spec`]: graphs described in TOML, checked (with line numbers) before they start.
//! - [`metrics`]: per-stage and per-edge counters and latency percentiles.
//! - Sources: [`text`] (lines), [`media_file`] (an image, an audio file), [`camera`]
//!   (V4L2, feature `camera`), [`microphone`] (cpal, feature `mic`), [`fixture`] (record
//!   and replay); [`audio`] (16 kHz mono chunks, resampling); [`devices`] (missing devices).
//!
//! End of stream is the closing of an edge: when a stage returns, its outputs drop, and
//! the stages downstream see their inputs end once drained. A failed stage also stops the
//! graph, so sources stop producing, and [`graph::Graph::join`] names it.

pub mod audio;
mod audio_tags;
#[cfg(feature = "camera")]
pub mod camera;
pub mod devices;
pub mod edge;
pub mod fixture;
pub mod frame;
pub mod graph;
pub mod media_file;
pub mod message;
pub mod metrics;
#[cfg(feature = "mic")]
pub mod microphone;
#[cfg(feature = "mic")]
pub mod speaker;
pub mod spec;
pub mod text;

pub use audio::{AudioChunk, Mute, Speaking};
pub use edge::{EdgeConfig, Input, Output, Policy, Recv, edge};
pub use frame::{Frame, RawFrame};
pub use graph::{
    Graph, GraphError, Monitor, NamedEdgeStats, StageContext, StageResult, StageStats, StopHandle,
};
pub use message::{Envelope, Payload};
