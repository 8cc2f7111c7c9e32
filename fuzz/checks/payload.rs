//! Payloads: `decode` with a size limit, `decode_exact`, and the encoders' round trip.
//!
//! Input: `limit (u16 LE) || payload`. The limit also serves as `decode_exact`'s length.
//!
//! Shared by the fuzz target `fuzz_targets/payload.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::format::payload::{decode, decode_exact, encode, encode_with, RAW};

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let limit = u16::from_le_bytes([data[0], data[1]]) as usize;
    let payload = &data[2..];

    // Hostile payloads: never more than `limit` bytes out, raw payloads come back as they are.
    let loose = decode(payload, limit);
    if let Ok(out) = &loose {
        assert!(
            out.len() <= limit,
            "{} bytes out with limit {limit}",
            out.len()
        );
        if payload[0] == RAW {
            assert_eq!(out, &payload[1..]);
        }
    }
    let mut dec = zstd::bulk::Decompressor::new().unwrap();
    if let Ok(out) = decode_exact(&mut dec, payload, limit) {
        assert_eq!(out.len(), limit);
        // The two decoders agree where both accept the payload.
        if let Ok(loose) = &loose {
            assert_eq!(loose, &out);
        }
    }

    // Round trip of the fuzzer's bytes through both encoders.
    let enc = encode(payload, 1);
    assert!(enc.len() <= payload.len() + 1);
    assert_eq!(decode(&enc, payload.len()).unwrap(), payload);
    if !payload.is_empty() {
        assert!(
            decode(&enc, payload.len() - 1).is_err(),
            "limit not enforced"
        );
    }
    // `encode_with` leaves `room` zero bytes in front and `tail` bytes of spare capacity, for
    // sealing in place.
    let (room, tail) = (data[0] as usize % 32, data[1] as usize % 32);
    let mut comp = zstd::bulk::Compressor::new(1).unwrap();
    let enc = encode_with(&mut comp, payload, &mut Vec::new(), room, tail);
    assert!(enc.len() <= room + payload.len() + 1);
    assert!(enc[..room].iter().all(|&b| b == 0));
    assert!(enc.capacity() - enc.len() >= tail);
    assert_eq!(
        decode_exact(&mut dec, &enc[room..], payload.len()).unwrap(),
        payload
    );
}
