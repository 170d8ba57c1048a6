//! Choosing one string among a window's samples: the value of the latest sample that carries it
//! (`user_name`, `codec`, ...) and the most frequent value (`resolution`).
//!
//! "Latest" means the largest sample timestamp, not the last one to arrive, so that the choice
//! does not depend on arrival order; two samples with the same timestamp are told apart by the
//! larger value (byte-wise), which is arbitrary but deterministic.

use qss_domain::timefmt::Millis;
use serde::{Deserialize, Serialize};

/// The value of the latest sample that carried one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Latest(Option<(Millis, String)>);

impl Latest {
    pub(crate) fn offer(&mut self, ts: Millis, value: Option<&str>) {
        let Some(value) = value else { return };
        let newer = match &self.0 {
            None => true,
            Some((t, v)) => (ts, value) > (*t, v.as_str()),
        };
        if newer {
            self.0 = Some((ts, value.to_owned()));
        }
    }

    pub(crate) fn merge(&mut self, other: &Latest) {
        if let Some((ts, v)) = &other.0 {
            self.offer(*ts, Some(v));
        }
    }

    pub(crate) fn get(&self) -> Option<&str> {
        self.0.as_ref().map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    count: u64,
    latest: Millis,
}

/// Counts of each value, to pick the most frequent (SPEC 5.2: "ties: the latest").
///
/// A vector sorted by value rather than a `BTreeMap`: a window holds one to three distinct
/// resolutions, and a B-tree allocates a whole leaf (about 450 bytes) for the first. Kept
/// sorted and without spare capacity, so equal contents have equal representations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mode(Vec<(String, Seen)>);

impl Mode {
    pub(crate) fn add(&mut self, ts: Millis, value: Option<&str>) {
        let Some(value) = value else { return };
        self.count(value, 1, ts);
    }

    pub(crate) fn merge(&mut self, other: &Mode) {
        for (value, theirs) in &other.0 {
            self.count(value, theirs.count, theirs.latest);
        }
    }

    /// Adds `count` sightings of `value`, the latest at `latest`.
    fn count(&mut self, value: &str, count: u64, latest: Millis) {
        match self.0.binary_search_by(|(v, _)| v.as_str().cmp(value)) {
            Ok(k) => {
                let seen = &mut self.0[k].1;
                seen.count += count;
                seen.latest = seen.latest.max(latest);
            }
            Err(k) => {
                self.0.reserve_exact(1);
                self.0.insert(k, (value.to_owned(), Seen { count, latest }));
            }
        }
    }

    /// The most frequent value; among equally frequent ones, the one seen in the latest sample,
    /// then the larger value.
    pub(crate) fn most_frequent(&self) -> Option<&str> {
        self.0
            .iter()
            .max_by(|(va, a), (vb, b)| (a.count, a.latest, va).cmp(&(b.count, b.latest, vb)))
            .map(|(v, _)| v.as_str())
    }

    pub(crate) fn distinct(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_by_timestamp_not_by_arrival() {
        let mut l = Latest::default();
        l.offer(200, Some("new"));
        l.offer(100, Some("old"));
        l.offer(300, None);
        assert_eq!(l.get(), Some("new"));
    }

    #[test]
    fn mode_ties_go_to_the_value_seen_latest() {
        let mut m = Mode::default();
        // The tie is not broken by the larger value: "640x360" sorts after "1280x720".
        m.add(100, Some("640x360"));
        m.add(300, Some("1280x720"));
        m.add(200, Some("640x360"));
        m.add(400, Some("1280x720"));
        assert_eq!(m.most_frequent(), Some("1280x720"));
        m.add(50, Some("640x360"));
        assert_eq!(m.most_frequent(), Some("640x360"));
    }

    #[test]
    fn a_mode_does_not_depend_on_arrival_order_or_merging() {
        let values = [
            (100, "640x360"),
            (300, "1280x720"),
            (200, "320x180"),
            (400, "640x360"),
        ];
        let mut forward = Mode::default();
        values.iter().for_each(|&(ts, v)| forward.add(ts, Some(v)));
        let (mut early, mut late) = (Mode::default(), Mode::default());
        values[2..]
            .iter()
            .rev()
            .for_each(|&(ts, v)| late.add(ts, Some(v)));
        values[..2]
            .iter()
            .for_each(|&(ts, v)| early.add(ts, Some(v)));
        late.merge(&early);
        assert_eq!(late, forward);
        assert_eq!(forward.most_frequent(), Some("640x360"));
        assert_eq!(forward.distinct(), 3);
    }
}
