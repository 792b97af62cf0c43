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
    /// Vision time per 640x480 frame at 1 and 2 threads: the detector (CenterNet, with its
    /// pre- and post-processing) next to the same model.json under TensorFlow.js's wasm
    /// backend (XNNPACK) in node, alternating, as a ratio; and the classifier
    /// (EfficientNet-Lite0, the frame and its three regions).
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
    /// Timed frames a round, after two warm-up frames.
    #[arg(short = 'r', long, default_value_t = 10)]
    pub reps: usize,
    /// Alternating rounds of ours (1 and 2 threads) and tfjs-wasm.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the encoders run (on the CPU, at 1 and at 2 threads).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: percept::device::DeviceChoice,
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
            // The weight kernels' instruction set (CPU devices).
            "kernels": llm::packed::path(),
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
    let device = percept::device::select(args.device, 0)?;
    let encoder = percept::vision::load(&device)?;
    let detector = percept::vision::load_detector(&device)?;
    let (photo, frame) = bench_frame()?;
    let image = encoders::vision::RgbImage {
        width: 640,
        height: 480,
        rgb: &frame,
    };
    let time = |f: &(dyn Fn() -> Result<()> + Sync)| -> Result<f64> {
        let mut times = Vec::new();
        for rep in 0..args.reps + 2 {
            let started = Instant::now();
            f()?;
            // Two warm-up frames (allocator, autotune) are not counted.
            if rep >= 2 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(median(&times))
    };
    let classify = || -> Result<()> {
        let scene = encoder.encode(image)?;
        anyhow::ensure!(
            scene.whole.probs.len() == 1000,
            "the classifier lost its classes"
        );
        Ok(())
    };
    let detect = || -> Result<()> {
        detector.detect(image)?;
        Ok(())
    };
    let dev = format!("{:?}", args.device).to_lowercase();
    let cpu = !matches!(args.device, percept::device::DeviceChoice::Wgpu);
    // On the CPU, each thread count in a pool of its own; wgpu computes on its device.
    let thread_counts: Vec<usize> = if cpu { vec![1, 2] } else { vec![0] };
    let in_pool = |threads: usize, f: &(dyn Fn() -> Result<f64> + Sync)| -> Result<f64> {
        if threads == 0 {
            return f();
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?
            .install(f)
    };
    let reference = TfjsBench::find(&photo);
    if let Err(why) = &reference {
        eprintln!("tfjs-wasm reference not run: {why}");
    }
    let mut rounds: Vec<serde_json::Value> = Vec::new();
    for round in 0..args.rounds.max(1) {
        let mut row = serde_json::Map::new();
        for &t in &thread_counts {
            row.insert(
                format!("detector_ms_{t}t"),
                in_pool(t, &|| time(&detect))?.into(),
            );
            row.insert(
                format!("classifier_ms_{t}t"),
                in_pool(t, &|| time(&classify))?.into(),
            );
        }
        if let Ok(tfjs) = &reference {
            let (ms, threads) = tfjs.run()?;
            row.insert("tfjs_wasm_ms".into(), ms.into());
            row.insert("tfjs_wasm_threads".into(), threads.into());
        }
        eprintln!(
            "round {}: {}",
            round + 1,
            serde_json::Value::Object(row.clone())
        );
        rounds.push(row.into());
    }
    let column =
        |key: &str| -> Vec<f64> { rounds.iter().filter_map(|r| r[key].as_f64()).collect() };
    let summary = |key: &str| -> serde_json::Value {
        let v = column(key);
        serde_json::json!({"median": median(&v), "min": v.iter().copied().fold(f64::INFINITY, f64::min),
            "max": v.iter().copied().fold(0.0, f64::max)})
    };
    let mut out = serde_json::json!({"device": dev, "frame": "640x480", "photo": photo.display().to_string(),
        "reps_per_round": args.reps, "rounds": rounds.len()});
    for &t in &thread_counts {
        for what in ["detector", "classifier"] {
            let key = format!("{what}_ms_{t}t");
            out[&key] = summary(&key);
        }
    }
    if reference.is_ok() {
        out["tfjs_wasm_ms"] = summary("tfjs_wasm_ms");
        out["tfjs_wasm_threads"] = rounds[0]["tfjs_wasm_threads"].clone();
        // Per-round ratios, so a machine that slows down mid-run slows both sides.
        for &t in &thread_counts {
            let ours = column(&format!("detector_ms_{t}t"));
            let ratios: Vec<f64> = column("tfjs_wasm_ms")
                .iter()
                .zip(&ours)
                .map(|(w, o)| w / o)
                .collect();
            out[format!("speedup_vs_tfjs_wasm_{t}t")] = serde_json::json!({"median": median(&ratios),
                "min": ratios.iter().copied().fold(f64::INFINITY, f64::min), "max": ratios.iter().copied().fold(0.0, f64::max)});
        }
    }
    if args.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "vision on {dev}, a 640x480 frame of {}: median of {} rounds (min-max), {} frames a round",
        photo.display(),
        rounds.len(),
        args.reps
    );
    for &t in &thread_counts {
        let th = if t == 0 {
            "device".to_string()
        } else {
            format!("{t} thread{}", if t > 1 { "s" } else { "" })
        };
        let d = &out[format!("detector_ms_{t}t")];
        let c = &out[format!("classifier_ms_{t}t")];
        print!(
            "  {th}: detector (letterbox, CenterNet, decode, NMS) {:.1} ms ({:.1}-{:.1}); classifier {:.1} ms ({:.1}-{:.1})",
            f(&d["median"]),
            f(&d["min"]),
            f(&d["max"]),
            f(&c["median"]),
            f(&c["min"]),
            f(&c["max"])
        );
        let r = &out[format!("speedup_vs_tfjs_wasm_{t}t")];
        if r.is_object() {
            print!(
                "; tfjs-wasm / ours {:.2}x ({:.2}-{:.2})",
                f(&r["median"]),
                f(&r["min"]),
                f(&r["max"])
            );
        }
        println!();
    }
    if reference.is_ok() {
        let w = &out["tfjs_wasm_ms"];
        println!(
            "  tfjs-wasm (XNNPACK, {} thread(s), same model.json, stretch + in-graph decoder): {:.1} ms ({:.1}-{:.1})",
            out["tfjs_wasm_threads"],
            f(&w["median"]),
            f(&w["min"]),
            f(&w["max"])
        );
    }
    Ok(())
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The frame the vision bench times: the top-left 640x480 of scikit-image's motorcycle photo
/// (a real scene with several objects), the one `bench.js` crops too.
fn bench_frame() -> Result<(std::path::PathBuf, Vec<u8>)> {
    let photo = percept::models::model_dir("skimage-photos").join("motorcycle_left.png");
    let frame = pipeline::media_file::load_image(&photo)
        .map_err(|e| anyhow::anyhow!("{e}; run `percept models pull skimage-photos`"))?;
    anyhow::ensure!(
        frame.width >= 640 && frame.height >= 480,
        "{} is smaller than 640x480",
        photo.display()
    );
    let w = frame.width as usize;
    let mut crop = Vec::with_capacity(640 * 480 * 3);
    for y in 0..480 {
        crop.extend_from_slice(&frame.rgb[y * w * 3..(y * w + 640) * 3]);
    }
    Ok((photo, crop))
}

/// `fixtures/reference/centernet/bench.js` under node with `@tensorflow/tfjs-backend-wasm`.
struct TfjsBench {
    script: std::path::PathBuf,
    model: std::path::PathBuf,
    photo: std::path::PathBuf,
}

impl TfjsBench {
    fn find(photo: &std::path::Path) -> Result<Self> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference/centernet");
        anyhow::ensure!(
            dir.join("node_modules/@tensorflow/tfjs-backend-wasm")
                .is_dir(),
            "run `npm ci` in {} first",
            dir.display()
        );
        Ok(TfjsBench {
            script: dir.join("bench.js"),
            model: percept::models::require_all("centernet")?.remove(0),
            photo: photo.to_owned(),
        })
    }

    /// Median ms per frame of one `node bench.js` run, and the threads tfjs used.
    fn run(&self) -> Result<(f64, u64)> {
        let out = std::process::Command::new("node")
            .arg(&self.script)
            .arg(&self.model)
            .arg(&self.photo)
            .arg("wasm")
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run node: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "bench.js failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or(""))?;
        Ok((
            f(&v["median_ms"]),
            v["threads_actual"].as_u64().unwrap_or(1),
        ))
    }
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
