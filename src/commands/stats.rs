//! `sbk stats`: what the repository holds and what deduplication, deltas and compression save,
//! in total and per source (the groups `forget` uses by default).

use std::collections::BTreeMap;

use serde::Serialize;

use super::forget::{group_key, GroupKey, DEFAULT_GROUP_BY};
use crate::error::Result;
use crate::id::Id;
use crate::index::Index;
use crate::repository::liveness::UsedSet;
use crate::repository::BlobKind;
use crate::repository::Repository;

/// Figures for a set of snapshots, in the order a DBA reads them: what a restore writes, what
/// deduplication leaves, and how that is stored (compressed whole chunks, deltas).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub snapshots: usize,
    /// Bytes a restore of every snapshot would write.
    pub logical_bytes: u64,
    /// Distinct blobs the snapshots need (with delta bases).
    pub blobs: usize,
    /// Plaintext of the distinct blobs the snapshots reference, a delta counted as the chunk it
    /// rebuilds: what deduplication leaves of `logical_bytes` (bases needed only by deltas are
    /// in `base_only_bytes`).
    pub unique_bytes: u64,
    /// Stored (compressed, encrypted) bytes of every blob needed, bases included.
    pub stored_bytes: u64,
    /// Blobs stored whole: their plaintext and stored bytes (`compression_ratio`).
    pub full_raw_bytes: u64,
    pub full_stored_bytes: u64,
    /// Delta blobs: how many, their stored bytes, and the plaintext they rebuild
    /// (`delta_ratio`).
    pub delta_blobs: usize,
    pub delta_stored_bytes: u64,
    pub delta_raw_bytes: u64,
    /// Blobs kept only as delta bases (their own snapshots forgotten): plaintext and stored.
    pub base_only_bytes: u64,
    pub base_only_stored_bytes: u64,
    /// `logical_bytes / unique_bytes`.
    pub dedup_ratio: f64,
    /// `full_raw_bytes / full_stored_bytes`: compression alone, deltas not counted.
    pub compression_ratio: f64,
    /// `delta_raw_bytes / delta_stored_bytes`: what storing changed chunks as deltas saves.
    pub delta_ratio: f64,
    /// `logical_bytes / stored_bytes`.
    pub total_ratio: f64,
}

/// One source's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SourceStats {
    #[serde(flatten)]
    pub key: GroupKey,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The whole repository.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Everything the repository stores: pack files (used or not), index and snapshot files.
    pub repository_bytes: u64,
    pub packs: usize,
    #[serde(flatten)]
    pub total: Figures,
    pub sources: Vec<SourceStats>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// What a set of snapshots needs, gathered one tree at a time.
struct Tally<'a> {
    /// Every blob needed, delta bases included.
    used: UsedSet<'a>,
    /// The blobs the snapshots reference themselves, bases not followed.
    direct: UsedSet<'a>,
    snapshots: usize,
    logical_bytes: u64,
}

impl<'a> Tally<'a> {
    fn new(index: &'a Index) -> Self {
        Tally {
            used: UsedSet::new(index),
            direct: UsedSet::new(index),
            snapshots: 0,
            logical_bytes: 0,
        }
    }

    fn add(&mut self, snapshot: &SnapshotFiles) {
        self.snapshots += 1;
        self.logical_bytes += snapshot.bytes;
        // A missing blob is `check`'s business; stats counts what is there.
        for b in &snapshot.blobs {
            let _ = self.used.mark(b);
            self.direct.mark_one(b);
        }
    }

    /// Sums up the blobs marked.
    fn figures(&self, index: &Index) -> Figures {
        let mut f = Figures {
            snapshots: self.snapshots,
            logical_bytes: self.logical_bytes,
            ..Default::default()
        };
        for (pos, l) in index.iter().enumerate() {
            if !self.used.contains_position(pos) {
                continue;
            }
            let (raw, stored) = (l.raw_len() as u64, l.stored_len as u64);
            f.blobs += 1;
            f.stored_bytes += stored;
            if self.direct.contains_position(pos) {
                f.unique_bytes += raw;
            } else {
                f.base_only_bytes += raw;
                f.base_only_stored_bytes += stored;
            }
            if l.kind() == BlobKind::Delta {
                f.delta_blobs += 1;
                f.delta_stored_bytes += stored;
                f.delta_raw_bytes += raw;
            } else {
                f.full_raw_bytes += raw;
                f.full_stored_bytes += stored;
            }
        }
        f.dedup_ratio = ratio(f.logical_bytes, f.unique_bytes);
        f.compression_ratio = ratio(f.full_raw_bytes, f.full_stored_bytes);
        f.delta_ratio = ratio(f.delta_raw_bytes, f.delta_stored_bytes);
        f.total_ratio = ratio(f.logical_bytes, f.stored_bytes);
        f
    }
}

/// The blobs (trees and content) and restored size of one snapshot, read once.
struct SnapshotFiles {
    blobs: Vec<Id>,
    bytes: u64,
}

impl SnapshotFiles {
    fn load(repo: &Repository, index: &Index, tree: &Id) -> Result<Self> {
        let mut out = SnapshotFiles {
            blobs: Vec::new(),
            bytes: 0,
        };
        crate::repository::trees::walk(repo, index, tree, None, &mut |v| {
            match v {
                crate::repository::trees::Visit::Tree(id) => out.blobs.push(*id),
                crate::repository::trees::Visit::File(_, f) => {
                    out.bytes += f.size;
                    out.blobs.extend_from_slice(&f.content);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Computes the statistics.
pub fn stats(repo: &Repository) -> Result<Stats> {
    let snapshots = repo.list_snapshots()?;
    let index = repo.load_index()?;
    let size = repo.storage_size()?;
    let (repository_bytes, packs) = (size.total_bytes, size.packs);
    let mut groups: BTreeMap<GroupKey, Vec<&(Id, crate::repository::Snapshot)>> = BTreeMap::new();
    for s in &snapshots {
        groups
            .entry(group_key(&s.1, &DEFAULT_GROUP_BY))
            .or_default()
            .push(s);
    }
    // Each tree is read once, for its source's figures and the total.
    let mut total = Tally::new(&index);
    let mut sources = Vec::new();
    for (key, list) in groups {
        let mut tally = Tally::new(&index);
        for (_, s) in list {
            let files = SnapshotFiles::load(repo, &index, &s.tree)?;
            tally.add(&files);
            total.add(&files);
        }
        sources.push(SourceStats {
            key,
            figures: tally.figures(&index),
        });
    }
    Ok(Stats {
        repository_bytes,
        packs,
        total: total.figures(&index),
        sources,
    })
}
