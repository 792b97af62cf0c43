//! Any bytes into the GGUF reader, and whatever it accepts into the tensor accessors, the
//! dequantizer and the tokenizer: errors are fine, panics and out-of-bounds reads are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm::gguf::GgufFile;
use llm::quant::dequantize;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for info in file.tensors.clone() {
        let (info, bytes) = file
            .tensor_data(&info.name)
            .expect("listed tensors are readable");
        // Bound the work per input; the size check is what matters.
        if info.n_elements() <= 1 << 16 {
            let mut out = vec![0f32; info.n_elements() as usize];
            dequantize(info.kind, bytes, &mut out);
        }
    }
    if let Ok(tok) = llm::Tokenizer::from_gguf(&file) {
        if let Ok(ids) = tok.encode("Hello, world! 123 <|im_start|>", true) {
            let _ = tok.decode(&ids);
        }
    }
    let _ = llm::ChatTemplate::from_gguf(&file);
});
