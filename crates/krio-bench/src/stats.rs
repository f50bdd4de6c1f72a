//! Percentiles and summaries of latency samples.

use serde::{Deserialize, Serialize};

/// Percentile `p` (0..=100) of already **sorted** samples, by linear interpolation between the two
/// closest ranks (the "linear" / type-7 definition used by numpy and R's default).
///
/// Returns `None` for an empty slice or a `p` outside 0..=100 or NaN.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    Some(a + (b - a) * (rank - lo as f64))
}

/// Percentile `p` (0..=100) of unsorted samples; NaNs are dropped. See [`percentile_sorted`].
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let sorted = sorted_finite(samples);
    percentile_sorted(&sorted, p)
}

fn sorted_finite(samples: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Summary of one metric's samples, in the metric's own unit (see [`crate::results::Metric::unit`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples (NaNs excluded).
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median (50th percentile, linear interpolation).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarizes the samples; `None` when there are none (after dropping NaNs).
    pub fn from_samples(samples: &[f64]) -> Option<Summary> {
        let s = sorted_finite(samples);
        let first = *s.first()?;
        let last = *s.last()?;
        Some(Summary {
            n: s.len(),
            min: first,
            p50: percentile_sorted(&s, 50.0)?,
            p90: percentile_sorted(&s, 90.0)?,
            p99: percentile_sorted(&s, 99.0)?,
            max: last,
            mean: s.iter().sum::<f64>() / s.len() as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_basics() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 0.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 100.0), Some(4.0));
        assert_eq!(percentile(&[1.0, 2.0], 101.0), None);
        assert_eq!(percentile(&[1.0, 2.0], -1.0), None);
        assert_eq!(percentile(&[1.0, 2.0], f64::NAN), None);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile(range(1, 101), 99) == 99.01; p90 == 90.1
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 99.0).unwrap() - 99.01).abs() < 1e-9);
        assert!((percentile(&v, 90.0).unwrap() - 90.1).abs() < 1e-9);
        assert!((percentile(&v, 50.0).unwrap() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn summary_ignores_nan_and_order() {
        let s = Summary::from_samples(&[5.0, f64::NAN, 1.0, 3.0]).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.p50, 3.0);
        assert!((s.mean - 3.0).abs() < 1e-12);
        assert!(Summary::from_samples(&[f64::NAN]).is_none());
    }
}
