//! percept's encoders, in burn: what a frame shows ([`vision`]: EfficientNet-Lite0) and
//! what a microphone hears ([`audio`]: log-mel, Silero VAD, Whisper) and what a sentence
//! means ([`text`]: MiniLM). They know nothing of the pipeline or the language model: the root
//! package wraps them as stages, `fusion` turns their outputs into prefix embeddings.
//!
//! Weight formats each have one reader: [`torch_pickle`] (legacy torch pickle), [`ct2`]
//! (CTranslate2's model.bin), [`onnx`] (the float tensors of an ONNX graph), [`tfjs`]
//! (TensorFlow.js graph models); safetensors through the `safetensors` crate. [`weights`] is
//! what they say when a tensor is missing or misshapen.

pub mod audio;
pub mod ct2;
pub mod half_matvec;
pub mod onnx;
pub mod text;
pub mod tfjs;
pub mod torch_pickle;
pub mod vision;
pub use modelkit::weights;
