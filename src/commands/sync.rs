//! `sbk sync`: upload what waits in the local spool (snapshots finished while the remote
//! repository was unreachable), after checking that no prune removed what they rely on.

use crate::error::Result;
use crate::repository::open::SyncReport;
use crate::repository::Repository;

/// Uploads the spool; `None` when the repository has no spool (a local one).
pub fn sync(repo: &Repository) -> Result<Option<SyncReport>> {
    let Some(spool) = repo.spool() else {
        return Ok(None);
    };
    crate::repository::liveness::secure_spooled(repo)?;
    Ok(Some(spool.sync(repo.activity())?))
}
