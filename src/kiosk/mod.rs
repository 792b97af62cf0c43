//! The kiosk: spoken or typed questions answered from a knowledge file, and commands
//! turned into actions, every statement grounded in the file's facts.
//!
//! - [`knowledge`]: the file (instructions, facts, fallback line, commands);
//! - [`listen`]: audio into utterances (VAD and segmenter);
//! - [`routing`]: whether an utterance asks for anything, and for what;
//! - [`actions`]: the commands' schema and the grammar of their JSON;
//! - [`retrieval`]: which facts an utterance is about;
//! - [`asked`]: what kind of answer a question wants, and which facts can give it;
//! - [`grounding`]: checks of an answer against its facts;
//! - [`answer`]: all of it together, one reply per utterance;
//! - [`eval`]: the evaluation sets and their scores (`percept eval kiosk`).

pub mod actions;
pub mod answer;
pub mod asked;
pub mod eval;
pub mod grounding;
pub mod knowledge;
pub mod listen;
pub mod retrieval;
pub mod routing;

pub use answer::{AnswerConfig, Answerer, Reply};
pub use knowledge::Knowledge;

use std::sync::Arc;

use anyhow::Result;
use burn::tensor::Device;
use encoders::text::{MiniLm, MiniLmConfig};

/// The sentence encoder that ranks a knowledge file's facts by meaning (all-MiniLM-L6-v2,
/// from the model cache).
pub fn sentence_encoder(device: &Device) -> Result<Arc<MiniLm>> {
    let file = |end: &str| crate::models::require_file("all-minilm-l6-v2", end);
    let encoder = MiniLm::load(
        &file("model.safetensors")?,
        &file("vocab.txt")?,
        MiniLmConfig::default(),
        device,
    )?;
    Ok(Arc::new(encoder))
}
