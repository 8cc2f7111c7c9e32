//! Plaintexts of delta bases read lately, in memory, shared by a handle's threads.
//!
//! A chunk cut into pieces ([`crate::pieces`]) and the chunks beside it are deltas against the
//! same parent chunks, and each base is rebuilt through its own chain of deltas: without this, a
//! restore rebuilds such a base once per blob that needs it, and a snapshot reads a neighbour
//! that the next chunk reads again. Least recently used bases go first past [`LIMIT`] bytes.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::id::Id;

/// Bytes of plaintext kept: about sixteen average chunks.
pub const LIMIT: usize = 32 << 20;

/// A base's plaintext, shared by whoever reads it.
type Plain = Arc<Vec<u8>>;

pub(crate) struct RecentBases {
    /// Bytes held, and the plaintexts.
    inner: Mutex<(usize, LruCache<Id, Plain>)>,
}

impl Default for RecentBases {
    fn default() -> Self {
        RecentBases {
            inner: Mutex::new((0, LruCache::unbounded())),
        }
    }
}

impl RecentBases {
    pub fn get(&self, id: &Id) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().expect("recent bases").1.get(id).cloned()
    }

    /// Keeps a base's plaintext (never one larger than the whole budget).
    pub fn put(&self, id: Id, plain: Arc<Vec<u8>>) {
        if plain.len() > LIMIT / 2 {
            return;
        }
        let mut g = self.inner.lock().expect("recent bases");
        let (held, lru) = &mut *g;
        *held += plain.len();
        if let Some(old) = lru.put(id, plain) {
            *held -= old.len();
        }
        while *held > LIMIT {
            match lru.pop_lru() {
                Some((_, p)) => *held -= p.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_recent_within_the_limit() {
        let r = RecentBases::default();
        let mb = |n: u8| Arc::new(vec![n; 4 << 20]);
        for n in 0..12u8 {
            r.put(Id([n; 32]), mb(n));
        }
        // 12 x 4 MiB offered, 32 MiB kept: the first four are gone, the last eight are there.
        assert!(r.get(&Id([0; 32])).is_none());
        assert!(r.get(&Id([3; 32])).is_none());
        assert_eq!(r.get(&Id([4; 32])).unwrap()[0], 4);
        assert_eq!(r.get(&Id([11; 32])).unwrap()[0], 11);
        assert!(r.inner.lock().unwrap().0 <= LIMIT);
        // A read makes a base recent again.
        r.get(&Id([4; 32]));
        r.put(Id([12; 32]), mb(12));
        assert!(r.get(&Id([4; 32])).is_some());
        assert!(r.get(&Id([5; 32])).is_none());
    }
}
