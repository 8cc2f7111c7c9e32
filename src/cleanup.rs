//! What an interrupted run must not leave behind: child processes (`pg_dump`, commands) and
//! temporary files (password files, staged packs, half-restored files).
//!
//! Code that spawns a child or creates a temporary file registers it here for as long as it
//! lives ([`track_child`], [`track_path`]). The CLI installs [`exit_on_signals`]: on SIGINT,
//! SIGTERM or SIGHUP it ends every registered child's process group, removes every registered
//! file and exits with 128 + the signal, so that no snapshot is claimed and nothing is left.
//! A SIGKILL cannot be caught: password files live in a private folder ([`private_dir`]) that
//! the next run sweeps, and prune collects the repository's stale `tmp/` files.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// What an interrupt must clean up: one registry per kind, entries keyed by a process-wide
/// counter so that a guard removes exactly its own.
struct Registry<T>(Mutex<Option<HashMap<u64, T>>>);

static NEXT: AtomicU64 = AtomicU64::new(1);
static CHILDREN: Registry<i32> = Registry(Mutex::new(None));
static PATHS: Registry<PathBuf> = Registry(Mutex::new(None));

impl<T: Clone> Registry<T> {
    fn map(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, T>>> {
        // A panic elsewhere must not stop the cleanup: the map itself stays consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, value: T) -> u64 {
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        self.map()
            .get_or_insert_with(HashMap::new)
            .insert(key, value);
        key
    }

    fn remove(&self, key: u64) {
        if let Some(m) = self.map().as_mut() {
            m.remove(&key);
        }
    }

    fn all(&self) -> Vec<T> {
        self.map()
            .as_ref()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// A registered child process group; unregistered on drop (after the child is reaped).
#[must_use = "the child is unregistered when this is dropped"]
pub struct TrackedChild(u64);

impl Drop for TrackedChild {
    fn drop(&mut self) {
        CHILDREN.remove(self.0);
    }
}

/// Registers a child that leads its own process group (`Command::process_group(0)`), so that
/// an interrupt ends it and everything it started.
pub fn track_child(pid: u32) -> TrackedChild {
    TrackedChild(CHILDREN.add(pid as i32))
}

/// A registered temporary file; unregistered on drop (the owner removes or renames it).
#[must_use = "the path is unregistered when this is dropped"]
pub struct TrackedPath(u64);

impl Drop for TrackedPath {
    fn drop(&mut self) {
        PATHS.remove(self.0);
    }
}

/// Registers a temporary file for removal should the run be interrupted.
pub fn track_path(path: &Path) -> TrackedPath {
    TrackedPath(PATHS.add(path.to_path_buf()))
}

/// Ends every registered child's process group and removes every registered file.
pub fn clean_up_now() {
    for pid in CHILDREN.all() {
        if pid > 0 {
            // SAFETY: kill(2) on a process group; no memory is touched. The child is still
            // registered, so not reaped yet, so its group ID cannot have been reused.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
        }
    }
    for p in PATHS.all() {
        let _ = std::fs::remove_file(p);
    }
}

/// Installs the handler: on SIGINT, SIGTERM or SIGHUP, [`clean_up_now`] and exit with 128 + the
/// signal (130, 143, 129).
pub fn exit_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::Invalid(format!("cannot handle signals: {e}")))?;
    // A password prompt turns echo off: the terminal's settings are put back before exiting.
    let tty = terminal_settings();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                clean_up_now();
                if let Some((f, t)) = &tty {
                    use std::os::fd::AsRawFd;
                    // SAFETY: `t` came from tcgetattr on this open descriptor.
                    unsafe { libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, t) };
                }
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                eprintln!("sbk: interrupted by {name}: stopped; nothing was saved by this run");
                std::process::exit(128 + sig);
            }
        })
        .map_err(|e| Error::Invalid(format!("cannot handle signals: {e}")))?;
    Ok(())
}

/// Makes what sbk creates from now on private to its user (files 0600, folders 0700): logs,
/// the run history, the metrics file, the spool, the cache, staged files. Called first thing.
pub fn private_umask() {
    // SAFETY: umask(2) only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
}

/// Takes group and other permissions off a file or folder that an older sbk (or another
/// program) created more open; a missing path is left alone.
pub fn tighten(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode();
    if meta.is_symlink() || mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(|e| Error::io("make private", path, e))
}

/// The controlling terminal's settings, when there is one.
fn terminal_settings() -> Option<(std::fs::File, libc::termios)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/dev/tty").ok()?;
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills `t` when it returns 0; the descriptor is open.
    if unsafe { libc::tcgetattr(f.as_raw_fd(), t.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful tcgetattr above.
    Some((f, unsafe { t.assume_init() }))
}

/// sbk's private folder for short-lived secrets (password files): `$XDG_RUNTIME_DIR/sbk` when
/// that is set, else `<temp dir>/sbk-<uid>`; created 0700, and refused when another user owns
/// it or others may enter it. Files of runs that no longer exist are removed on each call.
pub fn private_dir() -> Result<PathBuf> {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        Some(d) => PathBuf::from(d).join("sbk"),
        None => std::env::temp_dir().join(format!("sbk-{uid}")),
    };
    private_dir_at(dir)
}

/// sbk's private scratch folder for large temporary files (staged packs, staged restores):
/// `<temp dir>/sbk-<uid>`, made and checked like [`private_dir`], swept the same way.
pub fn scratch_dir() -> Result<PathBuf> {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    private_dir_at(std::env::temp_dir().join(format!("sbk-{uid}")))
}

/// A temporary file in [`scratch_dir`] named for this process, registered for removal on an
/// interrupt (the registration ends with the returned guard).
pub fn scratch_file(kind: &str) -> Result<(tempfile::NamedTempFile, TrackedPath)> {
    let dir = scratch_dir()?;
    let f = tempfile::Builder::new()
        .prefix(&private_prefix(kind))
        .tempfile_in(&dir)
        .map_err(|e| Error::io("create a file in", &dir, e))?;
    let t = track_path(f.path());
    Ok((f, t))
}

fn private_dir_at(dir: PathBuf) -> Result<PathBuf> {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let io_err = |what: &'static str, e: io::Error| Error::io(what, &dir, e);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_err("inspect", e))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(Error::Refused(format!(
            "{} is not a folder of this user: refusing to keep passwords there",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("make private", e))?;
    }
    sweep(&dir);
    Ok(dir)
}

/// The name prefix of a file this process keeps in [`private_dir`]: `<kind>-<pid>-`.
pub fn private_prefix(kind: &str) -> String {
    format!("{kind}-{}-", std::process::id())
}

/// Removes files left in the private folder by processes that are gone (killed by SIGKILL).
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 != std::process::id() && !alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Named moments where the fault tests (`tests/faults.rs`) kill sbk with SIGKILL: when the
/// environment variable `SBK_TEST_CRASH_AT` names this point, the process kills itself here,
/// exactly as `kill -9` from outside would, but at a chosen step instead of a random time.
/// Nothing in normal use sets the variable; it is read once.
pub fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("SBK_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(name) {
        // SAFETY: kill(2) on this process; it does not return.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_private_and_swept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sbk");
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        // A dead run's file, a live run's file, and an unrelated name.
        let dead = dir.join("pgpass-999999999-abc");
        let live = dir.join(format!("pgpass-{}-abc", std::process::id()));
        let other = dir.join("notes");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        assert_eq!(private_dir_at(dir.clone()).unwrap(), dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!dead.exists() && live.exists() && other.exists());
    }

    #[test]
    fn tracked_paths_are_removed_until_dropped() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let _ta = track_path(&a);
        drop(track_path(&b));
        clean_up_now();
        assert!(!a.exists() && b.exists());
    }
}
