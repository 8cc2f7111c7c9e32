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
pub mod restore_physical;
pub mod restore_postgres;
pub mod restore_supabase;
pub mod snapshot;
pub mod snapshot_physical;
pub mod snapshot_postgres;
pub mod snapshot_supabase;
pub mod snapshots;
pub mod stats;
pub mod sync;
pub mod verify;
pub mod verify_physical;
pub mod wal;

use serde::Serialize;

use crate::id::Id;
use crate::repository::Snapshot;

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
    /// The databases a snapshot just taken dumped (not stored: the manifest has them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumped: Vec<DumpedDatabase>,
}

/// One database of a PostgreSQL snapshot, for the summary that names what was backed up.
#[derive(Clone, Debug, Serialize)]
pub struct DumpedDatabase {
    pub name: String,
    /// The dump's bytes.
    pub dump_bytes: u64,
    /// `pg_database_size` when it was dumped (indexes and free space included).
    pub database_bytes: u64,
}

impl SnapshotView {
    pub fn new(id: Id, snapshot: Snapshot) -> Self {
        SnapshotView {
            id,
            short_id: id.short(),
            snapshot,
            spooled: false,
            dumped: Vec::new(),
        }
    }
}

/// A snapshot's source in a few words: `postgres db1,db2 @ host:port`, `supabase project`,
/// the command line, or the kind alone.
pub fn describe_source(s: &Snapshot) -> String {
    let d = &s.source.details;
    let text = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    match s.source.kind.as_str() {
        snapshot_postgres::SOURCE_KIND => {
            let dbs: Vec<&str> = d
                .get("databases")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let port = d.get("port").map(|p| p.to_string()).unwrap_or_default();
            format!("postgres {} @ {}:{port}", dbs.join(","), text("host"))
        }
        snapshot_supabase::SOURCE_KIND => format!("supabase {}", text("project")),
        "command" => match d.get("command").and_then(|v| v.as_array()) {
            Some(argv) => {
                let words: Vec<&str> = argv.iter().filter_map(|v| v.as_str()).collect();
                format!("command {}", words.join(" "))
            }
            None => "command".into(),
        },
        kind => kind.to_owned(),
    }
}
