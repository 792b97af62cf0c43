//! Live microphone capture through cpal, at the device's own rate and channel count.
//!
//! cpal calls back on its own audio thread; the callback only converts the samples to
//! mono f32 and hands them over a bounded channel (never blocking the audio thread: when
//! the graph falls behind, a buffer is dropped and counted). The source stage forwards
//! them as [`AudioChunk`]s; [`crate::audio::resample_stream`] brings them to 16 kHz.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SizedSample};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::audio::{AudioChunk, to_mono};
use crate::devices::{DeviceError, device_name};
use crate::edge::Closed;
use crate::graph::{StageContext, StageResult};
use crate::message::Envelope;

/// What the callback hands over.
enum Event {
    Samples(Vec<f32>, Instant),
    Failed(String),
}

/// An input device and the configuration it will be opened with.
pub struct Microphone {
    device: cpal::Device,
    config: cpal::SupportedStreamConfig,
    name: String,
}

impl Microphone {
    /// The default input device of `host`, or the one whose name contains `name`.
    pub fn open(host: &cpal::Host, name: Option<&str>) -> Result<Self, DeviceError> {
        let inputs: Vec<cpal::Device> = host
            .input_devices()
            .map(|d| d.collect())
            .unwrap_or_default();
        let names: Vec<String> = inputs.iter().map(device_name).collect();
        let device = match name {
            Some(wanted) => inputs.into_iter().find(|d| device_name(d).contains(wanted)),
            None => host.default_input_device(),
        };
        let Some(device) = device else {
            return Err(DeviceError::NotFound {
                what: "microphone",
                available: names,
            });
        };
        let name = device_name(&device);
        let config = device
            .default_input_config()
            .map_err(|e| DeviceError::Open {
                what: "microphone",
                name: name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Microphone {
            device,
            config,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate()
    }
}

/// The microphone source stage: mono chunks at the device's rate until the graph stops
/// or the device fails (unplugged: an error naming it).
pub fn microphone_source(
    ctx: &StageContext,
    mic: Microphone,
    mut emit: impl FnMut(Envelope<AudioChunk>) -> Result<(), Closed>,
) -> StageResult {
    let (tx, rx) = crossbeam_channel::bounded(64);
    let dropped = Arc::new(AtomicU64::new(0));
    let stream = build_stream(&mic, tx, dropped.clone())?;
    stream.play().map_err(|e| lost(&mic, e.to_string()))?;
    let rate = mic.sample_rate();
    let result = forward(ctx, &mic, &rx, rate, &mut emit);
    drop(stream);
    let n = dropped.load(Ordering::Relaxed);
    if n > 0 {
        eprintln!("warning: microphone '{}': {n} buffers dropped", mic.name);
    }
    result
}

fn forward(
    ctx: &StageContext,
    mic: &Microphone,
    rx: &Receiver<Event>,
    rate: u32,
    emit: &mut impl FnMut(Envelope<AudioChunk>) -> Result<(), Closed>,
) -> StageResult {
    let mut seq = 0;
    while !ctx.stopped() {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Samples(samples, captured)) => {
                emit(Envelope::new(seq, captured, AudioChunk::new(rate, samples)))?;
                ctx.item_out();
                seq += 1;
            }
            Ok(Event::Failed(reason)) => return Err(lost(mic, reason).into()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(lost(mic, "the audio stream ended".into()).into());
            }
        }
    }
    Ok(())
}

fn lost(mic: &Microphone, reason: String) -> DeviceError {
    DeviceError::Lost {
        what: "microphone",
        name: mic.name.clone(),
        reason,
    }
}

fn build_stream(
    mic: &Microphone,
    tx: Sender<Event>,
    dropped: Arc<AtomicU64>,
) -> Result<cpal::Stream, DeviceError> {
    use cpal::SampleFormat as F;
    match mic.config.sample_format() {
        F::F32 => build::<f32>(mic, tx, dropped),
        F::I16 => build::<i16>(mic, tx, dropped),
        F::U16 => build::<u16>(mic, tx, dropped),
        F::I32 => build::<i32>(mic, tx, dropped),
        F::I8 => build::<i8>(mic, tx, dropped),
        F::U8 => build::<u8>(mic, tx, dropped),
        other => Err(DeviceError::Open {
            what: "microphone",
            name: mic.name.clone(),
            reason: format!("sample format {other} is not supported"),
        }),
    }
}

fn build<T>(
    mic: &Microphone,
    tx: Sender<Event>,
    dropped: Arc<AtomicU64>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(mic.config.channels());
    let errors = tx.clone();
    mic.device
        .build_input_stream::<T, _, _>(
            mic.config.config(),
            move |data: &[T], _| {
                let interleaved: Vec<f32> = data.iter().map(|s| s.to_sample::<f32>()).collect();
                let event = Event::Samples(to_mono(&interleaved, channels), Instant::now());
                if let Err(TrySendError::Full(_)) = tx.try_send(event) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
            move |e| {
                let _ = errors.try_send(Event::Failed(e.to_string()));
            },
            None,
        )
        .map_err(|e| DeviceError::Open {
            what: "microphone",
            name: mic.name.clone(),
            reason: e.to_string(),
        })
}
