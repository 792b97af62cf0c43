//! `percept kiosk`: spoken questions answered from a knowledge file.
//!
//! ```text
//! audio (microphone | file | replay) -> listen (16 kHz, Silero VAD, segmenter)
//!   -> transcribe (Whisper tiny.en) -> answer -> stdout
//! text lines (--text) ---------------------^
//! frames (camera | replay) -> see (EfficientNet-Lite0) -> newest scene, read by answer
//! ```
//!
//! The answer stage puts the transcript (and, with a camera, the labels of the newest scene)
//! into the prompt as prefix rows (`fusion::speech`), after a cached head holding the
//! instructions, the facts and the commands of the knowledge file. Decoding is constrained by
//! the commands' grammar (`percept::commands`): the reply is plain text, or exactly one valid
//! action as JSON.
//!
//! Each utterance is cut when the segmenter confirms its end; latencies count from that
//! moment (the end of speech) to the answer's first token and to its end.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use encoders::audio::silero::CHUNK;
use encoders::audio::{Segmenter, SegmenterConfig, Silero};
use encoders::vision::{Scene, VisionEncoder};
use fusion::prompt::{FramedPrompt, PrefixCache};
use fusion::speech::{Utterance as Heard, UtteranceProjector};
use llm::{GenerateParams, Llm, SamplingParams};
use percept::commands::{Action, Commands, Route, Router};
use percept::knowledge::Knowledge;
use pipeline::audio::To16k;
use pipeline::fixture::{Fixture, Pace, ReplayClock};
use pipeline::frame::converting;
use pipeline::media_file::AudioFile;
use pipeline::{
    AudioChunk, EdgeConfig, Envelope, Frame, Graph, Input, Output, StageContext, StageResult, edge,
};
use serde::Serialize;

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct KioskArgs {
    /// Answer the questions spoken in an audio file (WAV, FLAC, OGG, MP3).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replay", "mic", "text"])]
    pub audio: Option<PathBuf>,
    /// Replay a recorded fixture (fixtures/README.md) at its recorded pace: its audio, and
    /// its frames as the camera when it has some.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["mic", "text"])]
    pub replay: Option<PathBuf>,
    /// Listen to the default microphone, or the one whose name contains NAME.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub mic: Option<String>,
    /// Typed questions instead of speech: one per line of FILE ("-": stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "mic")]
    pub text: Option<String>,
    /// Look through camera N (V4L2 index): the labels of what is in view go into the prompt.
    #[arg(long, value_name = "N")]
    pub camera: Option<u32>,
    /// The kiosk's instructions, facts and commands: TOML (name, instructions, facts,
    /// [commands.NAME] with description and parameters) or Markdown (.md: see
    /// `percept::knowledge`). Default: the bundled museum.
    #[arg(long, value_name = "FILE")]
    pub knowledge: Option<PathBuf>,
    /// How much better (in nats of log-likelihood) a command must explain the words than a
    /// question does for the utterance to count as that command.
    #[arg(long, default_value_t = 3.5)]
    pub command_margin: f32,
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
const ACT: &str = "\nReply with only the action the visitor asks for, as JSON.";

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kiosk/museum.toml");

/// One utterance and its answer, as printed.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub seq: u64,
    /// Where the speech was in the audio, seconds (none for typed text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    pub transcript: String,
    /// The spoken answer, or none when the reply is an action.
    pub answer: Option<String>,
    /// The command the visitor asked for, one of the knowledge file's.
    pub action: Option<Action>,
    /// How much better the best command explained the words than a question did, in nats
    /// (an action above `--command-margin`); none without commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_margin: Option<f32>,
    /// What the camera saw when the utterance ended, best first (none without a camera).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    pub end_of_speech_to_first_token_ms: f64,
    pub end_of_speech_to_answer_ms: f64,
}

/// Speech cut out of the stream; `captured` of its envelope is the end of speech.
struct Utterance {
    start: usize,
    end: usize,
    samples: Vec<f32>,
}

/// What reaches the answer stage: a transcript, and where it was in the audio.
struct Said {
    span_s: Option<(f64, f64)>,
    transcript: String,
}

/// The newest scene the camera showed, if a camera is in the graph.
type InView = Arc<Mutex<Option<Scene>>>;

pub fn run(args: KioskArgs) -> Result<()> {
    let path = args.knowledge.clone().unwrap_or_else(|| BUNDLED.into());
    let knowledge = Knowledge::load(&path)?;
    let commands = Commands::new(knowledge.commands.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if [
        args.audio.is_some(),
        args.replay.is_some(),
        args.mic.is_some(),
        args.text.is_some(),
    ]
    .iter()
    .all(|given| !given)
    {
        bail!("nothing to listen to: give --mic, --audio FILE, --replay DIR or --text FILE");
    }
    let llm = Arc::new(crate::llm_cmd::load(&args.model)?);
    let device = llm.device.clone();
    let system = system_prompt(&knowledge, &commands);
    // The facts open the user's turn, where a small model reads them best; the turn up to
    // the visitor's words is the cached head. Answers and actions differ only in the tail.
    let before = format!("Facts:\n{}\n\n", knowledge.facts.trim());
    let prompt = FramedPrompt::chat(&llm, &system, &before, ASK)?;
    let act_tail = FramedPrompt::chat(&llm, &system, &before, ACT)?.tail;
    let cache = PrefixCache::new(&llm, &prompt)?;
    let router = (!commands.is_empty())
        .then(|| Router::new(&llm, &commands, &knowledge.name, args.command_margin))
        .transpose()?;

    // Every model loads before any source starts: a replayed fixture's audio and frames
    // then share one clock, started here.
    let eyes = eyes(&args, &device)?;
    let ears = match args.text {
        Some(_) => None,
        None => Some((
            Silero::load(&percept::models::require("silero-vad")?, &device)?,
            percept::speech::Transcriber::load(&device)?,
        )),
    };
    let clock = ReplayClock::new(Pace::Recorded);

    let mut graph = Graph::new();
    crate::run_cmd::on_ctrl_c(graph.stop_handle());
    let in_view = match eyes {
        Some((vision, source)) => Some(spawn_eyes(&mut graph, vision, source, clock)?),
        None => None,
    };
    let (said_tx, said_rx, _) = edge(EdgeConfig::block(4));
    if let Some(file) = args.text.clone() {
        graph.spawn("text", move |ctx| {
            pipeline::text::text_source(&ctx, &file, |line| {
                said_tx.send(line.map(|t| Said {
                    span_s: None,
                    transcript: t,
                }))
            })
        })?;
    } else if let Some((vad, transcriber)) = ears {
        let (audio_tx, audio_rx, _) = edge(EdgeConfig::block(64));
        spawn_source(&mut graph, &args, audio_tx, clock)?;
        let (speech_tx, speech_rx, _) = edge(EdgeConfig::block(4));
        graph.spawn("listen", move |ctx| {
            listen(&ctx, &vad, audio_rx, &speech_tx)
        })?;
        graph.spawn("transcribe", move |ctx| {
            for u in speech_rx {
                ctx.item_in();
                let t = ctx.busy(|| transcriber.transcribe(&u.payload.samples));
                let captured = u.captured;
                said_tx.send(u.map(|u| Said {
                    span_s: Some((u.start as f64 / 16_000.0, u.end as f64 / 16_000.0)),
                    transcript: t.text,
                }))?;
                ctx.item_out_since(captured);
            }
            Ok(())
        })?;
    }
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec!["\n".into()],
    };
    let json = args.json;
    if !json {
        eprintln!("{}: listening", knowledge.name);
    }
    let answerer = Answerer {
        llm,
        cache,
        act_tail,
        params,
        commands,
        router,
        in_view,
    };
    graph.spawn("answer", move |ctx| answerer.run(&ctx, said_rx, json))?;
    graph.join().map_err(Into::into)
}

/// The instructions; with commands, followed by their list and one action's JSON.
fn system_prompt(knowledge: &Knowledge, commands: &Commands) -> String {
    let Some((name, spec)) = commands.specs.iter().next() else {
        return knowledge.instructions.clone();
    };
    let args: Vec<String> = spec
        .parameters
        .iter()
        .map(|(param, p)| match p.choices.first() {
            Some(c) => format!("\"{param}\": \"{c}\""),
            None if p.kind == percept::commands::ParamType::Integer => format!("\"{param}\": 1"),
            None => format!("\"{param}\": \"...\""),
        })
        .collect();
    format!(
        "{}\n\nThe kiosk can also do these actions:\n{}\nTo do one, reply with only its JSON, \
         for example: {{\"action\": \"{name}\", \"args\": {{{}}}}}",
        knowledge.instructions.trim(),
        commands.describe(),
        args.join(", ")
    )
}

/// Where the kiosk's frames come from.
enum Eyes {
    Replay(Fixture, String),
    Camera(u32),
}

/// The vision encoder and the frames to look at: the camera, or the frames of a replayed
/// fixture. None when there is nothing to look at.
fn eyes(args: &KioskArgs, device: &burn::tensor::Device) -> Result<Option<(VisionEncoder, Eyes)>> {
    let source = match (&args.replay, args.camera) {
        (Some(dir), _) => {
            let fixture = Fixture::open(dir)?;
            let name = fixture.first("frames").map(|s| s.name().to_owned());
            name.map(|n| Eyes::Replay(fixture, n))
        }
        (None, Some(index)) => Some(Eyes::Camera(index)),
        (None, None) => None,
    };
    match source {
        Some(source) => Ok(Some((percept::vision::load(device)?, source))),
        None => Ok(None),
    }
}

/// Frames through the vision encoder into the newest-scene slot.
fn spawn_eyes(
    graph: &mut Graph,
    vision: VisionEncoder,
    source: Eyes,
    clock: ReplayClock,
) -> Result<InView> {
    // Only the newest frame matters: the scene is read when an utterance ends.
    let (frames_tx, frames_rx, _) = edge(EdgeConfig::latest(1));
    match source {
        Eyes::Replay(fixture, name) => {
            graph.spawn("replay-frames", move |ctx| {
                let send = converting(|frame| frames_tx.send(frame));
                fixture.replay_frames(&ctx, &name, clock, send)
            })?;
        }
        Eyes::Camera(index) => crate::describe_cmd::spawn_camera(graph, index, frames_tx)?,
    }
    let slot: InView = Arc::default();
    let s = slot.clone();
    graph.spawn("see", move |ctx| see(&ctx, &vision, frames_rx, &s))?;
    Ok(slot)
}

fn see(
    ctx: &StageContext,
    vision: &VisionEncoder,
    input: Input<Envelope<Frame>>,
    slot: &InView,
) -> StageResult {
    for frame in input {
        ctx.item_in();
        match ctx.busy(|| percept::vision::encode_frame(vision, &frame.payload)) {
            Ok(scene) => {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(scene);
                ctx.item_out_since(frame.captured);
            }
            // A frame the encoder cannot take is dropped, the stream goes on.
            Err(e) => eprintln!("warning: frame {} not encoded: {e}", frame.seq),
        }
    }
    Ok(())
}

fn spawn_source(
    graph: &mut Graph,
    args: &KioskArgs,
    tx: Output<Envelope<AudioChunk>>,
    clock: ReplayClock,
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
            fixture.replay_audio(&ctx, &name, clock, 1600, |c| tx.send(c))
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

struct Answerer {
    llm: Arc<Llm>,
    /// The head: instructions, commands and facts; its tail asks for an answer.
    cache: PrefixCache,
    /// The tail that asks for the action instead.
    act_tail: Vec<llm::TokenId>,
    params: GenerateParams,
    commands: Commands,
    /// None when the knowledge file has no commands.
    router: Option<Router>,
    in_view: Option<InView>,
}

impl Answerer {
    fn run(&self, ctx: &StageContext, input: Input<Envelope<Said>>, json: bool) -> StageResult {
        let mut out = std::io::stdout().lock();
        for item in input {
            ctx.item_in();
            let ended = item.captured;
            let a = ctx.busy(|| self.answer(item.seq, item.payload, ended))?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&a)?)?;
            } else {
                writeln!(out, "{}", show(&a))?;
            }
            ctx.record_latency(ended);
        }
        Ok(())
    }

    fn answer(&self, seq: u64, said: Said, ended: Instant) -> Result<Answer> {
        let scene = self
            .in_view
            .as_ref()
            .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let heard = Heard {
            transcript: &said.transcript,
            scene: scene.as_ref(),
        };
        let rows = UtteranceProjector.project(&heard, &self.llm)?;
        let decision = match &self.router {
            Some(router) => Some(router.route(&self.llm, &said.transcript)?),
            None => None,
        };
        let route = decision
            .as_ref()
            .map_or(Route::Question, |d| d.route.clone());
        let mut first = None;
        let mut on_text = |_: &str| {
            first.get_or_insert_with(|| ended.elapsed());
        };
        let text = match &route {
            Route::Command(name) => {
                let (session, prompt) = self.cache.start_with_tail(rows, &self.act_tail);
                let blank = Heard {
                    transcript: "N/A",
                    scene: scene.as_ref(),
                };
                let blank = self.cache.start_with_tail(
                    UtteranceProjector.project(&blank, &self.llm)?,
                    &self.act_tail,
                );
                let pinned = self.commands.choose_enums(
                    &self.llm,
                    name,
                    (&session, &prompt),
                    (&blank.0, &blank.1),
                )?;
                let grammar = self
                    .commands
                    .grammar_for(name, &pinned)
                    .context("routed to no command")?;
                if let Some(text) = grammar.only_string() {
                    // Every argument is chosen: decoding could only write this.
                    on_text(&text);
                    text
                } else {
                    let params = GenerateParams {
                        stop: Vec::new(),
                        ..self.params.clone()
                    };
                    let mut session = session;
                    self.llm
                        .generate_constrained(&mut session, &prompt, &params, &grammar, on_text)?
                        .text
                }
            }
            Route::Question => {
                let (mut session, prompt) = self.cache.start(rows);
                self.llm
                    .generate(&mut session, &prompt, &self.params, on_text)?
                    .text
            }
        };
        let done = ended.elapsed();
        let action = match self.commands.parse(&text) {
            Ok(action) => action,
            // The grammar allows only valid actions; one cut short by --max-tokens is not.
            Err(e) => {
                eprintln!("warning: utterance {seq}: {e}");
                None
            }
        };
        let answer = action.is_none().then(|| text.trim().to_owned());
        Ok(Answer {
            seq,
            start_s: said.span_s.map(|s| s.0),
            end_s: said.span_s.map(|s| s.1),
            transcript: said.transcript,
            answer,
            action,
            command_margin: decision.map(|d| d.margin),
            labels: scene.map(|s| s.whole.labels.iter().map(|l| l.name.clone()).collect()),
            end_of_speech_to_first_token_ms: first.unwrap_or(done).as_secs_f64() * 1e3,
            end_of_speech_to_answer_ms: done.as_secs_f64() * 1e3,
        })
    }
}

fn show(a: &Answer) -> String {
    let when = a
        .start_s
        .zip(a.end_s)
        .map(|(s, e)| format!("[{s:6.2}-{e:6.2} s] "))
        .unwrap_or_default();
    let reply = match (&a.action, &a.answer) {
        (Some(action), _) => format!(
            "action {}",
            serde_json::to_string(action).unwrap_or_default()
        ),
        (None, Some(answer)) => answer.clone(),
        (None, None) => String::new(),
    };
    format!(
        "{when}{}\n  -> {reply} (first token {:.0} ms, answer {:.0} ms after speech)",
        a.transcript, a.end_of_speech_to_first_token_ms, a.end_of_speech_to_answer_ms
    )
}
