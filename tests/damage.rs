//! Damage: a flipped byte or a truncation in any kind of stored file is found and reported with
//! one clear message naming the file; sbk never panics and never writes unverified bytes.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

fn truncate(path: &Path, keep: usize) {
    let b = std::fs::read(path).unwrap();
    std::fs::write(path, &b[..keep.min(b.len())]).unwrap();
}

/// A repository with one snapshot of a few chunks; returns it and the data.
fn repo_with_snapshot() -> (TestRepo, Vec<u8>) {
    let repo = TestRepo::new();
    let data = dump_like(5, 6 * 1024 * 1024);
    repo.snapshot("db.dump", &data);
    (repo, data)
}

fn assert_clean_failure(repo: &TestRepo, args: &[&str], must_mention: &str) {
    let out = repo.run(args);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{args:?} succeeded on a damaged repository"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim_end()
            .lines()
            .filter(|l| l.starts_with("sbk: error"))
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(must_mention),
        "expected {must_mention:?} in {err:?}"
    );
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn only(files: Vec<PathBuf>) -> PathBuf {
    assert!(!files.is_empty());
    files
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn damaged_pack_is_detected_and_named() {
    for damage in [flip as fn(&Path, usize), truncate] {
        let (repo, _) = repo_with_snapshot();
        let pack = only(repo.files("data"));
        damage(&pack, 1000);
        let target = repo.dir.path().join("out");
        assert_clean_failure(
            &repo,
            &["restore", "latest", "--target", target.to_str().unwrap()],
            &name_of(&pack),
        );
        // Nothing unverified was written under the file's name.
        assert!(!target.join("db.dump").exists());
        assert_clean_failure(&repo, &["dump", "latest"], &name_of(&pack));
    }
}

#[test]
fn damaged_index_is_detected_and_named() {
    let (repo, _) = repo_with_snapshot();
    let index = only(repo.files("index"));
    flip(&index, 40);
    assert_clean_failure(&repo, &["dump", "latest"], &name_of(&index));
    let (repo, _) = repo_with_snapshot();
    let index = only(repo.files("index"));
    truncate(&index, 30);
    assert_clean_failure(&repo, &["dump", "latest"], &name_of(&index));
}

#[test]
fn damaged_snapshot_is_detected_and_named() {
    let (repo, _) = repo_with_snapshot();
    let snap = only(repo.files("snapshots"));
    flip(&snap, 50);
    assert_clean_failure(&repo, &["snapshots"], &name_of(&snap));
    assert_clean_failure(&repo, &["dump", "latest"], &name_of(&snap));
}

#[test]
fn damaged_config_is_detected() {
    for at in [3, 12, 60] {
        let (repo, _) = repo_with_snapshot();
        flip(&repo.path.join("config"), at);
        assert_clean_failure(&repo, &["snapshots"], "config");
    }
    let (repo, _) = repo_with_snapshot();
    truncate(&repo.path.join("config"), 20);
    assert_clean_failure(&repo, &["snapshots"], "config");
}

#[test]
fn damaged_key_is_detected_and_named() {
    let (repo, _) = repo_with_snapshot();
    let key = only(repo.files("keys"));
    flip(&key, 200);
    assert_clean_failure(&repo, &["snapshots"], &name_of(&key));
}

#[test]
fn unknown_format_version_is_refused_before_the_password() {
    let (repo, _) = repo_with_snapshot();
    let cfg = repo.path.join("config");
    let mut b = std::fs::read(&cfg).unwrap();
    b[8] = 2; // version u32 LE after the 8-byte magic
    std::fs::write(&cfg, b).unwrap();
    let out = repo
        .cmd(&["snapshots"])
        .env("SBK_PASSWORD", "anything")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("format version 2 is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn swapped_blobs_are_detected() {
    // Replace a pack by another valid pack of the same repository: names no longer match.
    let repo = TestRepo::new();
    repo.snapshot("a", &dump_like(1, 2_000_000));
    repo.snapshot("b", &dump_like(2, 2_000_000));
    let packs = repo.files("data");
    assert_eq!(packs.len(), 2);
    let other = std::fs::read(&packs[1]).unwrap();
    std::fs::write(&packs[0], other).unwrap();
    // Exactly the snapshot whose blobs lived in the overwritten pack fails; the other is whole.
    let failures = repo
        .snapshots()
        .iter()
        .filter(|s| {
            !repo
                .run(&["dump", s["id"].as_str().unwrap()])
                .status
                .success()
        })
        .count();
    assert_eq!(failures, 1);
}
