//! `percept say`: text to speech with the Piper voice.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use percept::speak::{Mouth, load_voice};
use voice::Scales;

#[derive(Args)]
pub struct SayArgs {
    /// What to say ("-": read it from stdin).
    pub text: String,
    /// Write the sound to this WAV file (mono, 32-bit float, 22,050 Hz) instead of playing it.
    #[arg(long, value_name = "FILE.wav")]
    pub out: Option<PathBuf>,
    /// Play through the output device whose name contains NAME (default: the default one).
    #[arg(long, value_name = "NAME", conflicts_with = "out")]
    pub speaker: Option<String>,
    /// Spread of the voice's sound around its most likely (0: the same samples every run;
    /// default: the voice's own, 0.667).
    #[arg(long)]
    pub noise_scale: Option<f32>,
    /// Slowness: durations are multiplied by it (default: the voice's, 1).
    #[arg(long)]
    pub length_scale: Option<f32>,
    /// Spread of the phoneme durations (0: the most likely; default: the voice's, 0.8).
    #[arg(long)]
    pub noise_w: Option<f32>,
    /// Print what was said and how long it took as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where the voice runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: percept::device::DeviceChoice,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn run(args: SayArgs) -> Result<()> {
    let text = if args.text == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        args.text.clone()
    };
    if text.trim().is_empty() {
        bail!("nothing to say: the text is empty");
    }
    for (name, v) in [
        ("--noise-scale", args.noise_scale),
        ("--length-scale", args.length_scale),
        ("--noise-w", args.noise_w),
    ] {
        if v.is_some_and(|v| !(0.0..=10.0).contains(&v)) {
            bail!("{name} must be between 0 and 10");
        }
    }
    let device = percept::device::select(args.device, args.threads)?;
    let loaded = Instant::now();
    let voice = load_voice(&device)?;
    let load_ms = loaded.elapsed().as_secs_f64() * 1e3;
    let d = voice.scales;
    let scales = Scales {
        noise_scale: args.noise_scale.unwrap_or(d.noise_scale),
        length_scale: args.length_scale.unwrap_or(d.length_scale),
        noise_w: args.noise_w.unwrap_or(d.noise_w),
    };
    let mouth = match &args.out {
        Some(path) => Mouth::file(voice, path)?,
        None => Mouth::speaker(voice, args.speaker.as_deref())?,
    };
    let mut mouth = mouth.with_scales(scales);
    let spoken = mouth.say(&text)?;
    mouth.finish()?;
    let synthesis_s = spoken.synthesis.as_secs_f64();
    let rtf = synthesis_s / spoken.audio_s.max(1e-9);
    if args.json {
        let v = serde_json::json!({
            "text": text.trim(),
            "out": args.out,
            "audio_s": spoken.audio_s,
            "synthesis_s": synthesis_s,
            "real_time_factor": rtf,
            "first_audio_ms": spoken.first_audio.as_secs_f64() * 1e3,
            "load_ms": load_ms,
        });
        println!("{v}");
    } else {
        let to = args
            .out
            .as_ref()
            .map_or("the speaker".to_string(), |p| p.display().to_string());
        eprintln!(
            "said {:.2} s of speech to {to}: synthesis {:.2} s (real-time factor {rtf:.3})",
            spoken.audio_s, synthesis_s
        );
    }
    Ok(())
}
