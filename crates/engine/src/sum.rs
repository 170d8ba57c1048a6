//! Exact sums and means of sample values.
//!
//! Floating-point addition is not associative, so a plain `f64` sum could differ in its last bits
//! depending on the order samples arrive in or how partial windows were merged, and a mean lying
//! on a rounding boundary could then round differently. Summing in 128-bit fixed point makes
//! every sum exact and so independent of order and grouping.

use qss_domain::Num;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// 2^64: sample values are kept with 64 fractional bits. That is far finer than the 2-decimal
/// output, and leaves 63 integer bits: room for about 10^14 samples of the largest valid value
/// (100,000, SPEC 4) before the sum could saturate.
const SCALE: f64 = 18_446_744_073_709_551_616.0;

/// An exact sum of finite `f64` values in fixed point (bits below 2^-64 are dropped, the same
/// way for every value, so the result still depends only on the multiset of values added).
///
/// The `i128` is stored as two 64-bit halves: an `i128` field is 16-byte aligned, which padded
/// every [`Mean`] to 32 bytes where 24 suffice, and a window accumulator holds up to sixteen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExactSum {
    low: u64,
    high: i64,
}

impl ExactSum {
    fn get(self) -> i128 {
        (i128::from(self.high) << 64) | i128::from(self.low)
    }

    fn set(&mut self, v: i128) {
        // Truncation is the point: the low and high 64 bits.
        self.low = v as u64;
        self.high = (v >> 64) as i64;
    }

    pub(crate) fn add(&mut self, x: f64) {
        // `x * SCALE` is exact (a power of two); `as` truncates toward zero and saturates.
        self.set(self.get().saturating_add((x * SCALE) as i128));
    }

    pub(crate) fn merge(&mut self, other: ExactSum) {
        self.set(self.get().saturating_add(other.get()));
    }

    pub(crate) fn value(self) -> f64 {
        self.get() as f64 / SCALE
    }
}

// Serialised as a decimal string: not every format carries 128-bit integers.
impl Serialize for ExactSum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.get().to_string())
    }
}

impl<'de> Deserialize<'de> for ExactSum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v: i128 = s.parse().map_err(serde::de::Error::custom)?;
        let mut sum = ExactSum::default();
        sum.set(v);
        Ok(sum)
    }
}

/// The running mean of one field: an exact sum and how many samples carried the field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mean {
    sum: ExactSum,
    count: u64,
}

impl Mean {
    pub(crate) fn add(&mut self, x: f64) {
        self.sum.add(x);
        self.count += 1;
    }

    pub(crate) fn merge(&mut self, other: &Mean) {
        self.sum.merge(other.sum);
        self.count += other.count;
    }

    /// The mean, or `None` when no sample carried the field (absent, never zero: SPEC 5.2).
    pub(crate) fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.value() / self.count as f64)
    }

    /// The mean as a payload number (2 decimals).
    pub(crate) fn rounded(&self) -> Option<Num> {
        self.mean().map(Num::rounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_whatever_the_order() {
        let values = [0.1, 1e5, 0.2, 3.3e-3, 99_999.99, 0.3];
        let mut forward = ExactSum::default();
        values.iter().for_each(|&v| forward.add(v));
        let mut backward = ExactSum::default();
        values.iter().rev().for_each(|&v| backward.add(v));
        assert_eq!(forward, backward);
    }

    #[test]
    fn negative_and_saturated_sums_survive_the_split_into_halves() {
        let mut sum = ExactSum::default();
        sum.add(-0.5);
        sum.add(-1e5);
        assert_eq!(sum.value(), -100_000.5);
        for v in [i128::MIN, -1, 0, 1 << 64, i128::MAX] {
            let mut s = ExactSum::default();
            s.set(v);
            assert_eq!(s.get(), v);
        }
        let mut big = ExactSum::default();
        big.set(i128::MAX);
        big.add(1.0);
        assert_eq!(big.get(), i128::MAX);
        assert_eq!(std::mem::size_of::<Mean>(), 24);
    }

    #[test]
    fn a_field_no_sample_carried_has_no_mean() {
        assert_eq!(Mean::default().mean(), None);
    }

    #[test]
    fn sums_survive_a_round_trip_through_json() {
        let mut m = Mean::default();
        m.add(12.345);
        m.add(1e5);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Mean>(&json).unwrap(), m);
    }
}
