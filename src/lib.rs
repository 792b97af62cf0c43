//! percept's application layer: the model manager and device selection, shared by the
//! CLI (`src/main.rs`) and the end-to-end tests.

pub mod describe;
pub mod device;
pub mod kiosk;
pub mod memory;
pub mod models;
pub mod speak;
pub mod speech;
pub mod vision;
