//! Keys and sealing.
//!
//! A repository has one random [`MasterKey`]: `encrypt` seals every stored object with
//! XChaCha20-Poly1305 (random 24-byte nonces, so no nonce bookkeeping is ever needed) and `id_key`
//! keys the BLAKE3 hash that names blobs, so blob IDs do not reveal whether a known plaintext is
//! stored. Passwords never touch data: each key file seals the master key under a key derived from
//! one password with Argon2id ([`KdfParams`]).
//!
//! Sealed layout: `nonce (24) || ciphertext || tag (16)`. The associated data binds each sealed
//! object to what it is (see [`aad`]), so a sealed index cannot be passed off as a snapshot and a
//! blob cannot be swapped for another one.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::Id;

/// Bytes a sealed object adds to its plaintext: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// XChaCha20 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// Associated-data labels: one per kind of sealed object.
pub mod aad {
    pub const CONFIG: &[u8] = b"sbk:config";
    pub const MASTER_KEY: &[u8] = b"sbk:master-key";
    pub const INDEX: &[u8] = b"sbk:index";
    pub const SNAPSHOT: &[u8] = b"sbk:snapshot";
    pub const PACK_HEADER: &[u8] = b"sbk:pack-header";
    pub const AUDIT: &[u8] = b"sbk:audit";
    /// WAL files use `WAL || WAL file name` (`docs/pitr.md`).
    pub const WAL: &[u8] = b"sbk:wal";
    /// Blobs use `BLOB || kind byte || blob id [|| base id]` (see [`super::blob_aad`]).
    pub const BLOB: &[u8] = b"sbk:blob";
}

/// Associated data for a blob: its label, kind and ID, and for a delta blob its base's ID, so a
/// blob can be neither swapped, relabelled nor pointed at another base.
pub fn blob_aad(kind: u8, id: &Id, base: Option<&Id>) -> Vec<u8> {
    let mut out = Vec::with_capacity(73);
    out.extend_from_slice(aad::BLOB);
    out.push(kind);
    out.extend_from_slice(&id.0);
    if let Some(b) = base {
        out.extend_from_slice(&b.0);
    }
    out
}

/// The repository's secret keys.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    /// XChaCha20-Poly1305 key for everything stored.
    #[serde(with = "b64_32")]
    pub encrypt: [u8; 32],
    /// BLAKE3 key for blob IDs.
    #[serde(with = "b64_32")]
    pub id_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("too short to be sealed ({0} bytes)")]
    TooShort(usize),
    #[error("authentication failed (wrong key, or the bytes were changed)")]
    Unauthentic,
}

impl MasterKey {
    /// A fresh random master key.
    pub fn random() -> Self {
        let mut k = MasterKey {
            encrypt: [0; 32],
            id_key: [0; 32],
        };
        getrandom(&mut k.encrypt);
        getrandom(&mut k.id_key);
        k
    }

    /// The ID of a blob with this plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// A streaming keyed hasher, for whole-file hashes.
    pub fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    /// Seals `plaintext` with a random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        seal_with_nonce(&self.encrypt, nonce.into(), aad, plaintext)
    }

    /// Opens a sealed object.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with_key(&self.encrypt, aad, sealed)
    }
}

/// Seals with an explicit key and nonce; [`MasterKey::seal`] is the normal entry point.
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
        .expect("XChaCha20-Poly1305 accepts any length sbk produces");
    out.extend_from_slice(&tag);
    out
}

/// Seals in place: `buf` starts with [`NONCE_LEN`] bytes of room for the nonce, followed by the
/// plaintext; afterwards it holds `nonce || ciphertext || tag`. Saves a copy of every blob.
pub fn seal_in_place(key: &[u8; 32], aad: &[u8], buf: &mut Vec<u8>) {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    buf[..NONCE_LEN].copy_from_slice(&nonce);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, aad, &mut buf[NONCE_LEN..])
        .expect("XChaCha20-Poly1305 accepts any length sbk produces");
    buf.extend_from_slice(&tag);
}

/// Opens `nonce || ciphertext || tag` with an explicit key.
pub fn open_with_key(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError::TooShort(sealed.len()));
    }
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = ct.to_vec();
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut buf,
            Tag::from_slice(tag),
        )
        .map_err(|_| OpenError::Unauthentic)?;
    Ok(buf)
}

/// Default Argon2id memory, KiB.
pub const DEFAULT_M_COST_KIB: u32 = 32 * 1024;
/// Default Argon2id passes.
pub const DEFAULT_T_COST: u32 = 3;

/// Largest Argon2id memory a key file may ask for (1 GiB), in KiB: key files are stored in
/// clear, and a planted one must not exhaust a small backup host's memory.
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
/// Most Argon2id passes a key file may ask for.
pub const MAX_T_COST: u32 = 16;
/// Most memory × passes a key file may ask for (KiB × passes: 1 GiB × 4, 256 MiB × 16), so
/// that a planted key file stalls an unlock by seconds, not minutes.
pub const MAX_COST_PRODUCT: u64 = 4 * 1024 * 1024;
/// Most salt bytes a key file may carry.
pub const MAX_SALT_LEN: usize = 64;

/// Argon2id parameters stored in a key file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version (19 = 0x13).
    pub version: u32,
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Random salt, base64.
    #[serde(with = "b64_vec")]
    pub salt: Vec<u8>,
}

impl KdfParams {
    /// Default cost: 32 MiB, 3 passes, 1 lane: above OWASP's minimums (46 MiB x 1 pass, or
    /// 19 MiB x 2, rated equal), while keeping a run's peak memory small on a backup host.
    pub fn new_random() -> Self {
        Self::with_cost(DEFAULT_M_COST_KIB, DEFAULT_T_COST, 1)
    }

    /// Explicit cost with a fresh 16-byte salt.
    pub fn with_cost(m_cost: u32, t_cost: u32, p_cost: u32) -> Self {
        let mut salt = vec![0u8; 16];
        getrandom(&mut salt);
        KdfParams {
            algorithm: "argon2id".into(),
            version: 0x13,
            m_cost,
            t_cost,
            p_cost,
            salt,
        }
    }

    /// Derives the 32-byte key that seals the master key.
    pub fn derive(&self, password: &[u8]) -> Result<[u8; 32], String> {
        if self.algorithm != "argon2id" || self.version != 0x13 {
            return Err(format!(
                "unsupported KDF {} v{}",
                self.algorithm, self.version
            ));
        }
        // Key files are stored in clear: refuse costs that would exhaust memory or time.
        if self.m_cost > MAX_M_COST_KIB
            || self.t_cost > MAX_T_COST
            || self.m_cost as u64 * self.t_cost as u64 > MAX_COST_PRODUCT
            || !(1..=16).contains(&self.p_cost)
            || self.salt.len() > MAX_SALT_LEN
        {
            return Err(format!(
                "Argon2id cost out of range (m={} KiB, t={}, p={}, salt {} bytes; at most \
                 1 GiB, 16 passes, 4 GiB x passes, 16 lanes, 64 bytes)",
                self.m_cost,
                self.t_cost,
                self.p_cost,
                self.salt.len()
            ));
        }
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, &self.salt, &mut out)
            .map_err(|e| format!("Argon2id failed: {e}"))?;
        Ok(out)
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn getrandom(buf: &mut [u8]) {
    use chacha20poly1305::aead::rand_core::RngCore;
    OsRng.fill_bytes(buf);
}

mod b64_32 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// Serde helper: `Vec<u8>` as standard base64.
pub mod b64_vec {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_kdf_costs_are_refused_before_any_work() {
        let with = |m_cost, t_cost, p_cost, salt_len| KdfParams {
            algorithm: "argon2id".into(),
            version: 0x13,
            m_cost,
            t_cost,
            p_cost,
            salt: vec![1; salt_len],
        };
        for bad in [
            with(MAX_M_COST_KIB + 1, 1, 1, 16),
            with(1024, MAX_T_COST + 1, 1, 16),
            // Each within its own bound, too much together.
            with(MAX_M_COST_KIB, 5, 1, 16),
            with(1024, 1, 17, 16),
            with(1024, 1, 1, MAX_SALT_LEN + 1),
        ] {
            let e = bad.derive(b"pw").unwrap_err();
            assert!(e.contains("out of range"), "{e}");
        }
        assert!(with(1024, 1, 1, 16).derive(b"pw").is_ok());
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = MasterKey::random();
        let s = k.seal(aad::INDEX, b"hello");
        assert_eq!(s.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(k.open(aad::INDEX, &s).unwrap(), b"hello");
        assert_eq!(k.open(aad::SNAPSHOT, &s), Err(OpenError::Unauthentic));
        let mut t = s.clone();
        t[30] ^= 1;
        assert_eq!(k.open(aad::INDEX, &t), Err(OpenError::Unauthentic));
        assert_eq!(k.open(aad::INDEX, &s[..10]), Err(OpenError::TooShort(10)));
    }

    #[test]
    fn seal_in_place_matches_open() {
        let k = MasterKey::random();
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(b"in place");
        seal_in_place(&k.encrypt, aad::BLOB, &mut buf);
        assert_eq!(k.open(aad::BLOB, &buf).unwrap(), b"in place");
    }
}
