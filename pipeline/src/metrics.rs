//! Latency percentiles in constant memory: a histogram with buckets 5% wide, from 1 µs up.

use std::time::Duration;

use serde::Serialize;

/// Bucket `i` holds latencies in `[1.05^i, 1.05^(i+1))` microseconds; the last one
/// everything above (about 22 minutes).
const BUCKETS: usize = 440;
const GROWTH: f64 = 1.05;

#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: Duration::ZERO,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        let us = latency.as_secs_f64() * 1e6;
        let bucket = if us < 1.0 {
            0
        } else {
            ((us.ln() / GROWTH.ln()) as usize).min(BUCKETS - 1)
        };
        self.counts[bucket] += 1;
        self.total += 1;
        self.max = self.max.max(latency);
    }

    /// The upper edge of the bucket holding quantile `q` (so within 5% above the truth).
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper_us = GROWTH.powi(i as i32 + 1);
                return (upper_us / 1e3).min(self.max.as_secs_f64() * 1e3);
            }
        }
        self.max.as_secs_f64() * 1e3
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.total,
            p50_ms: self.quantile_ms(0.50),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
            max_ms: self.max.as_secs_f64() * 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_a_bucket_of_the_truth() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 100);
        for (got, want) in [(p.p50_ms, 50.0), (p.p95_ms, 95.0), (p.p99_ms, 99.0)] {
            assert!(got >= want && got <= want * 1.06, "{got} vs {want}");
        }
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(LatencyHistogram::default().percentiles().p99_ms, 0.0);
    }
}
