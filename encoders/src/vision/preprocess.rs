//! The classifier's input: the image's shorter side scaled to 256 and the centre 224x224
//! cut out (one bicubic pass over the source window that maps onto that crop), then
//! `x / 127.5 - 1`, channels first.
//!
//! The scaling to [-1, 1] (mean = std = 0.5) is the one these weights were trained with:
//! with ImageNet's mean and std instead, the photos of the tests are classified less
//! confidently and the stem's activations stray far from its batch-norm statistics (the
//! evidence is in the vision tests and `fixtures/reference/efficientnet-lite0/`).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

pub const INPUT: u32 = 224;
pub const RESIZE: u32 = 256;

/// An RGB image, 3 bytes per pixel, rows top to bottom.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub width: u32,
    pub height: u32,
    pub rgb: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("image of {width}x{height} has no pixels")]
    Empty { width: u32, height: u32 },
    #[error("image of {width}x{height} needs {expected} bytes of RGB, got {got}")]
    WrongSize {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("cannot resize: {0}")]
    Resize(String),
}

/// The centre crop's window in the source image, `(left, top, width, height)`, in source
/// pixels: what "scale the shorter side to 256, take the centre 224" selects.
pub fn crop_window(width: u32, height: u32) -> (f64, f64, f64, f64) {
    let (w, h) = (f64::from(width), f64::from(height));
    let scale = f64::from(RESIZE) / w.min(h);
    let side = f64::from(INPUT) / scale;
    ((w - side) / 2.0, (h - side) / 2.0, side, side)
}

impl RgbImage<'_> {
    /// An error unless the image has pixels and exactly `width * height * 3` bytes.
    pub fn check(&self) -> Result<(), ImageError> {
        let RgbImage { width, height, rgb } = *self;
        if width == 0 || height == 0 {
            return Err(ImageError::Empty { width, height });
        }
        let expected = width as usize * height as usize * 3;
        if rgb.len() != expected {
            return Err(ImageError::WrongSize {
                width,
                height,
                expected,
                got: rgb.len(),
            });
        }
        Ok(())
    }
}

/// The 224x224 RGB crop, bytes.
pub fn crop_rgb(image: RgbImage) -> Result<Vec<u8>, ImageError> {
    image.check()?;
    let RgbImage { width, height, rgb } = image;
    let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    let mut dst = Image::new(INPUT, INPUT, PixelType::U8x3);
    let (left, top, w, h) = crop_window(width, height);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
        .crop(left, top, w, h);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    Ok(dst.into_vec())
}

/// `[3, 224, 224]` floats in [-1, 1], channels first.
pub fn to_input(crop: &[u8]) -> Vec<f32> {
    let plane = crop.len() / 3;
    let mut chw = vec![0.0f32; crop.len()];
    for (i, px) in crop.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = f32::from(px[c]) / 127.5 - 1.0;
        }
    }
    chw
}
