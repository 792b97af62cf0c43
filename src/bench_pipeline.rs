//! `percept bench pipeline`: what an edge of the runtime costs, measured against bare
//! crossbeam channels (the floor any channel-based graph sits on) in the same run,
//! alternating, so the ratio holds whatever the machine is doing.
//!
//! Two measures per payload: throughput (a chain kept full, messages per second) and
//! per-hop latency (one message in flight; the sink answers the source, and the round
//! trip over the chain's hops is divided by their number).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use pipeline::metrics::LatencyHistogram;
use pipeline::{EdgeConfig, Envelope, Frame, Graph, Input, Output, edge};

use crate::bench::PipelineBenchArgs;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Channels {
    Percept,
    Crossbeam,
}

/// One hop of a chain, either kind.
enum Tx<T> {
    Ours(Output<T>),
    Bare(crossbeam_channel::Sender<T>),
}

enum Rx<T> {
    Ours(Input<T>),
    Bare(crossbeam_channel::Receiver<T>),
}

impl<T> Tx<T> {
    fn send(&self, v: T) -> bool {
        match self {
            Tx::Ours(o) => o.send(v).is_ok(),
            Tx::Bare(s) => s.send(v).is_ok(),
        }
    }
}

impl<T> Rx<T> {
    fn recv(&self) -> Option<T> {
        match self {
            Rx::Ours(i) => i.recv(),
            Rx::Bare(r) => r.recv().ok(),
        }
    }
}

fn channel<T>(kind: Channels) -> (Tx<T>, Rx<T>) {
    match kind {
        Channels::Percept => {
            let (tx, rx, _) = edge(EdgeConfig::block(8));
            (Tx::Ours(tx), Rx::Ours(rx))
        }
        Channels::Crossbeam => {
            let (tx, rx) = crossbeam_channel::bounded(8);
            (Tx::Bare(tx), Rx::Bare(rx))
        }
    }
}

/// Source -> (stages - 2) forwarding stages -> sink; every stage a thread (ours through
/// [`Graph`], the bare chain through plain threads). Returns the sink's receiving end
/// and a join for the rest.
fn chain<T: Send + 'static>(kind: Channels, stages: usize) -> (Tx<T>, Rx<T>, Box<dyn FnOnce()>) {
    let (first_tx, mut rx) = channel::<T>(kind);
    let mut graph = Graph::new();
    let mut threads = Vec::new();
    for i in 0..stages.saturating_sub(2) {
        let (tx, next_rx) = channel::<T>(kind);
        let input = std::mem::replace(&mut rx, next_rx);
        let forward = move || {
            while let Some(v) = input.recv() {
                if !tx.send(v) {
                    break;
                }
            }
        };
        match kind {
            Channels::Percept => graph
                .spawn(&format!("hop{i}"), move |ctx| {
                    ctx.busy(forward);
                    Ok(())
                })
                .expect("spawn a stage"),
            Channels::Crossbeam => threads.push(std::thread::spawn(forward)),
        }
    }
    let join = Box::new(move || {
        let _ = graph.join();
        for t in threads {
            let _ = t.join();
        }
    });
    (first_tx, rx, join)
}

/// Messages per second through a full chain.
fn throughput<T: Send + Clone + 'static>(kind: Channels, stages: usize, n: u64, item: T) -> f64 {
    let (tx, rx, join) = chain::<Envelope<T>>(kind, stages);
    let started = Instant::now();
    let source = std::thread::spawn(move || {
        for seq in 0..n {
            tx.send(Envelope::new(seq, Instant::now(), item.clone()));
        }
    });
    let mut got = 0;
    while rx.recv().is_some() {
        got += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = source.join();
    join();
    assert_eq!(got, n, "the chain lost messages");
    n as f64 / secs
}

/// Latency of one hop, one message in flight at a time.
fn latency<T: Send + Clone + 'static>(
    kind: Channels,
    stages: usize,
    n: u64,
    item: T,
) -> LatencyHistogram {
    let (tx, rx, join) = chain::<Envelope<T>>(kind, stages);
    let hops = stages.saturating_sub(1).max(1) as u32;
    let (ack_tx, ack_rx) = crossbeam_channel::bounded::<()>(1);
    let sink = std::thread::spawn(move || {
        let mut h = LatencyHistogram::default();
        while let Some(m) = rx.recv() {
            h.record(m.age() / hops);
            let _ = ack_tx.send(());
        }
        h
    });
    for seq in 0..n {
        tx.send(Envelope::new(seq, Instant::now(), item.clone()));
        let _ = ack_rx.recv_timeout(Duration::from_secs(5));
    }
    drop(tx);
    let h = sink.join().expect("sink thread");
    join();
    h
}

struct Row {
    payload: &'static str,
    kind: Channels,
    msgs_per_s: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

fn measure<T: Send + Clone + 'static>(
    args: &PipelineBenchArgs,
    payload: &'static str,
    item: T,
    n: u64,
) -> [Row; 2] {
    let mut rows = [Channels::Percept, Channels::Crossbeam].map(|kind| Row {
        payload,
        kind,
        msgs_per_s: vec![],
        p50_us: vec![],
        p99_us: vec![],
    });
    for _ in 0..args.rounds {
        for row in rows.iter_mut() {
            row.msgs_per_s
                .push(throughput(row.kind, args.stages, n, item.clone()));
            let p = latency(row.kind, args.stages, args.pings, item.clone()).percentiles();
            row.p50_us.push(p.p50_ms * 1e3);
            row.p99_us.push(p.p99_ms * 1e3);
        }
    }
    rows
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(args: PipelineBenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.stages >= 2,
        "--stages must be at least 2 (a source and a sink)"
    );
    let frame = Frame {
        width: 640,
        height: 480,
        rgb: Arc::new(vec![0u8; 640 * 480 * 3]),
    };
    let mut rows = Vec::new();
    rows.extend(measure(&args, "u64", 7u64, args.messages));
    rows.extend(measure(&args, "frame640x480", frame, args.messages / 10));
    if !args.json {
        println!(
            "{} stages ({} hops), median of {} alternating rounds; block policy, capacity 8",
            args.stages,
            args.stages - 1,
            args.rounds
        );
        println!("| payload      | channels  | msgs/s     | hop p50 µs | hop p99 µs |");
    }
    for pair in rows.chunks(2) {
        for r in pair {
            let (tput, p50, p99) = (median(&r.msgs_per_s), median(&r.p50_us), median(&r.p99_us));
            let name = format!("{:?}", r.kind).to_lowercase();
            if args.json {
                let v = serde_json::json!({"payload": r.payload, "channels": name,
                    "stages": args.stages, "msgs_per_s": tput, "hop_p50_us": p50, "hop_p99_us": p99});
                println!("{v}");
            } else {
                println!(
                    "| {:<12} | {name:<9} | {tput:>10.0} | {p50:>10.2} | {p99:>10.2} |",
                    r.payload
                );
            }
        }
        if !args.json {
            let ratio = median(&pair[0].msgs_per_s) / median(&pair[1].msgs_per_s);
            println!(
                "| {:<12} | ratio     | {ratio:>9.2}x | (percept / crossbeam throughput)",
                pair[0].payload
            );
        }
    }
    Ok(())
}
