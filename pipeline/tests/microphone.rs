//! The microphone source against a fake cpal device (cpal's `custom` host): the device
//! replays a known signal in real time through the same callback code a real microphone
//! uses, and what comes out at 16 kHz is compared with the signal sampled at 16 kHz.
#![cfg(feature = "mic")]

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpal::platform::CustomHost;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    Data, DeviceDescription, DeviceDescriptionBuilder, DeviceId, Error, ErrorKind, FrameCount,
    InputCallbackInfo, InputStreamTimestamp, OutputCallbackInfo, SampleFormat, StreamConfig,
    StreamInstant, SupportedBufferSize, SupportedStreamConfig, SupportedStreamConfigRange,
};
use pipeline::audio::{SAMPLE_RATE, To16k};
use pipeline::devices::DeviceError;
use pipeline::microphone::{Microphone, microphone_source};
use pipeline::{AudioChunk, Envelope, Graph};

const RATE: u32 = 44_100;
const CHANNELS: u16 = 2;
/// 10 ms buffers, as ALSA typically delivers.
const BUFFER: usize = 441;
const FREQ: f32 = 440.0;

/// The signal: a 440 Hz sine, the same on both channels, at amplitude 0.5.
fn signal(rate: u32, i: usize) -> f32 {
    (2.0 * std::f32::consts::PI * FREQ * i as f32 / rate as f32).sin() * 0.5
}

#[derive(Clone)]
struct FakeHost {
    has_mic: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FakeMic;

impl fmt::Display for FakeMic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake mic")
    }
}

struct FakeStream {
    playing: Arc<AtomicBool>,
    exit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    start: Instant,
}

impl HostTrait for FakeHost {
    type Device = FakeMic;
    type Devices = std::vec::IntoIter<FakeMic>;

    fn is_available() -> bool {
        true
    }

    fn devices(&self) -> Result<Self::Devices, Error> {
        Ok(if self.has_mic { vec![FakeMic] } else { vec![] }.into_iter())
    }

    fn default_input_device(&self) -> Option<FakeMic> {
        self.has_mic.then_some(FakeMic)
    }

    fn default_output_device(&self) -> Option<FakeMic> {
        None
    }
}

fn config() -> SupportedStreamConfig {
    SupportedStreamConfig::new(
        CHANNELS,
        RATE,
        SupportedBufferSize::Range {
            min: BUFFER as u32,
            max: BUFFER as u32,
        },
        SampleFormat::I16,
    )
}

impl DeviceTrait for FakeMic {
    type SupportedInputConfigs = std::vec::IntoIter<SupportedStreamConfigRange>;
    type SupportedOutputConfigs = std::vec::IntoIter<SupportedStreamConfigRange>;
    type Stream = FakeStream;

    fn description(&self) -> Result<DeviceDescription, Error> {
        Ok(DeviceDescriptionBuilder::new("fake mic").build())
    }

    fn id(&self) -> Result<DeviceId, Error> {
        Err(Error::new(ErrorKind::UnsupportedOperation))
    }

    fn supported_input_configs(&self) -> Result<Self::SupportedInputConfigs, Error> {
        let c = config();
        Ok(vec![SupportedStreamConfigRange::new(
            c.channels(),
            RATE,
            RATE,
            *c.buffer_size(),
            c.sample_format(),
        )]
        .into_iter())
    }

    fn supported_output_configs(&self) -> Result<Self::SupportedOutputConfigs, Error> {
        Ok(vec![].into_iter())
    }

    fn default_input_config(&self) -> Result<SupportedStreamConfig, Error> {
        Ok(config())
    }

    fn default_output_config(&self) -> Result<SupportedStreamConfig, Error> {
        Err(Error::new(ErrorKind::UnsupportedConfig))
    }

    /// Calls back every 10 ms of real time with the next 10 ms of the signal, as 16-bit
    /// interleaved stereo: what an ALSA capture device does.
    fn build_input_stream_raw<D, E>(
        &self,
        config: StreamConfig,
        format: SampleFormat,
        mut data_callback: D,
        _: E,
        _: Option<Duration>,
    ) -> Result<FakeStream, Error>
    where
        D: FnMut(&Data, &InputCallbackInfo) + Send + 'static,
        E: FnMut(Error) + Send + 'static,
    {
        assert_eq!((config.channels, config.sample_rate), (CHANNELS, RATE));
        assert_eq!(format, SampleFormat::I16);
        let playing = Arc::new(AtomicBool::new(false));
        let exit = Arc::new(AtomicBool::new(false));
        let (p, x) = (playing.clone(), exit.clone());
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut buffer = vec![0i16; BUFFER * CHANNELS as usize];
            let mut frame = 0usize;
            let mut due = Instant::now();
            while !x.load(Ordering::Relaxed) {
                due += Duration::from_secs_f64(BUFFER as f64 / f64::from(RATE));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if !p.load(Ordering::Relaxed) {
                    continue;
                }
                for px in buffer.chunks_exact_mut(CHANNELS as usize) {
                    let v = (signal(RATE, frame) * 32767.0).round() as i16;
                    px.fill(v);
                    frame += 1;
                }
                // SAFETY: the pointer and length describe `buffer`, alive for the call.
                let data = unsafe {
                    Data::from_parts(buffer.as_mut_ptr().cast(), buffer.len(), SampleFormat::I16)
                };
                let t = start.elapsed();
                let at = StreamInstant::new(t.as_secs(), t.subsec_nanos());
                let info = InputCallbackInfo::new(InputStreamTimestamp {
                    callback: at,
                    capture: at,
                });
                data_callback(&data, &info);
            }
        });
        Ok(FakeStream {
            playing,
            exit,
            thread: Some(thread),
            start,
        })
    }

    fn build_output_stream_raw<D, E>(
        &self,
        _: StreamConfig,
        _: SampleFormat,
        _: D,
        _: E,
        _: Option<Duration>,
    ) -> Result<FakeStream, Error>
    where
        D: FnMut(&mut Data, &OutputCallbackInfo) + Send + 'static,
        E: FnMut(Error) + Send + 'static,
    {
        Err(Error::new(ErrorKind::UnsupportedConfig))
    }
}

impl StreamTrait for FakeStream {
    fn play(&self) -> Result<(), Error> {
        self.playing.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn pause(&self) -> Result<(), Error> {
        self.playing.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn now(&self) -> StreamInstant {
        let t = self.start.elapsed();
        StreamInstant::new(t.as_secs(), t.subsec_nanos())
    }

    fn buffer_size(&self) -> Result<FrameCount, Error> {
        Ok(BUFFER as FrameCount)
    }
}

impl Drop for FakeStream {
    fn drop(&mut self) {
        self.exit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn host(has_mic: bool) -> cpal::Host {
    cpal::Host::from(CustomHost::from_host(FakeHost { has_mic }))
}

#[test]
fn captured_signal_comes_out_resampled_to_16k() {
    let mic = Microphone::open(&host(true), None).unwrap();
    assert_eq!((mic.name(), mic.sample_rate()), ("fake mic", RATE));
    let out: Arc<Mutex<Vec<f32>>> = Arc::default();
    let chunks: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut g = Graph::new();
    let stop = g.stop_handle();
    let (o, c) = (out.clone(), chunks.clone());
    g.spawn("microphone", move |ctx| {
        let mut to16k = To16k::default();
        let mut take = |chunk: Envelope<AudioChunk>| {
            c.lock().unwrap().push(chunk.payload.sample_rate);
            for e in to16k.push(chunk).unwrap() {
                o.lock().unwrap().extend_from_slice(&e.payload.samples);
            }
            Ok(())
        };
        microphone_source(&ctx, mic, &mut take)?;
        if let Some(e) = to16k.finish() {
            o.lock().unwrap().extend_from_slice(&e.payload.samples);
        }
        Ok(())
    })
    .unwrap();
    // 1.5 s of real time, then the orderly stop (what Ctrl-C does).
    std::thread::sleep(Duration::from_millis(1500));
    stop.stop();
    g.join().unwrap();

    let chunks = chunks.lock().unwrap();
    assert!(chunks.len() >= 100, "only {} callbacks", chunks.len());
    assert!(chunks.iter().all(|&r| r == RATE));
    let out = out.lock().unwrap();
    let expected_len = chunks.len() * BUFFER * SAMPLE_RATE as usize / RATE as usize;
    assert!(
        out.len().abs_diff(expected_len) <= 1,
        "{} samples out for {} in",
        out.len(),
        chunks.len() * BUFFER
    );
    // Reference: the same sine sampled at 16 kHz directly. Tolerance 1e-3 (-54 dB of the
    // tone; 16-bit input quantisation is 3e-5, the rest the resampler's filter), away from
    // the first and last 50 ms where the filter sees the steps from and into silence.
    let end = out.len() - 800;
    let worst = (800..end)
        .map(|i| (out[i] - signal(SAMPLE_RATE, i)).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "max deviation from the 16 kHz sine: {worst}");
}

#[test]
fn no_microphone_is_a_clear_error() {
    let err = Microphone::open(&host(false), None).err().unwrap();
    assert_eq!(err.to_string(), "no microphone found; available: none");
    assert!(matches!(err, DeviceError::NotFound { .. }));
    let err = Microphone::open(&host(true), Some("usb headset"))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "no microphone found; available: fake mic");
}

/// While the kiosk speaks (and for the tail after), what the microphone captures reaches the
/// listener as silence of the same length; before and after, the signal comes through. The
/// voice's start and end reach the microphone's stage over an edge, as in the kiosk.
#[test]
fn muted_microphone_hears_silence_while_the_kiosk_speaks() {
    use pipeline::{EdgeConfig, Mute, Recv, Speaking};
    let mic = Microphone::open(&host(true), None).unwrap();
    let heard: Arc<Mutex<Vec<(Instant, usize, f32)>>> = Arc::default();
    let mut g = Graph::new();
    let stop = g.stop_handle();
    let (speaking_tx, speaking_rx) = g.edge("speaking", EdgeConfig::block(16));
    let h = heard.clone();
    g.spawn("microphone", move |ctx| {
        let mut mute = Mute::default();
        microphone_source(&ctx, mic, |chunk| {
            while let Recv::Item(event) = speaking_rx.recv_timeout(Duration::ZERO) {
                mute.note(event);
            }
            let at = chunk.captured;
            let gated = mute.gate(chunk);
            let peak = gated
                .payload
                .samples
                .iter()
                .fold(0f32, |p, s| p.max(s.abs()));
            h.lock()
                .unwrap()
                .push((at, gated.payload.samples.len(), peak));
            Ok(())
        })
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let on = Instant::now();
    speaking_tx.send(Speaking::Started(on)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let off = Instant::now();
    speaking_tx.send(Speaking::Ended(off)).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    stop.stop();
    g.join().unwrap();

    let heard = heard.lock().unwrap();
    let before: Vec<f32> = heard.iter().filter(|c| c.0 < on).map(|c| c.2).collect();
    let during: Vec<f32> = heard
        .iter()
        .filter(|c| c.0 > on && c.0 < off)
        .map(|c| c.2)
        .collect();
    let settle = off + Mute::TAIL + Duration::from_millis(20);
    let after: Vec<f32> = heard.iter().filter(|c| c.0 > settle).map(|c| c.2).collect();
    assert!(before.len() >= 10 && during.len() >= 20 && after.len() >= 10);
    assert!(before.iter().chain(&after).all(|&p| p > 0.4), "signal lost");
    assert!(during.iter().all(|&p| p == 0.0), "heard while speaking");
    assert!(
        heard.iter().all(|c| c.1 == BUFFER),
        "a chunk changed length"
    );
}
