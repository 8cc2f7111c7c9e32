//! Sealed objects: `open_with_key` with a fixed key, and seal/open round trips.
//!
//! Input: `label selector (u8) || sealed bytes`. The selector picks the associated data.
//!
//! Shared by the fuzz target `fuzz_targets/sealed.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::crypto::{
    aad, open_with_key, seal_in_place, seal_with_nonce, OpenError, NONCE_LEN, SEAL_OVERHEAD,
};

/// The key the seeds in `seeds/sealed` were sealed with.
const KEY: [u8; 32] = [0x42; 32];
const LABELS: [&[u8]; 7] = [
    aad::CONFIG,
    aad::MASTER_KEY,
    aad::INDEX,
    aad::SNAPSHOT,
    aad::PACK_HEADER,
    aad::BLOB,
    b"",
];

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    let Some((&sel, sealed)) = data.split_first() else {
        return;
    };
    let label = LABELS[sel as usize % LABELS.len()];
    let other = LABELS[(sel as usize + 1) % LABELS.len()];

    match open_with_key(&KEY, label, sealed) {
        Ok(plain) => {
            // Only genuine objects open: sealing again with the same nonce gives the input.
            assert_eq!(plain.len() + SEAL_OVERHEAD, sealed.len());
            let nonce = sealed[..NONCE_LEN].try_into().unwrap();
            assert_eq!(seal_with_nonce(&KEY, nonce, label, &plain), sealed);
        }
        Err(OpenError::TooShort(n)) => {
            assert_eq!(n, sealed.len());
            assert!(n < SEAL_OVERHEAD);
        }
        Err(OpenError::Unauthentic) => assert!(sealed.len() >= SEAL_OVERHEAD),
    }

    // Seal the input as plaintext, open it back, and check that tampering is caught.
    let mut nonce = [0u8; NONCE_LEN];
    let n = sealed.len().min(NONCE_LEN);
    nonce[..n].copy_from_slice(&sealed[..n]);
    let ours = seal_with_nonce(&KEY, nonce, label, sealed);
    assert_eq!(ours.len(), sealed.len() + SEAL_OVERHEAD);
    assert_eq!(open_with_key(&KEY, label, &ours).as_deref(), Ok(sealed));
    assert_eq!(
        open_with_key(&KEY, other, &ours),
        Err(OpenError::Unauthentic)
    );
    let mut tampered = ours.clone();
    let i = (sel as usize).wrapping_mul(7919).wrapping_add(sealed.len()) % tampered.len();
    tampered[i] ^= 1 << (sel % 8);
    assert_eq!(
        open_with_key(&KEY, label, &tampered),
        Err(OpenError::Unauthentic)
    );
    assert!(open_with_key(&KEY, label, &ours[..ours.len() - 1]).is_err());

    // Sealing in place (random nonce) opens to the same plaintext.
    let mut buf = vec![0u8; NONCE_LEN];
    buf.extend_from_slice(sealed);
    seal_in_place(&KEY, label, &mut buf);
    assert_eq!(buf.len(), sealed.len() + SEAL_OVERHEAD);
    assert_eq!(open_with_key(&KEY, label, &buf).as_deref(), Ok(sealed));
}
