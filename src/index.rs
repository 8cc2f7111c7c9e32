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

/// An ID's first 8 bytes as a number ordered like the ID.
fn prefix(id: &Id) -> u64 {
    u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"))
}

/// Only delta blobs have a base: the others skip the search of the bases.
fn is_delta(l: &Location) -> bool {
    l.kind() == BlobKind::Delta
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
    /// While loading; emptied by [`Index::finalize`].
    loading: Loading,
    sorted: bool,
    /// The index files this index was built from (and those they superseded).
    loaded_files: Vec<Id>,
}

/// What an index holds while files are added: every copy of every blob in the order added,
/// tagged with that order (its *sequence number*), so that a copy keeps its own delta base
/// through the sort and a superseded file's copies can be left out after they were added (the
/// files are added as they are decoded, not all held at once: see
/// `Repository::load_index`). 52 bytes a copy plus 36 a delta copy; the finished index is 48
/// plus 36.
#[derive(Default, Debug)]
struct Loading {
    copies: Vec<(Location, u32)>,
    /// (sequence number, base) of each delta copy, in sequence order.
    bases: Vec<(u32, Id)>,
    /// (first sequence number of the listing, pack number, marked) for every pack listing: a
    /// pack's marked flag is decided by the listings that are not left out.
    listings: Vec<(u32, u32, bool)>,
    /// Sequence ranges left out (superseded files).
    excluded: Vec<std::ops::Range<u32>>,
}

fn is_excluded(excluded: &[std::ops::Range<u32>], seq: u32) -> bool {
    excluded.iter().any(|r| r.contains(&seq))
}

/// Sequence numbers and positions are `u32`, with the top bit free for [`Index::finalize`].
const MAX_COPIES: usize = 1 << 31;

impl Index {
    pub fn new() -> Self {
        Index {
            sorted: true,
            ..Default::default()
        }
    }

    fn pack_number(&mut self, pack: Id) -> u32 {
        let next = self.pack_ids.len() as u32;
        *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.pack_ids.push(pack);
            next
        })
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
        if self.loading.copies.len() + blobs.len() >= MAX_COPIES {
            return Err(format!("more than {MAX_COPIES} blob copies indexed"));
        }
        let n = self.pack_number(pack);
        let l = &mut self.loading;
        l.listings.push((l.copies.len() as u32, n, marked));
        l.copies.reserve(blobs.len());
        for b in blobs {
            if b.raw_len > RAW_LEN_MASK {
                return Err(format!("blob {} claims {} bytes", b.id.short(), b.raw_len));
            }
            let seq = l.copies.len() as u32;
            if let Some(base) = b.base {
                l.bases.push((seq, base));
            }
            let loc = Location {
                id: b.id,
                pack: n,
                offset: b.offset,
                stored_len: b.stored_len,
                raw_len_kind: b.raw_len | ((b.kind as u32) << RAW_LEN_BITS),
            };
            l.copies.push((loc, seq));
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

    /// Makes room for `copies` blob copies, `deltas` of them deltas, before they are added.
    pub fn reserve(&mut self, copies: usize, deltas: usize) {
        self.loading.copies.reserve(copies.min(MAX_COPIES));
        self.loading.bases.reserve(deltas.min(MAX_COPIES));
    }

    /// The sequence number the next added blob copy gets: with [`Index::exclude`], a caller
    /// can add a file and leave it out again once it learns that another file supersedes it.
    pub fn next_sequence(&self) -> u32 {
        self.loading.copies.len() as u32
    }

    /// Leaves out the copies added in `range` (and the pack listings they came with).
    pub fn exclude(&mut self, range: std::ops::Range<u32>) {
        if !range.is_empty() {
            self.loading.excluded.push(range);
        }
    }

    fn is_marked(&self, l: &Location) -> bool {
        self.marked[l.pack as usize]
    }

    /// Sorts for lookup; a blob stored twice (two concurrent snapshots, or a repacked blob
    /// beside its marked old copy) keeps one location, a live one when there is one.
    ///
    /// The copy kept is chosen the same way by every reader (live first, then the lowest pack
    /// ID), so that two prunes agree on it; a delta copy keeps its own base. Works in place:
    /// the peak is the loading copies' 52 bytes a blob plus 36 a delta.
    pub fn finalize(&mut self) {
        debug_assert!(self.entries.is_empty(), "an index is finalized once");
        let mut l = std::mem::take(&mut self.loading);
        // A pack is marked when every listing of it left in says so.
        let mut marked = vec![true; self.pack_ids.len()];
        let mut listed = vec![false; self.pack_ids.len()];
        for &(seq, n, m) in &l.listings {
            if !is_excluded(&l.excluded, seq) {
                marked[n as usize] &= m;
                listed[n as usize] = true;
            }
        }
        // Packs not listed by any file left in have no copies left: not counted as marked
        // either way, since nothing points at them.
        for (m, listed) in marked.iter_mut().zip(&listed) {
            *m &= *listed;
        }
        if !l.excluded.is_empty() {
            let excluded = &l.excluded;
            l.copies.retain(|(_, seq)| !is_excluded(excluded, *seq));
        }
        let pack_ids = &self.pack_ids;
        l.copies.sort_unstable_by_key(|(e, _)| {
            (e.id, marked[e.pack as usize], pack_ids[e.pack as usize])
        });
        l.copies.dedup_by(|a, b| a.0.id == b.0.id);
        // Each kept copy's base, found by its sequence number and moved to its position.
        if !l.bases.is_empty() {
            let moves: Vec<(u32, u32)> = l
                .copies
                .iter()
                .enumerate()
                .filter_map(|(pos, (_, seq))| {
                    let i = l.bases.binary_search_by_key(seq, |b| b.0).ok()?;
                    Some((i as u32, pos as u32))
                })
                .collect();
            // In place; the top bit tells the bases of kept copies from those dropped.
            const KEPT: u32 = 1 << 31;
            for &(i, pos) in &moves {
                l.bases[i as usize].0 = pos | KEPT;
            }
            drop(moves);
            l.bases.retain(|b| b.0 & KEPT != 0);
            for b in l.bases.iter_mut() {
                b.0 &= !KEPT;
            }
            l.bases.sort_unstable_by_key(|b| b.0);
            l.bases.shrink_to_fit();
        }
        self.bases = l.bases;
        // In place: the vector's allocation is reused.
        let mut entries: Vec<Location> = l.copies.into_iter().map(|(e, _)| e).collect();
        entries.shrink_to_fit();
        self.entries = entries;
        self.marked = marked;
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
        // IDs are uniform: comparing their first 8 bytes as one integer decides nearly every
        // step of the search (a byte-wise compare of 32 took most of `check`'s time).
        let key = prefix(id);
        self.entries
            .binary_search_by(|e| prefix(&e.id).cmp(&key).then_with(|| e.id.cmp(id)))
            .ok()
    }

    fn find(&self, id: &Id) -> Option<(usize, &Location)> {
        self.position(id).map(|i| (i, &self.entries[i]))
    }

    /// Whether the blob is stored in a pack not marked for deletion: what writers may reuse.
    pub fn contains_live(&self, id: &Id) -> bool {
        self.find(id).is_some_and(|(_, l)| !self.is_marked(l))
    }

    /// Whether the blob is stored at all (possibly only in a marked pack).
    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// Where the blob is stored, if in a pack not marked for deletion.
    pub fn get_live(&self, id: &Id) -> Option<BlobRef> {
        self.find(id)
            .filter(|(_, l)| !self.is_marked(l))
            .map(|(pos, l)| self.blob_ref(pos, l))
    }

    /// Where the blob is stored (a live location when there is one).
    pub fn get(&self, id: &Id) -> Option<BlobRef> {
        self.find(id).map(|(pos, l)| self.blob_ref(pos, l))
    }

    fn blob_ref(&self, pos: usize, l: &Location) -> BlobRef {
        BlobRef {
            id: l.id,
            pack: self.pack_ids[l.pack as usize],
            kind: l.kind(),
            offset: l.offset,
            stored_len: l.stored_len,
            raw_len: l.raw_len(),
            base: self.base_at(pos),
        }
    }

    /// The base of a delta blob.
    pub fn base_of(&self, id: &Id) -> Option<Id> {
        self.base_at(self.position(id)?)
    }

    /// The base of the delta blob at this position (see [`Index::position`]).
    pub fn base_at(&self, pos: usize) -> Option<Id> {
        if is_delta(&self.entries[pos]) {
            let pos = pos as u32;
            self.bases
                .binary_search_by_key(&pos, |b| b.0)
                .ok()
                .map(|i| self.bases[i].1)
        } else {
            None
        }
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
    fn excluded_copies_and_listings_are_left_out() {
        let e = |i: u8, base: Option<u8>| PackEntry {
            kind: if base.is_some() {
                BlobKind::Delta
            } else {
                BlobKind::Data
            },
            id: Id([i; 32]),
            offset: i as u32,
            stored_len: 10,
            raw_len: 20,
            base: base.map(|b| Id([b; 32])),
        };
        let mut idx = Index::new();
        // A superseded file: pack 100 live, blob 1 a delta against 7, blob 3 only here.
        let start = idx.next_sequence();
        idx.add_pack(Id([100; 32]), &[e(1, Some(7)), e(3, None)])
            .unwrap();
        let old = start..idx.next_sequence();
        // The file that supersedes it: pack 100 marked (blob 1 only), pack 50 with blob 1 as a
        // delta against 8 and blob 2.
        idx.add_marked_pack(Id([100; 32]), &[e(1, Some(7))])
            .unwrap();
        idx.add_pack(Id([50; 32]), &[e(1, Some(8)), e(2, None)])
            .unwrap();
        idx.exclude(old);
        idx.finalize();
        assert_eq!(idx.len(), 2, "blob 3 was listed only by the excluded file");
        assert!(!idx.contains(&Id([3; 32])));
        let r = idx.get(&Id([1; 32])).unwrap();
        assert_eq!((r.pack, r.base), (Id([50; 32]), Some(Id([8; 32]))));
        assert_eq!(idx.deltas().count(), 1);
        // Without the exclusion pack 100 would count as live through the old listing.
        let mut idx = Index::new();
        idx.add_pack(Id([100; 32]), &[e(1, Some(7))]).unwrap();
        let start = idx.next_sequence();
        idx.add_pack(Id([100; 32]), &[e(1, Some(7))]).unwrap();
        idx.exclude(start..idx.next_sequence());
        idx.add_marked_pack(Id([100; 32]), &[e(1, Some(7))])
            .unwrap();
        idx.finalize();
        assert!(
            idx.contains_live(&Id([1; 32])),
            "one listing left in says live"
        );
        let mut idx = Index::new();
        let start = idx.next_sequence();
        idx.add_pack(Id([100; 32]), &[e(1, Some(7))]).unwrap();
        idx.exclude(start..idx.next_sequence());
        idx.add_marked_pack(Id([100; 32]), &[e(1, Some(7))])
            .unwrap();
        idx.finalize();
        assert!(idx.contains(&Id([1; 32])) && !idx.contains_live(&Id([1; 32])));
        assert_eq!(idx.get(&Id([1; 32])).unwrap().base, Some(Id([7; 32])));
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
