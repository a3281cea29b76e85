//! A map that forgets its oldest entries beyond a capacity: the shape of every in-process
//! memory a service keeps (seen ids, finished jobs), so that none of them grows without bound.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map of at most `capacity` entries; inserting a new key beyond it evicts the oldest key.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Insert or replace; a new key may evict the oldest.
    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// The value for `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// The value for `k`, mutably.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    /// Whether `k` is present.
    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut b = BoundedMap::new(3);
        for i in 0..5 {
            b.insert(i, i * 10);
        }
        assert_eq!(b.len(), 3);
        assert!(!b.contains_key(&0) && !b.contains_key(&1));
        assert_eq!(b.get(&4), Some(&40));
        b.insert(4, 41);
        assert_eq!(b.len(), 3, "replacing does not evict");
        assert_eq!(b.get(&2), Some(&20));
    }
}
