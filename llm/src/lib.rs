//! The language model of percept: a GGUF reader, the byte-level BPE tokenizer and chat
//! template stored in the file, the Llama architecture in burn, sampling, and streaming
//! generation over prompts made of token ids and raw embedding rows.

pub mod chat;
#[cfg(feature = "model")]
pub mod engine;
pub mod gguf;
#[cfg(feature = "model")]
pub mod gguf_loader;
pub mod grammar;
#[cfg(feature = "model")]
pub mod host;
#[cfg(feature = "model")]
pub mod linear;
#[cfg(feature = "model")]
pub mod llama;
#[cfg(feature = "model")]
pub mod packed;
#[cfg(feature = "model")]
pub mod pool;
pub mod quant;
#[cfg(feature = "model")]
pub mod quant_matmul;
pub mod sampling;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message, Role};
#[cfg(feature = "model")]
pub use engine::{GenerateParams, Generation, Llm, LlmError, Segment, Session, StopReason};
pub use gguf::{GgufError, GgufFile};
pub use sampling::SamplingParams;
pub use tokenizer::{TokenId, Tokenizer};
