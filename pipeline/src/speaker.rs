//! Sound out through cpal: the kiosk's spoken answers.
//!
//! The device plays at its own rate; a voice's samples (22,050 Hz) are brought to it by
//! linear interpolation, which is enough for speech through a kiosk's speaker.
//! [`Speaker::playback`] plays what is pushed into it while more is being made.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::audio::AudioChunk;
use crate::devices::{DeviceError, device_name};

/// What the device's error callback reports, for the pusher to see.
type Failure = Arc<Mutex<Option<String>>>;

pub struct Speaker {
    device: cpal::Device,
    config: cpal::SupportedStreamConfig,
    name: String,
}

/// `samples` at `from` Hz, linearly interpolated to `to` Hz.
pub fn resample_linear(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let n = (samples.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let k = x as usize;
            let frac = (x - k as f64) as f32;
            let a = samples[k.min(samples.len() - 1)];
            let b = samples[(k + 1).min(samples.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

fn cannot_open(name: &str, e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Open {
        what: "speaker",
        name: name.to_string(),
        reason: format!(
            "{e} (kiosk --speak-to FILE.wav, or say --out FILE.wav, writes the sound instead)"
        ),
    }
}

impl Speaker {
    /// The default output device of `host`, or the one whose name contains `name`.
    pub fn open(host: &cpal::Host, name: Option<&str>) -> Result<Self, DeviceError> {
        let outputs: Vec<cpal::Device> = host
            .output_devices()
            .map(|d| d.collect())
            .unwrap_or_default();
        let names: Vec<String> = outputs.iter().map(device_name).collect();
        let device = match name {
            Some(wanted) => outputs
                .into_iter()
                .find(|d| device_name(d).contains(wanted)),
            None => host.default_output_device(),
        };
        let Some(device) = device else {
            return Err(DeviceError::NotFound {
                what: "speaker (sound output device; --speak-to FILE.wav writes the sound instead)",
                available: names,
            });
        };
        let name = device_name(&device);
        let config = device
            .default_output_config()
            .map_err(|e| cannot_open(&name, e))?;
        if config.sample_format() != cpal::SampleFormat::F32 {
            return Err(DeviceError::Open {
                what: "speaker",
                name,
                reason: format!("sample format {} is not supported", config.sample_format()),
            });
        }
        let speaker = Speaker {
            device,
            config,
            name,
        };
        // A device that is listed but cannot be opened (no sound card behind ALSA's
        // default) is said now, before any model loads, not at the first answer.
        drop(speaker.stream(Arc::default())?);
        Ok(speaker)
    }

    /// An output stream playing what is pushed into `queue`, silence when it is empty.
    fn stream(
        &self,
        queue: Arc<Mutex<VecDeque<f32>>>,
    ) -> Result<(cpal::Stream, Failure), DeviceError> {
        let channels = usize::from(self.config.channels()).max(1);
        let failed = Arc::new(Mutex::new(None::<String>));
        let errors = failed.clone();
        let stream = self
            .device
            .build_output_stream::<f32, _, _>(
                self.config.config(),
                move |out: &mut [f32], _| {
                    // The audio thread never waits: a queue held by the pusher plays silence.
                    let mut queue = queue.try_lock().ok();
                    for frame in out.chunks_mut(channels) {
                        let v = queue.as_mut().and_then(|q| q.pop_front()).unwrap_or(0.0);
                        frame.fill(v);
                    }
                },
                move |e| {
                    *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                },
                None,
            )
            .map_err(|e| cannot_open(&self.name, e))?;
        Ok((stream, failed))
    }

    /// Starts playing: push sound into the returned [`Playback`] as it is made.
    pub fn playback(&self) -> Result<Playback, DeviceError> {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let (stream, failed) = self.stream(queue.clone())?;
        let lost = |reason: String| DeviceError::Lost {
            what: "speaker",
            name: self.name.clone(),
            reason,
        };
        stream.play().map_err(|e| lost(e.to_string()))?;
        Ok(Playback {
            _stream: stream,
            queue,
            failed,
            rate: self.config.sample_rate(),
            name: self.name.clone(),
        })
    }

    /// Plays `sound` and returns once the device has taken its last sample.
    pub fn play(&self, sound: &AudioChunk) -> Result<(), DeviceError> {
        let mut p = self.playback()?;
        p.push(sound)?;
        p.finish()
    }
}

/// Sound being played: what is pushed is queued behind what is playing.
pub struct Playback {
    _stream: cpal::Stream,
    queue: Arc<Mutex<VecDeque<f32>>>,
    failed: Failure,
    rate: u32,
    name: String,
}

impl Playback {
    fn check(&self) -> Result<(), DeviceError> {
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(reason) => Err(DeviceError::Lost {
                what: "speaker",
                name: self.name.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    pub fn push(&mut self, sound: &AudioChunk) -> Result<(), DeviceError> {
        self.check()?;
        let samples = resample_linear(&sound.samples, sound.sample_rate, self.rate);
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(samples);
        Ok(())
    }

    /// Waits until the device has taken everything pushed.
    pub fn finish(self) -> Result<(), DeviceError> {
        let left = self.queue.lock().unwrap_or_else(|p| p.into_inner()).len();
        // A device that stops taking samples must not hold the kiosk forever.
        let limit = Duration::from_secs_f64(left as f64 / f64::from(self.rate) + 2.0);
        let started = std::time::Instant::now();
        while !self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            self.check()?;
            if started.elapsed() > limit {
                return Err(DeviceError::Lost {
                    what: "speaker",
                    name: self.name.clone(),
                    reason: "the device stopped taking samples".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::resample_linear;

    #[test]
    fn linear_resampling_keeps_duration_and_shape() {
        let x: Vec<f32> = (0..22050).map(|i| (i as f32 * 0.01).sin()).collect();
        let y = resample_linear(&x, 22050, 48000);
        assert_eq!(y.len(), 48000);
        // Output sample k sits at input position k * 22050 / 48000 of the slow sine.
        for k in [100usize, 5000, 40000] {
            let want = (k as f64 * 22050.0 / 48000.0 * 0.01).sin() as f32;
            assert!((y[k] - want).abs() < 1e-3, "{} vs {want}", y[k]);
        }
        assert_eq!(resample_linear(&x, 16000, 16000), x);
    }
}
