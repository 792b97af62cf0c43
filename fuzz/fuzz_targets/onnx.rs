//! Any bytes as an ONNX model: every float tensor of every (nested) graph, then a lookup:
//! errors are fine, panics, stack overflows and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../encoders/src/onnx.rs"]
mod onnx;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = onnx::float_tensors(data) {
        if let Some(t) = tensors.first() {
            let _ = onnx::find(&tensors, &t.graph.clone(), &t.name.clone(), &t.shape.clone());
        }
    }
});
