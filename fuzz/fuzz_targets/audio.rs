//! Any bytes as an audio file (input: 0 for WAV, 1 for MP3, 2 for FLAC, 3 for Ogg, else no
//! hint, then the file) decoded to 16 kHz mono: errors are fine; a panic that escapes the
//! reader's containment, an abort sizing buffers from a header, or a hang are not.
#![no_main]

use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use pipeline::media_file::AudioFile;

fuzz_target!(|data: &[u8]| {
    // libFuzzer's hook aborts on every panic, even one the reader catches and turns into
    // an error (symphonia's id3v2 `unreachable!()`); a panic that escapes still aborts
    // where it leaves the fuzz target.
    static QUIET: Once = Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let name = match kind {
        0 => "a.wav",
        1 => "a.mp3",
        2 => "a.flac",
        3 => "a.ogg",
        _ => "a",
    };
    let Ok(mut file) = AudioFile::from_bytes(Path::new(name), bytes.to_vec()) else {
        return;
    };
    // Bounded: at most ten minutes of 16 kHz samples from a file this small.
    let mut total = 0usize;
    while let Ok(Some(samples)) = file.next_samples() {
        total += samples.len();
        assert!(total <= 16_000 * 600, "{total} samples");
    }
});
