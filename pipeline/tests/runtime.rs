//! The runtime's promises: bounded staleness under `latest`, nothing lost under `block`, and
//! every thread joined on end of stream, on stop (Ctrl-C) and on a panic.
//!
//! No assertion here bounds wall-clock time: a loaded CI machine (or a panic printing a
//! backtrace) makes any such bound flaky. What a broken runtime would do instead is hang,
//! and [`join_unless_hung`] turns a hang into a failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use pipeline::edge::{EdgeProbe, EdgeStats};
use pipeline::{EdgeConfig, Envelope, Graph, GraphError, Input, Output, edge};

/// Far longer than any of these graphs needs even on a loaded machine; reaching it means a
/// stage never ended.
const HANG: Duration = Duration::from_secs(60);

/// [`Graph::join`], failing the test instead of hanging it when a stage never ends.
fn join_unless_hung(g: Graph) -> Result<(), GraphError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(g.join());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("the graph did not join within {HANG:?}: a stage hangs"))
}

/// Time runs 10x faster than real: 20 s of 30 fps input is 2 s of 300 fps.
const SPEEDUP: u32 = 10;

#[test]
fn latest_policy_keeps_queue_and_staleness_bounded_and_counts_drops() {
    let frame_every = Duration::from_secs(1) / 30 / SPEEDUP;
    let work = Duration::from_millis(100) / SPEEDUP;
    let frames = 20 * 30;
    let (tx, rx, probe): (Output<Envelope<u64>>, Input<Envelope<u64>>, EdgeProbe<_>) =
        edge(EdgeConfig::latest(2));
    // How many frames the camera has handed to the edge so far, and the most frames the
    // encoder's frame lagged behind the newest one when it took it.
    let sent_so_far = Arc::new(AtomicU64::new(0));
    let worst_lag = Arc::new(AtomicU64::new(0));
    let max_queue = Arc::new(Mutex::new(0usize));
    let mut g = Graph::new();
    let sent_counter = sent_so_far.clone();
    g.spawn("camera", move |_| {
        let start = Instant::now();
        for seq in 0..frames {
            // Paced by the clock, as a camera is, not by the consumer.
            let due = start + frame_every * seq as u32;
            sleep(due.saturating_duration_since(Instant::now()));
            tx.send(Envelope::new(seq, Instant::now(), seq))?;
            sent_counter.store(seq + 1, Ordering::SeqCst);
        }
        Ok(())
    })
    .unwrap();
    let (lag, maxq) = (worst_lag.clone(), max_queue.clone());
    g.spawn("slow-encoder", move |_| {
        while let Some(frame) = rx.recv() {
            let newest = sent_so_far.load(Ordering::SeqCst).saturating_sub(1);
            lag.fetch_max(newest.saturating_sub(frame.seq), Ordering::SeqCst);
            {
                let mut m = maxq.lock().unwrap();
                *m = (*m).max(rx.len());
            }
            sleep(work);
        }
        Ok(())
    })
    .unwrap();
    join_unless_hung(g).unwrap();

    let EdgeStats {
        sent,
        received,
        dropped,
        queued,
    } = probe.stats();
    assert_eq!(sent, frames);
    assert_eq!(queued, 0);
    assert_eq!(
        received + dropped,
        sent,
        "every frame is either processed or counted as dropped"
    );
    assert!(
        dropped > frames / 2,
        "a 3x slower encoder must drop most frames, dropped {dropped}"
    );
    assert!(
        *max_queue.lock().unwrap() <= 2,
        "queue never exceeds its capacity"
    );
    // Latency counted in frames, not milliseconds, so a loaded machine cannot flake it: an
    // unbounded queue would fall hundreds of frames behind by the end; `latest(2)` keeps the
    // frame taken within its two queued places of the newest (one more for the instant
    // between the camera's send and its counter).
    let lag = worst_lag.load(Ordering::SeqCst);
    assert!(lag <= 3, "the encoder took a frame {lag} frames old");
}

#[test]
fn block_policy_loses_nothing_over_100000_items() {
    const N: u64 = 100_000;
    let (tx, rx, _) = edge(EdgeConfig::block(8));
    let (tx2, rx2, probe) = edge(EdgeConfig::block(8));
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut g = Graph::new();
    g.spawn("source", move |_| {
        for i in 0..N {
            tx.send(i)?;
        }
        Ok(())
    })
    .unwrap();
    g.spawn("double", move |_| {
        for i in rx {
            tx2.send(i * 2)?;
        }
        Ok(())
    })
    .unwrap();
    let sink = got.clone();
    g.spawn("sink", move |_| {
        sink.lock().unwrap().extend(rx2);
        Ok(())
    })
    .unwrap();
    join_unless_hung(g).unwrap();
    let got = got.lock().unwrap();
    assert_eq!(got.len() as u64, N);
    assert!(
        got.iter().enumerate().all(|(i, &v)| v == 2 * i as u64),
        "in order, none lost"
    );
    assert_eq!(probe.stats().dropped, 0);
}

/// source -> a -> b -> c -> sink; `source` decides when input ends.
fn five_stages(
    g: &mut Graph,
    source: impl FnOnce(pipeline::StageContext, Output<u64>) -> pipeline::StageResult + Send + 'static,
    panic_at: Option<u64>,
) -> Arc<Mutex<u64>> {
    let (tx0, mut rx) = {
        let (t, r, _) = edge(EdgeConfig::block(4));
        (t, r)
    };
    g.spawn("source", move |ctx| source(ctx, tx0)).unwrap();
    for name in ["a", "b", "c"] {
        let (tx, next, _) = edge(EdgeConfig::block(4));
        let input = std::mem::replace(&mut rx, next);
        g.spawn(name, move |_| {
            for i in input {
                if name == "b" && Some(i) == panic_at {
                    panic!("bad item {i}");
                }
                tx.send(i)?;
            }
            Ok(())
        })
        .unwrap();
    }
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    g.spawn("sink", move |_| {
        for _ in rx {
            *c.lock().unwrap() += 1;
        }
        Ok(())
    })
    .unwrap();
    count
}

#[test]
fn end_of_stream_drains_and_joins_every_stage() {
    let ended = Arc::new(AtomicBool::new(false));
    let e = ended.clone();
    let mut g = Graph::new();
    let count = five_stages(
        &mut g,
        move |_, tx| {
            for i in 0..1000 {
                tx.send(i)?;
            }
            e.store(true, Ordering::SeqCst);
            Ok(())
        },
        None,
    );
    join_unless_hung(g).unwrap();
    assert!(ended.load(Ordering::SeqCst), "the source ran to its end");
    assert_eq!(
        *count.lock().unwrap(),
        1000,
        "everything in flight is drained"
    );
}

/// Counts up until the graph stops, like a live camera.
fn endless_source(ctx: pipeline::StageContext, tx: Output<u64>) -> pipeline::StageResult {
    let mut i = 0;
    while !ctx.stopped() {
        tx.send(i)?;
        i += 1;
    }
    Ok(())
}

#[test]
fn stop_like_ctrl_c_ends_an_endless_source_and_joins_everything() {
    let mut g = Graph::new();
    let stop = g.stop_handle();
    let count = five_stages(&mut g, endless_source, None);
    sleep(Duration::from_millis(100));
    stop.stop();
    // The source never ends by itself: only the stop can make this join.
    join_unless_hung(g).unwrap();
    assert!(*count.lock().unwrap() > 0);
}

#[test]
fn a_panicking_stage_stops_the_graph_and_is_named() {
    let mut g = Graph::new();
    five_stages(&mut g, endless_source, Some(10));
    // The source is endless: the graph joins only if the panic stopped it.
    let err = join_unless_hung(g).unwrap_err();
    assert_eq!(
        err,
        GraphError::Panicked {
            stage: "b".into(),
            message: "bad item 10".into()
        }
    );
}

#[test]
fn stages_count_their_items_and_busy_time() {
    let (tx, rx, _) = edge(EdgeConfig::block(4));
    let mut g = Graph::new();
    let monitor = g.monitor();
    g.spawn("source", move |ctx| {
        for i in 0..50u64 {
            tx.send(i)?;
            ctx.item_out();
        }
        Ok(())
    })
    .unwrap();
    g.spawn("work", move |ctx| {
        for _ in rx {
            ctx.item_in();
            ctx.busy(|| sleep(Duration::from_millis(1)));
        }
        Ok(())
    })
    .unwrap();
    join_unless_hung(g).unwrap();
    let stats = monitor.stages();
    assert_eq!(
        (stats[0].stage.as_str(), stats[0].items_out),
        ("source", 50)
    );
    assert_eq!((stats[1].stage.as_str(), stats[1].items_in), ("work", 50));
    assert!(
        stats[1].busy_ms >= 50.0,
        "50 items of at least 1 ms: {}",
        stats[1].busy_ms
    );
    assert_eq!(stats[0].busy_ms, 0.0);
}

#[test]
fn a_failing_stage_is_named_with_its_error() {
    let mut g = Graph::new();
    g.spawn("reader", |_| {
        Err("fixture.json line 3: expected a number".into())
    })
    .unwrap();
    let err = join_unless_hung(g).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stage 'reader' failed: fixture.json line 3: expected a number"
    );
}
