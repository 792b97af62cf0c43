//! Speech recognition on ten spoken kiosk phrases (espeak-ng, `fixtures/speech/`) against
//! faster-whisper running the very same model.bin greedily (`faster_whisper.json`): at
//! least nine transcripts identical, and the word error rate against what was said within
//! two points of faster-whisper's.

use std::path::Path;

use burn::tensor::Device;
use pipeline::media_file::AudioFile;

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Word-level edit distance.
fn errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(r != h)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[hypothesis.len()]
}

#[test]
fn transcripts_equal_faster_whisper_on_the_spoken_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speech");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let (clips, reference) = (read("clips.json"), read("faster_whisper.json"));
    let transcriber = percept::speech::Transcriber::load(&Device::flex()).unwrap();
    let (mut same, mut ours_err, mut theirs_err, mut total) = (0, 0, 0, 0);
    let mut report = Vec::new();
    for (clip, fw) in clips["clips"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["clips"].as_array().unwrap())
    {
        let file = clip["file"].as_str().unwrap();
        assert_eq!(fw["file"], file);
        let samples = AudioFile::open(&dir.join(file))
            .unwrap()
            .read_all()
            .unwrap();
        let ours = transcriber.transcribe(&samples).text;
        let theirs = fw["text"].as_str().unwrap().trim();
        let said = words(clip["text"].as_str().unwrap());
        same += usize::from(ours == theirs);
        ours_err += errors(&said, &words(&ours));
        theirs_err += errors(&said, &words(theirs));
        total += said.len();
        report.push(format!("{file}: ours {ours:?} / faster-whisper {theirs:?}"));
    }
    let wer = |e: usize| 100.0 * e as f64 / total as f64;
    let (ours, theirs) = (wer(ours_err), wer(theirs_err));
    eprintln!("{same}/10 identical; WER ours {ours:.1}%, faster-whisper {theirs:.1}%");
    assert!(same >= 9, "{same}/10 identical:\n{}", report.join("\n"));
    assert!(
        (ours - theirs).abs() <= 2.0,
        "WER ours {ours:.1}% vs faster-whisper {theirs:.1}%:\n{}",
        report.join("\n")
    );
}

/// Odd audio gives a clear outcome: silence and noise are transcribed (to little), a stereo
/// 44.1 kHz MP3 is decoded and resampled first, 0.1 s and no audio give (almost) nothing, a
/// 10-minute recording goes through in 30 s windows, and a file that is not audio is an
/// error naming it.
#[test]
fn odd_audio_is_handled() {
    let transcriber = percept::speech::Transcriber::load(&Device::flex()).unwrap();
    let silence = transcriber.transcribe(&vec![0.0; 16_000 * 2]);
    assert!(silence.tokens.len() < 20, "{silence:?}");
    let mut seed = 1u32;
    let noise: Vec<f32> = (0..16_000 * 2)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
        })
        .collect();
    let heard = transcriber.transcribe(&noise);
    assert!(heard.tokens.len() < 100, "{heard:?}");

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mp3 = AudioFile::open(&fixtures.join("audio/tone440.mp3"))
        .unwrap()
        .read_all()
        .unwrap();
    assert!(mp3.len() > 15_000);
    // A 1 s tone is decoded and resampled, and heard as (almost) nothing.
    let tone = transcriber.transcribe(&mp3);
    assert!(tone.tokens.len() < 100, "{tone:?}");

    let clip = AudioFile::open(&fixtures.join("speech/clip03.wav"))
        .unwrap()
        .read_all()
        .unwrap();
    // A tenth of a second (the start of "Where is the cafe?"), and nothing at all.
    let tenth = transcriber.transcribe(&clip[..1600]);
    assert!(tenth.tokens.len() < 20, "{tenth:?}");
    assert_eq!(transcriber.transcribe(&[]).tokens, Vec::<u32>::new());

    // Ten minutes: one spoken clip, then silence.
    let mut long = clip.clone();
    long.resize(16_000 * 600, 0.0);
    let t = transcriber.transcribe(&long);
    assert!(t.text.starts_with("Where is the cafe"), "{t:?}");
    assert!(t.tokens.len() < 200, "{t:?}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("voice.wav");
    std::fs::write(&bad, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk").unwrap();
    let err = AudioFile::open(&bad)
        .and_then(|f| f.read_all())
        .unwrap_err()
        .to_string();
    assert!(err.contains("voice.wav"), "{err}");
}

/// faster-whisper's fallback on repetition: decoded in a window no longer than the clip,
/// Whisper never says end-of-text and loops (measured when choosing the window length);
/// the greedy decoding repeats itself (zlib ratio above 2.4), so the window is decoded
/// again at rising temperatures; when every temperature still loops (as here: 0.2 to 1.0
/// give ratios of 42.7 to 2.42), the most confident one is kept with its loop cut after
/// the first turn.
#[test]
fn a_repeating_transcript_falls_back_to_sampling() {
    let transcriber = percept::speech::Transcriber::load(&Device::flex()).unwrap();
    let clip =
        AudioFile::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speech/clip03.wav"))
            .unwrap()
            .read_all()
            .unwrap();
    let own_length = clip.len() / 160;
    let attempts = transcriber.decode_window(&clip, Some(own_length));
    let greedy = &attempts[0];
    assert_eq!(greedy.temperature, 0.0);
    assert!(greedy.compression_ratio > 2.4, "{greedy:?}");
    assert!(attempts.len() > 1);
    assert_eq!(attempts.len(), 7, "six temperatures, then the one kept");
    let kept = attempts.last().unwrap();
    assert!(kept.compression_ratio <= 2.4, "{kept:?}");
    assert!(kept.tokens.len() < 20, "{kept:?}");
    // "Where is the cafe where is the cafe ..." is cut to its first turn.
    assert_eq!(&kept.tokens[..4], &[6350, 318, 262, 26725]);
    assert_eq!(percept::speech::compression_ratio(b""), 0.0);
    assert_eq!(
        percept::speech::cut_loop(&[1, 2, 3, 4, 3, 4, 3, 4]),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        percept::speech::cut_loop(&[1, 2, 3, 4, 3, 4]),
        vec![1, 2, 3, 4, 3, 4]
    );
}
