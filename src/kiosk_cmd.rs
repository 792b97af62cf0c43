//! `percept kiosk`: spoken questions answered from a knowledge file.
//!
//! ```text
//! audio (microphone | file | replay) -> listen (16 kHz, Silero VAD, segmenter)
//!   -> transcribe (Whisper tiny.en) -> answer (LLM, knowledge in a cached prompt head) -> sink
//! ```
//!
//! Each utterance is cut when the segmenter confirms its end; latencies count from that
//! moment (the end of speech) to the answer's first token and to its end.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use encoders::audio::silero::CHUNK;
use encoders::audio::{Segmenter, SegmenterConfig, Silero};
use fusion::prompt::{FramedPrompt, PrefixCache};
use llm::{GenerateParams, Llm, SamplingParams, Segment};
use pipeline::audio::To16k;
use pipeline::fixture::{Fixture, Pace, ReplayClock};
use pipeline::media_file::AudioFile;
use pipeline::{
    AudioChunk, EdgeConfig, Envelope, Graph, Input, Output, StageContext, StageResult, edge,
};
use serde::{Deserialize, Serialize};

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct KioskArgs {
    /// Answer the questions spoken in an audio file (WAV, FLAC, OGG, MP3).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replay", "mic"])]
    pub audio: Option<PathBuf>,
    /// Replay a recorded fixture's audio (fixtures/README.md), at its recorded pace.
    #[arg(long, value_name = "DIR", conflicts_with = "mic")]
    pub replay: Option<PathBuf>,
    /// Listen to the default microphone, or the one whose name contains NAME.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub mic: Option<String>,
    /// The kiosk's instructions and facts (TOML: name, instructions, facts).
    #[arg(long, value_name = "FILE")]
    pub knowledge: Option<PathBuf>,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 48)]
    pub max_tokens: usize,
    /// One JSON object per utterance.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

const ASK: &str = "\nAnswer in one short sentence, from the facts.";

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kiosk/museum.toml");

/// What the kiosk knows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knowledge {
    pub name: String,
    pub instructions: String,
    pub facts: String,
}

/// One utterance and its answer, as printed.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub seq: u64,
    /// Where the speech was in the audio, seconds.
    pub start_s: f64,
    pub end_s: f64,
    pub transcript: String,
    pub answer: String,
    pub end_of_speech_to_first_token_ms: f64,
    pub end_of_speech_to_answer_ms: f64,
}

/// Speech cut out of the stream; `captured` of its envelope is the end of speech.
struct Utterance {
    start: usize,
    end: usize,
    samples: Vec<f32>,
}

pub fn run(args: KioskArgs) -> Result<()> {
    let path = args.knowledge.clone().unwrap_or_else(|| BUNDLED.into());
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the knowledge file {}", path.display()))?;
    let knowledge: Knowledge =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if args.audio.is_none() && args.replay.is_none() && args.mic.is_none() {
        bail!("nothing to listen to: give --mic, --audio FILE or --replay DIR");
    }
    let llm = Arc::new(crate::llm_cmd::load(&args.model)?);
    let device = llm.device.clone();
    let vad = Silero::load(&percept::models::require("silero-vad")?, &device)?;
    let transcriber = percept::speech::Transcriber::load(&device)?;
    // The facts open the user's turn, where a small model reads them best; the turn up to
    // the question is the cached head.
    let before = format!("Facts:\n{}\n\nQuestion: ", knowledge.facts.trim());
    let prompt = FramedPrompt::chat(&llm, &knowledge.instructions, &before, ASK)?;
    let cache = PrefixCache::new(&llm, &prompt)?;

    let mut graph = Graph::new();
    crate::run_cmd::on_ctrl_c(graph.stop_handle());
    let (audio_tx, audio_rx, _) = edge(EdgeConfig::block(64));
    spawn_source(&mut graph, &args, audio_tx)?;
    let (speech_tx, speech_rx, _) = edge(EdgeConfig::block(4));
    graph.spawn("listen", move |ctx| {
        listen(&ctx, &vad, audio_rx, &speech_tx)
    })?;
    let (text_tx, text_rx, _) = edge(EdgeConfig::block(4));
    graph.spawn("transcribe", move |ctx| {
        for u in speech_rx {
            ctx.item_in();
            let t = ctx.busy(|| transcriber.transcribe(&u.payload.samples));
            let captured = u.captured;
            text_tx.send(u.map(|u| (u.start, u.end, t.text)))?;
            ctx.item_out_since(captured);
        }
        Ok(())
    })?;
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec!["\n".into()],
    };
    let json = args.json;
    if !json {
        eprintln!("{}: listening", knowledge.name);
    }
    graph.spawn("answer", move |ctx| {
        answer(&ctx, &llm, &cache, &params, text_rx, json)
    })?;
    graph.join().map_err(Into::into)
}

fn spawn_source(
    graph: &mut Graph,
    args: &KioskArgs,
    tx: Output<Envelope<AudioChunk>>,
) -> Result<()> {
    if let Some(path) = &args.audio {
        let mut file = AudioFile::open(path)?;
        graph.spawn("audio-file", move |ctx| {
            let mut seq = 0;
            while let Some(chunk) = file.next_native()? {
                if ctx.stopped() {
                    break;
                }
                tx.send(Envelope::new(seq, Instant::now(), chunk))?;
                ctx.item_out();
                seq += 1;
            }
            Ok(())
        })?;
    } else if let Some(dir) = &args.replay {
        let fixture = Fixture::open(dir)?;
        let name = fixture
            .first("audio")
            .with_context(|| format!("fixture {} has no audio", dir.display()))?
            .name()
            .to_owned();
        graph.spawn("replay", move |ctx| {
            fixture.replay_audio(&ctx, &name, ReplayClock::new(Pace::Recorded), 1600, |c| {
                tx.send(c)
            })
        })?;
    } else {
        spawn_mic(graph, args.mic.as_deref().unwrap_or_default(), tx)?;
    }
    Ok(())
}

#[cfg(feature = "mic")]
fn spawn_mic(graph: &mut Graph, name: &str, tx: Output<Envelope<AudioChunk>>) -> Result<()> {
    use pipeline::microphone::{Microphone, microphone_source};
    let name = (!name.is_empty()).then_some(name);
    let mic = Microphone::open(&cpal::default_host(), name)?;
    graph.spawn("microphone", move |ctx| {
        microphone_source(&ctx, mic, |c| tx.send(c))
    })?;
    Ok(())
}

#[cfg(not(feature = "mic"))]
fn spawn_mic(_: &mut Graph, _: &str, _: Output<Envelope<AudioChunk>>) -> Result<()> {
    bail!("this build has no microphone support (cargo feature 'mic')")
}

/// Audio at any rate in, utterances out: 16 kHz, VAD per 512 samples, segmenter.
fn listen(
    ctx: &StageContext,
    vad: &Silero,
    input: Input<Envelope<AudioChunk>>,
    output: &Output<Envelope<Utterance>>,
) -> StageResult {
    let device = vad.stft.weight.val().device();
    let mut state = vad.start(&device);
    let mut segmenter = Segmenter::new(SegmenterConfig::default());
    let mut to16k = To16k::default();
    // Everything heard so far that a segment may still need (from the oldest open start).
    let (mut heard, mut heard_from) = (Vec::<f32>::new(), 0usize);
    let mut pending = Vec::<f32>::new();
    let mut seq = 0;
    let mut emit = |segment: encoders::audio::Segment, heard: &[f32], heard_from: usize| {
        let a = segment.start.saturating_sub(heard_from).min(heard.len());
        let b = segment.end.saturating_sub(heard_from).min(heard.len());
        let u = Utterance {
            start: segment.start,
            end: segment.end,
            samples: heard[a..b].to_vec(),
        };
        let sent = output.send(Envelope::new(seq, Instant::now(), u));
        seq += 1;
        sent
    };
    for chunk in input {
        ctx.item_in();
        for c in to16k.push(chunk)? {
            pending.extend_from_slice(&c.payload.samples);
        }
        while pending.len() >= CHUNK {
            let block: Vec<f32> = pending.drain(..CHUNK).collect();
            let p = ctx.busy(|| vad.forward(&block, &mut state));
            heard.extend_from_slice(&block);
            if let Some(segment) = segmenter.push(p) {
                emit(segment, &heard, heard_from)?;
                ctx.item_out();
            }
            if !segmenter.in_speech() {
                // Keep a little before the next speech for its padding.
                let keep = heard.len().min(2 * CHUNK);
                heard_from += heard.len() - keep;
                heard.drain(..heard.len() - keep);
            }
        }
    }
    if let Some(c) = to16k.finish() {
        pending.extend_from_slice(&c.payload.samples);
    }
    if !pending.is_empty() {
        let p = vad.forward(&pending, &mut state);
        heard.extend_from_slice(&pending);
        if let Some(segment) = segmenter.push(p) {
            emit(segment, &heard, heard_from)?;
        }
    }
    if let Some(segment) = segmenter.finish(heard_from + heard.len()) {
        emit(segment, &heard, heard_from)?;
    }
    Ok(())
}

fn answer(
    ctx: &StageContext,
    llm: &Llm,
    cache: &PrefixCache,
    params: &GenerateParams,
    input: Input<Envelope<(usize, usize, String)>>,
    json: bool,
) -> StageResult {
    let mut out = std::io::stdout().lock();
    for item in input {
        ctx.item_in();
        let (start, end, transcript) = item.payload;
        let ended = item.captured;
        let ids = llm.tokenizer.encode(&transcript, false)?;
        let (mut session, prompt) = cache.start(Segment::Tokens(ids));
        let mut first = None;
        let generation = ctx.busy(|| {
            llm.generate(&mut session, &prompt, params, |_| {
                first.get_or_insert_with(|| ended.elapsed());
            })
        })?;
        let done = ended.elapsed();
        let a = Answer {
            seq: item.seq,
            start_s: start as f64 / 16_000.0,
            end_s: end as f64 / 16_000.0,
            transcript,
            answer: generation.text.trim().to_owned(),
            end_of_speech_to_first_token_ms: first.unwrap_or(done).as_secs_f64() * 1e3,
            end_of_speech_to_answer_ms: done.as_secs_f64() * 1e3,
        };
        if json {
            writeln!(out, "{}", serde_json::to_string(&a)?)?;
        } else {
            writeln!(
                out,
                "[{:6.2}-{:6.2} s] {}\n  -> {} (first token {:.0} ms, answer {:.0} ms after speech)",
                a.start_s,
                a.end_s,
                a.transcript,
                a.answer,
                a.end_of_speech_to_first_token_ms,
                a.end_of_speech_to_answer_ms
            )?;
        }
        ctx.record_latency(ended);
    }
    Ok(())
}
