//! Sound out through cpal: the kiosk's spoken answers.
//!
//! The device plays at its own rate; a voice's samples (22,050 Hz) are brought to it by
//! linear interpolation, which is enough for speech through a kiosk's speaker.
//! [`Speaker::play`] blocks until the sound has been handed to the device.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::audio::AudioChunk;
use crate::devices::DeviceError;

pub struct Speaker {
    device: cpal::Device,
    config: cpal::SupportedStreamConfig,
    name: String,
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| "unnamed device".into())
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
        drop(speaker.stream(Arc::new(Vec::new()), Arc::new(AtomicUsize::new(0)))?);
        Ok(speaker)
    }

    /// An output stream playing `samples` from `position` on, silence after them.
    fn stream(
        &self,
        samples: Arc<Vec<f32>>,
        position: Arc<AtomicUsize>,
    ) -> Result<(cpal::Stream, Arc<Mutex<Option<String>>>), DeviceError> {
        let channels = usize::from(self.config.channels());
        let failed = Arc::new(Mutex::new(None::<String>));
        let errors = failed.clone();
        let stream = self
            .device
            .build_output_stream::<f32, _, _>(
                self.config.config(),
                move |out: &mut [f32], _| {
                    let start = position.load(Ordering::Relaxed);
                    for (k, frame) in out.chunks_mut(channels).enumerate() {
                        frame.fill(samples.get(start + k).copied().unwrap_or(0.0));
                    }
                    position.store(start + out.len() / channels.max(1), Ordering::Relaxed);
                },
                move |e| {
                    *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                },
                None,
            )
            .map_err(|e| cannot_open(&self.name, e))?;
        Ok((stream, failed))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Plays `sound` and returns once the device has taken its last sample.
    pub fn play(&self, sound: &AudioChunk) -> Result<(), DeviceError> {
        let rate = self.config.sample_rate();
        let samples = Arc::new(resample_linear(&sound.samples, sound.sample_rate, rate));
        let at = Arc::new(AtomicUsize::new(0));
        let fail = |reason: String| DeviceError::Lost {
            what: "speaker",
            name: self.name.clone(),
            reason,
        };
        let (stream, failed) = self.stream(samples.clone(), at.clone())?;
        stream.play().map_err(|e| fail(e.to_string()))?;
        // A device that stops taking samples must not hold the kiosk forever.
        let limit = Duration::from_secs_f64(samples.len() as f64 / f64::from(rate) + 2.0);
        let started = std::time::Instant::now();
        while at.load(Ordering::Relaxed) < samples.len() {
            if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(fail(e));
            }
            if started.elapsed() > limit {
                return Err(fail("the device stopped taking samples".into()));
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
