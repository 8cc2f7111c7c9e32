//! The `sbk` binary against a real S3 server over HTTP (s3s-fs on loopback, SigV4 on).

mod common;

use common::s3::S3Server;
use common::{dump_like, stderr, TestRepo};

#[test]
fn every_verb_works_on_s3() {
    let server = S3Server::start();
    let repo = TestRepo::on_s3(&server, "backups/pg/main");

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
}

#[test]
fn wrong_credentials_fail_at_once_naming_bucket_and_endpoint() {
    let server = S3Server::start();
    let mut repo = TestRepo::on_s3(&server, "creds");
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
    assert!(!err.contains(&server.secret_key), "{err}");
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
