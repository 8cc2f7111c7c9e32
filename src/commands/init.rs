//! `sbk init`.

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::open::Storage;
use crate::repository::{Actor, Repository};
use crate::repository::{KdfParams, LockPolicy};

/// What `init` created.
#[derive(Debug, Serialize)]
pub struct InitOutcome {
    pub id: Id,
    pub location: String,
    pub key_id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<LockPolicy>,
}

/// Creates a repository on an empty backend, its blobs compressed at zstd level `compression`
/// unless a snapshot says otherwise; with `lock`, on a bucket with Object Lock
/// (`docs/object-lock.md`). Returns the open repository too, for its audit record.
pub fn init(
    storage: Storage,
    password: &[u8],
    kdf: KdfParams,
    lock: Option<LockPolicy>,
    compression: i32,
) -> Result<(InitOutcome, Repository)> {
    let repo = Repository::init_locked(
        storage,
        password,
        kdf,
        &Actor::current(),
        lock,
        Some(compression),
    )?;
    let out = InitOutcome {
        id: repo.config().id,
        location: repo.location(),
        key_id: repo.key_id(),
        object_lock: lock,
    };
    Ok((out, repo))
}
