//! Any bytes as an ONNX model: every float tensor and node of every (nested) graph, then a
//! lookup of each: errors are fine, panics, stack overflows and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../encoders/src/onnx.rs"]
mod onnx;
#[allow(dead_code)]
#[path = "../../modelkit/src/weights.rs"]
mod weights;

fuzz_target!(|data: &[u8]| {
    if let Ok(graph) = onnx::graph(data) {
        if let Some(t) = graph.tensors.first() {
            let _ = onnx::find(
                &graph.tensors,
                &t.graph.clone(),
                &t.name.clone(),
                &t.shape.clone(),
            );
        }
        for node in &graph.nodes {
            let _ = node.ints("dilations");
        }
    }
});
