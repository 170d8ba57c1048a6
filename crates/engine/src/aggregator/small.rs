//! Vector-backed set and map for per-participant state, where hash tables cost more than their
//! contents.
//!
//! A participant has one or two open windows, a few dozen seen timestamps and emitted windows per
//! hour, and there can be 100,000 participants. A `HashMap` with one entry allocates four
//! buckets plus control bytes and carries a 16-byte hasher inline; these keep only the entries
//! (and a `Vec`'s growth slack). Lookups are linear for the map, which stays tiny, and by binary
//! search for the set, whose keys mostly arrive in increasing order, so inserts are appends.

/// A set kept as a sorted vector.
#[derive(Debug, Clone)]
pub(super) struct SortedSet<T>(Vec<T>);

impl<T> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet(Vec::new())
    }
}

impl<T: Ord + Copy> SortedSet<T> {
    /// Inserts `x`; false if it was already there.
    pub(super) fn insert(&mut self, x: T) -> bool {
        match self.0.binary_search(&x) {
            Ok(_) => false,
            Err(k) => {
                self.0.insert(k, x);
                true
            }
        }
    }

    pub(super) fn contains(&self, x: &T) -> bool {
        self.0.binary_search(x).is_ok()
    }

    pub(super) fn max(&self) -> Option<T> {
        self.0.last().copied()
    }
}

/// A map kept as an unordered vector of entries, for a handful of entries at most.
#[derive(Debug, Clone)]
pub(super) struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<K: Eq + Copy, V> SmallMap<K, V> {
    /// The value for `k`, inserting `new()` first if there is none.
    pub(super) fn get_or_insert_with(&mut self, k: K, new: impl FnOnce() -> V) -> &mut V {
        let idx = match self.0.iter().position(|(key, _)| *key == k) {
            Some(idx) => idx,
            None => {
                // Exact: most participants never have more than one or two open windows.
                self.0.reserve_exact(1);
                self.0.push((k, new()));
                self.0.len() - 1
            }
        };
        &mut self.0[idx].1
    }

    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        let idx = self.0.iter().position(|(key, _)| key == k)?;
        let (_, v) = self.0.swap_remove(idx);
        if self.0.is_empty() {
            // Give the allocation back: a participant between windows holds nothing.
            self.0 = Vec::new();
        }
        Some(v)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_set_reports_repeats_whatever_the_insertion_order() {
        let mut s = SortedSet::default();
        for x in [5, 1, 9, 3] {
            assert!(s.insert(x));
        }
        assert!(!s.insert(9));
        assert!(!s.insert(1));
        assert!(s.contains(&3) && !s.contains(&4));
        assert_eq!(s.max(), Some(9));
        assert_eq!(s.0, [1, 3, 5, 9]);
    }

    #[test]
    fn a_small_map_inserts_once_and_frees_its_storage_when_emptied() {
        let mut m: SmallMap<u32, Vec<u32>> = SmallMap::default();
        m.get_or_insert_with(1, Vec::new).push(10);
        m.get_or_insert_with(2, Vec::new).push(20);
        m.get_or_insert_with(1, Vec::new).push(11);
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(&1), Some(vec![10, 11]));
        assert_eq!(m.remove(&1), None);
        assert_eq!(m.keys().collect::<Vec<_>>(), [&2]);
        assert_eq!(m.remove(&2), Some(vec![20]));
        assert!(m.is_empty());
        assert_eq!(m.0.capacity(), 0);
    }
}
