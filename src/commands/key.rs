//! `sbk key list|add|passwd|remove`.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::backend::FileType;
use crate::crypto::KdfParams;
use crate::error::Result;
use crate::id::Id;
use crate::repository::{Actor, Repository};

/// A key as listed.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: Id,
    pub short_id: String,
    /// Whether this key unlocked the repository now.
    pub current: bool,
    pub role: String,
    pub created: DateTime<FixedOffset>,
    pub host: String,
    pub username: String,
}

/// Lists keys.
pub fn list(repo: &Repository) -> Result<Vec<KeyView>> {
    Ok(repo
        .list_keys()?
        .into_iter()
        .map(|(id, k)| KeyView {
            id,
            short_id: id.short(),
            current: id == repo.key_id(),
            role: k.role,
            created: k.created,
            host: k.host,
            username: k.username,
        })
        .collect())
}

/// Adds a key for another password.
pub fn add(repo: &Repository, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
    repo.add_key(new_password, kdf, &Actor::current())
}

/// Replaces the current key with one for a new password (add first, then remove the old one).
pub fn passwd(repo: &Repository, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
    let id = repo.add_key(new_password, kdf, &Actor::current())?;
    repo.remove_key(&repo.key_id())?;
    Ok(id)
}

/// Removes a key by ID prefix; refuses the last one.
pub fn remove(repo: &Repository, prefix: &str) -> Result<Id> {
    let id = repo.resolve(FileType::Key, prefix)?;
    repo.remove_key(&id)?;
    Ok(id)
}
