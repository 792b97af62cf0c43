//! describe's stages: vision (both encoders) and caption (the language model, grounded).

use std::time::Instant;

use encoders::vision::{Detection, Detector, Scene, VisionEncoder};
use fusion::prompt::PrefixCache;
use fusion::vision::{LabelProjector, VisionProjector};
use llm::{GenerateParams, Llm};
use pipeline::{Envelope, Frame, Input, Output, StageContext, StageResult};
use publish::Outlets;
use serde::Serialize;

use super::caption::Vocabulary;

/// The system prompt and the request after the scene's rows.
pub const SYSTEM: &str = "You are a camera that says in one short sentence what it sees.";
pub const ASK: &str = "\nDescribe what the camera sees in one short sentence.";

/// A frame with what the encoders made of it.
pub struct Seen {
    pub scene: Scene,
}

/// One caption, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Caption {
    pub seq: u64,
    /// Capture time, seconds since the start of the run.
    pub t_s: f64,
    pub caption: String,
    /// `model`: the language model's caption passed the check; `scene`: it did not (see
    /// `rejected`) and the caption was written from the scene.
    pub grounding: &'static str,
    /// Why the model's caption was not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The model's own caption when it was not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
    /// The detector's objects, best first: label, score, box in frame pixels, third.
    pub objects: Vec<Detection>,
    /// What the classifier saw in the whole frame, best first.
    pub labels: Vec<String>,
    pub capture_to_first_token_ms: f64,
    pub capture_to_caption_ms: f64,
}

/// Runs the encoders on each frame; a frame they refuse is dropped (and said so), the
/// stream goes on. Each frame seen goes to the publishers too, with its detections.
pub fn vision_stage(
    ctx: &StageContext,
    vision: &VisionEncoder,
    detector: Option<&Detector>,
    input: Input<Envelope<Frame>>,
    output: &Output<Envelope<Seen>>,
    outlets: &Outlets,
) -> StageResult {
    for frame in input {
        ctx.item_in();
        match ctx.busy(|| crate::vision::encode_frame(vision, detector, &frame.payload)) {
            Ok(scene) => {
                let captured = frame.captured;
                outlets.send(frame.seq, captured, || {
                    crate::vision::sighting(&frame.payload, &scene)
                });
                output.send(frame.map(|_| Seen { scene }))?;
                ctx.item_out_since(captured);
            }
            Err(e) => eprintln!("warning: frame {} not encoded: {e}", frame.seq),
        }
    }
    Ok(())
}

/// What the caption stage needs.
pub struct Captioner<'a> {
    pub llm: &'a Llm,
    pub cache: &'a PrefixCache,
    pub params: &'a GenerateParams,
    pub vocabulary: &'a Vocabulary,
    pub started: Instant,
}

impl Captioner<'_> {
    /// The grounded caption of one scene captured at `captured`. A scene with nothing in
    /// view is said so without asking the model.
    pub fn caption(
        &self,
        seq: u64,
        captured: Instant,
        scene: &Scene,
    ) -> Result<Caption, Box<dyn std::error::Error + Send + Sync>> {
        let mut first_token = None;
        let generated = if self.vocabulary.subject(scene).is_none() {
            String::new()
        } else {
            let rows = LabelProjector.project(scene, self.llm)?;
            let (mut session, prompt) = self.cache.start(rows);
            self.llm
                .generate(&mut session, &prompt, self.params, |_| {
                    first_token.get_or_insert_with(|| captured.elapsed());
                })?
                .text
        };
        let (caption, rejected) = self.vocabulary.ground(&generated, scene);
        let done = captured.elapsed();
        let used = rejected.is_none();
        Ok(Caption {
            seq,
            t_s: captured
                .saturating_duration_since(self.started)
                .as_secs_f64(),
            caption,
            grounding: if used { "model" } else { "scene" },
            rejected: rejected.map(|r| r.to_string()),
            generated: (!used && !generated.trim().is_empty()).then(|| generated.trim().to_owned()),
            objects: scene.objects.clone(),
            labels: crate::vision::top_labels(scene, 3),
            capture_to_first_token_ms: first_token.unwrap_or(done).as_secs_f64() * 1e3,
            capture_to_caption_ms: done.as_secs_f64() * 1e3,
        })
    }

    /// The caption stage: one grounded caption per scene that passed the gate.
    pub fn run(
        &self,
        ctx: &StageContext,
        input: Input<Envelope<Seen>>,
        output: &Output<Envelope<Caption>>,
    ) -> StageResult {
        for seen in input {
            ctx.item_in();
            let captured = seen.captured;
            let caption = ctx.busy(|| self.caption(seen.seq, captured, &seen.payload.scene))?;
            output.send(Envelope::new(seen.seq, captured, caption))?;
            ctx.item_out_since(captured);
        }
        Ok(())
    }
}
