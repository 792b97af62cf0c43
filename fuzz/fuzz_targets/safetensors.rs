//! Any bytes as a safetensors file (the vision projector's and MiniLM's format): every
//! tensor the header lists read back as floats: errors are fine, panics, out-of-bounds
//! reads and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../modelkit/src/weights.rs"]
mod weights;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = safetensors::SafeTensors::deserialize(data) else {
        return;
    };
    for (_, view) in file.tensors() {
        if let Some(floats) = weights::safetensors_floats(view.dtype(), view.data()) {
            let elements: usize = view.shape().iter().product();
            assert_eq!(floats.len(), elements);
        }
    }
});
