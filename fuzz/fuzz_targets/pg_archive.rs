//! The pg_dump archive row counter: never panics, and its result does not depend on how the
//! stream is split into pieces.
//!
//! Input: `piece size - 1 (u8) || archive bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbk::postgres::archive::RowCounter;

fuzz_target!(|data: &[u8]| {
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
});
