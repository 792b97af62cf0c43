//! File sources (images, audio in every supported container) and fixture recording and
//! replay, without hardware.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::audio::{SAMPLE_RATE, To16k};
use pipeline::fixture::{Fixture, FixtureWriter, Pace, ReplayClock, VERSION};
use pipeline::frame::FourCc;
use pipeline::media_file::{AudioFile, load_image};
use pipeline::{AudioChunk, EdgeConfig, Envelope, Graph, RawFrame, edge};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Zero crossings of a 440 Hz tone: 880 per second.
fn crossings(samples: &[f32]) -> usize {
    samples
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count()
}

#[test]
fn audio_files_of_every_container_decode_to_16k_mono() {
    // 1 s of a 440 Hz sine at 44.1 kHz stereo, made with sox (fixtures/README.md).
    for ext in ["flac", "ogg", "mp3"] {
        let path = fixtures().join(format!("audio/tone440.{ext}"));
        let samples = AudioFile::open(&path).unwrap().read_all().unwrap();
        // MP3 adds its encoder's padding; the others are exact.
        let secs = samples.len() as f64 / f64::from(SAMPLE_RATE);
        assert!((1.0..1.1).contains(&secs), "{ext}: {secs} s");
        let n = crossings(&samples[800..15_200]);
        // 0.9 s of a 440 Hz tone crosses zero 792 times.
        assert!(n.abs_diff(792) <= 3, "{ext}: {n} zero crossings");
        let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((0.45..0.56).contains(&peak), "{ext}: peak {peak}");
    }
}

/// A 16-bit PCM WAV, written by hand so the test knows every byte.
fn wav_i16(rate: u32, channels: u16, frames: &[Vec<i16>]) -> Vec<u8> {
    let data: Vec<u8> = frames
        .iter()
        .flatten()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let mut w = Vec::new();
    w.extend(b"RIFF");
    w.extend((36 + data.len() as u32).to_le_bytes());
    w.extend(b"WAVEfmt ");
    w.extend(16u32.to_le_bytes());
    w.extend(1u16.to_le_bytes());
    w.extend(channels.to_le_bytes());
    w.extend(rate.to_le_bytes());
    w.extend((rate * 2 * u32::from(channels)).to_le_bytes());
    w.extend((2 * channels).to_le_bytes());
    w.extend(16u16.to_le_bytes());
    w.extend(b"data");
    w.extend((data.len() as u32).to_le_bytes());
    w.extend(data);
    w
}

#[test]
fn wav_stereo_22k_is_downmixed_and_resampled_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 22_050;
    // Left carries the sine, right is silent: the mono mix is half the sine.
    let frames: Vec<Vec<i16>> = (0..rate as usize)
        .map(|i| {
            let v = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin();
            vec![(v * 16384.0) as i16, 0]
        })
        .collect();
    let path = dir.path().join("a.wav");
    std::fs::write(&path, wav_i16(rate, 2, &frames)).unwrap();
    let samples = AudioFile::open(&path).unwrap().read_all().unwrap();
    assert_eq!(samples.len(), 16_000);
    let worst = (800..15_200)
        .map(|i| {
            let want = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.25;
            (samples[i] - want).abs()
        })
        .fold(0.0f32, f32::max);
    assert!(worst < 2e-3, "max deviation {worst}");

    // Truncated mid-data: what is there decodes.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let half = AudioFile::open(&cut).unwrap().read_all().unwrap();
    assert!((7_900..8_100).contains(&half.len()), "{}", half.len());
}

#[test]
fn bad_audio_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("noise.mp3");
    std::fs::write(&garbage, b"this is not audio at all, just some text bytes").unwrap();
    let err = AudioFile::open(&garbage)
        .and_then(|f| f.read_all())
        .unwrap_err()
        .to_string();
    assert!(err.contains("noise.mp3"), "{err}");
    let missing = AudioFile::open(&dir.path().join("nope.wav")).err().unwrap();
    assert!(missing.to_string().starts_with("cannot open"), "{missing}");
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    assert!(AudioFile::open(&empty).is_err());
}

fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

#[test]
fn images_load_as_rgb_and_bad_ones_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gray =
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(64, 48, image::Luma([200])));
    let jpg = dir.path().join("gray.jpg");
    std::fs::write(&jpg, encode(gray, image::ImageFormat::Jpeg)).unwrap();
    let f = load_image(&jpg).unwrap();
    assert_eq!((f.width, f.height, f.rgb.len()), (64, 48, 64 * 48 * 3));
    assert!(f.rgb.iter().all(|&v| v.abs_diff(200) <= 2));

    let one = dir.path().join("one.png");
    let px = image::RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3]));
    std::fs::write(&one, encode(px.into(), image::ImageFormat::Png)).unwrap();
    assert_eq!(load_image(&one).unwrap().rgb.as_slice(), &[1, 2, 3]);

    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"\xFF\xD8\xFF\xE0 not really a jpeg").unwrap();
    let err = load_image(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.jpg") && err.contains("not a readable image"),
        "{err}"
    );

    // A header that claims 100000x100000 pixels is refused before any allocation.
    let mut png = encode(image::RgbImage::new(1, 1).into(), image::ImageFormat::Png);
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png).unwrap();
    assert!(load_image(&huge).is_err());
}

fn jpeg_frame(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    encode(img.into(), image::ImageFormat::Jpeg)
}

/// What the recorder is fed: frames (good, corrupt and truncated), 48 kHz audio, text.
fn live_streams() -> (Vec<RawFrame>, Vec<AudioChunk>, Vec<String>) {
    let good = jpeg_frame(32, 24);
    let truncated = good[..good.len() / 2].to_vec();
    let frames = vec![
        RawFrame {
            width: 32,
            height: 24,
            fourcc: FourCc::Mjpg,
            bytes: good.clone(),
        },
        RawFrame {
            width: 4,
            height: 2,
            fourcc: FourCc::Yuyv,
            bytes: vec![128; 16],
        },
        RawFrame {
            width: 32,
            height: 24,
            fourcc: FourCc::Mjpg,
            bytes: truncated,
        },
        RawFrame {
            width: 4,
            height: 2,
            fourcc: FourCc::Yuyv,
            bytes: vec![128; 5],
        },
    ];
    let audio = (0..10)
        .map(|c| {
            let s = (0..480)
                .map(|i| ((c * 480 + i) as f32 * 0.05).sin() * 0.3)
                .collect();
            AudioChunk::new(48_000, s)
        })
        .collect();
    let text = vec!["hello".to_string(), "wie geht's? ☃".to_string()];
    (frames, audio, text)
}

fn record(dir: &Path) {
    let (frames, audio, text) = live_streams();
    let writer = FixtureWriter::create(dir).unwrap();
    let mut g = Graph::new();
    let (ftx, frx, _) = edge(EdgeConfig::block(4));
    let (atx, arx, _) = edge(EdgeConfig::block(4));
    let (ttx, trx, _) = edge(EdgeConfig::block(4));
    g.spawn("sources", move |_| {
        let t0 = Instant::now();
        for (i, f) in frames.into_iter().enumerate() {
            let at = t0 + Duration::from_millis(40 * i as u64);
            ftx.send(Envelope::new(i as u64, at, f))?;
        }
        for (i, a) in audio.into_iter().enumerate() {
            atx.send(Envelope::new(i as u64, t0, a))?;
        }
        for (i, t) in text.into_iter().enumerate() {
            ttx.send(Envelope::new(i as u64, t0, t))?;
        }
        Ok(())
    })
    .unwrap();
    let w = writer.clone();
    g.spawn("rec-frames", move |ctx| {
        w.record_frames(&ctx, "camera", frx)
    })
    .unwrap();
    let w = writer.clone();
    g.spawn("rec-audio", move |ctx| w.record_audio(&ctx, "mic", arx))
        .unwrap();
    let w = writer.clone();
    g.spawn("rec-text", move |ctx| w.record_text(&ctx, "notes", trx))
        .unwrap();
    g.join().unwrap();
    writer.finish().unwrap();
}

/// Replays a fixture as fast as possible through the live conversion code.
fn replay(dir: &Path) -> (Vec<Vec<u8>>, usize, Vec<f32>, Vec<String>) {
    let fixture = Fixture::open(dir).unwrap();
    let clock = ReplayClock::new(Pace::Fast);
    let rgb = Arc::new(Mutex::new((Vec::new(), 0)));
    let audio = Arc::new(Mutex::new(Vec::new()));
    let text = Arc::new(Mutex::new(Vec::new()));
    let mut g = Graph::new();
    let (f, r) = (fixture.clone(), rgb.clone());
    g.spawn("frames", move |ctx| {
        f.replay_frames(&ctx, "camera", clock, |raw| {
            let mut r = r.lock().unwrap();
            match raw.payload.to_rgb() {
                Ok(frame) => r.0.push(frame.rgb.to_vec()),
                Err(_) => r.1 += 1,
            }
            Ok(())
        })
    })
    .unwrap();
    let (f, a) = (fixture.clone(), audio.clone());
    g.spawn("audio", move |ctx| {
        let mut to16k = To16k::default();
        f.replay_audio(&ctx, "mic", clock, 512, |chunk| {
            assert_eq!(chunk.payload.sample_rate, 48_000);
            for c in to16k.push(chunk).unwrap() {
                a.lock().unwrap().extend_from_slice(&c.payload.samples);
            }
            Ok(())
        })?;
        if let Some(c) = to16k.finish() {
            a.lock().unwrap().extend_from_slice(&c.payload.samples);
        }
        Ok(())
    })
    .unwrap();
    let (f, t) = (fixture, text.clone());
    g.spawn("text", move |ctx| {
        f.replay_text(&ctx, "notes", clock, |line| {
            t.lock().unwrap().push(line.payload);
            Ok(())
        })
    })
    .unwrap();
    g.join().unwrap();
    let (frames, dropped) = std::mem::take(&mut *rgb.lock().unwrap());
    let audio = std::mem::take(&mut *audio.lock().unwrap());
    let text = std::mem::take(&mut *text.lock().unwrap());
    (frames, dropped, audio, text)
}

#[test]
fn recording_replays_through_the_live_conversion_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path());

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["version"], VERSION);
    assert_eq!(manifest["streams"].as_array().unwrap().len(), 3);
    let index = Fixture::open(dir.path()).unwrap().frames("camera").unwrap();
    assert_eq!(index.len(), 4);
    assert_eq!(index[1].fourcc, FourCc::Yuyv);
    // Times count from the writer's creation, which the sources' thread starts a little
    // after: the frames' spacing is exact, their offset is scheduling.
    let spacing = index[3].t_ms - index[0].t_ms;
    assert!((spacing - 120.0).abs() < 0.01, "{spacing}");
    assert!(index[0].t_ms >= 0.0, "{}", index[0].t_ms);

    let (frames, dropped, audio, text) = replay(dir.path());
    let (live_frames, live_audio, live_text) = live_streams();
    // The good frames convert as they do live; the truncated and short ones are dropped.
    let want: Vec<Vec<u8>> = live_frames
        .iter()
        .filter_map(|f| f.to_rgb().ok())
        .map(|f| f.rgb.to_vec())
        .collect();
    assert_eq!((frames.len(), dropped), (2, 2));
    assert_eq!(frames, want);
    // Audio: the same samples as the live chunks resampled, though replayed in other sizes.
    let mut to16k = To16k::default();
    let mut live16 = Vec::new();
    for (i, c) in live_audio.into_iter().enumerate() {
        for e in to16k
            .push(Envelope::new(i as u64, Instant::now(), c))
            .unwrap()
        {
            live16.extend_from_slice(&e.payload.samples);
        }
    }
    live16.extend(to16k.finish().unwrap().payload.samples.iter());
    assert_eq!(audio.len(), 1600);
    let worst = audio
        .iter()
        .zip(&live16)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{worst}");
    assert_eq!(text, live_text);

    // Twice the same.
    assert_eq!(replay(dir.path()), (frames, dropped, audio, text));
}

#[test]
fn replay_at_recorded_pace_takes_the_recorded_time() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path());
    let fixture = Fixture::open(dir.path()).unwrap();
    let started = Instant::now();
    let clock = ReplayClock::new(Pace::Recorded);
    let mut g = Graph::new();
    g.spawn("frames", move |ctx| {
        fixture.replay_frames(&ctx, "camera", clock, |_| Ok(()))
    })
    .unwrap();
    g.join().unwrap();
    // The last frame was recorded 120 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(115));
}

#[test]
fn bad_fixtures_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = Fixture::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("manifest.json"), "{err}");
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"format": "percept-fixture", "version": 99, "streams": []}"#,
    )
    .unwrap();
    let err = Fixture::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("version 99 is not supported"), "{err}");
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"format": "percept-fixture", "version": 1, "streams": [{"kind": "frames", "name": "cam", "index": "cam.jsonl"}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("cam.jsonl"), "{\"seq\": 0}\n").unwrap();
    let err = Fixture::open(dir.path())
        .unwrap()
        .frames("cam")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cam.jsonl line 1") && err.contains("missing field"),
        "{err}"
    );
    // Issue 15: a time past any clock panicked the replay; files outside the fixture (or
    // devices) were read.
    let line = |t_ms: &str, file: &str| {
        format!(
            "{{\"seq\": 0, \"t_ms\": {t_ms}, \"width\": 2, \"height\": 2, \"fourcc\": \"MJPG\", \"file\": \"{file}\"}}\n"
        )
    };
    for (t_ms, file, want) in [
        ("1e300", "cam/0.mjpg", "t_ms 1e300 is not between 0"),
        ("-5", "cam/0.mjpg", "is not between 0"),
        ("0", "/etc/passwd", "'/etc/passwd' is not a path inside"),
        ("0", "/dev/zero", "is not a path inside"),
        ("0", "../../secret", "is not a path inside"),
        ("0", "", "is not a path inside"),
    ] {
        std::fs::write(dir.path().join("cam.jsonl"), line(t_ms, file)).unwrap();
        let err = Fixture::open(dir.path())
            .unwrap()
            .frames("cam")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cam.jsonl line 1") && err.contains(want),
            "{t_ms} {file}: {err}"
        );
    }
    std::fs::write(dir.path().join("cam.jsonl"), line("40.5", "cam/0.mjpg")).unwrap();
    assert_eq!(
        Fixture::open(dir.path()).unwrap().frames("cam").unwrap()[0].t_ms,
        40.5
    );
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"format": "percept-fixture", "version": 1, "streams": [{"kind": "frames", "name": "cam", "index": "/etc/passwd"}]}"#,
    )
    .unwrap();
    let err = Fixture::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("stream 'cam'") && err.contains("not a path inside"),
        "{err}"
    );
    // Recording into a directory that holds a fixture would overwrite it: refused.
    assert!(FixtureWriter::create(dir.path()).is_err());
}

/// Issue 15: crafted audio headers panicked inside symphonia (exit 101) or aborted the
/// process sizing the resampler (exit 134); both are errors naming the file now.
#[test]
fn crafted_audio_files_are_errors_not_crashes() {
    let bad = fixtures().join("bad");
    for (name, want) in [
        (
            "id3v24-restrictions.mp3",
            "audio decoder failed on this file",
        ),
        (
            "rate-4294967291.wav",
            "sample rate 4294967291 Hz is outside 8000..384000 Hz",
        ),
        // Found by the audio fuzz target (session 15): a FLAC picture block whose mime
        // type claims 4 GiB; symphonia allocated it and the process aborted.
        ("flac-picture-4gib.mp3", "FLAC picture block declares"),
        // Its twins: the picture's data length (CI's 20 s run), a Vorbis comment's length
        // in a FLAC block and in an Ogg Vorbis comment packet (symphonia's `vec![0; n]`).
        ("flac-picture-data-4gib.wav", "FLAC picture block declares"),
        (
            "flac-comment-4gib.flac",
            "Vorbis comment declares 4294967280 bytes",
        ),
        (
            "ogg-comment-4gib.ogg",
            "Vorbis comment declares 4294967280 bytes",
        ),
    ] {
        let path = bad.join(name);
        let err = match pipeline::media_file::AudioFile::open(&path) {
            Ok(f) => f.read_all().unwrap_err(),
            Err(e) => e,
        }
        .to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
}
