//! A set with a capacity, for the detector's caches.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// A set that removes its oldest item when an insertion makes it exceed `capacity` items.
#[derive(Debug)]
pub(super) struct BoundedSet<T> {
    items: HashSet<T>,
    order: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone + Eq + Hash> BoundedSet<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self { items: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub(super) fn contains(&self, item: &T) -> bool {
        self.items.contains(item)
    }

    pub(super) fn insert(&mut self, item: T) {
        if !self.items.insert(item.clone()) {
            return;
        }
        self.order.push_back(item);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.items.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_set_forgets_the_oldest_item() {
        let mut set = BoundedSet::new(2);
        set.insert(1);
        set.insert(2);
        set.insert(1);
        set.insert(3);
        assert!(!set.contains(&1));
        assert!(set.contains(&2));
        assert!(set.contains(&3));
    }
}
