//! Sealed repository files (config, index, snapshot, key listing): save, load, list, resolve
//! an ID prefix.

use super::*;

/// Reads `config`, mapping a missing file to [`Error::NoRepository`] and checking the version.
pub(super) fn read_config(storage: &Storage) -> Result<Vec<u8>> {
    let backend = storage.backend.as_ref();
    let bytes = match backend.read(FileType::Config, "config") {
        Ok(b) => b,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(Error::NoRepository(backend.location()))
        }
        // `-r` naming a file.
        Err(_) if storage.profile.local && std::path::Path::new(&backend.location()).is_file() => {
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

impl Repository {
    /// Seals and writes a file named by the hash of its bytes.
    pub fn save_file(&self, t: FileType, label: &[u8], plaintext: &[u8]) -> Result<Id> {
        let sealed = self.key.seal(
            label,
            &payload::encode(plaintext, self.config.compression.level.min(MAX_FILE_LEVEL)),
        );
        let id = Id::of_file_bytes(&sealed);
        self.backend.write(t, &id.to_hex(), &sealed)?;
        self.journal.added(t, id);
        if let Some(c) = self.file_cache(t) {
            c.put(&id, &sealed);
        }
        Ok(id)
    }

    /// The file cache, for the types it holds (immutable files read by every run).
    pub(super) fn file_cache(&self, t: FileType) -> Option<&BlobCache> {
        matches!(t, FileType::Snapshot | FileType::Index | FileType::Audit)
            .then_some(self.file_cache.as_deref())
            .flatten()
    }

    /// Reads, checks and opens a sealed file (from the file cache when it holds it).
    pub fn load_file(&self, t: FileType, id: &Id, label: &[u8]) -> Result<Vec<u8>> {
        let cache = self.file_cache(t);
        let cached = cache.and_then(|c| {
            let b = c.get(id)?;
            let whole = Id::of_file_bytes(&b) == *id;
            if !whole {
                c.remove(id);
            }
            whole.then_some(b)
        });
        let bytes = match cached {
            Some(b) => b,
            None => {
                let b = self.backend.read(t, &id.to_hex())?;
                if Id::of_file_bytes(&b) != *id {
                    return Err(damaged(
                        t,
                        id,
                        "its bytes do not match its name (storage corruption)",
                    ));
                }
                if let Some(c) = cache {
                    c.put(id, &b);
                }
                b
            }
        };
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
}
