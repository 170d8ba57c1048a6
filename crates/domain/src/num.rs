//! Numbers as they appear in event payloads: rounded half away from zero to two decimals and
//! written the way JavaScript's `JSON.stringify` writes them (`64`, never `64.0`; never `-0`).
//! Webhook receivers that re-serialise the body (Zoom's SDK does) then verify the same bytes.

use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Deserialize, Default)]
#[serde(transparent)]
pub struct Num(pub f64);

/// Rounds half away from zero to 2 decimals. The `1e-9` nudge absorbs binary representation
/// error (`1.005` is stored as `1.00499999...`), so values typed with 3 decimals round as a
/// person expects.
pub fn round2(x: f64) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let scaled = x * 100.0;
    let nudged = scaled + scaled.signum() * 1e-9 * scaled.abs().max(1.0);
    let r = nudged.abs().round().copysign(x) / 100.0;
    if r == 0.0 { 0.0 } else { r }
}

impl Num {
    /// A payload number: rounded to 2 decimals.
    pub fn rounded(x: f64) -> Self {
        Num(round2(x))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v == 0.0 || !v.is_finite() {
            return s.serialize_i64(0);
        }
        if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
            return s.serialize_i64(v as i64);
        }
        s.serialize_f64(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero() {
        for (input, expected) in [
            (1.005, 1.01),
            (1.004, 1.0),
            (-1.005, -1.01),
            (2.675, 2.68),
            (0.125, 0.13),
            (-0.001, 0.0),
            (92.345, 92.35),
        ] {
            assert_eq!(round2(input), expected, "round2({input})");
        }
    }

    #[test]
    fn whole_numbers_have_no_fraction_and_zero_has_no_sign() {
        let v = serde_json::to_string(&[Num(64.0), Num(-0.0), Num(0.5), Num(-2.25)]).unwrap();
        assert_eq!(v, "[64,0,0.5,-2.25]");
    }
}
