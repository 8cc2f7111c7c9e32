//! Retries for remote backends: a failure of kind [`ErrorKind::Transient`] (time-out, throttling,
//! 5xx, a dropped connection) is retried with exponential backoff and full jitter until an
//! overall deadline; every other kind is returned at once. The wrapper looks only at the kind,
//! so every backend gets the same policy.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;

use super::{BResult, Backend, BackendError, ErrorKind, FileInfo, FileType};

/// Default overall time a request may keep failing transiently before the command gives up.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
/// First backoff ceiling; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The wait before retry number `attempt` (from 1): full jitter, a uniformly random wait below
/// a ceiling that doubles per attempt, so that many clients hit by one outage do not retry in
/// lockstep.
pub fn jittered_backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64((OsRng.next_u32() as f64) / (u32::MAX as f64))
}

/// A backend whose transient failures are retried (see the module documentation).
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    deadline: Duration,
    /// Set once a request has failed past the deadline: later requests get one attempt each
    /// until one succeeds, so a run that spools during an outage does not wait out the
    /// deadline again for every file.
    offline: AtomicBool,
}

impl RetryBackend {
    pub fn new(inner: Arc<dyn Backend>, deadline: Duration) -> Self {
        RetryBackend {
            inner,
            deadline,
            offline: AtomicBool::new(false),
        }
    }

    /// Runs `f` until it succeeds, fails for good, or the deadline passes.
    fn retry<T>(&self, mut f: impl FnMut() -> BResult<T>) -> BResult<T> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            match f() {
                Err(e) if e.kind == ErrorKind::Transient && self.offline.load(Ordering::SeqCst) => {
                    return Err(BackendError::new(
                        ErrorKind::Transient,
                        format!("{} (still unreachable)", e.message),
                    ));
                }
                Err(e) if e.kind == ErrorKind::Transient => {
                    attempt += 1;
                    let wait = jittered_backoff(attempt);
                    let elapsed = start.elapsed();
                    if elapsed + wait >= self.deadline {
                        self.offline.store(true, Ordering::SeqCst);
                        return Err(BackendError::new(
                            ErrorKind::Transient,
                            format!(
                                "{} (gave up after {attempt} attempts in {:.0} s; see --retry-deadline)",
                                e.message,
                                elapsed.as_secs_f64()
                            ),
                        ));
                    }
                    std::thread::sleep(wait);
                }
                other => {
                    if other.is_ok() {
                        self.offline.store(false, Ordering::SeqCst);
                    }
                    return other;
                }
            }
        }
    }
}

impl Backend for RetryBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> BResult<()> {
        self.retry(|| self.inner.create())
    }

    fn list(&self, t: FileType) -> BResult<Vec<FileInfo>> {
        self.retry(|| self.inner.list(t))
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.retry(|| self.inner.read(t, name))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> BResult<Vec<u8>> {
        self.retry(|| self.inner.read_range(t, name, offset, len))
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.retry(|| self.inner.write(t, name, data))
    }

    fn write_path(&self, t: FileType, name: &str, path: &Path) -> BResult<()> {
        self.retry(|| self.inner.write_path(t, name, path))
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        self.retry(|| self.inner.remove(t, name))
    }

    fn remove_all(&self, t: FileType, names: &[String]) -> BResult<()> {
        self.retry(|| self.inner.remove_all(t, names))
    }

    fn list_prefix(&self, t: FileType, prefix: &str) -> BResult<Vec<FileInfo>> {
        self.retry(|| self.inner.list_prefix(t, prefix))
    }

    super::forward_versions!(retry, inner);
}
