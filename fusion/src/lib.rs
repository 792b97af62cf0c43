//! Fusion: encoder outputs become prefix rows in the language model's embedding space,
//! and prompts are assembled around them.
//!
//! - [`vision`]: projectors from a [`encoders::vision::Scene`] to embedding rows: by the
//!   scene's labels through the LM's own embedding table ([`vision::LabelProjector`], the
//!   default: it needs no training), or by a learned matrix ([`vision::LinearProjector`],
//!   weights from safetensors, for checkpoints trained LLaVA-style).
//! - [`speech`]: an utterance's transcript, with the labels of the scene in view when a
//!   camera is in the graph, as embedding rows ([`speech::UtteranceProjector`]).
//! - [`prompt`]: a prompt with a fixed head whose KV cache is computed once, and a tail
//!   per frame or utterance.

pub mod prompt;
pub mod speech;
pub mod vision;

/// Why a projection failed.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error(transparent)]
    Llm(#[from] llm::LlmError),
    #[error("projector weights {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error("projector maps {projector} values per row, the scene has {scene}")]
    Width { projector: usize, scene: usize },
}
