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
        let err = stderr(&repo.run(&["dump", "latest"]));
        assert!(
            err.contains("sbk: hint:") && err.contains("repair packs"),
            "{err}"
        );
    }
}

/// Runs a command that must succeed on a damaged repository and warn once about `file`, naming
/// the command that repairs it.
fn assert_goes_on(repo: &TestRepo, args: &[&str], file: &str, remedy: &str) -> Vec<u8> {
    assert_goes_on_with(repo, args, b"", file, remedy)
}

fn assert_goes_on_with(
    repo: &TestRepo,
    args: &[&str],
    input: &[u8],
    file: &str,
    remedy: &str,
) -> Vec<u8> {
    let out = repo.run_with_input(args, input);
    let err = stderr(&out);
    assert!(out.status.success(), "{args:?} stopped on damage: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains(file)).collect();
    assert_eq!(warnings.len(), 1, "{args:?}: {err}");
    assert!(
        warnings[0].starts_with("sbk: warning:") && warnings[0].contains(remedy),
        "{args:?}: {err}"
    );
    out.stdout
}

/// One damaged index file (flipped or truncated) stops neither restores nor new snapshots: the
/// packs' headers stand in for it; `check` names it and `repair index` fixes it for good.
#[test]
fn damaged_index_is_named_and_passed_over() {
    for damage in [flip as fn(&Path, usize), truncate] {
        let (repo, data) = repo_with_snapshot();
        let index = only(repo.files("index"));
        damage(&index, 40);
        let got = assert_goes_on(&repo, &["dump", "latest"], &name_of(&index), "repair index");
        assert!(got == data, "wrong bytes through a damaged index");
        // A new snapshot deduplicates against the packs the damaged file named.
        let packs = repo.files("data").len();
        let more = [data.clone(), dump_like(6, 1 << 20)].concat();
        assert_goes_on_with(
            &repo,
            &["snapshot", "stdin", "--name", "db.dump"],
            &more,
            &name_of(&index),
            "repair index",
        );
        assert!(
            repo.files("data").len() <= packs + 1,
            "the known chunks were stored again"
        );
        assert_goes_on(&repo, &["prune"], &name_of(&index), "repair index");
        // check fails, names the file and the way out.
        let out = repo.run(&["--json", "check"]);
        assert!(!out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.to_string().contains(&name_of(&index)), "{v:#}");
        assert!(v["notes"].to_string().contains("repair index"), "{v:#}");
        assert!(!v["notes"].to_string().contains("lost their base"), "{v:#}");
        assert!(
            v["damaged_snapshots"].as_array().unwrap().is_empty(),
            "{v:#}"
        );
        let out = repo.run(&["repair", "index"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = repo.run(&["check", "--read-data"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let snaps = repo.snapshots();
        let ids: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert!(repo.dump(ids[0]) == data && repo.dump(ids[1]) == more);
        let out = repo.run(&["dump", "latest"]);
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    }
}

/// One damaged snapshot file stops nothing else: it is listed as damaged and passed over by
/// `snapshots`, `dump latest`, new snapshots and `forget`'s policy; `prune` keeps everything
/// while it exists; `forget ID` removes it.
#[test]
fn damaged_snapshot_is_named_and_passed_over() {
    let (repo, first) = repo_with_snapshot();
    let snap = only(repo.files("snapshots"));
    let second = drift(&first, 1);
    repo.snapshot("db.dump", &second);
    flip(&snap, 50);
    let bad = name_of(&snap);
    let listed = assert_goes_on(&repo, &["--json", "snapshots"], &bad, "sbk forget");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed.len(), 1);
    let good = listed[0]["id"].as_str().unwrap().to_string();
    assert!(assert_goes_on(&repo, &["dump", "latest"], &bad, "sbk forget") == second);
    assert_goes_on_with(
        &repo,
        &["snapshot", "stdin", "--name", "db.dump"],
        &drift(&first, 2),
        &bad,
        "sbk forget",
    );
    assert_goes_on(
        &repo,
        &["forget", "--keep-last", "1", "--dry-run"],
        &bad,
        "sbk forget",
    );
    let out = assert_goes_on(&repo, &["--json", "prune"], &bad, "sbk forget");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["held_for_damage"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["packs_marked"], 0, "{v:#}");
    // Its way out.
    let out = repo.run(&["forget", &bad[..8]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!snap.exists());
    let out = repo.run(&["--json", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let out = repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(repo.dump(&good) == second);
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

/// `latest` and the parent search take snapshots from the snapshot list cache instead of reading
/// every snapshot file: a file damaged after it was cached is not read by them. The next listing
/// of every file (`snapshots`) says so and drops it from the cache, after which they read it
/// again and say so too. A damaged cache is ignored.
#[test]
fn latest_reads_the_list_cache_not_every_snapshot_file() {
    let (repo, first) = repo_with_snapshot();
    let old = only(repo.files("snapshots"));
    let xdg = tempfile::tempdir().unwrap();
    let input = xdg.path().join("second");
    let second = drift(&first, 1);
    std::fs::write(&input, &second).unwrap();
    let run = |args: &[&str]| {
        let out = repo
            .cmd(args)
            .env("XDG_CACHE_HOME", xdg.path())
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    run(&["snapshots"]);
    run(&["snapshot", "stdin", "--name", "db.dump"]);
    flip(&old, 50);
    let bad = name_of(&old);
    let out = run(&["dump", "latest"]);
    assert!(out.stdout == second, "latest is the new snapshot");
    assert!(!stderr(&out).contains(&bad), "{}", stderr(&out));
    let out = run(&["snapshots"]);
    assert!(stderr(&out).contains(&bad), "{}", stderr(&out));
    let out = run(&["dump", "latest"]);
    assert!(out.stdout == second);
    assert!(stderr(&out).contains(&bad), "read again: {}", stderr(&out));
    let cache = walkdir(xdg.path())
        .into_iter()
        .find(|p| p.ends_with("snapshots.list"))
        .expect("a list cache");
    flip(&cache, 60);
    let out = run(&["dump", "latest"]);
    assert!(out.stdout == second, "a damaged cache is ignored");
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
