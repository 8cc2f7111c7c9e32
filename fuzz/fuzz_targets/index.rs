//! Index files: `IndexFile::decode` of a payload's plaintext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbk::format::index::IndexFile;
use sbk::format::BlobKind;

fuzz_target!(|data: &[u8]| {
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
});
