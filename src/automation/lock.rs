//! Lock files in the state folder: one per job (a run holds it; `sbk run` and the daemon never
//! overlap a job) and one for the daemon (held while it serves, so `status` knows whether next
//! runs will start). `flock`s, so a killed holder releases them.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Local;

use crate::error::{Error, Result};

/// Holds a job's lock file locked for as long as it lives.
pub struct JobLock {
    _file: File,
}

fn locks_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("locks")
}

/// Takes the lock of `job`, or says who holds it.
pub fn lock_job(state_dir: &Path, job: &str) -> Result<JobLock> {
    let path = locks_dir(state_dir).join(format!("{job}.lock"));
    lock_file(
        &path,
        &format!("job {job:?} is already running"),
        "this run was not started",
    )
}

/// The daemon's lock file: held while a daemon serves this state folder, so that `status`
/// shows next run times only when something will start those runs (and two daemons of one
/// configuration cannot both run the jobs).
fn daemon_lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.lock")
}

/// Takes the daemon's lock, or says who holds it.
pub fn lock_daemon(state_dir: &Path) -> Result<JobLock> {
    lock_file(
        &daemon_lock_path(state_dir),
        "a daemon is already running for this state folder",
        "this one was not started",
    )
}

/// Whether a daemon is running for `state_dir`.
pub fn daemon_running(state_dir: &Path) -> bool {
    held(&daemon_lock_path(state_dir))
}

/// Whether someone holds the lock at `path` (a shared probe: two probes never see each other).
fn held(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Takes the lock at `path`, writing who holds it; refused with `busy (holder); consequence`.
fn lock_file(path: &Path, busy: &str, consequence: &str) -> Result<JobLock> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    // A status probe ([`is_running`]) holds the lock for an instant: try a few times.
    let mut tries = 0;
    let locked = loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
            other => break other,
        }
    };
    match locked {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            return Err(Error::Refused(format!(
                "{busy} ({}); {consequence}",
                holder.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
    }
    // Who holds it, for the message above: informative only, the lock is the flock.
    let _ = file.set_len(0).and_then(|()| {
        writeln!(
            file,
            "pid {}, since {}",
            std::process::id(),
            Local::now().format("%Y-%m-%d %H:%M:%S")
        )
    });
    Ok(JobLock { _file: file })
}

/// Whether `job` is running now (its lock is held by someone).
pub fn is_running(state_dir: &Path, job: &str) -> bool {
    held(&locks_dir(state_dir).join(format!("{job}.lock")))
}
