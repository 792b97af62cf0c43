//! What the model crates (`llm`, `encoders`) share and neither may take from the other: the
//! causal attention mask, and the one rule for which burn devices compute on the CPU (where
//! the models switch to their own kernels).

use burn::tensor::{Device, Tensor, TensorData};

pub mod fastmath;
pub mod weights;

/// The additive mask that hides later keys from each of `queries` queries sitting at the
/// end of `keys` positions: `0` where query `i` (at position `keys - queries + i`) may see
/// key `j`, `-inf` where `j` is in its future.
///
/// # Shapes
/// - output: `[queries, keys]`
///
/// # Panics
/// If `queries > keys`.
pub fn causal_mask(queries: usize, keys: usize, device: &Device) -> Tensor<2> {
    let start = keys
        .checked_sub(queries)
        .expect("causal_mask: more queries than keys");
    let mask: Vec<f32> = (0..queries)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_data(TensorData::new(mask, [queries, keys]), device)
}

/// Whether `device` computes on the CPU (burn's flex or ndarray backends), where the models
/// use their own CPU kernels instead of burn's products.
pub fn is_cpu(device: &Device) -> bool {
    #[allow(deprecated)]
    let ndarray = Device::ndarray();
    *device == Device::flex() || *device == ndarray
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_keys_are_hidden_from_each_query() {
        let device = Device::flex();
        let mask = causal_mask(2, 4, &device)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        // Queries at positions 2 and 3 of 4.
        assert_eq!(mask, vec![0.0, 0.0, 0.0, inf, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn flex_and_ndarray_are_cpus() {
        assert!(is_cpu(&Device::flex()));
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        assert!(is_cpu(&ndarray));
    }
}
