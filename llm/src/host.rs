//! The decoder on the CPU as plain loops over f32 rows between the quantized kernels.
//!
//! Why: on burn's CPU backends every small op of a block (two norms, RoPE's narrows and
//! stack, the cache's concatenation, the grouped heads' expand, softmax, SiLU, the
//! residual adds) is a tensor op with its own allocation and dispatch, some forty a block,
//! and all of them ran on one thread while the other core waited for the next matrix
//! product. Here they are loops over the rows, the KV cache grows in place, and
//! attention's heads are shared out between the threads of the matmul [`Pool`].
//!
//! The arithmetic is that of `Llama`'s modules (whose formulas `llama.rs` gives): the same
//! kernels for the products, the same RoPE tables, RMSNorm, softmax and SiLU in f32; only
//! the order of some f32 sums differs.

use burn::nn::RmsNorm;

use crate::engine::to_vec;
use crate::linear::QuantLinear;
use crate::llama::{Block, Llama};
use crate::pool::Pool;
use crate::quant_matmul::QuantMatrix;

/// What the host path reads besides the weight matrices: the norms' gains and RoPE's
/// tables as plain vectors.
#[derive(Debug)]
pub struct HostWeights {
    attn_norm: Vec<Vec<f32>>,
    ffn_norm: Vec<Vec<f32>>,
    norm: Vec<f32>,
    eps: f32,
    /// `cos(p θ_i)` and `sin(p θ_i)`, `[max_positions, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Keys and values of one block, position after position (`[positions, n_kv_heads *
/// head_dim]` each), grown in place.
#[derive(Debug, Clone, Default)]
pub struct HostKv {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

impl HostKv {
    /// Keeps the first `len` of `positions` positions.
    pub fn truncate(&mut self, len: usize, positions: usize) {
        if let Some(width) = self.keys.len().checked_div(positions) {
            self.keys.truncate(len * width);
            self.values.truncate(len * width);
        }
    }
}

/// Which rows of the last block's output a pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The logits of the last position.
    LastLogits,
    /// The logits of every position.
    AllLogits,
    /// The normalised hidden state of the last position.
    LastHidden,
}

impl HostWeights {
    /// The host copies of `model`'s vectors, or `None` when a product has no CPU kernel
    /// (the model is on another device).
    pub fn of(model: &Llama) -> Option<HostWeights> {
        let mut linears = vec![&model.lm_head];
        for b in &model.blocks {
            let (a, f) = (&b.attn, &b.ffn);
            linears.extend([&a.wq, &a.wk, &a.wv, &a.wo, &f.gate, &f.up, &f.down]);
        }
        if linears.iter().any(|l| l.blocks.is_none()) {
            return None;
        }
        let gain = |n: &RmsNorm| to_vec(n.gamma.val());
        let (cos, sin) = model.rope.tables();
        Some(HostWeights {
            attn_norm: model.blocks.iter().map(|b| gain(&b.attn_norm)).collect(),
            ffn_norm: model.blocks.iter().map(|b| gain(&b.ffn_norm)).collect(),
            norm: gain(&model.norm),
            eps: model.norm.epsilon as f32,
            cos: to_vec(cos),
            sin: to_vec(sin),
        })
    }
}

/// Runs `x` (`[t, d_model]`, the positions after the `start` that `cache` holds) through
/// every block, appending to `cache`, and returns what `output` asks for.
pub fn forward(
    model: &Llama,
    w: &HostWeights,
    mut x: Vec<f32>,
    start: usize,
    cache: &mut Vec<HostKv>,
    output: Output,
) -> Vec<f32> {
    let d = model.d_model();
    let t = x.len() / d;
    if cache.len() < model.blocks.len() {
        cache.resize(model.blocks.len(), HostKv::default());
    }
    for (layer, (block, kv)) in model.blocks.iter().zip(cache.iter_mut()).enumerate() {
        block_forward(block, layer, w, &mut x, t, kv, start);
    }
    let rows = match output {
        Output::AllLogits => &x[..],
        _ => &x[(t - 1) * d..],
    };
    let normed = rms_norm(rows, &w.norm, w.eps);
    match output {
        Output::LastHidden => normed,
        _ => products(&[&model.lm_head], &normed).remove(0),
    }
}

/// `h = x + Wo·Attention(RMSNorm(x)); h + Wdown·(silu(Wgate·n) ⊙ Wup·n)`, `n = RMSNorm(h)`,
/// in place on `x` (`[t, d_model]`).
fn block_forward(
    b: &Block,
    layer: usize,
    w: &HostWeights,
    x: &mut [f32],
    t: usize,
    kv: &mut HostKv,
    start: usize,
) {
    let a = &b.attn;
    let hd = a.wq.d_output / a.n_heads;
    let n = rms_norm(x, &w.attn_norm[layer], w.eps);
    let [mut q, mut k, v]: [Vec<f32>; 3] = products(&[&a.wq, &a.wk, &a.wv], &n)
        .try_into()
        .unwrap_or_else(|_| unreachable!("three layers give three outputs"));
    rope(&mut q, t, hd, start, w);
    rope(&mut k, t, hd, start, w);
    kv.keys.extend_from_slice(&k);
    kv.values.extend_from_slice(&v);
    let heads = attention(&q, kv, t, start, a.n_heads, a.n_kv_heads, hd);
    add(x, &products(&[&a.wo], &heads).remove(0));

    let f = &b.ffn;
    let n = rms_norm(x, &w.ffn_norm[layer], w.eps);
    let [mut gate, up]: [Vec<f32>; 2] = products(&[&f.gate, &f.up], &n)
        .try_into()
        .unwrap_or_else(|_| unreachable!("two layers give two outputs"));
    for (g, u) in gate.iter_mut().zip(&up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
    add(x, &products(&[&f.down], &gate).remove(0));
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// The products of several layers with the same input rows (one quantization, one round
/// of the pool: [`QuantMatrix::matmul_many`]).
fn products(layers: &[&QuantLinear], x: &[f32]) -> Vec<Vec<f32>> {
    let mats: Vec<&QuantMatrix> = layers
        .iter()
        .map(|l| {
            l.blocks
                .as_ref()
                .unwrap_or_else(|| unreachable!("HostWeights::of checked every layer"))
        })
        .collect();
    let n = x.len() / mats[0].cols();
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; n * m.rows()]).collect();
    let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
    QuantMatrix::matmul_many(&mats, x, n, &mut slices);
    outs
}

/// `x / sqrt(mean(x²) + eps) · gain` for each row of `x` (`[rows, gain.len()]`).
fn rms_norm(x: &[f32], gain: &[f32], eps: f32) -> Vec<f32> {
    let d = gain.len();
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let rms = (mean + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(gain) {
            *o = v / rms * g;
        }
    }
    out
}

/// `[x0, x1] -> [x0 cos - x1 sin, x0 sin + x1 cos]` for each adjacent pair of every head,
/// row `r` of `x` (`[t, heads * head_dim]`) being at position `start + r`.
fn rope(x: &mut [f32], t: usize, head_dim: usize, start: usize, w: &HostWeights) {
    let half = head_dim / 2;
    for (r, row) in x.chunks_exact_mut(x.len() / t).enumerate() {
        let at = (start + r) * half;
        let (cos, sin) = (&w.cos[at..at + half], &w.sin[at..at + half]);
        for head in row.chunks_exact_mut(head_dim) {
            for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * c - x1 * s;
                pair[1] = x0 * s + x1 * c;
            }
        }
    }
}

/// Below this many multiply-adds (query · key, and weight · value, over every head and
/// row) attention runs on the calling thread: a round of the pool costs more than it saves.
const SERIAL_ATTENTION: usize = 1 << 12;

/// `softmax(q kᵀ / √d) v` for every query head and row of `q` (`[t, n_heads * head_dim]`),
/// row `r` seeing the cached positions up to `start + r`; query head `h` reads key/value
/// head `h / (n_heads / n_kv_heads)`. Returns `[t, n_heads * head_dim]`.
fn attention(
    q: &[f32],
    kv: &HostKv,
    t: usize,
    start: usize,
    n_heads: usize,
    n_kv_heads: usize,
    hd: usize,
) -> Vec<f32> {
    let (group, width) = (n_heads / n_kv_heads, n_kv_heads * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    // Item `i` is row `i / n_heads`, head `i % n_heads`: output chunk `i` of `hd` values.
    let mut items: Vec<(usize, &mut [f32])> = out.chunks_mut(hd).enumerate().collect();
    let one = |(i, o): &mut (usize, &mut [f32])| {
        let (r, h) = (*i / n_heads, *i % n_heads);
        let head = Head {
            query: &q[*i * hd..(*i + 1) * hd],
            kv,
            offset: (h / group) * hd,
            width,
            seen: start + r + 1,
            scale,
        };
        attend(&head, o);
    };
    let pool = Pool::global();
    if t * n_heads * (start + t) * hd < SERIAL_ATTENTION || pool.parts() == 1 {
        items.iter_mut().for_each(one);
    } else {
        // Heads claimed one at a time, so a thread that starts late takes fewer.
        pool.for_each_claimed(&mut items, 1, one);
    }
    out
}

/// One head of one row's attention: its query, the first `seen` cached positions (whose
/// head starts `offset` into each `width`-wide cache row) and the scores' scale.
struct Head<'a> {
    query: &'a [f32],
    kv: &'a HostKv,
    offset: usize,
    width: usize,
    seen: usize,
    scale: f32,
}

/// One head of one row: scores against the cached positions, softmax, weighted sum of
/// values.
///
/// Compiled twice, for any x86-64 CPU and with AVX2 (eight lanes a vector instead of
/// four: the build targets baseline x86-64), chosen at run time; both do the same
/// arithmetic in the same order, so they give the same bits.
fn attend(head: &Head, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant_matmul::avx2_detected() {
        // SAFETY: AVX2 was detected.
        return unsafe { attend_avx2(head, out) };
    }
    attend_body(head, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(head: &Head, out: &mut [f32]) {
    attend_body(head, out)
}

#[inline(always)]
fn attend_body(head: &Head, out: &mut [f32]) {
    let &Head {
        query,
        kv,
        offset,
        width,
        seen,
        scale,
    } = head;
    let hd = query.len();
    let at = |j: usize| j * width + offset..j * width + offset + hd;
    let mut scores: Vec<f32> = (0..seen)
        .map(|j| dot(query, &kv.keys[at(j)]) * scale)
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for s in &mut scores {
        *s = (*s - max).exp();
        total += *s;
    }
    for (j, &p) in scores.iter().enumerate() {
        let p = p / total;
        for (o, &v) in out.iter_mut().zip(&kv.values[at(j)]) {
            *o += p * v;
        }
    }
}

/// `Σ a_i b_i` in eight lanes (one AVX2 register, two SSE ones), reduced in a fixed order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let [a, b, c, d, e, f, g, h] = lanes;
    ((a + e) + (b + f)) + ((c + g) + (d + h)) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `positions` positions of `kv_heads` heads of `hd` values, varied.
    fn cache(positions: usize, kv_heads: usize, hd: usize) -> HostKv {
        let n = positions * kv_heads * hd;
        HostKv {
            keys: (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect(),
            values: (0..n)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0)
                .collect(),
        }
    }

    /// Every head of every row against the definition, in f64: causal rows, grouped heads.
    #[test]
    fn attention_is_softmax_of_scaled_scores_times_values() {
        let (n_heads, n_kv, hd, start, t) = (6, 2, 16, 5, 3);
        let kv = cache(start + t, n_kv, hd);
        let q: Vec<f32> = (0..t * n_heads * hd)
            .map(|i| ((i * 29 % 61) as f32 - 30.0) / 25.0)
            .collect();
        let out = attention(&q, &kv, t, start, n_heads, n_kv, hd);
        let width = n_kv * hd;
        for r in 0..t {
            for h in 0..n_heads {
                let g = h / (n_heads / n_kv);
                let query = &q[(r * n_heads + h) * hd..][..hd];
                let seen = start + r + 1;
                let scores: Vec<f64> = (0..seen)
                    .map(|j| {
                        let k = &kv.keys[j * width + g * hd..][..hd];
                        let s: f64 = query.iter().zip(k).map(|(a, b)| (a * b) as f64).sum();
                        s / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for c in 0..hd {
                    let want: f64 = (0..seen)
                        .map(|j| {
                            (scores[j] - max).exp() / z * kv.values[j * width + g * hd + c] as f64
                        })
                        .sum();
                    let got = out[(r * n_heads + h) * hd + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "row {r} head {h} value {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The AVX2 build of a head's attention gives the baseline build's bits.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn attention_is_bit_exact_with_and_without_avx2() {
        if !crate::quant_matmul::avx2_detected() {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        }
        for (seen, hd) in [(1, 64), (37, 64), (300, 64), (9, 20)] {
            let kv = cache(seen, 3, hd);
            let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.37).sin()).collect();
            let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
            let head = Head {
                query: &q,
                kv: &kv,
                offset: hd,
                width: 3 * hd,
                seen,
                scale: 0.125,
            };
            attend_body(&head, &mut a);
            // SAFETY: AVX2 was detected.
            unsafe { attend_avx2(&head, &mut b) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{seen} positions of {hd}");
        }
    }

    #[test]
    fn dot_is_the_sum_of_products_at_any_length() {
        for n in [0, 1, 7, 8, 9, 64, 67] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n = {n}");
        }
    }
}
