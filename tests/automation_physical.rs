//! Jobs that take base backups (`type = "postgres-physical"`), through the `sbk` binary, with
//! a real cluster archiving its WAL into the repository with `sbk wal push`: the run and its
//! retention, and the WAL archive's lag in `run`, `status`, `/metrics`, the status page
//! (headless Chromium) and its alerts (a real HTTP listener), by each rule of its definition
//! (`docs/automation.md`, "Base backups and the WAL archive's lag").

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::mail::{http_sink, HttpRequest};
use common::pg::{free_port, Cluster, ClusterOptions};
use common::{sbk_bin, stderr, TestRepo, PASSWORD};

const REPO_PW_VAR: &str = "SBK_TEST_REPO_PASSWORD";
const PG_PW_VAR: &str = "SBK_TEST_PG_PASSWORD";
const HOOK_VAR: &str = "SBK_TEST_WEBHOOK_URL";

/// Makes `path` and everything below it the cluster owner's when tests run as root: the
/// archive command runs as the server's user, and a run as root may have added files.
fn give_to_server(path: &Path) {
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

/// A repository, a cluster archiving into it through `sbk wal push`, and a configuration with
/// the repository, a `postgres-physical` source of the cluster and `rest`.
struct Setup {
    repo: TestRepo,
    pg: Cluster,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(rest: &str) -> Self {
        let repo = TestRepo::new();
        let pwfile = repo.dir.path().join("password");
        std::fs::write(&pwfile, PASSWORD).unwrap();
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
        pg.psql(
            "postgres",
            "CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 20000) i",
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sbk.toml");
        let text = format!(
            r#"state_dir = "{state}"

[repository.main]
url = "{repo}"
password = {{ env = "{REPO_PW_VAR}" }}

[source.cluster]
type = "postgres-physical"
url = "{url}"
password = {{ env = "{PG_PW_VAR}" }}
pg_bin_dir = "{bin}"

{rest}
"#,
            state = dir.path().join("state").display(),
            repo = repo.path.display(),
            url = pg.url_without_password("postgres"),
            bin = pg.bin.display(),
        );
        std::fs::write(&config, text).unwrap();
        Setup {
            repo,
            pg,
            dir,
            config,
        }
    }

    fn sbk(&self, args: &[&str]) -> Command {
        let mut c = Command::new(sbk_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("SBK_") || k.starts_with("PG") {
                c.env_remove(k);
            }
        }
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env(REPO_PW_VAR, PASSWORD)
            .env(PG_PW_VAR, &self.pg.password)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.sbk(args).output().unwrap()
    }

    /// `sbk run JOB --json`, asserting success; the repository is handed back to the server's
    /// user afterwards, and its archiver woken, so that archiving goes on at once.
    fn run_job(&self, job: &str) -> serde_json::Value {
        let out = self.run(&["--json", "run", job]);
        give_to_server(self.repo.dir.path());
        self.pg.psql("postgres", "SELECT pg_reload_conf()");
        assert!(out.status.success(), "run {job}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `sbk status --json`: its exit code and the entry of `job`.
    fn status(&self, job: &str) -> (Option<i32>, serde_json::Value) {
        let out = self.run(&["--json", "status"]);
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status: {e}: {}", stderr(&out)));
        let entry = all.into_iter().find(|j| j["job"] == job).unwrap();
        (out.status.code(), entry)
    }

    /// Measurements of the WAL lag recorded so far.
    fn measurements(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("state/wal-lag.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the daemon has recorded `n` more measurements, and returns the last.
    fn next_measurements(&self, n: usize) -> serde_json::Value {
        let seen = self.measurements().len();
        wait_for("WAL lag measurements", Duration::from_secs(60), || {
            self.measurements().len() >= seen + n
        });
        self.measurements().pop().unwrap()
    }

    /// Makes the server's archiving fail (`on = false`) or work again.
    fn archiving(&self, on: bool) {
        let sql = if on {
            "ALTER SYSTEM RESET archive_command"
        } else {
            "ALTER SYSTEM SET archive_command = '/bin/false'"
        };
        self.pg.psql("postgres", sql);
        self.pg.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// Writes and ends `n` segments: the server then writes the one after them.
    fn switch_segments(&self, n: usize) {
        for _ in 0..n {
            self.pg.psql(
                "postgres",
                "INSERT INTO t SELECT i, 'x' FROM generate_series(1, 1000) i",
            );
            self.pg.psql("postgres", "SELECT pg_switch_wal()");
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn step<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {record:#}"))
}

/// The daemon, killed when the test ends, even by a panic.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next webhook alert, as JSON.
fn next_alert(hooks: &Receiver<HttpRequest>, timeout: Duration) -> serde_json::Value {
    let r = hooks
        .recv_timeout(timeout)
        .expect("an alert on the webhook");
    serde_json::from_slice(&r.body).unwrap()
}

/// A plain HTTP GET on loopback: the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).unwrap();
    buf.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// A metric's value for job `base`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let text = http_get(port, "/metrics");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("job") == Some("base"))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
}

#[test]
fn a_base_backup_job_runs_its_steps_and_watches_the_wal_archive_lag() {
    let (hook_port, hooks) = http_sink();
    let web_port = free_port();
    // Yearly, on January 1st: the daemon never starts a run here; the test runs the job.
    let s = Setup::new(&format!(
        r#"
[daemon]
listen = "127.0.0.1:{web_port}"

[alert.hook]
type = "webhook"
url = {{ env = "{HOOK_VAR}" }}

[job.base]
source = "cluster"
repository = "main"
schedule = "0 0 1 1 *"
retention = {{ keep_last = 1 }}
prune = true
check = true
retries = 0
wal_lag_alert = "3s"
wal_lag_interval = "1s"
"#
    ));

    // Two runs: each a base backup, then forget (keep_last = 1 removes the first), prune, check;
    // each ends with a measurement of the lag, below the threshold.
    let first = s.run_job("base");
    for name in ["snapshot", "forget", "prune", "check"] {
        assert_eq!(step(&first, name)["outcome"], "success", "{first:#}");
    }
    let wal = &first["wal"];
    assert_eq!(wal["over"], false, "{first:#}");
    assert!(wal["lag_secs"].as_u64().is_some(), "{first:#}");
    assert_eq!(wal["current"].as_str().map(str::len), Some(24), "{first:#}");
    let second = s.run_job("base");
    assert!(
        step(&second, "forget")["summary"]
            .as_str()
            .unwrap()
            .starts_with("removed 1 snapshot(s), kept 1"),
        "{second:#}"
    );
    let snapshots = s.repo.snapshots();
    assert_eq!(snapshots.len(), 1, "{snapshots:#?}");
    assert_eq!(snapshots[0]["source"]["kind"], "postgres-physical");
    assert!(snapshots[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "job:base"));
    let text = s.run(&["status"]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(
        common::pg::text(&text.stdout).contains("WAL archive lag"),
        "{}",
        common::pg::text(&text.stdout)
    );

    let mut daemon = Reaped(
        s.sbk(&["daemon"])
            .env(HOOK_VAR, format!("http://127.0.0.1:{hook_port}/hook"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Rule 1: the server is idle and the segment before its current one is archived: the lag
    // is 0 however old that segment grows, and nothing is alerted.
    let m = loop {
        let m = s.next_measurements(1);
        if m["newest_age_secs"].as_u64().unwrap_or(0) > 4 && m["lag_secs"] == 0 {
            break m;
        }
        assert!(
            m["newest_age_secs"].as_u64().unwrap_or(0) < 30,
            "an idle, archived server lags: {m}"
        );
    };
    assert_eq!(m["over"], false, "{m}");
    let (code, st) = s.status("base");
    assert_eq!(code, Some(0), "{st:#}");
    assert_eq!(st["wal_lag"]["lag_secs"], 0, "{st:#}");
    assert_eq!(metric(web_port, "sbk_wal_archive_lag_seconds"), Some(0.0));
    assert_eq!(
        metric(web_port, "sbk_wal_archive_lag_alert_seconds"),
        Some(3.0)
    );
    assert!(hooks.try_recv().is_err(), "an alert while caught up");

    // Rule 2: archiving fails while the server goes on: the lag is the newest archived
    // segment's age, above 3 s: one alert for the streak, however many measurements.
    s.archiving(false);
    s.switch_segments(2);
    let alert = next_alert(&hooks, Duration::from_secs(60));
    assert_eq!(alert["kind"], "wal-lag", "{alert:#}");
    assert_eq!(alert["job"], "base");
    assert!(
        alert["error"]
            .as_str()
            .unwrap()
            .contains("the WAL archive lags"),
        "{alert:#}"
    );
    let m = s.next_measurements(3);
    assert_eq!(m["over"], true, "{m}");
    assert!(m["lag_secs"].as_u64().unwrap() > 3, "{m}");
    assert!(
        hooks.recv_timeout(Duration::from_millis(500)).is_err(),
        "a second alert in one streak"
    );
    let (code, st) = s.status("base");
    assert_eq!(code, Some(1), "status exits 1 while lagging: {st:#}");
    assert_eq!(st["wal_lag"]["over"], true);
    let text = common::pg::text(&s.run(&["status"]).stdout);
    assert!(text.contains("WAL LAG"), "{text}");
    assert!(metric(web_port, "sbk_wal_archive_lag_seconds").unwrap() > 3.0);
    assert_eq!(metric(web_port, "sbk_wal_archive_lagging"), Some(1.0));

    // Archiving works again: the archiver catches up, the lag drops to 0, one recovery.
    s.archiving(true);
    let alert = next_alert(&hooks, Duration::from_secs(90));
    assert_eq!(alert["kind"], "wal-lag-recovered", "{alert:#}");
    let (code, st) = s.status("base");
    assert_eq!(code, Some(0), "{st:#}");
    assert_eq!(st["wal_lag"]["lag_secs"], 0, "{st:#}");

    // The status page draws the runs and the lag; the browser reports no error.
    let page = common::browser::render(&format!("http://127.0.0.1:{web_port}/"));
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    let charts = common::browser::charts(&page.dom, "base");
    let ids: Vec<&str> = charts.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["bytes-added", "duration", "repository-size", "wal-lag"],
        "{}",
        page.dom
    );
    for (id, d) in &charts {
        assert!(d.starts_with('M') && d.len() > 8, "chart {id}: {d:?}");
    }
    assert!(
        page.dom.contains("class=\"threshold\""),
        "the alert level is drawn"
    );

    // Rule 3: without the server, the lag is the newest segment's age alone: it grows past
    // the threshold and a new streak alerts, saying the server was not reached.
    s.pg.kill();
    let alert = next_alert(&hooks, Duration::from_secs(60));
    assert_eq!(alert["kind"], "wal-lag", "{alert:#}");
    assert!(
        alert["details"].as_str().unwrap().contains("server:"),
        "{alert:#}"
    );
    let m = s.measurements().pop().unwrap();
    assert!(
        m["current"].is_null() && m["lag_secs"].as_u64().unwrap() > 3,
        "{m}"
    );

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A base-backup job's restore drill, run as the server's user (PostgreSQL refuses root): the
/// newest base backup restored into a scratch folder, checked against its manifest, recovered
/// through the archive by a private server; the password reaches that server's `wal fetch`
/// through a private file, since the configuration has it only in the environment.
#[test]
fn a_base_backup_job_drills_its_newest_base_backup() {
    let s = Setup::new(
        r#"
[job.base]
source = "cluster"
repository = "main"
schedule = "0 0 1 1 *"
drill = true
retries = 0
"#,
    );
    // The run (and its state folder) belongs to the server's user.
    give_to_server(s.dir.path());
    give_to_server(s.repo.dir.path());
    let mut c = common::pg::as_server(s.sbk(&["--json", "run", "base"]));
    c.env("PGUSER", "postgres")
        .env("PGPASSWORD", &s.pg.password);
    let out = c.output().unwrap();
    assert!(out.status.success(), "run: {}", stderr(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drill = step(&record, "drill");
    assert_eq!(drill["outcome"], "success", "{record:#}");
    assert!(
        drill["summary"]
            .as_str()
            .unwrap()
            .contains("files match its manifest"),
        "{record:#}"
    );
    assert_eq!(record["drill"]["ok"], true, "{record:#}");
}
