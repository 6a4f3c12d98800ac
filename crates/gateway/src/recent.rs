//! Recently seen message ids, so a client's retry is not delivered twice.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

/// A bounded set of the last `capacity` ids this node accepted or received.
pub(crate) struct RecentIds {
    inner: Mutex<(HashSet<Uuid>, VecDeque<Uuid>)>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; true the first time it is seen (within the window).
    pub fn first_sighting(&self, id: Uuid) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if !set.insert(id) {
            return false;
        }
        order.push_back(id);
        if order.len() > self.capacity
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
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
}
