//! The audit trail (`sbk audit`, checked by `check`) and the detection of snapshots and
//! records deleted behind sbk's back, on a local repository.

mod common;

use common::{dump_like, stderr, TestRepo};

/// Runs sbk with this test's own cache folder (where each client remembers what it saw).
fn run(repo: &TestRepo, args: &[&str]) -> std::process::Output {
    repo.cmd(args)
        .env("SBK_CACHE_DIR", repo.dir.path().join("cache"))
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_change_is_recorded_without_secrets() {
    let repo = TestRepo::new();
    let a = repo.snapshot("db.pgdump", &dump_like(1, 1 << 20))["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A connection string's password in the arguments never reaches the record.
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "x",
        "--",
        "echo",
        "postgresql://app:hunter2-secret@db/app",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo.run(&["forget", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo.run(&["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Reading verbs write nothing.
    repo.snapshots();
    let records = json(&repo.run(&["--json", "audit"]));
    let records = records.as_array().unwrap();
    let verbs: Vec<&str> = records
        .iter()
        .map(|r| r["verb"].as_str().unwrap())
        .collect();
    assert_eq!(
        verbs,
        [
            "init",
            "snapshot stdin",
            "snapshot command",
            "forget",
            "forget",
            "prune"
        ],
        "{records:?}"
    );
    let text = serde_json::to_string(records).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("postgresql://app:***@db/app"), "{text}");
    // The forget announced its removal before it removed anything, then recorded its end.
    assert_eq!(records[3]["outcome"], "removing");
    assert_eq!(records[3]["removed"]["snapshots"][0], a);
    assert_eq!(records[4]["outcome"], "ok");
    assert!(records[1]["added"]["packs"].as_array().unwrap().len() == 1);
    for r in records {
        assert!(!r["host"].as_str().unwrap().is_empty());
        assert!(!r["user"].as_str().unwrap().is_empty());
    }
    let recent = json(&repo.run(&["--json", "audit", "--since", "1h"]));
    assert_eq!(recent.as_array().unwrap().len(), records.len());

    // A damaged record is found by check (and listed as such by audit).
    let files = repo.files("audit");
    let path = repo.path.join(&files[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = repo.run(&["check"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("audit"), "{said}");
}

#[test]
fn snapshots_and_records_deleted_behind_sbks_back_are_reported() {
    let repo = TestRepo::new();
    let snap = |seed| {
        let out = repo
            .cmd(&["--json", "snapshot", "stdin", "--name", "db.pgdump"])
            .env("SBK_CACHE_DIR", repo.dir.path().join("cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(&dump_like(seed, 1 << 20))?;
                c.wait_with_output()
            })
            .unwrap();
        json(&out)["id"].as_str().unwrap().to_string()
    };
    let (_a, b, c) = (snap(1), snap(2), snap(3));
    let out = run(&repo, &["snapshots", "--strict"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // B's file is deleted by hand: every verb warns with its full ID; check, snapshots
    // --strict and prune's judgement stop.
    std::fs::remove_file(repo.path.join("snapshots").join(&b)).unwrap();
    let out = run(&repo, &["snapshots"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains(&b), "{}", stderr(&out));
    assert_eq!(
        run(&repo, &["snapshots", "--strict"]).status.code(),
        Some(1)
    );
    assert_eq!(run(&repo, &["check"]).status.code(), Some(1));
    let pruned = json(&run(&repo, &["--json", "prune"]));
    assert_eq!(pruned["vanished_snapshots"][0], b, "{pruned}");
    assert_eq!(pruned["packs_marked"], 0, "{pruned}");
    // A client that never saw B finds it too: the audit trail says it was added.
    let out = repo.run(&["--json", "prune"]);
    assert_eq!(json(&out)["vanished_snapshots"][0], b);

    // Accepting the loss: forget by full ID records it; all is quiet again.
    let out = run(&repo, &["forget", &b]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&repo, &["snapshots", "--strict"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pruned = json(&run(&repo, &["--json", "prune"]));
    assert!(pruned.get("vanished_snapshots").is_none(), "{pruned}");

    // C deleted with the record that added it: this client remembers both.
    let records = json(&repo.run(&["--json", "audit"]));
    let added_c = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["added"]["snapshots"][0] == c.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(repo.path.join("snapshots").join(&c)).unwrap();
    std::fs::remove_file(repo.path.join("audit").join(&added_c)).unwrap();
    let out = run(&repo, &["snapshots", "--strict"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&c) && err.contains(&added_c), "{err}");
}
