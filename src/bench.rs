//! `percept bench ...`: speed measurements, shaped like llama.cpp's llama-bench so the two
//! can be run side by side (`bench/llama_cpp.sh`).

use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use llm::{Segment, Session};

use crate::ModelArgs;
use crate::llm_cmd;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prompt processing and decode speed of the language model, in tokens per second.
    Llm(LlmBenchArgs),
    /// Per-hop latency and throughput of the dataflow runtime's edges, next to bare
    /// crossbeam channels in the same run, for small messages and 640x480 RGB frames.
    Pipeline(PipelineBenchArgs),
    /// Vision encoder time per frame: a 640x480 frame through pre-processing and
    /// EfficientNet-Lite0 (the frame and its three regions).
    Vision(VisionBenchArgs),
    /// Real-time factor of speech recognition (Whisper tiny.en, greedy) over audio files:
    /// one JSON line like `bench/faster_whisper_speed.py` prints, for `bench/faster_whisper.sh`.
    Speech(SpeechBenchArgs),
}

#[derive(Args, Debug)]
pub struct SpeechBenchArgs {
    /// Audio files (WAV, FLAC, OGG, MP3), transcribed one after another.
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Timed passes over all files, after one warm-up file; the median is reported.
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// Where the model runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: percept::device::DeviceChoice,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct VisionBenchArgs {
    /// Timed frames after two warm-up frames.
    #[arg(short = 'r', long, default_value_t = 20)]
    pub reps: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the encoder runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: percept::device::DeviceChoice,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct PipelineBenchArgs {
    /// Stages in the chain (source and sink included); hops = stages - 1.
    #[arg(long, default_value_t = 5)]
    pub stages: usize,
    /// Messages per throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Messages per latency run (one in flight at a time).
    #[arg(long, default_value_t = 5_000)]
    pub pings: u64,
    /// Alternating rounds of ours and the bare channels.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LlmBenchArgs {
    /// Prompt length in tokens (llama-bench -p).
    #[arg(short = 'p', long, default_value_t = 64)]
    pub prompt: usize,
    /// Tokens generated one at a time (llama-bench -n).
    #[arg(short = 'n', long = "gen", default_value_t = 64)]
    pub generate: usize,
    /// Timed repetitions after one warm-up (llama-bench -r).
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Llm(args) => llm(args),
        BenchCommand::Pipeline(args) => crate::bench_pipeline::run(args),
        BenchCommand::Vision(args) => vision(args),
        BenchCommand::Speech(args) => speech(args),
    }
}

/// Deterministic ordinary (non-special) token ids, as llama-bench feeds random tokens.
fn bench_tokens(n: usize, vocab: usize, skip: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = (state % vocab as u64) as u32;
        if !skip(id) {
            out.push(id);
        }
    }
    out
}

fn llm(args: LlmBenchArgs) -> Result<()> {
    let llm = llm_cmd::load(&args.model)?;
    let vocab = llm.model.vocab_size();
    let tokens = bench_tokens(args.prompt.max(args.generate), vocab, |id| {
        llm.tokenizer.is_special(id)
    });
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for rep in 0..=args.reps {
        let started = Instant::now();
        if args.prompt > 0 {
            llm.prefill(
                &mut Session::new(),
                &[Segment::Tokens(tokens[..args.prompt].to_vec())],
            )?;
        }
        let pp_s = started.elapsed().as_secs_f64();

        let mut session = Session::new();
        let started = Instant::now();
        for &id in &tokens[..args.generate] {
            llm.prefill(&mut session, &[Segment::Tokens(vec![id])])?;
        }
        let tg_s = started.elapsed().as_secs_f64();
        // Repetition 0 warms caches and the allocator; it is not counted.
        if rep > 0 {
            pp.push(args.prompt as f64 / pp_s);
            tg.push(args.generate as f64 / tg_s);
        }
    }
    let (pp_mean, pp_sd) = mean_sd(&pp);
    let (tg_mean, tg_sd) = mean_sd(&tg);
    let threads = rayon::current_num_threads();
    if args.json {
        let v = serde_json::json!({
            "device": format!("{:?}", args.model.device).to_lowercase(),
            "threads": threads,
            "prompt_tokens": args.prompt, "prompt_tok_s": pp_mean, "prompt_tok_s_sd": pp_sd,
            "gen_tokens": args.generate, "gen_tok_s": tg_mean, "gen_tok_s_sd": tg_sd,
            "reps": args.reps,
        });
        println!("{v}");
    } else {
        let dev = format!("{:?}", args.model.device).to_lowercase();
        println!("| device | threads | test   | tok/s            |");
        println!(
            "| {dev:<6} | {threads:>7} | pp{:<4} | {pp_mean:>8.2} ± {pp_sd:<5.2} |",
            args.prompt
        );
        println!(
            "| {dev:<6} | {threads:>7} | tg{:<4} | {tg_mean:>8.2} ± {tg_sd:<5.2} |",
            args.generate
        );
    }
    Ok(())
}

fn vision(args: VisionBenchArgs) -> Result<()> {
    let device = percept::device::select(args.device, args.threads)?;
    let encoder = percept::vision::load(&device)?;
    // A deterministic 640x480 picture with structure at every scale.
    let (w, h) = (640u32, 480u32);
    let rgb: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i % 3 * 85) ^ (i / 3 % w) ^ (i / 3 / w)) as u8)
        .collect();
    let image = encoders::vision::RgbImage {
        width: w,
        height: h,
        rgb: &rgb,
    };
    let mut times = Vec::new();
    for rep in 0..args.reps + 2 {
        let started = Instant::now();
        let scene = encoder.encode(image)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(scene.whole.probs.len(), 1000);
        if rep >= 2 {
            times.push(ms);
        }
    }
    let (mean, sd) = mean_sd(&times);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let threads = rayon::current_num_threads();
    let dev = format!("{:?}", args.device).to_lowercase();
    if args.json {
        let v = serde_json::json!({"device": dev, "threads": threads, "frame": "640x480",
            "ms_per_frame_mean": mean, "ms_per_frame_sd": sd, "ms_per_frame_median": median,
            "reps": args.reps});
        println!("{v}");
    } else {
        println!(
            "vision encoder on {dev}, {threads} threads: {median:.1} ms per 640x480 frame \
             (median; mean {mean:.1} ± {sd:.1}, {} frames)",
            args.reps
        );
    }
    Ok(())
}

fn speech(args: SpeechBenchArgs) -> Result<()> {
    let device = percept::device::select(args.device, args.threads)?;
    let transcriber = percept::speech::Transcriber::load(&device)?;
    let clips = args
        .files
        .iter()
        .map(|f| pipeline::media_file::AudioFile::open(f)?.read_all())
        .collect::<Result<Vec<_>, _>>()?;
    let audio_s: f64 = clips.iter().map(|c| c.len() as f64 / 16_000.0).sum();
    transcriber.transcribe(&clips[0]);
    let mut walls = Vec::new();
    for _ in 0..args.reps.max(1) {
        let started = Instant::now();
        for clip in &clips {
            transcriber.transcribe(clip);
        }
        walls.push(started.elapsed().as_secs_f64());
    }
    walls.sort_by(f64::total_cmp);
    let wall_s = walls[walls.len() / 2];
    let v = serde_json::json!({"impl": "percept", "threads": rayon::current_num_threads(),
        "audio_s": audio_s, "wall_s": wall_s, "rtf": wall_s / audio_s});
    println!("{v}");
    Ok(())
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
