//! One-shot file sources: an image (JPEG, PNG) as a frame, an audio file (WAV, FLAC,
//! OGG/Vorbis, MP3) as 16 kHz mono chunks.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::audio::{AudioChunk, AudioError, Resampler16k, to_mono};
use crate::frame::Frame;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable image ({reason})")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: not a readable audio file ({reason})")]
    Audio { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Resample { path: PathBuf, source: AudioError },
}

/// Largest image side accepted (a 16K panorama); the decoder's memory is capped too.
const MAX_IMAGE_SIDE: u32 = 16_384;
const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Decodes an image file to RGB. Grayscale, CMYK, 16-bit and alpha images are converted;
/// a file that is not an image, or is too large to decode safely, is an error.
pub fn load_image(path: &Path) -> Result<Frame, MediaError> {
    let bad = |reason: String| MediaError::Image {
        path: path.to_owned(),
        reason,
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|source| MediaError::Open {
            path: path.to_owned(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?.into_rgb8();
    let (width, height) = img.dimensions();
    Ok(Frame {
        width,
        height,
        rgb: Arc::new(img.into_raw()),
    })
}

/// Sample rates an audio file may declare: telephone 8 kHz to studio 384 kHz. A header's
/// rate sizes the resampler's buffers (4294967291 Hz aborted the process).
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8_000..=384_000;

/// `f()`, with a panic inside the decoding library (symphonia's id3v2 reader has an
/// `unreachable!()` a crafted tag reaches) turned into an error about the file.
fn contained<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err("the audio decoder failed on this file (a malformed header or tag)".into())
    })
}

fn check_rate(rate: u32) -> Result<(), String> {
    if SAMPLE_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "sample rate {rate} Hz is outside {}..{} Hz",
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        ))
    }
}

/// An audio file, decoded packet by packet into 16 kHz mono samples.
pub struct AudioFile {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    resampler: Option<Resampler16k>,
    finished: bool,
    decoded_any: bool,
    /// Packets that failed to decode and were skipped.
    pub skipped_packets: u64,
}

impl AudioFile {
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        let file = File::open(path).map_err(|source| MediaError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(path, Box::new(file))
    }

    /// A file's bytes already in memory; `path` (its extension a hint of the format) is
    /// what errors name.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, MediaError> {
        Self::from_source(path, Box::new(std::io::Cursor::new(bytes)))
    }

    fn from_source(path: &Path, mut source: Box<dyn MediaSource>) -> Result<Self, MediaError> {
        let bad = |reason: String| MediaError::Audio {
            path: path.to_owned(),
            reason,
        };
        crate::audio_tags::check(&mut *source).map_err(bad)?;
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let stream = MediaSourceStream::new(source, Default::default());
        let (format, decoder, track) = contained(|| {
            let probed = symphonia::default::get_probe()
                .format(
                    &hint,
                    stream,
                    &FormatOptions::default(),
                    &MetadataOptions::default(),
                )
                .map_err(|e| e.to_string())?;
            let format = probed.format;
            let track = format
                .tracks()
                .iter()
                .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
                .ok_or("no audio track")?;
            if let Some(rate) = track.codec_params.sample_rate {
                check_rate(rate)?;
            }
            let decoder = symphonia::default::get_codecs()
                .make(&track.codec_params, &DecoderOptions::default())
                .map_err(|e| e.to_string())?;
            let track = track.id;
            Ok((format, decoder, track))
        })
        .map_err(bad)?;
        Ok(AudioFile {
            path: path.to_owned(),
            format,
            decoder,
            track,
            resampler: None,
            finished: false,
            decoded_any: false,
            skipped_packets: 0,
        })
    }

    /// The next stretch of 16 kHz mono samples; `None` at the end of the file.
    pub fn next_samples(&mut self) -> Result<Option<Vec<f32>>, MediaError> {
        while let Some(chunk) = self.next_native()? {
            if self.resampler.is_none() {
                let r = Resampler16k::new(chunk.sample_rate).map_err(|source| {
                    MediaError::Resample {
                        path: self.path.clone(),
                        source,
                    }
                })?;
                self.resampler = Some(r);
            }
            let out = self.resampler.as_mut().map(|r| r.push(&chunk.samples));
            if let Some(out) = out.filter(|o| !o.is_empty()) {
                return Ok(Some(out));
            }
        }
        let tail = self.resampler.take().map(|mut r| r.finish());
        Ok(tail.filter(|t| !t.is_empty()))
    }

    /// The next decoded packet as mono at the file's own rate; `None` at the end. A packet
    /// that does not decode is skipped and counted; a file that breaks off ends there; a
    /// file of which no packet decodes is an error.
    pub fn next_native(&mut self) -> Result<Option<AudioChunk>, MediaError> {
        while !self.finished {
            let next = contained(|| Ok(self.format.next_packet()));
            let packet = match next.map_err(|e| self.error(e))? {
                Ok(p) => p,
                // The end of the file, or a truncated one: what was read is what there is.
                Err(SymError::IoError(_)) | Err(SymError::ResetRequired) => {
                    self.finished = true;
                    break;
                }
                Err(e) => return Err(self.error(e.to_string())),
            };
            if packet.track_id() != self.track {
                continue;
            }
            let decoder = &mut self.decoder;
            let decoded = contained(|| {
                let decoded = match decoder.decode(&packet) {
                    Ok(d) => d,
                    Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                };
                let spec = *decoded.spec();
                if decoded.frames() == 0 {
                    return Ok(Some(None));
                }
                check_rate(spec.rate)?;
                let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
                buf.copy_interleaved_ref(decoded);
                let mono = to_mono(buf.samples(), spec.channels.count());
                Ok(Some(Some(AudioChunk::new(spec.rate, mono))))
            });
            match decoded.map_err(|e| self.error(e))? {
                None => self.skipped_packets += 1,
                Some(None) => {}
                Some(Some(chunk)) => {
                    self.decoded_any = true;
                    return Ok(Some(chunk));
                }
            }
        }
        if self.skipped_packets > 0 && !self.decoded_any {
            return Err(self.error(format!(
                "none of its {} packets decode",
                self.skipped_packets
            )));
        }
        Ok(None)
    }

    /// The whole file at once.
    pub fn read_all(mut self) -> Result<Vec<f32>, MediaError> {
        let mut all = Vec::new();
        while let Some(s) = self.next_samples()? {
            all.extend(s);
        }
        Ok(all)
    }

    fn error(&self, reason: String) -> MediaError {
        MediaError::Audio {
            path: self.path.clone(),
            reason,
        }
    }
}
