//! Byte-level BPE tokenizer (GPT-2 style) built from a GGUF file's `tokenizer.ggml.*`
//! metadata, with the `smollm` pre-tokenizer and special tokens.
//!
//! Encoding: split out special tokens (`<|im_start|>`...), pre-tokenize the rest into
//! words, map each word's UTF-8 bytes onto GPT-2's printable byte alphabet, then apply
//! merges lowest rank first. Decoding maps the alphabet back to bytes.

use std::collections::HashMap;

use regex::Regex;

use crate::gguf::{GgufError, GgufFile};

pub type TokenId = u32;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("tokenizer model '{0}' is not supported (only gpt2 byte-level BPE)")]
    UnsupportedModel(String),
    #[error("pre-tokenizer '{0}' is not supported (supported: smollm, default)")]
    UnsupportedPre(String),
    #[error("merge '{0}' is not two tokens separated by a space")]
    BadMerge(String),
    #[error("byte {byte:#04x} of the text has no token in the vocabulary")]
    MissingByte { byte: u8 },
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// How raw text is split into words before BPE.
#[derive(Debug, Clone, Copy)]
enum PreTokenizer {
    /// llama.cpp's `smollm` (shared with starcoder and others): every digit is its own
    /// word, then GPT-2's pattern.
    SmolLm,
    /// GPT-2's pattern alone.
    Gpt2,
}

pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, TokenId>,
    /// (left, right) -> (rank, merged)
    merges: HashMap<(TokenId, TokenId), (u32, TokenId)>,
    special: Vec<bool>,
    special_re: Option<Regex>,
    word_re: Regex,
    pre: PreTokenizer,
    byte_to_char: [char; 256],
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    /// Tokens that end a turn: EOS and, for chat models, `<|im_end|>`/`<|endoftext|>`.
    pub eog: Vec<TokenId>,
    /// The vocabulary as a byte trie, for constrained decoding; built on first use.
    trie: std::sync::OnceLock<crate::grammar::TokenTrie>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("merges", &self.merges.len())
            .finish()
    }
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        let model = gguf.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.into()));
        }
        let pre = match gguf.get("tokenizer.ggml.pre").and_then(|v| v.as_str()) {
            Some("smollm") | Some("starcoder") | Some("refact") => PreTokenizer::SmolLm,
            None | Some("default") | Some("gpt-2") | Some("gpt2") => PreTokenizer::Gpt2,
            Some(other) => return Err(TokenizerError::UnsupportedPre(other.into())),
        };
        let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .unwrap_or_default()
                .iter()
                .map(|t| t.as_i64().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let merge_strs = string_array(gguf, "tokenizer.ggml.merges")?;
        let token_id = |key: &str| {
            gguf.get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as TokenId)
                .filter(|&v| (v as usize) < tokens.len())
        };
        let (bos, eos) = (
            token_id("tokenizer.ggml.bos_token_id"),
            token_id("tokenizer.ggml.eos_token_id"),
        );
        Self::new(tokens, &types, &merge_strs, pre, bos, eos)
    }

    fn new(
        tokens: Vec<String>,
        types: &[i64],
        merge_strs: &[String],
        pre: PreTokenizer,
        bos: Option<TokenId>,
        eos: Option<TokenId>,
    ) -> Result<Self, TokenizerError> {
        let ids: HashMap<String, TokenId> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as TokenId))
            .collect();
        let mut merges = HashMap::with_capacity(merge_strs.len());
        for (rank, m) in merge_strs.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| TokenizerError::BadMerge(m.clone()))?;
            // A merge whose parts or result is not in the vocabulary can never apply.
            if let (Some(&a), Some(&b), Some(&ab)) =
                (ids.get(a), ids.get(b), ids.get(&format!("{a}{b}")))
            {
                merges.entry((a, b)).or_insert((rank as u32, ab));
            }
        }
        let special: Vec<bool> = (0..tokens.len())
            .map(|i| matches!(types.get(i), Some(&TYPE_CONTROL | &TYPE_USER_DEFINED)))
            .collect();
        let mut specials: Vec<&str> = tokens
            .iter()
            .zip(&special)
            .filter(|(t, s)| **s && !t.is_empty())
            .map(|(t, _)| t.as_str())
            .collect();
        // Longest first, so that a special token that prefixes another does not win.
        specials.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let special_re = (!specials.is_empty()).then(|| {
            let alt: Vec<String> = specials.iter().map(|s| regex::escape(s)).collect();
            Regex::new(&alt.join("|")).expect("escaped literals form a valid regex")
        });
        let byte_to_char = gpt2_byte_alphabet();
        let eog = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"]
            .iter()
            .filter_map(|t| ids.get(*t).copied())
            .chain(eos)
            .collect();
        Ok(Tokenizer {
            tokens,
            ids,
            merges,
            special,
            special_re,
            // GPT-2's pattern without its `\s+(?!\S)` look-ahead, which `regex` lacks;
            // `split_words` gives the last whitespace back to the next word instead.
            word_re: Regex::new(
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+",
            )
            .expect("static regex"),
            pre,
            byte_to_char,
            bos,
            eos,
            eog,
            trie: std::sync::OnceLock::new(),
        })
    }

    /// Every ordinary token as a byte trie (built once, on first use).
    pub fn trie(&self) -> &crate::grammar::TokenTrie {
        self.trie
            .get_or_init(|| crate::grammar::TokenTrie::new(self))
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.ids.get(text).copied()
    }

    pub fn is_special(&self, id: TokenId) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Encodes text. With `parse_special`, special-token strings in the text become their
    /// tokens (as a chat template needs); without, they are encoded as plain text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<TokenId>, TokenizerError> {
        let mut out = Vec::new();
        let mut rest = 0;
        if parse_special && let Some(re) = &self.special_re {
            for m in re.find_iter(text) {
                self.encode_plain(&text[rest..m.start()], &mut out)?;
                out.push(self.ids[m.as_str()]);
                rest = m.end();
            }
        }
        self.encode_plain(&text[rest..], &mut out)?;
        Ok(out)
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<TokenId>) -> Result<(), TokenizerError> {
        for word in self.pre_tokenize(text) {
            self.bpe(word, out)?;
        }
        Ok(())
    }

    /// Splits text into the words BPE runs on.
    fn pre_tokenize<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut words = Vec::new();
        match self.pre {
            PreTokenizer::Gpt2 => self.split_words(text, &mut words),
            PreTokenizer::SmolLm => {
                // First pass `\p{N}`: each numeric character stands alone.
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        self.split_words(&text[start..i], &mut words);
                        words.push(&text[i..i + c.len_utf8()]);
                        start = i + c.len_utf8();
                    }
                }
                self.split_words(&text[start..], &mut words);
            }
        }
        words
    }

    /// GPT-2's word pattern. A whitespace run followed by a non-space gives its last
    /// character to the next word (the `\s+(?!\S)` rule), so " world" keeps its space.
    fn split_words<'t>(&self, text: &'t str, words: &mut Vec<&'t str>) {
        let mut pos = 0;
        while let Some(m) = self.word_re.find_at(text, pos) {
            let mut end = m.end();
            let s = m.as_str();
            if end < text.len() && s.chars().all(char::is_whitespace) {
                let last = s.chars().next_back().map_or(0, char::len_utf8);
                if s.len() > last {
                    end -= last;
                }
            }
            words.push(&text[m.start()..end]);
            pos = end;
        }
    }

    /// Byte-level BPE on one word.
    fn bpe(&self, word: &str, out: &mut Vec<TokenId>) -> Result<(), TokenizerError> {
        const SHORT_WORD: usize = 64;
        let mut syms: Vec<TokenId> = Vec::with_capacity(word.len());
        let mut buf = [0u8; 4];
        for &b in word.as_bytes() {
            let c = self.byte_to_char[b as usize].encode_utf8(&mut buf);
            syms.push(
                *self
                    .ids
                    .get(&*c)
                    .ok_or(TokenizerError::MissingByte { byte: b })?,
            );
        }
        if syms.len() <= SHORT_WORD {
            self.merge_short(&mut syms);
        } else {
            syms = self.merge_long(&syms);
        }
        out.extend_from_slice(&syms);
        Ok(())
    }

    /// BPE by scanning for the best pair after each merge: quadratic, allocation-free, the
    /// fastest for ordinary words.
    fn merge_short(&self, syms: &mut Vec<TokenId>) {
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
    }

    /// The same merges in `O(n log n)` for long words (a 100 KB "word" took minutes the
    /// quadratic way): candidate pairs in a heap by (rank, position), symbols in a linked
    /// list, stale heap entries skipped. Merging the lowest rank, leftmost first, is the
    /// quadratic scan's order, so both give the same tokens.
    fn merge_long(&self, syms: &[TokenId]) -> Vec<TokenId> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let n = syms.len();
        let mut id = syms.to_vec();
        let mut alive = vec![true; n];
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n).then_some(i + 1)).collect();
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, id: &[TokenId], l: usize, r: usize| {
            if let Some(&(rank, _)) = self.merges.get(&(id[l], id[r])) {
                heap.push(Reverse((rank, l, id[l], id[r])));
            }
        };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, &id, i, i + 1);
        }
        while let Some(Reverse((_, l, left, right))) = heap.pop() {
            let Some(r) = next[l] else { continue };
            if !alive[l] || id[l] != left || id[r] != right {
                continue;
            }
            id[l] = self.merges[&(left, right)].1;
            alive[r] = false;
            next[l] = next[r];
            if let Some(after) = next[r] {
                prev[after] = Some(l);
                push(&mut heap, &id, l, after);
            }
            if let Some(before) = prev[l] {
                push(&mut heap, &id, before, l);
            }
        }
        (0..n).filter(|&i| alive[i]).map(|i| id[i]).collect()
    }

    /// The raw bytes of one token (special tokens give their text).
    pub fn token_bytes(&self, id: TokenId) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        if self.is_special(id) {
            return text.as_bytes().to_vec();
        }
        byte_level_bytes(text)
    }

    /// Decodes ids to text; invalid UTF-8 (a token sequence cut mid-character) becomes U+FFFD.
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn string_array(gguf: &GgufFile, key: &str) -> Result<Vec<String>, TokenizerError> {
    gguf.require_array(key)?
        .iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                GgufError::Metadata {
                    key: key.into(),
                    reason: "expected an array of strings".into(),
                }
                .into()
            })
        })
        .collect()
}

/// The bytes a byte-level BPE token string stands for (GPT-2's alphabet, shared by every
/// model of that family: Whisper's vocabulary too). Characters outside the alphabet are
/// kept as their UTF-8.
pub fn byte_level_bytes(token: &str) -> Vec<u8> {
    static CHAR_TO_BYTE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    let map = CHAR_TO_BYTE.get_or_init(|| {
        gpt2_byte_alphabet()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    });
    token
        .chars()
        .flat_map(|c| match map.get(&c) {
            Some(&b) => vec![b],
            None => c.to_string().into_bytes(),
        })
        .collect()
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes map to
/// themselves, the rest to U+0100 upwards in byte order.
fn gpt2_byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are valid chars");
            next += 1;
            c
        };
    }
    map
}

/// Turns a stream of token ids into text pieces that are always whole UTF-8 characters:
/// bytes of a character split across tokens are held until it is complete.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds one token; returns the text that became complete, possibly empty.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: TokenId) -> String {
        self.pending.extend(tokenizer.token_bytes(id));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // A sequence that can never become valid is flushed as U+FFFD; an incomplete
            // one at the end waits for the next token.
            Err(e) if e.error_len().is_some() => self.pending.len(),
            Err(e) => e.valid_up_to(),
        };
        let done: Vec<u8> = self.pending.drain(..valid).collect();
        String::from_utf8_lossy(&done).into_owned()
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        let alphabet = gpt2_byte_alphabet();
        let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        let space = alphabet[b' ' as usize];
        for t in ["ab", &format!("{space}ab"), "<|im_end|>"] {
            tokens.push(t.to_string());
        }
        let mut types = vec![1; tokens.len()];
        *types.last_mut().unwrap() = TYPE_CONTROL;
        let merges = vec!["a b".to_string(), format!("{space} ab")];
        Tokenizer::new(tokens, &types, &merges, PreTokenizer::SmolLm, None, None).unwrap()
    }

    #[test]
    fn merges_specials_and_digits() {
        let t = toy();
        let ids = t.encode("ab ab<|im_end|>12", true).unwrap();
        // A byte's token id is the byte itself in this toy vocabulary.
        assert_eq!(ids, vec![256, 257, 258, u32::from(b'1'), u32::from(b'2')]);
        assert_eq!(t.decode(&ids), "ab ab<|im_end|>12");
        // Without special parsing the marker is plain text.
        assert!(t.encode("<|im_end|>", false).unwrap().len() > 1);
    }

    /// Issue 15: one 100 KB word took minutes (quadratic merges). Long words now merge
    /// through a heap, to the very tokens of the scan.
    #[test]
    fn long_words_merge_as_short_ones_do() {
        let t = toy();
        let mut state = 7u32;
        for len in [2usize, 3, 65, 200, 1000] {
            let word: String = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ['a', 'b', ' ', 'c', 'a'][(state >> 16) as usize % 5]
                })
                .collect();
            let syms: Vec<TokenId> = word.bytes().map(u32::from).collect();
            let mut short = syms.clone();
            t.merge_short(&mut short);
            assert_eq!(t.merge_long(&syms), short, "{word}");
        }
        let huge = "ab".repeat(50_000);
        let ids = t.encode(&huge, false).unwrap();
        assert_eq!(ids, vec![256; 50_000]);
    }

    #[test]
    fn whitespace_run_gives_last_space_to_next_word() {
        let t = toy();
        let mut words = Vec::new();
        t.split_words("a   b  ", &mut words);
        assert_eq!(words, vec!["a", "  ", " b", "  "]);
    }

    #[test]
    fn stream_decoder_holds_split_characters() {
        let t = toy();
        let bytes = "é".as_bytes(); // two bytes, each its own byte token
        let ids: Vec<u32> = bytes
            .iter()
            .map(|&b| t.token_id(&t.byte_to_char[b as usize].to_string()).unwrap())
            .collect();
        let mut d = StreamDecoder::default();
        assert_eq!(d.push(&t, ids[0]), "");
        assert_eq!(d.push(&t, ids[1]), "é");
        assert_eq!(d.finish(), "");
    }
}
