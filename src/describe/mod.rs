//! `percept describe`: live scenes described in one short sentence that names only what
//! the encoders saw.
//!
//! ```text
//! source (camera | replay | images) --latest--> vision --> gate --> caption --> sink
//! ```
//!
//! - [`graph`]: the stages. The vision stage runs the classifier (EfficientNet-Lite0:
//!   labels of the frame and of its thirds, pooled features) and the detector (CenterNet:
//!   COCO objects with boxes); the caption stage asks the language model and grounds its
//!   answer.
//! - [`gate`]: passes a scene only when it changed, so a static scene is described once.
//! - [`caption`]: the grounding check and the caption written from the scene itself.

pub mod caption;
pub mod gate;
pub mod graph;
