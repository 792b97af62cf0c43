//! BERT's WordPiece tokenizer (uncased), as `BertTokenizer` in the `tokenizers` library:
//! clean the text, lower-case it and strip its accents, split it at white space and around
//! punctuation and CJK characters, then cut each word into the longest pieces the
//! vocabulary has (`##` marks a piece inside a word), and frame it with `[CLS]` ... `[SEP]`.

use std::collections::HashMap;
use std::path::Path;

use unicode_normalization::UnicodeNormalization;

/// A word longer than this (in characters) is one `[UNK]`, as BERT's tokenizer does.
const MAX_WORD_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("cannot read the vocabulary {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the vocabulary {path} has no '{token}' token")]
    MissingSpecial { path: String, token: &'static str },
}

/// The vocabulary of `vocab.txt` (one token a line, the line number its id) and the ids of
/// the special tokens.
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    pub cls: u32,
    pub sep: u32,
    pub unk: u32,
}

impl WordPiece {
    pub fn load(path: &Path) -> Result<Self, VocabError> {
        let text = std::fs::read_to_string(path).map_err(|source| VocabError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_lines(&text).map_err(|token| VocabError::MissingSpecial {
            path: path.display().to_string(),
            token,
        })
    }

    /// From the text of a `vocab.txt`; `Err` names a special token it lacks.
    pub fn from_lines(text: &str) -> Result<Self, &'static str> {
        let ids: HashMap<String, u32> = text
            .lines()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let special = |t: &'static str| ids.get(t).copied().ok_or(t);
        Ok(WordPiece {
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            unk: special("[UNK]")?,
            ids,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `[CLS] pieces... [SEP]`, at most `max_len` ids (longer text loses its end, as
    /// sentence-transformers truncates).
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut out = vec![self.cls];
        for word in words(text) {
            self.pieces(&word, &mut out);
            if out.len() >= max_len.saturating_sub(1) {
                break;
            }
        }
        out.truncate(max_len.saturating_sub(1).max(1));
        out.push(self.sep);
        out
    }

    /// Greedy longest-match-first pieces of one word; the whole word is `[UNK]` if some
    /// part of it has no piece.
    fn pieces(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        let start_len = out.len();
        let mut start = 0;
        let mut piece = String::new();
        while start < chars.len() {
            let found = (start + 1..=chars.len()).rev().find_map(|end| {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.extend(&chars[start..end]);
                self.ids.get(piece.as_str()).map(|&id| (id, end))
            });
            match found {
                Some((id, end)) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(start_len);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// The words of BERT's basic tokenizer: control characters dropped, lower-cased, accents
/// stripped (NFD, combining marks removed), split at white space, and each punctuation mark
/// or CJK ideograph a word of its own.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    for c in text.chars().flat_map(char::to_lowercase).nfd() {
        if c == '\0' || c == '\u{fffd}' || is_mark(c) || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            flush(&mut word, &mut out);
        } else if is_punctuation(c) || is_cjk(c) {
            flush(&mut word, &mut out);
            out.push(c.to_string());
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A combining mark (Unicode category Mn, the accents NFD splits off), by its blocks.
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// BERT's punctuation: every non-alphanumeric ASCII symbol, and outside ASCII what is
/// neither a letter, a digit, a mark nor white space (Unicode's P and S categories together:
/// a slight superset of BERT's P, which only differs on rare symbols).
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    !c.is_alphanumeric() && !c.is_whitespace() && !is_mark(c)
}

/// The CJK ideograph blocks BERT splits into single characters.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        let lines =
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nwhere\ncan\ni\nwash\n##ing\nt\n-\nrex\n,\ncafe\nplay\n";
        WordPiece::from_lines(lines).unwrap()
    }

    #[test]
    fn words_split_at_punctuation_lower_case_and_lose_accents() {
        assert_eq!(words("Café, T-Rex!"), ["cafe", ",", "t", "-", "rex", "!"]);
        assert_eq!(words("  a\tb\u{7}c "), ["a", "bc"]);
    }

    #[test]
    fn pieces_take_the_longest_match_and_a_word_without_pieces_is_unknown() {
        let v = vocab();
        assert_eq!(v.encode("Where can I wash", 16), [2, 4, 5, 6, 7, 3]);
        assert_eq!(v.encode("playing", 16), [2, 14, 8, 3]);
        // "washx": "wash" then no piece for "x": the whole word is [UNK].
        assert_eq!(v.encode("washx cafe", 16), [2, 1, 13, 3]);
    }

    #[test]
    fn encoding_is_cut_to_the_length_asked_and_keeps_its_frame() {
        let v = vocab();
        let ids = v.encode("where can i wash where can i wash", 5);
        assert_eq!(ids, [2, 4, 5, 6, 3]);
    }

    #[test]
    fn a_vocabulary_without_its_special_tokens_is_refused() {
        assert_eq!(WordPiece::from_lines("a\nb\n").unwrap_err(), "[CLS]");
    }
}
