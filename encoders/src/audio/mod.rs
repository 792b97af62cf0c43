//! Audio encoders: Whisper's log-mel spectrogram ([`logmel`]), Silero VAD ([`silero`]) and the
//! speech segmenter over its probabilities ([`segmenter`]).

pub mod logmel;
pub mod segmenter;
pub mod silero;
pub mod whisper;

pub use logmel::{LogMel, MelSpectrogram};
pub use segmenter::{Segment, Segmenter, SegmenterConfig};
pub use silero::{Silero, VadState};
