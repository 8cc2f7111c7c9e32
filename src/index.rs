//! The in-memory index: blob ID -> (pack, offset, lengths, kind).
//!
//! Loaded once per command from every index file and kept as one sorted vector of fixed
//! 48-byte [`Location`] entries, searched by binary search: no per-entry allocation and no hash
//! table slack. Pack IDs are stored once in a side table and referenced by a `u32`. Delta bases
//! (rare) live in a separate map. See `docs/format.md`, "In-memory index", for the figures.
//!
//! Packs that `prune` marked for deletion are loaded too, flagged: their blobs can still be read
//! (a snapshot that committed while prune ran may need them), but writers never deduplicate
//! against them or use them as delta bases ([`Index::contains_live`], [`Index::get_live`]), so a
//! new snapshot does not come to depend on a pack that is about to be deleted.

use std::collections::HashMap;

use crate::format::index::IndexFile;
use crate::format::pack::PackEntry;
use crate::format::BlobKind;
use crate::id::Id;

/// Where a blob is stored. 48 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub id: Id,
    /// Index into [`Index::pack_ids`].
    pub pack: u32,
    pub offset: u32,
    pub stored_len: u32,
    /// Plaintext length in the low 29 bits, kind in the top 3.
    raw_len_kind: u32,
}

const RAW_LEN_BITS: u32 = 29;
const RAW_LEN_MASK: u32 = (1 << RAW_LEN_BITS) - 1;

impl Location {
    pub fn raw_len(&self) -> u32 {
        self.raw_len_kind & RAW_LEN_MASK
    }

    pub fn kind(&self) -> BlobKind {
        BlobKind::from_u8((self.raw_len_kind >> RAW_LEN_BITS) as u8)
            .expect("kind validated on insert")
    }
}

/// A blob resolved to its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub id: Id,
    pub pack: Id,
    pub kind: BlobKind,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    /// For a delta blob, the blob it is a delta against.
    pub base: Option<Id>,
}

/// The repository's blobs, by ID.
#[derive(Default, Debug)]
pub struct Index {
    entries: Vec<Location>,
    pack_ids: Vec<Id>,
    pack_numbers: HashMap<Id, u32>,
    /// Per pack number: marked for deletion.
    marked: Vec<bool>,
    /// Each delta blob's base, by the delta's position in `entries`, sorted: 36 bytes a delta
    /// (a map of IDs cost ~80), and with deltas on most blobs of a repository are deltas.
    bases: Vec<(u32, Id)>,
    /// While loading: each delta copy's (blob, pack number, base). Two copies of one blob may
    /// be deltas against different bases (two runs at once with different parents).
    copy_bases: Vec<(Id, u32, Id)>,
    sorted: bool,
    /// The index files this index was built from (and those they superseded).
    loaded_files: Vec<Id>,
}

impl Index {
    pub fn new() -> Self {
        Index {
            sorted: true,
            ..Default::default()
        }
    }

    fn pack_number(&mut self, pack: Id, marked: bool) -> u32 {
        let next = self.pack_ids.len() as u32;
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.pack_ids.push(pack);
            self.marked.push(marked);
            next
        });
        // Listed live anywhere means live.
        self.marked[n as usize] &= marked;
        n
    }

    /// Adds the blobs of one pack. Blobs larger than 512 MiB cannot exist (chunks are at most
    /// 16 MiB, trees are bounded), so an entry claiming one is rejected.
    pub fn add_pack(&mut self, pack: Id, blobs: &[PackEntry]) -> Result<(), String> {
        self.add_pack_as(pack, blobs, false)
    }

    /// Adds the blobs of a pack marked for deletion (readable, never reused by writers).
    pub fn add_marked_pack(&mut self, pack: Id, blobs: &[PackEntry]) -> Result<(), String> {
        self.add_pack_as(pack, blobs, true)
    }

    fn add_pack_as(&mut self, pack: Id, blobs: &[PackEntry], marked: bool) -> Result<(), String> {
        let n = self.pack_number(pack, marked);
        for b in blobs {
            if b.raw_len > RAW_LEN_MASK {
                return Err(format!("blob {} claims {} bytes", b.id.short(), b.raw_len));
            }
            if let Some(base) = b.base {
                self.copy_bases.push((b.id, n, base));
            }
            self.entries.push(Location {
                id: b.id,
                pack: n,
                offset: b.offset,
                stored_len: b.stored_len,
                raw_len_kind: b.raw_len | ((b.kind as u32) << RAW_LEN_BITS),
            });
        }
        self.sorted = false;
        Ok(())
    }

    /// Adds every pack of an index file, live and marked.
    pub fn add_file(&mut self, file: &IndexFile) -> Result<(), String> {
        for p in &file.packs {
            self.add_pack(p.id, &p.blobs)?;
        }
        for m in &file.marked {
            self.add_marked_pack(m.pack.id, &m.pack.blobs)?;
        }
        Ok(())
    }

    fn is_marked(&self, l: &Location) -> bool {
        self.marked[l.pack as usize]
    }

    /// Sorts for lookup; a blob stored twice (two concurrent snapshots, or a repacked blob
    /// beside its marked old copy) keeps one location, a live one when there is one.
    ///
    /// The copy kept is chosen the same way by every reader (live first, then the lowest pack
    /// ID), so that two prunes agree on it; a delta copy keeps its own base.
    pub fn finalize(&mut self) {
        let marked = std::mem::take(&mut self.marked);
        let pack_ids = std::mem::take(&mut self.pack_ids);
        self.entries
            .sort_unstable_by_key(|e| (e.id, marked[e.pack as usize], pack_ids[e.pack as usize]));
        self.marked = marked;
        self.pack_ids = pack_ids;
        self.entries.dedup_by(|a, b| a.id == b.id);
        self.entries.shrink_to_fit();
        let mut copies = std::mem::take(&mut self.copy_bases);
        if !copies.is_empty() {
            // Both sorted by blob ID: one walk pairs each kept entry with its own copy's base.
            copies.sort_unstable_by_key(|c| (c.0, c.1));
            copies.dedup_by_key(|c| (c.0, c.1));
            let mut bases = Vec::new();
            let mut c = 0;
            for (pos, e) in self.entries.iter().enumerate() {
                while c < copies.len() && copies[c].0 < e.id {
                    c += 1;
                }
                let mut k = c;
                while k < copies.len() && copies[k].0 == e.id {
                    if copies[k].1 == e.pack {
                        bases.push((pos as u32, copies[k].2));
                        break;
                    }
                    k += 1;
                }
            }
            drop(copies);
            bases.shrink_to_fit();
            self.bases = bases;
        }
        self.sorted = true;
    }

    /// Records which index files this index was loaded from.
    pub fn set_loaded_files(&mut self, ids: Vec<Id>) {
        self.loaded_files = ids;
    }

    /// The index files this index was loaded from.
    pub fn loaded_files(&self) -> &[Id] {
        &self.loaded_files
    }

    /// The blob's position among the distinct blobs (`0..len()`), for per-blob bitmaps.
    pub fn position(&self, id: &Id) -> Option<usize> {
        debug_assert!(self.sorted, "Index::finalize must run before lookups");
        self.entries.binary_search_by(|e| e.id.cmp(id)).ok()
    }

    fn find(&self, id: &Id) -> Option<&Location> {
        debug_assert!(self.sorted, "Index::finalize must run before lookups");
        self.entries
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Whether the blob is stored in a pack not marked for deletion: what writers may reuse.
    pub fn contains_live(&self, id: &Id) -> bool {
        self.find(id).is_some_and(|l| !self.is_marked(l))
    }

    /// Whether the blob is stored at all (possibly only in a marked pack).
    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// Where the blob is stored, if in a pack not marked for deletion.
    pub fn get_live(&self, id: &Id) -> Option<BlobRef> {
        self.find(id)
            .filter(|l| !self.is_marked(l))
            .and_then(|_| self.get(id))
    }

    /// Where the blob is stored (a live location when there is one).
    pub fn get(&self, id: &Id) -> Option<BlobRef> {
        self.find(id).map(|l| BlobRef {
            id: l.id,
            pack: self.pack_ids[l.pack as usize],
            kind: l.kind(),
            offset: l.offset,
            stored_len: l.stored_len,
            raw_len: l.raw_len(),
            base: self.base_of(id),
        })
    }

    /// The base of a delta blob.
    pub fn base_of(&self, id: &Id) -> Option<Id> {
        let pos = self.position(id)? as u32;
        self.bases
            .binary_search_by_key(&pos, |b| b.0)
            .ok()
            .map(|i| self.bases[i].1)
    }

    /// Every delta blob and its base.
    pub fn deltas(&self) -> impl Iterator<Item = (&Id, &Id)> {
        self.bases
            .iter()
            .map(|(pos, base)| (&self.entries[*pos as usize].id, base))
    }

    /// Every distinct blob, in position order (see [`Index::position`]).
    pub fn iter(&self) -> impl Iterator<Item = &Location> {
        self.entries.iter()
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of packs referenced.
    pub fn pack_count(&self) -> usize {
        self.pack_ids.len()
    }

    /// Heap bytes held, for the memory figure in `docs/format.md`.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Location>()
            + self.pack_ids.capacity() * 32
            + self.pack_numbers.capacity() * (32 + 4 + 8)
            + self.bases.capacity() * std::mem::size_of::<(u32, Id)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Location>(), 48);
    }

    #[test]
    fn lookup_and_duplicates() {
        let mut idx = Index::new();
        let e = |i: u8| PackEntry {
            kind: BlobKind::Data,
            id: Id([i; 32]),
            offset: i as u32 * 10,
            stored_len: 10,
            raw_len: 20,
            base: None,
        };
        idx.add_pack(Id([100; 32]), &[e(1), e(2)]).unwrap();
        idx.add_pack(Id([101; 32]), &[e(2), e(3)]).unwrap();
        idx.finalize();
        assert_eq!(idx.len(), 3);
        let r = idx.get(&Id([3; 32])).unwrap();
        assert_eq!(
            (r.pack, r.offset, r.raw_len, r.kind),
            (Id([101; 32]), 30, 20, BlobKind::Data)
        );
        assert!(!idx.contains(&Id([9; 32])));
    }

    #[test]
    fn each_delta_copy_keeps_its_own_base() {
        let d = |base: u8| PackEntry {
            kind: BlobKind::Delta,
            id: Id([1; 32]),
            offset: 0,
            stored_len: 10,
            raw_len: 20,
            base: Some(Id([base; 32])),
        };
        for order in [[0, 1], [1, 0]] {
            let mut idx = Index::new();
            let packs = [(Id([200; 32]), d(7)), (Id([100; 32]), d(8))];
            for i in order {
                idx.add_pack(packs[i].0, std::slice::from_ref(&packs[i].1))
                    .unwrap();
            }
            idx.finalize();
            // The lowest pack ID wins, with its own base, whatever the load order.
            let r = idx.get(&Id([1; 32])).unwrap();
            assert_eq!((r.pack, r.base), (Id([100; 32]), Some(Id([8; 32]))));
        }
    }

    #[test]
    fn marked_packs_are_readable_but_not_live() {
        let e = |i: u8| PackEntry {
            kind: BlobKind::Data,
            id: Id([i; 32]),
            offset: 0,
            stored_len: 10,
            raw_len: 20,
            base: None,
        };
        let mut idx = Index::new();
        idx.add_marked_pack(Id([100; 32]), &[e(1), e(2)]).unwrap();
        idx.add_pack(Id([101; 32]), &[e(2)]).unwrap();
        idx.finalize();
        assert!(idx.contains(&Id([1; 32])) && !idx.contains_live(&Id([1; 32])));
        assert!(idx.get(&Id([1; 32])).is_some() && idx.get_live(&Id([1; 32])).is_none());
        // The live copy wins.
        assert_eq!(idx.get_live(&Id([2; 32])).unwrap().pack, Id([101; 32]));
        // A pack listed live in one file and marked in another is live.
        let mut idx = Index::new();
        idx.add_marked_pack(Id([100; 32]), &[e(1)]).unwrap();
        idx.add_pack(Id([100; 32]), &[e(1)]).unwrap();
        idx.finalize();
        assert!(idx.contains_live(&Id([1; 32])));
    }
}
