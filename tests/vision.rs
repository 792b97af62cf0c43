//! The vision encoder against a float64 numpy implementation of the same network
//! (`fixtures/reference/efficientnet-lite0/scripts/`, figures in `reference.json`), and on
//! real photos (scikit-image's sample data, pulled by `percept models pull`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};
use encoders::vision::preprocess::{self, RgbImage};
use encoders::vision::{Region, VisionEncoder};
use percept::models;
use serde_json::Value;

mod common;

fn reference_dir() -> PathBuf {
    common::reference_dir("efficientnet-lite0")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(reference_dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn encoder() -> &'static VisionEncoder {
    static ENCODER: OnceLock<VisionEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| percept::vision::load(&Device::flex()).unwrap())
}

fn photo(name: &str) -> PathBuf {
    models::model_dir("skimage-photos").join(name)
}

fn load_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path).unwrap().into_rgb8();
    let (w, h) = img.dimensions();
    (w, h, img.into_raw())
}

/// The numpy reference's pre-processed chelsea, `[1, 3, 224, 224]`.
fn chelsea_input() -> Vec<f32> {
    common::read_f32(&reference_dir().join("chelsea_input_224.f32"))
}

fn at(t: &Tensor<4>, pos: &Value) -> f32 {
    let p: Vec<usize> = pos
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let v = t
        .clone()
        .slice([0..1, p[0]..p[0] + 1, p[1]..p[1] + 1, p[2]..p[2] + 1]);
    v.into_data().try_to_vec::<f32>().unwrap()[0]
}

/// Stem (padding, batch-norm folding, ReLU6), block 0 (depthwise groups, linear
/// projection) and block 1 (stride-2 depthwise: SAME padding is 0 top/left, 1 bottom/right)
/// at the corners, where a padding mistake shows (symmetric padding would give 5.55 instead
/// of 0.0 at the stem's [0, 0, 0]).
#[test]
fn layers_match_the_reference_at_borders_and_inside() {
    let r = reference();
    let layers = &r["photos"]["chelsea.png"]["layers"];
    let model = encoder().model();
    let x = Tensor::<4>::from_data(
        TensorData::new(chelsea_input(), [1, 3, 224, 224]),
        encoder().device(),
    );
    let stem = model.stem.forward(x);
    let block0 = model.blocks[0].forward(stem.clone());
    let block1 = model.blocks[1].forward(block0.clone());
    for (name, t) in [("stem", &stem), ("block0", &block0), ("block1", &block1)] {
        let want: Vec<usize> = layers[format!("{name}_shape")]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims()[1..], want[..], "{name}");
        for p in layers[name].as_array().unwrap() {
            let (got, want) = (at(t, &p["pos"]), p["value"].as_f64().unwrap() as f32);
            assert!(
                (got - want).abs() <= 1e-4 + 1e-4 * want.abs(),
                "{name}{}: {got} vs {want}",
                p["pos"]
            );
        }
        let sum: f32 = t.clone().sum().into_data().try_to_vec::<f32>().unwrap()[0];
        let want = layers[format!("{name}_sum")].as_f64().unwrap() as f32;
        assert!(
            (sum - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{name} sum {sum} vs {want}"
        );
    }
}

#[test]
fn logits_and_features_match_the_reference() {
    let r = reference();
    let c = &r["photos"]["chelsea.png"];
    let scene = encoder().encode_input(chelsea_input());
    let f = &scene.whole.feature;
    let l2 = f.iter().map(|x| x * x).sum::<f32>().sqrt();
    let want_l2 = c["feature_l2"].as_f64().unwrap() as f32;
    assert!((l2 - want_l2).abs() < 1e-3 * want_l2, "{l2} vs {want_l2}");
    for (got, want) in f.iter().zip(c["feature_first16"].as_array().unwrap()) {
        let want = want.as_f64().unwrap() as f32;
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
    let top5: Vec<(usize, f32)> = c["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["index"].as_u64().unwrap() as usize,
                t["prob"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    for (label, (class, prob)) in scene.whole.labels.iter().zip(top5) {
        assert_eq!(label.class, class);
        assert!((label.prob - prob).abs() < 1e-3, "{label:?} vs {prob}");
    }
    assert_eq!(scene.whole.labels[0].name, "tiger cat");
    assert_eq!(scene.regions.len(), 3);
}

/// Classes that name each photo's subject (ImageNet indices): any one of them in the
/// top 5 passes.
const PHOTOS: [(&str, &[usize]); 5] = [
    ("chelsea.png", &[281, 282, 285]), // tabby, tiger cat, Egyptian cat
    ("coffee.png", &[967, 968, 504]),  // espresso, cup, coffee mug
    ("rocket.jpg", &[657, 744]),       // missile, projectile
    ("motorcycle_left.png", &[665, 670]), // moped, motor scooter
    ("camera.png", &[872]),            // tripod (a grayscale photo)
];

#[test]
fn real_photos_have_their_subject_in_the_top_5() {
    for (name, classes) in PHOTOS {
        let (width, height, rgb) = load_rgb(&photo(name));
        let scene = encoder()
            .encode(RgbImage {
                width,
                height,
                rgb: &rgb,
            })
            .unwrap();
        let top: Vec<usize> = scene.whole.labels.iter().map(|l| l.class).collect();
        assert!(
            top.iter().any(|c| classes.contains(c)),
            "{name}: top 5 {:?}",
            scene.whole.labels
        );
    }
}

/// The evidence for the input scaling: with mean = std = 0.5 the photos' subjects get
/// more probability than with ImageNet's mean and std, on every photo together.
#[test]
fn inputs_scaled_to_minus_one_one_classify_better_than_imagenet_normalisation() {
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let (mut half, mut imagenet) = (0.0, 0.0);
    for (name, classes) in PHOTOS {
        let (width, height, rgb) = load_rgb(&photo(name));
        let crop = preprocess::crop_rgb(RgbImage {
            width,
            height,
            rgb: &rgb,
        })
        .unwrap();
        let plane = crop.len() / 3;
        let mut alt = vec![0.0f32; crop.len()];
        for (i, px) in crop.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                alt[ch * plane + i] = (f32::from(px[ch]) / 255.0 - mean[ch]) / std[ch];
            }
        }
        let p = |scene: encoders::vision::Scene| -> f32 {
            classes.iter().map(|&c| scene.whole.probs[c]).sum()
        };
        half += p(encoder().encode_input(preprocess::to_input(&crop)));
        imagenet += p(encoder().encode_input(alt));
    }
    assert!(
        half > imagenet + 0.3,
        "subject probability summed over photos: [-1,1] {half}, ImageNet {imagenet}"
    );
}

#[test]
fn regions_tell_left_from_right() {
    // Coffee on the left half, a black frame on the right: the left region sees the cup.
    let (w, h, rgb) = load_rgb(&photo("coffee.png"));
    let mut wide = vec![0u8; (2 * w * h * 3) as usize];
    for y in 0..h as usize {
        let src = &rgb[y * w as usize * 3..(y + 1) * w as usize * 3];
        wide[y * 2 * w as usize * 3..][..w as usize * 3].copy_from_slice(src);
    }
    // Square it so the centre crop keeps both halves.
    let side = 2 * w;
    let mut square = vec![0u8; (side * side * 3) as usize];
    let top = ((side - h) / 2) as usize;
    for y in 0..h as usize {
        let row = &wide[y * side as usize * 3..(y + 1) * side as usize * 3];
        square[(top + y) * side as usize * 3..][..side as usize * 3].copy_from_slice(row);
    }
    let scene = encoder()
        .encode(RgbImage {
            width: side,
            height: side,
            rgb: &square,
        })
        .unwrap();
    let cup = |r: Region| -> f32 {
        let view = &scene.regions.iter().find(|(g, _)| *g == r).unwrap().1;
        [967usize, 968, 504].iter().map(|&c| view.probs[c]).sum()
    };
    assert!(
        cup(Region::Left) > 2.0 * cup(Region::Right),
        "left {} right {}",
        cup(Region::Left),
        cup(Region::Right)
    );
}

#[test]
fn odd_images_are_processed_or_refused_clearly() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images");
    // Grayscale and CMYK JPEGs are converted to RGB and classified.
    for name in ["coffee_gray.jpg", "coffee_cmyk.jpg"] {
        let frame = pipeline::media_file::load_image(&fixtures.join(name)).unwrap();
        let scene = encoder()
            .encode(RgbImage {
                width: frame.width,
                height: frame.height,
                rgb: &frame.rgb,
            })
            .unwrap();
        assert!(
            scene
                .whole
                .labels
                .iter()
                .any(|l| [967, 968, 504].contains(&l.class)),
            "{name}: {:?}",
            scene.whole.labels
        );
    }
    // 1x1 and 10000x10000 images are scaled like any other.
    for side in [1u32, 10_000] {
        let rgb = vec![90u8; (side * side * 3) as usize];
        let scene = encoder()
            .encode(RgbImage {
                width: side,
                height: side,
                rgb: &rgb,
            })
            .unwrap();
        assert_eq!(scene.whole.probs.len(), 1000);
        assert!(scene.whole.probs.iter().all(|p| p.is_finite()));
    }
    // Wrong buffer sizes and empty images are errors, not panics.
    let err = encoder()
        .encode(RgbImage {
            width: 4,
            height: 4,
            rgb: &[0; 10],
        })
        .unwrap_err();
    assert!(err.to_string().contains("needs 48 bytes"), "{err}");
    assert!(
        encoder()
            .encode(RgbImage {
                width: 0,
                height: 5,
                rgb: &[],
            })
            .is_err()
    );
}

/// The same network on the wgpu device (in CI: Mesa's llvmpipe software Vulkan; with a GPU,
/// the GPU) gives the CPU's features and probabilities.
#[test]
fn wgpu_device_matches_the_cpu() {
    let device = percept::device::select(percept::device::DeviceChoice::Wgpu, 0).unwrap();
    let gpu = percept::vision::load(&device).unwrap();
    let on_gpu = gpu.encode_input(chelsea_input());
    let on_cpu = encoder().encode_input(chelsea_input());
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    // Features are ReLU6 outputs averaged (0..6); probabilities 0..1.
    let f = worst(&on_gpu.whole.feature, &on_cpu.whole.feature);
    let p = worst(&on_gpu.whole.probs, &on_cpu.whole.probs);
    assert!(
        f < 1e-3 && p < 1e-4,
        "feature diff {f}, probability diff {p}"
    );
    let classes = |s: &encoders::vision::Scene| -> Vec<usize> {
        s.whole.labels.iter().map(|l| l.class).collect()
    };
    assert_eq!(classes(&on_gpu), classes(&on_cpu));
    for ((_, g), (_, c)) in on_gpu.regions.iter().zip(&on_cpu.regions) {
        assert!(worst(&g.feature, &c.feature) < 1e-3);
    }
}
