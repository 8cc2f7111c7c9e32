//! `sbk snapshots`.

use crate::error::Result;
use crate::repository::Repository;

use super::SnapshotView;

/// All snapshots, oldest first.
pub fn list(repo: &Repository) -> Result<Vec<SnapshotView>> {
    Ok(repo
        .list_snapshots()?
        .into_iter()
        .map(|(id, s)| SnapshotView {
            spooled: repo.is_spooled(&id),
            ..SnapshotView::new(id, s)
        })
        .collect())
}
