//! Element-wise functions in straight-line arithmetic that the compiler vectorises, for the
//! CPU paths of the models: libm's `expf`, `tanhf` and `erff` are a call per element (and
//! burn's CPU activations run them on one thread), which made GELU and WaveNet's gates a
//! tenth of Whisper's and the voice's time.

use burn::tensor::Tensor;
use burn::tensor::activation;
use rayon::prelude::*;

/// `e^x` to about 2 units in the last place: `x = n ln 2 + r`, `|r| <= ln 2 / 2`, `e^r` by
/// its degree-6 Taylor polynomial, `2^n` put into the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `tanh x`, through `e^(2x)`; `|x| > 9` is +-1 in f32.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(2.0 * x.clamp(-9.0, 9.0));
    (e - 1.0) / (e + 1.0)
}

/// `erf x` within 2.5e-7: Abramowitz and Stegun 7.1.26 (`1 - (a1 t + ... + a5 t^5)
/// e^(-x^2)`, `t = 1 / (1 + p x)`, odd in `x`; 1.5e-7, and f32's rounding), the Taylor
/// series below 0.5.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let far = 1.0 - poly * exp(-a * a);
    // Near 0 the formula is a difference of near-equal numbers: the Taylor series instead,
    // `2 / sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n + 1))`, to x^11 (the next term is
    // below 2e-8 for |x| < 0.5).
    let x2 = x * x;
    let near = x
        * std::f32::consts::FRAC_2_SQRT_PI
        * (1.0
            + x2 * (-1.0 / 3.0
                + x2 * (1.0 / 10.0
                    + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    if a < 0.5 { near } else { far.copysign(x) }
}

/// GELU, `x / 2 * (1 + erf(x / sqrt 2))`, in place, on rayon's threads.
pub fn gelu_in_place(x: &mut [f32]) {
    const CHUNK: usize = 16 * 1024;
    let f = |part: &mut [f32]| {
        for v in part {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    };
    if x.len() > CHUNK && rayon::current_num_threads() > 1 {
        x.par_chunks_mut(CHUNK).for_each(f);
    } else {
        f(x);
    }
}

/// burn's `gelu`, computed by [`gelu_in_place`] where the tensor is on the CPU.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !crate::is_cpu(&device) {
        return activation::gelu(x);
    }
    let shape = x.shape();
    match x.clone().into_data().convert::<f32>().try_into_vec::<f32>() {
        Ok(mut v) => {
            gelu_in_place(&mut v);
            Tensor::from_data(burn::tensor::TensorData::new(v, shape), &device)
        }
        Err(_) => activation::gelu(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn exp_tanh_and_erf_agree_with_libm() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.043;
            let (e, want) = (exp(x), x.exp());
            assert!(
                (e - want).abs() <= 4.0 * f32::EPSILON * want,
                "exp({x}) {e} vs {want}"
            );
            let (t, want) = (tanh(x), x.tanh());
            assert!(
                (t - want).abs() <= 4.0 * f32::EPSILON,
                "tanh({x}) {t} vs {want}"
            );
            let xs = x / 10.0;
            let (r, want) = (erf(xs), erf_f64(f64::from(xs)));
            assert!(
                (f64::from(r) - want).abs() <= 2.5e-7,
                "erf({xs}) {r} vs {want}"
            );
        }
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    /// erf by its Taylor series in f64 (exact enough to |x| = 4; beyond, erf is 1 within
    /// 2e-8).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_on_the_cpu_is_burns() {
        let device = Device::flex();
        let xs: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 4e-4).collect();
        let t = || Tensor::<2>::from_data(TensorData::new(xs.clone(), [200, 200]), &device);
        let ours = gelu(t()).into_data().try_into_vec::<f32>().unwrap();
        let burns = activation::gelu(t())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!(
                (a - b).abs() <= 2e-7 * (1.0 + xs[i].abs()),
                "gelu({}) {a} vs {b}",
                xs[i]
            );
        }
    }
}
