//! A wrapper that adds up the time spent writing, summed over concurrent writers: the "upload
//! time" of a run's metrics. Everything else passes straight through.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{BResult, Backend, FileInfo, FileType};

pub struct TimedBackend {
    inner: Arc<dyn Backend>,
    write_nanos: AtomicU64,
}

impl TimedBackend {
    /// Runs `f` as is: what the Object Lock calls pass through (see
    /// [`super::forward_versions`]).
    fn direct<T>(&self, f: impl FnOnce() -> T) -> T {
        f()
    }

    pub fn new(inner: Arc<dyn Backend>) -> Self {
        TimedBackend {
            inner,
            write_nanos: AtomicU64::new(0),
        }
    }

    /// Seconds spent in writes so far.
    pub fn write_secs(&self) -> f64 {
        self.write_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = f();
        self.write_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }
}

impl Backend for TimedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> BResult<()> {
        self.inner.create()
    }

    fn list(&self, t: FileType) -> BResult<Vec<FileInfo>> {
        self.inner.list(t)
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.inner.read(t, name)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> BResult<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.timed(|| self.inner.write(t, name, data))
    }

    fn write_staged(&self, t: FileType, name: &str, staged: &Path) -> BResult<()> {
        self.timed(|| self.inner.write_staged(t, name, staged))
    }

    fn write_path(&self, t: FileType, name: &str, path: &Path) -> BResult<()> {
        self.timed(|| self.inner.write_path(t, name, path))
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        self.inner.remove(t, name)
    }

    fn remove_all(&self, t: FileType, names: &[String]) -> BResult<()> {
        self.inner.remove_all(t, names)
    }

    fn sweep_tmp(&self, age: std::time::Duration) -> BResult<usize> {
        self.inner.sweep_tmp(age)
    }

    fn list_prefix(&self, t: FileType, prefix: &str) -> BResult<Vec<FileInfo>> {
        self.direct(|| self.inner.list_prefix(t, prefix))
    }

    super::forward_versions!(direct, inner);
}
