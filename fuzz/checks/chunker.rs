//! The chunker: chunks concatenate to the input, respect the size bounds, and do not depend on
//! how the reader splits its reads.
//!
//! Input: `read size - 1 (u8) || stream`.
//!
//! Shared by the fuzz target `fuzz_targets/chunker.rs` and the seed test `tests/fuzz_seeds.rs`.
use std::io::{self, Read};

use sbk::chunker::{Chunker, ChunkerParams};

const MIN: usize = 64;
const MAX: usize = 1024;

/// A reader that returns at most `step` bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len()).min(self.step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let params = ChunkerParams {
        min_size: MIN as u32,
        avg_size: 256,
        max_size: MAX as u32,
        ..ChunkerParams::default_with_seed(0)
    };
    params.validate().unwrap();

    let chunks: Vec<Vec<u8>> = Chunker::new(stream, params).map(|c| c.unwrap()).collect();
    assert_eq!(chunks.concat(), stream);
    if let Some((last, rest)) = chunks.split_last() {
        for c in rest {
            assert!((MIN..=MAX).contains(&c.len()), "chunk of {} bytes", c.len());
        }
        assert!(
            (1..=MAX).contains(&last.len()),
            "last chunk of {} bytes",
            last.len()
        );
    }

    let trickled: Vec<Vec<u8>> = Chunker::new(
        Trickle {
            data: stream,
            step: step as usize + 1,
        },
        params,
    )
    .map(|c| c.unwrap())
    .collect();
    assert_eq!(
        trickled,
        chunks,
        "cuts depend on read sizes ({} per read)",
        step as usize + 1
    );
}
