//! The kiosk's evaluation (`percept eval kiosk`) as a test.
//!
//! On every set (nine venues typed, and the spoken fixtures through Whisper): not one
//! action for an utterance that asked for none, and no statement for talk (heldout3: one
//! remark to a companion is answered). On the
//! development set, the bar: facts answered, abstentions and commands each at
//! least 90% right, ranking facts by meaning (the default) and by words alone. The other
//! sets do not reach it for facts (README, "Kiosk grounding"); their scores are printed.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use llm::Llm;
use percept::kiosk::eval::{self, EvalSet, Kind, Report};
use percept::kiosk::{AnswerConfig, Answerer, Knowledge};
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

/// The shipped configuration: facts ranked by meaning (all-MiniLM-L6-v2).
fn by_meaning(llm: &Llm) -> AnswerConfig {
    AnswerConfig {
        encoder: Some(percept::kiosk::sentence_encoder(&llm.device).unwrap()),
        ..AnswerConfig::default()
    }
}

fn assert_no_action_or_statement_unasked(report: &Report) {
    let text = report.text(false);
    assert_eq!(report.unasked_actions, 0, "{text}");
    assert_eq!(report.share(Kind::Talk), 1.0, "{text}");
}

#[test]
fn the_development_set_meets_the_bar_and_no_set_gets_an_unasked_action() {
    let llm = llm();
    let config = by_meaning(&llm);
    let words = eval::run(&set("dev.toml"), &llm, &AnswerConfig::default(), None).unwrap();
    for kind in [Kind::Fact, Kind::Abstain, Kind::Command] {
        assert!(
            words.share(kind) >= 0.9,
            "words: {kind:?}\n{}",
            words.text(false)
        );
    }
    let dev = eval::run(&set("dev.toml"), &llm, &config, None).unwrap();
    eprintln!("{}", dev.text(false));
    for kind in [Kind::Fact, Kind::Abstain, Kind::Command] {
        assert!(dev.share(kind) >= 0.9, "{kind:?}\n{}", dev.text(false));
    }
    assert_no_action_or_statement_unasked(&dev);
    for name in [
        "dev2.toml",
        "heldout.toml",
        "heldout2.toml",
        "heldout4.toml",
    ] {
        let report = eval::run(&set(name), &llm, &config, None).unwrap();
        eprintln!("{}", report.text(false));
        assert!(report.by_kind[&Kind::Talk].total >= 15, "{name}");
        assert_no_action_or_statement_unasked(&report);
    }
    // heldout3 answers one remark to a companion ("did you remember the towels or did
    // you leave them in the car again") from a fact; it must still act on no talk.
    let report = eval::run(&set("heldout3.toml"), &llm, &config, None).unwrap();
    eprintln!("{}", report.text(false));
    assert_eq!(report.unasked_actions, 0, "{}", report.text(false));
}

#[test]
fn spoken_fixtures_get_their_actions_and_no_unasked_one() {
    let llm = llm();
    let whisper = percept::speech::Transcriber::load(&llm.device).unwrap();
    let transcribe = |path: &Path| -> anyhow::Result<String> {
        Ok(whisper.transcribe(&AudioFile::open(path)?.read_all()?).text)
    };
    let report = eval::run(
        &set("spoken.toml"),
        &llm,
        &by_meaning(&llm),
        Some(&transcribe),
    )
    .unwrap();
    eprintln!("{}", report.text(true));
    assert_eq!(report.share(Kind::Command), 1.0, "{}", report.text(true));
    assert_eq!(report.unasked_actions, 0, "{}", report.text(true));
}

/// A knowledge file of 200 facts: the cached head is as long as with 6, the answer still
/// the right fact, and only the retrieved facts reach the prompt.
#[test]
fn a_large_knowledge_file_costs_no_more_per_question() {
    let llm = llm();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kiosk");
    let small = Knowledge::load(&dir.join("museum.toml")).unwrap();
    let mut large = small.clone();
    for i in 0..194 {
        large.facts.push_str(&format!(
            "\n- Locker {i} of the {} collection is in storeroom {}.",
            ["pottery", "coin", "textile", "map"][i % 4],
            i / 4
        ));
    }
    assert_eq!(large.fact_list().len(), 200);
    let config = by_meaning(&llm);
    let small = Answerer::new(llm.clone(), &small, config.clone()).unwrap();
    let large = Answerer::new(llm, &large, config).unwrap();
    assert_eq!(small.head_positions(), large.head_positions());
    let reply = large.reply("Where is the cafe?", None, |_| {}).unwrap();
    let g = reply.grounding.as_ref().unwrap();
    assert!(g.facts.len() <= 2, "{g:?}");
    assert!(large.facts()[g.facts[0]].contains("cafe"), "{g:?}");
    let answer = reply.answer.unwrap().to_lowercase();
    assert!(answer.contains("ground floor"), "{answer}");
}
