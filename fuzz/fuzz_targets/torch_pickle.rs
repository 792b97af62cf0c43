//! Any bytes as a legacy (non-zip) torch `.pth` state dict: the pickle machine, storages
//! and strides: errors are fine, panics, out-of-bounds reads and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../encoders/src/torch_pickle.rs"]
mod torch_pickle;

fuzz_target!(|data: &[u8]| {
    let _ = torch_pickle::read_legacy_state_dict(data);
});
