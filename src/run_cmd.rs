//! `percept run graph.toml`: builds a graph from a file and runs it until its sources end
//! or Ctrl-C.
//!
//! The stage kinds available to graph files are listed in [`kinds`]; today they carry
//! text. Kinds for frames, audio and the models join as their issues land.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use pipeline::edge::EdgeProbe;
use pipeline::metrics::LatencyHistogram;
use pipeline::spec::{self, GraphSpec, KindInfo, StageSpec};
use pipeline::{Envelope, Graph, Input, Monitor, Output, StageContext, StageResult, edge};

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

type Text = Envelope<String>;

/// The stage kinds a graph file may use.
pub fn kinds() -> BTreeMap<&'static str, KindInfo> {
    let mut k = BTreeMap::new();
    k.insert(
        "text",
        KindInfo {
            inputs: vec![],
            outputs: vec![("text", "text")],
            required: vec!["path"],
        },
    );
    for sink in ["stdout", "jsonl"] {
        k.insert(
            sink,
            KindInfo {
                inputs: vec![("in", "text")],
                outputs: vec![],
                required: vec![],
            },
        );
    }
    k
}

pub fn run(args: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.graph)
        .with_context(|| format!("cannot read graph file {}", args.graph.display()))?;
    let spec = spec::parse(&text, &kinds())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.graph.display()))?;
    let mut graph = Graph::new();
    on_ctrl_c(graph.stop_handle());

    let (mut outputs, mut inputs, probes) = wire(&spec);
    let latency = std::sync::Arc::new(std::sync::Mutex::new(LatencyHistogram::default()));
    for stage in &spec.stages {
        let out = outputs.remove(&(stage.name.clone(), "text".into()));
        let input = inputs.remove(&(stage.name.clone(), "in".into()));
        let body = build(stage, out, input, latency.clone())?;
        graph.spawn(&stage.name, body)?;
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = graph.monitor();
    let reporter = args.metrics.map(|format| {
        let (probes, latency, done) = (probes.clone(), latency.clone(), done.clone());
        let monitor = monitor.clone();
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(5) {
                    report(
                        format,
                        &monitor,
                        &probes,
                        &latency.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    last = Instant::now();
                }
            }
        })
    });
    let result = graph.join();
    done.store(true, std::sync::atomic::Ordering::Release);
    if let (Some(format), Some(reporter)) = (args.metrics, reporter) {
        let _ = reporter.join();
        report(
            format,
            &monitor,
            &probes,
            &latency.lock().unwrap_or_else(|p| p.into_inner()),
        );
    }
    result.map_err(Into::into)
}

/// Ctrl-C stops the graph the orderly way (sources stop, everything drains). A second
/// Ctrl-C ends the process at once.
fn on_ctrl_c(stop: pipeline::StopHandle) {
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
    HashMap<(String, String), Output<Text>>,
    HashMap<(String, String), Input<Text>>,
    Vec<(String, EdgeProbe<Text>)>,
);

/// One channel per edge. (Every port carries text today; typed ports come with frames.)
fn wire(spec: &GraphSpec) -> Ports {
    let (mut outs, mut ins, mut probes) = (HashMap::new(), HashMap::new(), Vec::new());
    for e in &spec.edges {
        let (tx, rx, probe) = edge(e.config);
        let name = format!("{}.{} -> {}.{}", e.from.0, e.from.1, e.to.0, e.to.1);
        outs.insert(e.from.clone(), tx);
        ins.insert(e.to.clone(), rx);
        probes.push((name, probe));
    }
    (outs, ins, probes)
}

type Body = Box<dyn FnOnce(StageContext) -> StageResult + Send>;

fn build(
    stage: &StageSpec,
    out: Option<Output<Text>>,
    input: Option<Input<Text>>,
    latency: std::sync::Arc<std::sync::Mutex<LatencyHistogram>>,
) -> Result<Body> {
    Ok(match stage.kind.as_str() {
        "text" => {
            let Some(path) = stage.params["path"].as_str().map(str::to_owned) else {
                bail!(
                    "line {}: stage '{}': 'path' must be a string",
                    stage.line,
                    stage.name
                );
            };
            Box::new(move |ctx| text_source(ctx, &path, out))
        }
        sink @ ("stdout" | "jsonl") => {
            let json = sink == "jsonl";
            let input = input.expect("the spec checked that every input is fed");
            Box::new(move |ctx| {
                let mut stdout = std::io::stdout().lock();
                for item in input {
                    ctx.item_in();
                    let age = item.age();
                    latency
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(age);
                    ctx.busy(|| {
                        if json {
                            let v = serde_json::json!({
                                "seq": item.seq, "text": item.payload,
                                "latency_ms": age.as_secs_f64() * 1e3,
                            });
                            writeln!(stdout, "{v}")
                        } else {
                            writeln!(stdout, "{}", item.payload)
                        }
                    })?;
                }
                Ok(())
            })
        }
        other => bail!("line {}: kind '{other}' has no implementation", stage.line),
    })
}

/// Lines of a file (or stdin for "-"), one message each.
fn text_source(ctx: StageContext, path: &str, out: Option<Output<Text>>) -> StageResult {
    let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = if path == "-" {
        Box::new(stdin_lines(ctx.clone()))
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
        Box::new(std::io::BufReader::new(file).lines())
    };
    for (seq, line) in lines.enumerate() {
        if ctx.stopped() {
            break;
        }
        let line = line.map_err(|e| format!("{path} line {}: {e}", seq + 1))?;
        if let Some(out) = &out {
            out.send(Envelope::new(seq as u64, Instant::now(), line))?;
            ctx.item_out();
        }
    }
    Ok(())
}

/// Stdin's lines, ending when stdin does or when the graph stops. A read from a terminal
/// blocks and cannot be interrupted, so it happens on a helper thread and this side waits
/// in slices, looking at the stop flag; the helper ends with the process.
fn stdin_lines(ctx: StageContext) -> impl Iterator<Item = std::io::Result<String>> {
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::iter::from_fn(move || {
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => return Some(line),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if ctx.stopped() => return None,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
        }
    })
}

fn report(
    format: MetricsFormat,
    monitor: &Monitor,
    probes: &[(String, EdgeProbe<Text>)],
    latency: &LatencyHistogram,
) {
    let p = latency.percentiles();
    let stages = monitor.stages();
    match format {
        MetricsFormat::Json => {
            for s in &stages {
                eprintln!("{}", serde_json::json!(s));
            }
            for (name, probe) in probes {
                let s = probe.stats();
                let v = serde_json::json!({"edge": name, "sent": s.sent, "received": s.received,
                    "dropped": s.dropped, "queued": s.queued});
                eprintln!("{v}");
            }
            eprintln!("{}", serde_json::json!({ "end_to_end_latency": p }));
        }
        MetricsFormat::Text => {
            for s in &stages {
                eprintln!(
                    "stage {}: in {} out {} busy {:.1} ms",
                    s.stage, s.items_in, s.items_out, s.busy_ms
                );
            }
            for (name, probe) in probes {
                let s = probe.stats();
                eprintln!(
                    "edge {name}: sent {} received {} dropped {} queued {}",
                    s.sent, s.received, s.dropped, s.queued
                );
            }
            eprintln!(
                "end-to-end latency over {} items: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
                p.count, p.p50_ms, p.p95_ms, p.p99_ms
            );
        }
    }
}
