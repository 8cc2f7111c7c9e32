//! Pack files: `split` of a whole pack and `decode_header` of a header's plaintext.
//!
//! Input: `data_len (u64 LE) || header plaintext` for `decode_header`; the whole input is also
//! given to `split` as a pack.
//!
//! Shared by the fuzz target `fuzz_targets/pack_header.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::format::pack::{decode_header, encode_header, split};
use sbk::format::BlobKind;

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    check_split(data);
    if data.len() >= 8 {
        let data_len = u64::from_le_bytes(data[..8].try_into().unwrap());
        check_header(&data[8..], data_len);
    }
}

fn check_split(pack: &[u8]) {
    match split(pack) {
        Ok((blobs, header)) => {
            let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize;
            assert_eq!(header.len(), hlen);
            assert_eq!(blobs.len() + header.len() + 4, pack.len());
            assert_eq!(blobs, &pack[..blobs.len()]);
            assert_eq!(header, &pack[blobs.len()..pack.len() - 4]);
            // What the reader does next: the header's plaintext is the sealed header opened;
            // decoding the sealed bytes as plaintext must still only ever fail cleanly.
            check_header(header, blobs.len() as u64);
        }
        Err(_) => {
            if pack.len() >= 4 {
                let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap());
                assert!(
                    hlen as usize > pack.len() - 4,
                    "split refused a well-formed pack"
                );
            }
        }
    }
}

fn check_header(plain: &[u8], data_len: u64) {
    let Ok(entries) = decode_header(plain, data_len) else {
        return;
    };
    // Blobs are laid end to end from offset 0 and cover exactly the pack's data.
    let mut offset = 0u64;
    for e in &entries {
        assert_eq!(e.offset as u64, offset, "offset of {e:?}");
        assert_eq!(e.base.is_some(), e.kind == BlobKind::Delta);
        offset += e.stored_len as u64;
    }
    assert_eq!(offset, data_len);
    // Decoding accepts exactly the bytes the encoder writes.
    assert_eq!(encode_header(&entries), plain);
}
