//! The in-memory index: blob ID -> (pack, offset, lengths, kind).
//!
//! Loaded once per command from every index file and kept as one sorted vector of fixed
//! 48-byte [`Location`] entries, searched by binary search: no per-entry allocation and no hash
//! table slack. Pack IDs are stored once in a side table and referenced by a `u32`. Delta bases
//! (rare) live in a separate map. See `docs/format.md`, "In-memory index", for the figures.

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
    bases: HashMap<Id, Id>,
    sorted: bool,
}

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
        let n = self.pack_number(pack);
        for b in blobs {
            if b.raw_len > RAW_LEN_MASK {
                return Err(format!("blob {} claims {} bytes", b.id.short(), b.raw_len));
            }
            if let Some(base) = b.base {
                self.bases.insert(b.id, base);
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

    /// Adds every pack of an index file.
    pub fn add_file(&mut self, file: &IndexFile) -> Result<(), String> {
        for p in &file.packs {
            self.add_pack(p.id, &p.blobs)?;
        }
        Ok(())
    }

    /// Sorts for lookup; a blob stored twice (two concurrent snapshots) keeps one location.
    pub fn finalize(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.id);
        self.entries.dedup_by(|a, b| a.id == b.id);
        self.entries.shrink_to_fit();
        self.sorted = true;
    }

    fn find(&self, id: &Id) -> Option<&Location> {
        debug_assert!(self.sorted, "Index::finalize must run before lookups");
        self.entries
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Whether the blob is stored.
    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// Where the blob is stored.
    pub fn get(&self, id: &Id) -> Option<BlobRef> {
        self.find(id).map(|l| BlobRef {
            id: l.id,
            pack: self.pack_ids[l.pack as usize],
            kind: l.kind(),
            offset: l.offset,
            stored_len: l.stored_len,
            raw_len: l.raw_len(),
            base: self.bases.get(id).copied(),
        })
    }

    /// The base of a delta blob.
    pub fn base_of(&self, id: &Id) -> Option<Id> {
        self.bases.get(id).copied()
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
            + self.bases.capacity() * 72
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
}
