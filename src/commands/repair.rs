//! `sbk repair index` and `sbk repair packs`: put a damaged repository back into a state that
//! `check` passes, deleting nothing outright.
//!
//! - `repair index` rebuilds the index from the pack headers (read with ranged reads) and
//!   supersedes every index file, damaged ones included.
//! - `repair packs` salvages the intact blobs of damaged packs into new packs, writes an index
//!   without the damaged packs, then moves them to `quarantine/`, and names (or, asked to,
//!   forgets) the snapshots that can no longer be restored whole.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::index::BlobRef;
use crate::repository::liveness::UsedSet;
use crate::repository::FileType;
use crate::repository::PackCopier;
use crate::repository::Repository;
use crate::repository::{IndexPack, MarkedPack};

/// What `repair index` found and wrote. Packs with an unreadable header keep the entries an
/// earlier index file gave them, if any, so that `check` names them and `repair packs` salvages
/// them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexReport {
    pub packs: usize,
    pub packs_indexed: usize,
    pub blobs: usize,
    /// Packs whose header cannot be read: not indexed; `repair packs` moves them aside.
    pub unreadable: Vec<Problem>,
    pub index_files_written: usize,
    pub index_files_superseded: usize,
}

/// A pack and what is wrong with it.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub id: Id,
    pub message: String,
}

/// Rebuilds the index from the pack headers.
pub fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    use rayon::prelude::*;
    let old = repo.list_ids(FileType::Index)?;
    let packs: Vec<(Id, u64)> = repo.stored_packs()?.into_iter().collect();
    let activity = repo.activity();
    activity.start("read pack headers", 0, packs.len() as u64);
    let headers: Vec<(Id, Result<Vec<_>>)> = packs
        .par_iter()
        .map(|(id, size)| {
            let h = repo.read_pack_header(id, *size);
            activity.add_items(1);
            (*id, h)
        })
        .collect();
    let mut report = RepairIndexReport {
        packs: packs.len(),
        index_files_superseded: old.len(),
        ..Default::default()
    };
    // What the readable index files said, for packs whose header cannot be read: their blobs
    // may still be whole, and `repair packs` salvages them from these entries.
    let mut listed: HashMap<Id, IndexPack> = HashMap::new();
    for id in &old {
        if let Ok(f) = repo.load_index_file(id) {
            for p in f
                .packs
                .into_iter()
                .chain(f.marked.into_iter().map(|m| m.pack))
            {
                listed.entry(p.id).or_insert(p);
            }
        }
    }
    let mut live = Vec::new();
    for (id, h) in headers {
        match h {
            Ok(blobs) => {
                report.blobs += blobs.len();
                live.push(IndexPack { id, blobs });
            }
            Err(e) => {
                report.unreadable.push(Problem {
                    id,
                    message: e.to_string(),
                });
                if let Some(p) = listed.remove(&id) {
                    report.blobs += p.blobs.len();
                    live.push(p);
                }
            }
        }
    }
    report.packs_indexed = live.len();
    crate::cleanup::crash_point("repair-index:planned");
    report.index_files_written = repo.replace_index(&live, &[], &[], &old)?.len();
    Ok(report)
}

#[derive(Clone, Debug, Default)]
pub struct RepairPacksOptions {
    /// Packs to repair; when empty, `check --read-data` finds them.
    pub packs: Vec<Id>,
    /// Forget the snapshots that cannot be restored whole afterwards.
    pub forget_damaged: bool,
}

/// What `repair packs` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairPacksReport {
    pub damaged_packs: Vec<Id>,
    /// Intact blobs of damaged packs copied into new packs.
    pub blobs_salvaged: usize,
    /// Blobs of damaged packs that could not be read back whole.
    pub blobs_lost: usize,
    pub packs_written: usize,
    pub quarantined: Vec<Id>,
    /// Damaged packs that could not be read to be moved (left in place, no longer indexed).
    pub not_moved: Vec<Problem>,
    /// Snapshots that cannot be restored whole.
    pub damaged_snapshots: Vec<Id>,
    /// Of those, the ones removed (`--forget-damaged`).
    pub forgotten: Vec<Id>,
}

/// Salvages, re-indexes and quarantines damaged packs.
pub fn repair_packs(repo: &Repository, opts: &RepairPacksOptions) -> Result<RepairPacksReport> {
    let damaged: Vec<Id> = if opts.packs.is_empty() {
        let c = super::check::check(
            repo,
            &super::check::CheckOptions {
                read_data: super::check::ReadData::All,
            },
        )?;
        c.damaged_packs
    } else {
        opts.packs.clone()
    };
    let mut report = RepairPacksReport {
        damaged_packs: damaged.clone(),
        ..Default::default()
    };
    let files = repo.load_index_files()?;
    let index = files.to_index()?;
    let bad: HashSet<Id> = damaged.iter().copied().collect();

    // Salvage: every blob the index places in a damaged pack that still reads back whole
    // (authenticated, decoded through its bases, re-hashed).
    let mut listed: HashMap<Id, &IndexPack> = HashMap::new();
    for (_, f) in &files.files {
        for p in f.packs.iter().chain(f.marked.iter().map(|m| &m.pack)) {
            listed.entry(p.id).or_insert(p);
        }
    }
    let mut copier = PackCopier::new(repo);
    let mut bytes_of: HashMap<Id, Vec<u8>> = HashMap::new();
    // Bytes: the stored size of the damaged packs, each counted once it is salvaged.
    let stored = repo.stored_packs()?;
    let size = |pid: &Id| stored.get(pid).copied().unwrap_or(0);
    let activity = repo.activity();
    activity.start(
        "salvage",
        damaged.iter().map(size).sum(),
        damaged.len() as u64,
    );
    let done = |pid: &Id| {
        activity.add_bytes(size(pid));
        activity.add_items(1);
    };
    for pid in &damaged {
        let Some(p) = listed.get(pid) else {
            done(pid);
            continue;
        };
        let bytes = match repo.read_pack(pid) {
            Ok(b) => b,
            // Gone: its blobs are lost. Any other failure may pass: stop before changing anything.
            Err(e) if e.is_not_found() => {
                report.blobs_lost += p.blobs.len();
                report.not_moved.push(Problem {
                    id: *pid,
                    message: e.to_string(),
                });
                done(pid);
                continue;
            }
            Err(e) => return Err(e),
        };
        for e in &p.blobs {
            let blob = BlobRef {
                id: e.id,
                pack: *pid,
                kind: e.kind,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                base: e.base,
            };
            let end = e.offset as usize + e.stored_len as usize;
            let whole = bytes
                .get(e.offset as usize..end)
                .filter(|s| repo.load_blob_sealed(&index, &blob, s.to_vec()).is_ok());
            match whole {
                Some(sealed) => {
                    copier.add(e, sealed)?;
                    report.blobs_salvaged += 1;
                }
                None => report.blobs_lost += 1,
            }
        }
        bytes_of.insert(*pid, bytes);
        done(pid);
    }
    let salvaged = copier.finish()?;
    report.packs_written = salvaged.len();

    // The index without the damaged packs, superseding every file.
    let mut live = salvaged;
    let mut marked = Vec::new();
    for (_, f) in &files.files {
        live.extend(f.packs.iter().filter(|p| !bad.contains(&p.id)).cloned());
        marked.extend(
            f.marked
                .iter()
                .filter(|m| !bad.contains(&m.pack.id))
                .cloned()
                .collect::<Vec<MarkedPack>>(),
        );
    }
    live.extend(
        files
            .recovered
            .iter()
            .filter(|p| !bad.contains(&p.id))
            .cloned(),
    );
    let mut supersedes: Vec<Id> = files.files.iter().map(|(id, _)| *id).collect();
    supersedes.extend_from_slice(&files.superseded);
    supersedes.extend_from_slice(&files.damaged);
    let deleted: Vec<_> = files
        .files
        .iter()
        .flat_map(|(_, f)| f.deleted.iter().cloned())
        .collect();
    repo.replace_index(&live, &marked, &deleted, &supersedes)?;
    crate::cleanup::crash_point("repair-packs:indexed");

    // Move the damaged packs aside: a copy in quarantine/, then out of data/.
    for pid in &damaged {
        let bytes = match bytes_of.remove(pid) {
            Some(b) => b,
            None => match repo.read_pack(pid) {
                Ok(b) => b,
                Err(e) if !e.is_not_found() => return Err(e),
                Err(e) => {
                    if !report.not_moved.iter().any(|p| p.id == *pid) {
                        report.not_moved.push(Problem {
                            id: *pid,
                            message: e.to_string(),
                        });
                    }
                    continue;
                }
            },
        };
        repo.quarantine_pack(pid, &bytes)?;
        report.quarantined.push(*pid);
    }

    // Which snapshots are no longer whole.
    let index = repo.load_index()?;
    for sid in repo.list_ids(FileType::Snapshot)? {
        // Per snapshot: a blob marked for one snapshot proves nothing about its chain.
        let mut used = UsedSet::new(&index);
        // A snapshot file that cannot be read counts as lost too.
        let whole = repo.load_snapshot(&sid).is_ok_and(|s| {
            crate::repository::liveness::snapshot_blobs(repo, &index, &s.tree)
                .is_ok_and(|blobs| blobs.iter().all(|b| used.mark(b).is_ok()))
        });
        if !whole {
            report.damaged_snapshots.push(sid);
        }
    }
    if opts.forget_damaged {
        repo.announce_removals("repair packs --forget-damaged", &report.damaged_snapshots)?;
        for sid in &report.damaged_snapshots {
            repo.remove_snapshot(sid)?;
            report.forgotten.push(*sid);
        }
    }
    Ok(report)
}
