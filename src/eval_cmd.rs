//! `percept eval kiosk`: the kiosk's evaluation sets, scored per kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use percept::kiosk::AnswerConfig;
use percept::kiosk::eval::{self, EvalSet, Kind};
use pipeline::media_file::AudioFile;

use crate::ModelArgs;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Score the kiosk on evaluation sets: facts answered, abstentions, commands, and
    /// sentences that are no request (format: `percept::kiosk::eval`; default: the bundled
    /// development, held-out and spoken sets in fixtures/kiosk/eval/).
    Kiosk(KioskEvalArgs),
}

#[derive(Args, Debug)]
pub struct KioskEvalArgs {
    /// Evaluation sets (TOML).
    #[arg(value_name = "SET")]
    pub sets: Vec<PathBuf>,
    /// One JSON object per set, with every case's reply and its evidence.
    #[arg(long)]
    pub json: bool,
    /// List every case, not only the ones that went wrong.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub grounding: crate::kiosk_cmd::GroundingArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kiosk/eval");

pub fn run(command: EvalCommand) -> Result<()> {
    let EvalCommand::Kiosk(args) = command;
    let paths = if args.sets.is_empty() {
        [
            "dev.toml",
            "dev2.toml",
            "heldout.toml",
            "heldout2.toml",
            "heldout3.toml",
            "heldout4.toml",
            "spoken.toml",
        ]
        .iter()
        .map(|n| Path::new(BUNDLED).join(n))
        .collect()
    } else {
        args.sets.clone()
    };
    let sets = paths
        .iter()
        .map(|p| EvalSet::load(p))
        .collect::<Result<Vec<_>>>()?;
    let llm = Arc::new(crate::llm_cmd::load(&args.model)?);
    let spoken = sets
        .iter()
        .any(|s| s.cases.iter().any(|c| c.audio.is_some()));
    let transcriber = if spoken {
        Some(percept::speech::Transcriber::load(&llm.device)?)
    } else {
        None
    };
    let transcribe = |path: &Path| -> Result<String> {
        let samples = AudioFile::open(path)?.read_all()?;
        let t = transcriber.as_ref().expect("loaded for recorded cases");
        Ok(t.transcribe(&samples).text)
    };
    let transcribe: Option<eval::Transcribe> = transcriber.as_ref().map(|_| &transcribe as _);
    let config = args.grounding.apply(AnswerConfig::default(), &llm.device)?;
    for set in &sets {
        let report = eval::run(set, &llm, &config, transcribe)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.text(args.all));
            let kinds = [Kind::Fact, Kind::Abstain, Kind::Command, Kind::Talk];
            let shares: Vec<String> = kinds
                .iter()
                .filter(|k| report.by_kind.contains_key(k))
                .map(|k| format!("{:?} {:.0}%", k, 100.0 * report.share(*k)).to_lowercase())
                .collect();
            println!("  => {}\n", shares.join(", "));
        }
    }
    Ok(())
}
