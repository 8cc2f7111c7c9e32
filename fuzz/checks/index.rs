//! Index files: `IndexFile::decode` of a payload's plaintext.
//!
//! Shared by the fuzz target `fuzz_targets/index.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::format::index::IndexFile;
use sbk::format::BlobKind;

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    let Ok(index) = IndexFile::decode(data) else {
        return;
    };
    for pack in &index.packs {
        for b in &pack.blobs {
            assert_eq!(b.base.is_some(), b.kind == BlobKind::Delta);
        }
    }
    // The decoder takes no trailing bytes and reads every field, so encoding gives the input back.
    assert_eq!(index.encode(), data);
}
