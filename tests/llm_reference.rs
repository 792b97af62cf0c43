//! The language model against llama.cpp's own outputs on the same GGUF file (figures copied
//! into `fixtures/reference/smollm2-135m-q4_1/`, see its README): tokenization, logits after
//! a chat prompt, and greedy decoding.
//!
//! Needs the model in the cache (`percept models pull`, which the README's test command runs).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Device;
use llm::{GenerateParams, Llm, Message, Role, SamplingParams, Segment, Session};

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference/smollm2-135m-q4_1")
}

fn read_ref(name: &str) -> String {
    std::fs::read_to_string(reference_dir().join(name)).unwrap()
}

fn model_path() -> PathBuf {
    percept::models::require("smollm2-135m-instruct").expect("the model is needed for this test")
}

fn flex_model() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| Llm::load(model_path(), &Device::flex(), |_, _| {}).unwrap())
}

/// The value after `key` on its line of a reference text file.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key} in reference"))
}

fn ids(text: &str, key: &str) -> Vec<u32> {
    field(text, key)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

/// `id:logit` pairs.
fn pairs(s: &str) -> Vec<(u32, f32)> {
    s.split_whitespace()
        .map(|p| {
            let (id, l) = p.split_once(':').unwrap();
            (id.parse().unwrap(), l.parse().unwrap())
        })
        .collect()
}

fn reference_logits(name: &str) -> Vec<f32> {
    std::fs::read(reference_dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

fn top(logits: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(n);
    order
}

#[test]
fn chat_template_renders_the_reference_prompt() {
    let llm = flex_model();
    let prompt = llm
        .chat_prompt(&[Message::new(Role::User, "What is the capital of France?")])
        .unwrap();
    assert_eq!(prompt, read_ref("chat_prompt.txt"));
}

#[test]
fn tokenization_matches_llama_cpp() {
    let tok = &flex_model().tokenizer;
    let chat = read_ref("chat_prompt.txt");
    let expected = ids(&read_ref("greedy_chat.txt"), "PROMPT_IDS");
    assert_eq!(expected.len(), 37);
    assert_eq!(tok.encode(&chat, true).unwrap(), expected);
    // The plain sentence of the reference README.
    assert_eq!(
        tok.encode("The capital of France is Paris. Hello, world! 12345", true)
            .unwrap(),
        vec![
            504, 3575, 282, 4649, 314, 7042, 30, 38699, 28, 905, 17, 216, 33, 34, 35, 36, 37
        ]
    );
    assert_eq!(tok.decode(&expected), chat);
}

/// The largest difference between `ours` and `reference` over the reference's top-10 ids.
fn worst_top10(ours: &[f32], reference: &[f32]) -> f32 {
    top(reference, 10)
        .into_iter()
        .map(|i| (ours[i] - reference[i]).abs())
        .fold(0f32, f32::max)
}

/// llama.cpp's top-10 and ours share at least 8 ids, and each of llama.cpp's top-10 logits
/// is within `tolerance` of ours for the same id.
fn assert_logits_match(ours: &[f32], reference: &[f32], tolerance: f32) {
    assert_eq!(ours.len(), reference.len());
    let (a, b) = (top(ours, 10), top(reference, 10));
    let shared = a
        .iter()
        .collect::<HashSet<_>>()
        .intersection(&b.iter().collect())
        .count();
    assert!(
        shared >= 8,
        "top-10 sets share {shared}: ours {a:?}, llama.cpp {b:?}"
    );
    // Printed for the record (`--nocapture`): the margin left under the bound.
    eprintln!(
        "worst top-10 difference {:.3} (bound {tolerance})",
        worst_top10(ours, reference)
    );
    for &id in &b {
        let diff = (ours[id] - reference[id]).abs();
        assert!(
            diff <= tolerance,
            "token {id}: ours {} vs llama.cpp {} ({diff})",
            ours[id],
            reference[id]
        );
    }
}

#[test]
fn chat_prompt_logits_match_llama_cpp_on_flex() {
    let ours = flex_model().logits(&read_ref("chat_prompt.txt")).unwrap();
    let reference = reference_logits("logits_chat_prompt.f32le");
    // The figures file agrees with the raw logits file.
    let listed = pairs(field(&read_ref("greedy_chat.txt"), "TOP10_AFTER_PROMPT"));
    assert_eq!(
        listed.iter().map(|p| p.0 as usize).collect::<Vec<_>>(),
        top(&reference, 10)
    );
    assert_logits_match(&ours, &reference, 0.5);
}

/// The ndarray device runs the same CPU kernels, but its norms and attention sum in
/// another order: one more draw from the chaotic spread (see [`nudged_mean`]; with the
/// interleaved kernels its single run landed at 0.501), so it is held, as the GPU is, by
/// the mean of nudged runs.
#[test]
fn chat_prompt_logits_match_llama_cpp_on_ndarray() {
    #[allow(deprecated)]
    let llm = Llm::load(model_path(), &Device::ndarray(), |_, _| {}).unwrap();
    let ours = nudged_mean(&llm, 8);
    assert_logits_match(&ours, &reference_logits("logits_chat_prompt.f32le"), 0.5);
    assert_logits_match(&ours, flex_nudged_mean(), 0.5);
}

/// The chat prompt's logits averaged over `runs` runs whose input embeddings are nudged by
/// up to half a part in a million (the first run is not nudged).
///
/// Why: the 8-bit rounding of activations before each matmul (llama.cpp's, which we
/// reproduce) makes one run's logits chaotic. A nudge far below f32's resolution of the
/// sums flips a few roundings, the flips cascade through 30 layers, and the worst of the
/// top-10 lands anywhere from 0.23 to 0.61 from llama.cpp's on the CPU kernels (12 nudges,
/// measured). A device whose float sums run in another order (any GPU) gives one more draw
/// from that spread, so one run cannot be held to 0.5; the mean of the draws can (on the
/// CPU 0.19 with 12 runs, 0.22 with the 8 used here), and it still moves if the arithmetic
/// changes: without the rounding every top-10 logit sits 0.37 to 0.68 above llama.cpp's.
fn nudged_mean(llm: &Llm, runs: u64) -> Vec<f32> {
    let mut mean = vec![0f32; llm.model.embedding.table().rows()];
    for run in 0..runs {
        for (m, l) in mean.iter_mut().zip(nudged_logits(llm, run)) {
            *m += l / runs as f32;
        }
    }
    mean
}

/// The chat prompt's logits with its embeddings nudged by the `run`th pseudo-random
/// pattern (run 0: none).
fn nudged_logits(llm: &Llm, run: u64) -> Vec<f32> {
    let ids = llm
        .tokenizer
        .encode(&read_ref("chat_prompt.txt"), true)
        .unwrap();
    let mut rows = llm.model.embedding.lookup(&ids);
    let mut seed = run;
    for v in rows.iter_mut().filter(|_| run > 0) {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        *v *= 1.0 + 1e-6 * r;
    }
    llm.prefill(&mut Session::new(), &[Segment::Embeddings(rows)])
        .unwrap()
}

/// [`nudged_mean`] of 8 runs on the CPU kernels, computed once for the tests that use it.
fn flex_nudged_mean() -> &'static [f32] {
    static MEAN: OnceLock<Vec<f32>> = OnceLock::new();
    MEAN.get_or_init(|| nudged_mean(flex_model(), 8))
}

#[test]
fn nudged_runs_spread_and_their_mean_matches_llama_cpp() {
    let reference = reference_logits("logits_chat_prompt.f32le");
    let draws: Vec<f32> = (1..5)
        .map(|run| worst_top10(&nudged_logits(flex_model(), run), &reference))
        .collect();
    let spread =
        draws.iter().cloned().fold(0f32, f32::max) - draws.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.05, "nudges should move the logits: {draws:?}");
    assert_logits_match(flex_nudged_mean(), &reference, 0.5);
}

/// On the GPU path (dense f32 weights, activations rounded as the CPU kernels do), compared
/// with llama.cpp and with the CPU kernels, as means over nudged runs (see [`nudged_mean`]).
/// Without a GPU this runs on Mesa's llvmpipe Vulkan device, which `scripts/setup` installs.
#[test]
fn chat_prompt_logits_match_llama_cpp_on_wgpu() {
    let device = percept::device::select(percept::device::DeviceChoice::Wgpu, 0)
        .expect("a Vulkan device (mesa-vulkan-drivers gives a software one)");
    let llm = Llm::load(model_path(), &device, |_, _| {}).unwrap();
    let gpu = nudged_mean(&llm, 8);
    assert_logits_match(&gpu, &reference_logits("logits_chat_prompt.f32le"), 0.5);
    assert_logits_match(&gpu, flex_nudged_mean(), 0.5);
}

/// The 0.5 bound is for the chat prompt. After this 5-token prompt with no BOS,
/// every implementation we tried (ours, and numpy in f64 with and without llama.cpp's 8-bit
/// activations and f16 K/V) sits 0.6 to 0.9 below llama.cpp on average while agreeing on the
/// order: the bound here is what we can show, not the chat prompt's.
#[test]
fn plain_prompt_logits_match_llama_cpp() {
    let ours = flex_model().logits("The capital of France is").unwrap();
    assert_logits_match(&ours, &reference_logits("logits_plain_prompt.f32le"), 0.75);
}

#[test]
fn greedy_decoding_matches_llama_cpp_up_to_the_first_near_tie() {
    let reference = read_ref("greedy_plain.txt");
    let expected = ids(&reference, "GEN_IDS");
    // Compare only up to the first step where llama.cpp's own top-2 margin is under 0.15.
    let limit = (0..expected.len())
        .find(|&s| {
            let top5 = pairs(field(&reference, &format!("STEP {s} top5")));
            top5[0].1 - top5[1].1 < 0.15
        })
        .unwrap_or(expected.len());
    assert!(limit >= 10, "the reference allows only {limit} steps");
    let llm = flex_model();
    let prompt = ids(&reference, "PROMPT_IDS");
    let params = GenerateParams {
        max_tokens: limit,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
    };
    let generation = llm
        .generate(
            &mut Session::new(),
            &[Segment::Tokens(prompt)],
            &params,
            |_| {},
        )
        .unwrap();
    assert_eq!(generation.tokens, expected[..limit]);
    assert!(
        generation.text.starts_with(" Paris."),
        "{:?}",
        generation.text
    );
}

#[test]
fn embedding_segments_equal_their_tokens() {
    // Feeding a token's embedding row must give the same logits as feeding the token:
    // this is the path fusion uses for encoder outputs.
    let llm = flex_model();
    let ids = llm
        .tokenizer
        .encode("The capital of France is", false)
        .unwrap();
    let by_tokens = llm
        .prefill(&mut Session::new(), &[Segment::Tokens(ids.clone())])
        .unwrap();
    let rows = llm.model.embedding.lookup(&ids[2..]);
    let mixed = llm
        .prefill(
            &mut Session::new(),
            &[
                Segment::Tokens(ids[..2].to_vec()),
                Segment::Embeddings(rows),
            ],
        )
        .unwrap();
    let diff = max_abs_diff(&by_tokens, &mixed);
    assert!(diff < 1e-3, "max difference {diff}");
}

#[test]
fn kv_cache_prefix_reuse_gives_the_same_logits() {
    let llm = flex_model();
    let ids = llm
        .tokenizer
        .encode("The capital of France is", false)
        .unwrap();
    let whole = llm
        .prefill(&mut Session::new(), &[Segment::Tokens(ids.clone())])
        .unwrap();
    let mut session = Session::new();
    llm.prefill(&mut session, &[Segment::Tokens(ids[..3].to_vec())])
        .unwrap();
    llm.prefill(&mut session, &[Segment::Tokens(vec![999, 1000])])
        .unwrap();
    session.cache.truncate(3);
    let resumed = llm
        .prefill(&mut session, &[Segment::Tokens(ids[3..].to_vec())])
        .unwrap();
    let diff = max_abs_diff(&whole, &resumed);
    assert!(diff < 1e-3, "max difference {diff}");
}

#[test]
fn bad_prompts_are_clear_errors() {
    let llm = flex_model();
    let err = llm
        .prefill(&mut Session::new(), &[Segment::Tokens(vec![49152])])
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = llm
        .prefill(&mut Session::new(), &[Segment::Embeddings(vec![0.0; 100])])
        .unwrap_err();
    assert!(err.to_string().contains("width 576"), "{err}");
    let err = llm.prefill(&mut Session::new(), &[]).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let too_long = vec![504; llm.model.context_length() + 1];
    let err = llm
        .prefill(&mut Session::new(), &[Segment::Tokens(too_long)])
        .unwrap_err();
    assert!(err.to_string().contains("context holds 8192"), "{err}");
}

/// `hidden_state` is the state the output head reads: through `lm_head` it gives the
/// logits `prefill` returns for the same prompt.
#[test]
fn the_hidden_state_is_what_the_logits_are_read_from() {
    let llm = flex_model();
    let ids = llm
        .tokenizer
        .encode("The cafe is on the ground floor.", false)
        .unwrap();
    let prompt = [Segment::Tokens(ids)];
    let hidden = llm.hidden_state(&mut Session::new(), &prompt).unwrap();
    assert_eq!(hidden.len(), llm.model.d_model());
    let h = burn::tensor::Tensor::<2>::from_data(
        burn::tensor::TensorData::new(hidden, [1, llm.model.d_model()]),
        &llm.device,
    );
    let from_hidden = llm
        .model
        .lm_head
        .forward(h)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let logits = llm.prefill(&mut Session::new(), &prompt).unwrap();
    assert!(max_abs_diff(&from_hidden, &logits) < 1e-4);
    // And it is not any fixed vector: another sentence's state differs.
    let other = llm
        .tokenizer
        .encode("Trains leave from platform 2.", false)
        .unwrap();
    let other = llm
        .hidden_state(&mut Session::new(), &[Segment::Tokens(other)])
        .unwrap();
    let h2 = llm.hidden_state(&mut Session::new(), &prompt).unwrap();
    assert!(max_abs_diff(&other, &h2) > 1e-2);
}
