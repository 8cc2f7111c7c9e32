//! Forget, prune and check through the real binary (and, for exact interleavings, the library):
//! after forget + prune every remaining snapshot restores byte for byte and `check --read-data`
//! passes; prune beside running snapshots, and prune killed at random moments, lose nothing.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sbk::backend::FileType;
use sbk::commands::prune::{PruneOptions, PruneReport, DEFAULT_GRACE};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn data_bytes(repo: &TestRepo) -> u64 {
    repo.files("data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Snapshots of a drifting input, one per day from 2026-11-01; returns (id, bytes) oldest first.
fn drifting_snapshots(repo: &TestRepo, days: u64, len: usize) -> Vec<(String, Vec<u8>)> {
    let mut data = dump_like(11, len);
    let mut out = Vec::new();
    for day in 0..days {
        if day > 0 {
            data = drift(&data, day);
        }
        let time = format!("2026-11-{:02}T02:00:00+01:00", day + 1);
        let o = repo.run_with_input(
            &[
                "--json", "snapshot", "stdin", "--name", "db.dump", "--time", &time,
            ],
            &data,
        );
        let v = json(&o);
        out.push((v["id"].as_str().unwrap().to_string(), data.clone()));
    }
    out
}

fn assert_restores(repo: &TestRepo, versions: &[(String, Vec<u8>)]) {
    let listed: Vec<String> = repo
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for id in &listed {
        let (_, data) = versions
            .iter()
            .find(|(v, _)| v == id)
            .unwrap_or_else(|| panic!("unexpected snapshot {id}"));
        assert!(
            repo.dump(id) == *data,
            "snapshot {id} does not restore exactly"
        );
    }
}

fn check_read_data(repo: &TestRepo) -> serde_json::Value {
    let out = repo.run(&["--json", "check", "--read-data"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        out.status.success() && v["ok"] == true,
        "check failed: {v:#}\n{}",
        stderr(&out)
    );
    v
}

#[test]
fn forget_and_prune_keep_every_remaining_snapshot_whole() {
    let repo = TestRepo::new();
    let versions = drifting_snapshots(&repo, 8, 6 << 20);
    let before = data_bytes(&repo);
    let packs_before = repo.files("data");

    // Two phases: unused packs are only marked; everything stays readable.
    let v = json(&repo.run(&["--json", "forget", "--keep-last", "3", "--prune"]));
    let removed: usize = v["forget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["remove"].as_array().unwrap().len())
        .sum();
    assert_eq!(removed, 5);
    assert!(v["prune"]["packs_marked"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["prune"]["packs_deleted"], 0);
    // (Partly used packs may be repacked: new packs appear, old ones stay until the sweep.)
    let packs_now = repo.files("data");
    assert!(
        packs_before.iter().all(|p| packs_now.contains(p)),
        "the first phase deletes nothing"
    );
    let marked = data_bytes(&repo);
    let c = check_read_data(&repo);
    assert!(
        c["notes"].to_string().contains("marked for deletion"),
        "{c:#}"
    );
    assert_restores(&repo, &versions);

    // The kept snapshots are deltas against bases that forgotten snapshots stored.
    let kept = repo.snapshots();
    assert!(kept
        .iter()
        .any(|s| u64_of(s, &["summary", "blobs_delta"]) > 0));

    // Once the grace period is over, a prune deletes them.
    let v = json(&repo.run(&["--json", "prune", "--grace", "0s"]));
    assert!(v["packs_deleted"].as_u64().unwrap() > 0, "{v:#}");
    let after = data_bytes(&repo);
    // The kept snapshots' chains reach back to the first keyframe, so what is freed is the
    // forgotten snapshots' own deltas and the repacked packs' waste.
    assert!(
        after < before && after < marked,
        "prune freed nothing: {before} -> {marked} -> {after}"
    );
    check_read_data(&repo);
    assert_restores(&repo, &versions);

    // Nothing left to do, and a new snapshot still deduplicates and uses deltas.
    let v = json(&repo.run(&["--json", "prune", "--grace", "0s"]));
    assert_eq!(v["packs_deleted"], 0, "{v:#}");
    assert_eq!(v["packs_marked"], 0, "{v:#}");
    let last = &versions.last().unwrap().1;
    let next = drift(last, 99);
    let s = repo.snapshot("db.dump", &next);
    assert!(u64_of(&s, &["summary", "blobs_delta"]) > 0, "{s:#}");
    assert!(repo.dump(s["id"].as_str().unwrap()) == next);
    check_read_data(&repo);
}

#[test]
fn instant_delete_and_repacking_free_space_at_once() {
    let repo = TestRepo::new();
    // Unrelated streams: forgetting one frees its data.
    let mut versions = Vec::new();
    let mut hour = 0;
    let mut take = |name: &str, data: Vec<u8>, more: &[&str]| {
        hour += 1;
        let time = format!("2026-11-01T{hour:02}:00:00+00:00");
        let mut args = vec![
            "--json", "snapshot", "stdin", "--name", name, "--time", &time,
        ];
        args.extend_from_slice(more);
        let o = repo.run_with_input(&args, &data);
        versions.push((json(&o)["id"].as_str().unwrap().to_string(), data));
    };
    for seed in 0..4 {
        take("db.dump", dump_like(40 + seed, 3 << 20), &[]);
    }
    // A pack shared by a kept and a forgotten snapshot: A+B, then A alone (the newest). A's
    // last chunk differs from the A+B chunk spanning A's end and B's start; as a delta against
    // it, the kept snapshot would keep part of B too (whether its sketch finds that chunk, or
    // the trail does, depends on the chunker seed), so it is stored whole.
    let a = dump_like(50, 3 << 20);
    take(
        "other.dump",
        [a.clone(), dump_like(51, 3 << 20)].concat(),
        &[],
    );
    take("other.dump", a, &["--no-delta"]);
    let before = data_bytes(&repo);
    let v = json(&repo.run(&[
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--group-by",
        "",
        "--prune",
        "--instant-delete",
        "--max-unused",
        "0%",
    ]));
    assert!(v["prune"]["packs_deleted"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["prune"]["packs_repacked"], 1, "{v:#}");
    let after = data_bytes(&repo);
    assert!(after < before / 4, "{before} -> {after}");
    let c = check_read_data(&repo);
    assert!(!c["notes"].to_string().contains("marked"), "{c:#}");
    assert_restores(&repo, &versions);
    // With nothing unused left, a second prune changes nothing.
    let v = json(&repo.run(&["--json", "prune", "--max-unused", "0%", "--instant-delete"]));
    assert_eq!(v["packs_deleted"], 0, "{v:#}");
    assert_eq!(v["packs_repacked"], 0, "{v:#}");
}

#[test]
fn dry_runs_change_nothing() {
    let repo = TestRepo::new();
    let versions = drifting_snapshots(&repo, 3, 2 << 20);
    let files = |r: &TestRepo| (r.files("data"), r.files("index"), r.files("snapshots"));
    let before = files(&repo);
    let v = json(&repo.run(&[
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--dry-run",
        "--prune",
        "--instant-delete",
    ]));
    assert_eq!(v["forget"][0]["remove"].as_array().unwrap().len(), 2);
    assert_eq!(v["prune"]["dry_run"], true);
    assert_eq!(files(&repo), before);
    assert_restores(&repo, &versions);
}

#[test]
fn forget_json_policy_errors_and_ids() {
    let repo = TestRepo::new();
    let data = dump_like(2, 1 << 20);
    for (host, day) in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)] {
        let time = format!("2026-11-{day:02}T12:00:00+01:00");
        ok(&repo.run_with_input(
            &[
                "snapshot", "stdin", "--name", "x", "--host", host, "--time", &time,
            ],
            &data,
        ));
    }
    // Groups by host; each group keeps its newest, with restic's reason.
    let v = json(&repo.run(&["--json", "forget", "--keep-last", "1", "--dry-run"]));
    let groups = v.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for g in groups {
        assert_eq!(g["keep"].as_array().unwrap().len(), 1);
        assert_eq!(g["keep"][0]["reasons"][0], "last snapshot");
        assert!(g["keep"][0]["id"].as_str().unwrap().len() == 64);
        assert!(g["remove"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"].is_string()));
    }
    assert!(groups
        .iter()
        .any(|g| g["host"] == "a" && g["remove"].as_array().unwrap().len() == 2));
    // One group for all.
    let v = json(&repo.run(&[
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--group-by",
        "",
        "--dry-run",
    ]));
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["remove"].as_array().unwrap().len(), 4);
    // -1 keeps one per day, all the way back.
    let v = json(&repo.run(&["--json", "forget", "--keep-daily", "-1", "--dry-run"]));
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["remove"].as_array().unwrap().is_empty()));
    // No policy: refused, nothing removed.
    let out = repo.run(&["forget"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no policy"), "{}", stderr(&out));
    // A policy that keeps nothing of a group: refused.
    let out = repo.run(&["forget", "--keep-tag", "never-used"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));
    assert_eq!(repo.snapshots().len(), 5);
    // By ID, and `latest`.
    let first = repo.snapshots()[0]["id"].as_str().unwrap().to_string();
    ok(&repo.run(&["forget", &first[..8], "latest"]));
    let left: Vec<String> = repo
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&first));
    // IDs and a policy together: refused.
    let out = repo.run(&["forget", "--keep-last", "1", &left[0]]);
    assert_eq!(out.status.code(), Some(1));
}

/// The seed schedule through the CLI: every six hours for 40 days, keep 7 daily / 4 weekly.
#[test]
fn forget_seed_schedule_through_the_cli() {
    let repo = TestRepo::new();
    let start = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00+01:00").unwrap();
    for i in 0..160 {
        let t = start + chrono::Duration::hours(6 * i);
        ok(&repo.run_with_input(
            &[
                "snapshot",
                "stdin",
                "--name",
                "x",
                "--time",
                &t.to_rfc3339(),
            ],
            b"same bytes every time",
        ));
    }
    let v = json(&repo.run(&[
        "--json",
        "forget",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
    ]));
    let mut kept: Vec<String> = v[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time"].as_str().unwrap().to_string())
        .collect();
    kept.sort();
    // Last snapshot 2026-11-09T18:00 (a Monday). Daily: Nov 3..9 at 18:00. Weekly (ISO weeks,
    // newest of each): Nov 9 (week 46), Nov 8 (week 45), Nov 1 (week 44), Oct 25 (week 43).
    let expected = [
        "2026-10-25T18:00:00+01:00",
        "2026-11-01T18:00:00+01:00",
        "2026-11-03T18:00:00+01:00",
        "2026-11-04T18:00:00+01:00",
        "2026-11-05T18:00:00+01:00",
        "2026-11-06T18:00:00+01:00",
        "2026-11-07T18:00:00+01:00",
        "2026-11-08T18:00:00+01:00",
        "2026-11-09T18:00:00+01:00",
    ];
    assert_eq!(kept, expected);
    assert_eq!(repo.snapshots().len(), expected.len());
}

#[test]
fn prune_beside_running_snapshots_loses_nothing() {
    let repo = Arc::new(TestRepo::new());
    let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let first = dump_like(21, 3 << 20);
    let s = repo.snapshot("db.dump", &first);
    versions
        .lock()
        .unwrap()
        .push((s["id"].as_str().unwrap().to_string(), first.clone()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (repo, versions, done) = (repo.clone(), versions.clone(), done.clone());
        std::thread::spawn(move || {
            let mut data = first;
            let mut failures = Vec::new();
            for day in 1..=24 {
                data = drift(&data, day);
                let out = repo
                    .run_with_input(&["--json", "snapshot", "stdin", "--name", "db.dump"], &data);
                if out.status.success() {
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    versions
                        .lock()
                        .unwrap()
                        .push((v["id"].as_str().unwrap().to_string(), data.clone()));
                } else {
                    failures.push(stderr(&out));
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            failures
        })
    };
    let mut rounds = 0;
    let mut prune_errors = Vec::new();
    let mut deleted = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let out = repo.run(&[
            "--json",
            "forget",
            "--keep-last",
            "2",
            "--prune",
            "--grace",
            "500ms",
        ]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            deleted += v["prune"]["packs_deleted"].as_u64().unwrap();
        } else {
            prune_errors.push(stderr(&out));
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let failures = writer.join().unwrap();
    eprintln!(
        "{rounds} prune rounds deleted {deleted} packs; {} snapshots failed",
        failures.len()
    );
    // The one allowed failure: a run that outlasted the grace period. Clean.
    for err in &failures {
        assert!(err.contains("deleted by a prune"), "{err}");
    }
    assert!(failures.len() < 24, "every snapshot failed");
    assert!(prune_errors.is_empty(), "{prune_errors:?}");
    std::thread::sleep(Duration::from_millis(600));
    ok(&repo.run(&["prune", "--grace", "500ms"]));
    check_read_data(&repo);
    assert_restores(&repo, &versions.lock().unwrap());
}

#[test]
fn prune_killed_at_random_moments_leaves_a_repository_that_check_passes() {
    let repo = TestRepo::new();
    let mut versions = drifting_snapshots(&repo, 6, 4 << 20);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut data = versions.last().unwrap().1.clone();
    for round in 0..6u64 {
        // New work each round: one more snapshot, one forgotten.
        data = drift(&data, 50 + round);
        let s = repo.snapshot("db.dump", &data);
        versions.push((s["id"].as_str().unwrap().to_string(), data.clone()));
        ok(&repo.run(&["forget", "--keep-last", "3"]));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(10 + (seed >> 33) % 250);
        let args: &[&str] = if round % 2 == 0 {
            &["prune", "--instant-delete", "--max-unused", "0%"]
        } else {
            &["prune", "--grace", "0s", "--max-unused", "0%"]
        };
        let mut child = spawn(repo.cmd(args));
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let out = repo.run(&["--json", "check"]);
        assert!(
            out.status.success(),
            "round {round} ({delay:?}): {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_restores(&repo, &versions);
    }
    ok(&repo.run(&["prune", "--instant-delete", "--max-unused", "0%"]));
    let c = check_read_data(&repo);
    assert!(!c["notes"].to_string().contains("no index"), "{c:#}");
    assert_restores(&repo, &versions);
}

/// A reader that holds back its end of stream until told to finish.
struct Gated<'a> {
    data: &'a [u8],
    gate: std::sync::mpsc::Receiver<()>,
}

impl Read for Gated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() {
            let _ = self.gate.recv();
            return Ok(0);
        }
        let n = buf.len().min(self.data.len()).min(1 << 16);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn lib_repo(dir: &tempfile::TempDir) -> sbk::Repository {
    sbk::Repository::init(
        sbk::backend::Storage::local(dir.path().join("repo")),
        b"pw",
        sbk::crypto::KdfParams::with_cost(1024, 1, 1),
        &sbk::Actor::current(),
    )
    .unwrap()
}

/// Snapshots `data` into `repo` (as `db.dump`), holding the end of the stream until `meanwhile`
/// has run: the run has loaded its index and, for a stream larger than a pack, written packs.
fn snapshot_around(
    repo: &sbk::Repository,
    data: &[u8],
    meanwhile: impl FnOnce(),
) -> sbk::Result<sbk::commands::SnapshotView> {
    let opts = sbk::commands::snapshot::SnapshotOptions::new("db.dump");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let running = s.spawn(|| {
            let gated = Gated { data, gate: rx };
            sbk::commands::snapshot::snapshot_reader(repo, &opts, gated, Default::default())
        });
        std::thread::sleep(Duration::from_millis(300));
        meanwhile();
        tx.send(()).unwrap();
        running.join().unwrap()
    })
}

fn snapshot_of(repo: &sbk::Repository, data: &[u8]) -> sbk::Id {
    let opts = sbk::commands::snapshot::SnapshotOptions::new("db.dump");
    sbk::commands::snapshot::snapshot_reader(repo, &opts, data, Default::default())
        .unwrap()
        .id
}

fn forget_ids(repo: &sbk::Repository, ids: &[sbk::Id]) {
    let opts = sbk::commands::forget::ForgetOptions {
        ids: ids
            .iter()
            .map(|i| sbk::repository::SnapshotRef::Id(*i))
            .collect(),
        ..Default::default()
    };
    sbk::commands::forget::forget(repo, &opts).unwrap();
}

fn prune_lib(repo: &sbk::Repository, grace: Duration, instant: bool) -> PruneReport {
    let opts = PruneOptions {
        grace,
        instant_delete: instant,
        ..Default::default()
    };
    sbk::commands::prune::prune(repo, &opts).unwrap()
}

/// The exact interleaving, with the library: a snapshot that reuses blobs of a snapshot that is
/// forgotten and pruned while it runs revives their packs, and stays whole.
#[test]
fn a_snapshot_revives_packs_marked_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let repo = lib_repo(&dir);
    let data = dump_like(31, 3 << 20);
    let first = snapshot_of(&repo, &data);
    // A second run of the same bytes (every blob reused); meanwhile the first snapshot is
    // forgotten and its packs marked.
    let second = snapshot_around(&repo, &data, || {
        forget_ids(&repo, &[first]);
        let r = prune_lib(&repo, DEFAULT_GRACE, false);
        assert!(r.packs_marked > 0, "{r:?}");
    })
    .unwrap();
    // The revived packs survive a prune whose grace period is over.
    let r = prune_lib(&repo, Duration::ZERO, false);
    assert_eq!(r.packs_deleted, 0, "{r:?}");
    let mut out = Vec::new();
    sbk::commands::restore::dump(
        &repo,
        &sbk::repository::SnapshotRef::Id(second.id),
        None,
        &mut out,
    )
    .unwrap();
    assert!(out == data);
    let opts = sbk::commands::check::CheckOptions {
        read_data: sbk::commands::check::ReadData::All,
    };
    let c = sbk::commands::check::check(&repo, &opts).unwrap();
    assert!(c.ok, "{c:?}");
}

/// If the packs are deleted before the run ends (an instant delete, or a run longer than the
/// grace period), the snapshot fails cleanly instead of naming missing blobs.
#[test]
fn a_snapshot_whose_reused_blobs_were_deleted_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let repo = lib_repo(&dir);
    let data = dump_like(32, 2 << 20);
    let first = snapshot_of(&repo, &data);
    let err = snapshot_around(&repo, &data, || {
        forget_ids(&repo, &[first]);
        let r = prune_lib(&repo, DEFAULT_GRACE, true);
        assert!(r.packs_deleted > 0, "{r:?}");
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("by a prune"), "{err}");
    assert!(repo.list_snapshots().unwrap().is_empty());
}

/// A snapshot running longer than the grace period: a prune marks its packs (in no index yet),
/// a later prune deletes them. The snapshot must fail at its end, not name deleted packs.
#[test]
fn a_snapshot_outlasting_the_grace_period_fails_instead_of_naming_deleted_packs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = lib_repo(&dir);
    // Incompressible, larger than a pack: a pack is written before the stream ends.
    let data = noise(24 << 20);
    let data_dir = dir.path().join("repo/data");
    let err = snapshot_around(&repo, &data, || {
        let t0 = std::time::Instant::now();
        while repo_files(&data_dir) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no pack written");
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = prune_lib(&repo, Duration::ZERO, false);
        assert!(r.packs_unindexed > 0, "{r:?}");
        let r = prune_lib(&repo, Duration::ZERO, false);
        assert!(r.packs_deleted > 0, "{r:?}");
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("by a prune"), "{err}");
    assert!(repo.list_snapshots().unwrap().is_empty());
    // The failed snapshot's index file lists packs the prune deleted: no snapshot needs them,
    // so check reports no damage (a note), and the next prune drops them from the index.
    let opts = sbk::commands::check::CheckOptions {
        read_data: sbk::commands::check::ReadData::All,
    };
    let c = sbk::commands::check::check(&repo, &opts).unwrap();
    assert!(c.ok, "{c:?}");
    prune_lib(&repo, Duration::ZERO, false);
    let c = sbk::commands::check::check(&repo, &opts).unwrap();
    assert!(c.ok && c.notes.iter().all(|n| !n.contains("gone")), "{c:?}");
}

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Files below a folder (packs in `data/xx/`).
fn repo_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |r| r.count()))
        .sum()
}

/// A snapshot that waited in the local spool while a prune deleted what it deduplicated
/// against is refused by `sync`, with a message naming it, instead of being uploaded damaged.
#[test]
fn sync_refuses_a_spooled_snapshot_whose_blobs_a_prune_deleted() {
    use sbk::backend::{local::LocalBackend, spool::SpoolBackend, Backend};

    let dir = tempfile::tempdir().unwrap();
    let repo = lib_repo(&dir);
    let remote: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let spool_dir = dir.path().join("spool");
    let open_spooled = || {
        let spool = Arc::new(SpoolBackend::new(remote.clone(), spool_dir.clone()));
        let mut r = sbk::Repository::open(spool.clone() as Arc<dyn Backend>, b"pw").unwrap();
        r.attach_spool(spool.clone());
        (r, spool)
    };
    let data = dump_like(33, 2 << 20);
    let first = snapshot_of(&repo, &data);
    // The same bytes, and "S3 goes down" after the run loaded the index: every blob is
    // deduplicated against the first, and the snapshot is spooled.
    let (spooled_repo, spool) = open_spooled();
    snapshot_around(&spooled_repo, &data, || {
        spool.start_spooling("test outage".into())
    })
    .unwrap();
    assert!(!spool.is_empty().unwrap());
    // Another machine forgets the first snapshot and prunes at once.
    forget_ids(&repo, &[first]);
    let r = prune_lib(&repo, DEFAULT_GRACE, true);
    assert!(r.packs_deleted > 0, "{r:?}");
    // Back online: the spooled snapshot is refused, and stays in the spool.
    let (online, spool) = open_spooled();
    let err = sbk::repository::liveness::secure_spooled(&online)
        .unwrap_err()
        .to_string();
    assert!(err.contains("waiting in the spool"), "{err}");
    assert!(!spool.is_empty().unwrap());
}

#[test]
fn stats_show_dedup_deltas_and_compression_per_source() {
    let repo = TestRepo::new();
    let versions = drifting_snapshots(&repo, 4, 3 << 20);
    ok(&repo.run_with_input(&["snapshot", "stdin", "--name", "other"], b"another source"));
    let v = json(&repo.run(&["--json", "stats"]));
    let logical: u64 = versions.iter().map(|(_, d)| d.len() as u64).sum::<u64>() + 14;
    assert_eq!(v["snapshots"], 5);
    assert_eq!(v["logical_bytes"], logical);
    assert!(v["delta_blobs"].as_u64().unwrap() > 0, "{v:#}");
    // Scattered changes touch every chunk, so exact dedup finds little (the ratio is ~1); the
    // deltas make up for it, and show in the compression and total ratios.
    assert!(v["dedup_ratio"].as_f64().unwrap() >= 0.99, "{v:#}");
    // The gain depends on where the repository's random chunker seed cuts: over 30 runs it was
    // ~230x in 26, 21-42x in 3 and 9.6x in one (zstd alone gives ~2.4x), so the bounds leave room.
    let delta_gain = u64_of(&v, &["delta_raw_bytes"]) / u64_of(&v, &["delta_stored_bytes"]);
    assert!(delta_gain >= 5, "{v:#}");
    assert!(v["total_ratio"].as_f64().unwrap() > 3.5, "{v:#}");
    assert!(v["repository_bytes"].as_u64().unwrap() >= v["stored_bytes"].as_u64().unwrap());
    // `snapshot stdin --name` is one source: the stdin snapshots form one group here.
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{v:#}");
    assert_eq!(sources[0]["snapshots"], 5);
    // Compression counts whole chunks only; deltas have their own ratio.
    let full = u64_of(&v, &["full_raw_bytes"]) as f64 / u64_of(&v, &["full_stored_bytes"]) as f64;
    assert!(
        (v["compression_ratio"].as_f64().unwrap() - full).abs() < 1e-9,
        "{v:#}"
    );
    assert!(v["delta_ratio"].as_f64().unwrap() > 10.0, "{v:#}");

    // With the first version forgotten (not pruned), its chunks stay as bases of the second's
    // deltas: they are not "distinct data" of what is left, which never exceeds what a restore
    // writes (plus the small tree blobs).
    ok(&repo.run(&["forget", &versions[0].0]));
    let v = json(&repo.run(&["--json", "stats"]));
    assert!(u64_of(&v, &["base_only_bytes"]) > 1 << 20, "{v:#}");
    assert!(
        u64_of(&v, &["unique_bytes"]) <= u64_of(&v, &["logical_bytes"]) + 64 * 1024,
        "{v:#}"
    );
    assert_eq!(
        u64_of(&v, &["unique_bytes"]) + u64_of(&v, &["base_only_bytes"]),
        u64_of(&v, &["full_raw_bytes"]) + u64_of(&v, &["delta_raw_bytes"]),
        "{v:#}"
    );
    let text = String::from_utf8_lossy(&repo.run(&["stats"]).stdout).into_owned();
    assert!(text.contains("kept only as bases of deltas"), "{text}");
    assert!(text.contains("of changed chunks"), "{text}");
}

/// Passes every call to a local folder and counts the index and snapshot files read: how much a
/// snapshot's commit check reads back, and what the file cache saves.
struct CountingBackend {
    inner: sbk::backend::local::LocalBackend,
    index_reads: std::sync::atomic::AtomicUsize,
    snapshot_reads: std::sync::atomic::AtomicUsize,
}

impl CountingBackend {
    fn new(path: std::path::PathBuf) -> Self {
        CountingBackend {
            inner: sbk::backend::local::LocalBackend::new(path),
            index_reads: Default::default(),
            snapshot_reads: Default::default(),
        }
    }

    /// (index files, snapshot files) read so far.
    fn reads(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (
            self.index_reads.load(SeqCst),
            self.snapshot_reads.load(SeqCst),
        )
    }
}

impl sbk::backend::Backend for CountingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> sbk::backend::BResult<()> {
        self.inner.create()
    }
    fn list(&self, t: FileType) -> sbk::backend::BResult<Vec<sbk::backend::FileInfo>> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, name: &str) -> sbk::backend::BResult<Vec<u8>> {
        let counter = match t {
            FileType::Index => Some(&self.index_reads),
            FileType::Snapshot => Some(&self.snapshot_reads),
            _ => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.read(t, name)
    }
    fn read_range(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u32,
    ) -> sbk::backend::BResult<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> sbk::backend::BResult<()> {
        self.inner.write(t, name, data)
    }
    fn write_staged(
        &self,
        t: FileType,
        name: &str,
        staged: &std::path::Path,
    ) -> sbk::backend::BResult<()> {
        self.inner.write_staged(t, name, staged)
    }
    fn remove(&self, t: FileType, name: &str) -> sbk::backend::BResult<()> {
        self.inner.remove(t, name)
    }
}

/// A snapshot reads the index files in force once, when it starts, and never reads back the ones
/// it wrote itself (its commit check knows them).
#[test]
fn a_snapshot_does_not_read_back_its_own_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(CountingBackend::new(dir.path().join("repo")));
    let repo = sbk::Repository::init(
        sbk::backend::Storage {
            backend: backend.clone(),
            profile: backend.inner.profile(),
        },
        b"pw",
        sbk::crypto::KdfParams::with_cost(1024, 1, 1),
        &sbk::Actor::current(),
    )
    .unwrap();
    let reads = || {
        backend
            .index_reads
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let data = dump_like(5, 3 << 20);
    snapshot_of(&repo, &data);
    assert_eq!(reads(), 0, "a first snapshot has nothing to read");
    let before = repo.list_ids(FileType::Index).unwrap().len();
    snapshot_of(&repo, &drift(&data, 1));
    assert_eq!(reads(), before, "the index files in force, once each");
}

/// `sync` checks every spooled snapshot against the repository's index files loaded once, not
/// once (or twice) per snapshot.
#[test]
fn sync_reads_the_index_once_for_all_spooled_snapshots() {
    use sbk::backend::spool::SpoolBackend;
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(CountingBackend::new(dir.path().join("repo")));
    let repo = sbk::Repository::init(
        sbk::backend::Storage {
            backend: remote.clone(),
            profile: remote.inner.profile(),
        },
        b"pw",
        sbk::crypto::KdfParams::with_cost(1024, 1, 1),
        &sbk::Actor::current(),
    )
    .unwrap();
    let data = dump_like(6, 2 << 20);
    snapshot_of(&repo, &data);
    let in_force = repo.list_ids(FileType::Index).unwrap().len();
    let open_spooled = || {
        let spool = Arc::new(SpoolBackend::new(remote.clone(), dir.path().join("spool")));
        let mut r =
            sbk::Repository::open(spool.clone() as Arc<dyn sbk::backend::Backend>, b"pw").unwrap();
        r.attach_spool(spool.clone());
        (r, spool)
    };
    // Three runs that lost the repository after loading their index: each is spooled.
    for day in 1..=3 {
        let (r, spool) = open_spooled();
        snapshot_around(&r, &drift(&data, day), || {
            spool.start_spooling("the test's outage".into())
        })
        .unwrap();
    }
    let (online, _) = open_spooled();
    let reads = || remote.index_reads.load(std::sync::atomic::Ordering::SeqCst);
    let before = reads();
    let report = sbk::commands::sync::sync(&online).unwrap().unwrap();
    assert_eq!(report.snapshots.len(), 3);
    assert_eq!(
        reads() - before,
        in_force,
        "the repository's index files, read once for the three snapshots"
    );
    assert_eq!(repo.list_snapshots().unwrap().len(), 4);
}

/// With a file cache (remote repositories have one by default), snapshot and index files are
/// downloaded once: a snapshot's parent search and index loading read nothing from the
/// storage that this machine wrote or read before, and `check` still reads the storage itself.
#[test]
fn snapshot_and_index_files_are_read_from_the_storage_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(CountingBackend::new(dir.path().join("repo")));
    let storage = || sbk::backend::Storage {
        backend: backend.clone(),
        profile: sbk::backend::Profile::default(),
    };
    let repo = sbk::Repository::init(
        storage(),
        b"pw",
        sbk::crypto::KdfParams::with_cost(1024, 1, 1),
        &sbk::Actor::current(),
    )
    .unwrap();
    let data = dump_like(5, 2 << 20);
    for i in 0..3 {
        snapshot_of(&repo, &drift(&data, i));
    }
    let cached = |repo: &mut sbk::Repository| {
        let id = repo.config().id;
        let root = dir.path().join("cache");
        repo.set_file_cache(sbk::cache::BlobCache::files(&root, &id, 1 << 30));
    };
    // A machine with an empty cache reads each file once, then never again.
    let mut repo = sbk::Repository::open(storage(), b"pw").unwrap();
    cached(&mut repo);
    let before = backend.reads();
    snapshot_of(&repo, &drift(&data, 3));
    let first = backend.reads();
    assert_eq!(
        first.1 - before.1,
        3,
        "three snapshots to search for a parent"
    );
    assert!(first.0 > before.0, "the index files, once");
    snapshot_of(&repo, &drift(&data, 4));
    assert_eq!(backend.reads(), first, "everything came from the cache");
    // A new handle on the same cache: still nothing read.
    let mut again = sbk::Repository::open(storage(), b"pw").unwrap();
    cached(&mut again);
    assert_eq!(again.list_snapshots().unwrap().len(), 5);
    again.load_index_files().unwrap();
    assert_eq!(backend.reads(), first);

    // `check` reads the storage: a damaged snapshot file is found though the cache holds a
    // whole copy (which the other commands go on using).
    let (id, _) = again.list_snapshots().unwrap().pop().unwrap();
    let path = dir.path().join("repo/snapshots").join(id.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(again.list_snapshots().unwrap().len(), 5);
    let opts = sbk::commands::check::CheckOptions {
        read_data: sbk::commands::check::ReadData::None,
    };
    let report = sbk::commands::check::check(&again, &opts).unwrap();
    assert!(
        !report.ok,
        "check must read the damaged file from the storage"
    );
}
