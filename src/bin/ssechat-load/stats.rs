//! Latency percentiles, recorded from many tasks at once without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Each bucket is 1% wider than the last, from 1 µs to about 1,000 s: percentiles are
/// exact to 1%, and recording is one atomic add.
const GROWTH: f64 = 1.01;
const BUCKETS: usize = 2100;

pub struct AtomicLatency {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl AtomicLatency {
    pub fn new() -> Self {
        Self { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), max_us: AtomicU64::new(0) }
    }

    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_us(&self, us: u64) {
        let index = if us <= 1 { 0 } else { ((us as f64).ln() / GROWTH.ln()) as usize };
        self.buckets[index.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency below which a fraction `q` of samples fall, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let count = self.count();
        if count == 0 {
            return 0.0;
        }
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                // The bucket's upper edge, but never above the largest sample.
                let edge = GROWTH.powi(i as i32 + 1);
                return edge.min(self.max_us.load(Ordering::Relaxed) as f64) / 1000.0;
            }
        }
        self.max_ms()
    }

    pub fn max_ms(&self) -> f64 {
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// `p50 / p99 / max` in milliseconds.
    pub fn summary(&self) -> String {
        if self.count() == 0 {
            return "-".to_owned();
        }
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            self.max_ms()
        )
    }
}
