//! The verbs, as library calls: options in, an outcome out. Nothing here prints; the CLI renders
//! outcomes as text or JSON.

pub mod cat;
pub mod check;
pub mod forget;
pub mod init;
pub mod key;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod restore_postgres;
pub mod restore_supabase;
pub mod snapshot;
pub mod snapshot_postgres;
pub mod snapshot_supabase;
pub mod snapshots;
pub mod stats;
pub mod verify;

use serde::Serialize;

use crate::format::snapshot::Snapshot;
use crate::id::Id;

/// A snapshot with its ID, as shown by `snapshots --json` and `snapshot --json`.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotView {
    pub id: Id,
    pub short_id: String,
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Stored in the local spool, not yet uploaded (`sbk sync`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spooled: bool,
}

impl SnapshotView {
    pub fn new(id: Id, snapshot: Snapshot) -> Self {
        SnapshotView {
            id,
            short_id: id.short(),
            snapshot,
            spooled: false,
        }
    }
}
