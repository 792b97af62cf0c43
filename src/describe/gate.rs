//! The scene-change gate: a frame goes on to the language model when its features moved
//! away from the last described frame's (cosine distance above `change`), or when
//! `max_interval` passed. It sits after the encoders because its distance is between the
//! classifier's features; what it saves is the language model's work.

use std::time::{Duration, Instant};

use pipeline::{Envelope, Input, Output, StageContext, StageResult};

use super::graph::Seen;

/// Passes a scene when it changed or when it was last described long ago.
pub struct Gate {
    pub change: f32,
    pub max_interval: Duration,
}

impl Gate {
    pub fn run(
        &self,
        ctx: &StageContext,
        input: Input<Envelope<Seen>>,
        output: &Output<Envelope<Seen>>,
    ) -> StageResult {
        let mut last: Option<(Vec<f32>, Instant)> = None;
        for seen in input {
            ctx.item_in();
            let feature = &seen.payload.scene.whole.feature;
            let pass = match &last {
                None => true,
                Some((f, at)) => {
                    cosine_distance(f, feature) > self.change
                        || seen.captured.saturating_duration_since(*at) >= self.max_interval
                }
            };
            if pass {
                last = Some((feature.clone(), seen.captured));
                let captured = seen.captured;
                output.send(seen)?;
                ctx.item_out_since(captured);
            }
        }
        Ok(())
    }
}

/// `1 - a.b / (|a| |b|)`: 0 for the same direction, 1 for orthogonal features.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 0.0 } else { 1.0 };
    }
    1.0 - dot / (na * nb)
}

#[cfg(test)]
mod tests {
    use super::cosine_distance;

    #[test]
    fn cosine_distance_of_same_opposite_and_orthogonal() {
        assert!(cosine_distance(&[1.0, 2.0], &[2.0, 4.0]).abs() < 1e-6);
        assert!((cosine_distance(&[1.0, 0.0], &[0.0, 3.0]) - 1.0).abs() < 1e-6);
        assert!((cosine_distance(&[1.0, 0.0], &[-1.0, 0.0]) - 2.0).abs() < 1e-6);
        assert_eq!(cosine_distance(&[0.0], &[0.0]), 0.0);
    }
}
