//! Silero VAD in burn against onnxruntime running the same graph with the same weights
//! (`fixtures/reference/silero-vad/safetensors_probs.json`), chunk by chunk over an
//! espeak-ng clip with pauses, state and context carried across chunks.

mod common;

use burn::tensor::Device;
use encoders::audio::silero::CHUNK;
use encoders::audio::{Segment, Segmenter, SegmenterConfig, Silero};

#[test]
fn speech_probabilities_match_onnxruntime_within_1e_3() {
    let dir = common::reference_dir("silero-vad");
    let clip = common::read_f32(&dir.join("clip16k.f32"));
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("safetensors_probs.json")).unwrap())
            .unwrap();
    let want: Vec<f32> = reference["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let device = Device::flex();
    let vad = Silero::load(&percept::models::require("silero-vad").unwrap(), &device).unwrap();
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
    assert!(worst < 1e-3, "max probability difference {worst}");
    // The clip has speech: some chunks are confidently speech, some confidently not.
    assert!(got.iter().any(|&p| p > 0.9) && got.iter().any(|&p| p < 0.1));

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
    let mut got: Vec<Segment> = got.iter().filter_map(|&p| segmenter.push(p)).collect();
    got.extend(segmenter.finish(clip.len()));
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
