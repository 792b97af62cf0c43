//! Any text into BERT's WordPiece tokenizer (a small vocabulary with pieces and specials),
//! and any bytes as a vocab.txt: no panic, every id in the vocabulary, the frame kept, the
//! length bound held.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../encoders/src/text/wordpiece.rs"]
mod wordpiece;

const VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\n##a\n##b\nab\n,\n-\n\u{e9}\n\u{4e00}\n";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vocab = wordpiece::WordPiece::from_lines(VOCAB).expect("the specials are there");
    for max in [2, 8, 256] {
        let ids = vocab.encode(&text, max);
        assert!(ids.len() <= max && ids.len() >= 2);
        assert_eq!((ids[0], ids[ids.len() - 1]), (vocab.cls, vocab.sep));
        assert!(ids.iter().all(|&i| (i as usize) < vocab.len()));
    }
    if let Ok(other) = wordpiece::WordPiece::from_lines(&text) {
        let _ = other.encode("a b, ab-ba", 16);
    }
});
