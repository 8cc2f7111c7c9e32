//! Snapshots: sealed, payload-encoded JSON naming the tree blob of the files they hold.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Snapshot JSON version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Where a snapshot's data came from. `kind` plus kind-specific details; unknown fields are kept
/// so that retention can group by them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Source {
    /// `stdin`, `command`, later `postgres`.
    pub kind: String,
    /// Kind-specific details (command line with secrets removed, database, server version...).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// What a snapshot run read and added.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Summary {
    /// Bytes read from the source.
    pub bytes_in: u64,
    /// Stored (compressed, encrypted) bytes of the blobs this run added.
    pub bytes_added: u64,
    /// Plaintext bytes of the blobs this run added.
    pub bytes_added_raw: u64,
    /// Blobs the snapshot references: its files' chunks and its tree.
    pub blobs_total: u64,
    /// Blobs this run stored.
    pub blobs_new: u64,
    /// Packs this run wrote.
    pub packs_new: u64,
    /// New blobs stored as deltas against a base, and their stored bytes (part of
    /// `blobs_new`/`bytes_added`).
    #[serde(default)]
    pub blobs_delta: u64,
    #[serde(default)]
    pub bytes_delta: u64,
    /// Blob reads for delta bases served by the local blob cache, and those fetched from the
    /// repository (both 0 when no cache is in use: bases then always come from the repository).
    #[serde(default)]
    pub bases_from_cache: u64,
    #[serde(default)]
    pub bases_from_repository: u64,
    /// Start of the run.
    pub started: DateTime<FixedOffset>,
    /// End of the run.
    pub finished: DateTime<FixedOffset>,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

/// A snapshot as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: u32,
    /// Snapshot time, with the zone offset of where it was taken.
    pub time: DateTime<FixedOffset>,
    pub host: String,
    pub username: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source: Source,
    /// The tree blob listing the snapshot's files.
    pub tree: Id,
    /// The snapshot this one was compared with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_round_trip(secs in 0i64..4_000_000_000, offset_min in -720i32..=840, host in ".{0,30}",
                           tags in proptest::collection::vec("[a-z0-9]{1,8}", 0..4),
                           nums in any::<[u64; 6]>(), tree in any::<[u8; 32]>(), parent in any::<Option<[u8; 32]>>()) {
            let tz = FixedOffset::east_opt(offset_min * 60).unwrap();
            let time = tz.timestamp_opt(secs, 0).unwrap();
            let mut details = serde_json::Map::new();
            details.insert("database".into(), serde_json::json!("app"));
            let snap = Snapshot {
                version: SNAPSHOT_VERSION, time, host, username: "u".into(), tags,
                source: Source { kind: "command".into(), details },
                tree: Id(tree), parent: parent.map(Id),
                summary: Summary { bytes_in: nums[0], bytes_added: nums[1], bytes_added_raw: nums[2],
                    blobs_total: nums[3], blobs_new: nums[4], packs_new: nums[5], blobs_delta: nums[0] / 2, bytes_delta: nums[1] / 3, bases_from_cache: 1, bases_from_repository: 2,
                    started: time, finished: time, duration_secs: 1.5 },
            };
            let json = serde_json::to_vec(&snap).unwrap();
            let back: Snapshot = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(back.time.offset(), snap.time.offset());
            prop_assert_eq!(back, snap);
        }
    }
}
