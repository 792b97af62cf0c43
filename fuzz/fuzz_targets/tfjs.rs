//! Any bytes as a TensorFlow.js model.json and its one weight shard, and every weight the
//! reader accepts read back as floats: errors are fine, panics, out-of-bounds reads and
//! huge allocations are not. Input: the json, a 0 byte, then the shard.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

// The reader's own source file, compiled here without the rest of `encoders` (which
// would bring the whole burn stack into every sanitizer build).
#[allow(dead_code)]
#[path = "../../encoders/src/tfjs.rs"]
mod tfjs;
#[allow(dead_code)]
#[path = "../../modelkit/src/weights.rs"]
mod weights;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (json, shard) = data.split_at(split);
    let shard = shard.get(1..).unwrap_or_default().to_vec();
    let shards = HashMap::from([("w.bin".to_string(), shard)]);
    let Ok(model) = tfjs::TfjsModel::parse("fuzz.json", json, &shards) else {
        return;
    };
    let names: Vec<String> = model.names().map(str::to_owned).collect();
    for name in names {
        let w = model
            .weight(&name)
            .expect("listed weights are there")
            .clone();
        let _ = model.floats(&name, &w.shape);
        let _ = model.ints(&name, &w.shape);
    }
});
