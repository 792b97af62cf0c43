//! `percept run graph.toml`: builds a graph from a file and runs it until its sources end
//! or Ctrl-C.
//!
//! The stage kinds available to graph files are listed in [`kinds`]: sources of text,
//! frames and audio (files, camera, microphone, fixture replay) and printing sinks. Edges
//! carry [`Payload`]s whose port types the spec checked before anything started.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use pipeline::devices::{Presence, open_or_skip};
use pipeline::edge::Closed;
use pipeline::fixture::{Fixture, Pace, ReplayClock};
use pipeline::frame::converting;
use pipeline::media_file::{AudioFile, load_image};
use pipeline::spec::{self, GraphSpec, KindInfo, StageSpec};
use pipeline::{
    AudioChunk, Envelope, Graph, Input, Monitor, Output, Payload, RawFrame, StageContext,
    StageResult,
};
use publish::mqtt::{App, Mqtt, MqttConfig};
use publish::web::{Web, WebConfig};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The graph file (TOML: [[stage]] and [[edge]] tables).
    pub graph: PathBuf,
    /// Print per-edge counters and end-to-end latency at the end (and every 5 s).
    #[arg(long, value_enum)]
    pub metrics: Option<MetricsFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsFormat {
    Text,
    Json,
}

type Item = Envelope<Payload>;

/// The stage kinds a graph file may use, with their ports and required parameters.
pub fn kinds() -> BTreeMap<&'static str, KindInfo> {
    let kind = |inputs, outputs, required| KindInfo {
        inputs,
        outputs,
        required,
    };
    BTreeMap::from([
        ("text", kind(vec![], vec![("text", "text")], vec!["path"])),
        (
            "image",
            kind(vec![], vec![("frame", "frame")], vec!["path"]),
        ),
        (
            "audio-file",
            kind(vec![], vec![("audio", "audio")], vec!["path"]),
        ),
        ("camera", kind(vec![], vec![("frame", "frame")], vec![])),
        ("microphone", kind(vec![], vec![("audio", "audio")], vec![])),
        (
            "replay",
            kind(
                vec![],
                vec![("frame", "frame"), ("audio", "audio"), ("text", "text")],
                vec!["dir"],
            ),
        ),
        ("stdout", kind(vec![("in", spec::ANY)], vec![], vec![])),
        ("jsonl", kind(vec![("in", spec::ANY)], vec![], vec![])),
        ("web", kind(vec![("in", spec::ANY)], vec![], vec![])),
        ("mqtt", kind(vec![("in", spec::ANY)], vec![], vec!["url"])),
    ])
}

pub fn run(args: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.graph)
        .with_context(|| format!("cannot read graph file {}", args.graph.display()))?;
    let spec = spec::parse(&text, &kinds())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.graph.display()))?;
    let base = args.graph.parent().unwrap_or(std::path::Path::new("."));
    let mut graph = Graph::new();
    on_ctrl_c(graph.stop_handle());

    let (mut outputs, mut inputs) = wire(&spec, &graph);
    // Everything is checked and opened (files, devices) before any thread starts.
    let mut bodies = Vec::new();
    for stage in &spec.stages {
        let outs: HashMap<String, Output<Item>> = outputs
            .extract_if(|(name, _), _| *name == stage.name)
            .map(|((_, port), out)| (port, out))
            .collect();
        let input = inputs.remove(&(stage.name.clone(), "in".into()));
        bodies.push((stage.name.clone(), build(stage, base, &graph, outs, input)?));
    }
    for (name, body) in bodies {
        graph.spawn(&name, body)?;
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = graph.monitor();
    let reporter = args.metrics.map(|format| {
        let (done, monitor) = (done.clone(), monitor.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(5) {
                    report(format, &monitor);
                    last = Instant::now();
                }
            }
        })
    });
    let result = graph.join();
    done.store(true, std::sync::atomic::Ordering::Release);
    if let (Some(format), Some(reporter)) = (args.metrics, reporter) {
        let _ = reporter.join();
        report(format, &monitor);
    }
    result.map_err(Into::into)
}

/// Ctrl-C stops the graph the orderly way (sources stop, everything drains). A second
/// Ctrl-C ends the process at once.
pub(crate) fn on_ctrl_c(stop: pipeline::StopHandle) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    extern "C" fn handler(_: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        INTERRUPTED.store(true, Ordering::Release);
        // SAFETY: restoring the default disposition is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
    // SAFETY: `handler` only touches an atomic and calls signal(), both allowed in a handler.
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
    }
    std::thread::spawn(move || {
        while !INTERRUPTED.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("interrupted: stopping the sources and draining the graph");
        stop.stop();
    });
}

type Ports = (
    HashMap<(String, String), Output<Item>>,
    HashMap<(String, String), Input<Item>>,
);

/// One channel per edge, watched by the graph's monitor; the spec checked that the types
/// of its two ends agree.
fn wire(spec: &GraphSpec, graph: &Graph) -> Ports {
    let (mut outs, mut ins) = (HashMap::new(), HashMap::new());
    for e in &spec.edges {
        let name = format!("{}.{} -> {}.{}", e.from.0, e.from.1, e.to.0, e.to.1);
        let (tx, rx) = graph.edge(&name, e.config);
        outs.insert(e.from.clone(), tx);
        ins.insert(e.to.clone(), rx);
    }
    (outs, ins)
}

type Body = Box<dyn FnOnce(StageContext) -> StageResult + Send>;

/// A stage's parameters, read with the line of the stage in every error.
struct Params<'a> {
    stage: &'a StageSpec,
    base: &'a Path,
}

impl Params<'_> {
    fn fail(&self, what: String) -> anyhow::Error {
        anyhow::anyhow!(
            "line {}: stage '{}': {what}",
            self.stage.line,
            self.stage.name
        )
    }

    fn str(&self, key: &str) -> Result<Option<String>> {
        match self.stage.params.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| self.fail(format!("'{key}' must be a string"))),
        }
    }

    /// A path parameter, relative to the graph file ("-" stays stdin).
    fn path(&self, key: &str) -> Result<PathBuf> {
        let p = self
            .str(key)?
            .ok_or_else(|| self.fail(format!("'{key}' is missing")))?;
        Ok(if p == "-" {
            p.into()
        } else {
            self.base.join(p)
        })
    }

    fn uint(&self, key: &str, default: u32) -> Result<u32> {
        match self.stage.params.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| self.fail(format!("'{key}' must be a whole number"))),
        }
    }

    fn presence(&self) -> Result<Presence> {
        match self.stage.params.get("optional") {
            None => Ok(Presence::Required),
            Some(toml::Value::Boolean(true)) => Ok(Presence::Optional),
            Some(toml::Value::Boolean(false)) => Ok(Presence::Required),
            Some(_) => Err(self.fail("'optional' must be true or false".into())),
        }
    }
}

/// Sends on an output if it is connected; an unconnected output swallows its items.
/// (Sources count what they emit themselves.)
fn sender<T>(
    out: Option<Output<Item>>,
    wrap: fn(T) -> Payload,
) -> impl FnMut(Envelope<T>) -> Result<(), Closed> {
    move |item| match &out {
        Some(out) => out.send(item.map(wrap)),
        None => Ok(()),
    }
}

/// Converts raw frames as live capture does (dropping and counting bad ones) and sends
/// the good ones.
fn frame_sender(out: Option<Output<Item>>) -> impl FnMut(Envelope<RawFrame>) -> Result<(), Closed> {
    converting(sender(out, Payload::Frame))
}

fn build(
    stage: &StageSpec,
    base: &Path,
    graph: &Graph,
    mut outs: HashMap<String, Output<Item>>,
    input: Option<Input<Item>>,
) -> Result<Body> {
    let p = Params { stage, base };
    let mut out = |port: &str| outs.remove(port);
    Ok(match stage.kind.as_str() {
        "text" => {
            let (path, out) = (p.path("path")?, out("text"));
            Box::new(move |ctx| {
                let send = sender(out, Payload::Text);
                pipeline::text::text_source(&ctx, &path.to_string_lossy(), send)
            })
        }
        "image" => {
            let frame = load_image(&p.path("path")?)?;
            let out = out("frame");
            Box::new(move |ctx| {
                let mut send = sender(out, Payload::Frame);
                send(Envelope::new(0, Instant::now(), frame))?;
                ctx.item_out();
                Ok(())
            })
        }
        "audio-file" => {
            let path = p.path("path")?;
            let mut file = AudioFile::open(&path)?;
            let out = out("audio");
            Box::new(move |ctx| {
                let mut send = sender(out, Payload::Audio);
                let mut seq = 0;
                while let Some(samples) = file.next_samples()? {
                    if ctx.stopped() {
                        break;
                    }
                    let chunk = AudioChunk::new(pipeline::audio::SAMPLE_RATE, samples);
                    send(Envelope::new(seq, Instant::now(), chunk))?;
                    ctx.item_out();
                    seq += 1;
                }
                Ok(())
            })
        }
        "replay" => {
            let fixture = Fixture::open(&p.path("dir")?)?;
            let pace = match p.str("pace")?.as_deref() {
                None | Some("recorded") => Pace::Recorded,
                Some("fast") => Pace::Fast,
                Some(other) => {
                    return Err(p.fail(format!("pace '{other}': use \"recorded\" or \"fast\"")));
                }
            };
            let (frames, audio, text) = (out("frame"), out("audio"), out("text"));
            Box::new(move |ctx| replay(&ctx, &fixture, pace, frames, audio, text))
        }
        "camera" => camera_stage(&p, out("frame"))?,
        "microphone" => microphone_stage(&p, out("audio"))?,
        sink @ ("stdout" | "jsonl") => {
            let json = sink == "jsonl";
            let input = input.context("the spec checked that every input is fed")?;
            Box::new(move |ctx| print_sink(&ctx, input, json))
        }
        "web" => {
            let input = input.context("the spec checked that every input is fed")?;
            let addr = p.str("addr")?.unwrap_or_else(|| "127.0.0.1:8080".into());
            let config = WebConfig {
                addr: crate::publish_cmd::serve_addr(&addr)
                    .map_err(|e| p.fail(format!("{e:#}")))?,
                token: p.str("token")?,
                title: format!("percept run {}", stage.name),
            };
            let web = Web::start(config, graph.monitor()).map_err(|e| p.fail(e.to_string()))?;
            eprintln!(
                "stage '{}': serving the live page on {}",
                stage.name,
                web.url()
            );
            Box::new(move |ctx| web.stage(&ctx, input))
        }
        "mqtt" => {
            let input = input.context("the spec checked that every input is fed")?;
            let config = MqttConfig {
                url: p.str("url")?.unwrap_or_default(),
                user: std::env::var("PERCEPT_MQTT_USER").ok(),
                password: std::env::var("PERCEPT_MQTT_PASSWORD").ok(),
                prefix: p.str("prefix")?.unwrap_or_else(|| "percept".into()),
                device: p.str("device")?.unwrap_or_else(publish::mqtt::host_name),
                app: App::Graph,
                ca: match p.str("ca_file")? {
                    Some(_) => Some(crate::publish_cmd::read_ca(&p.path("ca_file")?)?),
                    None => None,
                },
            };
            let mqtt = Mqtt::connect(&config).map_err(|e| p.fail(e.to_string()))?;
            Box::new(move |ctx| mqtt.stage(&ctx, input))
        }
        other => bail!("line {}: kind '{other}' has no implementation", stage.line),
    })
}

/// Every stream of a fixture, each on its own thread, on one clock.
fn replay(
    ctx: &StageContext,
    fixture: &Fixture,
    pace: Pace,
    frames: Option<Output<Item>>,
    audio: Option<Output<Item>>,
    text: Option<Output<Item>>,
) -> StageResult {
    let clock = ReplayClock::new(pace);
    std::thread::scope(|s| {
        let mut jobs: Vec<std::thread::ScopedJoinHandle<'_, StageResult>> = Vec::new();
        if let (Some(out), Some(stream)) = (frames, fixture.first("frames")) {
            let name = stream.name().to_owned();
            let send = frame_sender(Some(out));
            jobs.push(s.spawn(move || fixture.replay_frames(ctx, &name, clock, send)));
        }
        if let (Some(out), Some(stream)) = (audio, fixture.first("audio")) {
            let name = stream.name().to_owned();
            let send = sender(Some(out), Payload::Audio);
            jobs.push(s.spawn(move || fixture.replay_audio(ctx, &name, clock, 1600, send)));
        }
        if let (Some(out), Some(stream)) = (text, fixture.first("text")) {
            let name = stream.name().to_owned();
            let send = sender(Some(out), Payload::Text);
            jobs.push(s.spawn(move || fixture.replay_text(ctx, &name, clock, send)));
        }
        for job in jobs {
            job.join().map_err(|_| "a replay thread panicked")??;
        }
        Ok(())
    })
}

#[cfg(feature = "camera")]
fn camera_stage(p: &Params, out: Option<Output<Item>>) -> Result<Body> {
    use pipeline::camera::{CameraConfig, camera_source, check};
    let d = CameraConfig::default();
    let config = CameraConfig {
        index: p.uint("index", d.index)?,
        width: p.uint("width", d.width)?,
        height: p.uint("height", d.height)?,
        fps: p.uint("fps", d.fps)?,
    };
    let present =
        open_or_skip(p.presence()?, || check(config)).map_err(|e| p.fail(e.to_string()))?;
    Ok(Box::new(move |ctx| match present {
        Some(()) => camera_source(&ctx, config, frame_sender(out)),
        None => Ok(()),
    }))
}

#[cfg(not(feature = "camera"))]
fn camera_stage(p: &Params, _: Option<Output<Item>>) -> Result<Body> {
    Err(p.fail("this build has no camera support (cargo feature 'camera')".into()))
}

#[cfg(feature = "mic")]
fn microphone_stage(p: &Params, out: Option<Output<Item>>) -> Result<Body> {
    use pipeline::microphone::{Microphone, microphone_source};
    let host = cpal::default_host();
    let name = p.str("device")?;
    let mic = open_or_skip(p.presence()?, || Microphone::open(&host, name.as_deref()))
        .map_err(|e| p.fail(e.to_string()))?;
    Ok(Box::new(move |ctx| {
        let Some(mic) = mic else { return Ok(()) };
        // The microphone's own rate, brought to 16 kHz as it comes.
        let mut to16k = pipeline::audio::To16k::default();
        let mut send = sender(out, Payload::Audio);
        microphone_source(&ctx, mic, |chunk| {
            for out in to16k.push(chunk).map_err(|_| Closed)? {
                send(out)?;
            }
            Ok(())
        })
    }))
}

#[cfg(not(feature = "mic"))]
fn microphone_stage(p: &Params, _: Option<Output<Item>>) -> Result<Body> {
    Err(p.fail("this build has no microphone support (cargo feature 'mic')".into()))
}

/// The human-readable and the JSON-lines sinks.
fn print_sink(ctx: &StageContext, input: Input<Item>, json: bool) -> StageResult {
    let mut stdout = std::io::stdout().lock();
    for item in input {
        ctx.item_in();
        let age = item.age();
        ctx.busy(|| {
            if json {
                let mut v = serde_json::json!({
                    "seq": item.seq, "type": item.payload.port_type(),
                    "latency_ms": age.as_secs_f64() * 1e3,
                });
                match &item.payload {
                    Payload::Text(t) => v["text"] = t.as_str().into(),
                    Payload::Frame(f) => {
                        v["width"] = f.width.into();
                        v["height"] = f.height.into();
                    }
                    Payload::Audio(a) => {
                        v["samples"] = a.samples.len().into();
                        v["sample_rate"] = a.sample_rate.into();
                    }
                }
                writeln!(stdout, "{v}")
            } else {
                writeln!(stdout, "{}", item.payload.summary())
            }
        })?;
        ctx.record_latency(item.captured);
    }
    Ok(())
}

fn report(format: MetricsFormat, monitor: &Monitor) {
    let stages = monitor.stages();
    match format {
        MetricsFormat::Json => {
            for s in &stages {
                eprintln!("{}", serde_json::json!(s));
            }
            for e in monitor.edges() {
                eprintln!("{}", serde_json::json!(e));
            }
        }
        MetricsFormat::Text => {
            for s in &stages {
                let p = &s.latency;
                eprintln!(
                    "stage {}: in {} out {} busy {:.1} ms; latency since capture p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms",
                    s.stage, s.items_in, s.items_out, s.busy_ms, p.p50_ms, p.p95_ms, p.p99_ms
                );
            }
            for e in monitor.edges() {
                let s = e.stats;
                eprintln!(
                    "edge {}: sent {} received {} dropped {} queued {}",
                    e.edge, s.sent, s.received, s.dropped, s.queued
                );
            }
        }
    }
}
