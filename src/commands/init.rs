//! `sbk init`.

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::open::Storage;
use crate::repository::KdfParams;
use crate::repository::{Actor, Repository};

/// What `init` created.
#[derive(Debug, Serialize)]
pub struct InitOutcome {
    pub id: Id,
    pub location: String,
    pub key_id: Id,
}

/// Creates a repository on an empty backend.
pub fn init(storage: Storage, password: &[u8], kdf: KdfParams) -> Result<InitOutcome> {
    let repo = Repository::init(storage, password, kdf, &Actor::current())?;
    Ok(InitOutcome {
        id: repo.config().id,
        location: repo.location(),
        key_id: repo.key_id(),
    })
}
