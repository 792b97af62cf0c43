//! `percept chat` and `percept llm ...`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use llm::{GenerateParams, Llm, Message, Role, SamplingParams, Segment, Session};

use crate::ModelArgs;
use percept::{device, models};

/// The default language model's id in `models.toml`.
pub const DEFAULT_LLM: &str = "smollm2-135m-instruct";

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The question or instruction.
    pub prompt: String,
    /// A system message (default: the chat template's own).
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object with the answer and timings instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy; higher is more varied.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample within the smallest set of tokens holding this much probability.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Penalty on recently used tokens (1: off).
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    /// Seed of the sampler, for reproducible runs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    fn params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: 64,
                seed: self.seed,
            },
            stop: self.stop.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum LlmCommand {
    /// Print the top-N logits after a raw prompt (no chat template) as JSON.
    Logits {
        /// File holding the prompt, used byte for byte (special tokens are parsed).
        #[arg(long, value_name = "FILE")]
        prompt_file: PathBuf,
        /// How many logits to print.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print the token ids of a text as JSON.
    Tokenize {
        text: String,
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// Loads the language model named by the arguments, with a progress bar.
pub fn load(args: &ModelArgs) -> Result<Llm> {
    let device = device::select(args.device, args.threads)?;
    load_on(args, &device)
}

/// [`load`] onto a device already selected.
pub fn load_on(args: &ModelArgs, device: &burn::tensor::Device) -> Result<Llm> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => models::require(DEFAULT_LLM)?,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("loading {msg} {bar:30} {pos}/{len} layers")
            .expect("static template"),
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let llm = Llm::load(&path, device, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("cannot load the language model {}", path.display()))?;
    bar.finish_and_clear();
    Ok(llm)
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let llm = load(&args.model)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new(Role::System, system));
    }
    messages.push(Message::new(Role::User, &args.prompt));
    let prompt = llm.chat_prompt(&messages)?;
    let ids = llm.tokenizer.encode(&prompt, true)?;
    let params = args.sampling.params();
    let mut out = std::io::stdout().lock();
    let stream = !args.json;
    let generation = llm.generate(
        &mut Session::new(),
        &[Segment::Tokens(ids)],
        &params,
        |piece| {
            if stream {
                // A closed stdout (a pipe into `head`) only ends the printing.
                let _ = out.write_all(piece.as_bytes()).and_then(|_| out.flush());
            }
        },
    )?;
    if args.json {
        let v = serde_json::json!({
            "answer": generation.text,
            "stop": generation.stop,
            "prompt_tokens": generation.prompt_positions,
            "generated_tokens": generation.tokens.len(),
            "prompt_seconds": generation.prompt_time.as_secs_f64(),
            "generate_seconds": generation.generate_time.as_secs_f64(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}

pub fn run(command: LlmCommand) -> Result<()> {
    match command {
        LlmCommand::Logits {
            prompt_file,
            top,
            model,
        } => {
            let prompt = std::fs::read_to_string(&prompt_file)
                .with_context(|| format!("cannot read prompt file {}", prompt_file.display()))?;
            let llm = load(&model)?;
            let ids = llm.tokenizer.encode(&prompt, true)?;
            let logits = llm.prefill(&mut Session::new(), &[Segment::Tokens(ids.clone())])?;
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let top: Vec<_> = order
                .iter()
                .take(top)
                .map(|&i| {
                    serde_json::json!({
                        "id": i,
                        "token": llm.tokenizer.decode(&[i as u32]),
                        "logit": logits[i],
                    })
                })
                .collect();
            let v = serde_json::json!({ "prompt_ids": ids, "top": top });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        LlmCommand::Tokenize { text, model } => {
            let path = match &model.model {
                Some(p) => p.clone(),
                None => models::require(DEFAULT_LLM)?,
            };
            // Tokenizing needs only the metadata, not the weights.
            let gguf = llm::GgufFile::open(&path)?;
            let tokenizer = llm::Tokenizer::from_gguf(&gguf)?;
            println!(
                "{}",
                serde_json::to_string(&tokenizer.encode(&text, true)?)?
            );
        }
    }
    Ok(())
}
