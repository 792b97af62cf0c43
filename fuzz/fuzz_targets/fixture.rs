//! Any bytes as a recorded fixture's manifest and one index file (input: the manifest, a 0
//! byte, then the index): the manifest checked, the index read as frames and as text.
//! Errors are fine; panics, and paths or times that escape the checks, are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pipeline::fixture::{Fixture, parse_frame_index, parse_text_index};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (manifest, index) = data.split_at(split);
    let index = String::from_utf8_lossy(index.get(1..).unwrap_or_default());
    let dir = Path::new("fuzz-fixture");
    let _ = Fixture::parse(dir, &String::from_utf8_lossy(manifest));
    if let Ok(frames) = parse_frame_index(&dir.join("camera.jsonl"), &index) {
        for f in frames {
            // What the checks promise: a file inside the fixture, a time a Duration holds.
            let inside = Path::new(&f.file)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            assert!(inside, "{}", f.file);
            let _ = std::time::Duration::from_secs_f64(f.t_ms / 1000.0);
        }
    }
    let _ = parse_text_index(&dir.join("text.jsonl"), &index);
});
