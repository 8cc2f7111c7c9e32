//! The local blob cache: sealed blobs (exactly as stored in packs, so nothing is in clear on the
//! local disk) kept under the user's cache folder, keyed by repository and blob ID. It exists so
//! that a snapshot can read its delta bases without fetching them from a remote repository every
//! six hours: the pipeline writes every new blob through it, and base reads look here first.
//!
//! The cache is an optimisation only. Entries are authenticated when used like any blob, a bad
//! or missing entry falls back to the repository, and deleting the folder is always safe.
//! Its size is bounded: [`BlobCache::trim`] evicts the least recently used entries.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::id::Id;

/// Default bound on a cache's size.
pub const DEFAULT_LIMIT: u64 = 8 << 30;

/// Default bound on the cache of snapshot and index files.
pub const DEFAULT_FILE_LIMIT: u64 = 1 << 30;

/// A repository's blob cache.
#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    limit: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl BlobCache {
    /// The cache of repository `repo` under `root`.
    pub fn new(root: impl Into<PathBuf>, repo: &Id, limit: u64) -> Self {
        BlobCache {
            dir: root.into().join(repo.to_hex()).join("blobs"),
            limit,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache of repository `repo`'s snapshot and index files under `root`: sealed, named by
    /// the hash of their bytes like in the repository, so a cached file is checked against its
    /// name before use and is never stale (a removed file is simply no longer listed).
    pub fn files(root: impl Into<PathBuf>, repo: &Id, limit: u64) -> Self {
        BlobCache {
            dir: root.into().join(repo.to_hex()).join("files"),
            limit,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The default cache root: `$SBK_CACHE_DIR`, else `$XDG_CACHE_HOME/sbk`, else `~/.cache/sbk`.
    pub fn default_root() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("SBK_CACHE_DIR") {
            return Some(d.into());
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d).join("sbk"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sbk"))
    }

    fn path(&self, id: &Id) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The sealed bytes of a blob, if cached (and marks the entry as recently used).
    pub fn get(&self, id: &Id) -> Option<Vec<u8>> {
        let path = self.path(id);
        match fs::read(&path) {
            Ok(bytes) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if let Ok(f) = fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(bytes)
            }
            Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches a blob's sealed bytes; failures are ignored (the cache is only an optimisation).
    pub fn put(&self, id: &Id, sealed: &[u8]) {
        let path = self.path(id);
        if path.exists() {
            return;
        }
        let Some(dir) = path.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
            if tmp.write_all(sealed).is_ok() {
                let _ = tmp.persist(&path);
            }
        }
    }

    /// Drops an entry that failed to open.
    pub fn remove(&self, id: &Id) {
        let _ = fs::remove_file(self.path(id));
    }

    /// (hits, misses) since this cache was opened.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Evicts least recently used entries until the cache is at most 90% of its limit.
    pub fn trim(&self) {
        let mut entries = Vec::new();
        let mut total = 0u64;
        let Ok(fans) = fs::read_dir(&self.dir) else {
            return;
        };
        for fan in fans.flatten() {
            let Ok(files) = fs::read_dir(fan.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Ok(meta) = f.metadata() {
                    total += meta.len();
                    let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    entries.push((used, meta.len(), f.path()));
                }
            }
        }
        if total <= self.limit {
            return;
        }
        entries.sort();
        let target = self.limit / 10 * 9;
        for (_, len, path) in entries {
            if total <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path(), &Id([1; 32]), 2500);
        for i in 0..5u8 {
            cache.put(&Id([i; 32]), &[i; 1000]);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(cache.get(&Id([4; 32])).unwrap(), vec![4; 1000]);
        cache.trim();
        // At most 2250 bytes remain: the two most recently used entries.
        assert!(cache.get(&Id([0; 32])).is_none());
        assert!(cache.get(&Id([4; 32])).is_some());
        assert_eq!(cache.counts().0, 2);
    }
}
