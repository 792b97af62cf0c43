//! The camera conversion path on frames as a camera delivers them, good and damaged.

use std::time::Instant;

use image::{ImageEncoder, RgbImage, codecs::jpeg::JpegEncoder};
use pipeline::frame::{FourCc, FrameError, RawFrame, convert_stream};
use pipeline::{EdgeConfig, Envelope, edge};

/// A 64x48 picture: left half red, right half blue.
fn picture() -> RgbImage {
    RgbImage::from_fn(64, 48, |x, _| {
        if x < 32 {
            image::Rgb([220, 20, 20])
        } else {
            image::Rgb([20, 20, 220])
        }
    })
}

fn mjpeg() -> RawFrame {
    let img = picture();
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .write_image(&img, 64, 48, image::ExtendedColorType::Rgb8)
        .unwrap();
    RawFrame {
        width: 64,
        height: 48,
        fourcc: FourCc::Mjpg,
        bytes,
    }
}

/// YUYV of the same picture (BT.601 limited range; red is Y 81 U 90 V 240, blue Y 41 U 240 V 110).
fn yuyv() -> RawFrame {
    let mut bytes = Vec::new();
    for _y in 0..48 {
        for x in (0..64).step_by(2) {
            bytes.extend(if x < 32 {
                [81, 90, 81, 240]
            } else {
                [41, 240, 41, 110]
            });
        }
    }
    RawFrame {
        width: 64,
        height: 48,
        fourcc: FourCc::Yuyv,
        bytes,
    }
}

fn pixel(rgb: &[u8], width: u32, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * width + x) * 3) as usize;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

fn assert_red_and_blue(rgb: &[u8]) {
    let (left, right) = (pixel(rgb, 64, 8, 24), pixel(rgb, 64, 56, 24));
    assert!(left[0] > 180 && left[2] < 70, "left is red: {left:?}");
    assert!(right[2] > 180 && right[0] < 70, "right is blue: {right:?}");
}

#[test]
fn good_frames_convert_to_the_picture() {
    for raw in [mjpeg(), yuyv()] {
        let frame = raw.to_rgb().unwrap();
        assert_eq!(
            (frame.width, frame.height, frame.rgb.len()),
            (64, 48, 64 * 48 * 3)
        );
        assert_red_and_blue(&frame.rgb);
    }
}

#[test]
fn damaged_mjpeg_frames_are_errors_not_panics() {
    let good = mjpeg();
    let with = |bytes: Vec<u8>| RawFrame {
        bytes,
        ..good.clone()
    };
    let half = good.bytes[..good.bytes.len() / 2].to_vec();
    assert_eq!(with(half).to_rgb(), Err(FrameError::TruncatedJpeg));
    assert_eq!(with(b"garbage".to_vec()).to_rgb(), Err(FrameError::NotJpeg));
    assert_eq!(with(Vec::new()).to_rgb(), Err(FrameError::NotJpeg));
    // Right markers, nonsense between them.
    let mut junk = vec![0xFF, 0xD8];
    junk.extend((0..500u32).map(|i| (i * 7919 % 251) as u8));
    junk.extend([0xFF, 0xD9]);
    assert!(matches!(with(junk).to_rgb(), Err(FrameError::Decode(_))));
    // Bytes flipped in the middle of the entropy-coded data: decodes or fails, never panics.
    let mut flipped = good.bytes.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 40] {
        *b ^= 0x5A;
    }
    let _ = with(flipped).to_rgb();
    let wrong_size = RawFrame {
        width: 640,
        ..good.clone()
    };
    assert!(matches!(
        wrong_size.to_rgb(),
        Err(FrameError::SizeMismatch { .. })
    ));
}

#[test]
fn damaged_yuyv_frames_are_errors() {
    let good = yuyv();
    let short = RawFrame {
        bytes: good.bytes[..100].to_vec(),
        ..good.clone()
    };
    assert!(matches!(
        short.to_rgb(),
        Err(FrameError::WrongSize {
            expected: 6144,
            got: 100,
            ..
        })
    ));
    let odd = RawFrame {
        width: 63,
        ..good.clone()
    };
    assert!(matches!(
        odd.to_rgb(),
        Err(FrameError::BadDimensions { .. })
    ));
    let huge = RawFrame {
        width: 100_000,
        height: 100_000,
        ..good
    };
    assert!(matches!(
        huge.to_rgb(),
        Err(FrameError::BadDimensions { .. })
    ));
}

#[test]
fn a_stream_drops_and_counts_bad_frames_and_goes_on() {
    let (raw_tx, raw_rx, _) = edge(EdgeConfig::block(16));
    let (rgb_tx, rgb_rx, _) = edge(EdgeConfig::block(16));
    let truncated = RawFrame {
        bytes: mjpeg().bytes[..200].to_vec(),
        ..mjpeg()
    };
    let frames = [
        mjpeg(),
        truncated,
        yuyv(),
        RawFrame {
            bytes: vec![1, 2, 3],
            ..yuyv()
        },
        mjpeg(),
    ];
    for (seq, f) in frames.into_iter().enumerate() {
        raw_tx
            .send(Envelope::new(seq as u64, Instant::now(), f))
            .unwrap();
    }
    drop(raw_tx);
    let counts = convert_stream(raw_rx, &rgb_tx).unwrap();
    drop(rgb_tx);
    assert_eq!((counts.converted, counts.dropped), (3, 2));
    let seqs: Vec<u64> = rgb_rx.map(|f| f.seq).collect();
    assert_eq!(
        seqs,
        vec![0, 2, 4],
        "good frames keep their sequence numbers"
    );
}
