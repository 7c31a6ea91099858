//! Fixed-bucket histograms with Envoy's default boundaries.

use serde::{Deserialize, Serialize};

/// Envoy's default histogram bucket upper bounds (`source/common/stats/histogram_impl.h`,
/// `HistogramSettingsImpl::defaultBuckets`), used by Istio for `istio_request_duration_milliseconds`
/// (milliseconds) and `istio_request_bytes`/`istio_response_bytes` (bytes).
pub const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Integer form of [`ENVOY_BUCKETS`] for integral observations: `v <= bound` ⇔ `v <= floor`.
const INT_BOUNDS: [u64; 19] = [
    0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
];

/// A histogram of non-negative integer observations (milliseconds or bytes) over
/// [`ENVOY_BUCKETS`]. Bucket counts are per bucket (not cumulative); index 19 is `+Inf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations per bucket; `counts[i]` holds values in `(ENVOY_BUCKETS[i-1], ENVOY_BUCKETS[i]]`.
    pub counts: [u64; 20],
    /// Sum of observations (exact: observations are integers).
    pub sum: u64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&mut self, v: u64) {
        self.counts[Histogram::bucket(v)] += 1;
        self.sum = self.sum.saturating_add(v);
    }

    /// Index into [`Histogram::counts`] of the bucket holding `v` (0..=19; 19 is `+Inf`).
    #[inline]
    pub fn bucket(v: u64) -> usize {
        INT_BOUNDS.partition_point(|&b| b < v)
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram into this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Cumulative counts for `le` = each of [`ENVOY_BUCKETS`] then `+Inf`.
    pub fn cumulative(&self) -> [u64; 20] {
        let mut out = [0; 20];
        let mut acc = 0;
        for (o, c) in out.iter_mut().zip(self.counts.iter()) {
            acc += c;
            *o = acc;
        }
        out
    }

    /// Estimates the `q` quantile the way PromQL's `histogram_quantile` does (linear
    /// interpolation inside the bucket, lower bound 0 for the first bucket, the highest finite
    /// bound for `+Inf`). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let cum = self.cumulative();
        let i = cum.iter().position(|&c| {
            #[allow(clippy::cast_precision_loss)]
            let c = c as f64;
            c >= rank
        })?;
        if i == 19 {
            return Some(ENVOY_BUCKETS[18]);
        }
        let lower = if i == 0 { 0.0 } else { ENVOY_BUCKETS[i - 1] };
        let upper = ENVOY_BUCKETS[i];
        let below = if i == 0 { 0 } else { cum[i - 1] };
        let in_bucket = cum[i] - below;
        if in_bucket == 0 {
            return Some(upper);
        }
        #[allow(clippy::cast_precision_loss)]
        let frac = (rank - below as f64) / in_bucket as f64;
        Some(lower + (upper - lower) * frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_observations_land_in_envoy_buckets() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 5, 6, 3_600_000, 3_600_001] {
            h.observe(v);
        }
        assert_eq!(h.counts[0], 1, "0 <= 0.5");
        assert_eq!(h.counts[1], 1, "1 <= 1");
        assert_eq!(h.counts[2], 2, "2 and 5 <= 5");
        assert_eq!(h.counts[3], 1, "6 <= 10");
        assert_eq!(h.counts[18], 1);
        assert_eq!(h.counts[19], 1, "+Inf");
        assert_eq!(h.count(), 7);
        assert_eq!(h.cumulative()[19], 7);
    }

    #[test]
    fn quantile_matches_promql_interpolation() {
        let mut h = Histogram::default();
        for _ in 0..10 {
            h.observe(20); // bucket (10, 25]
        }
        // rank 5 of 10 in (10,25] → 10 + 15 * 0.5
        assert_eq!(h.quantile(0.5), Some(17.5));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
