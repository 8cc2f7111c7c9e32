//! The payload encoding inside every sealed object: one marker byte, then the bytes raw (`0x00`)
//! or as one zstd frame (`0x01`). Raw is chosen whenever zstd does not make the bytes smaller, so
//! incompressible data costs one byte, not a failed compression's overhead.

use std::io::Read;

use super::FormatError;

/// Marker: payload stored as is.
pub const RAW: u8 = 0;
/// Marker: payload is a zstd frame.
pub const ZSTD: u8 = 1;

/// Encodes `data` with zstd at `level` when that is smaller.
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    out.push(ZSTD);
    if zstd::stream::copy_encode(data, &mut out, level).is_ok() && out.len() < data.len() + 1 {
        return out;
    }
    out.clear();
    out.reserve(data.len() + 1);
    out.push(RAW);
    out.extend_from_slice(data);
    out
}

/// Encodes a chunk with a reusable compressor (the hot path of a snapshot) into a buffer that
/// starts with `room` zero bytes and has spare capacity for `tail` more, so the caller can seal it
/// in place without another copy (see [`crate::crypto::seal_in_place`]).
pub fn encode_with(
    compressor: &mut zstd::bulk::Compressor<'_>,
    data: &[u8],
    scratch: &mut Vec<u8>,
    room: usize,
    tail: usize,
) -> Vec<u8> {
    scratch.clear();
    scratch.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let (marker, body) = match compressor.compress_to_buffer(data, scratch) {
        Ok(n) if n < data.len() => (ZSTD, &scratch[..n]),
        _ => (RAW, data),
    };
    let mut out = Vec::with_capacity(room + 1 + body.len() + tail);
    out.resize(room, 0);
    out.push(marker);
    out.extend_from_slice(body);
    out
}

/// Decodes a payload, refusing to produce more than `limit` bytes (a bound against
/// decompression bombs in tampered-but-authentic or buggy input).
pub fn decode(payload: &[u8], limit: usize) -> Result<Vec<u8>, FormatError> {
    let (&marker, body) = payload.split_first().ok_or(FormatError::Truncated {
        offset: 0,
        needed: 1,
    })?;
    match marker {
        RAW => {
            if body.len() > limit {
                return Err(FormatError::Invalid(format!(
                    "payload larger than {limit} bytes"
                )));
            }
            Ok(body.to_vec())
        }
        ZSTD => {
            // One decompression context per thread, reused: creating one per file took half
            // the time of listing snapshots (perf, 600 small snapshot and audit files).
            thread_local! {
                static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
                    std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
            }
            let out = DCTX.with(|ctx| {
                let mut ctx = ctx.borrow_mut();
                let mut dec = zstd::stream::read::Decoder::with_context(body, &mut ctx)
                    .take(limit as u64 + 1);
                let mut out = Vec::new();
                dec.read_to_end(&mut out)
                    .map_err(|e| FormatError::Invalid(format!("zstd: {e}")))?;
                Ok::<_, FormatError>(out)
            })?;
            if out.len() > limit {
                return Err(FormatError::Invalid(format!(
                    "payload larger than {limit} bytes"
                )));
            }
            Ok(out)
        }
        m => Err(FormatError::Invalid(format!("unknown payload marker {m}"))),
    }
}

/// Decodes a blob payload whose plaintext length is known exactly.
pub fn decode_exact(
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    payload: &[u8],
    len: usize,
) -> Result<Vec<u8>, FormatError> {
    let (&marker, body) = payload.split_first().ok_or(FormatError::Truncated {
        offset: 0,
        needed: 1,
    })?;
    let out = match marker {
        RAW => body.to_vec(),
        ZSTD => {
            let mut out = Vec::with_capacity(len);
            decompressor
                .decompress_to_buffer(body, &mut out)
                .map_err(|e| FormatError::Invalid(format!("zstd: {e}")))?;
            out
        }
        m => return Err(FormatError::Invalid(format!("unknown payload marker {m}"))),
    };
    if out.len() != len {
        return Err(FormatError::Invalid(format!(
            "decoded {} bytes, expected {len}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 0usize..4) {
            let data: Vec<u8> = data.iter().cycle().take(data.len() * (rep + 1)).copied().collect();
            let enc = encode(&data, 3);
            prop_assert!(enc.len() <= data.len() + 1);
            prop_assert_eq!(decode(&enc, data.len()).unwrap(), data.clone());
            let mut c = zstd::bulk::Compressor::new(3).unwrap();
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            let enc2 = encode_with(&mut c, &data, &mut Vec::new(), 3, 0);
            prop_assert_eq!(&enc2[..3], &[0u8; 3]);
            prop_assert_eq!(decode_exact(&mut d, &enc2[3..], data.len()).unwrap(), data);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data, 1 << 20);
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            let _ = decode_exact(&mut d, &data, 100);
        }
    }

    #[test]
    fn limit_is_enforced() {
        let enc = encode(&vec![0u8; 10_000], 3);
        assert!(decode(&enc, 9_999).is_err());
    }
}
