//! Vision and audio encoders. Filled by the vision and audio issues.
