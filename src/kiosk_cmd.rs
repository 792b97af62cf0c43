//! `percept kiosk`: spoken or typed questions answered from a knowledge file.
//!
//! ```text
//! audio (microphone | file | replay) -> listen (16 kHz, Silero VAD, segmenter)
//!   -> transcribe (Whisper tiny.en) -> answer -> stdout
//! text lines (--text) ---------------------^
//! frames (camera | replay) --latest--> see (EfficientNet-Lite0) --latest--^
//! ```
//!
//! The answer stage (`percept::kiosk::Answerer`) decides whether the words ask for
//! anything, and what: an action (JSON of the knowledge file's schema, by constrained
//! decoding), or an answer from the facts retrieved for them, checked against those facts,
//! or the file's fallback line. The camera's newest scene reaches it through a `latest`
//! edge and goes into the prompt with the facts.
//!
//! Each utterance is cut when the segmenter confirms its end; latencies count from that
//! moment (the end of speech) to the answer's first token and to its end.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use encoders::audio::Silero;
use encoders::vision::{Scene, VisionEncoder};
use percept::kiosk::listen::{Utterance, listen};
use percept::kiosk::{AnswerConfig, Answerer, Knowledge, Reply};
use percept::speak::{Mouth, load_voice};
use pipeline::fixture::{Fixture, Pace, ReplayClock};
use pipeline::frame::converting;
use pipeline::media_file::AudioFile;
use pipeline::{
    AudioChunk, EdgeConfig, Envelope, Frame, Graph, Input, Output, Speaking, StageContext,
    StageResult,
};
use publish::mqtt::App;
use publish::{Event, Kind, Outlets, Record};
use serde::Serialize;

use crate::ModelArgs;
use crate::publish_cmd::{PublishArgs, Publishers};

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
    /// The kiosk's instructions, facts, fallback line and commands: TOML (name,
    /// instructions, facts, fallback, [commands.NAME] with description and parameters) or
    /// Markdown (.md: see `percept::kiosk::knowledge`). Default: the bundled museum.
    #[arg(long, value_name = "FILE")]
    pub knowledge: Option<PathBuf>,
    /// How much better (in nats of log-likelihood) a command must explain the words than a
    /// question does for the utterance to count as that command.
    #[arg(long, default_value_t = AnswerConfig::default().command_margin)]
    pub command_margin: f32,
    #[command(flatten)]
    pub grounding: GroundingArgs,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = AnswerConfig::default().max_tokens)]
    pub max_tokens: usize,
    /// One JSON object per utterance.
    #[arg(long)]
    pub json: bool,
    /// Say each answer aloud (Piper voice) through the default sound output device, or the
    /// one whose name contains NAME; the microphone is muted while the kiosk speaks.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "", conflicts_with = "speak_to")]
    pub speak: Option<String>,
    /// Write the spoken answers to this WAV file instead (mono float, 22,050 Hz, answers
    /// 0.4 s apart).
    #[arg(long, value_name = "FILE.wav")]
    pub speak_to: Option<PathBuf>,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// How facts are ranked against a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ranking {
    /// By meaning: a sentence encoder (all-MiniLM-L6-v2), shared words as a tie-breaker.
    Meaning,
    /// By shared words alone (BM25 over folded words).
    Words,
}

/// How the kiosk finds the facts for a question and when it says its fallback line
/// instead (`percept kiosk` and `percept eval kiosk`).
#[derive(Args, Debug, Clone)]
pub struct GroundingArgs {
    /// How facts are ranked against a question.
    #[arg(long, value_enum, default_value_t = Ranking::Meaning)]
    pub ranking: Ranking,
    /// Ranking by meaning: below this support of a question by its best fact (similarity
    /// plus 0.3 x shared-word coverage) the kiosk says its fallback line.
    #[arg(long, default_value_t = AnswerConfig::default().min_support)]
    pub min_support: f32,
    /// Ranking by words: below this share of a question's word weight held by its best
    /// fact, the kiosk says its fallback line (0 to 1).
    #[arg(long, default_value_t = AnswerConfig::default().min_coverage)]
    pub min_coverage: f32,
}

impl GroundingArgs {
    /// `config` with these choices, the sentence encoder loaded on `device` if asked for.
    pub fn apply(
        &self,
        config: AnswerConfig,
        device: &burn::tensor::Device,
    ) -> Result<AnswerConfig> {
        let encoder = match self.ranking {
            Ranking::Meaning => Some(percept::kiosk::sentence_encoder(device)?),
            Ranking::Words => None,
        };
        Ok(AnswerConfig {
            min_coverage: self.min_coverage,
            min_support: self.min_support,
            encoder,
            ..config
        })
    }
}

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kiosk/museum.toml");

/// One utterance and the kiosk's reply, as printed.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub seq: u64,
    /// Where the speech was in the audio, seconds (none for typed text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    pub transcript: String,
    /// The answer, the action, and the evidence for them (route, retrieval, checks).
    #[serde(flatten)]
    pub reply: Reply,
    /// What the camera saw when the utterance ended, best first (none without a camera).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    pub end_of_speech_to_first_token_ms: f64,
    pub end_of_speech_to_answer_ms: f64,
    /// With --speak or --speak-to: until the first sample of the spoken answer was ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_speech_to_first_audio_ms: Option<f64>,
    /// Seconds of speech said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spoken_s: Option<f64>,
}

/// What reaches the answer stage: a transcript, and where it was in the audio.
struct Said {
    span_s: Option<(f64, f64)>,
    transcript: String,
}

pub fn run(args: KioskArgs) -> Result<()> {
    let path = args.knowledge.clone().unwrap_or_else(|| BUNDLED.into());
    let knowledge = Knowledge::load(&path)?;
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
    // The publishers first: a bad --serve or --mqtt is said before the models load.
    let mut graph = Graph::new();
    let stop = graph.stop_handle();
    crate::run_cmd::on_ctrl_c(stop.clone());
    let title = format!("percept kiosk: {}", knowledge.name);
    let publishers = Publishers::start(&args.publish, App::Kiosk, title, &graph)?;
    let outlets = publishers.spawn(&mut graph)?;
    let device = percept::device::select(args.model.device, args.model.threads)?;
    // The voice first (a missing speaker is said before the other models load), then
    // Whisper: each load holds its file beside the weights it makes, and the peak is lower
    // before the other models are in memory than after.
    //
    // The microphone's stage hears when the kiosk speaks, and replaces what it captures
    // meanwhile with silence.
    let (speaking_tx, speaking_rx) = graph.edge("speaking", EdgeConfig::block(16));
    let mouth = match (&args.speak, &args.speak_to) {
        (Some(name), _) => Some(Mouth::speaker(
            load_voice(&device)?,
            (!name.is_empty()).then_some(name.as_str()),
        )?),
        (None, Some(file)) => Some(Mouth::file(load_voice(&device)?, file)?),
        (None, None) => None,
    }
    .map(|m| m.telling(speaking_tx));

    let ears = match args.text {
        Some(_) => None,
        None => Some((
            Silero::load(&percept::models::require("silero-vad")?, &device)?,
            percept::speech::Transcriber::load(&device)?,
        )),
    };
    let llm = Arc::new(crate::llm_cmd::load_on(&args.model, &device)?);
    let config = args.grounding.apply(
        AnswerConfig {
            command_margin: args.command_margin,
            max_tokens: args.max_tokens,
            ..AnswerConfig::default()
        },
        &device,
    )?;
    let answerer = Answerer::new(llm, &knowledge, config)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;

    // Every model loads before any source starts: a replayed fixture's audio and frames
    // then share one clock, started here.
    let eyes = eyes(&args, &device)?;
    let clock = ReplayClock::new(Pace::Recorded);

    let started = Instant::now();
    let in_view = match eyes {
        Some((vision, source)) => Some(spawn_eyes(&mut graph, vision, source, clock, &outlets)?),
        None => None,
    };
    let (said_tx, said_rx) = graph.edge("said", EdgeConfig::block(4));
    if let Some(file) = args.text.clone() {
        // Typed questions: no microphone to tell (a live edge nobody reads would fill).
        drop(speaking_rx);
        graph.spawn("text", move |ctx| {
            pipeline::text::text_source(&ctx, &file, |line| {
                said_tx.send(line.map(|t| Said {
                    span_s: None,
                    transcript: t,
                }))
            })
        })?;
    } else if let Some((vad, transcriber)) = ears {
        let (audio_tx, audio_rx) = graph.edge("audio", EdgeConfig::block(64));
        spawn_source(&mut graph, &args, audio_tx, clock, speaking_rx)?;
        let (speech_tx, speech_rx) = graph.edge("speech", EdgeConfig::block(4));
        graph.spawn("listen", move |ctx| {
            listen(&ctx, &vad, audio_rx, &speech_tx)
        })?;
        graph.spawn("transcribe", move |ctx| {
            for u in speech_rx {
                ctx.item_in();
                let t = ctx.busy(|| transcriber.transcribe(&u.payload.samples));
                let captured = u.captured;
                said_tx.send(u.map(|u: Utterance| Said {
                    span_s: Some(u.span_s()),
                    transcript: t.text,
                }))?;
                ctx.item_out_since(captured);
            }
            Ok(())
        })?;
    }
    let json = args.json;
    if !json {
        eprintln!("{}: listening", knowledge.name);
    }
    let sink = Sink {
        json,
        outlets,
        started,
    };
    graph.spawn("answer", move |ctx| {
        answer_stage(&ctx, &answerer, said_rx, in_view, &sink, mouth)
    })?;
    graph.join()?;
    publishers.finish(&stop);
    Ok(())
}

/// Where the answer stage's replies go: stdout, and the publishers.
struct Sink {
    json: bool,
    outlets: Outlets,
    /// The start of the run, for the publishers' times.
    started: Instant,
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

/// Frames through the vision encoder; its scenes come out on a `latest` edge.
fn spawn_eyes(
    graph: &mut Graph,
    vision: VisionEncoder,
    source: Eyes,
    clock: ReplayClock,
    outlets: &Outlets,
) -> Result<Input<Envelope<Scene>>> {
    // Only the newest frame matters: the scene is read when an utterance ends.
    let (frames_tx, frames_rx) = graph.edge("frames", EdgeConfig::latest(1));
    match source {
        Eyes::Replay(fixture, name) => {
            graph.spawn("replay-frames", move |ctx| {
                let send = converting(|frame| frames_tx.send(frame));
                fixture.replay_frames(&ctx, &name, clock, send)
            })?;
        }
        Eyes::Camera(index) => crate::describe_cmd::spawn_camera(graph, index, frames_tx)?,
    }
    let (scene_tx, scene_rx) = graph.edge("scenes", EdgeConfig::latest(1));
    let outlets = outlets.clone();
    graph.spawn("see", move |ctx| {
        see(&ctx, &vision, frames_rx, &scene_tx, &outlets)
    })?;
    Ok(scene_rx)
}

fn see(
    ctx: &StageContext,
    vision: &VisionEncoder,
    input: Input<Envelope<Frame>>,
    output: &Output<Envelope<Scene>>,
    outlets: &Outlets,
) -> StageResult {
    for frame in input {
        ctx.item_in();
        match ctx.busy(|| percept::vision::encode_frame(vision, None, &frame.payload)) {
            Ok(scene) => {
                let captured = frame.captured;
                outlets.send(frame.seq, captured, || {
                    percept::vision::sighting(&frame.payload, &scene)
                });
                // The answer stage may have finished (typed input ended): nothing to do.
                if output.send(frame.map(|_| scene)).is_err() {
                    break;
                }
                ctx.item_out_since(captured);
            }
            // A frame the encoder cannot take is dropped, the stream goes on.
            Err(e) => eprintln!("warning: frame {} not encoded: {e}", frame.seq),
        }
    }
    Ok(())
}

/// Utterances in, replies out; the newest scene is taken from its edge as each utterance
/// arrives.
fn answer_stage(
    ctx: &StageContext,
    answerer: &Answerer,
    input: Input<Envelope<Said>>,
    scenes: Option<Input<Envelope<Scene>>>,
    sink: &Sink,
    mut mouth: Option<Mouth>,
) -> StageResult {
    let mut out = std::io::stdout().lock();
    let mut scene: Option<Scene> = None;
    for item in input {
        ctx.item_in();
        let ended = item.captured;
        if let Some(scenes) = &scenes {
            while let pipeline::Recv::Item(s) = scenes.recv_timeout(Duration::ZERO) {
                scene = Some(s.payload);
            }
        }
        let said = item.payload;
        let mut first = None;
        let reply = ctx.busy(|| {
            answerer.reply(&said.transcript, scene.as_ref(), |_| {
                first.get_or_insert_with(|| ended.elapsed());
            })
        })?;
        let done = ended.elapsed();
        let mut a = Answer {
            seq: item.seq,
            start_s: said.span_s.map(|s| s.0),
            end_s: said.span_s.map(|s| s.1),
            transcript: said.transcript,
            reply,
            labels: scene
                .as_ref()
                .map(|s| percept::vision::top_labels(s, usize::MAX)),
            end_of_speech_to_first_token_ms: first.unwrap_or(done).as_secs_f64() * 1e3,
            end_of_speech_to_answer_ms: done.as_secs_f64() * 1e3,
            end_of_speech_to_first_audio_ms: None,
            spoken_s: None,
        };
        // The text view shows the answer as soon as it is decided, before it is said; a
        // JSON line waits for the speech, whose latency it carries.
        if !sink.json {
            writeln!(out, "{}", show(&a))?;
            out.flush()?;
        }
        // Only an answer is said; an action is done, not talked about. The answer is said
        // once it is complete: grounding may replace it with its best fact or the fallback
        // line, and an unchecked first sentence must not reach the speaker.
        if let (Some(mouth), Some(text), None) = (&mut mouth, &a.reply.answer, &a.reply.action) {
            let before = ended.elapsed();
            match ctx.busy(|| mouth.say(text)) {
                Ok(spoken) => {
                    a.end_of_speech_to_first_audio_ms =
                        Some((before + spoken.first_audio).as_secs_f64() * 1e3);
                    a.spoken_s = Some(spoken.audio_s);
                }
                // A speaker unplugged mid-run: the answer is still printed and published.
                Err(e) => eprintln!("warning: answer {} was not spoken: {e:#}", a.seq),
            }
        }
        if sink.json {
            writeln!(out, "{}", serde_json::to_string(&a)?)?;
            out.flush()?;
        }
        sink.outlets.send(a.seq, ended, || {
            let kind = match (&a.reply.action, &a.reply.answer) {
                (Some(_), _) => Kind::Action,
                (None, Some(_)) => Kind::Answer,
                (None, None) => Kind::Transcript,
            };
            Event::Said(Record {
                kind,
                t_s: ended.saturating_duration_since(sink.started).as_secs_f64(),
                latency_ms: a.end_of_speech_to_answer_ms,
                body: serde_json::to_value(&a).unwrap_or_default(),
            })
        });
        ctx.record_latency(ended);
        percept::memory::give_back_freed();
    }
    if let Some(mouth) = mouth {
        mouth.finish()?;
    }
    Ok(())
}

fn spawn_source(
    graph: &mut Graph,
    args: &KioskArgs,
    tx: Output<Envelope<AudioChunk>>,
    clock: ReplayClock,
    speaking: Input<Speaking>,
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
        spawn_mic(graph, args.mic.as_deref().unwrap_or_default(), tx, speaking)?;
    }
    Ok(())
}

#[cfg(feature = "mic")]
fn spawn_mic(
    graph: &mut Graph,
    name: &str,
    tx: Output<Envelope<AudioChunk>>,
    speaking: Input<Speaking>,
) -> Result<()> {
    use pipeline::microphone::{Microphone, microphone_source};
    let name = (!name.is_empty()).then_some(name);
    let mic = Microphone::open(&cpal::default_host(), name)?;
    graph.spawn("microphone", move |ctx| {
        let mut mute = pipeline::Mute::default();
        microphone_source(&ctx, mic, |c| {
            while let pipeline::Recv::Item(event) = speaking.recv_timeout(Duration::ZERO) {
                mute.note(event);
            }
            tx.send(mute.gate(c))
        })
    })?;
    Ok(())
}

#[cfg(not(feature = "mic"))]
fn spawn_mic(
    _: &mut Graph,
    _: &str,
    _: Output<Envelope<AudioChunk>>,
    _: Input<Speaking>,
) -> Result<()> {
    bail!("this build has no microphone support (cargo feature 'mic')")
}

fn show(a: &Answer) -> String {
    let when = a
        .start_s
        .zip(a.end_s)
        .map(|(s, e)| format!("[{s:6.2}-{e:6.2} s] "))
        .unwrap_or_default();
    let reply = match (&a.reply.action, &a.reply.answer) {
        (Some(action), _) => format!(
            "action {}",
            serde_json::to_string(action).unwrap_or_default()
        ),
        (None, Some(answer)) => answer.clone(),
        (None, None) => "(not a request: no reply)".into(),
    };
    format!(
        "{when}{}\n  -> {reply} (first token {:.0} ms, answer {:.0} ms after speech)",
        a.transcript, a.end_of_speech_to_first_token_ms, a.end_of_speech_to_answer_ms
    )
}
