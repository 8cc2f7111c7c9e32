//! Which blobs the snapshots need, and the snapshot's side of prune's two-phase delete.
//!
//! `prune` takes no lock (see `docs/format.md`, section 12): it only *marks* packs it finds
//! unused, and deletes a marked pack in a later run, once the mark is older than a grace period
//! and no index file has listed the pack as live again. A snapshot that started before a mark may
//! still rely on blobs of the marked pack; [`secure_references`] runs just before the snapshot
//! file is written, finds such blobs and lists their packs as live again ("resurrects" them) in
//! an index file of its own, so the snapshot never names a blob that prune will delete.

use std::collections::{HashMap, HashSet};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::id::Id;
use crate::index::Index;
use crate::repository::{IndexFiles, Repository};

/// The set of blobs in use, one bit per entry of an [`Index`]: 1 bit per blob instead of a
/// hash set's ~50 bytes, so a repository of millions of blobs is marked in a few hundred KiB.
pub struct UsedSet<'a> {
    index: &'a Index,
    bits: Vec<u64>,
}

impl<'a> UsedSet<'a> {
    pub fn new(index: &'a Index) -> Self {
        UsedSet {
            index,
            bits: vec![0; index.len().div_ceil(64)],
        }
    }

    /// Marks a blob and its chain of delta bases; `Err` names the first blob the index lacks
    /// (or the chain is longer than readers follow). A chain is marked only once it is known
    /// whole, so a later call never takes a broken chain's marks for a whole one.
    pub fn mark(&mut self, id: &Id) -> std::result::Result<(), Id> {
        let mut chain = Vec::new();
        let mut cur = *id;
        loop {
            let Some(pos) = self.index.position(&cur) else {
                return Err(cur);
            };
            if self.bits[pos / 64] & (1u64 << (pos % 64)) != 0 {
                break;
            }
            if chain.len() > crate::repository::MAX_CHAIN_DEPTH {
                return Err(cur);
            }
            chain.push(pos);
            match self.index.base_at(pos) {
                Some(b) => cur = b,
                None => break,
            }
        }
        for pos in chain {
            self.bits[pos / 64] |= 1u64 << (pos % 64);
        }
        Ok(())
    }

    /// Marks one blob, not its bases (`stats` tells referenced blobs from bases); `false` when
    /// the index lacks it.
    pub fn mark_one(&mut self, id: &Id) -> bool {
        let Some(pos) = self.index.position(id) else {
            return false;
        };
        self.bits[pos / 64] |= 1u64 << (pos % 64);
        true
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.index
            .position(id)
            .is_some_and(|pos| self.bits[pos / 64] & (1u64 << (pos % 64)) != 0)
    }

    /// Whether the blob at this index position is marked.
    pub fn contains_position(&self, pos: usize) -> bool {
        self.bits[pos / 64] & (1u64 << (pos % 64)) != 0
    }

    /// Number of blobs marked.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The blobs one snapshot needs directly: its trees (folders included) and its files' content
/// (bases follow from the index).
pub fn snapshot_blobs(repo: &Repository, index: &Index, tree_id: &Id) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    crate::repository::trees::walk(repo, index, tree_id, None, &mut |v| {
        match v {
            crate::repository::trees::Visit::Tree(id) => out.push(*id),
            crate::repository::trees::Visit::File(_, f) => out.extend_from_slice(&f.content),
        }
        Ok(())
    })?;
    Ok(out)
}

/// A tree after [`mark_trees`].
#[derive(Debug)]
pub enum TreeMark {
    /// Every blob it needs, with its chain of bases, is indexed (and now marked).
    Whole,
    /// The first blob it needs (or a base in its chain) that the index lacks, or whose chain is
    /// longer than readers follow.
    Lacks(Id),
    /// It cannot be read (one of its blobs is missing or damaged).
    Unreadable(Error),
}

/// Marks every blob the `trees` need (distinct, each walked once) into one set, reading the
/// trees in parallel (in the current rayon pool: see [`Repository::io_pool`]); returns the set
/// and each tree's verdict, in the order given. Each tree's blob list is dropped once marked,
/// so memory stays flat in the number of trees (keeping them took 39 KB a snapshot of 2,000
/// chunks, 897 MiB at 10,000 snapshots); marking stops at a blob already marked, so a chain of
/// bases shared by many snapshots is followed once.
pub fn mark_trees<'a>(
    repo: &Repository,
    index: &'a Index,
    trees: &[Id],
) -> (UsedSet<'a>, Vec<(Id, TreeMark)>) {
    use rayon::prelude::*;
    let used = std::sync::Mutex::new(UsedSet::new(index));
    let marks = trees
        .par_iter()
        .map(|tree| {
            let mark = match snapshot_blobs(repo, index, tree) {
                Ok(blobs) => {
                    let mut used = used.lock().expect("used set");
                    let mut lacks = None;
                    for b in &blobs {
                        if let Err(cur) = used.mark(b) {
                            lacks.get_or_insert(cur);
                        }
                    }
                    lacks.map_or(TreeMark::Whole, TreeMark::Lacks)
                }
                Err(e) => TreeMark::Unreadable(e),
            };
            (*tree, mark)
        })
        .collect();
    (used.into_inner().expect("used set"), marks)
}

/// Makes sure every blob in `needed` (and its chain of bases) is in a live pack before the
/// snapshot that needs them is written; `loaded` is the index the run started from, and the
/// run's own index files are already written.
///
/// Cheap in the common case: one listing of `index/`. Only when a file appeared that supersedes
/// others (a prune ran meanwhile) is the index reloaded. Packs of needed blobs found only marked
/// are then listed as live again in a new index file, and the check runs again with that file in
/// place. A needed blob that no index lists, or whose pack a prune's tombstone names (deleted, or
/// about to be), fails the snapshot: nothing it needs can be fetched again, and a snapshot must
/// never name a missing blob. See `docs/format.md` §12.1 for why this order is safe.
pub fn secure_references(
    repo: &Repository,
    loaded: &Index,
    own: &[Id],
    needed: Vec<Id>,
) -> Result<()> {
    if repo.spool().is_some_and(|s| s.spooled_because().is_some()) {
        // Spooling: the remote cannot be read; the spool's own index is complete for this run.
        return Ok(());
    }
    if !pruned_since(repo, loaded, own)? {
        return Ok(());
    }
    secure_all(repo, None, &[(None, needed)]).map_err(|(_, e)| e)
}

/// Why a needed blob cannot be had.
fn gone(id: &Id, why: &str) -> Error {
    Error::Source(format!(
        "blob {} that this snapshot relies on {why} by a prune while the snapshot ran \
         (it ran longer than prune's grace period); nothing was saved: run the snapshot \
         again",
        id.short()
    ))
}

/// The check of [`secure_references`] for several snapshots' needs at once, against index files
/// loaded once per round (`first`, when the caller already has them, is the first round's): a
/// failure names the snapshot (the first of the pair) whose needs it is.
fn secure_all(
    repo: &Repository,
    mut first: Option<IndexFiles>,
    needs: &[(Option<Id>, Vec<Id>)],
) -> std::result::Result<(), (Option<Id>, Error)> {
    for _ in 0..4 {
        let fresh = match first.take() {
            Some(f) => f,
            None => repo.load_index_files().map_err(|e| (None, e))?,
        };
        let index = fresh.to_index().map_err(|e| (None, e))?;
        let tombstones: HashSet<Id> = fresh
            .files
            .iter()
            .flat_map(|(_, f)| f.deleted.iter().map(|d| d.id))
            .collect();
        let marked: HashMap<Id, &IndexPack> = fresh
            .files
            .iter()
            .flat_map(|(_, f)| f.marked.iter().map(|m| (m.pack.id, &m.pack)))
            .collect();
        let mut revive: HashMap<Id, IndexPack> = HashMap::new();
        let mut seen = HashSet::new();
        for (owner, needed) in needs {
            let fail = |e: Error| (*owner, e);
            for id in needed {
                let mut cur = *id;
                for _ in 0..=crate::repository::MAX_CHAIN_DEPTH {
                    if !seen.insert(cur) {
                        break;
                    }
                    let Some(b) = index.get(&cur) else {
                        return Err(fail(gone(&cur, "was deleted")));
                    };
                    if tombstones.contains(&b.pack) {
                        return Err(fail(gone(&cur, "is being deleted")));
                    }
                    if !index.contains_live(&cur) {
                        let p = marked
                            .get(&b.pack)
                            .ok_or_else(|| fail(gone(&cur, "was deleted")))?;
                        revive.entry(p.id).or_insert_with(|| (*p).clone());
                    }
                    match b.base {
                        Some(base) => cur = base,
                        None => break,
                    }
                }
            }
        }
        if revive.is_empty() {
            return Ok(());
        }
        repo.save_index(&IndexFile {
            packs: revive.into_values().collect(),
            ..Default::default()
        })
        .map_err(|e| (None, e))?;
        // Check again with the revival in place: a prune that deletes those packs either sees
        // it, or wrote its tombstones before, which the next round sees.
    }
    Err((
        None,
        Error::Source(
            "prunes kept marking the packs this snapshot relies on; nothing was saved: run the \
             snapshot again"
                .into(),
        ),
    ))
}

/// Before `sync` uploads snapshots that waited in the local spool: the same walk as at the end
/// of a snapshot, since a prune may have run on the repository while they waited (so every
/// prune file counts, and the full check always runs). The index files are loaded once for all
/// of them. A spooled snapshot that relies on a deleted pack is an error naming it; nothing is
/// uploaded.
pub fn secure_spooled(repo: &Repository) -> Result<()> {
    let Some(spool) = repo.spool() else {
        return Ok(());
    };
    let waiting = spool.spooled(FileType::Snapshot)?;
    if waiting.is_empty() {
        return Ok(());
    }
    let files = repo.load_index_files()?;
    let index = files.to_index()?;
    let mut needs = Vec::new();
    for f in waiting {
        let Some(id) = Id::from_hex(&f.name) else {
            continue;
        };
        let snap = repo.load_snapshot(&id)?;
        let needed = snapshot_blobs(repo, &index, &snap.tree)
            .map_err(|e| unspoolable(spool.dir(), &id, e))?;
        needs.push((Some(id), needed));
    }
    secure_all(repo, Some(files), &needs).map_err(|(owner, e)| match owner {
        Some(id) => unspoolable(spool.dir(), &id, e),
        None => e,
    })
}

/// A spooled snapshot that cannot be uploaded whole, and how to let the spool go on.
fn unspoolable(spool_dir: &std::path::Path, id: &Id, e: Error) -> Error {
    Error::Source(format!(
        "snapshot {} waiting in the spool cannot be uploaded whole ({e}); remove {} to drop it \
         and let the spool sync",
        id.short(),
        spool_dir.join("snapshots").join(id.to_hex()).display()
    ))
}

/// Whether an index file that supersedes others (a prune's) appeared since `loaded` was read;
/// `own`, the files this run wrote, are known and not read back.
fn pruned_since(repo: &Repository, loaded: &Index, own: &[Id]) -> Result<bool> {
    let mut before: HashSet<Id> = loaded.loaded_files().iter().copied().collect();
    before.extend(own.iter().copied());
    for id in repo.list_ids(FileType::Index)? {
        if before.contains(&id) {
            continue;
        }
        match repo.load_index_file(&id) {
            Ok(f) if f.supersedes.is_empty() && !f.has_prune_lists() => {}
            // A file that changes liveness, or one that vanished (superseded and removed).
            _ => return Ok(true),
        }
    }
    Ok(false)
}
