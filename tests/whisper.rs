//! Whisper tiny.en in burn against faster-whisper (CTranslate2 running the very same
//! model.bin; greedy, no timestamps): the same token ids on an espeak-ng clip
//! (`fixtures/reference/whisper-tiny-en/`).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use encoders::audio::LogMel;
use encoders::audio::whisper::{Greedy, MAX_FRAMES, Whisper};
use encoders::ct2::Ct2Model;

fn setup() -> (Whisper, Greedy, Vec<f32>, Vec<u32>) {
    let dir = common::reference_dir("whisper-tiny-en");
    let clip = common::read_f32(&dir.join("clip16k.f32"));
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("faster_whisper_ref.json")).unwrap())
            .unwrap();
    let want: Vec<u32> = reference["runs"]["without_timestamps"]["segments"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let files = percept::models::require_all("whisper-tiny-en").unwrap();
    let bytes = std::fs::read(&files[0]).unwrap();
    let ct2 = Ct2Model::parse(&bytes).unwrap();
    let model = Whisper::load(&ct2, &Device::flex()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        config[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    };
    let greedy = Greedy {
        prompt: vec![50257, 50362],
        end: 50256,
        suppress: ids("suppress_ids"),
        suppress_first: ids("suppress_ids_begin"),
        timestamps_from: 50363,
    };
    (model, greedy, clip, want)
}

fn mel_tensor(clip: &[f32], frames: usize) -> Tensor<2> {
    let mel = LogMel::new().compute(clip);
    // Frames past the clip are 0.0 in the log-mel domain, as faster-whisper pads.
    let mut data = vec![0f32; 80 * frames];
    for m in 0..80 {
        let n = mel.frames.min(frames);
        data[m * frames..m * frames + n]
            .copy_from_slice(&mel.data[m * mel.frames..m * mel.frames + n]);
    }
    Tensor::from_data(TensorData::new(data, [80, frames]), &Device::flex())
}

#[test]
fn transcript_tokens_equal_faster_whispers() {
    let (model, greedy, clip, want) = setup();
    let got = greedy.run(&model, model.encode(mel_tensor(&clip, MAX_FRAMES)));
    assert_eq!(got, want);
    // A 15 s window instead of 30 s (what the transcriber uses for short clips): the same.
    let short = greedy.run(&model, model.encode(mel_tensor(&clip, 1500)));
    assert_eq!(short, want, "with a 15 s window");
}

/// Issue 15: a prompt as long as the text context (448 positions) left no room, and a
/// longer one underflowed the room left: nothing is decoded then, and one position short
/// of the end decodes at most one token.
#[test]
fn a_prompt_that_fills_the_text_context_decodes_nothing() {
    let (model, mut greedy, clip, _) = setup();
    let encoded = model.encode(mel_tensor(&clip, 1500));
    let positions = model.text_positions();
    assert_eq!(positions, 448);
    let start = greedy.prompt.clone();
    for (len, most) in [(positions + 5, 0), (positions, 0), (positions - 1, 1)] {
        greedy.prompt = start.iter().copied().cycle().take(len).collect();
        let got = greedy.run(&model, encoded.clone());
        assert!(got.len() <= most, "prompt of {len}: {got:?}");
    }
}

#[test]
fn transcriber_gives_the_text_and_odd_audio_a_clear_outcome() {
    let clip = common::read_f32(&common::reference_dir("whisper-tiny-en").join("clip16k.f32"));
    let t = percept::speech::Transcriber::load(&Device::flex()).unwrap();
    assert_eq!(
        t.transcribe(&clip).text,
        "What time does the museum open on Sunday?"
    );
    // Silence, 0.1 s, nothing at all: processed, whatever the model makes of them.
    for samples in [vec![0.0f32; 16_000], vec![0.01f32; 1_600], vec![]] {
        let out = t.transcribe(&samples);
        assert!(out.tokens.len() < 50, "{out:?}");
    }
}

/// The same model on the wgpu device (llvmpipe in CI) writes the CPU's tokens, from an
/// encoder output within a small bound of the CPU's.
#[test]
fn wgpu_device_matches_the_cpu() {
    let (cpu_model, greedy, clip, want) = setup();
    let files = percept::models::require_all("whisper-tiny-en").unwrap();
    let bytes = std::fs::read(&files[0]).unwrap();
    let ct2 = Ct2Model::parse(&bytes).unwrap();
    let gpu = percept::device::select(percept::device::DeviceChoice::Wgpu, 0).unwrap();
    let gpu_model = Whisper::load(&ct2, &gpu).unwrap();
    let mel = mel_tensor(&clip, 1500);
    let on_gpu = gpu_model.encode(Tensor::from_data(mel.clone().into_data(), &gpu));
    let on_cpu = cpu_model.encode(mel);
    let a: Vec<f32> = on_gpu.clone().into_data().try_to_vec().unwrap();
    let b: Vec<f32> = on_cpu.into_data().try_to_vec().unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-2, "max encoder difference {worst}");
    assert_eq!(greedy.run(&gpu_model, on_gpu), want);
}
