//! Where each chunk of a stream left off in the parent file: the base hint of a chunk whose
//! sketch matches no parent chunk.
//!
//! A parent chunk keeps only its 8 smallest sketch features. A new chunk holding a third of a
//! parent chunk's content (cut points moved by a deletion before it) shares none of them with
//! it about one time in 17 (`0.7^8`), and would be stored whole although every byte of it is in
//! the parent. Its predecessor in the stream, matched or deduplicated, says where in the parent
//! the content goes on: the chunk takes that place as its candidate.
//!
//! Workers process chunks in parallel, so a chunk without a candidate waits for its
//! predecessor's entry. That cannot deadlock: chunks are handed out in order and every worker
//! publishes an entry for every chunk it takes (a panic too), so the oldest chunk in flight
//! always has its predecessor's entry. Waiting only happens on that rare path, and a chunk
//! stored whole publishes before it compresses, so a run of new data is not serialized.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Entries kept behind the newest (more than the chunks in flight).
const KEEP: u64 = 64;
/// A safety net: a chunk never waits longer than this for its predecessor (it is then stored
/// without the hint, which costs space, never correctness).
const PATIENCE: Duration = Duration::from_secs(60);

/// Per stream: chunk number -> the parent chunk where the content after it likely starts.
#[derive(Default)]
pub struct Trail {
    next: Mutex<HashMap<u64, Option<usize>>>,
    published: Condvar,
}

impl Trail {
    /// Records where the content after chunk `seq` likely starts in the parent (`None`: no
    /// idea). The first entry for a chunk stands.
    pub fn publish(&self, seq: u64, next: Option<usize>) {
        let mut m = self.next.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(seq).or_insert(next);
        if m.len() as u64 > KEEP {
            m.retain(|&s, _| s + KEEP > seq);
        }
        self.published.notify_all();
    }

    /// Where the content of chunk `seq` likely starts in the parent: its predecessor's entry,
    /// waited for.
    pub fn before(&self, seq: u64) -> Option<usize> {
        let prev = seq.checked_sub(1)?;
        let m = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let (m, _) = self
            .published
            .wait_timeout_while(m, PATIENCE, |m| !m.contains_key(&prev))
            .unwrap_or_else(|e| e.into_inner());
        m.get(&prev).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_waits_for_its_predecessor_and_the_first_entry_stands() {
        let t = Trail::default();
        assert_eq!(t.before(0), None);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| t.before(5));
            std::thread::sleep(Duration::from_millis(20));
            t.publish(4, Some(7));
            assert_eq!(waiter.join().unwrap(), Some(7));
        });
        t.publish(4, None);
        assert_eq!(t.before(5), Some(7));
        for seq in 5..200 {
            t.publish(seq, Some(seq as usize));
        }
        assert_eq!(t.before(200), Some(199));
        assert!(t.next.lock().unwrap().len() as u64 <= KEEP + 1);
    }
}
