//! Live counters of a long command's work (restore, verify, check, prune, sync, repair), for a
//! progress display. The library only updates them, with relaxed atomics; whoever shows them
//! (the CLI's progress bar or its JSON progress lines) reads them on its own thread.
//!
//! Every repository handle carries one ([`crate::Repository::activity`]), so commands need no
//! extra argument to report progress.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of the work under way. A total of 0 means "not known" (or nothing to do).
#[derive(Debug, Default)]
pub struct Activity {
    phase: Mutex<&'static str>,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    items_done: AtomicU64,
    items_total: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivitySample {
    /// What is being done ("restore", "read packs", ...); "start" before the command set one.
    pub phase: &'static str,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub items_done: u64,
    pub items_total: u64,
}

impl Activity {
    /// Starts a stage of work: every counter starts again from 0.
    pub fn start(&self, phase: &'static str, bytes_total: u64, items_total: u64) {
        self.set_phase(phase);
        self.bytes_done.store(0, Ordering::Relaxed);
        self.bytes_total.store(bytes_total, Ordering::Relaxed);
        self.items_done.store(0, Ordering::Relaxed);
        self.items_total.store(items_total, Ordering::Relaxed);
    }

    /// Moves on to another phase of the same stage: the byte counters carry on (a prune's
    /// bytes are its repacking's, still shown while it deletes), the items start again.
    pub fn next_phase(&self, phase: &'static str, items_total: u64) {
        self.set_phase(phase);
        self.items_done.store(0, Ordering::Relaxed);
        self.items_total.store(items_total, Ordering::Relaxed);
    }

    fn set_phase(&self, phase: &'static str) {
        // Set a few times per command: a lock costs nothing here and keeps the text whole.
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    /// Grows the expected total (work found as it goes, e.g. one database after another).
    pub fn add_bytes_total(&self, n: u64) {
        self.bytes_total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_items(&self, n: u64) {
        self.items_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sample(&self) -> ActivitySample {
        ActivitySample {
            phase: match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
                "" => "start",
                p => p,
            },
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total: self.items_total.load(Ordering::Relaxed),
        }
    }
}

/// A writer that counts what passes through it as done bytes of an [`Activity`].
pub struct Counted<'a, W: Write + ?Sized> {
    pub inner: &'a mut W,
    pub activity: &'a Activity,
}

impl<W: Write + ?Sized> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.activity.add_bytes(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_keep_or_reset_the_counters() {
        let a = Activity::default();
        a.start("repack", 100, 2);
        a.add_bytes(60);
        a.add_items(1);
        a.next_phase("delete", 3);
        a.add_items(1);
        let s = a.sample();
        assert_eq!(
            s,
            ActivitySample {
                phase: "delete",
                bytes_done: 60,
                bytes_total: 100,
                items_done: 1,
                items_total: 3,
            }
        );
        a.start("restore", 5, 0);
        assert_eq!(a.sample().bytes_done, 0);
    }

    #[test]
    fn counted_writer_counts_what_was_written() {
        let a = Activity::default();
        let mut out = Vec::new();
        let mut w = Counted {
            inner: &mut out,
            activity: &a,
        };
        w.write_all(b"hello").unwrap();
        assert_eq!(a.sample().bytes_done, 5);
        assert_eq!(out, b"hello");
    }
}
