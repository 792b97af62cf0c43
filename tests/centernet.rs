//! The object detector against TensorFlow.js running the very same `centernet.json`
//! (`fixtures/reference/centernet/`: `reference.js` in node, tfjs 4.22.0's CPU backend,
//! letterboxed input as the detector feeds it).
//!
//! Where our decoded pixels are the reference's (every PNG: `decoded_rgb_sha256` matches),
//! the comparison is tight: the 512x512 input's digest, the heatmap's digest, and every
//! decoder row with its box within 1 input pixel and its score within 1e-3. JPEGs decode
//! differently in jpeg-js and in the `image` crate (up to 30 levels; see the fixture's
//! README), so for them only the best row's class and a score within 0.05 are held.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Device;
use encoders::vision::Detector;
use encoders::vision::detect::{COCO, Letterboxed};
use encoders::vision::preprocess::RgbImage;
use percept::models;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;

fn reference() -> Value {
    let path = common::reference_dir("centernet").join("reference_letterbox.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| percept::vision::load_detector(&Device::flex()).unwrap())
}

/// A reference image's file: this repository's, or scikit-image's from the model cache.
fn image_path(file: &str) -> PathBuf {
    match file.strip_prefix("skimage/data/") {
        Some(name) => models::model_dir("skimage-photos").join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file),
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn decode(file: &str) -> Decoded {
    let frame = pipeline::media_file::load_image(&image_path(file)).unwrap();
    Decoded {
        width: frame.width,
        height: frame.height,
        rgb: frame.rgb.to_vec(),
    }
}

#[test]
fn detections_match_tensorflow_js() {
    let r = reference();
    let mut tight = 0;
    for img in r["images"].as_array().unwrap() {
        let file = img["file"].as_str().unwrap();
        let d = decode(file);
        assert_eq!(
            (d.width as u64, d.height as u64),
            (
                img["width"].as_u64().unwrap(),
                img["height"].as_u64().unwrap()
            )
        );
        let same_pixels =
            hex::encode(Sha256::digest(&d.rgb)) == img["decoded_rgb_sha256"].as_str().unwrap();
        let input = Letterboxed::new(RgbImage {
            width: d.width,
            height: d.height,
            rgb: &d.rgb,
        })
        .unwrap();
        let lb = &img["input"]["letterbox"];
        assert_eq!(
            (input.dx as u64, input.dy as u64),
            (lb["dx"].as_u64().unwrap(), lb["dy"].as_u64().unwrap()),
            "{file}"
        );
        let rows = detector().raw(&input, 0.05);
        let want = img["detections"].as_array().unwrap();
        if !same_pixels {
            let (best, top) = (&rows[0], &want[0]);
            assert_eq!(
                best.class as u64,
                top["class"].as_u64().unwrap(),
                "{file}: {best:?} vs {top}"
            );
            assert!(
                (f64::from(best.score) - f(&top["score"])).abs() < 0.05,
                "{file}: {best:?} vs {top}"
            );
            continue;
        }
        tight += 1;
        let sum: f64 = input.chw.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum - f(&img["input"]["sum"])).abs() < 1e-3 * sum.abs().max(1.0),
            "{file}: input sum {sum}"
        );
        let (heatmap, _) = detector().maps(&input);
        let kp = &img["keypoints"];
        let hsum: f64 = heatmap.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (hsum - f(&kp["sum"])).abs() < 1e-3 * f(&kp["sum"]),
            "{file}: heatmap sum {hsum} vs {}",
            kp["sum"]
        );
        let max = heatmap.iter().copied().fold(f32::MIN, f32::max);
        assert!(
            (f64::from(max) - f(&kp["max"])).abs() < 1e-3,
            "{file}: heatmap max {max}"
        );
        // Every reference row (but those at the edges of what either side keeps, where a
        // difference of 1e-3 may drop a row) has its twin: same class, box within 1 px.
        let floor = want.last().map_or(0.05, |w| f(&w["score"])).max(0.05) + 1e-3;
        for w in want.iter().filter(|w| f(&w["score"]) > floor) {
            let twin = rows.iter().find(|d| {
                d.class as u64 == w["class"].as_u64().unwrap()
                    && (f64::from(d.x1) - f(&w["x1"])).abs() <= 1.0
                    && (f64::from(d.y1) - f(&w["y1"])).abs() <= 1.0
                    && (f64::from(d.x2) - f(&w["x2"])).abs() <= 1.0
                    && (f64::from(d.y2) - f(&w["y2"])).abs() <= 1.0
            });
            let twin = twin.unwrap_or_else(|| panic!("{file}: no row like {w}"));
            assert!(
                (f64::from(twin.score) - f(&w["score"])).abs() <= 1e-3,
                "{file}: {twin:?} vs {w}"
            );
        }
        let extra = rows.iter().filter(|d| f64::from(d.score) > floor).count();
        let kept = want
            .iter()
            .filter(|w| f(&w["score"]) > floor - 2e-3)
            .count();
        assert!(
            extra <= kept,
            "{file}: {extra} rows above {floor}, the reference {kept}"
        );
    }
    // The scikit-image PNGs at least.
    assert!(tight >= 7, "only {tight} photos compared tightly");
}

/// What the detector reports for a frame: the reference's NMS'd objects on the photos whose
/// pixels decode the same, boxes in the frame's own pixels.
#[test]
fn detections_are_in_frame_pixels_and_named() {
    let r = reference();
    let img = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file"] == "skimage/data/astronaut.png")
        .unwrap();
    let d = decode("skimage/data/astronaut.png");
    let found = detector()
        .detect(RgbImage {
            width: d.width,
            height: d.height,
            rgb: &d.rgb,
        })
        .unwrap();
    let human = &img["human"][0];
    assert_eq!(found[0].label, "person");
    assert_eq!(COCO[found[0].class], human["label"].as_str().unwrap());
    // Human's box is [x, y, w, h], truncated to whole pixels and not clipped to the frame;
    // ours is clipped.
    let b = human["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect::<Vec<_>>();
    let (w, h) = (f64::from(d.width), f64::from(d.height));
    let got = found[0].bbox;
    for (g, w) in [
        (got.x1, b[0].max(0.0)),
        (got.y1, b[1].max(0.0)),
        (got.x2, (b[0] + b[2]).min(w)),
        (got.y2, (b[1] + b[3]).min(h)),
    ] {
        assert!((f64::from(g) - w).abs() <= 1.5, "{got:?} vs {b:?}");
    }
    assert!(found.iter().all(|o| o.score >= detector().config.min_score));
    // Bad frames are errors, not panics.
    assert!(
        detector()
            .detect(RgbImage {
                width: 3,
                height: 3,
                rgb: &[0; 5]
            })
            .is_err()
    );
    for side in [1u32, 4000] {
        let rgb = vec![128u8; (side * side * 3) as usize];
        assert!(
            detector()
                .detect(RgbImage {
                    width: side,
                    height: side,
                    rgb: &rgb
                })
                .is_ok()
        );
    }
}

/// The same network on the wgpu device (llvmpipe in CI) gives the CPU's maps.
#[test]
fn wgpu_device_matches_the_cpu() {
    let device = percept::device::select(percept::device::DeviceChoice::Wgpu, 0).unwrap();
    let gpu = percept::vision::load_detector(&device).unwrap();
    let d = decode("skimage/data/chelsea.png");
    let input = Letterboxed::new(RgbImage {
        width: d.width,
        height: d.height,
        rgb: &d.rgb,
    })
    .unwrap();
    let (gh, gd) = gpu.maps(&input);
    let (ch, cd) = detector().maps(&input);
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let (h, dist) = (worst(&gh, &ch), worst(&gd, &cd));
    assert!(
        h < 1e-4 && dist < 1e-2,
        "heatmap diff {h}, distance diff {dist} px"
    );
    let top = |rows: Vec<encoders::vision::centernet::RawDetection>| {
        rows.iter().take(5).map(|r| r.class).collect::<Vec<_>>()
    };
    assert_eq!(top(gpu.raw(&input, 0.1)), top(detector().raw(&input, 0.1)));
}

/// The real model.json with a shard cut short, or with a weight's shape changed, is refused
/// with the file and the weight named.
#[test]
fn a_damaged_model_is_refused_by_name() {
    use encoders::tfjs::TfjsModel;
    let files = models::require_all("centernet").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = std::fs::read_to_string(&files[0]).unwrap();
    let bin = std::fs::read(&files[1]).unwrap();
    let model = dir.path().join("centernet.json");
    std::fs::write(&model, &json).unwrap();
    std::fs::write(dir.path().join("centernet.bin"), &bin[..bin.len() - 100]).unwrap();
    let err = TfjsModel::open(&model).unwrap_err().to_string();
    assert!(
        err.contains("centernet.json") && err.contains("but the group's shards hold"),
        "{err}"
    );

    std::fs::write(dir.path().join("centernet.bin"), &bin).unwrap();
    let stem = "\"name\":\"tower_0/MobilenetV3/Conv/Conv2D_weights\",\"shape\":[3,3,3,16]";
    assert!(
        json.replace(' ', "").contains(stem),
        "the manifest's layout changed"
    );
    let json = json
        .replace(' ', "")
        .replace(stem, &stem.replace("[3,3,3,16]", "[3,3,16,3]"));
    std::fs::write(&model, json).unwrap();
    let err = match encoders::vision::Detector::load(&model, &Device::flex()) {
        Ok(_) => panic!("a misshapen stem was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("tower_0/MobilenetV3/Conv/Conv2D_weights") && err.contains("[3, 3, 16, 3]"),
        "{err}"
    );
}
