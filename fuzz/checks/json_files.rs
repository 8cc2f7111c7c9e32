//! The JSON structures a repository stores: key files, snapshots, trees and the config.
//!
//! Every input is tried as each of them. What parses must also serialize, and (but for
//! snapshots, whose `duration_secs` is a float) parse back to the same value.
//!
//! Shared by the fuzz target `fuzz_targets/json_files.rs` and the seed test `tests/fuzz_seeds.rs`.
use sbk::format::config::Config;
use sbk::format::key::KeyFile;
use sbk::format::snapshot::Snapshot;
use sbk::format::tree::Tree;

/// The fuzz target's body: panics (a failed assertion) on a defect.
pub fn check(data: &[u8]) {
    if let Ok(key) = serde_json::from_slice::<KeyFile>(data) {
        round_trip(&key);
    }
    if let Ok(snap) = serde_json::from_slice::<Snapshot>(data) {
        let json = serde_json::to_vec(&snap).unwrap();
        serde_json::from_slice::<Snapshot>(&json).unwrap();
    }
    if let Ok(tree) = serde_json::from_slice::<Tree>(data) {
        let valid = tree.validate();
        round_trip(&tree);
        if valid.is_ok() {
            for f in &tree.files {
                assert!(!f.name.is_empty() && !f.name.contains(['/', '\\', '\0']));
                assert!(tree.file(&f.name).is_some());
            }
        }
    }
    if let Ok(config) = serde_json::from_slice::<Config>(data) {
        let _ = config.chunker.validate();
        round_trip(&config);
    }
}

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(value).unwrap();
    let back: T = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)));
    assert_eq!(&back, value);
}
