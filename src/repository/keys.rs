//! Key files: unlocking with a password (the hint of the last key that worked, damaged files
//! passed over), adding and removing keys.

use super::*;

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

/// Makes a key file for `key` under `password`.
pub(super) fn make_key_file(
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
    /// Tries the key files with the password: the one that opened this repository last time
    /// first (a hint kept in the user's cache folder), then the others, at most
    /// [`MAX_KEYS_TRIED`]. A damaged key file is skipped and the next tried; a version-1 file
    /// whose bytes no longer match its name but whose sealed key still opens is used, and
    /// reported. Errors: "wrong password" when an intact key was tried; the damage when only
    /// damaged ones were there; "no usable key" when there is no key file it can use at all.
    pub(super) fn unlock(
        backend: &dyn Backend,
        password: &[u8],
    ) -> Result<(MasterKey, Id, Vec<Damage>)> {
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
        self.journal.added(FileType::Key, id);
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
        self.backend
            .remove(FileType::Key, &id.to_hex())
            .map_err(|e| super::lock::refused_delete(e, "remove keys"))?;
        crate::cleanup::crash_point("key-remove:deleted");
        if self.usable_keys(id)? == 0 {
            self.backend.write(FileType::Key, &id.to_hex(), &bytes)?;
            return Err(Error::Refused(
                "another key was removed at the same time, which left this one the last: it \
                 was kept"
                    .into(),
            ));
        }
        self.journal.removed(FileType::Key, *id);
        Ok(())
    }
}
