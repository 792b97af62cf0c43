//! Camera frames: the raw bytes a camera (or a recording of one) delivers, and their
//! conversion to RGB by the project's own code, the same for live capture and replay.
//!
//! YUYV (4:2:2, BT.601 limited range, what V4L2 webcams send) is converted here; MJPEG is
//! decoded by the `image` crate after checking the JPEG start and end markers, because a
//! truncated JPEG otherwise decodes "successfully" into a partly grey picture.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::edge::{Closed, Input, Output};
use crate::message::Envelope;

/// Pixel formats a camera delivers, by their V4L2 fourcc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FourCc {
    Yuyv,
    Mjpg,
    Rgb3,
}

impl FourCc {
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "YUYV" => Some(FourCc::Yuyv),
            "MJPG" => Some(FourCc::Mjpg),
            "RGB3" => Some(FourCc::Rgb3),
            _ => None,
        }
    }
}

/// A frame as the camera gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub width: u32,
    pub height: u32,
    pub fourcc: FourCc,
    pub bytes: Vec<u8>,
}

/// An RGB frame, 3 bytes per pixel, rows top to bottom. The pixels are shared, so a frame
/// moves between stages without copying.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Arc<Vec<u8>>,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{fourcc:?} frame of {width}x{height} needs {expected} bytes, got {got}")]
    WrongSize {
        fourcc: FourCc,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("frame size {width}x{height} is not usable (zero, odd width for YUYV, or too large)")]
    BadDimensions { width: u32, height: u32 },
    #[error("JPEG frame does not start with FF D8")]
    NotJpeg,
    #[error("JPEG frame is truncated: no FF D9 end marker")]
    TruncatedJpeg,
    #[error("JPEG frame does not decode: {0}")]
    Decode(String),
    #[error("JPEG frame is {got_w}x{got_h}, the camera said {width}x{height}")]
    SizeMismatch {
        width: u32,
        height: u32,
        got_w: u32,
        got_h: u32,
    },
}

/// Largest frame accepted: 8K (a bigger claim is a corrupt header, not a camera).
const MAX_SIDE: u32 = 8192;

impl RawFrame {
    /// Converts to RGB. A corrupt or truncated frame is an error, for the caller to drop
    /// and count; it never panics.
    pub fn to_rgb(&self) -> Result<Frame, FrameError> {
        let (w, h) = (self.width, self.height);
        let odd_yuyv = self.fourcc == FourCc::Yuyv && w % 2 == 1;
        if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || odd_yuyv {
            return Err(FrameError::BadDimensions {
                width: w,
                height: h,
            });
        }
        let pixels = w as usize * h as usize;
        let rgb = match self.fourcc {
            FourCc::Rgb3 => {
                self.check_size(pixels * 3)?;
                self.bytes.clone()
            }
            FourCc::Yuyv => {
                self.check_size(pixels * 2)?;
                yuyv_to_rgb(&self.bytes)
            }
            FourCc::Mjpg => self.decode_jpeg()?,
        };
        Ok(Frame {
            width: w,
            height: h,
            rgb: Arc::new(rgb),
        })
    }

    fn check_size(&self, expected: usize) -> Result<(), FrameError> {
        if self.bytes.len() != expected {
            return Err(FrameError::WrongSize {
                fourcc: self.fourcc,
                width: self.width,
                height: self.height,
                expected,
                got: self.bytes.len(),
            });
        }
        Ok(())
    }

    fn decode_jpeg(&self) -> Result<Vec<u8>, FrameError> {
        let b = &self.bytes;
        if !b.starts_with(&[0xFF, 0xD8]) {
            return Err(FrameError::NotJpeg);
        }
        // Cameras may pad after the end marker; look for it near the end.
        let tail = &b[b.len().saturating_sub(64)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(FrameError::TruncatedJpeg);
        }
        let img = image::load_from_memory_with_format(b, image::ImageFormat::Jpeg)
            .map_err(|e| FrameError::Decode(e.to_string()))?
            .into_rgb8();
        if img.dimensions() != (self.width, self.height) {
            return Err(FrameError::SizeMismatch {
                width: self.width,
                height: self.height,
                got_w: img.width(),
                got_h: img.height(),
            });
        }
        Ok(img.into_raw())
    }
}

/// How many frames a conversion stage passed and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConversionCounts {
    pub converted: u64,
    pub dropped: u64,
}

/// Converts raw frames one by one, as live capture and replay both do: a frame that does
/// not convert is dropped, counted and logged, and the stream goes on.
#[derive(Debug, Default)]
pub struct Converter {
    pub counts: ConversionCounts,
}

impl Converter {
    pub fn convert(&mut self, raw: Envelope<RawFrame>) -> Option<Envelope<Frame>> {
        match raw.payload.to_rgb() {
            Ok(frame) => {
                self.counts.converted += 1;
                Some(Envelope::new(raw.seq, raw.captured, frame))
            }
            Err(e) => {
                self.counts.dropped += 1;
                eprintln!(
                    "warning: frame {} dropped ({} so far): {e}",
                    raw.seq, self.counts.dropped
                );
                None
            }
        }
    }
}

/// Wraps a sender of RGB frames into one of raw frames, converting as [`Converter`] does:
/// what sources (camera, replay) hand their frames to.
pub fn converting(
    mut send: impl FnMut(Envelope<Frame>) -> Result<(), Closed>,
) -> impl FnMut(Envelope<RawFrame>) -> Result<(), Closed> {
    let mut converter = Converter::default();
    move |raw| match converter.convert(raw) {
        Some(frame) => send(frame),
        None => Ok(()),
    }
}

/// The conversion stage: raw frames in, RGB frames out. A frame that does not convert is
/// dropped, counted and logged, and the stream goes on.
pub fn convert_stream(
    input: Input<Envelope<RawFrame>>,
    output: &Output<Envelope<Frame>>,
) -> Result<ConversionCounts, Closed> {
    let mut converter = Converter::default();
    for raw in input {
        if let Some(frame) = converter.convert(raw) {
            output.send(frame)?;
        }
    }
    Ok(converter.counts)
}

/// YUYV 4:2:2 to RGB, BT.601 limited range, in integer arithmetic (8-bit fixed point).
fn yuyv_to_rgb(yuyv: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(yuyv.len() / 2 * 3);
    for px in yuyv.chunks_exact(4) {
        let (y0, u, y1, v) = (px[0], px[1], px[2], px[3]);
        for y in [y0, y1] {
            rgb.extend(ycbcr_to_rgb(y, u, v));
        }
    }
    rgb
}

fn ycbcr_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16) * 298;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_reference_colours() {
        // (Y, U, V) of BT.601 limited-range white, black, red.
        let cases = [
            ((235, 128, 128), [255, 255, 255]),
            ((16, 128, 128), [0, 0, 0]),
            ((81, 90, 240), [255, 0, 0]),
        ];
        for ((y, u, v), want) in cases {
            let got = ycbcr_to_rgb(y, u, v);
            for c in 0..3 {
                assert!(
                    got[c].abs_diff(want[c]) <= 2,
                    "{y},{u},{v}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
