//! `sbk init`.

use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::open::Backend;
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
pub fn init(backend: Arc<dyn Backend>, password: &[u8], kdf: KdfParams) -> Result<InitOutcome> {
    let location = backend.location();
    let repo = Repository::init(backend, password, kdf, &Actor::current())?;
    Ok(InitOutcome {
        id: repo.config().id,
        location,
        key_id: repo.key_id(),
    })
}
