//! 32-byte identifiers. Every stored object is named by one: blobs by a keyed BLAKE3 hash of their
//! plaintext, files by an unkeyed BLAKE3 hash of their stored bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte identifier, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub [u8; 32]);

/// Number of hex digits in a short ID.
pub const SHORT_ID_LEN: usize = 8;

impl Id {
    /// The unkeyed BLAKE3 hash of `data`: the name of a stored file.
    pub fn of_file_bytes(data: &[u8]) -> Self {
        Id(*blake3::hash(data).as_bytes())
    }

    /// The ID as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first [`SHORT_ID_LEN`] hex digits.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(SHORT_ID_LEN);
        s
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::from_hex(s).ok_or_else(|| format!("not a 64-digit hex ID: {s:?}"))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_file_bytes(b"abc");
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), SHORT_ID_LEN);
        assert!(Id::from_hex("zz").is_none());
    }
}
