//! Delta payloads: a blob's plaintext compressed by zstd with its base blob's plaintext as a
//! referenced prefix (`ZSTD_CCtx_refPrefix`, as `zstd --patch-from` does) and a window that
//! spans base and blob. Decoding needs the base's plaintext.
//!
//! The encoder uses zstd's fast match finder with a hash table sized to the window
//! ([`hash_log`]) rather than long-distance matching: LDM rolls a gear hash over every byte of
//! base and blob, which cost 28% of a delta snapshot's CPU; the sized table takes 12% less CPU
//! per snapshot for deltas about 9% larger (`docs/measurements/incremental-pgbench.md`). Either
//! way the frame is plain zstd.
//!
//! Payload marker `02` followed by one zstd frame (see `docs/format.md`, "Delta blobs").

use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter};

use super::FormatError;

/// Payload marker of a delta.
pub const DELTA: u8 = 2;
/// Largest window a delta may use: 2^27 = 128 MiB, far above base + blob (at most 2 x 16 MiB).
pub const MAX_WINDOW_LOG: u32 = 27;
/// Smallest zstd window log.
const MIN_WINDOW_LOG: u32 = 10;

/// The window log that covers `len` bytes.
fn window_log(len: usize) -> u32 {
    let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
    bits.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

/// The hash table's size for a delta's window: one slot per eight window bytes, about three
/// prefix positions per slot as zstd fills every third. Too small a table loses the matches (a
/// fixed hashLog 18 on pgbench dumps, one slot per 32 bytes in the unit test below: deltas near
/// full size); larger tables only cost time to clear.
fn hash_log(window_log: u32) -> u32 {
    window_log.saturating_sub(3).max(MIN_WINDOW_LOG)
}

fn zerr(what: &str, code: usize) -> FormatError {
    FormatError::Invalid(format!(
        "zstd {what}: {}",
        zstd::zstd_safe::get_error_name(code)
    ))
}

/// Encodes `data` as a delta against `base`: the payload (marker and frame) after `room` zero
/// bytes, with spare capacity for `tail` more (see [`super::payload::encode_with`]).
pub fn encode(
    base: &[u8],
    data: &[u8],
    level: i32,
    room: usize,
    tail: usize,
) -> Result<Vec<u8>, FormatError> {
    let mut cctx = CCtx::create();
    let set = |c: &mut CCtx<'_>, p| c.set_parameter(p).map_err(|e| zerr("parameter", e));
    set(&mut cctx, CParameter::CompressionLevel(level))?;
    let wlog = window_log(base.len() + data.len());
    set(&mut cctx, CParameter::WindowLog(wlog))?;
    set(&mut cctx, CParameter::HashLog(hash_log(wlog)))?;
    set(&mut cctx, CParameter::ContentSizeFlag(true))?;
    set(&mut cctx, CParameter::ChecksumFlag(false))?;
    cctx.ref_prefix(base).map_err(|e| zerr("prefix", e))?;
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut frame, data)
        .map_err(|e| zerr("compress", e))?;
    let mut out = Vec::with_capacity(room + 1 + frame.len() + tail);
    out.resize(room, 0);
    out.push(DELTA);
    out.extend_from_slice(&frame);
    Ok(out)
}

/// Decodes a delta payload (marker included) against `base`; the result must be exactly `len`
/// bytes.
pub fn decode(base: &[u8], payload: &[u8], len: usize) -> Result<Vec<u8>, FormatError> {
    let (&marker, frame) = payload.split_first().ok_or(FormatError::Truncated {
        offset: 0,
        needed: 1,
    })?;
    if marker != DELTA {
        return Err(FormatError::Invalid(format!(
            "delta payload has marker {marker}"
        )));
    }
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|e| zerr("parameter", e))?;
    dctx.ref_prefix(base).map_err(|e| zerr("prefix", e))?;
    let mut out = Vec::with_capacity(len);
    dctx.decompress(&mut out, frame)
        .map_err(|e| zerr("decode", e))?;
    if out.len() != len {
        return Err(FormatError::Invalid(format!(
            "delta decoded to {} bytes, expected {len}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::rows;
    use proptest::prelude::*;

    #[test]
    fn small_change_gives_small_delta() {
        let base = rows(40_000, 1);
        let mut data = base.clone();
        for i in (0..data.len()).step_by(10_000) {
            data[i] = b'#';
        }
        let d = encode(&base, &data, 3, 0, 0).unwrap();
        assert!(
            d.len() < data.len() / 50,
            "delta {} of {}",
            d.len(),
            data.len()
        );
        assert_eq!(decode(&base, &d, data.len()).unwrap(), data);
    }

    /// The largest chunks (4 MiB, an 8 MiB window) with rows moved as PostgreSQL moves updated
    /// rows to the end of a table: the match finder's table must still find the base's rows.
    #[test]
    fn moved_rows_in_a_max_size_chunk_give_a_small_delta() {
        let base = rows(170_000, 7);
        assert!(base.len() >= 4 << 20);
        let lines: Vec<&[u8]> = base.split_inclusive(|&b| b == b'\n').collect();
        let mut data = Vec::with_capacity(base.len());
        let mut moved = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if i % 100 == 37 {
                moved.extend_from_slice(&line[..line.len() - 2]);
                moved.extend_from_slice(b"9\n");
            } else {
                data.extend_from_slice(line);
            }
        }
        data.extend_from_slice(&moved);
        let d = encode(&base, &data, crate::archiver::DELTA_LEVEL, 0, 0).unwrap();
        let full = zstd::bulk::compress(&data, 3).unwrap();
        assert!(
            d.len() * 20 < full.len(),
            "delta {} bytes, full {} bytes",
            d.len(),
            full.len()
        );
        assert_eq!(decode(&base, &d, data.len()).unwrap(), data);
    }

    #[test]
    fn wrong_base_or_length_fails_cleanly() {
        let base = rows(1000, 1);
        let data = rows(1000, 2);
        let d = encode(&base, &data, 3, 0, 0).unwrap();
        assert!(decode(&base, &d, data.len() + 1).is_err());
        if let Ok(out) = decode(&rows(1000, 3), &d, data.len()) {
            assert_ne!(out, data);
        }
        assert!(decode(&base, &[], 0).is_err());
        assert!(decode(&base, &[9, 1, 2], 0).is_err());
    }

    #[test]
    fn room_is_left_for_sealing() {
        let d = encode(b"abc", b"abcd", 1, 24, 16).unwrap();
        assert_eq!(&d[..24], &[0u8; 24]);
        assert_eq!(decode(b"abc", &d[24..], 4).unwrap(), b"abcd");
    }

    proptest! {
        #[test]
        fn any_edit_round_trips(base in proptest::collection::vec(any::<u8>(), 0..3000),
                                edits in proptest::collection::vec((any::<u16>(), 0u8..3, any::<u8>()), 0..20)) {
            let mut data = base.clone();
            for (pos, op, byte) in edits {
                let p = if data.is_empty() { 0 } else { pos as usize % data.len() };
                match op {
                    0 if !data.is_empty() => data[p] = byte,
                    1 => data.insert(p, byte),
                    _ if !data.is_empty() => { data.remove(p); }
                    _ => data.push(byte),
                }
            }
            let d = encode(&base, &data, 3, 0, 0).unwrap();
            prop_assert_eq!(decode(&base, &d, data.len()).unwrap(), data);
        }

        #[test]
        fn decode_never_panics(base in proptest::collection::vec(any::<u8>(), 0..100),
                               payload in proptest::collection::vec(any::<u8>(), 0..200),
                               len in 0usize..1000) {
            let _ = decode(&base, &payload, len);
        }
    }
}
