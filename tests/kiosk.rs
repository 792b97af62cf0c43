//! `percept kiosk` end to end on spoken questions (`fixtures/kiosk/questions.wav`: three
//! clips of `fixtures/speech` with a second of silence between them): the utterances are
//! cut by the VAD, transcribed, and a question the knowledge file answers gets the fact.

use std::path::Path;
use std::process::Command;

#[test]
fn spoken_questions_are_cut_transcribed_and_answered_from_the_knowledge_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_percept"))
        .args(["kiosk", "--json", "--audio"])
        .arg(root.join("fixtures/kiosk/questions.wav"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let transcripts: Vec<&str> = answers
        .iter()
        .map(|a| a["transcript"].as_str().unwrap())
        .collect();
    assert_eq!(transcripts.len(), 3, "{answers:?}");
    assert_eq!(transcripts[0], "What time does the museum open on Sunday?");
    assert_eq!(transcripts[1], "Where is the cafe?");
    assert!(transcripts[2].contains("for a child"), "{transcripts:?}");
    // The knowledge file: "The cafe is on the ground floor, next to the main entrance."
    let cafe = answers[1]["answer"].as_str().unwrap().to_lowercase();
    assert!(cafe.contains("ground floor"), "{cafe}");
    for a in &answers {
        let first = a["end_of_speech_to_first_token_ms"].as_f64().unwrap();
        let done = a["end_of_speech_to_answer_ms"].as_f64().unwrap();
        assert!(first > 0.0 && first <= done, "{a}");
        assert!(a["start_s"].as_f64().unwrap() < a["end_s"].as_f64().unwrap());
    }
}

#[test]
fn a_bad_knowledge_file_or_audio_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let knowledge = dir.path().join("k.toml");
    std::fs::write(&knowledge, "name = \"x\"\ninstructions = 3\n").unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_percept"))
            .arg("kiosk")
            .args(args)
            .output()
            .unwrap()
    };
    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kiosk/questions.wav");
    let out = run(&[
        "--audio".as_ref(),
        wav.as_os_str(),
        "--knowledge".as_ref(),
        knowledge.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("k.toml"));
    let junk = dir.path().join("q.wav");
    std::fs::write(&junk, b"not audio").unwrap();
    let out = run(&["--audio".as_ref(), junk.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("q.wav"));
}
