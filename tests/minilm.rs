//! The MiniLM sentence encoder against its reference (`fixtures/reference/minilm/`): token
//! ids from Hugging Face `tokenizers` on the checkpoint's own tokenizer.json, embeddings
//! from an independent numpy forward pass that reproduces sentence-transformers' published
//! similarities for all-MiniLM-L6-v2; f32 throughout, so the embeddings agree but for the
//! order of sums.

mod common;

use burn::tensor::Device;
use encoders::text::{MiniLm, MiniLmConfig, SentenceEmbedding, WordPiece};

struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: SentenceEmbedding,
}

fn reference() -> Vec<Reference> {
    let path = common::reference_dir("minilm").join("reference.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Reference {
            text: s["text"].as_str().unwrap().to_string(),
            ids: s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect(),
            embedding: SentenceEmbedding(
                s["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            ),
        })
        .collect()
}

fn files() -> (std::path::PathBuf, std::path::PathBuf) {
    let find = |s: &str| percept::models::require_file("all-minilm-l6-v2", s).unwrap();
    (find("model.safetensors"), find("vocab.txt"))
}

#[test]
fn wordpiece_ids_equal_the_reference_tokenizer() {
    let vocab = WordPiece::load(&files().1).unwrap();
    for r in reference() {
        assert_eq!(vocab.encode(&r.text, 256), r.ids, "{:?}", r.text);
    }
}

#[test]
fn embeddings_match_the_reference_within_cosine_0_99999() {
    let (model, vocab) = files();
    let enc = MiniLm::load(&model, &vocab, MiniLmConfig::default(), &Device::flex()).unwrap();
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let got = enc.embed_all(&texts).unwrap();
    // One at a time is the same as all together.
    assert_eq!(enc.embed(&refs[4].text).unwrap(), got[4]);
    for (r, g) in refs.iter().zip(&got) {
        assert_eq!(g.0.len(), 384);
        let cos = g.similarity(&r.embedding);
        assert!(
            cos > 0.99999,
            "{:?}: cosine {cos} with the reference",
            r.text
        );
    }
    // sentence-transformers' published figures for this model, to three places.
    for (i, want) in [(1, 0.6946), (2, 0.9429), (3, 0.2569)] {
        let s = got[0].similarity(&got[i]);
        assert!(
            (s - want).abs() < 2e-3,
            "{:?}: {s}, published {want}",
            refs[i].text
        );
    }
    // Meaning, not words: the hand-washing question is nearer the toilets than the weather.
    assert!(got[4].similarity(&got[5]) > got[4].similarity(&got[3]) + 0.05);
}

#[test]
fn a_file_that_is_not_safetensors_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model.safetensors");
    std::fs::write(&bad, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    let err = MiniLm::load(&bad, &files().1, MiniLmConfig::default(), &Device::flex()).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
