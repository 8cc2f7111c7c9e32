//! PostgreSQL's WAL archive in a repository (`docs/pitr.md`): a real cluster with
//! `archive_mode = on` and `sbk wal push` as its `archive_command`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::{as_server, Cluster, ClusterOptions};
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
            // Pushing ahead (`--parallel`) keeps its markers in the cache folder.
            format!(
                "archive_command = '{} -q -r {} --password-file {} --cache-dir {} wal push \
                 --parallel 4 %p'",
                sbk_bin(),
                repo.path.display(),
                pwfile.display(),
                repo.dir.path().join("server-cache").display()
            ),
            // Where a restored copy (started by `sbk restore --start`) puts its socket: the
            // tests start the original with their own socket folder on the command line.
            format!("unix_socket_directories = '{}'", repo.dir.path().display()),
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

    // Fetching ahead: the next segments wait in the cache folder, and the next fetch is
    // answered from there (the archived copy is not read: taken away, the fetch still works).
    let cache = repo.dir.path().join("fetch-cache");
    let cache_arg = cache.to_str().unwrap();
    let ahead = repo.dir.path().join("ahead");
    let out = repo.run(&[
        "--cache-dir",
        cache_arg,
        "wal",
        "fetch",
        "--prefetch",
        "4",
        &switched[0],
        ahead.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let next = switched[1].clone();
    // The fetch returned at once; a background process fetches ahead.
    let fetched_ahead = || {
        walkdir_files(&cache)
            .iter()
            .any(|p| p.ends_with(format!("fetched/{next}")))
    };
    common::wait_for(
        "the next segment fetched ahead",
        Duration::from_secs(30),
        fetched_ahead,
    );
    let archived = repo
        .files("wal")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&next))
        .unwrap();
    let moved = repo.dir.path().join("moved-away");
    std::fs::rename(repo.path.join(&archived), &moved).unwrap();
    let out = repo.run(&[
        "--cache-dir",
        cache_arg,
        "wal",
        "fetch",
        "--prefetch",
        "4",
        &next,
        ahead.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&ahead).unwrap() == original,
        "fetched ahead: same bytes"
    );
    std::fs::rename(&moved, repo.path.join(&archived)).unwrap();

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

/// Every file under `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `sbk snapshot postgres --physical` of `pg` into `repo`; its ID. The repository is handed
/// back to the server's user (the archive command writes into it).
fn base_backup(repo: &TestRepo, pg: &Cluster) -> String {
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
    let id = base_backup(&repo, &pg);

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

    // Restore to T into a new data folder, no snapshot named (the newest base backup before
    // T is chosen), with --start: sbk starts the server, which recovers from the archive
    // through `sbk wal fetch` and promotes at T; sbk reports where recovery got to.
    let dir = tempfile::Builder::new()
        .prefix("sbk-pitr-")
        .tempdir()
        .unwrap();
    give_to_server(dir.path());
    let data = dir.path().join("data");
    let port = common::pg::free_port();
    let mut restore = repo.cmd(&[
        "--json",
        "--password-file",
        pwfile.to_str().unwrap(),
        "restore",
        "--pgdata",
        data.to_str().unwrap(),
        "--target-time",
        t.trim(),
        "--start",
        "--port",
        &port.to_string(),
    ]);
    restore
        .env("SBK_CACHE_DIR", dir.path().join("cache"))
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", &pg.password);
    let started = ServerGuard(data.clone());
    let out = as_server(restore).output().unwrap();
    assert!(
        out.status.success(),
        "restore --pgdata --start: {}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["snapshot"], id.as_str(), "{report}");
    let reached = &report["reached"];
    assert_eq!(reached["paused"], false, "{report}");
    assert_eq!(reached["timeline"], 2, "promoted: {report}");
    let reached_time = reached["time"].as_str().unwrap_or_default();
    assert!(
        !reached_time.is_empty()
            && reached_time[..19].replace(' ', "T").as_str() <= &t.trim()[..19],
        "the last transaction replayed ({reached_time}) is at or before T ({t})"
    );
    drop(started);
    let restored = Cluster::start_existing(dir, data, &pg.password);
    assert_eq!(
        digest(&restored),
        at_t,
        "the restored cluster is the cluster at T"
    );
}

/// `sbk verify` of the newest base backup, run as the server's user, scratch folder in the test's.
fn drill(repo: &TestRepo, pwfile: &std::path::Path, pg: &Cluster) -> std::process::Output {
    let scratch = repo.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    give_to_server(repo.dir.path());
    let latest = repo.snapshots().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = repo.cmd(&[
        "--json",
        "--password-file",
        pwfile.to_str().unwrap(),
        "--cache-dir",
        repo.dir.path().join("drill-cache").to_str().unwrap(),
        "verify",
        &latest,
        "--scratch-dir",
        scratch.to_str().unwrap(),
    ]);
    c.env("PGUSER", "postgres").env("PGPASSWORD", &pg.password);
    as_server(c).output().unwrap()
}

/// Stops the server `sbk restore --start` started on this data folder, even when a test fails.
struct ServerGuard(std::path::PathBuf);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if self.0.join("postmaster.pid").exists() {
            let mut c = Command::new(common::pg::bindir().join("pg_ctl"));
            c.arg("-D").arg(&self.0).args(["-m", "fast", "-w", "stop"]);
            let _ = as_server(c).output();
        }
    }
}

#[test]
fn prune_removes_the_wal_no_kept_base_backup_needs() {
    let (repo, pwfile, pg) = archiving_cluster();
    let base = |repo: &TestRepo| base_backup(repo, &pg);
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
    // `check` proves continuity from each kept base backup: a segment lost after B's start is
    // a gap it names (exit 1); back in place, all is whole again.
    let out = repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last = before["timelines"][0]["last"].as_str().unwrap().to_string();
    let lost = repo
        .files("wal")
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{last}-"))
        })
        .unwrap();
    // The newest segment is B's own (the server switches segments as a backup ends): without
    // it, B cannot be made consistent.
    let prev = last.clone();
    let kept = std::fs::read(repo.path.join(&lost)).unwrap();
    std::fs::remove_file(repo.path.join(&lost)).unwrap();
    let out = repo.run(&["--json", "check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{prev} gone: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        text.contains(&prev) && text.contains("cannot be made consistent"),
        "{text}"
    );
    // The restore drill of B fails too: its server cannot become consistent.
    let out = drill(&repo, &pwfile, &pg);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    std::fs::write(repo.path.join(&lost), kept).unwrap();
    let out = repo.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Whole again: the drill restores B, checks its files against the backup manifest and
    // recovers through the archive as a private server, which it then stops and removes.
    let out = drill(&repo, &pwfile, &pg);
    assert!(out.status.success(), "drill: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["manifest_verified"], true, "{report}");
    assert_eq!(report["reached"]["timeline"], 2, "promoted: {report}");
    let scratch = repo.dir.path().join("scratch");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left behind"
    );

    // A window shorter than B's age: PITR from B on; A keeps only what makes it consistent.
    let pruned: serde_json::Value = serde_json::from_slice(
        &repo
            .run(&["--json", "prune", "--keep-wal-within", "1ms", "--dry-run"])
            .stdout,
    )
    .unwrap();
    let between = pruned["wal_files_removed"].as_u64().unwrap();
    assert!(
        between >= 2,
        "the segments between A's end and B's start: {pruned}"
    );
    let pruned: serde_json::Value = serde_json::from_slice(
        &repo
            .run(&["--json", "prune", "--keep-wal-within", "1ms"])
            .stdout,
    )
    .unwrap();
    assert_eq!(
        pruned["wal_files_removed"].as_u64(),
        Some(between),
        "{pruned}"
    );
    // Both base backups stay consistent; the hole between them is a note, not damage.
    let out = repo.run(&["--json", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        checked["notes"].to_string().contains("not possible"),
        "{checked}"
    );

    // A forgotten: the segments before B's start go, the rest stay whole.
    let out = repo.run(&["forget", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pruned: serde_json::Value =
        serde_json::from_slice(&repo.run(&["--json", "prune"]).stdout).unwrap();
    assert!(
        pruned["wal_files_removed"].as_u64().unwrap() >= 1,
        "A's own WAL: {pruned}"
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

/// A WAL file's worth of bytes (content is not judged by push).
fn segment_bytes(seed: u64) -> Vec<u8> {
    common::dump_like(seed, 16 << 20)
}

#[test]
fn pushes_and_fetches_survive_kill_9_and_an_unreachable_repository() {
    let repo = TestRepo::new();
    let dir = repo.dir.path().join("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();

    // A repository that cannot be reached: exit non-zero (PostgreSQL keeps the segment and
    // retries), one line on stderr.
    let seg = dir.join("000000010000000000000001");
    std::fs::write(&seg, segment_bytes(1)).unwrap();
    let out = repo.run(&[
        "-r",
        repo.dir.path().join("gone").to_str().unwrap(),
        "wal",
        "push",
        seg.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));

    // How long a push and a fetch take here: the kills below land across those spans.
    let probe = dir.join("000000010000000000000002");
    std::fs::write(&probe, segment_bytes(2)).unwrap();
    let clock = Instant::now();
    assert!(repo
        .run(&["wal", "push", probe.to_str().unwrap()])
        .status
        .success());
    let push_time = clock.elapsed();
    let clock = Instant::now();
    let dest = repo.dir.path().join("probe");
    let out = repo.run(&[
        "wal",
        "fetch",
        "000000010000000000000002",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fetch_time = clock.elapsed();

    // `--target-latest` (the default, named) excludes the other targets.
    let out = repo.run(&[
        "restore",
        "--pgdata",
        repo.dir.path().join("never").to_str().unwrap(),
        "--target-latest",
        "--target-time",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    assert!(!repo.dir.path().join("never").exists());

    // kill -9 at any moment of a push: pushed again, it is stored once, whole.
    let kills = 12u32;
    for i in 0..kills {
        let at = |span: Duration| span * (2 * i + 1) / (2 * kills);
        let name = format!("0000000100000000000000{:02X}", 0x10 + i);
        let seg = dir.join(&name);
        let bytes = segment_bytes(100 + u64::from(i));
        std::fs::write(&seg, &bytes).unwrap();
        let mut child = repo
            .cmd(&["wal", "push", seg.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(at(push_time));
        let _ = child.kill();
        child.wait().unwrap();
        let out = repo.run(&["wal", "push", seg.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let stored: Vec<_> = repo
            .files("wal")
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&name))
            .collect();
        assert_eq!(stored.len(), 1, "{name}: {stored:?}");

        // kill -9 at any moment of a fetch: the destination is absent or whole, never part.
        let dest = repo.dir.path().join(format!("fetched-{i}"));
        let mut child = repo
            .cmd(&["wal", "fetch", &name, dest.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(at(fetch_time));
        let _ = child.kill();
        child.wait().unwrap();
        if dest.exists() {
            assert!(
                std::fs::read(&dest).unwrap() == bytes,
                "{name}: partial fetch"
            );
        }
        let out = repo.run(&["wal", "fetch", &name, dest.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            std::fs::read(&dest).unwrap() == bytes,
            "{name}: fetched bytes differ"
        );
    }
    // No leftovers a check would trip on; every archived file reads whole.
    let out = repo.run(&["--json", "check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["wal_files_read"], 1 + kills, "{report}");
}

#[test]
fn pushes_to_an_unreachable_s3_repository_are_spooled_then_synced() {
    let mut server = common::s3::S3Server::start();
    let repo = TestRepo::on_s3(&server, "wal-spool");
    let dir = repo.dir.path().join("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let push = |name: &str, extra: &[&str]| {
        let seg = dir.join(name);
        if !seg.exists() {
            std::fs::write(
                &seg,
                segment_bytes(name.len() as u64 + name.as_bytes()[23] as u64),
            )
            .unwrap();
        }
        let mut args = vec!["--retry-deadline", "1s", "wal", "push"];
        args.extend_from_slice(extra);
        args.push(seg.to_str().unwrap());
        repo.run(&args)
    };
    // Online: stored in the bucket (and the spool keeps a copy of config and keys).
    let out = push("000000010000000000000001", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.stop();
    // Offline: kept in the spool, fsynced; exit 0 so that PostgreSQL goes on; said on stderr.
    let out = push("000000010000000000000002", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("spool"), "{}", stderr(&out));
    // --no-spool: the push fails, PostgreSQL keeps the segment.
    let out = push("000000010000000000000003", &["--no-spool"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    // The spooled segment is there for a fetch on this host even while S3 is down.
    let dest = repo.dir.path().join("fetched");
    let out = repo.run(&[
        "--retry-deadline",
        "1s",
        "wal",
        "fetch",
        "000000010000000000000002",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&dest).unwrap()
            == std::fs::read(dir.join("000000010000000000000002")).unwrap()
    );

    // Back online, the next push uploads what waits in the spool; `sync` finds nothing left.
    server.restart();
    let out = push("000000010000000000000003", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo.run(&["--json", "sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let synced: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(synced["wal_files"], 0, "{synced}");
    // From the bucket alone (another host: no spool, no cache).
    let out = repo.run(&[
        "--no-cache",
        "--spool-dir",
        repo.dir.path().join("other-spool").to_str().unwrap(),
        "wal",
        "fetch",
        "000000010000000000000002",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&dest).unwrap()
            == std::fs::read(dir.join("000000010000000000000002")).unwrap()
    );
    let out = repo.run(&["--json", "wal", "status"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["files"], 3, "{st}");
    assert_eq!(st["newest"], "000000010000000000000003", "{st}");
    assert!(st["newest_age_seconds"].as_u64().unwrap() < 600, "{st}");
}

#[test]
fn a_push_stores_ready_files_ahead_and_answers_them_without_the_repository() {
    let repo = TestRepo::new();
    let wal = repo.dir.path().join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    let names: Vec<String> = (1..=5)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(wal.join(n), segment_bytes(i as u64)).unwrap();
        std::fs::write(wal.join("archive_status").join(format!("{n}.ready")), b"").unwrap();
    }
    let cache = repo.dir.path().join("cache");
    let push = |name: &str| {
        repo.run(&[
            "--cache-dir",
            cache.to_str().unwrap(),
            "wal",
            "push",
            "--parallel",
            "3",
            wal.join(name).to_str().unwrap(),
        ])
    };
    // The first push stores its file and two more ready ones.
    let out = push(&names[0]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(repo.files("wal").len(), 3, "{:?}", repo.files("wal"));
    // The server asks for the second: answered from the marker, without the repository (its
    // password is wrong now, which an open would refuse).
    let mut c = repo.cmd(&[
        "--cache-dir",
        cache.to_str().unwrap(),
        "wal",
        "push",
        "--parallel",
        "3",
        wal.join(&names[1]).to_str().unwrap(),
    ]);
    c.env("SBK_PASSWORD", "not the password");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ahead"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A marker answers only for the same bytes: the third file changed since it was pushed
    // ahead, so the push goes to the repository, which refuses different bytes.
    std::fs::write(wal.join(&names[2]), segment_bytes(99)).unwrap();
    let out = push(&names[2]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different WAL file"),
        "{}",
        stderr(&out)
    );
    // Everything archived reads back as pushed.
    for (i, n) in names.iter().enumerate().take(2) {
        let dest = repo.dir.path().join(format!("back-{i}"));
        let out = repo.run(&["wal", "fetch", n, dest.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(std::fs::read(&dest).unwrap() == segment_bytes(i as u64));
    }
}

/// A base backup asked to stop (a daemon shutting down) kills pg_basebackup and saves nothing.
#[test]
fn a_base_backup_stops_when_asked_and_saves_nothing() {
    let (repo, _pwfile, pg) = archiving_cluster();
    let lib = sbk::Repository::open(
        sbk::backend::Storage::local(&repo.path),
        common::PASSWORD.as_bytes(),
    )
    .unwrap();
    let conn =
        sbk::postgres::conn::ConnParams::resolve(Some(&pg.url("postgres")), &|_| None).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let opts = sbk::commands::snapshot_physical::PhysicalOptions {
        conn,
        tools: Default::default(),
        common: Default::default(),
        stop: Some(stop),
    };
    let clock = Instant::now();
    let r = sbk::commands::snapshot_physical::snapshot_physical(&lib, &opts, Default::default());
    assert!(
        matches!(r, Err(sbk::Error::Interrupted(_))),
        "{:?}",
        r.map(|v| v.id)
    );
    assert!(clock.elapsed() < Duration::from_secs(30));
    assert!(repo.snapshots().is_empty());
}
