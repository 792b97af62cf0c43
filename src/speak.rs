//! Where spoken answers go: the default Piper voice, and a [`Mouth`] that says text a
//! sentence at a time into a speaker or a WAV file, telling the microphone's stage (over
//! an edge) when it starts and stops, so that it hears silence meanwhile.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burn::tensor::Device;
use pipeline::fixture::WavWriter;
use pipeline::{AudioChunk, Output, Speaking};
use voice::{Scales, Voice};

/// Silence between two answers written to a file, so that they stay apart.
const GAP_S: f32 = 0.4;

/// The cached default voice (Piper en_US-joe-medium).
pub fn load_voice(device: &Device) -> Result<Voice> {
    let onnx = crate::models::require_file("piper-joe", ".onnx")?;
    Ok(Voice::load(&onnx, device)?)
}

/// Where the sound goes.
enum Out {
    #[cfg(feature = "mic")]
    Speaker(pipeline::speaker::Speaker),
    File(WavWriter),
}

/// What one answer took to say.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spoken {
    /// From the call to the first sample ready (the first piece of the first sentence).
    pub first_audio: Duration,
    pub audio_s: f64,
    /// Time spent synthesising, all sentences.
    pub synthesis: Duration,
}

pub struct Mouth {
    voice: Voice,
    scales: Scales,
    out: Out,
    /// Where the voice's start and end go (the kiosk's microphone stage).
    listener: Option<Output<Speaking>>,
    answers: usize,
}

impl Mouth {
    /// Speaks through the default sound output device (or the one whose name contains
    /// `name`): a clear error on a machine without one.
    #[cfg(feature = "mic")]
    pub fn speaker(voice: Voice, name: Option<&str>) -> Result<Self> {
        let speaker = pipeline::speaker::Speaker::open(&cpal::default_host(), name)?;
        Ok(Self::new(voice, Out::Speaker(speaker)))
    }

    #[cfg(not(feature = "mic"))]
    pub fn speaker(_: Voice, _: Option<&str>) -> Result<Self> {
        anyhow::bail!(
            "this build has no sound output (cargo feature 'mic'); use --speak-to FILE.wav"
        )
    }

    /// Writes the sound into a mono float WAV at the voice's rate.
    pub fn file(voice: Voice, path: &Path) -> Result<Self> {
        let wav = WavWriter::create(path, voice.sample_rate)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self::new(voice, Out::File(wav)))
    }

    fn new(voice: Voice, out: Out) -> Self {
        Mouth {
            scales: voice.scales,
            voice,
            out,
            listener: None,
            answers: 0,
        }
    }

    /// Sends [`Speaking::Started`] and [`Speaking::Ended`] around each answer to `listener`.
    pub fn telling(mut self, listener: Output<Speaking>) -> Self {
        self.listener = Some(listener);
        self
    }

    fn tell(&self, event: Speaking) {
        // No microphone stage (a file or typed input) has closed the edge: nobody to tell.
        if let Some(l) = &self.listener {
            let _ = l.send(event);
        }
    }

    pub fn with_scales(mut self, scales: Scales) -> Self {
        self.scales = scales;
        self
    }

    /// Says `text`, sentence by sentence, each sentence in pieces played (or written) as
    /// soon as they are generated; the microphone is muted from the start to the end of the
    /// sound.
    pub fn say(&mut self, text: &str) -> Result<Spoken> {
        let started = Instant::now();
        let sentences = self.voice.phonemes(text)?;
        let mut spoken = Spoken::default();
        self.tell(Speaking::Started(Instant::now()));
        let result = self.say_sentences(&sentences, started, &mut spoken);
        self.tell(Speaking::Ended(Instant::now()));
        self.answers += 1;
        result.map(|()| spoken)
    }

    fn say_sentences(
        &mut self,
        sentences: &[Vec<char>],
        started: Instant,
        spoken: &mut Spoken,
    ) -> Result<()> {
        let mut sink = match &mut self.out {
            #[cfg(feature = "mic")]
            Out::Speaker(s) => Sink::Speaker(s.playback()?),
            Out::File(wav) => {
                if self.answers > 0 {
                    let gap = (GAP_S * self.voice.sample_rate as f32) as usize;
                    wav.write(&vec![0.0; gap])?;
                }
                Sink::File(wav)
            }
        };
        let mut failed = None;
        let ids: Vec<Vec<i64>> = sentences.iter().map(|p| self.voice.ids(p)).collect();
        let mut t = Instant::now();
        self.voice
            .synthesize_sentences(&ids, self.scales, |_, piece| {
                spoken.synthesis += t.elapsed();
                if spoken.audio_s == 0.0 {
                    spoken.first_audio = started.elapsed();
                }
                spoken.audio_s += piece.duration_s();
                // After a failure the rest of the sentence goes nowhere, and no more is made.
                if failed.is_none()
                    && let Err(e) = sink.push(&piece)
                {
                    failed = Some(e);
                }
                t = Instant::now();
                if failed.is_some() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        if let Some(e) = failed {
            return Err(e);
        }
        sink.finish()
    }

    /// Completes the file, if the sound went to one.
    pub fn finish(self) -> Result<()> {
        if let Out::File(wav) = self.out {
            wav.finish()?;
        }
        Ok(())
    }
}

/// Where one answer's pieces go.
enum Sink<'a> {
    #[cfg(feature = "mic")]
    Speaker(pipeline::speaker::Playback),
    File(&'a mut WavWriter),
}

impl Sink<'_> {
    fn push(&mut self, sound: &AudioChunk) -> Result<()> {
        match self {
            #[cfg(feature = "mic")]
            Sink::Speaker(p) => p.push(sound)?,
            Sink::File(wav) => wav.write(&sound.samples)?,
        }
        Ok(())
    }

    /// Waits for the speaker to take the last sample.
    fn finish(self) -> Result<()> {
        match self {
            #[cfg(feature = "mic")]
            Sink::Speaker(p) => p.finish()?,
            Sink::File(_) => {}
        }
        Ok(())
    }
}
