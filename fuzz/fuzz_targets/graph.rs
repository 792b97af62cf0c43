//! Any text as a graph file (`percept run GRAPH`), checked against a small registry of
//! stage kinds: errors are fine, panics and huge allocations (an edge's capacity) are not.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pipeline::spec::{ANY, KindInfo, parse};

fuzz_target!(|data: &[u8]| {
    let kinds = BTreeMap::from([
        (
            "text",
            KindInfo {
                inputs: vec![],
                outputs: vec![("text", "text")],
                required: vec!["path"],
            },
        ),
        (
            "jsonl",
            KindInfo {
                inputs: vec![("in", ANY)],
                outputs: vec![],
                required: vec![],
            },
        ),
    ]);
    let _ = parse(&String::from_utf8_lossy(data), &kinds);
});
