//! Recorded sensor fixtures: what live sources produced, written to a directory, and
//! played back through the same conversion code as live capture. The format is described
//! (and versioned) in `fixtures/README.md`:
//!
//! ```text
//! DIR/manifest.json        {"format": "percept-fixture", "version": 1, "streams": [...]}
//! DIR/NAME.jsonl           frames: {"seq", "t_ms", "width", "height", "fourcc", "file"}
//! DIR/NAME/000000.mjpg     one file per frame, the camera's own bytes (.yuyv, .rgb too)
//! DIR/NAME.wav             audio: mono 32-bit float WAV at the device's rate
//! DIR/NAME.jsonl           text: {"seq", "t_ms", "text"}
//! ```
//!
//! Times are milliseconds since the recording started, shared by all streams, so a replay
//! keeps the modalities aligned.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audio::AudioChunk;
use crate::edge::{Closed, Input};
use crate::frame::{FourCc, RawFrame};
use crate::graph::{StageContext, StageResult};
use crate::media_file::AudioFile;
use crate::message::Envelope;

/// The version this code writes and reads. A reader refuses other versions by name.
pub const VERSION: u32 = 1;
const FORMAT: &str = "percept-fixture";

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    #[error("fixture {dir} has no {kind} stream named '{name}'")]
    NoStream {
        dir: PathBuf,
        kind: &'static str,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub streams: Vec<Stream>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Stream {
    Frames {
        name: String,
        index: String,
    },
    Audio {
        name: String,
        file: String,
        /// When the first sample was captured.
        start_ms: f64,
    },
    Text {
        name: String,
        index: String,
    },
}

impl Stream {
    pub fn name(&self) -> &str {
        match self {
            Stream::Frames { name, .. }
            | Stream::Audio { name, .. }
            | Stream::Text { name, .. } => name,
        }
    }
}

/// One line of a frame index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameEntry {
    pub seq: u64,
    pub t_ms: f64,
    pub width: u32,
    pub height: u32,
    pub fourcc: FourCc,
    pub file: String,
}

/// One line of a text index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEntry {
    pub seq: u64,
    pub t_ms: f64,
    pub text: String,
}

/// The latest time an index may give an item: 30 days. A recorded pace waits until then,
/// and `Duration` cannot hold much more than 10^10 years (1e300 ms panicked).
pub const MAX_T_MS: f64 = 30.0 * 24.0 * 3600.0 * 1e3;

/// `t_ms` of an index line, if it is a time a replay can wait for.
fn check_time(t_ms: f64) -> Result<(), String> {
    if t_ms.is_finite() && (0.0..=MAX_T_MS).contains(&t_ms) {
        Ok(())
    } else {
        Err(format!(
            "t_ms {t_ms:?} is not between 0 and {MAX_T_MS} (30 days)"
        ))
    }
}

/// A file named by a fixture: a relative path inside its folder, never `..`, an absolute
/// path or a device ("/etc/passwd", "/dev/zero" are refused).
fn check_inside(file: &str) -> Result<(), String> {
    let path = Path::new(file);
    let plain = !file.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "file '{file}' is not a path inside the fixture folder"
        ))
    }
}

/// What an index line must hold beyond its JSON shape.
trait IndexLine {
    fn check(&self) -> Result<(), String>;
}

impl IndexLine for FrameEntry {
    fn check(&self) -> Result<(), String> {
        check_time(self.t_ms)?;
        check_inside(&self.file)
    }
}

impl IndexLine for TextEntry {
    fn check(&self) -> Result<(), String> {
        check_time(self.t_ms)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FixtureError + '_ {
    move |source| FixtureError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The lines of an index file (`path` names it in errors), each checked.
fn parse_index<T: for<'de> Deserialize<'de> + IndexLine>(
    path: &Path,
    text: impl BufRead,
) -> Result<Vec<T>, FixtureError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let invalid = |reason: String| FixtureError::Invalid {
            path: path.to_owned(),
            line: Some(i + 1),
            reason,
        };
        let entry: T = serde_json::from_str(&line).map_err(|e| invalid(e.to_string()))?;
        entry.check().map_err(invalid)?;
        entries.push(entry);
    }
    Ok(entries)
}

/// A frame index's text (`path` names it in errors), each line checked.
pub fn parse_frame_index(path: &Path, text: &str) -> Result<Vec<FrameEntry>, FixtureError> {
    parse_index(path, text.as_bytes())
}

/// A text index's text (`path` names it in errors), each line checked.
pub fn parse_text_index(path: &Path, text: &str) -> Result<Vec<TextEntry>, FixtureError> {
    parse_index(path, text.as_bytes())
}

// ---------------------------------------------------------------------------------------
// Writing

/// Writes a fixture while a graph runs: one recorder stage per stream, then
/// [`FixtureWriter::finish`] writes the manifest.
pub struct FixtureWriter {
    dir: PathBuf,
    started: Instant,
    streams: Mutex<Vec<Stream>>,
}

impl FixtureWriter {
    /// Creates `dir` (which must not hold a fixture already). Times count from now.
    pub fn create(dir: &Path) -> Result<Arc<Self>, FixtureError> {
        if dir.join("manifest.json").exists() {
            return Err(FixtureError::Invalid {
                path: dir.to_owned(),
                line: None,
                reason: "already holds a fixture; choose another directory".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(Arc::new(FixtureWriter {
            dir: dir.to_owned(),
            started: Instant::now(),
            streams: Mutex::new(Vec::new()),
        }))
    }

    fn t_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64() * 1e3
    }

    fn add(&self, stream: Stream) {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stream);
    }

    /// Records raw camera frames, byte for byte.
    pub fn record_frames(
        &self,
        ctx: &StageContext,
        name: &str,
        input: Input<Envelope<RawFrame>>,
    ) -> StageResult {
        let index_path = self.dir.join(format!("{name}.jsonl"));
        std::fs::create_dir_all(self.dir.join(name)).map_err(io_err(&self.dir))?;
        let mut index = BufWriter::new(File::create(&index_path).map_err(io_err(&index_path))?);
        self.add(Stream::Frames {
            name: name.into(),
            index: format!("{name}.jsonl"),
        });
        for (seq, item) in input.into_iter().enumerate() {
            ctx.item_in();
            let f = &item.payload;
            let ext = format!("{:?}", f.fourcc).to_lowercase();
            let file = format!("{name}/{seq:06}.{ext}");
            let path = self.dir.join(&file);
            std::fs::write(&path, &f.bytes).map_err(io_err(&path))?;
            let entry = FrameEntry {
                seq: seq as u64,
                t_ms: self.t_ms(item.captured),
                width: f.width,
                height: f.height,
                fourcc: f.fourcc,
                file,
            };
            writeln!(index, "{}", serde_json::to_string(&entry)?)?;
        }
        index.flush()?;
        Ok(())
    }

    /// Records audio chunks (mono, at the rate they come in) into one WAV file.
    pub fn record_audio(
        &self,
        ctx: &StageContext,
        name: &str,
        input: Input<Envelope<AudioChunk>>,
    ) -> StageResult {
        let file = format!("{name}.wav");
        let path = self.dir.join(&file);
        let mut wav: Option<WavWriter> = None;
        let mut start_ms = 0.0;
        for item in input {
            ctx.item_in();
            let chunk = &item.payload;
            let w = match &mut wav {
                Some(w) => w,
                None => {
                    start_ms = self.t_ms(item.captured);
                    wav.insert(WavWriter::create(&path, chunk.sample_rate)?)
                }
            };
            if chunk.sample_rate != w.rate {
                return Err(format!(
                    "audio stream '{name}' changed rate from {} to {} Hz",
                    w.rate, chunk.sample_rate
                )
                .into());
            }
            w.write(&chunk.samples)?;
        }
        if let Some(w) = wav {
            w.finish()?;
            self.add(Stream::Audio {
                name: name.into(),
                file,
                start_ms,
            });
        }
        Ok(())
    }

    /// Records text messages.
    pub fn record_text(
        &self,
        ctx: &StageContext,
        name: &str,
        input: Input<Envelope<String>>,
    ) -> StageResult {
        let index_path = self.dir.join(format!("{name}.jsonl"));
        let mut index = BufWriter::new(File::create(&index_path).map_err(io_err(&index_path))?);
        self.add(Stream::Text {
            name: name.into(),
            index: format!("{name}.jsonl"),
        });
        for (seq, item) in input.into_iter().enumerate() {
            ctx.item_in();
            let entry = TextEntry {
                seq: seq as u64,
                t_ms: self.t_ms(item.captured),
                text: item.payload,
            };
            writeln!(index, "{}", serde_json::to_string(&entry)?)?;
        }
        index.flush()?;
        Ok(())
    }

    /// Writes the manifest: call after every recorder stage has returned.
    pub fn finish(&self) -> Result<PathBuf, FixtureError> {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        streams.sort_by(|a, b| a.name().cmp(b.name()));
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            streams,
        };
        let path = self.dir.join("manifest.json");
        let text = serde_json::to_string_pretty(&manifest).expect("plain data serialises");
        std::fs::write(&path, text + "\n").map_err(io_err(&path))?;
        Ok(path)
    }
}

/// A mono 32-bit float WAV written as it goes; the sizes are filled in at the end.
pub struct WavWriter {
    file: BufWriter<File>,
    rate: u32,
    samples: u64,
}

impl WavWriter {
    pub fn create(path: &Path, rate: u32) -> std::io::Result<Self> {
        let mut file = BufWriter::new(File::create(path)?);
        let mut header = Vec::with_capacity(44);
        header.extend(b"RIFF\0\0\0\0WAVEfmt ");
        header.extend(16u32.to_le_bytes());
        header.extend(3u16.to_le_bytes()); // IEEE float
        header.extend(1u16.to_le_bytes()); // mono
        header.extend(rate.to_le_bytes());
        header.extend((rate * 4).to_le_bytes());
        header.extend(4u16.to_le_bytes());
        header.extend(32u16.to_le_bytes());
        header.extend(b"data\0\0\0\0");
        file.write_all(&header)?;
        Ok(WavWriter {
            file,
            rate,
            samples: 0,
        })
    }

    pub fn write(&mut self, samples: &[f32]) -> std::io::Result<()> {
        for s in samples {
            self.file.write_all(&s.to_le_bytes())?;
        }
        self.samples += samples.len() as u64;
        Ok(())
    }

    /// Fills in the sizes; a file not finished has zero sizes in its header.
    pub fn finish(mut self) -> std::io::Result<()> {
        let data = u32::try_from(self.samples * 4).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "over 4 GiB of audio")
        })?;
        self.file.seek(SeekFrom::Start(4))?;
        self.file.write_all(&(36 + data).to_le_bytes())?;
        self.file.seek(SeekFrom::Start(40))?;
        self.file.write_all(&data.to_le_bytes())?;
        self.file.flush()
    }
}

// ---------------------------------------------------------------------------------------
// Reading and replay

/// How fast a replay goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As recorded: each item waits for its recorded time.
    Recorded,
    /// As fast as the graph takes it; order and content are the same.
    Fast,
}

/// A fixture directory, checked when opened.
#[derive(Debug, Clone)]
pub struct Fixture {
    dir: PathBuf,
    manifest: Manifest,
}

impl Fixture {
    pub fn open(dir: &Path) -> Result<Self, FixtureError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Self::parse(dir, &text)
    }

    /// A fixture from its manifest's text (`dir` is where its files are and what errors
    /// name); nothing is read.
    pub fn parse(dir: &Path, text: &str) -> Result<Self, FixtureError> {
        let path = dir.join("manifest.json");
        let invalid = |line, reason: String| FixtureError::Invalid {
            path: path.clone(),
            line,
            reason,
        };
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| invalid(Some(e.line()), e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(invalid(None, format!("format is not '{FORMAT}'")));
        }
        if manifest.version != VERSION {
            return Err(invalid(
                None,
                format!(
                    "version {} is not supported (this build reads version {VERSION})",
                    manifest.version
                ),
            ));
        }
        for stream in &manifest.streams {
            let checked = match stream {
                Stream::Frames { index, .. } | Stream::Text { index, .. } => check_inside(index),
                Stream::Audio { file, start_ms, .. } => {
                    check_inside(file).and_then(|()| check_time(*start_ms))
                }
            };
            checked
                .map_err(|reason| invalid(None, format!("stream '{}': {reason}", stream.name())))?;
        }
        Ok(Fixture {
            dir: dir.to_owned(),
            manifest,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn streams(&self) -> &[Stream] {
        &self.manifest.streams
    }

    /// The first stream of a kind ("frames", "audio", "text"), if any.
    pub fn first(&self, kind: &str) -> Option<&Stream> {
        self.streams().iter().find(|s| {
            matches!(
                (kind, s),
                ("frames", Stream::Frames { .. })
                    | ("audio", Stream::Audio { .. })
                    | ("text", Stream::Text { .. })
            )
        })
    }

    fn index_lines<T: for<'de> Deserialize<'de> + IndexLine>(
        &self,
        index: &str,
    ) -> Result<Vec<T>, FixtureError> {
        let path = self.dir.join(index);
        let file = File::open(&path).map_err(io_err(&path))?;
        parse_index(&path, BufReader::new(file))
    }

    /// The frame index of stream `name`.
    pub fn frames(&self, name: &str) -> Result<Vec<FrameEntry>, FixtureError> {
        match self.streams().iter().find(|s| s.name() == name) {
            Some(Stream::Frames { index, .. }) => self.index_lines(index),
            _ => Err(self.no_stream("frames", name)),
        }
    }

    /// The text index of stream `name`.
    pub fn texts(&self, name: &str) -> Result<Vec<TextEntry>, FixtureError> {
        match self.streams().iter().find(|s| s.name() == name) {
            Some(Stream::Text { index, .. }) => self.index_lines(index),
            _ => Err(self.no_stream("text", name)),
        }
    }

    fn no_stream(&self, kind: &'static str, name: &str) -> FixtureError {
        FixtureError::NoStream {
            dir: self.dir.clone(),
            kind,
            name: name.into(),
        }
    }

    /// Plays stream `name`'s raw frames; convert them with [`crate::frame::convert_stream`]
    /// as live frames are. A frame file that is missing is an error; one whose bytes are
    /// corrupt is passed on for the conversion to drop and count, as live.
    pub fn replay_frames(
        &self,
        ctx: &StageContext,
        name: &str,
        clock: ReplayClock,
        mut emit: impl FnMut(Envelope<RawFrame>) -> Result<(), Closed>,
    ) -> StageResult {
        for entry in self.frames(name)? {
            if ctx.stopped() {
                break;
            }
            let path = self.dir.join(&entry.file);
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let captured = clock.wait_for(entry.t_ms);
            let frame = RawFrame {
                width: entry.width,
                height: entry.height,
                fourcc: entry.fourcc,
                bytes,
            };
            emit(Envelope::new(entry.seq, captured, frame))?;
            ctx.item_out();
        }
        Ok(())
    }

    /// Plays stream `name`'s audio in chunks of `chunk` samples, at its recorded rate.
    pub fn replay_audio(
        &self,
        ctx: &StageContext,
        name: &str,
        clock: ReplayClock,
        chunk: usize,
        mut emit: impl FnMut(Envelope<AudioChunk>) -> Result<(), Closed>,
    ) -> StageResult {
        let Some(Stream::Audio { file, start_ms, .. }) =
            self.streams().iter().find(|s| s.name() == name)
        else {
            return Err(self.no_stream("audio", name).into());
        };
        let mut reader = AudioFile::open(&self.dir.join(file))?;
        let mut buffered: Vec<f32> = Vec::new();
        let mut rate = 0;
        let (mut sent, mut seq) = (0u64, 0u64);
        let mut ended = false;
        while !ctx.stopped() {
            if buffered.len() < chunk && !ended {
                match reader.next_native()? {
                    Some(c) => {
                        rate = c.sample_rate;
                        buffered.extend_from_slice(&c.samples);
                    }
                    None => ended = true,
                }
                continue;
            }
            if buffered.is_empty() {
                break;
            }
            let n = chunk.min(buffered.len());
            let samples: Vec<f32> = buffered.drain(..n).collect();
            let t_ms = start_ms + sent as f64 * 1e3 / f64::from(rate.max(1));
            let captured = clock.wait_for(t_ms + n as f64 * 1e3 / f64::from(rate.max(1)));
            sent += n as u64;
            emit(Envelope::new(seq, captured, AudioChunk::new(rate, samples)))?;
            ctx.item_out();
            seq += 1;
        }
        Ok(())
    }

    /// Plays stream `name`'s text messages.
    pub fn replay_text(
        &self,
        ctx: &StageContext,
        name: &str,
        clock: ReplayClock,
        mut emit: impl FnMut(Envelope<String>) -> Result<(), Closed>,
    ) -> StageResult {
        for entry in self.texts(name)? {
            if ctx.stopped() {
                break;
            }
            let captured = clock.wait_for(entry.t_ms);
            emit(Envelope::new(entry.seq, captured, entry.text))?;
            ctx.item_out();
        }
        Ok(())
    }
}

/// The shared start of a replay: every stream of a fixture waits on the same clock, so the
/// modalities stay aligned as they were recorded.
#[derive(Debug, Clone, Copy)]
pub struct ReplayClock {
    start: Instant,
    pace: Pace,
}

impl ReplayClock {
    pub fn new(pace: Pace) -> Self {
        ReplayClock {
            start: Instant::now(),
            pace,
        }
    }

    /// Waits until recorded time `t_ms` (at recorded pace) and returns the capture time
    /// to stamp on the item.
    fn wait_for(&self, t_ms: f64) -> Instant {
        if self.pace == Pace::Recorded {
            let due = self.start + Duration::from_secs_f64(t_ms.max(0.0) / 1e3);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        Instant::now()
    }
}
