//! The repository config: `"sbk-repo" || format version (u32 LE) || sealed payload(JSON)`.
//! The version sits in clear so that a reader refuses a repository it does not understand
//! before asking for a password.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::{FormatError, Reader};
use crate::chunker::ChunkerParams;
use crate::id::Id;

/// Magic bytes at the start of `config`.
pub const MAGIC: &[u8; 8] = b"sbk-repo";
/// The one repository format version this sbk reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Compression settings recorded in the config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compression {
    /// Always `zstd`.
    pub algorithm: String,
    /// zstd level for blobs.
    pub level: i32,
}

/// A compression choice as users give it (`--compression`, a job's `compression`): `fast`,
/// `auto`, `max` or a zstd level. Only the level is recorded; readers need none of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionChoice {
    /// zstd's fastest regular mode (`--fast=1`): for hosts short of CPU.
    Fast,
    /// Level 1, the default: on real dumps both the smallest and the fastest of levels 1-3
    /// (`docs/measurements/compression-level.md`).
    Auto,
    /// The smallest that stays usable: see [`MAX_LEVEL`].
    Max,
    Level(i32),
}

/// `fast`'s zstd level.
pub const FAST_LEVEL: i32 = -1;
/// `auto`'s zstd level.
pub const AUTO_LEVEL: i32 = 1;
/// `max`'s zstd level (`docs/measurements/compression-level.md`: the level at which sbk stores
/// less than restic's `--compression max` on both inputs, and its cost).
pub const MAX_LEVEL: i32 = 12;
/// Levels accepted as numbers: zstd's fast levels down to -7, and its normal ones.
pub const LEVELS: std::ops::RangeInclusive<i32> = -7..=22;

impl CompressionChoice {
    pub fn level(self) -> i32 {
        match self {
            CompressionChoice::Fast => FAST_LEVEL,
            CompressionChoice::Auto => AUTO_LEVEL,
            CompressionChoice::Max => MAX_LEVEL,
            CompressionChoice::Level(l) => l,
        }
    }
}

impl std::str::FromStr for CompressionChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fast" => Ok(CompressionChoice::Fast),
            "auto" => Ok(CompressionChoice::Auto),
            "max" => Ok(CompressionChoice::Max),
            other => match other.parse::<i32>() {
                Ok(l) if LEVELS.contains(&l) && l != 0 => Ok(CompressionChoice::Level(l)),
                _ => Err(format!(
                    "{s:?}: give fast, auto, max or a zstd level from {} to {} (not 0)",
                    LEVELS.start(),
                    LEVELS.end()
                )),
            },
        }
    }
}

/// The decrypted repository config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Format version (same as the clear one).
    pub version: u32,
    /// Random repository ID.
    pub id: Id,
    /// When the repository was created.
    pub created: DateTime<FixedOffset>,
    /// Chunker parameters, including the per-repository gear seed.
    pub chunker: ChunkerParams,
    /// Blob compression.
    pub compression: Compression,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Object Lock on the bucket (`docs/object-lock.md`); absent for repositories without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::backend::lock::LockPolicy>,
}

/// Splits a config file into its clear version and the sealed part.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    let mut r = Reader::new(bytes);
    let magic = r.take(MAGIC.len())?;
    if magic != MAGIC {
        return Err(FormatError::Invalid(
            "not an sbk repository config (bad magic)".into(),
        ));
    }
    let version = r.u32()?;
    Ok((version, &bytes[MAGIC.len() + 4..]))
}

/// Joins the clear header and the sealed part.
pub fn join(version: u32, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(sealed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(version in any::<u32>(), sealed in proptest::collection::vec(any::<u8>(), 0..100),
                      seed in any::<u64>(), level in -5i32..20, id in any::<[u8; 32]>(),
                      lock in proptest::option::of((any::<bool>(), 1u32..3650))) {
            let b = join(version, &sealed);
            prop_assert_eq!(split(&b).unwrap(), (version, &sealed[..]));
            let cfg = Config {
                version, id: Id(id),
                created: chrono::DateTime::parse_from_rfc3339("2026-11-29T02:00:00+01:00").unwrap(),
                chunker: ChunkerParams::default_with_seed(seed),
                compression: Compression { algorithm: "zstd".into(), level },
                pack_size: 16 << 20,
                object_lock: lock.map(|(compliance, days)| crate::backend::lock::LockPolicy {
                    mode: if compliance { LockMode::Compliance } else { LockMode::Governance },
                    days,
                }),
            };
            let json = serde_json::to_vec(&cfg).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Config>(&json).unwrap(), cfg);
        }
    }

    use crate::backend::lock::{LockMode, LockPolicy};

    /// The `object_lock` member as `docs/format.md` shows it; a config without it (every
    /// repository made before Object Lock) has none, and one without a lock writes none.
    #[test]
    fn object_lock_member() {
        let json = r#"{"version":1,"id":"0000000000000000000000000000000000000000000000000000000000000000",
            "created":"2026-11-29T05:33:41.123+00:00",
            "chunker":{"algorithm":"fastcdc-2020","min_size":262144,"avg_size":1048576,
                       "max_size":4194304,"normalization":1,"seed":1234567890},
            "compression":{"algorithm":"zstd","level":1},"pack_size":16777216"#;
        let locked: Config = serde_json::from_str(&format!(
            r#"{json},"object_lock":{{"mode":"compliance","days":30}}}}"#
        ))
        .unwrap();
        assert_eq!(
            locked.object_lock,
            Some(LockPolicy {
                mode: LockMode::Compliance,
                days: 30
            })
        );
        let plain: Config = serde_json::from_str(&format!("{json}}}")).unwrap();
        assert_eq!(plain.object_lock, None);
        assert!(!String::from_utf8(serde_json::to_vec(&plain).unwrap())
            .unwrap()
            .contains("object_lock"));
    }

    #[test]
    fn split_join() {
        let b = join(7, b"xyz");
        assert_eq!(split(&b).unwrap(), (7, &b"xyz"[..]));
        assert!(split(b"sbk-re").is_err());
        assert!(split(b"nope-repo\x01\0\0\0").is_err());
    }
}
