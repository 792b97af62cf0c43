//! Any bytes as a CTranslate2 `model.bin`, and every variable it accepts read back as
//! floats, f16 and a scalar: errors are fine, panics, out-of-bounds reads and huge
//! allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The reader's own source file, compiled here without the burn stack.
#[allow(dead_code)]
#[path = "../../encoders/src/ct2.rs"]
mod ct2;
#[allow(dead_code)]
#[path = "../../modelkit/src/weights.rs"]
mod weights;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = ct2::Ct2Model::parse(data) else {
        return;
    };
    for (name, v) in model.variables.clone() {
        // Bound the work per input; the size checks are what matter.
        if v.shape.iter().product::<usize>() <= 1 << 16 {
            let _ = model.get(&name, &v.shape);
            let _ = model.get_f16(&name, &v.shape);
        }
        let _ = model.scalar(&name);
    }
});
