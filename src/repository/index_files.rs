//! Index files: loading those in force (the supersede rules, damaged files covered by pack
//! headers), saving and replacing them.

use super::*;

/// Most blobs listed in one index file, so every index file stays far below the readers' limit.
pub const MAX_BLOBS_PER_INDEX: usize = 500_000;

/// The index files in force: see [`Repository::load_index_files`].
#[derive(Debug, Default)]
pub struct IndexFiles {
    pub files: Vec<(Id, IndexFile)>,
    /// Index files still stored that a file in `files` supersedes.
    pub superseded: Vec<Id>,
    /// Effective index files that failed to load (passed over: see [`Repository::damage`]).
    pub damaged: Vec<Id>,
    /// When some are damaged: the packs no intact file names, from their own headers (which
    /// carry the same entries), so that reading and writing go on.
    pub recovered: Vec<IndexPack>,
}

impl IndexFiles {
    /// Builds the in-memory index.
    pub fn to_index(&self) -> Result<Index> {
        let mut index = Index::new();
        let packs = || {
            let files = self
                .files
                .iter()
                .flat_map(|(_, f)| f.packs.iter().chain(f.marked.iter().map(|m| &m.pack)));
            files.chain(&self.recovered)
        };
        let deltas = packs()
            .flat_map(|p| &p.blobs)
            .filter(|b| b.base.is_some())
            .count();
        index.reserve(packs().map(|p| p.blobs.len()).sum(), deltas);
        for (id, f) in &self.files {
            index
                .add_file(f)
                .map_err(|e| damaged(FileType::Index, id, e))?;
        }
        for p in &self.recovered {
            index
                .add_pack(p.id, &p.blobs)
                .map_err(|e| Error::damaged(format!("pack {}", p.id), e))?;
        }
        index.finalize();
        index.set_loaded_files(
            self.files
                .iter()
                .map(|(id, _)| *id)
                .chain(self.superseded.iter().copied())
                .chain(self.damaged.iter().copied())
                .collect(),
        );
        Ok(index)
    }
}

impl Repository {
    /// Loads one index file.
    pub fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        let plain = self.load_file(FileType::Index, id, aad::INDEX)?;
        IndexFile::decode(&plain).map_err(|e| damaged(FileType::Index, id, e))
    }

    /// Loads the effective index files: every index file except those that another one
    /// supersedes (a file `prune` replaced; it may still exist for a moment, or be damaged).
    pub fn load_index_files(&self) -> Result<IndexFiles> {
        // A file listed but gone when read was superseded and removed by a prune meanwhile:
        // list again, so that the superseding file is seen.
        let mut attempt = 0;
        loop {
            match self.try_load_index_files() {
                Err(Error::Backend(e)) if e.kind == ErrorKind::NotFound && attempt < 4 => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_load_index_files(&self) -> Result<IndexFiles> {
        use rayon::prelude::*;
        let ids = self.list_ids(FileType::Index)?;
        let loaded: Vec<(Id, Result<IndexFile>)> = ids
            .par_iter()
            .map(|id| (*id, self.load_index_file(id)))
            .collect();
        let superseded: std::collections::HashSet<Id> = loaded
            .iter()
            .filter_map(|(_, f)| f.as_ref().ok())
            .flat_map(|f| f.supersedes.iter().copied())
            .collect();
        let mut files = Vec::with_capacity(loaded.len());
        let mut stored = Vec::new();
        let mut damaged_files = Vec::new();
        for (id, f) in loaded {
            if superseded.contains(&id) {
                stored.push(id);
                continue;
            }
            match f {
                Ok(f) => files.push((id, f)),
                // Passed over: backups and restores go on with the packs' own headers.
                Err(e @ Error::Damaged { .. }) => {
                    self.note_damage(Damage {
                        kind: "index",
                        id,
                        message: e.to_string(),
                        remedy: "`sbk repair index` rebuilds the index from the packs".into(),
                    });
                    damaged_files.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        stored.sort();
        let recovered = if damaged_files.is_empty() {
            Vec::new()
        } else {
            self.recover_index(&mut files)?
        };
        Ok(IndexFiles {
            files,
            superseded: stored,
            damaged: damaged_files,
            recovered,
        })
    }

    /// Covers damaged index files: the packs no intact file names, read from their headers. A
    /// damaged file may have superseded others, which then count again: their entries for
    /// packs no longer stored are dropped, so that no read is sent to a deleted pack.
    pub(crate) fn recover_index(&self, files: &mut [(Id, IndexFile)]) -> Result<Vec<IndexPack>> {
        use rayon::prelude::*;
        let stored = self.stored_packs()?;
        for (_, f) in files.iter_mut() {
            f.packs.retain(|p| stored.contains_key(&p.id));
            f.marked.retain(|m| stored.contains_key(&m.pack.id));
        }
        let named: std::collections::HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| {
                f.packs
                    .iter()
                    .map(|p| p.id)
                    .chain(f.marked.iter().map(|m| m.pack.id))
            })
            .collect();
        let unnamed: Vec<(Id, u64)> = stored
            .into_iter()
            .filter(|(id, _)| !named.contains(id))
            .collect();
        // A pack whose header cannot be read is left out: `check` names it.
        let mut packs: Vec<IndexPack> = unnamed
            .par_iter()
            .filter_map(|(id, size)| {
                self.read_pack_header(id, *size)
                    .ok()
                    .map(|blobs| IndexPack { id: *id, blobs })
            })
            .collect();
        packs.sort_by_key(|p| p.id);
        Ok(packs)
    }

    /// Loads every effective index file into the in-memory index.
    ///
    /// Each file is added as soon as it is decoded, so that only the files being decoded (one
    /// per thread) are held beside the index, not all of them (at 1M blobs the decoded files
    /// took more than the index itself). A file found superseded once all are read is left
    /// out again. When an effective file is damaged, the slower path of
    /// [`Repository::load_index_files`] covers it from the packs' headers.
    pub fn load_index(&self) -> Result<Index> {
        let mut attempt = 0;
        loop {
            match self.try_load_index() {
                Err(Error::Backend(e)) if e.kind == ErrorKind::NotFound && attempt < 4 => {
                    attempt += 1;
                }
                Ok(Some(index)) => return Ok(index),
                Ok(None) => return self.load_index_files()?.to_index(),
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Repository::load_index`]'s one attempt; `None` when an effective file is damaged.
    fn try_load_index(&self) -> Result<Option<Index>> {
        use rayon::prelude::*;
        /// One file added: what it supersedes, and its copies' sequence numbers.
        struct Added {
            id: Id,
            supersedes: Vec<Id>,
            seqs: std::ops::Range<u32>,
        }
        #[derive(Default)]
        struct State {
            index: Index,
            added: Vec<Added>,
            damaged: Vec<Id>,
        }
        let listed = self.backend.list(FileType::Index)?;
        let ids: Vec<Id> = listed
            .iter()
            .filter_map(|f| Id::from_hex(&f.name))
            .collect();
        // Room for as many blobs as the files can hold, reserved once: a vector that grows by
        // copying leaves its old buffers resident in the heap (measured: 150 MiB instead of
        // ~100 at 1M blobs). Each listed blob takes at least its 32-byte ID of the stored file
        // (random, so compression cannot shrink it), a delta 64; pages never written are never
        // resident, so the overestimate costs address space only.
        let stored: u64 = listed.iter().map(|f| f.size).sum();
        let mut index = Index::new();
        index.reserve((stored / 32) as usize, (stored / 64) as usize);
        let state = std::sync::Mutex::new(State {
            index,
            ..Default::default()
        });
        ids.par_iter().try_for_each(|id| -> Result<()> {
            let file = match self.load_index_file(id) {
                Ok(f) => f,
                Err(Error::Damaged { .. }) => {
                    state.lock().expect("index state").damaged.push(*id);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let mut s = state.lock().expect("index state");
            let start = s.index.next_sequence();
            s.index
                .add_file(&file)
                .map_err(|e| damaged(FileType::Index, id, e))?;
            let end = s.index.next_sequence();
            s.added.push(Added {
                id: *id,
                supersedes: file.supersedes,
                seqs: start..end,
            });
            Ok(())
        })?;
        let State {
            mut index,
            added,
            damaged,
        } = state.into_inner().expect("index state");
        let superseded: std::collections::HashSet<Id> = added
            .iter()
            .flat_map(|a| a.supersedes.iter().copied())
            .collect();
        if damaged.iter().any(|id| !superseded.contains(id)) {
            return Ok(None);
        }
        for a in &added {
            if superseded.contains(&a.id) {
                index.exclude(a.seqs.clone());
            }
        }
        index.finalize();
        index.set_loaded_files(ids);
        Ok(Some(index))
    }

    /// Saves an index file (after the packs it lists are durable).
    pub fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_file(FileType::Index, aad::INDEX, &file.encode())
    }

    /// Writes a new index in files of at most [`MAX_BLOBS_PER_INDEX`] blobs,
    /// the **last** superseding `supersedes`, so that the old files stop counting only once every
    /// new one is durable (`prune`, `repair`). Each file is built, written and dropped before
    /// the next, so only one file's copy of the lists is held (at 1M blobs the callers' lists,
    /// their clones and every encoded file at once were most of prune's memory).
    pub fn replace_index(
        &self,
        live: &[IndexPack],
        marked: &[MarkedPack],
        deleted: &[DeletedPack],
        supersedes: &[Id],
    ) -> Result<Vec<Id>> {
        let parts = split_index(live, marked, MAX_BLOBS_PER_INDEX);
        let mut ids = Vec::with_capacity(parts.len());
        for (k, (packs, marks)) in parts.iter().enumerate() {
            let last = k + 1 == parts.len();
            let file = IndexFile {
                packs: packs.to_vec(),
                marked: marks.to_vec(),
                deleted: if last { deleted.to_vec() } else { Vec::new() },
                supersedes: if last {
                    supersedes.to_vec()
                } else {
                    Vec::new()
                },
            };
            ids.push(self.save_index(&file)?);
        }
        Ok(ids)
    }
}

/// The packs of each new index file: `live` then `marked`, in order, a file closed before the
/// pack that would take it past `limit` blobs (a pack larger than the limit gets a file of its
/// own). Always at least one file (it carries the tombstones and what it supersedes).
fn split_index<'a>(
    live: &'a [IndexPack],
    marked: &'a [MarkedPack],
    limit: usize,
) -> Vec<(&'a [IndexPack], &'a [MarkedPack])> {
    let sizes = live
        .iter()
        .map(|p| p.blobs.len())
        .chain(marked.iter().map(|m| m.pack.blobs.len()));
    let mut ends = Vec::new();
    let mut blobs = 0;
    for (i, n) in sizes.enumerate() {
        if blobs + n > limit && blobs > 0 {
            ends.push(i);
            blobs = 0;
        }
        blobs += n;
    }
    ends.push(live.len() + marked.len());
    let n = live.len();
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let part = (
                &live[start.min(n)..end.min(n)],
                &marked[start.max(n) - n..end.max(n) - n],
            );
            start = end;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_index_files_split_at_the_limit_live_then_marked() {
        let pack = |i: u8, n: usize| IndexPack {
            id: Id([i; 32]),
            blobs: (0..n)
                .map(|b| PackEntry {
                    kind: BlobKind::Data,
                    id: Id([b as u8; 32]),
                    offset: 0,
                    stored_len: 1,
                    raw_len: 1,
                    base: None,
                })
                .collect(),
        };
        let live = vec![pack(1, 3), pack(2, 3), pack(3, 1)];
        let marked = vec![MarkedPack {
            marked_at: 7,
            pack: pack(4, 2),
        }];
        let ids = |parts: &[(&[IndexPack], &[MarkedPack])]| -> Vec<Vec<u8>> {
            parts
                .iter()
                .map(|(l, m)| {
                    l.iter()
                        .map(|p| p.id.0[0])
                        .chain(m.iter().map(|m| m.pack.id.0[0]))
                        .collect()
                })
                .collect()
        };
        assert_eq!(
            ids(&split_index(&live, &marked, 5)),
            vec![vec![1], vec![2, 3], vec![4]]
        );
        assert_eq!(
            ids(&split_index(&live, &marked, 100)),
            vec![vec![1, 2, 3, 4]]
        );
        assert_eq!(
            ids(&split_index(&live, &marked, 1)),
            vec![vec![1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(ids(&split_index(&[], &[], 5)), vec![Vec::<u8>::new()]);
        assert_eq!(
            ids(&split_index(&live, &marked, 8)),
            vec![vec![1, 2, 3], vec![4]]
        );
        // Files that span live and marked packs.
        assert_eq!(ids(&split_index(&live, &marked, 9)), vec![vec![1, 2, 3, 4]]);
        assert_eq!(ids(&split_index(&live[2..], &marked, 3)), vec![vec![3, 4]]);
    }
}
