//! A loaded language model and what one does with it: turn a prompt of segments into
//! logits, and generate text token by token, streaming it as it comes.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};

use crate::chat::{ChatError, ChatTemplate, Message};
use crate::gguf::{GgufError, GgufFile};
use crate::gguf_loader::{LoadError, load_llama};
use crate::grammar::{Grammar, advance_bytes};
use crate::llama::{KvCache, Llama};
use crate::sampling::{Sampler, SamplingError, SamplingParams};
use crate::tokenizer::{StreamDecoder, TokenId, Tokenizer, TokenizerError};

/// Positions processed per forward pass of a long prompt: bounds the attention matrix.
const PREFILL_CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(
        "the prompt needs {needed} positions but the model's context holds {context} \
         ({cached} already used); shorten the prompt"
    )]
    ContextOverflow {
        needed: usize,
        cached: usize,
        context: usize,
    },
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: TokenId, vocab: usize },
    #[error("embedding segment has {len} values, not a whole number of rows of width {width}")]
    EmbeddingWidth { len: usize, width: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
}

/// One piece of a prompt: token ids, or rows already in the model's embedding space
/// (what an encoder's projector produces).
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Tokens(Vec<TokenId>),
    /// Row-major `[rows, d_model]` values.
    Embeddings(Vec<f32>),
}

/// What generation does besides sampling.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends when the text contains one of these; it is not part of the output.
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfTurn,
    StopString,
    MaxTokens,
    ContextFull,
    /// The grammar's output is complete and nothing may follow.
    Complete,
    /// The grammar allowed no token the vocabulary has (a grammar that cannot be tokenized).
    DeadEnd,
}

/// The outcome of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<TokenId>,
    pub stop: StopReason,
    pub prompt_positions: usize,
    pub prompt_time: Duration,
    pub generate_time: Duration,
}

/// Model state across calls: the KV cache and the tokens it holds.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub cache: KvCache,
    /// Token ids fed so far (embedding rows count as no token), for the repetition penalty.
    pub history: Vec<TokenId>,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A language model with its tokenizer and chat template, on one device.
pub struct Llm {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub device: Device,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("device", &self.device).finish()
    }
}

impl Llm {
    /// Loads a GGUF model; `progress(done, total)` reports the layers loaded.
    pub fn load(
        path: impl AsRef<Path>,
        device: &Device,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, LlmError> {
        let gguf = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let template = match gguf.get("tokenizer.chat_template") {
            Some(_) => Some(ChatTemplate::from_gguf(&gguf)?),
            None => None,
        };
        let model = load_llama(&gguf, device, progress)?;
        Ok(Llm {
            model,
            tokenizer,
            template,
            device: device.clone(),
        })
    }

    /// The chat template's rendering of a conversation, ready for the assistant's turn.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<String, LlmError> {
        match &self.template {
            Some(t) => Ok(t.render(messages, true)?),
            None => Err(ChatError::Gguf(GgufError::Metadata {
                key: "tokenizer.chat_template".into(),
                reason: "missing: this model has no chat template".into(),
            })
            .into()),
        }
    }

    /// Embedding rows for a prompt, checked against the vocabulary and model width.
    pub fn embed(&self, segments: &[Segment]) -> Result<Vec<f32>, LlmError> {
        let (vocab, width) = (self.model.vocab_size(), self.model.d_model());
        let mut rows = Vec::new();
        for segment in segments {
            match segment {
                Segment::Tokens(ids) => {
                    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                        return Err(LlmError::TokenOutOfRange { id, vocab });
                    }
                    rows.extend(self.model.embedding.lookup(ids));
                }
                Segment::Embeddings(values) => {
                    if values.len() % width != 0 {
                        return Err(LlmError::EmbeddingWidth {
                            len: values.len(),
                            width,
                        });
                    }
                    rows.extend_from_slice(values);
                }
            }
        }
        Ok(rows)
    }

    /// Feeds a prompt after what `session` holds and returns the logits that follow it.
    pub fn prefill(
        &self,
        session: &mut Session,
        segments: &[Segment],
    ) -> Result<Vec<f32>, LlmError> {
        self.feed(session, segments, Llama::forward)
    }

    /// Feeds a prompt after what `session` holds and returns the last position's hidden
    /// state (normalised, before the output head): [`Llama::forward_hidden`].
    pub fn hidden_state(
        &self,
        session: &mut Session,
        segments: &[Segment],
    ) -> Result<Vec<f32>, LlmError> {
        self.feed(session, segments, Llama::forward_hidden)
    }

    /// Runs a prompt through the model in chunks after what `session` holds, recording its
    /// tokens, and returns what `last` reads from the final chunk.
    fn feed(
        &self,
        session: &mut Session,
        segments: &[Segment],
        last: impl Fn(&Llama, Tensor<3>, &mut KvCache) -> Tensor<2> + Sync,
    ) -> Result<Vec<f32>, LlmError> {
        let rows = self.prompt_rows(session, segments)?;
        let d = self.model.d_model();
        let mut out = None;
        for chunk in rows.chunks(PREFILL_CHUNK * d) {
            let x = Tensor::<3>::from_data(
                TensorData::new(chunk.to_vec(), [1, chunk.len() / d, d]),
                &self.device,
            );
            // On a pool thread, the kernels' parallel loops start without waking the caller
            // through a latch for every matrix product.
            out = Some(rayon::scope(|_| last(&self.model, x, &mut session.cache)));
        }
        for segment in segments {
            if let Segment::Tokens(ids) = segment {
                session.history.extend_from_slice(ids);
            }
        }
        Ok(to_vec(out.expect("at least one chunk")))
    }

    /// A prompt's embedding rows, an error when it is empty or does not fit after what
    /// `session` holds.
    fn prompt_rows(&self, session: &Session, segments: &[Segment]) -> Result<Vec<f32>, LlmError> {
        let rows = self.embed(segments)?;
        let n = rows.len() / self.model.d_model();
        if n == 0 {
            return Err(LlmError::EmptyPrompt);
        }
        self.check_room(session, n)?;
        Ok(rows)
    }

    /// An error unless `n` more positions fit in the context after what `session` holds.
    fn check_room(&self, session: &Session, n: usize) -> Result<(), LlmError> {
        let (cached, context) = (session.cache.len(), self.model.context_length());
        if cached + n > context {
            return Err(LlmError::ContextOverflow {
                needed: n,
                cached,
                context,
            });
        }
        Ok(())
    }

    /// `ln P(continuation | session, prompt)`: the sum of each continuation token's log
    /// probability, for ranking hypotheses by how well they explain a text.
    pub fn log_likelihood(
        &self,
        session: &mut Session,
        prompt: &[Segment],
        continuation: &[TokenId],
    ) -> Result<f32, LlmError> {
        let logits = self.prefill(session, prompt)?;
        self.log_likelihood_after(session, logits, continuation)
    }

    /// [`Llm::log_likelihood`] once the prompt is in `session` and `logits` follow it (so
    /// that several continuations of one prompt pay for it once).
    pub fn log_likelihood_after(
        &self,
        session: &mut Session,
        logits: Vec<f32>,
        continuation: &[TokenId],
    ) -> Result<f32, LlmError> {
        let mut logits = vec![logits];
        if continuation.len() > 1 {
            let rows = self.embed(&[Segment::Tokens(
                continuation[..continuation.len() - 1].to_vec(),
            )])?;
            let d = self.model.d_model();
            let n = rows.len() / d;
            self.check_room(session, n)?;
            let x = Tensor::<3>::from_data(TensorData::new(rows, [1, n, d]), &self.device);
            let all = to_vec(rayon::scope(|_| {
                self.model.forward_all(x, &mut session.cache)
            }));
            logits.extend(all.chunks(self.model.vocab_size()).map(<[f32]>::to_vec));
        }
        let mut total = 0.0;
        for (row, &id) in logits.iter().zip(continuation) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|l| (l - max).exp()).sum();
            let l = row.get(id as usize).ok_or(LlmError::TokenOutOfRange {
                id,
                vocab: row.len(),
            })?;
            total += l - max - z.ln();
        }
        Ok(total)
    }

    /// Logits after a raw prompt (no template), from a fresh session.
    pub fn logits(&self, prompt: &str) -> Result<Vec<f32>, LlmError> {
        let ids = self.tokenizer.encode(prompt, true)?;
        self.prefill(&mut Session::new(), &[Segment::Tokens(ids)])
    }

    /// Generates after `prompt`, calling `on_text` with each complete piece of text as it
    /// is produced. The session keeps the prompt and the answer.
    pub fn generate(
        &self,
        session: &mut Session,
        prompt: &[Segment],
        params: &GenerateParams,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, LlmError> {
        self.generate_constrained(session, prompt, params, &FreeText, on_text)
    }

    /// [`Llm::generate`] where each token must keep the output inside `grammar`: the logits
    /// of every other token are masked out before sampling, and end-of-turn is allowed only
    /// where the grammar accepts.
    pub fn generate_constrained<G: Grammar>(
        &self,
        session: &mut Session,
        prompt: &[Segment],
        params: &GenerateParams,
        grammar: &G,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation, LlmError> {
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let started = Instant::now();
        let before = session.cache.len();
        let mut logits = self.prefill(session, prompt)?;
        let prompt_positions = session.cache.len() - before;
        let prompt_time = started.elapsed();
        let started = Instant::now();

        let mut decoder = StreamDecoder::default();
        let mut stops = StopMatcher::new(&params.stop);
        let mut tokens = Vec::new();
        let mut state = grammar.start();
        let context = self.model.context_length();
        let stop = loop {
            if tokens.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if grammar.finished(&state) {
                break StopReason::Complete;
            }
            let allowed =
                (!grammar.is_free(&state)).then(|| self.mask(grammar, &state, &mut logits));
            let id = sampler.sample(&mut logits, &session.history);
            if self.tokenizer.eog.contains(&id) {
                break StopReason::EndOfTurn;
            }
            state = match &allowed {
                Some(allowed) => match allowed.iter().find(|(t, _)| *t == id) {
                    Some((_, next)) => next.clone(),
                    None => break StopReason::DeadEnd,
                },
                None => {
                    advance_bytes(grammar, &state, &self.tokenizer.token_bytes(id)).unwrap_or(state)
                }
            };
            tokens.push(id);
            let piece = decoder.push(&self.tokenizer, id);
            if stops.push(&piece, &mut on_text) {
                break StopReason::StopString;
            }
            if session.cache.len() >= context {
                break StopReason::ContextFull;
            }
            logits = self.prefill(session, &[Segment::Tokens(vec![id])])?;
        };
        if stop != StopReason::StopString {
            let rest = decoder.finish();
            stops.push(&rest, &mut on_text);
            stops.flush(&mut on_text);
        }
        Ok(Generation {
            text: stops.text,
            tokens,
            stop,
            prompt_positions,
            prompt_time,
            generate_time: started.elapsed(),
        })
    }

    /// Sets every logit the grammar does not allow from `state` to -inf (end-of-turn stays
    /// only where it accepts); returns the allowed tokens with their next states.
    fn mask<G: Grammar>(
        &self,
        grammar: &G,
        state: &G::State,
        logits: &mut [f32],
    ) -> Vec<(TokenId, G::State)> {
        let allowed = self.tokenizer.trie().allowed(grammar, state);
        let mut keep = vec![false; logits.len()];
        for &(id, _) in &allowed {
            if let Some(k) = keep.get_mut(id as usize) {
                *k = true;
            }
        }
        if grammar.accepts(state) {
            for &id in &self.tokenizer.eog {
                if let Some(k) = keep.get_mut(id as usize) {
                    *k = true;
                }
            }
        }
        for (l, k) in logits.iter_mut().zip(keep) {
            if !k {
                *l = f32::NEG_INFINITY;
            }
        }
        allowed
    }
}

/// Unconstrained text: every token, any time.
struct FreeText;

impl Grammar for FreeText {
    type State = ();
    fn start(&self) {}
    fn advance(&self, _: &(), _: u8) -> Option<()> {
        Some(())
    }
    fn accepts(&self, _: &()) -> bool {
        true
    }
    fn is_free(&self, _: &()) -> bool {
        true
    }
}

/// A tensor's values (the model computes in f32).
pub(crate) fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("the model computes in f32")
}

/// Streams text while holding back any tail that could be the start of a stop string.
struct StopMatcher<'a> {
    stops: &'a [String],
    /// Everything emitted so far.
    text: String,
    held: String,
}

impl<'a> StopMatcher<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopMatcher {
            stops,
            text: String::new(),
            held: String::new(),
        }
    }

    /// Adds a piece; returns true when a stop string was found (text before it is emitted).
    fn push(&mut self, piece: &str, on_text: &mut impl FnMut(&str)) -> bool {
        self.held.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let before = self.held[..at].to_string();
            self.emit(&before, on_text);
            self.held.clear();
            return true;
        }
        // Keep the longest tail that is a prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        self.emit(&out, on_text);
        false
    }

    fn flush(&mut self, on_text: &mut impl FnMut(&str)) {
        let rest = std::mem::take(&mut self.held);
        self.emit(&rest, on_text);
    }

    fn emit(&mut self, s: &str, on_text: &mut impl FnMut(&str)) {
        if !s.is_empty() {
            self.text.push_str(s);
            on_text(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut streamed = String::new();
        let mut hit = false;
        for p in pieces {
            if m.push(p, &mut |s| streamed.push_str(s)) {
                hit = true;
                break;
            }
        }
        if !hit {
            m.flush(&mut |s| streamed.push_str(s));
        }
        (streamed, hit, m.text)
    }

    #[test]
    fn stop_string_split_across_pieces_is_not_emitted() {
        let (streamed, hit, text) = run(&["\nUser:"], &["Paris", ".\nUs", "er: hi"]);
        assert!(hit);
        assert_eq!(streamed, "Paris.");
        assert_eq!(text, "Paris.");
    }

    #[test]
    fn a_false_start_is_released() {
        let (streamed, hit, _) = run(&["STOP"], &["ST", "ART"]);
        assert!(!hit);
        assert_eq!(streamed, "START");
    }
}
