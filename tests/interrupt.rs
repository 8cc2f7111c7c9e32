//! Interruptions leave nothing behind: a CLI snapshot stopped by SIGINT, SIGTERM or SIGHUP ends
//! its `pg_dump`, removes its password file and staged files, claims no snapshot and exits
//! 128 + the signal; after a SIGKILL the next run sweeps the password file, and prune the
//! repository's stale `tmp/` files. Real parts: a throwaway cluster, the `sbk` binary, signals.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::pg::Cluster;
use common::{stderr, TestRepo};

/// A `pg_dump` that dumps, writes its PID to `pidfile`, then holds its output open (the same
/// process, as `sleep`): a snapshot that lasts until stopped.
fn slow_pg_dump(dir: &Path, bin: &Path, pidfile: &Path) -> PathBuf {
    let wrap = dir.join("slow-bin");
    std::fs::create_dir_all(&wrap).unwrap();
    for prog in ["pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(bin.join(prog), wrap.join(prog)).unwrap();
    }
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{real}' --version; fi\n\
         '{real}' \"$@\"\necho $$ > '{pid}'\nexec sleep 3613\n",
        real = bin.join("pg_dump").display(),
        pid = pidfile.display(),
    );
    let p = wrap.join("pg_dump");
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrap
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not reaped by its dead parent yet) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

struct Setup {
    pg: Cluster,
    repo: TestRepo,
    tmp: tempfile::TempDir,
    slow: PathBuf,
    pidfile: PathBuf,
    /// sbk processes started, killed when the test ends however it ends.
    spawned: std::cell::RefCell<Vec<i32>>,
}

impl Drop for Setup {
    /// A test that panics must not leave its `sbk` or its held dump running.
    fn drop(&mut self) {
        let dump = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        for pid in self.spawned.borrow().iter().copied() {
            if alive(pid) {
                // SAFETY: kill(2) on a process this test started and has not reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Some(pid) = dump.filter(|p| alive(*p)) {
            // SAFETY: kill(2) on the dump's process group, which this test made.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

impl Setup {
    fn new() -> Self {
        let pg = Cluster::start();
        pg.psql("postgres", "CREATE DATABASE app");
        pg.psql(
            "app",
            "CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 20000) i",
        );
        let repo = TestRepo::new();
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pg_dump.pid");
        let slow = slow_pg_dump(tmp.path(), &pg.bin, &pidfile);
        Setup {
            pg,
            repo,
            tmp,
            slow,
            pidfile,
            spawned: Default::default(),
        }
    }

    /// The system temp folder the runs use (sbk's scratch and password folder live there).
    fn temp(&self) -> PathBuf {
        let t = self.tmp.path().join("t");
        std::fs::create_dir_all(&t).unwrap();
        t
    }

    /// `sbk snapshot postgres` with the password in PGPASSWORD, so that a passfile is made.
    fn snapshot(&self, bin: &Path) -> Child {
        let _ = std::fs::remove_file(&self.pidfile);
        let child = self
            .repo
            .cmd(&["snapshot", "postgres", &self.pg.url_without_password("app")])
            .env("SBK_PG_BIN", bin)
            .env("PGPASSWORD", &self.pg.password)
            .env("TMPDIR", self.temp())
            .env_remove("XDG_RUNTIME_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.spawned.borrow_mut().push(child.id() as i32);
        child
    }

    /// Starts a snapshot and waits until its dump is done and held open.
    fn held_snapshot(&self) -> (Child, i32) {
        let child = self.snapshot(&self.slow);
        let pidfile = &self.pidfile;
        wait_for("the slow dump", Duration::from_secs(60), || {
            std::fs::read_to_string(pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
        });
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Let sbk read the dump's bytes so far (staged packs exist).
        std::thread::sleep(Duration::from_millis(300));
        (child, pid)
    }

    fn passfiles(&self) -> Vec<PathBuf> {
        files_in(&self.temp())
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("pgpass")
            })
            .collect()
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child of this test; no memory is touched.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn sigint_sigterm_and_sighup_end_the_dump_and_leave_nothing() {
    let s = Setup::new();
    // One good snapshot first.
    let out = s.snapshot(&s.pg.bin).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.repo.snapshots().len(), 1);
    assert!(s.passfiles().is_empty(), "{:?}", s.passfiles());
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let (child, dump_pid) = s.held_snapshot();
        assert_eq!(s.passfiles().len(), 1, "the run keeps its password file");
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "signal {sig}: {err}");
        assert!(
            err.contains("interrupted") && !err.contains("panicked"),
            "{err}"
        );
        wait_for("pg_dump to end", Duration::from_secs(10), || {
            !alive(dump_pid)
        });
        assert!(s.passfiles().is_empty(), "{:?}", s.passfiles());
        assert!(files_in(&s.repo.path.join("tmp")).is_empty());
        assert!(files_in(&s.temp()).is_empty(), "{:?}", files_in(&s.temp()));
        assert_eq!(s.repo.snapshots().len(), 1, "a snapshot was claimed");
    }
    let out = s.repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn after_a_sigkill_the_next_run_sweeps_the_passfile_and_prune_the_tmp_files() {
    let s = Setup::new();
    let (mut child, dump_pid) = s.held_snapshot();
    let staged: Vec<PathBuf> = files_in(&s.repo.path.join("tmp"));
    child.kill().unwrap();
    child.wait().unwrap();
    // SAFETY: kill(2) on the orphaned dump's group, which the test made.
    unsafe { libc::kill(-dump_pid, libc::SIGKILL) };
    assert_eq!(s.passfiles().len(), 1, "SIGKILL cannot be caught");
    // The next run removes the dead run's password file (and keeps its own until its end).
    let out = s.snapshot(&s.pg.bin).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.passfiles().is_empty(), "{:?}", s.passfiles());
    // Stray files in the repository's tmp/: prune removes those older than the grace period.
    // Those younger than an hour may be a running snapshot's: kept whatever the grace period.
    let stray = s.repo.path.join("tmp").join("stray");
    std::fs::write(&stray, vec![0u8; 1 << 20]).unwrap();
    let out = s.repo.run(&["--json", "prune", "--grace", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tmp_files_removed"], 0, "{v:#}");
    assert!(stray.exists());
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for f in files_in(&s.repo.path.join("tmp")) {
        let f = std::fs::File::options().write(true).open(f).unwrap();
        f.set_modified(two_hours_ago).unwrap();
    }
    let out = s.repo.run(&["--json", "prune", "--grace", "3h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tmp_files_removed"], 0, "{v:#}");
    let out = s.repo.run(&["--json", "prune", "--grace", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["tmp_files_removed"].as_u64().unwrap() >= 1,
        "{v:#} {staged:?}"
    );
    assert!(files_in(&s.repo.path.join("tmp")).is_empty());
    let out = s.repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
