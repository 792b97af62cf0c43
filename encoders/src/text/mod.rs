//! Text encoders: the MiniLM sentence encoder ([`minilm`]) and BERT's WordPiece tokenizer
//! ([`wordpiece`]) it reads with.

pub mod minilm;
pub mod wordpiece;

pub use minilm::{MiniLm, MiniLmConfig, MiniLmError, SentenceEmbedding};
pub use wordpiece::WordPiece;
