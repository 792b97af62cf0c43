//! `percept describe`: the command line and the wiring of its graph (the stages are in
//! `percept::describe`).
//!
//! - The camera edge keeps only the newest frame (`latest`), so captions never lag behind
//!   the camera however slow the models are; image files and fast replays are lossless.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use fusion::prompt::{FramedPrompt, PrefixCache};
use llm::{GenerateParams, SamplingParams};
use percept::describe::caption::Vocabulary;
use percept::describe::gate::Gate;
use percept::describe::graph::{ASK, Captioner, SYSTEM, vision_stage};
use pipeline::fixture::{Fixture, Pace, ReplayClock};
use pipeline::frame::converting;
use pipeline::{EdgeConfig, Envelope, Frame, Graph, Output};
use publish::mqtt::App;
use publish::{Event, Kind, Record};

use crate::ModelArgs;
use crate::publish_cmd::{PublishArgs, Publishers};

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
    /// Play the replayed fixture this many times (0: until Ctrl-C), for demos and soak
    /// tests; frame numbers go on from one round to the next.
    #[arg(
        long = "loop",
        value_name = "N",
        default_value_t = 1,
        requires = "replay"
    )]
    pub rounds: u64,
    /// Cosine distance between a frame's features and the last described frame's above
    /// which the scene counts as changed.
    #[arg(long, default_value_t = 0.25)]
    pub change: f32,
    /// Describe an unchanged scene again after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub max_interval: f64,
    /// Lowest detector score an object is reported at.
    #[arg(long, default_value_t = encoders::vision::DetectorConfig::default().min_score)]
    pub min_score: f32,
    /// Longest caption, in tokens.
    #[arg(long, default_value_t = 40)]
    pub max_tokens: usize,
    /// One JSON object per caption.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub model: ModelArgs,
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
    // The publishers first: a bad --serve or --mqtt is said before the models load.
    let mut graph = Graph::new();
    let stop = graph.stop_handle();
    crate::run_cmd::on_ctrl_c(stop.clone());
    let publishers = Publishers::start(&args.publish, App::Describe, title(&args), &graph)?;
    let outlets = publishers.spawn(&mut graph)?;
    let llm = Arc::new(crate::llm_cmd::load(&args.model)?);
    let vision = Arc::new(percept::vision::load(&llm.device)?);
    let mut detector = percept::vision::load_detector(&llm.device)?;
    detector.config.min_score = args.min_score;
    let detector = Arc::new(detector);
    let vocabulary = Arc::new(Vocabulary::new(vision.labels()));
    let prompt = FramedPrompt::chat(&llm, SYSTEM, "", ASK)?;
    let cache = Arc::new(PrefixCache::new(&llm, &prompt)?);

    let started = Instant::now();
    // Live frames: only the newest matters. Files and fast replays: every frame.
    let live = args.camera.is_some() || (args.replay.is_some() && !args.fast);
    let policy = if live {
        EdgeConfig::latest(1)
    } else {
        EdgeConfig::block(2)
    };
    let (frames_tx, frames_rx) = graph.edge("frames", policy);
    spawn_source(&mut graph, &args, frames_tx)?;
    let (seen_tx, seen_rx) = graph.edge("seen", EdgeConfig::block(2));
    let v = vision.clone();
    let o = outlets.clone();
    graph.spawn("vision", move |ctx| {
        vision_stage(&ctx, &v, Some(&detector), frames_rx, &seen_tx, &o)
    })?;
    let (gated_tx, gated_rx) = graph.edge("gated", EdgeConfig::block(1));
    let gate = Gate {
        change: args.change,
        max_interval: Duration::from_secs_f64(args.max_interval.max(0.0)),
    };
    graph.spawn("gate", move |ctx| gate.run(&ctx, seen_rx, &gated_tx))?;
    let (captions_tx, captions_rx) = graph.edge("captions", EdgeConfig::block(8));
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec!["\n".into()],
    };
    let l = llm.clone();
    graph.spawn("caption", move |ctx| {
        let captioner = Captioner {
            llm: &l,
            cache: &cache,
            params: &params,
            vocabulary: &vocabulary,
            started,
        };
        captioner.run(&ctx, gated_rx, &captions_tx)
    })?;
    let json = args.json;
    graph.spawn("sink", move |ctx| {
        let mut out = std::io::stdout().lock();
        for c in captions_rx {
            ctx.item_in();
            let line = if json {
                serde_json::to_string(&c.payload)?
            } else {
                let c = &c.payload;
                let objects = fusion::vision::objects_phrase(&c.objects);
                format!(
                    "[{:7.2} s] {} (seen: {}; looks like: {}; caption {:.0} ms after capture)",
                    c.t_s,
                    c.caption,
                    if objects.is_empty() {
                        "no object"
                    } else {
                        &objects
                    },
                    c.labels.join(", "),
                    c.capture_to_caption_ms
                )
            };
            writeln!(out, "{line}")?;
            // Flushed line by line: a reader of a pipe sees each caption as it comes.
            out.flush()?;
            outlets.send(c.seq, c.captured, || {
                Event::Said(Record {
                    kind: Kind::Caption,
                    t_s: c.payload.t_s,
                    latency_ms: c.payload.capture_to_caption_ms,
                    body: serde_json::to_value(&c.payload).unwrap_or_default(),
                })
            });
            ctx.record_latency(c.captured);
        }
        Ok(())
    })?;
    let monitor = graph.monitor();
    let result = graph.join();
    let dropped = monitor
        .edges()
        .iter()
        .find(|e| e.edge == "frames")
        .map_or(0, |e| e.stats.dropped);
    if dropped > 0 {
        eprintln!("{dropped} frames skipped while the models were busy (latest policy)");
    }
    result?;
    publishers.finish(&stop);
    Ok(())
}

/// The live page's heading.
fn title(args: &DescribeArgs) -> String {
    let source = match (&args.replay, args.camera) {
        (Some(dir), _) => format!("replay of {}", dir.display()),
        (None, Some(n)) => format!("camera {n}"),
        (None, None) => format!("{} image(s)", args.image.len()),
    };
    format!("percept describe: {source}")
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
        let frames = fixture.frames(&name)?;
        // Frame numbers of round k start after every number of round k - 1.
        let per_round = frames
            .iter()
            .map(|f| f.seq.saturating_add(1))
            .max()
            .unwrap_or(0);
        let rounds = args.rounds;
        graph.spawn("replay", move |ctx| {
            let mut round = 0;
            while (rounds == 0 || round < rounds) && !ctx.stopped() {
                let offset = round.saturating_mul(per_round);
                let send = converting(|mut frame| {
                    frame.seq = frame.seq.saturating_add(offset);
                    tx.send(frame)
                });
                fixture.replay_frames(&ctx, &name, ReplayClock::new(pace), send)?;
                round += 1;
            }
            Ok(())
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
