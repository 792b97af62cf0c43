//! Silero VAD in burn against onnxruntime, chunk by chunk over an espeak-ng clip with pauses,
//! state and context carried across chunks: weights read from `silero_vad.onnx` against
//! onnxruntime running that file (`onnx_probs.json`), and weights read from the wheel's
//! safetensors (a different checkpoint) against onnxruntime running the same graph with those
//! weights swapped in (`safetensors_probs.json`).

mod common;

use burn::tensor::Device;
use encoders::audio::silero::CHUNK;
use encoders::audio::{Segment, Segmenter, SegmenterConfig, Silero};

/// The cached model file whose name ends with `suffix`.
fn model_file(suffix: &str) -> std::path::PathBuf {
    percept::models::require_file("silero-vad", suffix).unwrap()
}

/// Probabilities of `weights` over the clip, compared chunk by chunk with `reference`.
fn probabilities_match(weights: &str, reference: &str) -> Vec<f32> {
    let dir = common::reference_dir("silero-vad");
    let clip = common::read_f32(&dir.join("clip16k.f32"));
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(reference)).unwrap()).unwrap();
    let want: Vec<f32> = reference["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let device = Device::flex();
    let vad = Silero::load(&model_file(weights), &device).unwrap();
    let mut state = vad.start(&device);
    let got: Vec<f32> = clip
        .chunks(CHUNK)
        .map(|c| vad.forward(c, &mut state))
        .collect();
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{weights}: max probability difference {worst:e}");
    assert!(
        worst < 1e-3,
        "{weights}: max probability difference {worst}"
    );
    // The clip has speech: some chunks are confidently speech, some confidently not.
    assert!(got.iter().any(|&p| p > 0.9) && got.iter().any(|&p| p < 0.1));
    got
}

#[test]
fn onnx_weights_match_silero_vad_onnx_within_1e_3() {
    let probs = probabilities_match("silero_vad.onnx", "onnx_probs.json");
    utterances_are_get_speech_timestamps(&probs);
}

#[test]
fn safetensors_weights_match_onnxruntime_with_those_weights_within_1e_3() {
    let probs = probabilities_match("silero_vad_16k.safetensors", "safetensors_probs.json");
    utterances_are_get_speech_timestamps(&probs);
}

fn utterances_are_get_speech_timestamps(probs: &[f32]) {
    let dir = common::reference_dir("silero-vad");
    let samples = common::read_f32(&dir.join("clip16k.f32")).len();

    // Streamed into utterances, they are silero-vad's `get_speech_timestamps` segments
    // (its Python, ported to numpy, on onnxruntime's probabilities: segments.json).
    let segments: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("segments.json")).unwrap()).unwrap();
    let want: Vec<Segment> = segments["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Segment {
            start: s["start"].as_u64().unwrap() as usize,
            end: s["end"].as_u64().unwrap() as usize,
        })
        .collect();
    let mut segmenter = Segmenter::new(SegmenterConfig::default());
    let mut got: Vec<Segment> = probs.iter().filter_map(|&p| segmenter.push(p)).collect();
    got.extend(segmenter.finish(samples));
    assert_eq!(got, want);
}

/// The same model on the wgpu device (llvmpipe in CI) gives the CPU's probabilities.
#[test]
fn wgpu_device_matches_the_cpu() {
    let clip = common::read_f32(&common::reference_dir("silero-vad").join("clip16k.f32"));
    let path = percept::models::require("silero-vad").unwrap();
    let gpu = percept::device::select(percept::device::DeviceChoice::Wgpu, 0).unwrap();
    let cpu = Device::flex();
    let probs = |device: &Device| -> Vec<f32> {
        let vad = Silero::load(&path, device).unwrap();
        let mut state = vad.start(device);
        clip.chunks(CHUNK)
            .take(60)
            .map(|c| vad.forward(c, &mut state))
            .collect()
    };
    let (g, c) = (probs(&gpu), probs(&cpu));
    let worst = g
        .iter()
        .zip(&c)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max probability difference {worst}");
}
