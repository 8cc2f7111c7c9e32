//! The fault matrix: `kill -9` at fixed steps of every command that writes (snapshot, forget,
//! prune, key remove, repair), a damaged byte, a truncation and a deletion in every kind of
//! file, and rounds of commands running at once. After each: no panic, no wrong byte, every
//! earlier snapshot restores exactly, `check --read-data` passes (once the damage is repaired),
//! and the interrupted command completes when run again.
//!
//! The kills happen at named crash points (`SBK_TEST_CRASH_AT`, see `sbk::cleanup::
//! crash_point`): the process sends itself SIGKILL there, which is what `kill -9` from outside
//! does, at a chosen step. `SBK_FAULTS_LONG=1` runs more concurrency rounds.

mod common;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;

/// A repository with three tagged snapshots of drifting data, and the data by tag.
struct Fixture {
    repo: TestRepo,
    data: HashMap<String, Vec<u8>>,
}

impl Fixture {
    fn new() -> Self {
        let repo = TestRepo::new();
        let mut data = HashMap::new();
        let base = dump_like(11, 3 << 20);
        for (i, tag) in ["a", "b", "c"].iter().enumerate() {
            let d = drift(&base, i as u64 * 3);
            let out = repo.run_with_input(
                &["snapshot", "stdin", "--name", "db.dump", "--tag", tag],
                &d,
            );
            assert!(out.status.success(), "{}", stderr(&out));
            data.insert(tag.to_string(), d);
        }
        Fixture { repo, data }
    }

    fn id_of(&self, tag: &str) -> String {
        self.repo
            .snapshots()
            .iter()
            .find(|s| s["tags"][0] == tag)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no snapshot tagged {tag}"))
    }

    /// Every listed snapshot restores to exactly its data; returns how many there are.
    fn assert_all_whole(&self, context: &str) -> usize {
        let snaps = self.repo.snapshots();
        for s in &snaps {
            let tag = s["tags"][0].as_str().unwrap();
            let id = s["id"].as_str().unwrap();
            let want = &self.data[tag];
            let out = self.repo.run(&["dump", id]);
            assert!(
                out.status.success(),
                "{context}: dump {tag}: {}",
                stderr(&out)
            );
            assert!(
                out.stdout == *want,
                "{context}: snapshot {tag} restores wrong bytes"
            );
        }
        snaps.len()
    }

    fn assert_check(&self, context: &str) {
        let out = self.repo.run(&["check", "--read-data"]);
        assert!(out.status.success(), "{context}: check: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
    }

    /// Runs `args` (with `input` on stdin) crashing at `point`: it must die by SIGKILL.
    fn crash(&self, point: &str, args: &[&str], input: &[u8]) {
        let out = self
            .repo
            .cmd(args)
            .env("SBK_TEST_CRASH_AT", point)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                let _ = c.stdin.take().unwrap().write_all(input);
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: the crash point was not reached: {:?} {}",
            out.status,
            stderr(&out)
        );
    }

    fn run_ok(&self, args: &[&str], input: &[u8], context: &str) {
        let out = self.repo.run_with_input(args, input);
        assert!(
            out.status.success(),
            "{context}: {args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn kill_9_at_every_step_of_every_writing_command() {
    let snapshot_new = ["snapshot", "stdin", "--name", "db.dump", "--tag", "new"];
    for point in [
        "snapshot:packs-written",
        "snapshot:index-written",
        "snapshot:saved",
    ] {
        let mut f = Fixture::new();
        let new = drift(&f.data["c"], 7);
        f.crash(point, &snapshot_new, &new);
        f.data.insert("new".into(), new.clone());
        let n = f.assert_all_whole(point);
        assert_eq!(n, if point == "snapshot:saved" { 4 } else { 3 }, "{point}");
        f.assert_check(point);
        f.run_ok(&snapshot_new, &new, point);
        f.assert_all_whole(point);
        f.run_ok(&["prune", "--grace", "0s"], b"", point);
        f.run_ok(&["prune", "--grace", "0s"], b"", point);
        f.assert_all_whole(point);
        f.assert_check(point);
    }

    let f = Fixture::new();
    let (a, b) = (f.id_of("a"), f.id_of("b"));
    f.crash("forget:removing", &["forget", &a, &b], b"");
    f.assert_all_whole("forget");
    f.assert_check("forget");
    let left: Vec<String> = f
        .repo
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().into())
        .collect();
    let again: Vec<&str> = [&a, &b]
        .into_iter()
        .filter(|i| left.contains(i))
        .map(|s| s.as_str())
        .collect();
    let mut args = vec!["forget"];
    args.extend(again);
    if args.len() > 1 {
        f.run_ok(&args, b"", "forget again");
    }
    assert_eq!(f.assert_all_whole("forget"), 1);

    for point in ["prune:planned", "prune:deleting"] {
        let f = Fixture::new();
        let a = f.id_of("a");
        f.run_ok(&["forget", &a], b"", point);
        // A first prune marks the unused packs; the second deletes them (grace over).
        f.run_ok(
            &["prune", "--grace", "0s", "--max-unused", "0%"],
            b"",
            point,
        );
        f.crash(
            point,
            &["prune", "--grace", "0s", "--max-unused", "0%"],
            b"",
        );
        f.assert_all_whole(point);
        f.assert_check(point);
        f.run_ok(
            &["prune", "--grace", "0s", "--max-unused", "0%"],
            b"",
            point,
        );
        f.run_ok(
            &["prune", "--grace", "0s", "--max-unused", "0%"],
            b"",
            point,
        );
        assert_eq!(f.assert_all_whole(point), 2);
        f.assert_check(point);
    }

    // A prune frees the space of packs whose grace period is over before it writes any pack
    // (a nearly full disk's way out): killed as it starts repacking, they are already gone.
    let f = Fixture::new();
    let a = f.id_of("a");
    f.run_ok(&["forget", &a], b"", "prune frees first");
    f.run_ok(
        &["prune", "--grace", "0s", "--max-unused", "0%"],
        b"",
        "prune frees first",
    );
    let before: std::collections::HashSet<PathBuf> = f.repo.files("data").into_iter().collect();
    f.crash(
        "prune:repacking",
        &["prune", "--grace", "0s", "--max-unused", "0%"],
        b"",
    );
    let after: std::collections::HashSet<PathBuf> = f.repo.files("data").into_iter().collect();
    assert!(
        after.is_subset(&before),
        "a pack was written before the space was freed"
    );
    assert!(
        after.len() < before.len(),
        "nothing was freed before repacking"
    );
    f.assert_all_whole("prune frees first");
    f.assert_check("prune frees first");
    f.run_ok(
        &["prune", "--grace", "0s", "--max-unused", "0%"],
        b"",
        "prune frees first",
    );
    f.assert_check("prune frees first");

    let f = Fixture::new();
    let out = f
        .repo
        .cmd(&[
            "--json",
            "key",
            "add",
            "--kdf-memory-kib",
            "1024",
            "--kdf-iterations",
            "1",
        ])
        .env("SBK_NEW_PASSWORD", "second-password")
        .output()
        .unwrap();
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = second["id"].as_str().unwrap().to_string();
    f.crash("key-remove:deleted", &["key", "remove", &second], b"");
    f.assert_all_whole("key remove");
    let keys = f.repo.files("keys").len();
    assert_eq!(keys, 1, "the removed key is gone, the other stays");

    let f = Fixture::new();
    f.crash("repair-index:planned", &["repair", "index"], b"");
    f.assert_all_whole("repair index");
    f.assert_check("repair index");
    f.run_ok(&["repair", "index"], b"", "repair index");
    f.assert_check("repair index");

    // repair packs: a damaged pack that only snapshot `a` needs in part.
    let f = Fixture::new();
    let pack = largest(f.repo.files("data"));
    flip(&pack, 100);
    f.crash(
        "repair-packs:indexed",
        &["repair", "packs", "--forget-damaged"],
        b"",
    );
    f.run_ok(
        &["repair", "packs", "--forget-damaged"],
        b"",
        "repair packs",
    );
    // The damaged pack, no longer indexed, waits for prune (a `repair index` now would index
    // it again from its intact header, and `check` would name it again).
    f.assert_all_whole("repair packs");
    f.assert_check("repair packs");
    f.run_ok(&["prune", "--grace", "0s"], b"", "repair packs");
    f.run_ok(&["prune", "--grace", "0s"], b"", "repair packs");
    assert!(!pack.exists(), "prune left the damaged unindexed pack");
    f.assert_check("repair packs");
}

fn largest(files: Vec<PathBuf>) -> PathBuf {
    files
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// A damaged byte, a truncation or a deletion in each kind of file: every command either
/// gives the exact bytes or fails with one clear message; nothing panics; damage that sbk
/// passes over is passed over; `check` names it.
#[test]
fn damage_of_every_kind_never_gives_a_wrong_byte() {
    #[derive(Clone, Copy, Debug)]
    enum Damage {
        Flip,
        Truncate,
        Delete,
    }
    for folder in ["config", "keys", "index", "snapshots", "data"] {
        for damage in [Damage::Flip, Damage::Truncate, Damage::Delete] {
            let f = Fixture::new();
            let context = format!("{folder} {damage:?}");
            let target = if folder == "config" {
                f.repo.path.join("config")
            } else {
                largest(f.repo.files(folder))
            };
            match damage {
                Damage::Flip => flip(&target, 77),
                Damage::Truncate => {
                    let b = std::fs::read(&target).unwrap();
                    std::fs::write(&target, &b[..b.len() / 2]).unwrap();
                }
                Damage::Delete => std::fs::remove_file(&target).unwrap(),
            }
            for (tag, data) in &f.data {
                let list = f.repo.run(&["--json", "snapshots"]);
                let err = stderr(&list);
                assert!(!err.contains("panicked"), "{context}: {err}");
                if !list.status.success() {
                    continue;
                }
                let snaps: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
                let Some(s) = snaps.iter().find(|s| s["tags"][0] == tag.as_str()) else {
                    continue;
                };
                let out = f.repo.run(&["dump", s["id"].as_str().unwrap()]);
                let err = stderr(&out);
                assert!(!err.contains("panicked"), "{context}: {err}");
                if out.status.success() {
                    assert!(out.stdout == *data, "{context}: wrong bytes for {tag}");
                } else {
                    assert_eq!(
                        err.lines().filter(|l| l.starts_with("sbk: error")).count(),
                        1,
                        "{context}: {err}"
                    );
                }
            }
            // A new snapshot either succeeds (damage passed over) or fails clearly.
            let out = f
                .repo
                .run_with_input(&["snapshot", "stdin", "--name", "db.dump"], b"after damage");
            assert!(!stderr(&out).contains("panicked"), "{context}");
            let check = f.repo.run(&["check", "--read-data"]);
            assert!(!stderr(&check).contains("panicked"), "{context}");
            if !matches!((folder, damage), ("snapshots", Damage::Delete)) {
                assert!(!check.status.success(), "{context}: check passed");
            }
        }
    }
}

/// Snapshots, forget and prune at once, round after round: every snapshot that said it was
/// saved restores exactly, and the repository passes `check --read-data` at the end.
#[test]
fn concurrent_snapshots_forget_and_prune_rounds() {
    let rounds = if std::env::var_os("SBK_FAULTS_LONG").is_some() {
        12
    } else {
        3
    };
    let f = Fixture::new();
    let mut saved: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..rounds {
        let inputs: Vec<Vec<u8>> = (0..3)
            .map(|i| drift(&f.data["c"], 20 + round * 3 + i))
            .collect();
        let snaps: Vec<_> = inputs
            .iter()
            .map(|d| {
                let mut c = f
                    .repo
                    .cmd(&["--json", "snapshot", "stdin", "--name", "db.dump"]);
                c.stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let mut child = c.spawn().unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let d = d.clone();
                let w = std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = stdin.write_all(&d);
                });
                (child, w)
            })
            .collect();
        let forget = f
            .repo
            .cmd(&["forget", "--keep-last", "4"])
            .output()
            .unwrap();
        let prune = f.repo.cmd(&["prune", "--grace", "0s"]).output().unwrap();
        for out in [&forget, &prune] {
            assert!(
                !stderr(out).contains("panicked"),
                "round {round}: {}",
                stderr(out)
            );
        }
        for ((child, w), input) in snaps.into_iter().zip(inputs) {
            w.join().unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                !stderr(&out).contains("panicked"),
                "round {round}: {}",
                stderr(&out)
            );
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                saved.push((v["id"].as_str().unwrap().to_string(), input));
            }
        }
        let listed: Vec<String> = f
            .repo
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        for (id, data) in &saved {
            if listed.contains(id) {
                assert!(
                    f.repo.dump(id) == *data,
                    "round {round}: {id} restores wrong bytes"
                );
            }
        }
    }
    assert!(!saved.is_empty(), "no snapshot succeeded");
    f.run_ok(&["prune", "--grace", "0s"], b"", "end");
    f.assert_check("end");
}
