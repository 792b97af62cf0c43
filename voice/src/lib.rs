//! percept's voice: text to speech with a Piper voice.
//!
//! ```text
//! text --normalize--> words --espeak-ng--> IPA phonemes per sentence
//!      --phoneme_id_map--> ids --VITS (burn)--> 22,050 Hz samples
//! ```
//!
//! [`espeak`] is a small binding to the espeak-ng library (loaded at run time, so a machine
//! without it gets a clear error instead of a build failure), [`normalize`] spells out what
//! espeak reads badly (prices), [`vits`] is the generator and its ONNX loader ([`conv`]
//! runs its HiFi-GAN part on the CPU), and
//! [`piper`] ties them together as a [`Voice`] that speaks a sentence at a time.

pub mod conv;
pub mod espeak;
pub mod normalize;
pub mod piper;
pub mod vits;

pub use piper::{Scales, Speech, Voice, VoiceError};
