//! Any text as a kiosk knowledge file, as TOML and as Markdown, and what the kiosk reads
//! of one it accepts (its facts, its fallback line): errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The reader's own source file, compiled here without the root package (which would bring
// the whole burn stack into every sanitizer build).
#[allow(dead_code)]
#[path = "../../src/kiosk/knowledge.rs"]
mod knowledge;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let toml = toml::from_str::<knowledge::Knowledge>(&text).ok();
    let markdown = knowledge::Knowledge::from_markdown(&text).ok();
    for k in toml.into_iter().chain(markdown) {
        let _ = (k.fact_list(), k.fallback_line());
    }
});
