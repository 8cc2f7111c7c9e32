//! The repository: the one way to storage. This file holds the handle ([`Repository`]): creating,
//! opening and unlocking it, and what it carries (key, config, cache, spool, damage log,
//! progress). Beside it:
//!
//! - `keys`: key files (unlock, add, remove);
//! - `files`: sealed files (save, load, list, resolve a prefix);
//! - `index_files`: the index files in force and their supersede rules;
//! - `snapshots`: snapshot files;
//! - `blobs` and `packs`: reading blobs (deltas rebuilt) and pack headers;
//! - `packer`: writing packs; `liveness`: which blobs snapshots need, and a snapshot's commit
//!   check against a concurrent prune; `open`: a repository from a location (backend stack,
//!   spool, cache).
//!
//! The write order that makes sbk crash-safe: packs are made durable first (by the
//! [`crate::archiver::Archiver`]), then the index file that lists them, then the snapshot that
//! references them. A crash at any point leaves only unreferenced files.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

use crate::backend::spool::SpoolBackend;
use crate::backend::{Backend, ErrorKind, Profile, Storage};
use crate::cache::BlobCache;
use crate::chunker::ChunkerParams;
use crate::crypto::{aad, open_with_key, seal_with_nonce, OpenError};
use crate::error::{Error, Result};
use crate::format::config::{self, Compression, Config, FORMAT_VERSION};
use crate::format::key::{KeyFile, KEY_VERSION, MAX_KEY_FILE_LEN, ROLE_FULL};
use crate::format::{payload, FormatError};
use crate::id::Id;
use crate::index::{BlobRef, Index};

pub mod audit;
mod blobs;
mod files;
mod index_files;
mod keys;
pub mod liveness;
pub mod lock;
pub mod open;
pub mod packer;
mod packs;
pub mod seen;
mod snapshots;
mod storage;
pub mod trees;
pub mod wal;

use files::read_config;
use keys::make_key_file;

pub use index_files::{IndexFiles, MAX_BLOBS_PER_INDEX};
// The repository's vocabulary: the types its API takes and returns, named here so that
// commands, automation and the CLI never reach into `format`, `crypto` or `backend`
// (`docs/architecture.md`).
pub use crate::backend::lock::{LockMode, LockPolicy};
pub use crate::backend::FileType;
pub use crate::crypto::{getrandom, KdfParams, MasterKey, DEFAULT_M_COST_KIB, DEFAULT_T_COST};
pub use crate::format::index::{DeletedPack, IndexFile, IndexPack, MarkedPack};
pub use crate::format::pack::PackEntry;
pub use crate::format::snapshot::{Snapshot, Source, Summary, SNAPSHOT_VERSION};
pub use crate::format::tree::{validate_name, FileNode, Tree};
pub use crate::format::BlobKind;

pub use keys::MAX_KEYS_TRIED;
pub use packer::PackCopier;
pub use packs::pack_overhead;
pub use snapshots::SnapshotRef;
pub use storage::StorageSize;

/// Upper bound for a decoded index, snapshot or config (a bomb guard, far above real sizes).
const MAX_FILE_PLAINTEXT: usize = 1 << 30;
/// Default target pack size: see `docs/format.md` for why.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Longest chain of delta bases a reader follows (writers stay far below: see `docs/format.md`).
pub const MAX_CHAIN_DEPTH: usize = 32;
/// Default zstd level for blobs.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Highest zstd level for repository files and archived WAL, whatever the blobs' level: WAL
/// must keep up with the server (a 16 MiB segment at level 19 takes seconds), and index files
/// are mostly random IDs that higher levels do not shrink.
pub const MAX_FILE_LEVEL: i32 = 3;

/// Who and when, recorded in key files and snapshots.
#[derive(Clone, Debug)]
pub struct Actor {
    pub host: String,
    pub username: String,
    pub now: DateTime<FixedOffset>,
}

impl Actor {
    /// This machine, this user, now.
    pub fn current() -> Self {
        Actor {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            username: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .ok()
                .filter(|u| !u.is_empty())
                // Services and containers often set neither: the user ID still says who.
                // SAFETY: getuid cannot fail and touches no memory.
                .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() })),
            now: chrono::Local::now().fixed_offset(),
        }
    }
}

/// An open, unlocked repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// What the storage is (local, how many requests at once, where packs are staged).
    profile: Profile,
    key: MasterKey,
    config: Config,
    key_id: Id,
    cache: Option<Arc<BlobCache>>,
    /// Snapshot and index files, so that a remote repository's are downloaded once.
    file_cache: Option<Arc<BlobCache>>,
    /// zstd level for the blobs this handle writes: the config's, or a run's own choice
    /// ([`Repository::with_compression`]).
    compression: i32,
    /// The snapshot list cache's file (see [`Repository::list_snapshots`]).
    list_cache: Option<std::path::PathBuf>,
    spool: Option<Arc<SpoolBackend>>,
    damage: DamageLog,
    /// Progress of the command using this handle, for a display to read.
    activity: Arc<crate::progress::Activity>,
    /// What this handle added and removed, for its audit record; clones share it.
    journal: Arc<audit::Journal>,
}

/// The damaged files a repository handle passed over; clones share the list, so a caller can
/// keep one to report after the handle is gone.
#[derive(Clone, Debug, Default)]
pub struct DamageLog(Arc<std::sync::Mutex<Vec<Damage>>>);

impl DamageLog {
    /// Records a file (once).
    pub fn note(&self, d: Damage) {
        let mut all = self.0.lock().expect("damage");
        if !all.iter().any(|x| x.kind == d.kind && x.id == d.id) {
            all.push(d);
        }
    }

    pub fn all(&self) -> Vec<Damage> {
        self.0.lock().expect("damage").clone()
    }
}

/// A repository file that failed to load and was passed over so that the work could go on
/// (a backup must not stop for good over one bad file), with the command that repairs it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// `snapshot` or `index`.
    pub kind: &'static str,
    pub id: Id,
    pub message: String,
    /// What the operator runs.
    pub remedy: String,
}

fn damaged(t: FileType, id: &Id, reason: impl std::fmt::Display) -> Error {
    Error::damaged(format!("{} file {}", t.noun(), id), reason.to_string())
}

fn open_err(e: OpenError) -> String {
    match e {
        OpenError::TooShort(n) => format!("too short to be sealed ({n} bytes)"),
        OpenError::Unauthentic => "authentication failed: the bytes were changed".into(),
    }
}

impl Repository {
    /// Creates a repository on an empty backend and returns it unlocked.
    pub fn init(
        storage: impl Into<Storage>,
        password: &[u8],
        kdf: KdfParams,
        actor: &Actor,
    ) -> Result<Self> {
        Self::init_locked(storage, password, kdf, actor, None, None)
    }

    /// [`Repository::init`] on a bucket that locks every file by `lock` (S3 Object Lock,
    /// `docs/object-lock.md`), and with a zstd level for blobs other than the default; both are
    /// recorded in the config.
    pub fn init_locked(
        storage: impl Into<Storage>,
        password: &[u8],
        kdf: KdfParams,
        actor: &Actor,
        lock: Option<LockPolicy>,
        compression: Option<i32>,
    ) -> Result<Self> {
        let Storage { backend, profile } = storage.into();
        if password.is_empty() {
            return Err(Error::Invalid("an empty password is not allowed".into()));
        }
        if let Some(policy) = &lock {
            backend.prepare_lock(policy)?;
        }
        backend.create().map_err(|e| match e.kind {
            ErrorKind::AlreadyExists => Error::NotEmpty(backend.location()),
            _ => e.into(),
        })?;
        let key = MasterKey::random();
        let mut rid = [0u8; 32];
        crate::crypto::getrandom(&mut rid);
        let mut seed = [0u8; 8];
        crate::crypto::getrandom(&mut seed);
        let config = Config {
            version: FORMAT_VERSION,
            id: Id(rid),
            created: actor.now,
            chunker: ChunkerParams::default_with_seed(u64::from_le_bytes(seed)),
            compression: Compression {
                algorithm: "zstd".into(),
                level: compression.unwrap_or(DEFAULT_ZSTD_LEVEL),
            },
            pack_size: DEFAULT_PACK_SIZE,
            object_lock: lock,
        };
        // Key first, then config: a crash in between leaves a folder without config, which
        // `sbk init` reports as not empty and nothing mistakes for a repository.
        let (key_id, key_bytes) = make_key_file(&key, password, kdf, actor)?;
        backend.write(FileType::Key, &key_id.to_hex(), &key_bytes)?;
        let json = serde_json::to_vec(&config).expect("config serializes");
        let sealed = key.seal(aad::CONFIG, &payload::encode(&json, DEFAULT_ZSTD_LEVEL));
        backend.write(
            FileType::Config,
            "config",
            &config::join(FORMAT_VERSION, &sealed),
        )?;
        let repo = Self::handle(Storage { backend, profile }, key, config, key_id);
        repo.journal.added(FileType::Key, key_id);
        Ok(repo)
    }

    /// A handle with nothing attached yet (no cache, no spool, no damage noted).
    fn handle(storage: Storage, key: MasterKey, config: Config, key_id: Id) -> Self {
        Repository {
            backend: storage.backend,
            profile: storage.profile,
            key,
            compression: config.compression.level,
            list_cache: None,
            config,
            key_id,
            cache: None,
            file_cache: None,
            spool: None,
            damage: Default::default(),
            activity: Default::default(),
            journal: Default::default(),
        }
    }

    /// Opens a repository with a password.
    pub fn open(storage: impl Into<Storage>, password: &[u8]) -> Result<Self> {
        let storage = storage.into();
        let config_bytes = read_config(&storage)?;
        let (key, key_id, key_damage) = Self::unlock(storage.backend.as_ref(), password)?;
        let repo = Self::open_config(storage, key, key_id, &config_bytes)?;
        for d in key_damage {
            repo.note_damage(d);
        }
        Ok(repo)
    }

    /// Opens a repository with its master key itself (a recovery sheet), no key file needed:
    /// a wrong key is told apart from a damaged config by nothing, so both read "does not
    /// belong to this repository".
    pub fn open_with_master_key(storage: impl Into<Storage>, key: MasterKey) -> Result<Self> {
        let storage = storage.into();
        let config_bytes = read_config(&storage)?;
        let (_, sealed) = config::split(&config_bytes).expect("checked by read_config");
        if key.open(aad::CONFIG, sealed).is_err() {
            return Err(Error::Refused(
                "this recovery sheet does not open this repository's config: it belongs to \
                 another repository (or the config is damaged)"
                    .into(),
            ));
        }
        Self::open_config(storage, key, Id([0; 32]), &config_bytes)
    }

    fn open_config(
        storage: Storage,
        key: MasterKey,
        key_id: Id,
        config_bytes: &[u8],
    ) -> Result<Self> {
        let (_, sealed) = config::split(config_bytes).expect("checked by read_config");
        let plain = key
            .open(aad::CONFIG, sealed)
            .map_err(|e| Error::damaged("config", open_err(e)))?;
        let json = payload::decode(&plain, MAX_FILE_PLAINTEXT)
            .map_err(|e| Error::damaged("config", e.to_string()))?;
        let config: Config =
            serde_json::from_slice(&json).map_err(|e| Error::damaged("config", e.to_string()))?;
        if config.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                supported: FORMAT_VERSION,
            });
        }
        config
            .chunker
            .validate()
            .map_err(|e| Error::damaged("config", e))?;
        Ok(Self::handle(storage, key, config, key_id))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This handle with the given chunker seed instead of its own (in memory only): for tests
    /// that need the same cuts every run.
    #[cfg(test)]
    pub(crate) fn with_chunker_seed(mut self, seed: u64) -> Self {
        self.config.chunker = crate::chunker::ChunkerParams::default_with_seed(seed);
        self
    }

    /// Uses a local blob cache for delta bases (see [`crate::cache`]).
    pub fn set_cache(&mut self, cache: BlobCache) {
        self.cache = Some(Arc::new(cache));
    }

    /// Uses a local cache of snapshot and index files ([`BlobCache::files`]).
    pub fn set_file_cache(&mut self, cache: BlobCache) {
        self.file_cache = Some(Arc::new(cache));
    }

    /// Keeps the list of snapshots in one sealed file under the cache folder `root` (see
    /// [`Repository::list_snapshots`]).
    pub fn set_list_cache(&mut self, root: &std::path::Path) {
        let dir = root.join(self.config.id.to_hex());
        self.list_cache = Some(dir.join("snapshots.list"));
    }

    /// Bounds the caches' sizes (after a run added to them).
    pub fn trim_caches(&self) {
        for c in self.cache.iter().chain(&self.file_cache) {
            c.trim();
        }
    }

    /// A handle on the same repository that reads only what is stored, no cache: `check`
    /// judges the storage, not a local copy of it.
    pub fn uncached(&self) -> Repository {
        Repository {
            cache: None,
            file_cache: None,
            list_cache: None,
            ..self.share()
        }
    }

    /// A handle on the same repository (caches, journal and all) that writes blobs at this zstd
    /// level instead of the config's: a snapshot's `--compression`. Deltas keep their own level.
    pub fn with_compression(&self, level: Option<i32>) -> Repository {
        Repository {
            compression: level.unwrap_or(self.compression),
            ..self.share()
        }
    }

    /// The zstd level this handle writes blobs at.
    pub fn compression_level(&self) -> i32 {
        self.compression
    }

    fn share(&self) -> Repository {
        Repository {
            backend: Arc::clone(&self.backend),
            profile: self.profile.clone(),
            key: self.key.clone(),
            config: self.config.clone(),
            key_id: self.key_id,
            cache: self.cache.clone(),
            file_cache: self.file_cache.clone(),
            compression: self.compression,
            list_cache: self.list_cache.clone(),
            spool: self.spool.clone(),
            damage: self.damage.clone(),
            activity: Arc::clone(&self.activity),
            journal: Arc::clone(&self.journal),
        }
    }

    /// Records the spool this repository was opened through (see [`crate::backend::spool`]);
    /// `spool` must be the backend given to [`Repository::open`].
    pub fn attach_spool(&mut self, spool: Arc<SpoolBackend>) {
        self.spool = Some(spool);
    }

    /// The spool, when one is enabled.
    pub fn spool(&self) -> Option<&Arc<SpoolBackend>> {
        self.spool.as_ref()
    }

    /// Whether a snapshot is in the spool, not yet uploaded.
    pub fn is_spooled(&self, id: &Id) -> bool {
        self.spool.as_ref().is_some_and(|s| {
            s.spooled(FileType::Snapshot)
                .is_ok_and(|l| l.iter().any(|f| f.name == id.to_hex()))
        })
    }

    /// The blob cache, if one is in use.
    pub fn cache(&self) -> Option<&BlobCache> {
        self.cache.as_deref()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The key file that unlocked this repository.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// Records a file passed over as damaged (once per file).
    pub fn note_damage(&self, d: Damage) {
        self.damage.note(d);
    }

    /// The files passed over as damaged so far, for the caller to report.
    pub fn damage(&self) -> Vec<Damage> {
        self.damage.all()
    }

    /// A handle on the damage list that outlives this repository handle.
    pub fn damage_log(&self) -> DamageLog {
        self.damage.clone()
    }

    /// The progress counters commands on this handle update; a display keeps a clone to read
    /// them from another thread.
    pub fn activity(&self) -> &Arc<crate::progress::Activity> {
        &self.activity
    }
}
