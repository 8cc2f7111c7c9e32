//! `wal push --parallel N` and `wal fetch --prefetch N` (`docs/pitr.md`): PostgreSQL runs its
//! archive and restore commands once per WAL file, one at a time, and each run of sbk pays a
//! repository open (one Argon2id derivation) and a round trip. These batch the work:
//!
//! - **push ahead**: a push also stores up to N-1 more files the server has marked ready
//!   (`pg_wal/archive_status/*.ready`), in parallel, and leaves a marker (the file's BLAKE3) in a
//!   host-local folder. When the server then asks for one of them, the marker and the same bytes
//!   answer at once, without opening the repository. A push still returns 0 only once its file
//!   is durable (pgBackRest's asynchronous mode returns once a local queue holds it; sbk keeps
//!   PostgreSQL's contract and gets the speed from working ahead).
//! - **fetch ahead**: once a fetch has written its segment, it starts a background process that
//!   fetches the next N segments of the timeline in parallel, each verified whole, into a
//!   host-local folder, and returns: replay goes on while they download. The next fetches take
//!   them from there (waiting for one the background process is still fetching) and keep the
//!   background process going. One such process per repository and host (a lock).
//!
//! Both folders are keyed by the repository's location and live under the cache folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::repository::wal::{is_wal_name, next_segments};
use crate::repository::Repository;

/// Files older than this in the host-local folders are dropped (a recovery or an archiver that
/// moved on long ago).
const STALE: Duration = Duration::from_secs(24 * 3600);

/// How long a fetch waits for a segment another process is fetching ahead.
pub const AHEAD_WAIT: Duration = Duration::from_secs(120);

/// The host-local folders of one repository location.
#[derive(Clone, Debug)]
pub struct LocalWal {
    base: PathBuf,
    /// Markers of files pushed ahead.
    pub pushed: PathBuf,
    /// Segments fetched ahead.
    pub fetched: PathBuf,
}

impl LocalWal {
    /// The folders under `cache_root` for the repository at `location`.
    pub fn new(cache_root: &Path, location: &str) -> Self {
        let key = blake3::hash(location.as_bytes()).to_hex();
        let base = cache_root.join("wal").join(&key.as_str()[..32]);
        LocalWal {
            pushed: base.join("pushed"),
            fetched: base.join("fetched"),
            base,
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.base.join("fetching.lock")
    }

    /// The fetch-ahead lock, `None` when another process holds it (fetches ahead now).
    pub fn fetch_lock(&self) -> Option<std::fs::File> {
        std::fs::create_dir_all(&self.base).ok()?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())
            .ok()?;
        f.try_lock().ok().map(|()| f)
    }

    /// Says a fetch-ahead process is starting (the lock file's time is now): until it holds the
    /// lock, a fetch waits a moment for it rather than opening the repository itself.
    pub fn announce(&self) {
        let _ = std::fs::create_dir_all(&self.base);
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())
            .and_then(|f| f.set_modified(SystemTime::now()));
    }

    /// Says the fetch-ahead process is done (the lock file's time is long past).
    pub fn done(lock: &std::fs::File) {
        let _ = lock.set_modified(SystemTime::UNIX_EPOCH);
    }

    /// Whether a fetch-ahead process was started a moment ago.
    fn starting(&self) -> bool {
        std::fs::metadata(self.lock_path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_millis(1500))
    }

    /// Whether another process fetches ahead now.
    pub fn fetching(&self) -> bool {
        match std::fs::File::open(self.lock_path()) {
            Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Waits, while another process fetches ahead, for `name` to arrive (up to `timeout`);
    /// true once it is there.
    pub fn wait_for_fetched(&self, name: &str, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        loop {
            if self.fetched.join(name).exists() {
                return true;
            }
            if !(self.fetching() || self.starting()) || std::time::Instant::now() > until {
                return self.fetched.join(name).exists();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The segments after `name` (up to `n`) not fetched ahead yet.
    pub fn missing_after(&self, name: &str, n: usize) -> Vec<String> {
        next_segments(name, n)
            .into_iter()
            .filter(|s| !self.fetched.join(s).exists())
            .collect()
    }

    /// Whether `name` with these bytes was pushed ahead (durable in the repository): the
    /// marker is consumed.
    pub fn pushed_ahead(&self, name: &str, data: &[u8]) -> bool {
        let marker = self.pushed.join(name);
        match std::fs::read_to_string(&marker) {
            Ok(hash) if hash.trim() == blake3::hash(data).to_hex().as_str() => {
                let _ = std::fs::remove_file(&marker);
                true
            }
            _ => false,
        }
    }

    /// Moves the segment `name` fetched ahead into `dest` (atomically); false when there is none.
    pub fn take_fetched(&self, name: &str, dest: &Path) -> Result<bool> {
        let file = self.fetched.join(name);
        if !file.exists() {
            return Ok(false);
        }
        let data = std::fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
        write_atomically(dest, &data)?;
        let _ = std::fs::remove_file(&file);
        Ok(true)
    }

    /// Drops files older than a day.
    fn sweep(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Writes `data` to `dest` through a synced temporary file beside it, then renames: a reader
/// (PostgreSQL) finds the whole file or none.
pub fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", dest, e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io("rename into", dest, e.error))?;
    Ok(())
}

/// What a push with `parallel` did besides its own file.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PushedAhead {
    pub files: usize,
    pub bytes: u64,
    /// Files that could not be pushed ahead (the server will ask for them again).
    pub failed: Vec<String>,
}

/// Pushes up to `n` more files that `wal_dir/archive_status` marks ready (oldest first, not
/// `skip`), in parallel, and leaves a marker for each one stored.
pub fn push_ahead(
    repo: &Repository,
    local: &LocalWal,
    wal_dir: &Path,
    skip: &str,
    n: usize,
) -> PushedAhead {
    let mut ready: Vec<String> = std::fs::read_dir(wal_dir.join("archive_status"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            (is_wal_name(&name) && name != skip && !local.pushed.join(&name).exists())
                .then_some(name)
        })
        .collect();
    // Oldest first as PostgreSQL archives them: history files before segments of their
    // timeline sort by name the same way.
    ready.sort();
    ready.truncate(n);
    let mut out = PushedAhead::default();
    if ready.is_empty() || std::fs::create_dir_all(&local.pushed).is_err() {
        return out;
    }
    LocalWal::sweep(&local.pushed);
    let results: Vec<(String, Result<u64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ready
            .iter()
            .map(|name| {
                s.spawn(move || {
                    let path = wal_dir.join(name);
                    let r = std::fs::read(&path)
                        .map_err(|e| Error::io("read WAL file", &path, e))
                        .and_then(|data| {
                            repo.push_wal(name, &data)?;
                            let marker = local.pushed.join(name);
                            write_atomically(&marker, blake3::hash(&data).to_hex().as_bytes())?;
                            Ok(data.len() as u64)
                        });
                    (name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("push thread"))
            .collect()
    });
    for (name, r) in results {
        match r {
            Ok(bytes) => {
                out.files += 1;
                out.bytes += bytes;
            }
            Err(_) => out.failed.push(name),
        }
    }
    out
}

/// Fetches the `n` segments after `name` that are archived and not fetched ahead yet, in
/// parallel, into the fetch-ahead folder (each verified whole by [`Repository::fetch_wal`]).
/// Returns how many were stored. The caller holds [`LocalWal::fetch_lock`].
pub fn fetch_ahead(repo: &Repository, local: &LocalWal, name: &str, n: usize) -> usize {
    let next = local.missing_after(name, n);
    if next.is_empty() || std::fs::create_dir_all(&local.fetched).is_err() {
        return 0;
    }
    LocalWal::sweep(&local.fetched);
    std::thread::scope(|s| {
        let handles: Vec<_> = next
            .iter()
            .map(|seg| {
                s.spawn(move || match repo.fetch_wal(seg) {
                    Ok(Some(data)) => write_atomically(&local.fetched.join(seg), &data).is_ok(),
                    _ => false,
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fetch thread"))
            .filter(|ok| *ok)
            .count()
    })
}
