//! The Piper voice in burn against its references (`fixtures/reference/piper-joe`): the
//! phoneme ids against piper-phonemize's for the same sentences, and the waveform against
//! onnxruntime running the same `.onnx` on those ids with zero noise.

mod common;

use burn::tensor::Device;
use voice::{Scales, Voice};

const SILENT: Scales = Scales {
    noise_scale: 0.0,
    length_scale: 1.0,
    noise_w: 0.0,
};

fn voice() -> Voice {
    let onnx = percept::models::require_file("piper-joe", ".onnx").unwrap();
    Voice::load(&onnx, &Device::flex()).unwrap()
}

fn reference() -> serde_json::Value {
    let path = common::reference_dir("piper-joe").join("sentences.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids_of(sentence: &serde_json::Value) -> Vec<i64> {
    sentence["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Signal-to-noise ratio of `got` against `want`, in dB.
fn snr_db(want: &[f32], got: &[f32]) -> f64 {
    let signal: f64 = want.iter().map(|&w| f64::from(w).powi(2)).sum();
    let noise: f64 = want
        .iter()
        .zip(got)
        .map(|(&w, &g)| (f64::from(w) - f64::from(g)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-30)).log10()
}

#[test]
fn phoneme_ids_match_piper_phonemize() {
    let voice = voice();
    let reference = reference();
    let mut sentences = 0;
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got: Vec<Vec<i64>> = voice
            .phonemes(text)
            .unwrap()
            .iter()
            .map(|p| voice.ids(p))
            .collect();
        let want: Vec<Vec<i64>> = case["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids_of)
            .collect();
        assert_eq!(got, want, "{text}");
        sentences += want.len();
    }
    assert!(sentences >= 5, "{sentences} sentences");
}

#[test]
fn waveform_matches_onnxruntime() {
    let voice = voice();
    let dir = common::reference_dir("piper-joe");
    let mut worst = f64::INFINITY;
    for case in reference()["cases"].as_array().unwrap() {
        for sentence in case["sentences"].as_array().unwrap() {
            let want = common::read_f32(&dir.join(sentence["file"].as_str().unwrap()));
            let got = voice.synthesize(&ids_of(sentence), SILENT);
            assert_eq!(got.sample_rate, 22_050);
            assert_eq!(got.samples.len(), want.len(), "{}", case["text"]);
            let snr = snr_db(&want, &got.samples);
            eprintln!("{:5.1} dB  {}", snr, sentence["phonemes"]);
            worst = worst.min(snr);
        }
    }
    assert!(worst >= 40.0, "worst SNR {worst:.1} dB");
}

#[test]
fn zero_noise_gives_the_same_samples_every_run() {
    let voice = voice();
    let ids = voice.ids(&voice.phonemes("Good morning.").unwrap()[0]);
    let a = voice.synthesize(&ids, SILENT);
    let b = voice.synthesize(&ids, SILENT);
    assert_eq!(a.samples, b.samples);
    // With the voice's own noise the sentence differs from run to run, but keeps its sound.
    let c = voice.synthesize(&ids, voice.scales);
    assert!(c.samples.iter().any(|s| s.abs() > 0.05));
}

/// Words for comparison: lower case, punctuation gone ("a.m." and "am" alike).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['.', ',', '?', '!', ':', ';', '"'], "")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Word error rate of `got` against `want`: edits (substitutions, insertions, deletions)
/// over the reference's words.
fn wer(want: &[String], got: &[String]) -> f64 {
    let mut row: Vec<usize> = (0..=got.len()).collect();
    for (i, w) in want.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, g) in got.iter().enumerate() {
            let sub = prev + usize::from(w != g);
            prev = row[j + 1];
            row[j + 1] = sub.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[got.len()] as f64 / want.len().max(1) as f64
}

#[test]
fn word_error_rate_counts_edits() {
    let w = |s: &str| words(s);
    assert_eq!(wer(&w("the cafe is open"), &w("The cafe is open.")), 0.0);
    assert_eq!(wer(&w("the cafe is open"), &w("the cafe open")), 0.25);
    assert_eq!(wer(&w("a b"), &w("c d e")), 1.5);
}

/// The kiosk's spoken answers to the museum's recorded questions, transcribed by percept's
/// own Whisper, give the answers' words back.
#[test]
fn spoken_answers_transcribe_back_to_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("answers.wav");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(["kiosk", "--audio", "fixtures/kiosk/questions.wav", "--json"])
        .arg("--speak-to")
        .arg(&wav)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(
                v["end_of_speech_to_first_audio_ms"].as_f64().is_some() || v["answer"].is_null()
            );
            v["answer"].as_str().map(str::to_string)
        })
        .collect();
    assert!(answers.len() >= 3, "{answers:?}");

    let audio = pipeline::media_file::AudioFile::open(&wav)
        .unwrap()
        .read_all()
        .unwrap();
    let device = Device::flex();
    let whisper = percept::speech::Transcriber::load(&device).unwrap();
    let heard = whisper.transcribe(&audio).text;
    let want = words(&answers.join(" "));
    let rate = wer(&want, &words(&heard));
    eprintln!(
        "said:  {}\nheard: {heard}\nWER {:.1}%",
        answers.join(" "),
        rate * 100.0
    );
    assert!(rate <= 0.10, "WER {:.1}%: heard {heard:?}", rate * 100.0);
}

/// `percept say --out` writes a WAV of the voice's rate whose length is what it reports;
/// empty text and a missing sound card are clear errors.
#[test]
fn say_writes_a_wav_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("hello.wav");
    let say = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_percept"))
            .arg("say")
            .args(args)
            .output()
            .unwrap()
    };
    let out = say(&[
        "Good morning, welcome.",
        "--json",
        "--out",
        wav.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let audio_s = report["audio_s"].as_f64().unwrap();
    assert!(audio_s > 0.5 && report["real_time_factor"].as_f64().unwrap() > 0.0);
    let bytes = std::fs::read(&wav).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(
        u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
        22_050
    );
    let samples = (bytes.len() - 44) / 4;
    assert!((samples as f64 / 22_050.0 - audio_s).abs() < 1e-3);

    let out = say(&["  "]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to say"));
    let out = say(&["hi", "--noise-scale", "11"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--noise-scale must be between"));
    // This machine has no sound card: the speaker is refused with what to do instead.
    if !std::path::Path::new("/dev/snd").exists() {
        let out = say(&["hi"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--out FILE.wav"));
    }
}
