//! The pg_dump archive row counter: never panics, and its result does not depend on how the
//! stream is split into pieces.
//!
//! Input: `piece size - 1 (u8) || archive bytes`.
//!
//! Shared by the fuzz target `fuzz_targets/pg_archive.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::postgres::archive::RowCounter;

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let mut whole = RowCounter::new();
    whole.update(stream);
    let mut pieces = RowCounter::new();
    for p in stream.chunks(step as usize + 1) {
        pieces.update(p);
    }
    assert_eq!(whole.finish(), pieces.finish());
}
