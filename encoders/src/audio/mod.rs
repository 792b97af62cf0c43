//! Audio front ends: Whisper's log-mel spectrogram ([`logmel`]).

pub mod logmel;

pub use logmel::{LogMel, MelSpectrogram};
