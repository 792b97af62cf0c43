//! Live camera capture through nokhwa (V4L2). nokhwa only delivers the camera's own bytes
//! (`frame_raw`); decoding is [`crate::frame`]'s, the same code replay uses, so a corrupt
//! MJPEG frame is dropped and counted instead of panicking in a decoder.

use std::time::Instant;

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use crate::devices::DeviceError;
use crate::edge::Closed;
use crate::frame::{FourCc, RawFrame};
use crate::graph::{StageContext, StageResult};
use crate::message::Envelope;

/// What to ask the camera for; it may give the closest format it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraConfig {
    pub index: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            index: 0,
            width: 640,
            height: 480,
            fps: 30,
        }
    }
}

/// The cameras V4L2 lists, by name.
pub fn list() -> Vec<String> {
    nokhwa::query(ApiBackend::Video4Linux)
        .map(|cams| {
            cams.iter()
                .map(|c| format!("{} ({})", c.human_name(), c.index()))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that a camera is there before a graph starts, so a missing one is a clear error
/// at start ("no camera found; available: none"). The camera itself is opened on its
/// stage's thread ([`camera_source`]): nokhwa's handle cannot move between threads.
pub fn check(config: CameraConfig) -> Result<(), DeviceError> {
    let available = list();
    let wanted = format!("({})", CameraIndex::Index(config.index));
    if available.iter().any(|name| name.ends_with(&wanted)) {
        Ok(())
    } else {
        Err(DeviceError::NotFound {
            what: "camera",
            available,
        })
    }
}

/// An open camera, streaming.
pub struct Camera {
    inner: nokhwa::Camera,
    name: String,
}

impl Camera {
    pub fn open(config: CameraConfig) -> Result<Self, DeviceError> {
        let available = list();
        if available.is_empty() {
            return Err(DeviceError::NotFound {
                what: "camera",
                available,
            });
        }
        let name = format!("camera {}", config.index);
        let open_err = |e: nokhwa::NokhwaError| DeviceError::Open {
            what: "camera",
            name: name.clone(),
            reason: format!("{e} (available: {})", available.join(", ")),
        };
        // MJPEG first: it is what webcams deliver at 640x480 and above at full rate.
        let wanted = CameraFormat::new(
            Resolution::new(config.width, config.height),
            FrameFormat::MJPEG,
            config.fps,
        );
        let format = RequestedFormat::new::<nokhwa::pixel_format::RgbFormat>(
            RequestedFormatType::Closest(wanted),
        );
        let mut inner =
            nokhwa::Camera::new(CameraIndex::Index(config.index), format).map_err(open_err)?;
        inner.open_stream().map_err(open_err)?;
        Ok(Camera { inner, name })
    }

    /// The next frame as the camera sent it.
    pub fn capture(&mut self) -> Result<RawFrame, DeviceError> {
        let format = self.inner.camera_format();
        let fourcc = match format.format() {
            FrameFormat::MJPEG => FourCc::Mjpg,
            FrameFormat::YUYV => FourCc::Yuyv,
            FrameFormat::RAWRGB => FourCc::Rgb3,
            other => {
                return Err(DeviceError::Lost {
                    what: "camera",
                    name: self.name.clone(),
                    reason: format!("pixel format {other} is not supported"),
                });
            }
        };
        let bytes = self.inner.frame_raw().map_err(|e| DeviceError::Lost {
            what: "camera",
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(RawFrame {
            width: format.resolution().width(),
            height: format.resolution().height(),
            fourcc,
            bytes: bytes.into_owned(),
        })
    }
}

/// The camera source stage: opens the camera, then sends raw frames until the graph stops
/// or the camera goes away.
pub fn camera_source(
    ctx: &StageContext,
    config: CameraConfig,
    mut emit: impl FnMut(Envelope<RawFrame>) -> Result<(), Closed>,
) -> StageResult {
    let mut camera = Camera::open(config)?;
    let mut seq = 0;
    while !ctx.stopped() {
        let frame = camera.capture()?;
        emit(Envelope::new(seq, Instant::now(), frame))?;
        ctx.item_out();
        seq += 1;
    }
    let _ = camera.inner.stop_stream();
    Ok(())
}
