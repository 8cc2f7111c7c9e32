//! Round trips through the real binary: every snapshot restores to its input's exact bytes.

mod common;

use std::io::{Read, Write};

use common::*;

const MIN: usize = 256 * 1024;
const AVG: usize = 1024 * 1024;
const MAX: usize = 4 * 1024 * 1024;

#[test]
fn sizes_around_chunk_limits_round_trip() {
    let repo = TestRepo::new();
    let sizes = [
        0,
        1,
        MIN - 1,
        MIN,
        MIN + 1,
        AVG,
        MAX - 1,
        MAX,
        MAX + 1,
        3 * MAX + 17,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let data = dump_like(i as u64, n);
        let snap = repo.snapshot("data.bin", &data);
        assert_eq!(u64_of(&snap, &["summary", "bytes_in"]), n as u64);
        let id = snap["short_id"].as_str().unwrap();
        assert_eq!(repo.dump(id), data, "dump of {n} bytes differs");
        let target = repo.dir.path().join(format!("restore-{i}"));
        let out = repo.run(&["restore", id, "--target", target.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read(target.join("data.bin")).unwrap(), data);
    }
}

#[test]
fn incompressible_data_round_trips() {
    let repo = TestRepo::new();
    let mut data = vec![0u8; 3 * MAX];
    let mut s = 0x1234_5678_9abc_def0u64;
    for b in data.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *b = (s >> 32) as u8;
    }
    let snap = repo.snapshot("random.bin", &data);
    assert_eq!(repo.dump(snap["id"].as_str().unwrap()), data);
}

#[test]
fn identical_second_snapshot_adds_almost_nothing() {
    let repo = TestRepo::new();
    let data = dump_like(7, 20 * AVG);
    let first = repo.snapshot("db.dump", &data);
    let second = repo.snapshot("db.dump", &data);
    assert!(u64_of(&first, &["summary", "bytes_added"]) > 1_000_000);
    // Only the tree blob is new (it records nothing that differs), so at most a few KiB.
    assert!(
        u64_of(&second, &["summary", "bytes_added"]) < 16 * 1024,
        "{second}"
    );
    assert_eq!(repo.dump(second["id"].as_str().unwrap()), data);
}

#[test]
fn insert_in_the_middle_adds_only_nearby_chunks() {
    let repo = TestRepo::new();
    let data = dump_like(11, 100 * 1024 * 1024);
    let first = repo.snapshot("db.dump", &data);
    let mut changed = data[..data.len() / 2].to_vec();
    changed.extend_from_slice(b"an inserted row\tthat shifts every later byte\n");
    changed.extend_from_slice(&data[data.len() / 2..]);
    let second = repo.snapshot("db.dump", &changed);
    let total = u64_of(&first, &["summary", "blobs_new"]);
    let new = u64_of(&second, &["summary", "blobs_new"]);
    let raw = u64_of(&second, &["summary", "bytes_added_raw"]);
    assert!(total > 50, "expected many chunks, got {total}");
    // The chunk holding the insert (and at most its neighbours) plus the tree.
    assert!(new <= 4, "{new} new blobs for one insert");
    assert!(
        raw <= 3 * MAX as u64,
        "{raw} raw bytes added for one insert"
    );
    assert_eq!(repo.dump(second["id"].as_str().unwrap()), changed);
}

/// 1 GiB streamed through `sbk snapshot stdin` and back through `sbk dump`, never held in
/// memory: the generator writes into the pipe and the check hashes what comes out. Peak RSS of
/// each child is read from `getrusage` and must stay far below the stream's size.
#[test]
fn one_gib_streams_with_flat_memory() {
    const LEN: u64 = 1 << 30;
    let repo = TestRepo::new();
    let mut child = spawn(repo.cmd(&["--json", "snapshot", "stdin", "--name", "big.dump"]));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::copy(&mut DumpLike::new(99, LEN), &mut stdin).unwrap();
    });
    let watcher = PeakRss::watch(child.id());
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let (ok, snapshot_rss) = wait_with_peak_rss(&mut child, watcher);
    writer.join().unwrap();
    assert!(ok, "{err}");
    let snap: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(u64_of(&snap, &["summary", "bytes_in"]), LEN);

    let mut dump = spawn(repo.cmd(&["dump", "latest"]));
    let watcher = PeakRss::watch(dump.id());
    let mut stdout = dump.stdout.take().unwrap();
    let mut expected = blake3::Hasher::new();
    std::io::copy(&mut DumpLike::new(99, LEN), &mut expected).unwrap();
    let mut got = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = stdout.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got.write_all(&buf[..k]).unwrap();
        n += k as u64;
    }
    let (ok, dump_rss) = wait_with_peak_rss(&mut dump, watcher);
    assert!(ok);
    assert_eq!(n, LEN);
    assert_eq!(got.finalize(), expected.finalize());
    eprintln!(
        "peak RSS: snapshot {} MiB, dump {} MiB",
        snapshot_rss >> 20,
        dump_rss >> 20
    );
    // Flat memory: far below the stream's size (the budget is in docs/architecture.md).
    assert!(
        snapshot_rss < 200 << 20,
        "snapshot peak RSS {} MiB",
        snapshot_rss >> 20
    );
    assert!(dump_rss < 200 << 20, "dump peak RSS {} MiB", dump_rss >> 20);
}

/// Waits for one child and returns (success, peak RSS in bytes). The peak is `VmHWM` from
/// `/proc`, polled while the child runs: unlike `getrusage`, it counts only the memory of the
/// executed program, not the copy of the (large) test process that exists before `exec`.
fn wait_with_peak_rss(child: &mut std::process::Child, watcher: PeakRss) -> (bool, u64) {
    let ok = child.wait().unwrap().success();
    (ok, watcher.stop())
}
