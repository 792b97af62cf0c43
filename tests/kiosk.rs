//! `percept kiosk` end to end on spoken questions (`fixtures/kiosk/questions.wav`: three
//! clips of `fixtures/speech` with a second of silence between them): the utterances are
//! cut by the VAD, transcribed, and a question the knowledge file answers gets the fact.
//! A replayed visit (`fixtures/kiosk/visit`: a question and two spoken commands, with a
//! photo as the camera) gets the fact, the two actions as valid JSON, and the camera's
//! labels. And the constrained decoder gives a valid action whatever the words.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use llm::{GenerateParams, Llm, Segment, Session};
use percept::kiosk::actions::{CommandSpec, Commands};

/// The bundled museum's commands.
fn museum_commands() -> Commands {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kiosk/museum.toml");
    let file: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let specs: BTreeMap<String, CommandSpec> = file["commands"].clone().try_into().unwrap();
    Commands::new(specs).unwrap()
}

fn kiosk_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_percept"))
        .arg("kiosk")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_replayed_visit_gets_the_fact_the_actions_and_the_camera_labels() {
    let answers = kiosk_json(&["--json", "--replay", "fixtures/kiosk/visit"]);
    assert_eq!(answers.len(), 3, "{answers:?}");
    let t = |i: usize| answers[i]["transcript"].as_str().unwrap();
    assert_eq!(t(0), "Where is the cafe?");
    assert!(
        t(1).contains("map") && t(1).contains("second floor"),
        "{}",
        t(1)
    );
    assert_eq!(t(2), "Can you switch the screen to French?");

    let cafe = answers[0]["answer"].as_str().unwrap().to_lowercase();
    assert!(cafe.contains("ground floor"), "{cafe}");
    assert!(answers[0]["action"].is_null());

    let commands = museum_commands();
    let expect = [
        (1, r#"{"action": "show_map", "args": {"floor": "second"}}"#),
        (
            2,
            r#"{"action": "set_language", "args": {"language": "French"}}"#,
        ),
    ];
    for (i, want) in expect {
        assert!(answers[i]["answer"].is_null(), "{}", answers[i]);
        let got = serde_json::to_string(&answers[i]["action"]).unwrap();
        let action = commands.parse(&got).unwrap().expect("an action");
        assert_eq!(Some(action), commands.parse(want).unwrap());
    }
    // The camera (the replayed photo of a rocket) was in view for every utterance.
    for a in &answers {
        let labels: Vec<&str> = a["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(
            labels
                .iter()
                .any(|l| ["missile", "space shuttle", "projectile"].contains(l)),
            "{labels:?}"
        );
        let first = a["end_of_speech_to_first_token_ms"].as_f64().unwrap();
        assert!(first > 0.0 && first <= a["end_of_speech_to_answer_ms"].as_f64().unwrap());
    }
}

/// Forced to write an action for words that ask for none, or for gibberish, the model still
/// writes a valid one: the grammar leaves it no other tokens.
#[test]
fn constrained_decoding_always_yields_a_valid_action() {
    let llm = Llm::load(
        percept::models::require("smollm2-135m-instruct").unwrap(),
        &Device::flex(),
        |_, _| {},
    )
    .unwrap();
    let commands = museum_commands();
    let grammar = commands.grammar();
    let params = GenerateParams {
        max_tokens: 64,
        ..GenerateParams::default()
    };
    for words in [
        "Tell me a long story about dragons.",
        "{\"action\": \"open_all_doors\", \"args\": {\"floor\": \"roof\"}}",
        "zxq vvv 123 ]]]",
    ] {
        let prompt = llm
            .chat_prompt(&[llm::Message::new(llm::Role::User, words)])
            .unwrap();
        let ids = llm.tokenizer.encode(&prompt, true).unwrap();
        let generation = llm
            .generate_constrained(
                &mut Session::new(),
                &[Segment::Tokens(ids)],
                &params,
                &grammar,
                |_| {},
            )
            .unwrap();
        assert_eq!(generation.stop, llm::StopReason::Complete, "{words}");
        let action = commands.parse(&generation.text).unwrap();
        assert!(action.is_some(), "{words}: {}", generation.text);
    }
}

#[test]
fn spoken_questions_are_cut_transcribed_and_answered_from_the_knowledge_file() {
    let answers = kiosk_json(&["--json", "--audio", "fixtures/kiosk/questions.wav"]);
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
        assert!(a["action"].is_null(), "{a}");
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
    // A command table the grammar cannot hold: named with its file and command.
    std::fs::write(
        &knowledge,
        "name = \"x\"\ninstructions = \"i\"\nfacts = \"f\"\n\
         [commands.go]\ndescription = \"d\"\nparameters = { to = { enum = [\"a\\\"b\"] } }\n",
    )
    .unwrap();
    let out = run(&[
        "--text".as_ref(),
        "-".as_ref(),
        "--knowledge".as_ref(),
        knowledge.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("k.toml") && err.contains("'go'"), "{err}");
    let junk = dir.path().join("q.wav");
    std::fs::write(&junk, b"not audio").unwrap();
    let out = run(&["--audio".as_ref(), junk.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("q.wav"));
}
