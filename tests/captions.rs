//! Grounded captions on every photo this repository has and every one scikit-image ships
//! (pulled by `percept models pull`): the whole describe path in process (classifier,
//! detector, fusion, the language model, the grounding check).
//!
//! Each caption must name the scene's subject (the most confident detection; with none, the
//! most confident label above the mention threshold; with neither, say that nothing clear
//! is in view), and name no object the scene does not hold. The second is checked twice:
//! with the project's object vocabulary (COCO names, ImageNet lemmas, plurals, synonyms),
//! and independently of it with a plain word search for every COCO name.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use burn::tensor::Device;
use encoders::vision::detect::COCO;
use encoders::vision::{Detector, Scene, VisionEncoder};
use fusion::prompt::{FramedPrompt, PrefixCache};
use llm::{GenerateParams, Llm, SamplingParams};
use percept::describe::caption::Vocabulary;
use percept::describe::graph::{ASK, Caption, Captioner, SYSTEM};
use percept::models;

struct Models {
    llm: Llm,
    cache: PrefixCache,
    vision: VisionEncoder,
    detector: Detector,
    vocabulary: Vocabulary,
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let device = Device::flex();
        let path = models::require("smollm2-135m-instruct").unwrap();
        let llm = Llm::load(path, &device, |_, _| {}).unwrap();
        let prompt = FramedPrompt::chat(&llm, SYSTEM, "", ASK).unwrap();
        let cache = PrefixCache::new(&llm, &prompt).unwrap();
        let vision = percept::vision::load(&device).unwrap();
        let detector = percept::vision::load_detector(&device).unwrap();
        let vocabulary = Vocabulary::new(vision.labels());
        Models {
            llm,
            cache,
            vision,
            detector,
            vocabulary,
        }
    })
}

fn caption(scene: &Scene) -> Caption {
    let m = models();
    let params = GenerateParams {
        max_tokens: 40,
        sampling: SamplingParams::default(),
        stop: vec!["\n".into()],
    };
    let captioner = Captioner {
        llm: &m.llm,
        cache: &m.cache,
        params: &params,
        vocabulary: &m.vocabulary,
        started: Instant::now(),
    };
    captioner.caption(0, Instant::now(), scene).unwrap()
}

fn scene_of(path: &std::path::Path) -> Scene {
    let frame = pipeline::media_file::load_image(path).unwrap();
    let m = models();
    percept::vision::encode_frame(&m.vision, Some(&m.detector), &frame).unwrap()
}

/// Every photo: this repository's (fixtures/images, the describe fixture's frames) and
/// scikit-image's.
fn photos() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut all = Vec::new();
    for dir in [
        root.join("images"),
        root.join("describe/camera"),
        models::model_dir("skimage-photos"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| ["png", "jpg", "jpeg", "mjpg"].contains(&e.to_str().unwrap()))
            })
            .collect();
        files.sort();
        all.extend(files);
    }
    all
}

/// `text` holds `word` as a whole word (or words).
fn has_word(text: &str, word: &str) -> bool {
    let text = format!(
        " {} ",
        text.to_lowercase()
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    text.contains(&format!(" {word} "))
}

#[test]
fn every_caption_names_its_subject_and_nothing_unseen() {
    let m = models();
    let photos = photos();
    assert!(photos.len() >= 30, "{} photos", photos.len());
    let (mut from_model, mut unseen_words) = (0, Vec::new());
    for path in &photos {
        let scene = scene_of(path);
        let c = caption(&scene);
        let text = &c.caption;
        let name = path.file_name().unwrap().to_string_lossy();
        eprintln!("{name}: {text} [{}]", c.grounding);
        from_model += usize::from(c.grounding == "model");
        // The subject.
        match m.vocabulary.subject(&scene) {
            Some((subject, words)) => assert!(
                words.iter().any(|w| has_word(text, w)),
                "{name}: '{text}' does not name {subject}"
            ),
            None => assert_eq!(text, "Nothing clear is in view.", "{name}"),
        }
        // Nothing unseen, by the vocabulary ...
        let allowed = m.vocabulary.allowed(&scene);
        for w in m.vocabulary.object_words(text) {
            if !allowed.contains(&w) {
                unseen_words.push(format!("{name}: '{w}' in '{text}'"));
            }
        }
        // ... and by a plain search for every COCO name the scene did not detect (unless a
        // confident classifier label holds that word, as "tiger cat" holds "cat").
        let labels: Vec<String> = scene
            .whole
            .labels
            .iter()
            .filter(|l| l.prob >= fusion::vision::MENTION)
            .map(|l| l.name.to_lowercase())
            .collect();
        for coco in COCO {
            let seen = scene.objects.iter().any(|o| o.label == coco)
                || labels.iter().any(|l| has_word(l, coco));
            if !seen && has_word(text, coco) {
                unseen_words.push(format!("{name}: COCO '{coco}' in '{text}'"));
            }
        }
    }
    assert!(unseen_words.is_empty(), "{unseen_words:#?}");
    eprintln!(
        "{from_model} of {} captions by the model, the rest from the scene",
        photos.len()
    );
}

#[test]
fn the_test_photos_are_captioned_as_what_they_show() {
    let skimage = models::model_dir("skimage-photos");
    for (photo, words) in [
        (
            "astronaut.png",
            &["person", "woman", "astronaut", "people"][..],
        ),
        ("chelsea.png", &["cat", "kitten"]),
        ("coffee.png", &["cup", "coffee", "mug", "espresso"]),
    ] {
        let c = caption(&scene_of(&skimage.join(photo)));
        assert!(
            words.iter().any(|w| has_word(&c.caption, w)),
            "{photo}: {}",
            c.caption
        );
    }
}

#[test]
fn a_scene_with_nothing_clear_says_so_without_asking_the_model() {
    let m = models();
    let mut scene = m.vision.encode_input(vec![0.0; 3 * 224 * 224]);
    scene.objects.clear();
    scene.whole.labels.iter_mut().for_each(|l| l.prob = 0.01);
    let c = caption(&scene);
    assert_eq!(c.caption, "Nothing clear is in view.");
    assert_eq!(c.generated, None);
}

/// A caption naming what is not in the scene is replaced by the scene's own.
#[test]
fn an_invented_object_is_caught_and_replaced() {
    let m = models();
    let scene = scene_of(&models::model_dir("skimage-photos").join("coffee.png"));
    let (text, why) = m
        .vocabulary
        .ground("A cup of coffee next to a laptop and two dogs.", &scene);
    assert!(
        why.is_some_and(|w| w.to_string().contains("laptop")),
        "{text}"
    );
    assert!(
        has_word(&text, "cup") && !has_word(&text, "laptop"),
        "{text}"
    );
    let (_, why) = m.vocabulary.ground("Two cups of espresso.", &scene);
    assert!(why.is_some(), "two cups when one was detected");
    let (text, why) = m
        .vocabulary
        .ground("A cup of espresso on a saucer.", &scene);
    assert_eq!(
        (text.as_str(), why),
        ("A cup of espresso on a saucer.", None)
    );
}
