//! Crash safety and concurrency: a `kill -9` at any moment leaves every earlier snapshot
//! restorable, and snapshots running at the same time all succeed.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn kill_9_at_random_moments_leaves_earlier_snapshots_whole() {
    let repo = TestRepo::new();
    let base = dump_like(1, 8 * 1024 * 1024);
    let first = repo.snapshot("db.dump", &base);
    let first_id = first["id"].as_str().unwrap().to_string();
    // Moments spread over a run of ~64 MiB: before any pack, during packing, around the index.
    let mut seed = 0x5eed_u64;
    let mut saved = vec![(first_id.clone(), base.clone())];
    for round in 0..8u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_ms = 5 + (seed >> 33) % 700;
        let mut child = spawn(repo.cmd(&["--json", "snapshot", "stdin", "--name", "db.dump"]));
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = std::io::copy(&mut DumpLike::new(100 + round, 64 << 20), &mut stdin);
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        writer.join().unwrap();
        if status.success() {
            // It finished before the kill: that snapshot must be whole too.
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            saved.push((
                v["id"].as_str().unwrap().to_string(),
                dump_like_vec(100 + round, 64 << 20),
            ));
        }
        // Every snapshot listed restores exactly; killed runs left no snapshot.
        let listed = repo.snapshots();
        assert_eq!(
            listed.len(),
            saved.len(),
            "round {round} (killed after {delay_ms} ms)"
        );
        for (id, data) in &saved {
            assert!(
                repo.dump(id) == *data,
                "snapshot {id} damaged after kill in round {round}"
            );
        }
    }
    // The repository still takes new snapshots, which dedup against what was indexed.
    let again = repo.snapshot("db.dump", &base);
    assert_eq!(repo.dump(again["id"].as_str().unwrap()), base);
}

fn dump_like_vec(seed: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::new();
    DumpLike::new(seed, len).read_to_end(&mut v).unwrap();
    v
}

#[test]
fn concurrent_snapshots_into_one_repository_all_succeed() {
    let repo = TestRepo::new();
    // Overlapping inputs, so both runs may store the same blobs at the same time.
    let shared = dump_like(7, 12 << 20);
    let inputs: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            let mut v = shared.clone();
            v.extend(dump_like(20 + i as u64, 6 << 20));
            v
        })
        .collect();
    let children: Vec<_> = inputs
        .iter()
        .map(|data| {
            let mut child = spawn(repo.cmd(&["--json", "snapshot", "stdin", "--name", "db.dump"]));
            let mut stdin = child.stdin.take().unwrap();
            let data = data.clone();
            let t = std::thread::spawn(move || stdin.write_all(&data).unwrap());
            (child, t)
        })
        .collect();
    let mut ids = Vec::new();
    for (child, t) in children {
        t.join().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(repo.snapshots().len(), 3);
    for (id, data) in ids.iter().zip(&inputs) {
        assert!(repo.dump(id) == *data);
    }
}
