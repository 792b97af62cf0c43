//! Whisper's log-mel against the numpy port of openai-whisper's `audio.py`
//! (`fixtures/reference/whisper-tiny-en/`, itself within 1.9e-5 of onnx-asr's
//! `whisper80_conv.onnx`) on an espeak-ng clip.

use std::path::{Path, PathBuf};

use encoders::audio::LogMel;
use encoders::audio::logmel::{N_FFT, N_MELS};

fn reference(name: &str) -> Vec<f32> {
    let dir: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reference/whisper-tiny-en");
    std::fs::read(dir.join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn filterbank_is_whispers() {
    let want = reference("mel_filters_80.f32");
    let got = LogMel::new();
    assert_eq!(got.filters().len(), N_MELS * (N_FFT / 2 + 1));
    let worst = got
        .filters()
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "max filter difference {worst}");
}

#[test]
fn log_mel_matches_the_reference_within_1e_3() {
    let clip = reference("clip16k.f32");
    let want = reference("logmel_ref.f32");
    let mel = LogMel::new().compute(&clip);
    assert_eq!((mel.n_mels, mel.frames), (80, clip.len() / 160));
    assert_eq!(mel.data.len(), want.len());
    let worst = mel
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "max log-mel difference {worst}");
}
