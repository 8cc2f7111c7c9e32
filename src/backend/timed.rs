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

    fn sweep_tmp(&self, age: std::time::Duration) -> BResult<usize> {
        self.inner.sweep_tmp(age)
    }
    fn lock_status(&self) -> BResult<super::lock::LockStatus> {
        self.inner.lock_status()
    }

    fn prepare_lock(&self, policy: &super::lock::LockPolicy) -> BResult<()> {
        self.inner.prepare_lock(policy)
    }

    fn extend_retention(
        &self,
        t: FileType,
        name: &str,
        policy: &super::lock::LockPolicy,
        until: chrono::DateTime<chrono::Utc>,
    ) -> BResult<()> {
        self.inner.extend_retention(t, name, policy, until)
    }

    fn retention(
        &self,
        t: FileType,
        name: &str,
        version: &str,
    ) -> BResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.retention(t, name, version)
    }

    fn versions(&self) -> BResult<Vec<super::lock::Version>> {
        self.inner.versions()
    }

    fn remove_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
        self.inner.remove_version(t, name, version)
    }

    fn restore_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
        self.inner.restore_version(t, name, version)
    }
}
