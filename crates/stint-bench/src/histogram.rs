//! A latency histogram with log-linear buckets: three significant digits over the whole `u64` range of
//! nanoseconds, in at most [`MAX_BUCKETS`] counters (≈ 440 KiB), grown only as far as the largest value
//! recorded (≈ 150 KiB for latencies up to 100 ms).
//!
//! Values below 2048 ns are counted exactly. Above, each power-of-two range `[2^k, 2^(k+1))` is cut into
//! 1024 equal buckets, so a bucket is never wider than 1/1024 of its values (like HdrHistogram with three
//! significant digits). A percentile answers the highest value its bucket stands for, clamped to the largest
//! value recorded: it is never below the exact percentile and at most 0.1 % above it. Count, sum (hence
//! mean), min and max are exact.

use std::time::Duration;

use serde::Serialize;

/// Exactly counted values: `0..SUB_BUCKETS`.
const SUB_BUCKETS: u64 = 2048;
/// Buckets per power of two above `SUB_BUCKETS`.
const HALF: u64 = SUB_BUCKETS / 2;
/// log2(`HALF`).
const HALF_BITS: u32 = 10;
/// The most counters a histogram ever holds (`u64::MAX` falls in the last one).
pub const MAX_BUCKETS: usize = (SUB_BUCKETS + (63 - HALF_BITS as u64) * HALF) as usize;

/// Latencies in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency (saturating at `u64::MAX` nanoseconds, ≈ 584 years).
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value in nanoseconds.
    pub fn record_ns(&mut self, value: u64) {
        let index = bucket_index(value);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.count += 1;
        self.sum += u128::from(value);
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.count == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value recorded (zero when empty).
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.min)
    }

    /// The largest value recorded (zero when empty).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// The exact mean (zero when empty).
    pub fn mean(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => Duration::from_nanos(u64::try_from(self.sum / u128::from(n)).unwrap_or(u64::MAX)),
        }
    }

    /// The `q`-quantile (`0.0..=1.0`, e.g. `0.99`) by the nearest-rank method; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.quantile_ns(q))
    }

    /// [`Histogram::quantile`] in nanoseconds.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = nearest_rank(q, self.count);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_highest(index).min(self.max);
            }
        }
        self.max
    }

    /// The figures a report shows.
    pub fn summary(&self) -> Summary {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Summary {
            count: self.count,
            mean_ms: ms(self.mean()),
            p50_ms: ms(self.quantile(0.5)),
            p90_ms: ms(self.quantile(0.9)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max()),
        }
    }
}

/// A histogram's figures in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Exact mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Exact maximum.
    pub max_ms: f64,
}

/// The 1-based rank of the `q`-quantile among `n` sorted values (nearest-rank method): `ceil(q·n)`,
/// at least 1 and at most `n`. The tiny epsilon keeps `0.999 × 1000` at 999 despite floating point.
pub fn nearest_rank(q: f64, n: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = (q * n as f64 - 1e-9).ceil().max(1.0) as u64;
    rank.min(n)
}

fn bucket_index(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    // INVARIANT: value ≥ 2048, so msb ≥ 11 and shift ≥ 1; `value >> shift` lies in [1024, 2048).
    let msb = 63 - value.leading_zeros();
    let shift = msb - HALF_BITS;
    (SUB_BUCKETS + u64::from(shift - 1) * HALF + ((value >> shift) - HALF)) as usize
}

fn bucket_lowest(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let above = index - SUB_BUCKETS;
    let shift = above / HALF + 1;
    (HALF + above % HALF) << shift
}

fn bucket_highest(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = (index - SUB_BUCKETS) / HALF + 1;
    bucket_lowest(index as usize) + ((1u64 << shift) - 1)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so the tests need no `rand`.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        sorted[nearest_rank(q, sorted.len() as u64) as usize - 1]
    }

    const QUANTILES: [f64; 9] = [0.0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0];

    /// Latencies spread log-uniformly from 1 µs to ≈ 17 s, the range a benchmark sees.
    fn latencies(seed: u64, n: usize) -> Vec<u64> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let exp = 10 + rng.next() % 24;
                (1u64 << exp) + rng.next() % (1u64 << exp)
            })
            .collect()
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record_ns(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.quantile_ns(0.5), 500);
        assert_eq!(h.quantile_ns(0.9), 900);
        assert_eq!(h.quantile_ns(0.99), 990);
        assert_eq!(h.quantile_ns(0.999), 999);
        assert_eq!(h.quantile_ns(1.0), 1000);
        assert_eq!(h.quantile_ns(0.0), 1);
        assert_eq!(h.min(), Duration::from_nanos(1));
        assert_eq!(h.max(), Duration::from_nanos(1000));
        // The mean is exact: 500.5 ns, truncated to whole nanoseconds.
        assert_eq!(h.mean(), Duration::from_nanos(500));
    }

    #[test]
    fn known_millisecond_data_within_a_tenth_of_a_percent() {
        // 1 ms, 2 ms, …, 100 ms: the p99 is exactly 99 ms.
        let mut h = Histogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p99 = h.quantile(0.99).as_nanos() as f64;
        assert!((99e6..=99e6 * (1.0 + 1.0 / 1024.0)).contains(&p99), "{p99}");
        let p50 = h.quantile(0.5).as_nanos() as f64;
        assert!((50e6..=50e6 * (1.0 + 1.0 / 1024.0)).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), Duration::from_millis(100));
        assert_eq!(h.mean(), Duration::from_micros(50_500));
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn random_data_quantiles_match_exact_within_bucket_precision() {
        let data = latencies(0x9E37_79B9_7F4A_7C15, 100_000);
        let mut h = Histogram::new();
        for &v in &data {
            h.record_ns(v);
        }
        let mut sorted = data.clone();
        sorted.sort_unstable();
        for q in QUANTILES {
            let exact = exact_quantile(&sorted, q);
            let got = h.quantile_ns(q);
            assert!(got >= exact, "q={q}: {got} < exact {exact}");
            assert!(got - exact <= exact / 1024, "q={q}: {got} vs exact {exact}");
        }
        let mean = (data.iter().map(|&v| u128::from(v)).sum::<u128>() / data.len() as u128) as u64;
        assert_eq!(h.mean(), Duration::from_nanos(mean));
        assert_eq!(h.max(), Duration::from_nanos(*sorted.last().unwrap()));
        assert_eq!(h.min(), Duration::from_nanos(sorted[0]));
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let data = latencies(42, 20_000);
        let (a, b) = data.split_at(7_000);
        let mut whole = Histogram::new();
        let mut left = Histogram::new();
        let mut right = Histogram::new();
        data.iter().for_each(|&v| whole.record_ns(v));
        a.iter().for_each(|&v| left.record_ns(v));
        b.iter().for_each(|&v| right.record_ns(v));
        let mut merged = Histogram::new();
        merged.merge(&right);
        merged.merge(&Histogram::new());
        merged.merge(&left);
        assert_eq!(merged.count(), whole.count());
        assert_eq!(
            (merged.min(), merged.max(), merged.mean()),
            (whole.min(), whole.max(), whole.mean())
        );
        for q in QUANTILES {
            assert_eq!(merged.quantile_ns(q), whole.quantile_ns(q), "q={q}");
        }
    }

    #[test]
    fn every_value_falls_in_a_bucket_no_wider_than_a_thousandth() {
        let mut rng = Rng(7);
        let edges = [0, 1, 2047, 2048, 2049, 4095, 4096, u64::MAX - 1, u64::MAX];
        let values = edges
            .into_iter()
            .chain((0..100_000).map(|_| rng.next() >> (rng.next() % 64)));
        for v in values {
            let i = bucket_index(v);
            assert!(i < MAX_BUCKETS, "{v} -> {i}");
            let (lo, hi) = (bucket_lowest(i), bucket_highest(i));
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}] (bucket {i})");
            assert!(hi - lo <= (v / 1024).max(1), "{v}: bucket [{lo}, {hi}] too wide");
        }
        // Buckets tile the line: each starts right after the previous one ends.
        for i in 1..MAX_BUCKETS {
            assert_eq!(bucket_lowest(i), bucket_highest(i - 1) + 1, "bucket {i}");
        }
        assert_eq!(bucket_highest(MAX_BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn memory_is_bounded_even_for_huge_values() {
        let mut h = Histogram::new();
        h.record(Duration::MAX);
        h.record_ns(0);
        assert!(h.counts.len() <= MAX_BUCKETS);
        assert_eq!(h.quantile_ns(1.0), u64::MAX);
        assert_eq!(h.quantile_ns(0.5), 0);
    }

    #[test]
    fn empty_histogram_answers_zero() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
        assert_eq!(h.summary().count, 0);
    }
}
