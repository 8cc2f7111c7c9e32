//! Key files: clear JSON holding Argon2id parameters and the master key sealed with the
//! password-derived key. Several may exist; each opens the same master key.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::crypto::KdfParams;

/// The role a key grants. Only `full` exists now; the field leaves room for a later write-only
/// role (a host that can add data but not read it back), which older readers will refuse.
pub const ROLE_FULL: &str = "full";

/// The key-file version written now: its clear fields are authenticated with the sealed key
/// (see [`KeyFile::aad`]). Version 1 files (fields not bound) are still read.
pub const KEY_VERSION: u32 = 2;

/// Largest key file read (a planted file must not exhaust memory).
pub const MAX_KEY_FILE_LEN: usize = 64 * 1024;

/// A key file as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyFile {
    /// Key-file format version (1).
    pub version: u32,
    /// What the key may do (`full`).
    pub role: String,
    /// When the key was added.
    pub created: DateTime<FixedOffset>,
    /// Host that added it.
    pub host: String,
    /// User that added it.
    pub username: String,
    /// How the password becomes a key.
    pub kdf: KdfParams,
    /// The master key JSON, sealed with the derived key (`nonce || ct || tag`, base64).
    #[serde(with = "crate::crypto::b64_vec")]
    pub master_key: Vec<u8>,
}

/// The clear fields of a key file, in the order they are bound.
#[derive(Serialize)]
struct BoundFields<'a> {
    version: u32,
    role: &'a str,
    created: &'a DateTime<FixedOffset>,
    host: &'a str,
    username: &'a str,
    kdf: &'a KdfParams,
}

impl KeyFile {
    /// The associated data the master key is sealed with: for version 2, `sbk:master-key`, a
    /// zero byte and the compact JSON of the clear fields (version, role, created, host,
    /// username, kdf, in that order), so that changing any of them makes the key fail to open;
    /// for version 1, the label alone.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = crate::crypto::aad::MASTER_KEY.to_vec();
        if self.version >= 2 {
            aad.push(0);
            let fields = BoundFields {
                version: self.version,
                role: &self.role,
                created: &self.created,
                host: &self.host,
                username: &self.username,
                kdf: &self.kdf,
            };
            aad.extend(serde_json::to_vec(&fields).expect("key fields serialize"));
        }
        aad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_round_trip(salt in proptest::collection::vec(any::<u8>(), 8..32),
                           sealed in proptest::collection::vec(any::<u8>(), 40..120),
                           m in 8u32..1_000_000, t in 1u32..10, host in ".{0,20}") {
            let kf = KeyFile {
                version: 1, role: ROLE_FULL.into(),
                created: chrono::DateTime::parse_from_rfc3339("2026-11-29T02:00:00+01:00").unwrap(),
                host, username: "postgres".into(),
                kdf: KdfParams { algorithm: "argon2id".into(), version: 0x13, m_cost: m, t_cost: t, p_cost: 1, salt },
                master_key: sealed,
            };
            let json = serde_json::to_vec(&kf).unwrap();
            prop_assert_eq!(serde_json::from_slice::<KeyFile>(&json).unwrap(), kf);
        }
    }
}
