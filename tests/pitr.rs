//! PostgreSQL's WAL archive in a repository (`docs/pitr.md`): a real cluster with
//! `archive_mode = on` and `sbk wal push` as its `archive_command`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::{Cluster, ClusterOptions};
use common::{sbk_bin, stderr, TestRepo};

/// Makes `path` and everything below it the cluster owner's when tests run as root (the
/// archive command runs as the server's user).
fn give_to_server(path: &std::path::Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let s = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(path)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

/// A repository, its password file, and a cluster archiving into it through `sbk wal push`.
fn archiving_cluster() -> (TestRepo, std::path::PathBuf, Cluster) {
    let repo = TestRepo::new();
    let pwfile = repo.dir.path().join("password");
    std::fs::write(&pwfile, common::PASSWORD).unwrap();
    give_to_server(repo.dir.path());
    let pg = Cluster::start_with(ClusterOptions {
        conf: vec![
            "wal_level = replica".into(),
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} -q -r {} --password-file {} wal push %p'",
                sbk_bin(),
                repo.path.display(),
                pwfile.display()
            ),
        ],
        ..Default::default()
    });
    (repo, pwfile, pg)
}

#[test]
fn wal_files_are_archived_fetched_and_never_replaced() {
    let (repo, _pwfile, pg) = archiving_cluster();
    pg.psql(
        "postgres",
        "create table t as select g, md5(g::text) from generate_series(1, 20000) g",
    );
    let mut switched = Vec::new();
    for _ in 0..3 {
        switched.push(
            pg.psql("postgres", "select pg_walfile_name(pg_switch_wal())")
                .trim()
                .to_string(),
        );
        pg.psql(
            "postgres",
            "insert into t select g, 'x' from generate_series(1, 1000) g",
        );
    }
    // The archiver runs on its own schedule: wait for the state, not a time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed = pg.psql("postgres", "select failed_count from pg_stat_archiver");
        let last = pg.psql(
            "postgres",
            "select coalesce(last_archived_wal, '') from pg_stat_archiver",
        );
        if last.trim() >= switched[2].as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "archiving stalled: last {last}, failures {failed}, log: {}",
            std::fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stored: Vec<String> = repo
        .files("wal")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in &switched {
        assert!(
            stored.iter().any(|s| s.starts_with(&format!("{name}-"))),
            "{name} not in {stored:?}"
        );
    }

    // Fetched bytes are the segment's bytes.
    let segment = pg.data_dir().join("pg_wal").join(&switched[1]);
    let original = std::fs::read(&segment).unwrap();
    let dest = repo.dir.path().join("fetched");
    let out = repo.run(&["wal", "fetch", &switched[1], dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), original);

    // The same bytes again: success, nothing new stored; other bytes under that name: refused.
    let out = repo.run(&["wal", "push", segment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(repo.files("wal").len(), stored.len());
    let forged_dir = repo.dir.path().join("forged");
    std::fs::create_dir_all(&forged_dir).unwrap();
    let forged = forged_dir.join(&switched[1]);
    let mut bytes = original.clone();
    bytes[100] ^= 1;
    std::fs::write(&forged, &bytes).unwrap();
    let out = repo.run(&["wal", "push", forged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different WAL file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(repo.files("wal").len(), stored.len());

    // Not archived: exit 1 (PostgreSQL reads that as "not there"), nothing written.
    let missing = repo.dir.path().join("missing");
    let out = repo.run(&[
        "wal",
        "fetch",
        "0000000100000000000000FF",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!missing.exists());

    // The archive has no gap; once a segment between two others is gone, `wal status` says
    // which and exits 1.
    let out = repo.run(&["--json", "wal", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["timelines"][0]["gaps"].as_array().unwrap().is_empty(),
        "{st}"
    );
    let middle = repo
        .files("wal")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&switched[1]))
        .unwrap();
    let kept = std::fs::read(repo.path.join(&middle)).unwrap();
    std::fs::remove_file(repo.path.join(&middle)).unwrap();
    let out = repo.run(&["wal", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&switched[1]), "{}", stderr(&out));
    std::fs::write(repo.path.join(&middle), kept).unwrap();

    // A damaged archived file is an error, never bytes.
    let victim = repo
        .files("wal")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&switched[0]))
        .unwrap();
    let path = repo.path.join(victim);
    let mut b = std::fs::read(&path).unwrap();
    b[200] ^= 1;
    std::fs::write(&path, b).unwrap();
    let out = repo.run(&["wal", "fetch", &switched[0], dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        original,
        "dest left as it was"
    );
}

/// A digest of table `t` as it is now.
fn digest(pg: &Cluster) -> String {
    pg.psql(
        "postgres",
        "select count(*) || ':' || md5(string_agg(g::text || md5, ',' order by g, md5)) from t",
    )
    .trim()
    .to_string()
}

#[test]
fn a_base_backup_and_the_archive_restore_to_a_point_in_time() {
    let (repo, pwfile, pg) = archiving_cluster();
    pg.psql(
        "postgres",
        "create table t as select g, md5(g::text) from generate_series(1, 50000) g",
    );
    let out = repo.run(&[
        "--json",
        "snapshot",
        "postgres",
        "--physical",
        &pg.url("postgres"),
    ]);
    assert!(out.status.success(), "base backup: {}", stderr(&out));
    give_to_server(repo.dir.path());
    let base: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = base["id"].as_str().unwrap().to_string();

    // Writes after the backup, a point in time T, then writes that must not come back.
    pg.psql("postgres", "update t set md5 = md5(md5) where g % 7 = 0");
    let at_t = digest(&pg);
    let t = pg.psql(
        "postgres",
        "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql("postgres", "delete from t where g > 40000");
    assert_ne!(digest(&pg), at_t);
    let last = pg.psql("postgres", "select pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg
        .psql(
            "postgres",
            "select coalesce(last_archived_wal, '') from pg_stat_archiver",
        )
        .trim()
        < last.trim()
    {
        assert!(Instant::now() < deadline, "archiving stalled");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Restore to T into a new data folder and start it: it recovers from the archive through
    // `sbk wal fetch` and promotes at T.
    let dir = tempfile::Builder::new()
        .prefix("sbk-pitr-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let out = repo.run(&[
        "--password-file",
        pwfile.to_str().unwrap(),
        "restore",
        &id,
        "--pgdata",
        data.to_str().unwrap(),
        "--target-time",
        t.trim(),
    ]);
    assert!(out.status.success(), "restore --pgdata: {}", stderr(&out));
    give_to_server(dir.path());
    let restored = Cluster::start_existing(dir, data, &pg.password);
    let deadline = Instant::now() + Duration::from_secs(90);
    while restored
        .psql("postgres", "select pg_is_in_recovery()")
        .trim()
        != "f"
    {
        assert!(Instant::now() < deadline, "recovery did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        digest(&restored),
        at_t,
        "the restored cluster is the cluster at T"
    );
}

#[test]
fn prune_removes_the_wal_no_kept_base_backup_needs() {
    let (repo, _pwfile, pg) = archiving_cluster();
    let base = |repo: &TestRepo| {
        let out = repo.run(&[
            "--json",
            "snapshot",
            "postgres",
            "--physical",
            &pg.url("postgres"),
        ]);
        assert!(out.status.success(), "base backup: {}", stderr(&out));
        give_to_server(repo.dir.path());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    pg.psql("postgres", "create table t (g int)");
    let a = base(&repo);
    for _ in 0..3 {
        pg.psql("postgres", "insert into t select generate_series(1, 1000)");
        pg.psql("postgres", "select pg_switch_wal()");
    }
    base(&repo);
    let status = |repo: &TestRepo| -> serde_json::Value {
        let out = repo.run(&["--json", "wal", "status"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Both base backups kept: only what came before A goes (the WAL of initdb).
    let pruned: serde_json::Value =
        serde_json::from_slice(&repo.run(&["--json", "prune"]).stdout).unwrap();
    assert!(
        pruned["wal_files_removed"].as_u64().unwrap() <= 2,
        "{pruned}"
    );
    let before = status(&repo);
    let pruned: serde_json::Value =
        serde_json::from_slice(&repo.run(&["--json", "prune"]).stdout).unwrap();
    assert_eq!(pruned["wal_files_removed"], 0, "{pruned}");
    // A forgotten: the segments before B's start go, the rest stay whole.
    let out = repo.run(&["forget", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pruned: serde_json::Value =
        serde_json::from_slice(&repo.run(&["--json", "prune"]).stdout).unwrap();
    assert!(
        pruned["wal_files_removed"].as_u64().unwrap() >= 3,
        "{pruned}"
    );
    let after = status(&repo);
    let first = |v: &serde_json::Value| v["timelines"][0]["first"].as_str().unwrap().to_string();
    assert!(first(&after) > first(&before), "{before} -> {after}");
    assert_eq!(
        after["timelines"][0]["last"], before["timelines"][0]["last"],
        "{after}"
    );
    assert!(after["timelines"][0]["gaps"].as_array().unwrap().is_empty());
    // The removals are in prune's audit record (what lets Object Lock purge them later).
    let records: serde_json::Value =
        serde_json::from_slice(&repo.run(&["--json", "audit"]).stdout).unwrap();
    let last_prune = records
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["verb"] == "prune")
        .unwrap();
    assert_eq!(
        last_prune["removed"]["wal"].as_array().map(Vec::len),
        pruned["wal_files_removed"].as_u64().map(|n| n as usize),
        "{last_prune}"
    );
}
