//! The repository: opening and unlocking it, and loading and saving its sealed files.
//!
//! This module is the sole owner of the write order that makes sbk crash-safe: packs are made
//! durable first (by the [`crate::archiver::Archiver`]), then the index file that lists them, then
//! the snapshot that references them. A crash at any point leaves only unreferenced files.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

use crate::backend::spool::SpoolBackend;
use crate::backend::{Backend, ErrorKind, FileType};
use crate::cache::BlobCache;
use crate::chunker::ChunkerParams;
use crate::crypto::{aad, open_with_key, seal_with_nonce, KdfParams, MasterKey, OpenError};
use crate::error::{Error, Result};
use crate::format::config::{self, Compression, Config, FORMAT_VERSION};
use crate::format::index::{DeletedPack, IndexFile, IndexPack, MarkedPack};
use crate::format::key::{KeyFile, KEY_VERSION, MAX_KEY_FILE_LEN, ROLE_FULL};
use crate::format::pack::PackEntry;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::format::{payload, BlobKind, FormatError};
use crate::id::Id;
use crate::index::{BlobRef, Index};

/// Upper bound for a decoded index, snapshot or config (a bomb guard, far above real sizes).
const MAX_FILE_PLAINTEXT: usize = 1 << 30;
/// Default target pack size: see `docs/format.md` for why.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Longest chain of delta bases a reader follows (writers stay far below: see `docs/format.md`).
pub const MAX_CHAIN_DEPTH: usize = 32;
/// Bytes read from a pack's end to find its header in one request.
const PACK_TAIL_READ: u64 = 16 * 1024;
/// Default zstd level for blobs.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

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
                .unwrap_or_default(),
            now: chrono::Local::now().fixed_offset(),
        }
    }
}

/// The index files in force: see [`Repository::load_index_files`].
#[derive(Debug, Default)]
pub struct IndexFiles {
    pub files: Vec<(Id, IndexFile)>,
    /// Index files still stored that a file in `files` supersedes.
    pub superseded: Vec<Id>,
    /// Effective index files that failed to load (passed over: see [`Repository::damage`]).
    pub damaged: Vec<Id>,
    /// When some are damaged: the packs no intact file names, from their own headers (which
    /// carry the same entries), so that reading and writing go on.
    pub recovered: Vec<IndexPack>,
}

impl IndexFiles {
    /// Builds the in-memory index.
    pub fn to_index(&self) -> Result<Index> {
        let mut index = Index::new();
        for (id, f) in &self.files {
            index
                .add_file(f)
                .map_err(|e| damaged(FileType::Index, id, e))?;
        }
        for p in &self.recovered {
            index
                .add_pack(p.id, &p.blobs)
                .map_err(|e| Error::damaged(format!("pack {}", p.id), e))?;
        }
        index.finalize();
        index.set_loaded_files(
            self.files
                .iter()
                .map(|(id, _)| *id)
                .chain(self.superseded.iter().copied())
                .chain(self.damaged.iter().copied())
                .collect(),
        );
        Ok(index)
    }
}

/// An open, unlocked repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    config: Config,
    key_id: Id,
    cache: Option<BlobCache>,
    spool: Option<Arc<SpoolBackend>>,
    damage: DamageLog,
    /// Progress of the command using this handle, for a display to read.
    activity: Arc<crate::progress::Activity>,
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

/// Most key files tried at one unlock: planted files must not make it endless.
pub const MAX_KEYS_TRIED: usize = 64;

/// Where the ID of the key that opened a repository last is kept: the user's cache folder,
/// one file per repository location. Only a hint: nothing secret, and a missing or wrong one
/// costs one more key tried.
fn key_hint_path(location: &str) -> Option<std::path::PathBuf> {
    let root = crate::cache::BlobCache::default_root()?;
    let name = blake3::hash(location.as_bytes()).to_hex();
    Some(root.join("last-key").join(&name.as_str()[..32]))
}

fn last_key_hint(location: &str) -> Option<Id> {
    let text = std::fs::read_to_string(key_hint_path(location)?).ok()?;
    Id::from_hex(text.trim())
}

fn remember_key_hint(location: &str, id: &Id) {
    let Some(path) = key_hint_path(location) else {
        return;
    };
    if last_key_hint(location) == Some(*id) {
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, id.to_hex());
}

/// Reads `config`, mapping a missing file to [`Error::NoRepository`] and checking the version.
fn read_config(backend: &dyn Backend) -> Result<Vec<u8>> {
    let bytes = match backend.read(FileType::Config, "config") {
        Ok(b) => b,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(Error::NoRepository(backend.location()))
        }
        // `-r` naming a file.
        Err(_) if backend.is_local() && std::path::Path::new(&backend.location()).is_file() => {
            return Err(Error::NoRepository(format!(
                "{} (a file, not a repository)",
                backend.location()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let (version, _) =
        config::split(&bytes).map_err(|e| Error::damaged("config", e.to_string()))?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(bytes)
}

/// Makes a key file for `key` under `password`.
fn make_key_file(
    key: &MasterKey,
    password: &[u8],
    kdf: KdfParams,
    actor: &Actor,
) -> Result<(Id, Vec<u8>)> {
    let derived = zeroize::Zeroizing::new(kdf.derive(password).map_err(Error::Invalid)?);
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(key).expect("master key serializes"));
    let mut nonce = [0u8; 24];
    crate::crypto::getrandom(&mut nonce);
    let mut kf = KeyFile {
        version: KEY_VERSION,
        role: ROLE_FULL.into(),
        created: actor.now,
        host: actor.host.clone(),
        username: actor.username.clone(),
        kdf,
        master_key: Vec::new(),
    };
    kf.master_key = seal_with_nonce(&derived, nonce, &kf.aad(), &plain);
    let bytes = serde_json::to_vec_pretty(&kf).expect("key file serializes");
    Ok((Id::of_file_bytes(&bytes), bytes))
}

impl Repository {
    /// Creates a repository on an empty backend and returns it unlocked.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        actor: &Actor,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::Invalid("an empty password is not allowed".into()));
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
                level: DEFAULT_ZSTD_LEVEL,
            },
            pack_size: DEFAULT_PACK_SIZE,
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
        Ok(Repository {
            backend,
            key,
            config,
            key_id,
            cache: None,
            spool: None,
            damage: Default::default(),
            activity: Default::default(),
        })
    }

    /// Opens a repository with a password.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        let config_bytes = read_config(backend.as_ref())?;
        let (key, key_id, key_damage) = Self::unlock(backend.as_ref(), password)?;
        let repo = Self::open_config(backend, key, key_id, &config_bytes)?;
        for d in key_damage {
            repo.note_damage(d);
        }
        Ok(repo)
    }

    /// Opens a repository with its master key itself (a recovery sheet), no key file needed:
    /// a wrong key is told apart from a damaged config by nothing, so both read "does not
    /// belong to this repository".
    pub fn open_with_master_key(backend: Arc<dyn Backend>, key: MasterKey) -> Result<Self> {
        let config_bytes = read_config(backend.as_ref())?;
        let (_, sealed) = config::split(&config_bytes).expect("checked by read_config");
        if key.open(aad::CONFIG, sealed).is_err() {
            return Err(Error::Refused(
                "this recovery sheet does not open this repository's config: it belongs to \
                 another repository (or the config is damaged)"
                    .into(),
            ));
        }
        Self::open_config(backend, key, Id([0; 32]), &config_bytes)
    }

    fn open_config(
        backend: Arc<dyn Backend>,
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
        Ok(Repository {
            backend,
            key,
            config,
            key_id,
            cache: None,
            spool: None,
            damage: Default::default(),
            activity: Default::default(),
        })
    }

    /// Tries the key files with the password: the one that opened this repository last time
    /// first (a hint kept in the user's cache folder), then the others, at most
    /// [`MAX_KEYS_TRIED`]. A damaged key file is skipped and the next tried; a version-1 file
    /// whose bytes no longer match its name but whose sealed key still opens is used, and
    /// reported. Errors: "wrong password" when an intact key was tried; the damage when only
    /// damaged ones were there; "no usable key" when there is no key file it can use at all.
    fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<(MasterKey, Id, Vec<Damage>)> {
        let mut ids: Vec<Id> = backend
            .list(FileType::Key)?
            .iter()
            .filter_map(|i| Id::from_hex(&i.name))
            .collect();
        ids.sort();
        let hint = last_key_hint(&backend.location());
        if let Some(pos) = hint.and_then(|h| ids.iter().position(|i| *i == h)) {
            let first = ids.remove(pos);
            ids.insert(0, first);
        }
        let total = ids.len();
        let mut damage: Vec<Damage> = Vec::new();
        let mut tried = 0;
        let note = |damage: &mut Vec<Damage>, id: &Id, why: String| {
            damage.push(Damage {
                kind: "key",
                id: *id,
                message: format!("key file {id} is damaged: {why}"),
                remedy: format!(
                    "`sbk key add` writes a fresh key file, then `sbk key remove {}`",
                    id.short()
                ),
            })
        };
        for id in ids.iter().take(MAX_KEYS_TRIED) {
            let bytes = match backend.read(FileType::Key, &id.to_hex()) {
                Ok(b) => b,
                // Listed, then removed by a `key remove` meanwhile.
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if bytes.len() > MAX_KEY_FILE_LEN {
                note(&mut damage, id, format!("{} bytes, too large", bytes.len()));
                continue;
            }
            let name_ok = Id::of_file_bytes(&bytes) == *id;
            let kf: KeyFile = match serde_json::from_slice(&bytes) {
                Ok(k) => k,
                Err(e) => {
                    note(&mut damage, id, e.to_string());
                    continue;
                }
            };
            if kf.role != ROLE_FULL {
                continue;
            }
            if !(1..=KEY_VERSION).contains(&kf.version) {
                note(
                    &mut damage,
                    id,
                    format!("unsupported key file version {}", kf.version),
                );
                continue;
            }
            let derived = match kf.kdf.derive(password) {
                Ok(k) => zeroize::Zeroizing::new(k),
                Err(e) => {
                    note(&mut damage, id, e);
                    continue;
                }
            };
            let Ok(plain) = open_with_key(&derived, &kf.aad(), &kf.master_key) else {
                if name_ok {
                    tried += 1;
                } else {
                    note(&mut damage, id, "its bytes do not match its name".into());
                }
                continue;
            };
            let plain = zeroize::Zeroizing::new(plain);
            let Ok(key) = serde_json::from_slice::<MasterKey>(&plain) else {
                note(&mut damage, id, "its sealed key does not parse".into());
                continue;
            };
            if !name_ok {
                note(
                    &mut damage,
                    id,
                    "its bytes do not match its name (it still opens)".into(),
                );
            }
            remember_key_hint(&backend.location(), id);
            return Ok((key, *id, damage));
        }
        if tried > 0 {
            return Err(Error::WrongPassword);
        }
        if let Some(d) = damage.into_iter().next() {
            return Err(Error::damaged(
                format!("key file {}", d.id),
                format!(
                    "{}; no intact key file was left to try ({})",
                    d.message
                        .split_once(" is damaged: ")
                        .map_or(&*d.message, |x| x.1),
                    d.remedy
                ),
            ));
        }
        Err(Error::NotFound(format!(
            "no usable key: the repository has {total} key file(s) and none this sbk can use; \
             a recovery sheet (`sbk key import --recovery`) adds one"
        )))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Uses a local blob cache for delta bases (see [`crate::cache`]).
    pub fn set_cache(&mut self, cache: BlobCache) {
        self.cache = Some(cache);
    }

    /// The blob cache, if one is in use.
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

    pub fn cache(&self) -> Option<&BlobCache> {
        self.cache.as_ref()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
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

    /// Seals and writes a file named by the hash of its bytes.
    pub fn save_file(&self, t: FileType, label: &[u8], plaintext: &[u8]) -> Result<Id> {
        let sealed = self.key.seal(
            label,
            &payload::encode(plaintext, self.config.compression.level),
        );
        let id = Id::of_file_bytes(&sealed);
        self.backend.write(t, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    /// Reads, checks and opens a sealed file.
    pub fn load_file(&self, t: FileType, id: &Id, label: &[u8]) -> Result<Vec<u8>> {
        let bytes = self.backend.read(t, &id.to_hex())?;
        if Id::of_file_bytes(&bytes) != *id {
            return Err(damaged(
                t,
                id,
                "its bytes do not match its name (storage corruption)",
            ));
        }
        let plain = self
            .key
            .open(label, &bytes)
            .map_err(|e| damaged(t, id, open_err(e)))?;
        payload::decode(&plain, MAX_FILE_PLAINTEXT).map_err(|e| damaged(t, id, e))
    }

    /// IDs of all files of a type (names that are not IDs are ignored).
    pub fn list_ids(&self, t: FileType) -> Result<Vec<Id>> {
        Ok(self
            .backend
            .list(t)?
            .iter()
            .filter_map(|f| Id::from_hex(&f.name))
            .collect())
    }

    /// The packs stored, with their sizes (names that are not IDs are ignored).
    pub fn stored_packs(&self) -> Result<std::collections::HashMap<Id, u64>> {
        Ok(self
            .backend
            .list(FileType::Pack)?
            .into_iter()
            .filter_map(|f| Id::from_hex(&f.name).map(|id| (id, f.size)))
            .collect())
    }

    /// Resolves a full ID or a unique hex prefix among the files of a type.
    pub fn resolve(&self, t: FileType, prefix: &str) -> Result<Id> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{prefix:?} is not an ID or ID prefix"
            )));
        }
        let matches: Vec<Id> = self
            .list_ids(t)?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(Error::NotFound(format!(
                "no {} matches {prefix:?}",
                t.noun()
            ))),
            1 => Ok(matches[0]),
            n => Err(Error::Ambiguous(format!(
                "{prefix:?} matches {n} {} files; give more digits",
                t.noun()
            ))),
        }
    }

    /// Loads one index file.
    pub fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        let plain = self.load_file(FileType::Index, id, aad::INDEX)?;
        IndexFile::decode(&plain).map_err(|e| damaged(FileType::Index, id, e))
    }

    /// Loads the effective index files: every index file except those that another one
    /// supersedes (a file `prune` replaced; it may still exist for a moment, or be damaged).
    pub fn load_index_files(&self) -> Result<IndexFiles> {
        // A file listed but gone when read was superseded and removed by a prune meanwhile:
        // list again, so that the superseding file is seen.
        let mut attempt = 0;
        loop {
            match self.try_load_index_files() {
                Err(Error::Backend(e)) if e.kind == ErrorKind::NotFound && attempt < 4 => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_load_index_files(&self) -> Result<IndexFiles> {
        use rayon::prelude::*;
        let ids = self.list_ids(FileType::Index)?;
        let loaded: Vec<(Id, Result<IndexFile>)> = ids
            .par_iter()
            .map(|id| (*id, self.load_index_file(id)))
            .collect();
        let superseded: std::collections::HashSet<Id> = loaded
            .iter()
            .filter_map(|(_, f)| f.as_ref().ok())
            .flat_map(|f| f.supersedes.iter().copied())
            .collect();
        let mut files = Vec::with_capacity(loaded.len());
        let mut stored = Vec::new();
        let mut damaged_files = Vec::new();
        for (id, f) in loaded {
            if superseded.contains(&id) {
                stored.push(id);
                continue;
            }
            match f {
                Ok(f) => files.push((id, f)),
                // Passed over: backups and restores go on with the packs' own headers.
                Err(e @ Error::Damaged { .. }) => {
                    self.note_damage(Damage {
                        kind: "index",
                        id,
                        message: e.to_string(),
                        remedy: "`sbk repair index` rebuilds the index from the packs".into(),
                    });
                    damaged_files.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        stored.sort();
        let recovered = if damaged_files.is_empty() {
            Vec::new()
        } else {
            self.recover_index(&mut files)?
        };
        Ok(IndexFiles {
            files,
            superseded: stored,
            damaged: damaged_files,
            recovered,
        })
    }

    /// Covers damaged index files: the packs no intact file names, read from their headers. A
    /// damaged file may have superseded others, which then count again: their entries for
    /// packs no longer stored are dropped, so that no read is sent to a deleted pack.
    pub(crate) fn recover_index(&self, files: &mut [(Id, IndexFile)]) -> Result<Vec<IndexPack>> {
        use rayon::prelude::*;
        let stored = self.stored_packs()?;
        for (_, f) in files.iter_mut() {
            f.packs.retain(|p| stored.contains_key(&p.id));
            f.marked.retain(|m| stored.contains_key(&m.pack.id));
        }
        let named: std::collections::HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| {
                f.packs
                    .iter()
                    .map(|p| p.id)
                    .chain(f.marked.iter().map(|m| m.pack.id))
            })
            .collect();
        let unnamed: Vec<(Id, u64)> = stored
            .into_iter()
            .filter(|(id, _)| !named.contains(id))
            .collect();
        // A pack whose header cannot be read is left out: `check` names it.
        let mut packs: Vec<IndexPack> = unnamed
            .par_iter()
            .filter_map(|(id, size)| {
                self.read_pack_header(id, *size)
                    .ok()
                    .map(|blobs| IndexPack { id: *id, blobs })
            })
            .collect();
        packs.sort_by_key(|p| p.id);
        Ok(packs)
    }

    /// Loads every effective index file into the in-memory index.
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_files()?.to_index()
    }

    /// Saves an index file (after the packs it lists are durable).
    pub fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_file(FileType::Index, aad::INDEX, &file.encode())
    }

    /// Writes a new index in files of at most [`crate::archiver::MAX_BLOBS_PER_INDEX`] blobs,
    /// the **last** superseding `supersedes`, so that the old files stop counting only once every
    /// new one is durable (`prune`, `repair`).
    pub fn replace_index(
        &self,
        live: Vec<IndexPack>,
        marked: Vec<MarkedPack>,
        deleted: Vec<DeletedPack>,
        supersedes: &[Id],
    ) -> Result<Vec<Id>> {
        let limit = crate::archiver::MAX_BLOBS_PER_INDEX;
        let mut files = vec![IndexFile::default()];
        let mut blobs = 0;
        let mut room = |n: usize, files: &mut Vec<IndexFile>| {
            if blobs + n > limit && blobs > 0 {
                files.push(IndexFile::default());
                blobs = 0;
            }
            blobs += n;
        };
        for p in live {
            room(p.blobs.len(), &mut files);
            files.last_mut().expect("one").packs.push(p);
        }
        for m in marked {
            room(m.pack.blobs.len(), &mut files);
            files.last_mut().expect("one").marked.push(m);
        }
        let last = files.last_mut().expect("one");
        last.deleted = deleted;
        last.supersedes = supersedes.to_vec();
        files.iter().map(|f| self.save_index(f)).collect()
    }

    /// Saves a snapshot (after its index is durable); returns its ID.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let json = serde_json::to_vec(snap).expect("snapshot serializes");
        self.save_file(FileType::Snapshot, aad::SNAPSHOT, &json)
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let json = self.load_file(FileType::Snapshot, id, aad::SNAPSHOT)?;
        let snap: Snapshot =
            serde_json::from_slice(&json).map_err(|e| damaged(FileType::Snapshot, id, e))?;
        if snap.version != crate::format::snapshot::SNAPSHOT_VERSION {
            return Err(damaged(
                FileType::Snapshot,
                id,
                format!(
                    "snapshot version {} is not supported by this sbk; upgrade sbk",
                    snap.version
                ),
            ));
        }
        Ok(snap)
    }

    /// All snapshots, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        use rayon::prelude::*;
        let ids = self.list_ids(FileType::Snapshot)?;
        let loaded: Vec<Option<(Id, Snapshot)>> = ids
            .par_iter()
            .map(|id| match self.load_snapshot(id) {
                Ok(s) => Ok(Some((*id, s))),
                // Listed, then removed by a concurrent `forget`.
                Err(Error::Backend(e)) if e.kind == ErrorKind::NotFound => Ok(None),
                // Passed over, so that backups and the other snapshots go on.
                Err(e @ Error::Damaged { .. }) => {
                    self.note_damage(Damage {
                        kind: "snapshot",
                        id: *id,
                        message: e.to_string(),
                        remedy: format!(
                            "`sbk forget {}` removes it (`sbk check` tells whether its data is whole)",
                            id.short()
                        ),
                    });
                    Ok(None)
                }
                Err(e) => Err(e),
            })
            .collect::<Result<_>>()?;
        let mut out: Vec<(Id, Snapshot)> = loaded.into_iter().flatten().collect();
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest` or an ID prefix to a snapshot.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self
                .list_snapshots()?
                .pop()
                .ok_or_else(|| Error::NotFound("the repository has no snapshots".into()));
        }
        let id = self.resolve(FileType::Snapshot, spec)?;
        Ok((id, self.load_snapshot(&id)?))
    }

    /// Reads, opens, decompresses and verifies one blob, following a delta blob's chain of
    /// bases. Every blob of the chain is authenticated; only the requested one is re-hashed: a
    /// wrong base can only produce a wrong result, which that final check catches (hashing
    /// every level cost a third of a deep chain's restore time).
    pub fn load_blob(&self, index: &Index, blob: &BlobRef) -> Result<Vec<u8>> {
        self.load_blob_at(index, blob, 0, true, false, None)
    }

    /// Like [`Repository::load_blob`], with the blob's sealed bytes already read (by a read
    /// that covered several blobs of its pack).
    pub fn load_blob_sealed(
        &self,
        index: &Index,
        blob: &BlobRef,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.load_blob_at(index, blob, 0, true, false, Some(sealed))
    }

    /// Reads the sealed bytes of `blobs`, which must lie back to back in one pack, with one
    /// ranged read.
    pub fn read_sealed_run(&self, blobs: &[BlobRef]) -> Result<Vec<Vec<u8>>> {
        let (Some(first), Some(last)) = (blobs.first(), blobs.last()) else {
            return Ok(Vec::new());
        };
        let adjacent = blobs.windows(2).all(|w| {
            w[1].pack == w[0].pack
                && w[1].offset as u64 == w[0].offset as u64 + w[0].stored_len as u64
        });
        if !adjacent {
            return Err(Error::Invalid(
                "read_sealed_run: blobs are not back to back in one pack".into(),
            ));
        }
        let end = last.offset as u64 + last.stored_len as u64;
        let len = u32::try_from(end - first.offset as u64)
            .map_err(|_| Error::Invalid("blob run too long".into()))?;
        let bytes = self.backend.read_range(
            FileType::Pack,
            &first.pack.to_hex(),
            first.offset as u64,
            len,
        )?;
        Ok(blobs
            .iter()
            .map(|b| {
                let at = (b.offset - first.offset) as usize;
                bytes[at..at + b.stored_len as usize].to_vec()
            })
            .collect())
    }

    /// Loads a blob to serve as a delta base while writing: authenticated but not re-hashed,
    /// since a delta reproduces its blob from exactly these bytes whatever they are.
    /// It and its chain are read through the blob cache, and cached when fetched.
    pub(crate) fn load_base(&self, index: &Index, blob: &BlobRef) -> Result<Vec<u8>> {
        self.load_blob_at(index, blob, 0, false, true, None)
    }

    fn read_sealed(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        Ok(self.backend.read_range(
            FileType::Pack,
            &blob.pack.to_hex(),
            blob.offset as u64,
            blob.stored_len,
        )?)
    }

    fn load_blob_at(
        &self,
        index: &Index,
        blob: &BlobRef,
        depth: usize,
        verify: bool,
        use_cache: bool,
        preread: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let cache = self.cache.as_ref().filter(|_| use_cache);
        let cached = match preread {
            Some(_) => None,
            None => cache.and_then(|c| c.get(&blob.id)),
        };
        let from_cache = cached.is_some();
        let sealed = match cached.or(preread) {
            Some(s) => s,
            None => {
                let s = self.read_sealed(blob)?;
                if let Some(c) = cache {
                    c.put(&blob.id, &s);
                }
                s
            }
        };
        let base = match (blob.kind, blob.base) {
            (BlobKind::Delta, Some(base_id)) => {
                let what = || format!("delta blob {} in pack {}", blob.id.short(), blob.pack);
                if depth >= MAX_CHAIN_DEPTH {
                    return Err(Error::damaged(
                        what(),
                        format!("its chain of bases is longer than {MAX_CHAIN_DEPTH}"),
                    ));
                }
                let base_ref = index.get(&base_id).ok_or_else(|| {
                    Error::damaged(
                        what(),
                        format!(
                            "its base blob {} is missing from the index",
                            base_id.short()
                        ),
                    )
                })?;
                Some(self.load_blob_at(index, &base_ref, depth + 1, false, use_cache, None)?)
            }
            (BlobKind::Delta, None) => {
                return Err(Error::damaged(
                    format!("delta blob {}", blob.id.short()),
                    "no base recorded",
                ))
            }
            _ => None,
        };
        match self.open_blob_checked(blob, &sealed, base.as_deref(), verify) {
            // A damaged cache entry: drop it and read the blob from the repository.
            Err(_) if from_cache => {
                if let Some(c) = cache {
                    c.remove(&blob.id);
                }
                let sealed = self.read_sealed(blob)?;
                self.open_blob_checked(blob, &sealed, base.as_deref(), verify)
            }
            other => other,
        }
    }

    /// Opens a sealed blob read from its pack (given its base's plaintext if it is a delta) and
    /// checks its ID.
    pub fn open_blob(&self, blob: &BlobRef, sealed: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>> {
        self.open_blob_checked(blob, sealed, base, true)
    }

    /// Authenticates a sealed blob without decoding it (a delta whose base is gone).
    pub fn open_sealed(&self, blob: &BlobRef, sealed: &[u8]) -> Result<()> {
        let aad = crate::crypto::blob_aad(
            blob.kind as u8,
            &blob.id,
            blob.base.as_ref().filter(|_| blob.kind == BlobKind::Delta),
        );
        self.key.open(&aad, sealed).map(|_| ()).map_err(|e| {
            Error::damaged(
                format!("blob {} in pack {}", blob.id.short(), blob.pack),
                open_err(e),
            )
        })
    }

    fn open_blob_checked(
        &self,
        blob: &BlobRef,
        sealed: &[u8],
        base: Option<&[u8]>,
        check_id: bool,
    ) -> Result<Vec<u8>> {
        let what = || format!("blob {} in pack {}", blob.id.short(), blob.pack);
        let aad = crate::crypto::blob_aad(
            blob.kind as u8,
            &blob.id,
            blob.base.as_ref().filter(|_| blob.kind == BlobKind::Delta),
        );
        let plain = self
            .key
            .open(&aad, sealed)
            .map_err(|e| Error::damaged(what(), open_err(e)))?;
        let len = blob.raw_len as usize;
        let data = match base {
            Some(base) => crate::format::delta::decode(base, &plain, len),
            None => with_decompressor(|d| payload::decode_exact(d, &plain, len)),
        }
        .map_err(|e: FormatError| Error::damaged(what(), e.to_string()))?;
        if check_id && self.key.blob_id(&data) != blob.id {
            return Err(Error::damaged(what(), "content does not match its ID"));
        }
        Ok(data)
    }

    /// Reads a pack's header with ranged reads of its tail (`size` from the listing): what
    /// `prune`, `check` and `repair index` need without downloading the pack.
    pub fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<PackEntry>> {
        let what = || format!("pack file {pack}");
        if size < 4 + crate::crypto::SEAL_OVERHEAD as u64 {
            return Err(Error::damaged(what(), format!("too short ({size} bytes)")));
        }
        // One read usually covers the header (41 bytes per blob); a second when it does not.
        let tail_len = size.min(PACK_TAIL_READ);
        let tail = self.backend.read_range(
            FileType::Pack,
            &pack.to_hex(),
            size - tail_len,
            tail_len as u32,
        )?;
        let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as u64;
        if hlen + 4 > size {
            return Err(Error::damaged(
                what(),
                format!("its header length {hlen} exceeds its size {size} (truncated?)"),
            ));
        }
        let sealed = if hlen + 4 <= tail_len {
            tail[(tail_len - 4 - hlen) as usize..tail.len() - 4].to_vec()
        } else {
            self.backend
                .read_range(FileType::Pack, &pack.to_hex(), size - 4 - hlen, hlen as u32)?
        };
        self.open_pack_header(pack, &sealed, size - 4 - hlen)
    }

    /// Checks a whole pack's bytes against its name and returns its header entries.
    pub fn parse_pack(&self, pack: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
        let what = || format!("pack file {pack}");
        if Id::of_file_bytes(bytes) != *pack {
            return Err(Error::damaged(
                what(),
                "its bytes do not match its name (storage corruption)",
            ));
        }
        let (data, sealed) =
            crate::format::pack::split(bytes).map_err(|e| Error::damaged(what(), e.to_string()))?;
        self.open_pack_header(pack, sealed, data.len() as u64)
    }

    fn open_pack_header(&self, pack: &Id, sealed: &[u8], data_len: u64) -> Result<Vec<PackEntry>> {
        let what = || format!("pack file {pack}");
        let plain = self
            .key
            .open(crate::crypto::aad::PACK_HEADER, sealed)
            .map_err(|e| Error::damaged(what(), format!("header: {}", open_err(e))))?;
        crate::format::pack::decode_header(&plain, data_len)
            .map_err(|e| Error::damaged(what(), format!("header: {e}")))
    }

    /// Loads a tree blob.
    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let blob = index
            .get(id)
            .ok_or_else(|| Error::damaged(format!("tree {}", id.short()), "not in the index"))?;
        let json = self.load_blob(index, &blob)?;
        let tree: Tree = serde_json::from_slice(&json)
            .map_err(|e| Error::damaged(format!("tree {}", id.short()), e.to_string()))?;
        tree.validate()
            .map_err(|e| Error::damaged(format!("tree {}", id.short()), e))?;
        Ok(tree)
    }

    /// Lists the key files that parse; damaged ones are passed over and recorded.
    pub fn list_keys(&self) -> Result<Vec<(Id, KeyFile)>> {
        let mut out = Vec::new();
        for id in self.list_ids(FileType::Key)? {
            let bytes = match self.backend.read(FileType::Key, &id.to_hex()) {
                Ok(b) => b,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let parsed = serde_json::from_slice::<KeyFile>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|kf| match Id::of_file_bytes(&bytes) == id {
                    true => Ok(kf),
                    false => Err("its bytes do not match its name".to_string()),
                });
            match parsed {
                Ok(kf) => out.push((id, kf)),
                Err(why) => self.note_damage(Damage {
                    kind: "key",
                    id,
                    message: format!("key file {id} is damaged: {why}"),
                    remedy: format!("`sbk key remove {}` removes it", id.short()),
                }),
            }
        }
        Ok(out)
    }

    /// The intact key files of role `full` other than `except`: those that can open the
    /// repository.
    fn usable_keys(&self, except: &Id) -> Result<usize> {
        Ok(self
            .list_ids(FileType::Key)?
            .into_iter()
            .filter(|k| k != except)
            .filter(|k| {
                self.backend
                    .read(FileType::Key, &k.to_hex())
                    .ok()
                    .filter(|b| Id::of_file_bytes(b) == *k)
                    .and_then(|b| serde_json::from_slice::<KeyFile>(&b).ok())
                    .is_some_and(|kf| {
                        kf.role == ROLE_FULL && (1..=KEY_VERSION).contains(&kf.version)
                    })
            })
            .count())
    }

    /// Adds a key file for another password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams, actor: &Actor) -> Result<Id> {
        if password.is_empty() {
            return Err(Error::Invalid("an empty password is not allowed".into()));
        }
        let (id, bytes) = make_key_file(&self.key, password, kdf, actor)?;
        self.backend.write(FileType::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Removes a key file; the last key cannot be removed. Two removals at once (of two
    /// different keys) cannot leave none: after its delete each checks again that a usable
    /// key remains, and puts its own back (the same bytes, so the same name) if none does.
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        if !self.list_ids(FileType::Key)?.contains(id) {
            return Err(Error::NotFound(format!("no key {id}")));
        }
        if self.usable_keys(id)? == 0 {
            return Err(Error::Refused(
                "refusing to remove the last key: the repository would be unreadable".into(),
            ));
        }
        let bytes = self.backend.read(FileType::Key, &id.to_hex())?;
        self.backend.remove(FileType::Key, &id.to_hex())?;
        crate::cleanup::crash_point("key-remove:deleted");
        if self.usable_keys(id)? == 0 {
            self.backend.write(FileType::Key, &id.to_hex(), &bytes)?;
            return Err(Error::Refused(
                "another key was removed at the same time, which left this one the last: it \
                 was kept"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Runs `f` with this thread's reusable zstd decompressor.
pub(crate) fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> T,
) -> T {
    thread_local! {
        static D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    D.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
        f(d)
    })
}
