//! Recently seen message ids: per node, so a client's retry is not
//! delivered twice; per connection, so a message racing a join is not
//! delivered in the history and again live. Both are bounded windows.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

/// The last `capacity` ids inserted: a set with a bound that does not
/// depend on how much a client asks for or the store holds.
pub(crate) struct IdWindow {
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl IdWindow {
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`, forgetting the oldest past the capacity; true when it
    /// was not in the window.
    pub fn insert(&mut self, id: Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Forgets everything and gives the memory back.
    pub fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }
}

/// The last `capacity` ids this node accepted or received.
pub(crate) struct RecentIds(Mutex<IdWindow>);

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self(Mutex::new(IdWindow::new(capacity)))
    }

    /// Records `id`; true the first time it is seen (within the window).
    pub fn first_sighting(&self, id: Uuid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let r = RecentIds::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        assert!(r.first_sighting(ids[0]));
        assert!(!r.first_sighting(ids[0]));
        assert!(r.first_sighting(ids[1]));
        assert!(r.first_sighting(ids[2]));
        assert!(r.first_sighting(ids[0]), "evicted after the window");
    }

    #[test]
    fn a_window_never_holds_more_than_its_capacity() {
        let mut w = IdWindow::new(100);
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            assert!(w.insert(*id));
        }
        assert_eq!(w.len(), 100);
        assert!(w.contains(&ids[9_999]) && !w.contains(&ids[0]));
        w.clear();
        assert!(w.is_empty() && w.set.capacity() == 0, "memory given back");
    }
}
