//! The repository config's clear part: `config::split`.
//!
//! Shared by the fuzz target `fuzz_targets/config.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::format::config::{join, split, MAGIC};

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    match split(data) {
        Ok((version, sealed)) => {
            assert!(data.len() >= 12);
            assert_eq!(&data[..8], MAGIC);
            assert_eq!(version, u32::from_le_bytes(data[8..12].try_into().unwrap()));
            assert_eq!(sealed, &data[12..]);
            assert_eq!(join(version, sealed), data);
        }
        Err(_) => assert!(data.len() < 12 || &data[..8] != MAGIC),
    }
}
