//! What the kiosk heard, the facts retrieved for it, and what it saw when a camera is in
//! the graph, as prefix rows.
//!
//! The transcript is Whisper's text; the language model reads it best as its own words, so
//! it goes in through the model's token embedding table, as [`crate::vision::LabelProjector`]
//! does with labels. A scene, when there is one, comes first, so the question is the last
//! thing before the instruction that closes the turn.

use encoders::vision::Scene;
use llm::{Llm, Segment};

use crate::FusionError;
use crate::vision::LabelProjector;

/// An utterance, the facts that bear on it, and what was in view when it ended.
#[derive(Debug, Clone, Copy)]
pub struct Utterance<'a> {
    pub transcript: &'a str,
    /// The knowledge file's facts retrieved for this utterance, best first.
    pub facts: &'a [&'a str],
    pub scene: Option<&'a Scene>,
}

/// Turns an utterance into rows of the language model's embedding space.
#[derive(Debug, Clone, Default)]
pub struct UtteranceProjector;

impl UtteranceProjector {
    /// The text the rows stand for: "Facts:\n- The cafe is …\n\nCamera: Objects in view:
    /// …\nVisitor: Where is the cafe?" (the facts and the camera only when there are some).
    pub fn describe(utterance: &Utterance) -> String {
        let mut text = String::new();
        if !utterance.facts.is_empty() {
            text.push_str("Facts:\n");
            for fact in utterance.facts {
                text.push_str(&format!("- {}\n", fact.trim()));
            }
            text.push('\n');
        }
        if let Some(scene) = utterance.scene {
            text.push_str(&format!("Camera: {}\n", LabelProjector::describe(scene)));
        }
        text.push_str(&format!("Visitor: {}", utterance.transcript.trim()));
        text
    }

    /// `[rows, d_model]` embedding rows of [`UtteranceProjector::describe`].
    pub fn project(&self, utterance: &Utterance, lm: &Llm) -> Result<Segment, FusionError> {
        let ids = lm
            .tokenizer
            .encode(&Self::describe(utterance), false)
            .map_err(llm::LlmError::from)?;
        Ok(Segment::Embeddings(lm.embed(&[Segment::Tokens(ids)])?))
    }
}
