//! The fuzz targets' smoke, on stable and in CI: every file reader run over its committed
//! seeds (`fuzz/seeds/<target>/`) and many deterministic mutations of them (bit flips,
//! boundary bytes, truncations, repeated and removed runs, the length fields of a header set
//! to extremes). A reader may refuse any of them; none may panic. The long runs are
//! libFuzzer's (`fuzz/run.sh`, README "Robustness").

use std::collections::HashMap;
use std::path::Path;

/// xorshift64*: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(7) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)],
            2 => v.truncate(at),
            3 if !v.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                let run = v[at..end].to_vec();
                v.splice(at..at, run);
            }
            4 if !v.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                v.drain(at..end);
            }
            // A 4- or 8-byte little-endian field set to an extreme: the lengths and counts
            // of every binary header here.
            5 if v.len() >= 8 => {
                let at = rng.below(v.len() - 7);
                let x = [u64::MAX, u32::MAX as u64, 1 << 40, 0, 1 << 31][rng.below(5)];
                let w = if rng.below(2) == 0 { 4 } else { 8 };
                v[at..at + w].copy_from_slice(&x.to_le_bytes()[..w]);
            }
            _ => v.insert(at.min(v.len()), rng.next() as u8),
        }
    }
    v
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// `read` over the seeds and `rounds` mutations of each; returns how many it accepted,
/// after checking that some were (the mutations reach past the first header check).
fn smoke(seeds: &[Vec<u8>], rounds: usize, mut read: impl FnMut(&[u8]) -> bool) -> usize {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for seed in seeds {
        accepted += read(seed) as usize;
        for _ in 0..rounds {
            accepted += read(&mutate(seed, &mut rng)) as usize;
        }
    }
    eprintln!(
        "{accepted} of {} inputs accepted",
        seeds.len() * (rounds + 1)
    );
    assert!(accepted > rounds / 100, "only {accepted} inputs accepted");
    accepted
}

const ROUNDS: usize = 20_000;

#[test]
fn ctranslate2_model_bin() {
    use encoders::ct2::Ct2Model;
    smoke(&seeds("ct2"), ROUNDS, |data| {
        let Ok(model) = Ct2Model::parse(data) else {
            return false;
        };
        for (name, v) in &model.variables {
            if v.shape.iter().product::<usize>() <= 1 << 16 {
                let _ = model.get(name, &v.shape);
                let _ = model.get_f16(name, &v.shape);
            }
            let _ = model.scalar(name);
        }
        true
    });
}

#[test]
fn onnx_graphs() {
    smoke(&seeds("onnx"), ROUNDS, |data| {
        encoders::onnx::float_tensors(data).is_ok()
    });
}

#[test]
fn legacy_torch_pickles() {
    smoke(&seeds("torch_pickle"), ROUNDS, |data| {
        encoders::torch_pickle::read_legacy_state_dict(data).is_ok()
    });
}

#[test]
fn tensorflow_js_models() {
    smoke(&seeds("tfjs"), ROUNDS, |data| {
        let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        let (json, shard) = data.split_at(split);
        let shards = HashMap::from([(
            "w.bin".to_string(),
            shard.get(1..).unwrap_or_default().to_vec(),
        )]);
        let Ok(model) = encoders::tfjs::TfjsModel::parse("fuzz.json", json, &shards) else {
            return false;
        };
        let names: Vec<String> = model.names().map(str::to_owned).collect();
        for name in names {
            let shape = model.weight(&name).unwrap().shape.clone();
            let _ = model.floats(&name, &shape);
        }
        true
    });
}

#[test]
fn wordpiece_text_and_vocabularies() {
    use encoders::text::WordPiece;
    let vocab =
        WordPiece::from_lines("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\n##a\n##b\nab\n,\n-\n").unwrap();
    smoke(&seeds("wordpiece"), ROUNDS, |data| {
        let text = String::from_utf8_lossy(data);
        for max in [2, 8, 256] {
            let ids = vocab.encode(&text, max);
            assert!((2..=max).contains(&ids.len()), "{text:?}");
            assert_eq!((ids[0], ids[ids.len() - 1]), (vocab.cls, vocab.sep));
            assert!(ids.iter().all(|&i| (i as usize) < vocab.len()));
        }
        // Accepted: the text read as a vocabulary ("[CLS]" and the others on lines).
        WordPiece::from_lines(&text).is_ok()
    });
}

/// A small GGUF v3 file: two metadata values (a string, an array of strings) and one F32
/// tensor of four values, aligned to 32.
fn tiny_gguf() -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    v.extend(2u64.to_le_bytes());
    string(&mut v, "general.architecture");
    v.extend(8u32.to_le_bytes());
    string(&mut v, "llama");
    string(&mut v, "tokenizer.ggml.tokens");
    v.extend(9u32.to_le_bytes());
    v.extend(8u32.to_le_bytes());
    v.extend(2u64.to_le_bytes());
    string(&mut v, "a");
    string(&mut v, "b");
    string(&mut v, "w");
    v.extend(1u32.to_le_bytes());
    v.extend(4u64.to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    for x in [1f32, 2.0, 3.0, 4.0] {
        v.extend(x.to_le_bytes());
    }
    v
}

#[test]
fn gguf_files() {
    let seed = tiny_gguf();
    let file = llm::gguf::GgufFile::from_bytes(seed.clone()).expect("the seed is a GGUF file");
    assert_eq!(file.tensors.len(), 1);
    smoke(&[seed], ROUNDS, |data| {
        let Ok(file) = llm::gguf::GgufFile::from_bytes(data.to_vec()) else {
            return false;
        };
        for info in file.tensors.clone() {
            let (info, bytes) = file
                .tensor_data(&info.name)
                .expect("listed tensors are readable");
            if info.n_elements() <= 1 << 16 {
                let mut out = vec![0f32; info.n_elements() as usize];
                llm::quant::dequantize(info.kind, bytes, &mut out);
            }
        }
        let _ = llm::ChatTemplate::from_gguf(&file);
        true
    });
}

// Text formats: mutated as bytes, read as (lossy) UTF-8.

fn text_seed(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn knowledge_files_toml_and_markdown() {
    use percept::kiosk::Knowledge;
    let seeds = [
        text_seed("fixtures/kiosk/museum.toml"),
        text_seed("fixtures/kiosk/museum.md"),
        text_seed("fixtures/kiosk/venues/library.toml"),
    ];
    smoke(&seeds, ROUNDS / 4, |data| {
        let text = String::from_utf8_lossy(data);
        let parsed = toml::from_str::<Knowledge>(&text)
            .map_err(anyhow::Error::from)
            .or_else(|_| Knowledge::from_markdown(&text));
        let Ok(k) = parsed else {
            return false;
        };
        let _ = (k.fact_list(), k.fallback_line());
        let _ = percept::kiosk::actions::Commands::new(k.commands.clone());
        true
    });
}

#[test]
fn graph_files() {
    use pipeline::spec::{KindInfo, parse};
    use std::collections::BTreeMap;
    let kinds = BTreeMap::from([
        (
            "text",
            KindInfo {
                inputs: vec![],
                outputs: vec![("text", "text")],
                required: vec!["path"],
            },
        ),
        (
            "jsonl",
            KindInfo {
                inputs: vec![("in", pipeline::spec::ANY)],
                outputs: vec![],
                required: vec![],
            },
        ),
    ]);
    smoke(
        &[text_seed("fixtures/graphs/echo.toml")],
        ROUNDS / 4,
        |data| parse(&String::from_utf8_lossy(data), &kinds).is_ok(),
    );
}

/// A fixture folder whose manifest and frame index are the mutated bytes (the frame files
/// are the real ones): opened and its frames listed.
#[test]
fn fixture_manifests_and_indexes() {
    use pipeline::fixture::Fixture;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/describe");
    let dir = tempfile::tempdir().unwrap();
    let camera = dir.path().join("camera");
    std::fs::create_dir(&camera).unwrap();
    for f in std::fs::read_dir(src.join("camera")).unwrap().take(3) {
        let f = f.unwrap();
        std::fs::copy(f.path(), camera.join(f.file_name())).unwrap();
    }
    let manifest = std::fs::read(src.join("manifest.json")).unwrap();
    let index: Vec<u8> = std::fs::read(src.join("camera.jsonl"))
        .unwrap()
        .split(|&b| b == b'\n')
        .take(3)
        .collect::<Vec<_>>()
        .join(&b'\n');
    let mut rng = Rng(7);
    let mut accepted = 0;
    for round in 0..2_000 {
        let (m, i) = match round % 3 {
            0 => (mutate(&manifest, &mut rng), index.clone()),
            _ => (manifest.clone(), mutate(&index, &mut rng)),
        };
        std::fs::write(dir.path().join("manifest.json"), &m).unwrap();
        std::fs::write(dir.path().join("camera.jsonl"), &i).unwrap();
        if let Ok(fx) = Fixture::open(dir.path()) {
            let names: Vec<String> = fx.streams().iter().map(|s| s.name().to_string()).collect();
            for name in names {
                accepted += fx.frames(&name).is_ok() as usize;
                let _ = fx.texts(&name);
            }
        }
    }
    assert!(accepted > 20, "{accepted}");
}

/// Camera frames of every pixel format with mutated bytes and sizes: converted or
/// refused, never a panic or an out-of-bounds read.
#[test]
fn camera_frames_yuyv_mjpeg_rgb() {
    use pipeline::frame::{FourCc, RawFrame};
    let jpeg =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/describe/camera"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "mjpg" || e == "jpg"))
            .map(|p| std::fs::read(p).unwrap())
            .expect("a JPEG frame in the describe fixture");
    let mut rng = Rng(11);
    let mut converted = 0;
    for round in 0..3_000 {
        let (fourcc, seed) = match round % 3 {
            0 => (FourCc::Mjpg, jpeg.clone()),
            1 => (FourCc::Yuyv, vec![128u8; 8 * 4 * 2]),
            _ => (FourCc::Rgb3, vec![7u8; 8 * 4 * 3]),
        };
        let (width, height) = match rng.below(4) {
            0 => (8, 4),
            1 => (rng.below(64) as u32, rng.below(64) as u32),
            2 => (u32::MAX, 2),
            _ => (640, 427),
        };
        let raw = RawFrame {
            width,
            height,
            fourcc,
            bytes: mutate(&seed, &mut rng),
        };
        converted += raw.to_rgb().is_ok() as usize;
    }
    assert!(converted > 30, "{converted}");
}

/// Audio files (WAV from the kiosk fixture, the crafted MP3 of fixtures/bad) with mutated
/// bytes: decoded or refused with an error.
#[test]
fn audio_files() {
    use pipeline::media_file::AudioFile;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wav = std::fs::read(root.join("fixtures/kiosk/visit/mic.wav")).unwrap();
    wav.truncate(44 + 16_000 * 2 / 10);
    let seeds = [
        wav,
        std::fs::read(root.join("fixtures/bad/id3v24-restrictions.mp3")).unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(13);
    let mut decoded = 0;
    for round in 0..1_500 {
        let seed = &seeds[round % 2];
        let (path, bytes) = match round % 2 {
            0 => (dir.path().join("a.wav"), mutate(seed, &mut rng)),
            _ => (dir.path().join("a.mp3"), mutate(seed, &mut rng)),
        };
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(file) = AudioFile::open(&path) {
            decoded += file.read_all().is_ok() as usize;
        }
    }
    assert!(decoded > 15, "{decoded}");
}

/// The libFuzzer targets themselves (`fuzz/`, their own workspace, sanitizer builds without
/// burn): every one builds and runs 20 s from its seeds without a crash, so a target that
/// rots (a reader's source file gaining a dependency the fuzz crate lacks) or a crash that
/// returns fails the tests. Builds under `$CARGO_TARGET_DIR/fuzz` when that is set (CI's
/// cached target directory), else in `fuzz/target`.
#[test]
fn libfuzzer_targets_build_and_run_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut run = std::process::Command::new(root.join("fuzz/run.sh"));
    run.env("SECONDS_EACH", "20");
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        run.env("FUZZ_TARGET_DIR", Path::new(&dir).join("fuzz"));
    }
    let out = run
        .output()
        .expect("fuzz/run.sh runs (cargo-fuzz is installed by scripts/setup)");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per target of fuzz/Cargo.toml, each with its executions.
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
    let targets = manifest.matches("[[bin]]").count();
    let runs = report.lines().filter(|l| l.contains("executions")).count();
    assert!(targets >= 12 && runs == targets, "{report}");
}
