//! Pack files: `blob_0 || blob_1 || ... || sealed header || header length (u32 LE)`.
//!
//! Each blob is sealed on its own, so one can be read with a ranged read. The header lists the
//! blobs in order; a blob's offset is the sum of the stored lengths before it. Header plaintext:
//! `version (u8 = 1)` then per blob `kind (u8) || stored_len (u32) || raw_len (u32) || id (32)`,
//! and for [`BlobKind::Delta`] also `base id (32)`.

use super::{BlobKind, FormatError, Reader};
use crate::id::Id;

/// Pack header format version.
pub const HEADER_VERSION: u8 = 1;
/// Bytes of a header entry without a base.
pub const ENTRY_LEN: usize = 41;

/// One blob in a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Length of the blob's plaintext.
    pub raw_len: u32,
    /// For delta blobs: the blob it is a delta against.
    pub base: Option<Id>,
}

/// Encodes a header's plaintext.
pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    out.push(HEADER_VERSION);
    for e in entries {
        out.push(e.kind as u8);
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.extend_from_slice(&e.id.0);
        if e.kind == BlobKind::Delta {
            out.extend_from_slice(&e.base.unwrap_or_default().0);
        }
    }
    out
}

/// Decodes a header's plaintext; offsets are computed from the stored lengths and must fit in
/// `data_len`, the length of the pack before the header.
pub fn decode_header(plain: &[u8], data_len: u64) -> Result<Vec<PackEntry>, FormatError> {
    let mut r = Reader::new(plain);
    let v = r.u8()?;
    if v != HEADER_VERSION {
        return Err(FormatError::Version {
            what: "pack header",
            version: v as u32,
        });
    }
    let mut out = Vec::with_capacity(r.remaining() / ENTRY_LEN);
    let mut offset: u64 = 0;
    while r.remaining() > 0 {
        let kind = BlobKind::from_u8(r.u8()?)?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let id = r.id()?;
        let base = if kind == BlobKind::Delta {
            Some(r.id()?)
        } else {
            None
        };
        if offset > u32::MAX as u64 {
            return Err(FormatError::Invalid(format!(
                "blob {} starts past 4 GiB: packs are smaller",
                id.short()
            )));
        }
        if offset + stored_len as u64 > data_len {
            return Err(FormatError::Invalid(format!(
                "blob {} at {offset}+{stored_len} runs past the pack's data ({data_len} bytes)",
                id.short()
            )));
        }
        out.push(PackEntry {
            kind,
            id,
            offset: offset as u32,
            stored_len,
            raw_len,
            base,
        });
        offset += stored_len as u64;
    }
    if offset != data_len {
        return Err(FormatError::Invalid(format!(
            "header covers {offset} bytes but the pack holds {data_len} bytes of blobs"
        )));
    }
    Ok(out)
}

/// Splits a whole pack into (blob data, sealed header).
pub fn split(pack: &[u8]) -> Result<(&[u8], &[u8]), FormatError> {
    if pack.len() < 4 {
        return Err(FormatError::Truncated {
            offset: 0,
            needed: 4 - pack.len(),
        });
    }
    let (rest, len) = pack.split_at(pack.len() - 4);
    let hlen = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if hlen > rest.len() {
        return Err(FormatError::Invalid(format!(
            "header length {hlen} exceeds pack size {}",
            pack.len()
        )));
    }
    Ok(rest.split_at(rest.len() - hlen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = (u8, [u8; 32], u32, u32, [u8; 32])> {
        (
            0u8..3,
            any::<[u8; 32]>(),
            0u32..100_000,
            any::<u32>(),
            any::<[u8; 32]>(),
        )
    }

    proptest! {
        #[test]
        fn header_round_trip(raw in proptest::collection::vec(entry_strategy(), 0..50)) {
            let mut off = 0u32;
            let entries: Vec<PackEntry> = raw.into_iter().map(|(k, id, len, rl, base)| {
                let kind = BlobKind::from_u8(k).unwrap();
                let e = PackEntry { kind, id: Id(id), offset: off, stored_len: len, raw_len: rl,
                    base: (kind == BlobKind::Delta).then_some(Id(base)) };
                off += len;
                e
            }).collect();
            let enc = encode_header(&entries);
            prop_assert_eq!(decode_header(&enc, off as u64).unwrap(), entries);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), len in any::<u32>()) {
            let _ = decode_header(&data, len as u64);
            let _ = split(&data);
        }
    }
}

#[cfg(test)]
mod regression {
    use super::*;

    /// Found by the `pack_header` fuzz target: offsets at or past 4 GiB used to wrap silently.
    #[test]
    fn offsets_past_4_gib_are_rejected() {
        let e = |len: u32| PackEntry {
            kind: BlobKind::Data,
            id: Id::default(),
            offset: 0,
            stored_len: len,
            raw_len: 0,
            base: None,
        };
        let header = encode_header(&[e(u32::MAX), e(1), e(0)]);
        assert!(decode_header(&header, 1 << 32).is_err());
    }
}
