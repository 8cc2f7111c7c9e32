//! Repositories an attacker cannot destroy (`docs/object-lock.md`), on SeaweedFS: Object Lock
//! on every file, backup hosts that cannot delete, the audit trail, purging only what sbk
//! removed, and `repair versions` after everything was "deleted".

mod common;

use std::time::Duration;

use chrono::Utc;
use common::seaweed::{Identity, Seaweed};
use common::{dump_like, stderr, TestRepo};
use sbk::backend::lock::{LockMode, LockPolicy};
use sbk::backend::s3::S3Backend;
use sbk::backend::{Backend, FileType};

/// A repository made on `server` at `url` by the admin (the maintenance host).
fn locked_repo(server: &Seaweed, url: &str, mode: &str) -> (TestRepo, serde_json::Value) {
    let mut r = TestRepo::uninit();
    r.remote = Some((url.to_string(), server.env()));
    let out = r.run(&[
        "--json",
        "init",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
        "--object-lock",
        mode,
        "--lock-days",
        "1",
    ]);
    assert!(out.status.success(), "init: {}", stderr(&out));
    let v = serde_json::from_slice(&out.stdout).unwrap();
    (r, v)
}

/// Runs sbk on `repo` as `who`.
fn run_as(
    repo: &TestRepo,
    server: &Seaweed,
    who: &Identity,
    args: &[&str],
    input: Option<&[u8]>,
) -> std::process::Output {
    let mut c = repo.cmd(args);
    c.envs(server.env_of(who));
    match input {
        None => c.output().unwrap(),
        Some(data) => {
            use std::io::Write;
            let mut child = c
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(data).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Shortens a governance lock with the bypass permission (the admin's), so that a test does
/// not wait a day for it to pass.
fn shorten_lock(server: &Seaweed, bucket: &str, key: &str, version: &str, secs: i64) {
    use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let creds = aws_sdk_s3::config::Credentials::new(
            &server.admin.access_key,
            &server.admin.secret_key,
            None,
            None,
            "test",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", server.s3))
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let until = aws_sdk_s3::primitives::DateTime::from_secs(Utc::now().timestamp() + secs);
        client
            .put_object_retention()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .bypass_governance_retention(true)
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::Governance)
                    .retain_until_date(until)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("shorten the lock of {key}: {e:?}"));
    });
}

/// Waits past the current second: versions carry whole-second times.
fn next_second() -> chrono::DateTime<Utc> {
    std::thread::sleep(Duration::from_millis(1100));
    let t = Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    t
}

#[test]
fn a_locked_repository_survives_its_hosts() {
    let server = Seaweed::start();
    let url = server.url("locked/pg/main");
    let (repo, init) = locked_repo(&server, &url, "governance");
    assert_eq!(init["object_lock"]["mode"], "governance", "{init}");
    let admin = S3Backend::open(&url, &server.options()).unwrap();
    let backup = S3Backend::open(&url, &server.options_of(&server.backup)).unwrap();
    let writer = S3Backend::open(&url, &server.options_of(&server.writer)).unwrap();
    let policy = LockPolicy {
        mode: LockMode::Governance,
        days: 1,
    };
    let status = admin.lock_status().unwrap();
    assert!(status.enabled);
    assert_eq!(
        status.default,
        Some(policy),
        "init set the bucket's default lock"
    );
    let config = json(&repo.run(&["--json", "cat", "config"]));
    assert_eq!(config["object_lock"]["days"], 1, "{config}");

    // The backup host snapshots, checks and restores; it cannot delete anything.
    let (a, b) = (dump_like(1, 3 << 20), dump_like(2, 3 << 20));
    let snap = |input: &[u8]| {
        let out = run_as(
            &repo,
            &server,
            &server.backup,
            &["--json", "snapshot", "stdin", "--name", "db.pgdump"],
            Some(input),
        );
        json(&out)["id"].as_str().unwrap().to_string()
    };
    let (ida, idb) = (snap(&a), snap(&b));
    let out = run_as(
        &repo,
        &server,
        &server.backup,
        &["check", "--read-data"],
        None,
    );
    assert!(out.status.success(), "check as backup: {}", stderr(&out));
    let out = run_as(&repo, &server, &server.backup, &["dump", &ida], None);
    assert!(out.status.success() && out.stdout == a, "{}", stderr(&out));
    // (Forgetting B, refused, must not count as sbk removing it: see the end.)
    for verb in [vec!["forget", &idb], vec!["prune"], vec!["lock", "refresh"]] {
        let out = run_as(&repo, &server, &server.backup, &verb, None);
        assert!(!out.status.success(), "{verb:?} as backup host succeeded");
        assert!(
            stderr(&out).contains("maintenance host's credentials"),
            "{verb:?}: {}",
            stderr(&out)
        );
    }
    let e = backup.remove(FileType::Snapshot, &idb).unwrap_err();
    assert!(e.message.contains("AccessDenied"), "{e}");
    assert_eq!(
        repo.snapshots().len(),
        2,
        "nothing was lost to the attempts"
    );

    // Every file is locked for the policy's days from the start.
    let versions = admin.versions().unwrap();
    let pack = versions.iter().find(|v| v.t == FileType::Pack).unwrap();
    let until = admin
        .retention(pack.t, &pack.name, &pack.id)
        .unwrap()
        .unwrap();
    assert!(until > Utc::now() + chrono::Duration::hours(23), "{until}");

    let refreshed = json(&repo.run(&["--json", "lock", "refresh"]));
    assert!(refreshed["files"].as_u64().unwrap() >= 6, "{refreshed}");

    // The maintenance host forgets A and prunes: A's file is hidden, its version held by its
    // lock, every other file's lock extended.
    let out = repo.run(&["forget", &ida]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pruned = json(&repo.run(&["--json", "prune"]));
    let lock = &pruned["lock"];
    assert!(
        lock["refreshed"]["files"].as_u64().unwrap() >= 6,
        "{pruned}"
    );
    // A's snapshot file and the index files this prune superseded: hidden, held by the lock.
    let superseded = pruned["index_files_removed"].as_u64().unwrap();
    assert_eq!(lock["purged"]["versions_held"], 1 + superseded, "{pruned}");
    assert_eq!(lock["purged"]["versions_removed"], 0, "{pruned}");

    // The audit trail has one record per operation, the backup host's refused ones included.
    let audit = json(&repo.run(&["--json", "audit"]));
    let verbs: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verb"].as_str().unwrap())
        .collect();
    for v in ["init", "snapshot stdin", "forget", "prune"] {
        assert!(verbs.contains(&v), "{v} missing from {verbs:?}");
    }
    let forget = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verb"] == "forget" && r["outcome"] == "ok")
        .unwrap();
    assert_eq!(forget["removed"]["snapshots"][0], ida, "{forget}");

    // Stolen keys that can delete (but not bypass a lock) "delete" every file: each gets a
    // delete marker, and the repository looks gone.
    let whole = next_second();
    let mut deleted = 0;
    for t in [FileType::Config]
        .into_iter()
        .chain(FileType::LISTED)
        .filter(|t| *t != FileType::Quarantine)
    {
        let names: Vec<String> = match t {
            FileType::Config => vec!["config".into()],
            _ => writer
                .list(t)
                .unwrap()
                .into_iter()
                .map(|f| f.name)
                .collect(),
        };
        for n in names {
            writer.remove(t, &n).unwrap();
            deleted += 1;
        }
    }
    assert!(deleted > 8, "{deleted}");
    // Their versions cannot be removed for good.
    let e = writer
        .remove_version(pack.t, &pack.name, &pack.id)
        .unwrap_err();
    assert!(
        e.message.contains("403") || e.message.contains("Denied"),
        "{e}"
    );
    let out = repo.run(&["snapshots"]);
    assert!(!out.status.success(), "the repository should look gone");

    // `repair versions` brings it back, checks every byte, and B restores whole.
    let at = whole.to_rfc3339();
    let dry = json(&repo.run(&["--json", "repair", "versions", "--at", &at, "-n"]));
    assert_eq!(dry["deleted"].as_array().unwrap().len(), deleted, "{dry}");
    let out = repo.run(&["repair", "versions", "--at", &at]);
    assert!(out.status.success(), "repair versions: {}", stderr(&out));
    assert_eq!(repo.dump(&idb), b);
    assert_eq!(repo.snapshots().len(), 1);
    // The files brought back are locked again.
    let config_version = admin
        .versions()
        .unwrap()
        .into_iter()
        .find(|v| v.t == FileType::Config && v.latest)
        .unwrap();
    assert!(admin
        .retention(FileType::Config, "config", &config_version.id)
        .unwrap()
        .is_some_and(|u| u > Utc::now() + chrono::Duration::hours(23)));

    // Purging removes only what sbk removed: A's snapshot file goes for good once its lock
    // has passed; an audit record deleted by the stolen keys keeps its version, however old
    // its lock.
    // The init record (a fixed choice: which record goes decides what the trail still says).
    let init_record = json(&repo.run(&["--json", "audit"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verb"] == "init")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before_audit = next_second();
    writer.remove(FileType::Audit, &init_record).unwrap();
    for v in admin.versions().unwrap() {
        if !v.deleted && (v.t == FileType::Snapshot || v.name == init_record) {
            let key = format!("pg/main/{}", sbk::backend::relative_path(v.t, &v.name));
            shorten_lock(&server, "locked", &key, &v.id, 2);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let out = repo.run(&["--json", "prune"]);
    assert!(
        stderr(&out).contains("audit records deleted"),
        "every verb reports a deleted record: {}",
        stderr(&out)
    );
    let pruned = json(&out);
    let purged = &pruned["lock"]["purged"];
    assert_eq!(purged["versions_removed"], 1, "{pruned}");
    assert_eq!(
        purged["unexplained_deletions"][0],
        format!("audit/{}", init_record),
        "{pruned}"
    );
    let left: Vec<_> = admin.versions().unwrap();
    assert!(
        !left.iter().any(|v| v.name == ida),
        "A's versions and marker are gone for good: {left:?}"
    );
    assert!(
        left.iter().any(|v| v.name == init_record && !v.deleted),
        "the deleted record's version is kept"
    );

    // B deleted behind sbk's back (the backup host's refused forget announced it, but its run
    // ended without removing it): prune judges nothing until it is back.
    writer.remove(FileType::Snapshot, &idb).unwrap();
    let out = repo.run(&["--json", "prune"]);
    let pruned = json(&out);
    assert_eq!(pruned["vanished_snapshots"][0], idb, "{pruned}");
    assert_eq!(pruned["packs_marked"], 0, "{pruned}");
    let out = repo.run(&["snapshots", "--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&idb), "{}", stderr(&out));
    // Back to before the record was deleted: the record and B return, check passes.
    let out = repo.run(&["repair", "versions", "--at", &before_audit.to_rfc3339()]);
    assert!(
        out.status.success(),
        "{}\n{}\n{ida} {idb} {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        init_record
    );
    assert_eq!(repo.dump(&idb), b);
    let out = repo.run(&["snapshots", "--strict"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `init --object-lock compliance --lock-days DAYS` at `url`, which must be refused; its
/// message.
fn refused_init(server: &Seaweed, url: &str, days: &str) -> String {
    let mut r = TestRepo::uninit();
    r.remote = Some((url.to_string(), server.env()));
    let out = r.run(&["init", "--object-lock", "compliance", "--lock-days", days]);
    assert!(!out.status.success(), "init at {url} was not refused");
    stderr(&out)
}

#[test]
fn object_lock_is_refused_where_it_cannot_hold() {
    // A local folder has no Object Lock.
    let r = TestRepo::uninit();
    let out = r.run(&[
        "init",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
        "--object-lock",
        "compliance",
        "--lock-days",
        "7",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Object Lock"), "{}", stderr(&out));

    let server = Seaweed::start();
    // A bucket made without Object Lock cannot get it: refused, and nothing written.
    let plain = TestRepo::on_url(server.url("plain/a"), server.env());
    let err = refused_init(&server, &server.url("plain/b"), "7");
    assert!(err.contains("has no Object Lock"), "{err}");
    assert!(plain.snapshots().is_empty());

    // Compliance: a locked version cannot be removed, not even by the bucket's admin; a
    // second repository asking another lock of the same bucket is refused.
    let url = server.url("vault/a");
    let (repo, _) = locked_repo(&server, &url, "compliance");
    repo.snapshot("db.pgdump", &dump_like(3, 1 << 20));
    let admin = S3Backend::open(&url, &server.options()).unwrap();
    let v = admin
        .versions()
        .unwrap()
        .into_iter()
        .find(|v| v.t == FileType::Pack)
        .unwrap();
    assert!(admin.remove_version(v.t, &v.name, &v.id).is_err());
    let err = refused_init(&server, &server.url("vault/b"), "30");
    assert!(
        err.contains("compliance for 1 days by default, not compliance for 30 days"),
        "{err}"
    );
}

#[test]
fn a_backup_host_spools_and_syncs_without_delete_rights() {
    let mut server = Seaweed::start();
    let url = server.url("locked/pg/spool");
    let (repo, _) = locked_repo(&server, &url, "governance");
    let input = dump_like(4, 2 << 20);
    // The host has opened the repository before (its spool keeps config and keys).
    let out = run_as(&repo, &server, &server.backup, &["snapshots"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    // The store goes down mid-week: the backup host's snapshot is spooled (exit 3)...
    server.stop("server", common::seaweed::Stop::Kill);
    let mut c = repo.cmd(&["snapshot", "stdin", "--name", "db.pgdump"]);
    c.envs(server.env_of(&server.backup))
        .env("SBK_RETRY_DEADLINE", "2s")
        .env("SBK_S3_TIMEOUT", "2s");
    let out = {
        use std::io::Write;
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(&input);
        child.wait_with_output().unwrap()
    };
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // ... and `sync` with the same keys, which cannot delete, uploads it once the store is back.
    server.restart("server");
    let out = run_as(&repo, &server, &server.backup, &["sync"], None);
    assert!(
        out.status.success(),
        "sync as backup host: {}",
        stderr(&out)
    );
    let out = run_as(&repo, &server, &server.backup, &["dump", "latest"], None);
    assert!(
        out.status.success() && out.stdout == input,
        "{}",
        stderr(&out)
    );
    let out = run_as(
        &repo,
        &server,
        &server.backup,
        &["check", "--read-data"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
