//! The kiosk's evaluation (`percept eval kiosk`) as a test: on the development set and on
//! the held-out set (three venues, typed), facts answered, abstentions and commands each at
//! least 90% right, and not one action for an utterance that asked for none. The spoken
//! fixtures (Whisper's transcripts of the speech clips) are answered and acted on too.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use llm::Llm;
use percept::kiosk::AnswerConfig;
use percept::kiosk::eval::{self, EvalSet, Kind, Report};
use pipeline::media_file::AudioFile;

fn set(name: &str) -> EvalSet {
    EvalSet::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/kiosk/eval")
            .join(name),
    )
    .unwrap()
}

fn llm() -> Arc<Llm> {
    let path = percept::models::require("smollm2-135m-instruct").unwrap();
    Arc::new(Llm::load(path, &Device::flex(), |_, _| {}).unwrap())
}

fn assert_thresholds(report: &Report) {
    let text = report.text(false);
    for kind in [Kind::Fact, Kind::Abstain, Kind::Command] {
        assert!(report.share(kind) >= 0.9, "{kind:?} below 90%\n{text}");
    }
    assert_eq!(report.unasked_actions, 0, "{text}");
}

#[test]
fn typed_cases_meet_the_thresholds_on_the_development_and_held_out_sets() {
    let llm = llm();
    for name in ["dev.toml", "heldout.toml"] {
        let report = eval::run(&set(name), &llm, &AnswerConfig::default(), None).unwrap();
        eprintln!("{}", report.text(false));
        assert!(report.by_kind[&Kind::Talk].total >= 10, "{name}");
        assert_thresholds(&report);
    }
}

#[test]
fn spoken_fixtures_are_answered_and_acted_on() {
    let llm = llm();
    let whisper = percept::speech::Transcriber::load(&llm.device).unwrap();
    let transcribe = |path: &Path| -> anyhow::Result<String> {
        Ok(whisper.transcribe(&AudioFile::open(path)?.read_all()?).text)
    };
    let report = eval::run(
        &set("spoken.toml"),
        &llm,
        &AnswerConfig::default(),
        Some(&transcribe),
    )
    .unwrap();
    eprintln!("{}", report.text(true));
    assert_thresholds(&report);
}
