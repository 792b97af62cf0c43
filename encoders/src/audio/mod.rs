//! Audio encoders: Whisper's log-mel spectrogram ([`logmel`]) and Silero VAD ([`silero`]).

pub mod logmel;
pub mod silero;

pub use logmel::{LogMel, MelSpectrogram};
pub use silero::{Silero, VadState};
