//! The distribution of one number over a meeting instance, for the summary's
//! `{avg, min, max, p50, p95}` (SPEC 5.3).
//!
//! A long, large meeting can carry millions of values per field, so values are kept exactly only
//! up to [`EXACT_CAP`]; past that they go into a log-bucket sketch in the style of DDSketch,
//! whose quantiles are within 0.5% of the true nearest-rank value (SPEC allows 1%). The count,
//! the sum (exact), the minimum and the maximum are always exact; only p50 and p95 can be
//! approximate. Zero has a bucket of its own, so a percentile that is 0 is exactly 0.
//!
//! Whether a distribution is exact depends only on how many values it holds, and a value's bucket
//! only on the value, so the result does not depend on the order values arrive in or on how
//! partial distributions are merged.
//!
//! Memory: a summary holds one distribution per field (ten for audio, video and CPU), so with
//! thousands of open meetings the exact values dominated the server's resident set (32 KiB per
//! field at the old cap of 4096). The cap is now 2 KiB, and the sketch is a dense array of `u32`
//! counts over the buckets between the smallest and largest value seen: real fields span tens
//! to a few hundred buckets (a kilobyte or so), and a validated one at most the 1,850 from the
//! floor below to 100,000 (7.4 KB).

use std::collections::BTreeMap;

use qss_domain::Num;
use qss_domain::event::Stats;
use serde::{Deserialize, Serialize};

use crate::sum::ExactSum;

/// How many values one distribution keeps exactly before switching to the sketch: 2 KiB, which
/// keeps small meetings (a few participants for tens of minutes) exact.
pub const EXACT_CAP: usize = 256;

/// Relative accuracy of the sketch's bucket representatives.
const ALPHA: f64 = 0.005;
/// Bucket `i` holds the magnitudes in `(GAMMA^(i-1), GAMMA^i]`.
const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);
/// Magnitudes up to this share the sketch's lowest bucket, so that one tiny value cannot stretch
/// the dense bucket array over tens of thousands of buckets (`5e-324` would be bucket -74,000).
/// Such values print as 0 (2 decimals, SPEC 5.2) whichever bucket they sit in, and a reported
/// percentile is clamped to the observed range, so the payload is the same.
const FLOOR: f64 = 1e-3;

/// Values of one number: exact up to [`EXACT_CAP`], sketched beyond.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    count: u64,
    sum: ExactSum,
    /// `(min, max)`, once a value has been added.
    range: Option<(f64, f64)>,
    values: Values,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Values {
    /// Every value, in arrival order; holds exactly when `count <= EXACT_CAP`.
    Exact(Vec<f64>),
    Sketch(Sketch),
}

impl Default for Values {
    fn default() -> Self {
        Values::Exact(Vec::new())
    }
}

impl Distribution {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one finite value.
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        self.sum.add(x);
        self.range = Some(match self.range {
            None => (x, x),
            Some((lo, hi)) => (lo.min(x), hi.max(x)),
        });
        match &mut self.values {
            Values::Exact(v) => {
                v.push(x);
                if v.len() > EXACT_CAP {
                    self.values = Values::Sketch(Sketch::from_values(v));
                }
            }
            Values::Sketch(s) => s.add(x),
        }
    }

    /// Adds every value of `other`, as if they had been added one by one.
    pub fn merge(&mut self, other: &Distribution) {
        self.count += other.count;
        self.sum.merge(other.sum);
        self.range = match (self.range, other.range) {
            (None, r) | (r, None) => r,
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        };
        let values = std::mem::take(&mut self.values);
        self.values = match (values, &other.values) {
            (Values::Exact(mut ours), Values::Exact(theirs))
                if ours.len() + theirs.len() <= EXACT_CAP =>
            {
                ours.extend_from_slice(theirs);
                Values::Exact(ours)
            }
            (ours, theirs) => {
                let mut sketch = ours.into_sketch();
                match theirs {
                    Values::Exact(v) => v.iter().for_each(|&x| sketch.add(x)),
                    Values::Sketch(s) => sketch.merge(s),
                }
                Values::Sketch(sketch)
            }
        };
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether percentiles are still exact (at most [`EXACT_CAP`] values).
    pub fn is_exact(&self) -> bool {
        matches!(self.values, Values::Exact(_))
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.value() / self.count as f64)
    }

    pub fn min(&self) -> Option<f64> {
        self.range.map(|(lo, _)| lo)
    }

    pub fn max(&self) -> Option<f64> {
        self.range.map(|(_, hi)| hi)
    }

    /// The `n`th percentile by nearest rank: the ⌈n/100 · count⌉-th smallest value (at least the
    /// first). Exact while [`Distribution::is_exact`], else within 0.5% of it (or, for a value
    /// of magnitude below 0.001, at most 0.001 from it: both print as 0).
    pub fn percentile(&self, n: u32) -> Option<f64> {
        let (lo, hi) = self.range?;
        let rank = nearest_rank(n, self.count);
        if rank <= 1 {
            return Some(lo);
        }
        if rank >= self.count {
            return Some(hi);
        }
        match &self.values {
            Values::Exact(v) => {
                let mut sorted = v.clone();
                let (_, nth, _) = sorted.select_nth_unstable_by(rank as usize - 1, f64::total_cmp);
                Some(*nth)
            }
            // The representative of a bucket may lie just outside the observed range.
            Values::Sketch(s) => Some(s.value_at_rank(rank).clamp(lo, hi)),
        }
    }

    /// `{avg, min, max, p50, p95}` as payload numbers, or `None` when no value was added.
    pub fn stats(&self) -> Option<Stats> {
        Some(Stats {
            avg: Num::rounded(self.mean()?),
            min: Num::rounded(self.min()?),
            max: Num::rounded(self.max()?),
            p50: Num::rounded(self.percentile(50)?),
            p95: Num::rounded(self.percentile(95)?),
        })
    }

    /// A rough size in bytes, for memory accounting.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match &self.values {
                Values::Exact(v) => v.capacity() * std::mem::size_of::<f64>(),
                Values::Sketch(s) => s.heap_bytes(),
            }
    }
}

/// ⌈n · count / 100⌉ in integers, so that no float error moves the rank (0.95 · 20 must be 19).
fn nearest_rank(n: u32, count: u64) -> u64 {
    (u64::from(n) * count).div_ceil(100).max(1)
}

impl Values {
    fn into_sketch(self) -> Sketch {
        match self {
            Values::Exact(v) => Sketch::from_values(&v),
            Values::Sketch(s) => s,
        }
    }
}

/// Log-spaced buckets of counts. Values are validated non-negative (SPEC 4), but negative ones
/// are kept in mirrored buckets rather than silently misplaced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Sketch {
    zeros: u64,
    positive: Buckets,
    negative: Buckets,
}

impl Sketch {
    fn from_values(values: &[f64]) -> Self {
        let mut s = Sketch::default();
        values.iter().for_each(|&x| s.add(x));
        s
    }

    fn add(&mut self, x: f64) {
        if x == 0.0 {
            self.zeros += 1;
        } else if x > 0.0 {
            self.positive.add(bucket_of(x), 1);
        } else {
            self.negative.add(bucket_of(-x), 1);
        }
    }

    fn merge(&mut self, other: &Sketch) {
        self.zeros += other.zeros;
        for (i, c) in other.positive.iter() {
            self.positive.add(i, c);
        }
        for (i, c) in other.negative.iter() {
            self.negative.add(i, c);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.positive.heap_bytes() + self.negative.heap_bytes()
    }

    /// The representative of the bucket holding the `rank`-th smallest value (1-based).
    fn value_at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0;
        // Ascending order: the most negative first, i.e. negative buckets by descending index.
        for (i, c) in self.negative.iter().rev() {
            seen += c;
            if seen >= rank {
                return -representative(i);
            }
        }
        seen += self.zeros;
        if seen >= rank {
            return 0.0;
        }
        for (i, c) in self.positive.iter() {
            seen += c;
            if seen >= rank {
                return representative(i);
            }
        }
        // Unreachable while rank <= count; the caller clamps to the maximum anyway.
        f64::INFINITY
    }
}

/// The counts of the consecutive buckets `first..first + counts.len()`: 4 bytes a bucket, where
/// a `BTreeMap<i32, u64>` took about 30 with its node slack. The array is kept tight (nonzero
/// counts at both ends, no spare capacity), so equal contents have equal representations.
///
/// Counts are `u32`: past `u32::MAX` a bucket carries into `high`, which holds the upper 32 bits
/// of the few counts that need them (none, short of four billion values of one field of one
/// meeting instance in one bucket) so that no count ever wraps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Buckets {
    first: i32,
    counts: Vec<u32>,
    high: BTreeMap<i32, u64>,
}

impl Buckets {
    fn add(&mut self, i: i32, n: u64) {
        if self.counts.is_empty() {
            self.first = i;
            self.counts.reserve_exact(1);
            self.counts.push(0);
        } else if i < self.first {
            let grow = (self.first - i) as usize;
            let mut counts = Vec::with_capacity(self.counts.len() + grow);
            counts.resize(grow, 0);
            counts.extend_from_slice(&self.counts);
            self.counts = counts;
            self.first = i;
        } else if (i - self.first) as usize >= self.counts.len() {
            let len = (i - self.first) as usize + 1;
            self.counts.reserve_exact(len - self.counts.len());
            self.counts.resize(len, 0);
        }
        let slot = &mut self.counts[(i - self.first) as usize];
        let total = u64::from(*slot) + n;
        *slot = total as u32;
        let carry = total >> 32;
        if carry > 0 {
            *self.high.entry(i).or_default() += carry;
        }
    }

    /// `(bucket, count)` of the nonempty buckets, ascending.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(k, &low)| {
                let i = self.first + k as i32;
                let high = self.high.get(&i).copied().unwrap_or(0);
                (i, (high << 32) + u64::from(low))
            })
            .filter(|&(_, c)| c > 0)
    }

    fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u32>() + self.high.len() * 32
    }
}

fn bucket_of(magnitude: f64) -> i32 {
    (magnitude.max(FLOOR).ln() / GAMMA.ln()).ceil() as i32
}

/// The point of bucket `i` within `ALPHA` relative distance of both of its ends.
fn representative(i: i32) -> f64 {
    2.0 * GAMMA.powi(i) / (GAMMA + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[f64]) -> Distribution {
        let mut d = Distribution::new();
        values.iter().for_each(|&x| d.add(x));
        d
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // n = 20: p50 is the 10th smallest, p95 the 19th.
        let d = of(&(1..=20).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!(d.percentile(50), Some(10.0));
        assert_eq!(d.percentile(95), Some(19.0));
        // n = 1 and n = 3: the rank is at least 1 and rounds up.
        assert_eq!(of(&[7.0]).percentile(50), Some(7.0));
        assert_eq!(of(&[3.0, 1.0, 2.0]).percentile(50), Some(2.0));
        assert_eq!(of(&[3.0, 1.0, 2.0]).percentile(95), Some(3.0));
    }

    #[test]
    fn an_empty_distribution_has_no_stats() {
        assert_eq!(Distribution::new().stats(), None);
    }

    #[test]
    fn past_the_cap_values_are_sketched_within_one_percent() {
        let values: Vec<f64> = (0..3 * EXACT_CAP)
            .map(|i| (i % 977) as f64 * 1.37)
            .collect();
        let d = of(&values);
        assert!(!d.is_exact());
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for n in [1, 5, 50, 95, 99, 100] {
            let exact = sorted[nearest_rank(n, sorted.len() as u64) as usize - 1];
            let approx = d.percentile(n).unwrap();
            assert!(
                (approx - exact).abs() <= exact.abs() * 0.01,
                "p{n}: {approx} vs {exact}"
            );
        }
    }

    #[test]
    fn a_sketched_percentile_that_is_zero_is_exactly_zero() {
        let mut values = vec![0.0; EXACT_CAP];
        values.extend([5.0; 100]);
        let d = of(&values);
        assert!(!d.is_exact());
        assert_eq!(d.percentile(50), Some(0.0));
        assert_eq!(d.min(), Some(0.0));
        assert_eq!(d.max(), Some(5.0));
    }

    #[test]
    fn buckets_grow_at_both_ends_and_stay_tight() {
        let mut b = Buckets::default();
        b.add(10, 1);
        b.add(7, 2);
        b.add(12, 3);
        b.add(10, 1);
        assert_eq!((b.first, b.counts.as_slice()), (7, &[2, 0, 0, 2, 0, 3][..]));
        assert_eq!(b.counts.capacity(), b.counts.len());
        assert_eq!(b.iter().collect::<Vec<_>>(), [(7, 2), (10, 2), (12, 3)]);
        assert_eq!(b.iter().next_back(), Some((12, 3)));
    }

    #[test]
    fn a_bucket_count_past_u32_carries_instead_of_wrapping() {
        let mut b = Buckets::default();
        b.add(3, u64::from(u32::MAX));
        b.add(3, 2);
        b.add(4, 5);
        assert_eq!(b.iter().collect::<Vec<_>>(), [(3, (1 << 32) + 1), (4, 5)]);
        let mut merged = Buckets::default();
        for (i, c) in b.iter() {
            merged.add(i, c);
        }
        assert_eq!(merged, b);
    }

    #[test]
    fn a_tiny_value_does_not_stretch_the_sketch() {
        let mut values = vec![5e-324, 1e-9];
        values.extend((0..EXACT_CAP).map(|i| 40.0 + (i % 50) as f64));
        let d = of(&values);
        assert!(!d.is_exact());
        // From the floor (0.001) to 89: about 1,140 buckets, not 75,000.
        assert!(d.approx_bytes() < 8 * 1024, "{} bytes", d.approx_bytes());
        assert_eq!(d.min(), Some(5e-324));
        assert_eq!(d.stats().unwrap().min, Num(0.0));
        assert!((d.percentile(50).unwrap() - 64.0).abs() <= 64.0 * 0.005);
    }

    #[test]
    fn negative_values_sort_below_zero_in_the_sketch() {
        let mut values = vec![-10.0; 3000];
        values.extend([0.0; 1000]);
        values.extend([10.0; 3000]);
        let d = of(&values);
        assert!((d.percentile(5).unwrap() + 10.0).abs() <= 0.1);
        assert_eq!(d.percentile(50), Some(0.0));
        assert!((d.percentile(95).unwrap() - 10.0).abs() <= 0.1);
    }
}
