//! Any bytes as a camera frame (input: the pixel format, width and height as two
//! little-endian u16, then the pixels) converted to RGB: refused or converted, never a
//! panic or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::frame::{FourCc, RawFrame};

fuzz_target!(|data: &[u8]| {
    let Some((head, bytes)) = data.split_first_chunk::<5>() else {
        return;
    };
    let fourcc = match head[0] % 3 {
        0 => FourCc::Yuyv,
        1 => FourCc::Mjpg,
        _ => FourCc::Rgb3,
    };
    let raw = RawFrame {
        width: u16::from_le_bytes([head[1], head[2]]) as u32,
        height: u16::from_le_bytes([head[3], head[4]]) as u32,
        fourcc,
        bytes: bytes.to_vec(),
    };
    if let Ok(frame) = raw.to_rgb() {
        assert_eq!(
            frame.rgb.len(),
            frame.width as usize * frame.height as usize * 3
        );
    }
});
