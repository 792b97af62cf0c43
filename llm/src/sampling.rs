//! Choosing the next token from logits: repetition penalty, then greedy or
//! temperature / top-k / top-p sampling with a seeded generator.

use serde::{Deserialize, Serialize};

use crate::tokenizer::TokenId;

/// How the next token is chosen. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// llama.cpp's penalty: a positive logit of a recent token is divided by it, a
    /// negative one multiplied (1: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("temperature {0} must be a finite number >= 0")]
    Temperature(f32),
    #[error("top-p {0} must be in (0, 1]")]
    TopP(f32),
    #[error("repetition penalty {0} must be a finite number > 0")]
    RepeatPenalty(f32),
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams::default()
    }

    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(SamplingError::RepeatPenalty(self.repeat_penalty));
        }
        Ok(())
    }
}

/// A seeded sampler (SplitMix64: small, fast, and the same stream on every platform).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    state: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let state = params.seed;
        Ok(Sampler { params, state })
    }

    fn next_f32(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token given the logits and the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[TokenId]) -> TokenId {
        let p = &self.params;
        if p.repeat_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            for &id in recent {
                if seen.insert(id)
                    && let Some(l) = logits.get_mut(id as usize)
                {
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let mut cand: Vec<(TokenId, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as TokenId, l / p.temperature))
            .collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            cand.truncate(p.top_k.max(1));
        }
        // All logits NaN (a broken model or file): no distribution to draw from.
        let Some(&(best, max)) = cand.first() else {
            return argmax(logits);
        };
        if !max.is_finite() {
            return best;
        }
        let mut probs: Vec<f32> = cand.iter().map(|&(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        let mut keep = probs.len();
        let mut acc = 0.0;
        for (i, &pr) in probs.iter().enumerate() {
            acc += pr;
            if acc >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.next_f32() * total;
        for (i, &pr) in probs[..keep].iter().enumerate() {
            r -= pr;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }
}

/// Index of the largest logit (the first one on ties, NaN never wins).
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: all-NaN logits indexed an empty candidate list.
    #[test]
    fn nan_and_infinite_logits_do_not_panic() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.8,
            ..SamplingParams::default()
        })
        .unwrap();
        assert!(s.sample(&mut [f32::NAN; 4], &[]) < 4);
        assert_eq!(s.sample(&mut [0.0, f32::INFINITY, f32::NAN, 1.0], &[]), 1);
    }

    #[test]
    fn greedy_takes_the_max() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn repetition_penalty_moves_greedy_off_a_repeated_token() {
        let params = SamplingParams {
            repeat_penalty: 1.5,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(params).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[1]), 3);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let base = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(base.clone()).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5], &[]), 1);
        }
        let wide = SamplingParams {
            top_k: 0,
            top_p: 1.0,
            seed: 7,
            ..base
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..50)
                .map(|_| s.sample(&mut [0.0, 0.1, 0.2, 0.3], &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&wide);
        assert_eq!(a, draw(&wide), "same seed, same draws");
        assert!(
            a.iter().collect::<std::collections::HashSet<_>>().len() > 1,
            "sampling varies"
        );
    }

    #[test]
    fn top_p_keeps_only_the_head() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params).unwrap();
        // Token 0 alone holds > 50% of the mass.
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [5.0, 0.0, 0.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn bad_params_are_refused() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..SamplingParams::default()
        };
        assert_eq!(Sampler::new(bad).unwrap_err(), SamplingError::TopP(0.0));
    }
}
