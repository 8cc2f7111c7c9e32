//! Opening a repository from its location and options: the backend, the spool of a remote
//! repository, and the blob cache. Shared by the command line and by configured jobs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend;
use crate::backend::spool::SpoolBackend;
use crate::cache::BlobCache;
use crate::error::Result;
use crate::repository::Repository;

// What opening a repository is configured with: how a remote one is reached.
pub use crate::backend::retry::DEFAULT_DEADLINE;
pub use crate::backend::s3::{StaticCredentials, DEFAULT_CONNECTIONS};
pub use crate::backend::spool::SyncReport;
pub use crate::backend::timed::TimedBackend;
pub use crate::backend::{from_url, is_loopback_host, Backend, Profile, RemoteOptions, Storage};

/// Where a repository is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// A local path, or `s3:http[s]://host[:port]/bucket[/prefix]`.
    pub location: String,
    pub remote: RemoteOptions,
    /// Blob cache folder (default for remote repositories: the user's cache folder).
    pub cache_dir: Option<PathBuf>,
    /// Spool folder root (default: the cache folder's `spool/`).
    pub spool_dir: Option<PathBuf>,
    /// No blob cache at all.
    pub no_cache: bool,
    /// No spool: a remote repository that cannot take a write fails the run (`wal push
    /// --no-spool`, so that PostgreSQL keeps the segment and retries).
    pub no_spool: bool,
    /// A remote repository unreachable at the start is opened from the spool's copy of config
    /// and keys, and the run is spooled (snapshots).
    pub offline_start: bool,
}

impl OpenOptions {
    /// The storage alone, no spool or cache (for `init`, and to check a location before a
    /// password is asked for).
    pub fn storage(&self) -> Result<Storage> {
        backend::from_url(&self.location, &self.remote)
    }

    /// Where a remote repository's spool lives: one folder per repository location.
    fn spool_dir(&self, location: &str) -> Option<PathBuf> {
        let root = self
            .spool_dir
            .clone()
            .or_else(|| self.cache_dir.as_ref().map(|d| d.join("spool")))
            .or_else(|| BlobCache::default_root().map(|r| r.join("spool")))?;
        let key = blake3::hash(location.as_bytes()).to_hex();
        Some(root.join(&key.as_str()[..32]))
    }

    /// Where this client remembers what it saw of each repository (see
    /// [`crate::repository::seen`]): the cache folder, also for a local repository.
    pub fn seen_path(&self, repo: &Repository) -> Option<PathBuf> {
        let root = self.cache_dir.clone().or_else(BlobCache::default_root)?;
        Some(crate::repository::seen::seen_path(&root, &repo.config().id))
    }

    /// Opens the repository with `password`; a remote one through its spool.
    pub fn open(&self, password: &[u8]) -> Result<Repository> {
        Ok(self.open_timed(password)?.0)
    }

    /// [`OpenOptions::open`], and the handle that tells how long writes to the repository
    /// took (uploads, for a remote one).
    pub fn open_timed(&self, password: &[u8]) -> Result<(Repository, Arc<TimedBackend>)> {
        let Storage { backend, profile } = self.storage()?;
        let timed = Arc::new(TimedBackend::new(backend));
        let backend = Arc::clone(&timed) as Arc<dyn Backend>;
        let local = profile.local;
        let spool = match local || self.no_spool {
            true => None,
            false => self
                .spool_dir(&backend.location())
                .map(|d| Arc::new(SpoolBackend::new(Arc::clone(&backend), d))),
        };
        if let (Some(s), true) = (&spool, self.offline_start) {
            s.allow_offline_start();
        }
        let opened = match &spool {
            Some(s) => Arc::clone(s) as Arc<dyn Backend>,
            None => backend,
        };
        let mut repo = Repository::open(
            Storage {
                backend: opened,
                profile,
            },
            password,
        )?;
        if let Some(s) = spool {
            repo.attach_spool(s);
        }
        // The snapshot list: one file, that spares reading every snapshot file on each run,
        // local repositories included.
        if !self.no_cache {
            if let Some(root) = self.cache_dir.clone().or_else(BlobCache::default_root) {
                repo.set_list_cache(&root);
            }
        }
        // A local repository reads as fast as a cache would: cache only when asked to.
        let root = match (&self.cache_dir, self.no_cache, local) {
            (_, true, _) => None,
            (Some(dir), _, _) => Some(dir.clone()),
            (None, _, false) => BlobCache::default_root(),
            (None, _, true) => None,
        };
        if let Some(root) = root {
            let id = repo.config().id;
            repo.set_cache(BlobCache::new(&root, &id, crate::cache::DEFAULT_LIMIT));
            repo.set_file_cache(BlobCache::files(
                root,
                &id,
                crate::cache::DEFAULT_FILE_LIMIT,
            ));
        }
        Ok((repo, timed))
    }
}

/// Uploads what an earlier run left in the spool before a run writes anything new. `None`
/// when nothing waits; `Some(Err)` when it could not (the run then spools too: the repository
/// may be unreachable still).
pub fn sync_spool_first(repo: &Repository) -> Option<Result<usize>> {
    let spool = repo.spool()?;
    if spool.is_empty().unwrap_or(true) {
        return None;
    }
    let r = crate::repository::liveness::secure_spooled(repo)
        .and_then(|()| Ok(spool.sync(repo.activity())?))
        .map(|r| r.snapshots.len());
    if let Err(e) = &r {
        spool.start_spooling(format!("earlier snapshots wait in the spool ({e})"));
    }
    Some(r)
}
