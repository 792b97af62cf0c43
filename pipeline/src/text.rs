//! Text sources: lines of a file or of stdin, one message per line.

use std::io::BufRead;
use std::time::{Duration, Instant};

use crate::edge::Closed;
use crate::graph::{StageContext, StageResult};
use crate::message::Envelope;

/// Sends each line of `path` ("-" for stdin) until the input ends or the graph stops.
pub fn text_source(
    ctx: &StageContext,
    path: &str,
    mut emit: impl FnMut(Envelope<String>) -> Result<(), Closed>,
) -> StageResult {
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
        emit(Envelope::new(seq as u64, Instant::now(), line))?;
        ctx.item_out();
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
