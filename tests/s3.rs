//! The `sbk` binary against real S3 servers over HTTP (s3s-fs in the test process, and
//! SeaweedFS: one `weed server`, or a cluster whose volume servers a test stops; SigV4 on all).

mod common;

use std::time::Duration;

use sbk::backend::Backend;

use common::s3::S3Server;
use common::seaweed::{Seaweed, Stop};
use common::{drift, dump_like, stderr, TestRepo};

#[test]
fn every_verb_works_on_s3() {
    let server = S3Server::start();
    every_verb_works(TestRepo::on_s3(&server, "backups/pg/main"));
}

#[test]
fn every_verb_works_on_seaweedfs() {
    let server = Seaweed::start();
    every_verb_works(TestRepo::on_url(
        server.url("backups/pg/main"),
        server.env(),
    ));
}

fn every_verb_works(repo: TestRepo) {
    let first = dump_like(1, 6 << 20);
    let s1 = repo.snapshot("db.pgdump", &first);
    let id1 = s1["id"].as_str().unwrap().to_string();
    // A changed second version: stored as deltas against the first, bases from the cache.
    let mut second = first.clone();
    for i in (0..second.len()).step_by(40_000) {
        second[i] ^= 0x55;
    }
    let s2 = repo.snapshot("db.pgdump", &second);
    let id2 = s2["id"].as_str().unwrap().to_string();
    assert!(common::u64_of(&s2, &["summary", "blobs_delta"]) > 0, "{s2}");

    let listed = repo.snapshots();
    assert_eq!(listed.len(), 2);
    assert_eq!(repo.dump(&id1), first);
    assert_eq!(repo.dump(&id2), second);

    // Restore without the cache: every base comes from the bucket.
    let target = repo.dir.path().join("restored");
    let out = repo.run(&[
        "--no-cache",
        "restore",
        &id2,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(target.join("db.pgdump")).unwrap(), second);

    for args in [
        vec!["cat", "config"],
        vec!["cat", "snapshot", &id1],
        vec!["key", "list"],
    ] {
        let out = repo.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    // A second init on the same place is refused, and the first repository is intact.
    let out = repo.run(&["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already") || stderr(&out).contains("not empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(repo.dump(&id1), first);

    // The lifecycle verbs, through the same backend.
    for args in [
        vec!["check", "--read-data"],
        vec!["stats"],
        vec![
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "0%",
        ],
        vec!["prune", "--grace", "0s"],
        vec!["repair", "index"],
        vec!["check", "--read-data"],
    ] {
        let out = repo.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(repo.snapshots().len(), 1);
    assert_eq!(repo.dump(&id2), second);
}

#[test]
fn wrong_credentials_fail_at_once_naming_bucket_and_endpoint() {
    let server = S3Server::start();
    wrong_credentials_fail(TestRepo::on_s3(&server, "creds"), &server.secret_key);
}

#[test]
fn wrong_credentials_fail_at_once_on_seaweedfs() {
    let server = Seaweed::start();
    let repo = TestRepo::on_url(server.url("creds"), server.env());
    wrong_credentials_fail(repo, &server.admin.secret_key);
}

fn wrong_credentials_fail(mut repo: TestRepo, secret: &str) {
    let env = &mut repo.remote.as_mut().unwrap().1;
    for (k, v) in env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "wrong-secret-value".into();
        }
    }
    let clock = std::time::Instant::now();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("creds") && err.contains("127.0.0.1"), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!err.contains("wrong-secret-value"), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");
    // Permanent: no retrying for minutes.
    assert!(clock.elapsed().as_secs() < 30);
}

#[test]
fn unreachable_endpoint_gives_up_at_the_retry_deadline() {
    let mut server = S3Server::start();
    let repo = TestRepo::on_s3(&server, "down");
    server.stop();
    let clock = std::time::Instant::now();
    let out = repo.run(&["--retry-deadline", "2s", "snapshots"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.1") && err.contains("gave up"),
        "{err}"
    );
    assert!(clock.elapsed().as_secs() < 30);
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn outage_mid_snapshot_spools_and_sync_uploads_in_order() {
    use std::io::Write;
    use std::process::Stdio;
    let mut server = S3Server::start();
    let repo = TestRepo::on_s3(&server, "spooled/prefix");
    let (earlier, earlier_id) = snapshot_of(&repo, dump_like(3, 1 << 20));
    let packs_before = files_under(&server.root.path().join("spooled/prefix/data"));

    // 40 MiB of noise: more than two 16 MiB packs, so some are uploaded before the outage.
    let input = noise(11, 40 << 20);
    let mut child = repo
        .cmd(&[
            "--retry-deadline",
            "2s",
            "snapshot",
            "stdin",
            "--name",
            "db.pgdump",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input[..24 << 20]).unwrap();
    let clock = std::time::Instant::now();
    while files_under(&server.root.path().join("spooled/prefix/data")) == packs_before {
        assert!(clock.elapsed().as_secs() < 60, "no pack was uploaded");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.stop();
    stdin.write_all(&input[24 << 20..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("stored locally") && err.contains("sbk sync"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");

    server.restart();
    let out = repo.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("spooled"), "{table}");

    sync_and_check(&repo, (&earlier, &earlier_id), &input);
    let out = repo.run(&["sync"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to sync"));
}

#[test]
fn faults_on_a_fraction_of_requests_neither_fail_nor_corrupt() {
    let server = S3Server::start();
    let proxy = common::faulty::FaultyProxy::start(server.addr, 2);
    let mut env = server.env();
    env.push(("SBK_S3_TIMEOUT".into(), "2s".into()));
    env.push(("SBK_RETRY_DEADLINE".into(), "120s".into()));
    let repo = TestRepo::on_url(format!("s3:http://{}/faulty", proxy.addr), env);
    let first = noise(5, 20 << 20);
    let mut second = first.clone();
    for i in (0..second.len()).step_by(100_000) {
        second[i] = second[i].wrapping_add(1);
    }
    let mut ids = Vec::new();
    for data in [&first, &second] {
        let out = repo.run_with_input(
            &["--json", "snapshot", "stdin", "--name", "db.pgdump"],
            data,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    for (id, data) in ids.iter().zip([&first, &second]) {
        let out = repo.run(&["--no-cache", "dump", id]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            out.stdout == *data,
            "snapshot {id} restored different bytes"
        );
    }
    let c = &proxy.counts;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "faults: {} passed, {} x 503, {} x 500, {} resets, {} stalls, {} cuts",
        load(&c.passed),
        load(&c.status_503),
        load(&c.status_500),
        load(&c.resets),
        load(&c.stalls),
        load(&c.cuts)
    );
    for kind in [&c.status_503, &c.status_500, &c.resets, &c.stalls, &c.cuts] {
        assert!(
            load(kind) > 0,
            "every kind of fault must have been injected"
        );
    }
}

#[test]
fn snapshot_while_s3_is_down_from_the_start_is_spooled_then_synced() {
    let mut server = S3Server::start();
    let repo = TestRepo::on_s3(&server, "offline-start");
    // A first snapshot opens the repository, which keeps a copy of its config and keys.
    let (earlier, earlier_id) = snapshot_of(&repo, dump_like(4, 2 << 20));
    server.stop();

    let input = dump_like(9, 3 << 20);
    let out = repo.run_with_input(
        &[
            "--retry-deadline",
            "1s",
            "snapshot",
            "stdin",
            "--name",
            "db.pgdump",
        ],
        &input,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("unreachable when the snapshot started") && err.contains("sbk sync"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");
    // Other commands do not pretend: the repository is unreachable.
    let out = repo.run(&["--retry-deadline", "1s", "snapshots"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    server.restart();
    sync_and_check(&repo, (&earlier, &earlier_id), &input);
}

/// Takes a snapshot of `data`; returns the data and the snapshot's ID.
fn snapshot_of(repo: &TestRepo, data: Vec<u8>) -> (Vec<u8>, String) {
    let id = repo.snapshot("db.pgdump", &data)["id"]
        .as_str()
        .unwrap()
        .to_string();
    (data, id)
}

/// `sbk sync`, then: two snapshots, none spooled, the new one restoring to `input` from the
/// bucket alone (no cache), the earlier one intact.
fn sync_and_check(repo: &TestRepo, (earlier, earlier_id): (&[u8], &str), input: &[u8]) {
    let out = repo.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(
        snaps.iter().all(|s| s.get("spooled").is_none()),
        "{snaps:?}"
    );
    let id = snaps
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|id| id != earlier_id)
        .unwrap();
    let out = repo.run(&["--no-cache", "dump", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == input, "restored bytes differ");
    assert_eq!(repo.dump(earlier_id), earlier);
}

/// Snapshots pile up in the spool while S3 stays down (each later run spools too, since it
/// deduplicates against them); the first snapshot once S3 is back uploads them all before its
/// own, and everything restores and checks whole.
#[test]
fn spooled_snapshots_pile_up_then_the_next_online_snapshot_uploads_them() {
    let mut server = S3Server::start();
    let repo = TestRepo::on_s3(&server, "pile-up");
    let (first, first_id) = snapshot_of(&repo, dump_like(5, 2 << 20));
    server.stop();
    let offline = [
        "--retry-deadline",
        "1s",
        "snapshot",
        "stdin",
        "--name",
        "db.pgdump",
    ];
    let mut inputs = vec![first];
    for day in 1..=2 {
        let input = drift(&inputs[0], day);
        let out = repo.run_with_input(&offline, &input);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        if day == 2 {
            // The spool could not be emptied first: said once, and this run spooled too.
            assert!(err.contains("wait in the spool"), "{err}");
        }
        inputs.push(input);
    }
    server.restart();
    let last = drift(&inputs[0], 3);
    let out = repo.run_with_input(
        &["--json", "snapshot", "stdin", "--name", "db.pgdump"],
        &last,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("uploaded 2 snapshot(s)"),
        "{}",
        stderr(&out)
    );
    inputs.push(last);
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 4, "{snaps:?}");
    assert!(
        snaps.iter().all(|s| s.get("spooled").is_none()),
        "{snaps:?}"
    );
    let mut restored: Vec<Vec<u8>> = snaps
        .iter()
        .map(|s| repo.dump(s["id"].as_str().unwrap()))
        .collect();
    restored.sort();
    inputs.sort();
    assert!(restored == inputs, "a snapshot does not restore exactly");
    assert_eq!(repo.dump(&first_id), dump_like(5, 2 << 20));
    let out = repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Objects of `bucket` that a SeaweedFS gateway log (at `-v=2`) shows PUT more than once.
fn retried_puts(log: &str, bucket: &str) -> usize {
    let mut puts = std::collections::HashMap::new();
    let prefix = format!("PutObjectHandler bucket={bucket} object=");
    for line in log.lines() {
        if let Some(rest) = line.split_once(&prefix).map(|(_, r)| r) {
            let object = rest.split_whitespace().next().unwrap_or_default();
            *puts.entry(object.to_string()).or_insert(0) += 1;
        }
    }
    puts.values().filter(|&&n| n > 1).count()
}

/// A store spread over machines: a SeaweedFS master, two volume servers that hold every file
/// twice (replication `001`), a filer and an S3 gateway. One volume server dies in the middle of
/// a snapshot. SeaweedFS then takes no write at all (a file is stored on both servers or not at
/// all): the gateway holds each upload, retrying for 30 s before it answers 500. sbk abandons
/// the upload after `--s3-timeout` and sends it again; once the server is back, the gateway
/// finishes both attempts, and the later one's 412 counts as stored (same name, same bytes).
/// The snapshot completes without spooling. Then, with the *other* volume server stopped, every
/// file is read from its second copy: the restore is byte for byte; `check --read-data` passes
/// once both are back.
#[test]
fn a_volume_server_dying_mid_snapshot_on_a_seaweedfs_cluster() {
    use std::io::Write;
    let mut cluster = Seaweed::start_cluster();
    let mut env = cluster.env();
    // A request hanging on the refused write is abandoned and retried after 5 s; the deadline
    // only keeps a broken test from hanging (the volume server is back within seconds).
    env.push(("SBK_S3_TIMEOUT".into(), "5s".into()));
    env.push(("SBK_RETRY_DEADLINE".into(), "60s".into()));
    let repo = TestRepo::on_url(cluster.url("cluster/pg"), env);
    let bucket =
        sbk::backend::s3::S3Backend::open(&cluster.url("cluster/pg"), &cluster.options()).unwrap();
    let packs = || bucket.list(sbk::backend::FileType::Pack).unwrap().len();

    // 40 MiB of noise: packs of 16 MiB or more, so one is stored before the server dies and
    // the rest after.
    let input = noise(21, 40 << 20);
    let mut child =
        common::spawn(repo.cmd(&["--json", "snapshot", "stdin", "--name", "db.pgdump"]));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input[..24 << 20]).unwrap();
    common::wait_for("the first pack", Duration::from_secs(60), || packs() > 0);
    let gateway_log_before = cluster.log_of("s3").len();
    cluster.stop("volume2", Stop::Kill);
    // In a thread: sbk stops reading its input while its uploads are refused.
    let rest = input[24 << 20..].to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&rest));
    // A file needs both copies: SeaweedFS holds each upload (30 s) and then refuses it. Wait
    // until sbk has given up on one upload and sent it again, so that its retry is what
    // carries the snapshot over the gap, not the gateway's patience.
    common::wait_for("sbk to retry an upload", Duration::from_secs(60), || {
        retried_puts(&cluster.log_of("s3")[gateway_log_before..], "cluster") > 0
    });
    cluster.restart("volume2");
    feeder.join().unwrap().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(packs() >= 3, "{} packs", packs());

    cluster.stop("volume1", Stop::Kill);
    let out = repo.run(&["--no-cache", "dump", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == input, "restored bytes differ");

    cluster.restart("volume1");
    let out = repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
