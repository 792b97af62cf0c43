//! The legacy torch pickle reader on the real EfficientNet-Lite0 file: values checked
//! against an independent reader in Python (stdlib `pickle` with its own `find_class` and
//! `persistent_load`, `struct.unpack` of the raw storage records, cross-checked with
//! numpy's `as_strided`), and damaged copies of the file refused without a panic.

use encoders::torch_pickle::{DType, TorchTensor, read_legacy_state_dict};

/// The real file, from the model cache (`percept models pull efficientnet-lite0`).
fn real_file() -> Vec<u8> {
    let path = percept::models::require("efficientnet-lite0").unwrap();
    std::fs::read(&path).unwrap()
}

fn find<'a>(ts: &'a [TorchTensor], name: &str) -> &'a TorchTensor {
    ts.iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// First values and f64 row-major sum, as printed by a reference reader in Python
/// (stdlib-only: a `pickle.Unpickler` subclass overriding `find_class` and
/// `persistent_load`, then `struct.unpack` of the raw storage records;
/// cross-checked with numpy `as_strided`).
fn check(t: &TorchTensor, shape: &[usize], first5: [f64; 5], sum: f64) {
    assert_eq!(t.shape, shape, "{}", t.name);
    assert_eq!(t.data.len(), shape.iter().product::<usize>());
    for (got, want) in t.data.iter().zip(first5) {
        assert_eq!(f64::from(*got), want, "{}", t.name);
    }
    let got: f64 = t.data.iter().map(|&x| f64::from(x)).sum();
    assert!(
        (got - sum).abs() < 1e-9 * sum.abs().max(1.0),
        "{}: sum {got} != {sum}",
        t.name
    );
}

#[test]
fn real_file_matches_python_reference() {
    let bytes = real_file();
    let ts = read_legacy_state_dict(&bytes).expect("real file parses");
    let float = ts.iter().filter(|t| t.dtype == DType::F32).count();
    let nbt: Vec<_> = ts
        .iter()
        .filter(|t| t.name.ends_with("num_batches_tracked"))
        .collect();
    eprintln!(
        "{} tensors: {float} f32, {} num_batches_tracked",
        ts.len(),
        nbt.len()
    );
    assert_eq!((ts.len(), float, nbt.len()), (296, 247, 49));
    // num_batches_tracked are the only non-float tensors: int64 scalars, all 0.
    assert!(
        nbt.iter()
            .all(|t| t.dtype == DType::I64 && t.shape.is_empty() && t.data == [0.0])
    );
    assert_eq!(ts[0].name, "_conv_stem.weight"); // file (insertion) order
    assert_eq!(ts[295].name, "_fc.bias");
    let elems: usize = ts
        .iter()
        .filter(|t| t.dtype == DType::F32)
        .map(|t| t.data.len())
        .sum();
    assert_eq!(elems, 4_694_024);

    // Both weights are non-contiguous views (channels-last strides (1, 32, 288, 96)
    // and a transposed (1, 1000)), so these figures also check the gather.
    let stem = [
        -1.1103360652923584,
        -1.3087704181671143,
        -0.010156914591789246,
        0.9208119511604309,
        1.2259163856506348,
    ];
    check(
        find(&ts, "_conv_stem.weight"),
        &[32, 3, 3, 3],
        stem,
        -26.811376610887237,
    );
    let fcw = [
        -0.04561043530702591,
        -0.09470871090888977,
        -0.05684146657586098,
        0.06823880970478058,
        -0.0445483960211277,
    ];
    check(
        find(&ts, "_fc.weight"),
        &[1000, 1280],
        fcw,
        -470.63256730128705,
    );
    let fcb = [
        0.032053910195827484,
        -0.01598576083779335,
        0.005290735047310591,
        0.05812514200806618,
        0.05991081893444061,
    ];
    check(find(&ts, "_fc.bias"), &[1000], fcb, -0.04981697298353538);
    let var = [
        9.722968101501465,
        10.58315372467041,
        10.953993797302246,
        10.474215507507324,
        10.968038558959961,
    ];
    check(
        find(&ts, "_bn1.running_var"),
        &[1280],
        var,
        13721.746045589447,
    );
    assert_eq!(
        find(&ts, "_blocks.15._depthwise_conv.weight").shape,
        [1152, 1, 3, 3]
    );
}

#[test]
fn truncated_real_file_is_an_error() {
    let bytes = real_file();
    let data_region = (47_176..bytes.len()).step_by(bytes.len() / 37);
    let cuts = (0..65_536)
        .step_by(997)
        .chain(data_region)
        .chain([bytes.len() - 1]);
    let mut n = 0;
    for cut in cuts {
        assert!(
            read_legacy_state_dict(&bytes[..cut]).is_err(),
            "cut at {cut} parsed"
        );
        n += 1;
    }
    eprintln!("{n} truncations, all rejected");
}

#[test]
fn flipped_header_bytes_never_panic() {
    let bytes = real_file();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64: deterministic, dependency-free
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0, 0);
    let mut b = bytes; // flipped in place and restored, to avoid 400 copies of 18 MB
    for _ in 0..400 {
        let flips: Vec<usize> = (0..1 + next() % 3)
            .map(|_| (next() % 47_176) as usize)
            .collect();
        let saved: Vec<u8> = flips.iter().map(|&at| b[at]).collect();
        for &at in &flips {
            b[at] ^= 1 + (next() % 255) as u8; // pickle region ends at byte 47176
        }
        match read_legacy_state_dict(&b) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1
            }
        }
        for (&at, &v) in flips.iter().zip(&saved).rev() {
            b[at] = v;
        }
    }
    eprintln!("byte flips: {ok} parsed, {err} rejected, no panic");
}
