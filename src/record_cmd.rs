//! `percept record`: writes what sources produce into a fixture directory (the format of
//! `fixtures/README.md`), for replay with `percept run` (kind "replay") and the apps'
//! `--replay DIR`.
//!
//! Live sources (camera, microphone, stdin) record until `--seconds` or Ctrl-C; files
//! (`--image`, `--audio`, `--text FILE`) make fixtures from material at hand, with the
//! images spaced `--frame-interval-ms` apart as if a camera had taken them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use pipeline::fixture::FixtureWriter;
use pipeline::frame::FourCc;
use pipeline::media_file::AudioFile;
use pipeline::{EdgeConfig, Envelope, Graph, RawFrame, edge};

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The fixture directory to create.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Record camera N (V4L2 index).
    #[arg(long, value_name = "N")]
    pub camera: Option<u32>,
    /// Camera resolution and rate asked for (the camera may pick the closest it has).
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Record the default microphone, or the one whose name contains NAME.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub mic: Option<String>,
    /// Image files, recorded as camera frames in this order (JPEG bytes are kept as
    /// MJPEG frames; other formats become RGB frames).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub image: Vec<PathBuf>,
    /// Time between the frames made from --image.
    #[arg(long, default_value_t = 1000)]
    pub frame_interval_ms: u64,
    /// An audio file, recorded as a microphone would have delivered it.
    #[arg(long, value_name = "FILE")]
    pub audio: Option<PathBuf>,
    /// Text lines from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    pub text: Option<String>,
    /// Stop live sources after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
}

pub fn run(args: RecordArgs) -> Result<()> {
    let live = args.camera.is_some() || args.mic.is_some() || args.text.as_deref() == Some("-");
    if !live && args.image.is_empty() && args.audio.is_none() && args.text.is_none() {
        bail!("nothing to record: give --camera, --mic, --image, --audio or --text");
    }
    let writer = FixtureWriter::create(&args.out)?;
    let mut graph = Graph::new();
    crate::run_cmd::on_ctrl_c(graph.stop_handle());
    if let Some(secs) = args.seconds {
        let stop = graph.stop_handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
            stop.stop();
        });
    }

    let t0 = Instant::now();
    if !args.image.is_empty() || args.camera.is_some() {
        let (tx, rx, _) = edge(EdgeConfig::block(8));
        if args.camera.is_some() {
            let cam = open_camera(&args)?;
            graph.spawn("camera", move |ctx| cam(ctx, tx))?;
        } else {
            let frames = image_frames(&args.image)?;
            let every = Duration::from_millis(args.frame_interval_ms);
            graph.spawn("images", move |ctx| {
                for (i, f) in frames.into_iter().enumerate() {
                    tx.send(Envelope::new(i as u64, t0 + every * i as u32, f))?;
                    ctx.item_out();
                }
                Ok(())
            })?;
        }
        let w = writer.clone();
        graph.spawn("record-camera", move |ctx| {
            w.record_frames(&ctx, "camera", rx)
        })?;
    }
    if args.mic.is_some() || args.audio.is_some() {
        let (tx, rx, _) = edge(EdgeConfig::block(64));
        if let Some(path) = &args.audio {
            let mut file = AudioFile::open(path)?;
            graph.spawn("audio-file", move |ctx| {
                let (mut seq, mut at) = (0, t0);
                while let Some(chunk) = file.next_native()? {
                    let len = Duration::from_secs_f64(chunk.duration_s());
                    tx.send(Envelope::new(seq, at, chunk))?;
                    ctx.item_out();
                    (seq, at) = (seq + 1, at + len);
                }
                Ok(())
            })?;
        } else {
            let mic = open_mic(args.mic.as_deref().unwrap_or_default())?;
            graph.spawn("microphone", move |ctx| mic(ctx, tx))?;
        }
        let w = writer.clone();
        graph.spawn("record-mic", move |ctx| w.record_audio(&ctx, "mic", rx))?;
    }
    if let Some(path) = args.text.clone() {
        let (tx, rx, _) = edge(EdgeConfig::block(16));
        graph.spawn("text", move |ctx| {
            pipeline::text::text_source(&ctx, &path, |line| tx.send(line))
        })?;
        let w = writer.clone();
        graph.spawn("record-text", move |ctx| w.record_text(&ctx, "text", rx))?;
    }
    graph.join()?;
    let manifest = writer.finish()?;
    eprintln!("recorded {}", manifest.display());
    Ok(())
}

/// Image files as the raw frames a camera would have sent.
fn image_frames(paths: &[PathBuf]) -> Result<Vec<RawFrame>> {
    paths
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let frame = pipeline::media_file::load_image(path)?;
            let jpeg = image::guess_format(&bytes).ok() == Some(image::ImageFormat::Jpeg);
            Ok(if jpeg {
                RawFrame {
                    width: frame.width,
                    height: frame.height,
                    fourcc: FourCc::Mjpg,
                    bytes,
                }
            } else {
                RawFrame {
                    width: frame.width,
                    height: frame.height,
                    fourcc: FourCc::Rgb3,
                    bytes: frame.rgb.to_vec(),
                }
            })
        })
        .collect()
}

type SourceBody<T> = Box<
    dyn FnOnce(pipeline::StageContext, pipeline::Output<Envelope<T>>) -> pipeline::StageResult
        + Send,
>;

#[cfg(feature = "camera")]
fn open_camera(args: &RecordArgs) -> Result<SourceBody<RawFrame>> {
    use pipeline::camera::{CameraConfig, camera_source, check};
    let config = CameraConfig {
        index: args.camera.unwrap_or_default(),
        width: args.width,
        height: args.height,
        fps: args.fps,
    };
    check(config)?;
    Ok(Box::new(move |ctx, tx| {
        camera_source(&ctx, config, |f| tx.send(f))
    }))
}

#[cfg(not(feature = "camera"))]
fn open_camera(_: &RecordArgs) -> Result<SourceBody<RawFrame>> {
    bail!("this build has no camera support (cargo feature 'camera')")
}

#[cfg(feature = "mic")]
fn open_mic(name: &str) -> Result<SourceBody<pipeline::AudioChunk>> {
    use pipeline::microphone::{Microphone, microphone_source};
    let name = (!name.is_empty()).then_some(name);
    let mic = Microphone::open(&cpal::default_host(), name)?;
    Ok(Box::new(move |ctx, tx| {
        microphone_source(&ctx, mic, |c| tx.send(c))
    }))
}

#[cfg(not(feature = "mic"))]
fn open_mic(_: &str) -> Result<SourceBody<pipeline::AudioChunk>> {
    bail!("this build has no microphone support (cargo feature 'mic')")
}
