//! `percept describe`: live scenes described by the language model.
//!
//! ```text
//! source (camera | replay | images) --latest--> vision --> gate --> caption --> sink
//! ```
//!
//! - The camera edge keeps only the newest frame (`latest`), so captions never lag behind
//!   the camera however slow the models are; image files and fast replays are lossless.
//! - The vision stage runs EfficientNet-Lite0: labels of the frame and of its left, centre
//!   and right, and the pooled features.
//! - The gate passes a frame when its features moved away from the last described frame's
//!   (cosine distance above `--change`), or when `--max-interval` passed: a static scene is
//!   described once, not over and over. It sits after the encoder because its distance is
//!   between the encoder's features; what it saves is the language model's work.
//! - The caption stage turns the scene into prefix rows (fusion), and the language model
//!   answers after a system prompt whose KV cache was computed once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use encoders::vision::{Scene, VisionEncoder};
use fusion::prompt::{FramedPrompt, PrefixCache};
use fusion::vision::{LabelProjector, VisionProjector};
use llm::{GenerateParams, Llm, SamplingParams};
use pipeline::fixture::{Fixture, Pace, ReplayClock};
use pipeline::frame::converting;
use pipeline::{
    EdgeConfig, Envelope, Frame, Graph, Input, Output, StageContext, StageResult, edge,
};
use serde::Serialize;

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Describe image files (JPEG, PNG), one caption each.
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with_all = ["camera", "replay"])]
    pub image: Vec<PathBuf>,
    /// Describe camera N (V4L2 index) until Ctrl-C.
    #[arg(long, value_name = "N", conflicts_with = "replay")]
    pub camera: Option<u32>,
    /// Replay a recorded fixture directory (see fixtures/README.md). With no source at
    /// all, the bundled fixture of real photos is replayed.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
    /// Replay as fast as the models go (lossless) instead of at the recorded pace.
    #[arg(long)]
    pub fast: bool,
    /// Cosine distance between a frame's features and the last described frame's above
    /// which the scene counts as changed.
    #[arg(long, default_value_t = 0.25)]
    pub change: f32,
    /// Describe an unchanged scene again after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub max_interval: f64,
    /// Longest caption, in tokens.
    #[arg(long, default_value_t = 40)]
    pub max_tokens: usize,
    /// One JSON object per caption.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

const SYSTEM: &str = "You are a camera that says in one short sentence what it sees.";
const ASK: &str = "\nDescribe what the camera sees in one short sentence.";

/// One caption, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Caption {
    pub seq: u64,
    /// Capture time, seconds since the start of the run.
    pub t_s: f64,
    pub caption: String,
    /// What the vision encoder saw, best first.
    pub labels: Vec<String>,
    pub capture_to_first_token_ms: f64,
    pub capture_to_caption_ms: f64,
}

/// A frame with what the vision encoder made of it.
struct Seen {
    scene: Scene,
}

/// What `percept describe` shows when given no source: real photos recorded as a camera
/// would have sent them (fixtures/README.md).
const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/describe");

pub fn run(mut args: DescribeArgs) -> Result<()> {
    if args.image.is_empty() && args.camera.is_none() && args.replay.is_none() {
        if !std::path::Path::new(BUNDLED).is_dir() {
            bail!("nothing to describe: give --image FILE, --camera N or --replay DIR");
        }
        eprintln!(
            "no --camera, --image or --replay given: replaying the bundled fixture {BUNDLED}"
        );
        args.replay = Some(BUNDLED.into());
    }
    let llm = Arc::new(crate::llm_cmd::load(&args.model)?);
    let vision = Arc::new(percept::vision::load(&llm.device)?);
    let prompt = FramedPrompt::chat(&llm, SYSTEM, "", ASK)?;
    let cache = Arc::new(PrefixCache::new(&llm, &prompt)?);

    let mut graph = Graph::new();
    crate::run_cmd::on_ctrl_c(graph.stop_handle());
    let started = Instant::now();
    // Live frames: only the newest matters. Files and fast replays: every frame.
    let live = args.camera.is_some() || (args.replay.is_some() && !args.fast);
    let policy = if live {
        EdgeConfig::latest(1)
    } else {
        EdgeConfig::block(2)
    };
    let (frames_tx, frames_rx, frames_probe) = edge(policy);
    spawn_source(&mut graph, &args, frames_tx)?;
    let (seen_tx, seen_rx, _) = edge(EdgeConfig::block(2));
    let v = vision.clone();
    graph.spawn("vision", move |ctx| {
        vision_stage(&ctx, &v, frames_rx, &seen_tx)
    })?;
    let (gated_tx, gated_rx, _) = edge(EdgeConfig::block(1));
    let gate = Gate {
        change: args.change,
        max_interval: Duration::from_secs_f64(args.max_interval.max(0.0)),
    };
    graph.spawn("gate", move |ctx| gate.run(&ctx, seen_rx, &gated_tx))?;
    let (captions_tx, captions_rx, _) = edge(EdgeConfig::block(8));
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec!["\n".into()],
    };
    let l = llm.clone();
    graph.spawn("caption", move |ctx| {
        caption_stage(&ctx, &l, &cache, &params, started, gated_rx, &captions_tx)
    })?;
    let json = args.json;
    graph.spawn("sink", move |ctx| {
        let mut out = std::io::stdout().lock();
        for c in captions_rx {
            ctx.item_in();
            let line = if json {
                serde_json::to_string(&c.payload)?
            } else {
                format!(
                    "[{:7.2} s] {} ({}; first token {:.0} ms, caption {:.0} ms after capture)",
                    c.payload.t_s,
                    c.payload.caption,
                    c.payload.labels.join(", "),
                    c.payload.capture_to_first_token_ms,
                    c.payload.capture_to_caption_ms
                )
            };
            writeln!(out, "{line}")?;
            ctx.record_latency(c.captured);
        }
        Ok(())
    })?;
    let result = graph.join();
    let dropped = frames_probe.stats().dropped;
    if dropped > 0 {
        eprintln!("{dropped} frames skipped while the models were busy (latest policy)");
    }
    result.map_err(Into::into)
}

fn spawn_source(graph: &mut Graph, args: &DescribeArgs, tx: Output<Envelope<Frame>>) -> Result<()> {
    if let Some(dir) = &args.replay {
        let fixture = Fixture::open(dir)?;
        let name = fixture
            .first("frames")
            .with_context(|| format!("fixture {} has no frames", dir.display()))?
            .name()
            .to_owned();
        let pace = if args.fast {
            Pace::Fast
        } else {
            Pace::Recorded
        };
        graph.spawn("replay", move |ctx| {
            let send = converting(|frame| tx.send(frame));
            fixture.replay_frames(&ctx, &name, ReplayClock::new(pace), send)
        })?;
    } else if let Some(index) = args.camera {
        spawn_camera(graph, index, tx)?;
    } else {
        let frames = args
            .image
            .iter()
            .map(|p| pipeline::media_file::load_image(p))
            .collect::<Result<Vec<_>, _>>()?;
        graph.spawn("images", move |ctx| {
            for (seq, frame) in frames.into_iter().enumerate() {
                tx.send(Envelope::new(seq as u64, Instant::now(), frame))?;
                ctx.item_out();
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(feature = "camera")]
pub(crate) fn spawn_camera(
    graph: &mut Graph,
    index: u32,
    tx: Output<Envelope<Frame>>,
) -> Result<()> {
    use pipeline::camera::{CameraConfig, camera_source, check};
    let config = CameraConfig {
        index,
        ..CameraConfig::default()
    };
    check(config)?;
    graph.spawn("camera", move |ctx| {
        camera_source(&ctx, config, converting(|frame| tx.send(frame)))
    })?;
    Ok(())
}

#[cfg(not(feature = "camera"))]
pub(crate) fn spawn_camera(_: &mut Graph, _: u32, _: Output<Envelope<Frame>>) -> Result<()> {
    bail!("this build has no camera support (cargo feature 'camera')")
}

fn vision_stage(
    ctx: &StageContext,
    vision: &VisionEncoder,
    input: Input<Envelope<Frame>>,
    output: &Output<Envelope<Seen>>,
) -> StageResult {
    for frame in input {
        ctx.item_in();
        match ctx.busy(|| percept::vision::encode_frame(vision, None, &frame.payload)) {
            Ok(scene) => {
                let captured = frame.captured;
                output.send(frame.map(|_| Seen { scene }))?;
                ctx.item_out_since(captured);
            }
            // A frame the encoder cannot take is dropped, the stream goes on.
            Err(e) => eprintln!("warning: frame {} not encoded: {e}", frame.seq),
        }
    }
    Ok(())
}

/// Passes a scene when it changed or when it was last described long ago.
struct Gate {
    change: f32,
    max_interval: Duration,
}

impl Gate {
    fn run(
        &self,
        ctx: &StageContext,
        input: Input<Envelope<Seen>>,
        output: &Output<Envelope<Seen>>,
    ) -> StageResult {
        let mut last: Option<(Vec<f32>, Instant)> = None;
        for seen in input {
            ctx.item_in();
            let feature = &seen.payload.scene.whole.feature;
            let pass = match &last {
                None => true,
                Some((f, at)) => {
                    cosine_distance(f, feature) > self.change
                        || seen.captured.saturating_duration_since(*at) >= self.max_interval
                }
            };
            if pass {
                last = Some((feature.clone(), seen.captured));
                let captured = seen.captured;
                output.send(seen)?;
                ctx.item_out_since(captured);
            }
        }
        Ok(())
    }
}

/// `1 - a.b / (|a| |b|)`: 0 for the same direction, 1 for orthogonal features.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 0.0 } else { 1.0 };
    }
    1.0 - dot / (na * nb)
}

fn caption_stage(
    ctx: &StageContext,
    llm: &Llm,
    cache: &PrefixCache,
    params: &GenerateParams,
    started: Instant,
    input: Input<Envelope<Seen>>,
    output: &Output<Envelope<Caption>>,
) -> StageResult {
    let projector = LabelProjector;
    for seen in input {
        ctx.item_in();
        let captured = seen.captured;
        let scene = &seen.payload.scene;
        let caption = ctx.busy(
            || -> Result<Caption, Box<dyn std::error::Error + Send + Sync>> {
                let rows = projector.project(scene, llm)?;
                let (mut session, prompt) = cache.start(rows);
                let mut first_token = None;
                let generation = llm.generate(&mut session, &prompt, params, |_| {
                    first_token.get_or_insert_with(|| captured.elapsed());
                })?;
                let done = captured.elapsed();
                Ok(Caption {
                    seq: seen.seq,
                    t_s: captured.saturating_duration_since(started).as_secs_f64(),
                    caption: generation.text.trim().to_owned(),
                    labels: scene
                        .whole
                        .labels
                        .iter()
                        .take(3)
                        .map(|l| l.name.clone())
                        .collect(),
                    capture_to_first_token_ms: first_token.unwrap_or(done).as_secs_f64() * 1e3,
                    capture_to_caption_ms: done.as_secs_f64() * 1e3,
                })
            },
        )?;
        output.send(Envelope::new(seen.seq, captured, caption))?;
        ctx.item_out_since(captured);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cosine_distance;

    #[test]
    fn cosine_distance_of_same_opposite_and_orthogonal() {
        assert!(cosine_distance(&[1.0, 2.0], &[2.0, 4.0]).abs() < 1e-6);
        assert!((cosine_distance(&[1.0, 0.0], &[0.0, 3.0]) - 1.0).abs() < 1e-6);
        assert!((cosine_distance(&[1.0, 0.0], &[-1.0, 0.0]) - 2.0).abs() < 1e-6);
        assert_eq!(cosine_distance(&[0.0], &[0.0]), 0.0);
    }
}
