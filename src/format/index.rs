//! Index files: which blobs each pack holds, so that a snapshot can be restored without reading
//! pack headers. Payload (inside a sealed, payload-encoded file):
//!
//! ```text
//! version u8 = 1 or 2
//! supersedes: u32 count, then count x id(32)      -- index files this one replaces (prune)
//! packs:      u32 count, then count x pack
//! marked:     u32 count, then count x (marked_at i64, pack)   -- version 2 only
//! deleted:    u32 count, then count x (pack id (32), deleted_at i64)   -- version 2 only
//! pack:       pack id (32), u32 blob count, then per blob:
//!               kind u8, offset u32, stored_len u32, raw_len u32, id (32) [, base id (32) if kind = 2]
//! ```
//!
//! Marked packs are packs that `prune` found unused and will delete after a grace period (see
//! `docs/format.md`, section 12); their blobs stay readable until then. Version 1 is written
//! whenever there are none, so snapshots never write version 2.

use super::pack::PackEntry;
use super::{BlobKind, FormatError, Reader};
use crate::id::Id;

/// Index payload version without marked packs.
pub const INDEX_VERSION: u8 = 1;
/// Index payload version with marked packs.
pub const INDEX_VERSION_MARKED: u8 = 2;

/// A pack and its blobs, as listed in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    pub id: Id,
    pub blobs: Vec<PackEntry>,
}

/// A pack that `prune` marked for deletion, and when (Unix seconds, by prune's clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkedPack {
    pub marked_at: i64,
    pub pack: IndexPack,
}

/// A pack that `prune` deletes (or deleted) after writing this file, and when: a tombstone that
/// lets a snapshot still running find out that a pack it relies on is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedPack {
    pub id: Id,
    pub deleted_at: i64,
}

/// A decoded index file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexFile {
    pub supersedes: Vec<Id>,
    pub packs: Vec<IndexPack>,
    pub marked: Vec<MarkedPack>,
    pub deleted: Vec<DeletedPack>,
}

fn encode_pack(out: &mut Vec<u8>, p: &IndexPack) {
    out.extend_from_slice(&p.id.0);
    out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
    for b in &p.blobs {
        out.push(b.kind as u8);
        out.extend_from_slice(&b.offset.to_le_bytes());
        out.extend_from_slice(&b.stored_len.to_le_bytes());
        out.extend_from_slice(&b.raw_len.to_le_bytes());
        out.extend_from_slice(&b.id.0);
        if b.kind == BlobKind::Delta {
            out.extend_from_slice(&b.base.unwrap_or_default().0);
        }
    }
}

fn decode_pack(r: &mut Reader<'_>) -> Result<IndexPack, FormatError> {
    let id = r.id()?;
    let nb = r.u32()? as usize;
    let mut blobs = Vec::with_capacity(nb.min(r.remaining() / 45));
    for _ in 0..nb {
        let kind = BlobKind::from_u8(r.u8()?)?;
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let bid = r.id()?;
        let base = if kind == BlobKind::Delta {
            Some(r.id()?)
        } else {
            None
        };
        blobs.push(PackEntry {
            kind,
            id: bid,
            offset,
            stored_len,
            raw_len,
            base,
        });
    }
    Ok(IndexPack { id, blobs })
}

impl IndexFile {
    /// Whether the file needs version 2.
    pub fn has_prune_lists(&self) -> bool {
        !self.marked.is_empty() || !self.deleted.is_empty()
    }

    /// Encodes the payload (version 1 unless there are marked or deleted packs).
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out =
            Vec::with_capacity(9 + self.supersedes.len() * 32 + self.packs.len() * 36 + blobs * 45);
        let marked = self.has_prune_lists();
        out.push(if marked {
            INDEX_VERSION_MARKED
        } else {
            INDEX_VERSION
        });
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            encode_pack(&mut out, p);
        }
        if marked {
            out.extend_from_slice(&(self.marked.len() as u32).to_le_bytes());
            for m in &self.marked {
                out.extend_from_slice(&m.marked_at.to_le_bytes());
                encode_pack(&mut out, &m.pack);
            }
            out.extend_from_slice(&(self.deleted.len() as u32).to_le_bytes());
            for d in &self.deleted {
                out.extend_from_slice(&d.id.0);
                out.extend_from_slice(&d.deleted_at.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        if v != INDEX_VERSION && v != INDEX_VERSION_MARKED {
            return Err(FormatError::Version {
                what: "index",
                version: v as u32,
            });
        }
        let n = r.u32()? as usize;
        let mut supersedes = Vec::with_capacity(n.min(r.remaining() / 32));
        for _ in 0..n {
            supersedes.push(r.id()?);
        }
        let np = r.u32()? as usize;
        let mut packs = Vec::with_capacity(np.min(r.remaining() / 36));
        for _ in 0..np {
            packs.push(decode_pack(&mut r)?);
        }
        let mut marked = Vec::new();
        let mut deleted = Vec::new();
        if v == INDEX_VERSION_MARKED {
            let nm = r.u32()? as usize;
            marked.reserve(nm.min(r.remaining() / 44));
            for _ in 0..nm {
                let marked_at = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                marked.push(MarkedPack {
                    marked_at,
                    pack: decode_pack(&mut r)?,
                });
            }
            let nd = r.u32()? as usize;
            deleted.reserve(nd.min(r.remaining() / 40));
            for _ in 0..nd {
                let id = r.id()?;
                let deleted_at = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                deleted.push(DeletedPack { id, deleted_at });
            }
        }
        r.finish()?;
        let f = IndexFile {
            supersedes,
            packs,
            marked,
            deleted,
        };
        if v == INDEX_VERSION_MARKED && !f.has_prune_lists() {
            // One encoding per file: without these lists it is version 1.
            return Err(FormatError::Invalid(
                "index version 2 without marked or deleted packs".into(),
            ));
        }
        Ok(f)
    }

    /// Blobs listed (live and marked).
    pub fn blob_count(&self) -> usize {
        self.packs
            .iter()
            .chain(self.marked.iter().map(|m| &m.pack))
            .map(|p| p.blobs.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack_strategy() -> impl Strategy<Value = IndexPack> {
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(
                (
                    0u8..3,
                    any::<[u8; 32]>(),
                    any::<u32>(),
                    any::<u32>(),
                    any::<u32>(),
                ),
                0..20,
            ),
        )
            .prop_map(|(id, blobs)| IndexPack {
                id: Id(id),
                blobs: blobs
                    .into_iter()
                    .map(|(k, bid, off, len, raw)| {
                        let kind = BlobKind::from_u8(k).unwrap();
                        PackEntry {
                            kind,
                            id: Id(bid),
                            offset: off,
                            stored_len: len,
                            raw_len: raw,
                            base: (kind == BlobKind::Delta).then_some(Id([7; 32])),
                        }
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn round_trip(sup in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
                      packs in proptest::collection::vec(pack_strategy(), 0..5),
                      marked in proptest::collection::vec((any::<i64>(), pack_strategy()), 0..3),
                      deleted in proptest::collection::vec((any::<[u8; 32]>(), any::<i64>()), 0..3)) {
            let marked = marked.into_iter().map(|(marked_at, pack)| MarkedPack { marked_at, pack }).collect();
            let deleted = deleted.into_iter().map(|(id, deleted_at)| DeletedPack { id: Id(id), deleted_at }).collect();
            let f = IndexFile { supersedes: sup.into_iter().map(Id).collect(), packs, marked, deleted };
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = IndexFile::decode(&data);
        }
    }
}
