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
use crate::repository::Repository;

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

    /// Marks a blob and its chain of delta bases; `Err` names the first blob the index lacks.
    pub fn mark(&mut self, id: &Id) -> std::result::Result<(), Id> {
        let mut cur = *id;
        for _ in 0..=crate::repository::MAX_CHAIN_DEPTH {
            let Some(pos) = self.index.position(&cur) else {
                return Err(cur);
            };
            let (word, bit) = (pos / 64, 1u64 << (pos % 64));
            if self.bits[word] & bit != 0 {
                return Ok(());
            }
            self.bits[word] |= bit;
            match self.index.base_of(&cur) {
                Some(b) => cur = b,
                None => return Ok(()),
            }
        }
        Ok(())
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

/// The blobs one snapshot needs directly: its tree and its files' content (bases follow from
/// the index).
pub fn snapshot_blobs(repo: &Repository, index: &Index, tree_id: &Id) -> Result<Vec<Id>> {
    let tree = repo.load_tree(index, tree_id)?;
    let mut out = vec![*tree_id];
    for f in &tree.files {
        out.extend_from_slice(&f.content);
    }
    Ok(out)
}

/// Makes sure every blob in `needed` (and its chain of bases) is in a live pack before the
/// snapshot that needs them is written; `loaded` is the index the run started from.
///
/// Cheap in the common case: one listing of `index/`. Only when a file appeared that supersedes
/// others or marks packs (a prune ran meanwhile) is the index reloaded; packs of needed blobs
/// found marked are then listed as live again in a new index file. A needed blob that no index
/// lists any more (the run outlasted prune's grace period) fails the snapshot: nothing it needs
/// can be fetched again, and a snapshot must never name a missing blob.
pub fn secure_references(
    repo: &Repository,
    loaded: &Index,
    needed: impl IntoIterator<Item = Id>,
) -> Result<Option<Id>> {
    if repo.spool().is_some_and(|s| s.spooled_because().is_some()) {
        // Spooling: the remote cannot be read; the spool's own index is complete for this run.
        return Ok(None);
    }
    let before: HashSet<Id> = loaded.loaded_files().iter().copied().collect();
    let mut changed = false;
    for id in repo.list_ids(FileType::Index)? {
        if before.contains(&id) {
            continue;
        }
        match repo.load_index_file(&id) {
            Ok(f) if f.supersedes.is_empty() && f.marked.is_empty() => {}
            // A file that changes liveness, or one that vanished (superseded and removed).
            _ => {
                changed = true;
                break;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let fresh = repo.load_index_files()?;
    let index = fresh.to_index()?;
    let marked: HashMap<Id, &IndexPack> = fresh
        .files
        .iter()
        .flat_map(|(_, f)| f.marked.iter().map(|m| (m.pack.id, &m.pack)))
        .collect();
    let mut revive: HashMap<Id, IndexPack> = HashMap::new();
    let mut seen = HashSet::new();
    for id in needed {
        let mut cur = id;
        for _ in 0..=crate::repository::MAX_CHAIN_DEPTH {
            if !seen.insert(cur) {
                break;
            }
            if !index.contains_live(&cur) {
                let pack = index.get(&cur).and_then(|b| marked.get(&b.pack).copied());
                match pack {
                    Some(p) => {
                        revive.entry(p.id).or_insert_with(|| p.clone());
                    }
                    None => {
                        return Err(Error::Source(format!(
                            "blob {} that this snapshot reuses was deleted by a prune while the \
                             snapshot ran (it ran longer than prune's grace period); nothing was \
                             saved: run the snapshot again",
                            cur.short()
                        )))
                    }
                }
            }
            match index.base_of(&cur) {
                Some(b) => cur = b,
                None => break,
            }
        }
    }
    if revive.is_empty() {
        return Ok(None);
    }
    let file = IndexFile {
        packs: revive.into_values().collect(),
        ..Default::default()
    };
    Ok(Some(repo.save_index(&file)?))
}
