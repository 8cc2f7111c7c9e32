//! Automation through the `sbk` binary, with real parts: a throwaway PostgreSQL cluster, a local
//! repository, a real SMTP server and HTTP listener for alerts, headless Chromium for the status
//! page, and real signals.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mail::{http_sink, start_smtp, SMTP_PASSWORD, SMTP_USER};
use common::pg::{free_port, Cluster};
use common::{sbk_bin, stderr, TestRepo, PASSWORD};

/// Environment variables the configurations below take their secrets from.
const REPO_PW_VAR: &str = "SBK_TEST_REPO_PASSWORD";
const PG_PW_VAR: &str = "SBK_TEST_PG_PASSWORD";
const SMTP_PW_VAR: &str = "SBK_TEST_SMTP_PASSWORD";
const HOOK_VAR: &str = "SBK_TEST_WEBHOOK_URL";

struct Setup {
    repo: TestRepo,
    pg: Cluster,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A cluster with a database `app` holding a table, a repository, and a configuration with
    /// the repository, the source and `rest` (jobs, alerts).
    fn new(rest: &str) -> Self {
        let pg = Cluster::start();
        pg.psql("postgres", "CREATE DATABASE app");
        pg.psql(
            "app",
            "CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 20000) i",
        );
        let repo = TestRepo::new();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sbk.toml");
        let s = Setup {
            repo,
            pg,
            dir,
            config,
        };
        s.write_config(rest);
        s
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write_config(&self, rest: &str) {
        let text = format!(
            r#"state_dir = "{state}"

[repository.main]
url = "{repo}"
password = {{ env = "{REPO_PW_VAR}" }}

[source.app]
url = "{url}"
password = {{ env = "{PG_PW_VAR}" }}
databases = ["app"]
count_rows = true
pg_bin_dir = "{bin}"

{rest}
"#,
            state = self.state().display(),
            repo = self.repo.path.display(),
            url = self.pg.url_without_password("app"),
            bin = self.pg.bin.display(),
        );
        std::fs::write(&self.config, text).unwrap();
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
            .env(SMTP_PW_VAR, SMTP_PASSWORD)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.sbk(args).output().unwrap()
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

#[test]
fn config_check_explains_each_broken_file_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[repository.main]\nurl = \"/b\"\npassword = \"hunter2\"\n",
            "3:12: `password` is a secret and may not be written in the file",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[source.app]\nurl = \"postgresql://u:hunter2@db/app\"\n",
            "5:7: `url` holds a password",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[job.a]\nrepository = \"main\"\nsnapshot = false\nschedule = \"61 * * * *\"\n",
            "7:12: `schedule`: \"61 * * * *\" is not a valid cron expression",
        ),
        (
            "[job.a]\nrepository = \"nowhere\"\nsnapshot = false\nschedule = \"@daily\"\n",
            "2:14: no repository \"nowhere\": add a [repository.nowhere] table",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\nretention = 3\n",
            "4:1: unknown field `retention`",
        ),
        ("[job.a\n", "1:7:"),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[source.app]\nurl = \"postgresql://db/app\"\n[job.a]\nsource = \"app\"\nrepository = \"main\"\nsnapshot = false\nschedule = \"@daily\"\nretention = { keep_last = 3 }\n",
            "11:13: job \"a\" takes no snapshots, so a retention of its own snapshots has nothing to forget: set retention_scope = \"source\"",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[source.app]\nurl = \"postgresql://db/app\"\n[job.a]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nretention_scope = \"mine\"\n",
            "10:19: `retention_scope` \"mine\": \"job\" or \"source\"",
        ),
        (
            "[alert.ops]\ntype = \"email\"\nserver = \"smtp\"\nfrom = \"sbk@example.com\"\nto = [\"not an address\"]\n",
            "5:6: \"not an address\" is not an e-mail address",
        ),
        (
            "[alert.hook]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/T/B/token\"\n",
            "3:7: `url` is a secret and may not be written in the file",
        ),
        // Base backups: the fields of dumps, a drill with a scratch server, and the WAL lag on
        // the wrong job.
        (
            "[source.c]\ntype = \"postgres-physical\"\nurl = \"postgresql://db/postgres\"\ndatabases = [\"app\"]\ncount_rows = true\n",
            "1:9: `databases`, `count_rows` belong to a source with type = \"postgres\" (dumps)",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[source.app]\nurl = \"postgresql://db/app\"\n[job.a]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nwal_lag_alert = \"15m\"\n",
            "10:17: `wal_lag_alert`: job \"a\" takes no base backups",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[source.c]\ntype = \"postgres-physical\"\nurl = \"postgresql://db/postgres\"\n[job.a]\nsource = \"c\"\nrepository = \"main\"\nschedule = \"@daily\"\nwal_lag_alert = \"soon\"\n",
            "11:17: `wal_lag_alert`: \"soon\" is not a duration",
        ),
        (
            "[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\n[source.c]\ntype = \"postgres-physical\"\nurl = \"postgresql://db/postgres\"\n[job.a]\nsource = \"c\"\nrepository = \"main\"\nschedule = \"@daily\"\ndrill = true\ndrill_scratch = \"postgresql://scratch/postgres\"\n",
            "12:17: the source of this job takes base backups (type = \"postgres-physical\"): their drill",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(sbk_bin())
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "case {i}: {err}");
        let want = format!("{}:{expected}", path.display());
        assert!(err.contains(&want), "case {i}: want {want:?} in:\n{err}");
        assert!(!err.contains("hunter2"), "case {i} shows the secret: {err}");
        assert!(
            !err.contains("/T/B/token"),
            "case {i} shows the secret: {err}"
        );
    }
}

/// Problems of every kind in one file are all reported in one run, in line order; the file
/// may also be given as `config check FILE`; a missing file is named without a position.
#[test]
fn config_check_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexist.toml");
    let out = Command::new(sbk_bin())
        .args(["config", "check"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: no such file: `sbk config init FILE`",
            missing.display()
        )),
        "{err}"
    );
    assert!(!err.contains(":0:0"), "{err}");
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        "bogus = 1\n\n[repository.main]\nurl = \"/b\"\npassword = { env = \"X\" }\nextra = 2\n\n\
         [source.app]\nurl = \"postgresql://db/app\"\ndatabases = 5\n\n\
         [job.a]\nsource = \"nosuch\"\nrepository = \"main\"\nschedule = \"@daily\"\n\
         retention = { keep_lastt = 2 }\n",
    )
    .unwrap();
    let out = Command::new(sbk_bin())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let p = path.display().to_string();
    let want = [
        format!("{p}:1:1: unknown field `bogus`"),
        format!("{p}:6:1: unknown field `extra`"),
        format!("{p}:10:13: invalid type: integer `5`"),
        format!("{p}:13:10: no source \"nosuch\""),
        format!("{p}:16:15: unknown field `keep_lastt`"),
    ];
    let mut at = 0;
    for w in &want {
        let found = err[at..].find(w.as_str());
        assert!(found.is_some(), "want {w:?} (in order) in:\n{err}");
        at += found.unwrap();
    }
    assert!(err.contains("5 problem(s)"), "{err}");
}

#[test]
fn config_init_writes_the_seed_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbk.toml");
    let out = Command::new(sbk_bin())
        .args(["config", "init"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&path).unwrap();
    for needle in [
        "0 2 * * *",
        "0 8,14,20 * * *",
        "0 3 * * 0",
        "0 4 1 * *",
        "keep_daily = 7",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    let check = Command::new(sbk_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    // Never overwritten.
    let again = Command::new(sbk_bin())
        .args(["config", "init"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("not overwritten"));
    // The schedules for cron and systemd.
    let cron = Command::new(sbk_bin())
        .args([
            "schedule",
            "print",
            "--cron",
            "--sbk",
            "/usr/bin/sbk",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let cron = common::pg::text(&cron.stdout);
    assert!(
        cron.contains("0 2 * * * set -a; . ")
            && cron.contains("; set +a; exec /usr/bin/sbk --config ")
            && cron.contains(" run app-daily --quiet"),
        "{cron}"
    );
    let systemd = Command::new(sbk_bin())
        .args(["schedule", "print", "--systemd", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let systemd = common::pg::text(&systemd.stdout);
    assert!(
        systemd.contains("OnCalendar=Sun *-*-* 03:00:00"),
        "{systemd}"
    );
    assert!(systemd.contains("OnCalendar=*-*-01 04:00:00"), "{systemd}");
    assert!(
        systemd.contains("OnCalendar=*-*-* 08,14,20:00:00"),
        "{systemd}"
    );
}

#[test]
fn run_snapshots_forgets_prunes_checks_and_drills_and_records_everything() {
    let s = Setup::new(
        r#"
[job.app]
source = "app"
repository = "main"
schedule = "@daily"
tags = ["nightly"]
retention = { keep_last = 2 }
prune = true
prune_grace = "0s"
check = true
check_read_data = "all"
drill = true
drill_scratch = "SCRATCH"
"#,
    );
    let scratch = s.pg.url_without_password("postgres");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("SCRATCH", &scratch);
    std::fs::write(
        &s.config,
        text + &format!("drill_password = {{ env = \"{PG_PW_VAR}\" }}\n"),
    )
    .unwrap();
    let logs = s.dir.path().join("logs");
    let metrics = s.dir.path().join("metrics/sbk.prom");
    for round in 0..3 {
        s.pg.psql(
            "app",
            &format!("UPDATE t SET h = md5(h) WHERE i % 50 = {round}"),
        );
        let out = s
            .sbk(&["run", "app", "--json", "--log-dir"])
            .arg(&logs)
            .arg("--metrics-file")
            .arg(&metrics)
            .output()
            .unwrap();
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["outcome"], "success", "{r:#}");
        for name in ["snapshot", "forget", "prune", "check", "drill"] {
            assert_eq!(step(&r, name)["outcome"], "success", "{name}: {r:#}");
        }
        assert!(r["snapshot"]["bytes_in"].as_u64().unwrap() > 500_000);
        assert!(r["snapshot"]["upload_secs"].as_f64().unwrap() > 0.0);
        assert_eq!(r["drill"]["ok"], true);
        assert!(r["drill"]["tables"].as_u64().unwrap() >= 1);
    }
    // Retention kept two snapshots, tagged.
    let snaps = s.repo.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:#?}");
    assert!(snaps.iter().all(|x| x["tags"][0] == "nightly"));
    // The history has all three runs; status is happy; the report counts them.
    let history = std::fs::read_to_string(s.state().join("history.jsonl")).unwrap();
    assert_eq!(history.matches("\"event\":\"finish\"").count(), 3);
    let status = s.run(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(common::pg::text(&status.stdout).contains("app "));
    let report = s.run(&["report", "--since", "1h", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["jobs"][0]["runs"], 3);
    assert_eq!(report["jobs"][0]["success_rate"], 1.0);
    assert_eq!(report["jobs"][0]["drills_passed"], 3);
    let md = s.run(&["report", "--format", "markdown"]);
    assert!(common::pg::text(&md.stdout).contains("| app | 3 | 100% |"));
    let html = common::pg::text(&s.run(&["report", "--format", "html"]).stdout);
    assert!(
        html.contains("<td>app</td><td>3</td><td>100%</td>"),
        "{html}"
    );
    // The textfile parses as Prometheus text and carries the job's figures.
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let scrape = prometheus_parse::Scrape::parse(prom.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|x| x.metric == name && x.labels.get("job") == Some("app"))
            .map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                _ => panic!("{name} is not a number"),
            })
            .unwrap_or_else(|| panic!("{name} missing:\n{prom}"))
    };
    assert_eq!(value("sbk_job_last_run_success"), 1.0);
    assert_eq!(value("sbk_job_runs_total"), 3.0);
    assert_eq!(value("sbk_repository_snapshots"), 2.0);
    assert!(value("sbk_job_last_bytes_read") > 500_000.0);
    assert!(value("sbk_repository_size_bytes") > 0.0);
    assert!(value("sbk_job_last_compression_ratio") > 1.0);
    assert_eq!(value("sbk_job_last_drill_success"), 1.0);
    // Logs: JSON lines, and no secret anywhere.
    let log = std::fs::read_to_string(logs.join("sbk.log")).unwrap();
    assert!(log.lines().count() >= 6, "{log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    for secret in [PASSWORD, s.pg.password.as_str()] {
        assert!(!log.contains(secret));
        assert!(!history.contains(secret));
        assert!(!prom.contains(secret));
    }
}

/// Each job forgets only the snapshots it made: another job's and a person's snapshots of the
/// same database stay. The person's snapshot came over the Unix socket and the jobs' over TCP,
/// and all are one source (the cluster's system identifier), shown with host and database.
/// A `retention_scope = "source"` job takes the whole series, and `config check` notes that.
#[test]
fn jobs_forget_only_the_snapshots_they_made() {
    let jobs = r#"
[job.app]
source = "app"
repository = "main"
schedule = "@daily"
retries = 0
retention = { keep_last = 1 }

[job.other]
source = "app"
repository = "main"
schedule = "@hourly"
retries = 0
retention = { keep_last = 2 }
"#;
    let s = Setup::new(jobs);
    let socket_url = format!(
        "postgresql://postgres@/app?host={}&port={}",
        s.pg.dir.path().display(),
        s.pg.port
    );
    let manual = s
        .repo
        .cmd(&["snapshot", "postgres", &socket_url, "--json"])
        .env("PGPASSWORD", &s.pg.password)
        .output()
        .unwrap();
    assert!(manual.status.success(), "{}", stderr(&manual));
    let manual: serde_json::Value = serde_json::from_slice(&manual.stdout).unwrap();
    assert_eq!(manual["dumped"][0]["name"], "app", "{manual:#}");
    assert!(manual["dumped"][0]["dump_bytes"].as_u64().unwrap() > 100_000);
    for job in ["app", "app", "other", "other", "other", "app"] {
        let out = s.run(&["run", job]);
        assert!(out.status.success(), "{job}: {}", stderr(&out));
    }
    let tagged = |tag: &str| {
        s.repo
            .snapshots()
            .iter()
            .filter(|x| x["tags"].as_array().unwrap().iter().any(|t| t == tag))
            .count()
    };
    assert_eq!(tagged("job:app"), 1, "{:#?}", s.repo.snapshots());
    assert_eq!(tagged("job:other"), 2);
    assert_eq!(s.repo.snapshots().len(), 4, "the manual snapshot stays");

    // One source, however reached: a policy over everything sees one group.
    let dry = s
        .repo
        .run(&["forget", "--keep-last", "1", "--dry-run", "--json"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let groups: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups:#}");
    assert!(groups[0]["source"]
        .as_str()
        .unwrap()
        .contains("system_identifier"));
    // `forget --tag` narrows a policy to one job's snapshots.
    let dry = s.repo.run(&[
        "forget",
        "--keep-last",
        "1",
        "--tag",
        "job:other",
        "--dry-run",
        "--json",
    ]);
    let groups: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        groups[0]["remove"].as_array().unwrap().len(),
        1,
        "{groups:#}"
    );
    let table = common::pg::text(&s.repo.run(&["snapshots"]).stdout);
    assert!(
        table.contains(&format!("postgres app @ 127.0.0.1:{}", s.pg.port)),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "postgres app @ {}:{}",
            s.pg.dir.path().display(),
            s.pg.port
        )),
        "{table}"
    );

    // Scoped to the source, the job's retention takes every snapshot of it, and check says so.
    s.write_config(&jobs.replace(
        "retention = { keep_last = 1 }",
        "retention = { keep_last = 1 }\nretention_scope = \"source\"",
    ));
    let check = s.run(&["config", "check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("job \"app\"'s retention (retention_scope = \"source\") also forgets the snapshots of source \"app\" that job(s) \"other\" take"),
        "{}",
        stderr(&check)
    );
    assert!(s.run(&["run", "app"]).status.success());
    assert_eq!(s.repo.snapshots().len(), 1);
}

/// `status` says what is known and no more: a maintenance job is judged by its own runs (never
/// run: waiting, not overdue), next run times only while a daemon runs to start them, and a
/// report over a period without runs says so instead of 0%.
#[test]
fn status_and_report_are_honest_about_maintenance_jobs_daemons_and_no_runs() {
    let port = free_port();
    let s = Setup::new(&format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nretries = 0\n\n\
         [job.tidy]\nsource = \"app\"\nrepository = \"main\"\nsnapshot = false\n\
         schedule = \"@weekly\"\nretries = 0\ncheck = true\ncheck_read_data = \"1%\"\n"
    ));
    let md = common::pg::text(&s.run(&["report", "--format", "markdown"]).stdout);
    assert!(md.contains("| tidy | 0 | no runs yet |"), "{md}");
    let json = s.run(&["report", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(r["jobs"][0]["success_rate"].is_null(), "{r:#}");

    assert!(s.run(&["run", "app"]).status.success());
    let out = s.run(&["status"]);
    let text = common::pg::text(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let tidy = text.lines().find(|l| l.starts_with("tidy ")).unwrap();
    assert!(
        tidy.contains("waiting") && tidy.contains("no good run yet"),
        "{tidy}"
    );
    assert!(!text.contains("OVERDUE"), "{text}");
    assert!(text.contains("no daemon running"), "{text}");
    let v: serde_json::Value =
        serde_json::from_slice(&s.run(&["status", "--json"]).stdout).unwrap();
    assert!(v[0]["next_run"].is_null(), "{v:#}");

    // A maintenance run reads at least one pack at 1% and says how many.
    let run = s.run(&["run", "tidy", "--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let check = step(&r, "check");
    assert!(
        check["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("read 1 of them"),
        "{check:#}"
    );
    let text = common::pg::text(&s.run(&["status"]).stdout);
    let tidy = text.lines().find(|l| l.starts_with("tidy ")).unwrap();
    assert!(
        tidy.contains(" ok ") && tidy.contains("newest good run"),
        "{tidy}"
    );

    let _daemon = Reaped(
        s.sbk(&["daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the daemon", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let v: serde_json::Value =
        serde_json::from_slice(&s.run(&["status", "--json"]).stdout).unwrap();
    assert!(v[0]["next_run"].is_string(), "{v:#}");
    let second = s.run(&["daemon", "--listen", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("a daemon is already running"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn a_second_run_of_a_running_job_is_refused() {
    // No retry: the default waits an hour before it.
    let s = Setup::new(
        "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nretries = 0\n",
    );
    let locks = s.state().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let held = std::fs::File::create(locks.join("app.lock")).unwrap();
    held.lock().unwrap();
    let out = s.run(&["run", "app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("job \"app\" is already running"),
        "{}",
        stderr(&out)
    );
    assert!(s.repo.snapshots().is_empty());
    drop(held);
    let out = s.run(&["run", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn status_exits_1_once_the_newest_good_snapshot_is_too_old() {
    let s = Setup::new(
        "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nmax_age = \"3s\"\n",
    );
    let never = s.run(&["status"]);
    assert_eq!(never.status.code(), Some(1), "no snapshot yet is overdue");
    assert!(s.run(&["run", "app"]).status.success());
    let fresh = s.run(&["status", "--json"]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let v: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(v[0]["overdue"], false);
    std::thread::sleep(Duration::from_secs(4));
    let stale = s.run(&["status"]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("older than allowed for: app"));
    assert!(common::pg::text(&stale.stdout).contains("OVERDUE"));
}

/// A plain HTTP GET on loopback: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(start.elapsed() < timeout, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn daemon_alerts_once_retries_and_alerts_recovery_and_serves_its_pages() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(mail_dir.path(), true);
    let (hook_port, hooks) = http_sink();
    let (digest_port, digests) = http_sink();
    let web_port = free_port();
    let s = Setup::new(&format!(
        r#"
[daemon]
listen = "127.0.0.1:{web_port}"

[alert.mail]
type = "email"
server = "localhost"
port = {smtp_port}
security = "starttls"
username = "{SMTP_USER}"
password = {{ env = "{SMTP_PW_VAR}" }}
from = "sbk <sbk@example.com>"
to = ["ops@example.com"]
ca_file = "{cert}"

[alert.hook]
type = "webhook"
url = {{ env = "{HOOK_VAR}" }}

[alert.digest]
type = "webhook"
url = {{ env = "SBK_TEST_DIGEST_URL" }}
on = []
digest = "*/5 * * * * *"

[job.app-2s]
source = "app"
repository = "main"
schedule = "*/2 * * * * *"
retries = 1
retry_delay = "1s"
"#,
        smtp_port = smtp.port,
        cert = smtp.cert.display(),
    ));
    // The database is down when the daemon starts.
    s.pg.kill();
    let hook_url = format!("http://127.0.0.1:{hook_port}/hook/secret-token-123");
    let logs = s.dir.path().join("logs");
    let mut daemon = Reaped(
        s.sbk(&["daemon", "--log-dir"])
            .arg(&logs)
            .env(HOOK_VAR, &hook_url)
            .env(
                "SBK_TEST_DIGEST_URL",
                format!("http://127.0.0.1:{digest_port}/digest"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mails = || smtp.got.lock().unwrap().clone();
    wait_for("the failure mail", Duration::from_secs(60), || {
        !mails().is_empty()
    });
    // Let it retry and fail a few more scheduled runs: no more alerts while it stays down.
    wait_for("a failed retry", Duration::from_secs(30), || {
        let h = std::fs::read_to_string(s.state().join("history.jsonl")).unwrap_or_default();
        h.matches("\"outcome\":\"failure\"").count() >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mails().len(), 1, "one failure mail while down");
    s.pg.restart();
    wait_for("the recovery mail", Duration::from_secs(60), || {
        mails().len() >= 2
    });
    let got = mails();
    assert!(got[0].data.contains("FAILED"), "{}", got[0].data);
    assert!(got[0].data.contains("app-2s") && got[0].data.contains("snapshot"));
    assert!(got[1].data.contains("recovered"), "{}", got[1].data);
    for m in &got {
        assert!(!m.data.contains(&s.pg.password) && !m.data.contains(SMTP_PASSWORD));
    }
    // The webhook got the same two.
    let mut bodies = Vec::new();
    while let Ok(r) = hooks.recv_timeout(Duration::from_secs(5)) {
        bodies.push(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap());
        if bodies.len() == 2 {
            break;
        }
    }
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["kind"], "failure");
    assert_eq!(bodies[0]["job"], "app-2s");
    assert!(bodies[0]["text"].as_str().unwrap().contains("app-2s"));
    assert_eq!(bodies[1]["kind"], "recovery");
    assert!(bodies[0]["last_success"].is_null());
    // The digest channel takes no failure or recovery alerts, only its digest of every job.
    let digest = digests
        .recv_timeout(Duration::from_secs(10))
        .expect("a digest");
    let digest: serde_json::Value = serde_json::from_slice(&digest.body).unwrap();
    assert_eq!(digest["kind"], "digest");
    assert!(
        digest["details"].as_str().unwrap().contains("app-2s"),
        "{digest:#}"
    );

    // The endpoints.
    let (status, body) = http_get(web_port, "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let (status, metrics) = http_get(web_port, "/metrics");
    assert!(status.contains("200"));
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let failures = scrape
        .samples
        .iter()
        .find(|x| x.metric == "sbk_job_failures_total")
        .expect("failures metric");
    assert!(matches!(failures.value, prometheus_parse::Value::Counter(v) if v >= 2.0));
    assert!(scrape
        .samples
        .iter()
        .any(|x| x.metric == "sbk_job_last_success_timestamp_seconds"));
    // The status page, rendered by a real browser. The job runs every 2 s: its last result
    // reads "running" while a run is under way, so wait for a moment between runs.
    let mut page = None;
    wait_for(
        "a rendered page between runs",
        Duration::from_secs(60),
        || {
            let p = common::browser::render(&format!("http://127.0.0.1:{web_port}/"));
            let between = p.dom.contains("success");
            page = Some(p);
            between
        },
    );
    let page = page.unwrap();
    let dom = &page.dom;
    assert!(dom.contains("data-job=\"app-2s\""), "{dom}");
    assert!(dom.contains("Recent failures"));
    // The charts: drawn by sbk as inline SVG, each with a series, nothing the browser
    // complains about (an SVG path it cannot parse is a console error).
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    let charts = common::browser::charts(dom, "app-2s");
    let ids: Vec<&str> = charts.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["bytes-added", "duration", "repository-size"], "{dom}");
    for (id, d) in &charts {
        assert!(
            d.starts_with('M') && d.len() > 8,
            "chart {id} has no series: {d:?}"
        );
    }
    assert!(
        dom.contains("<text class=\"last\""),
        "no last value labelled"
    );

    sigterm(&daemon.0);
    let st = wait_exit(&mut daemon.0, Duration::from_secs(60));
    assert!(st.success(), "daemon exit: {st}");
    let check = s.repo.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(!s.repo.snapshots().is_empty());
    // Errors also land in their own log file; no secret in any log.
    let errors = std::fs::read_to_string(logs.join("sbk-errors.log")).unwrap();
    assert!(errors.contains("app-2s"), "{errors}");
    let all = std::fs::read_to_string(logs.join("sbk.log")).unwrap();
    assert!(all.contains("step failed") && all.contains("job succeeded"));
    for text in [&errors, &all] {
        for secret in [
            PASSWORD,
            s.pg.password.as_str(),
            SMTP_PASSWORD,
            "secret-token-123",
        ] {
            assert!(!text.contains(secret), "a secret in the logs");
        }
    }
}

/// A `pg_dump` that dumps, then holds its output open: a snapshot that lasts until killed.
fn slow_pg_dump(dir: &Path, bin: &Path) -> PathBuf {
    let wrap = dir.join("slow-bin");
    std::fs::create_dir_all(&wrap).unwrap();
    for prog in ["pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(bin.join(prog), wrap.join(prog)).unwrap();
    }
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{real}' --version; fi\n'{real}' \"$@\"\nsleep 3607\n",
        real = bin.join("pg_dump").display()
    );
    let p = wrap.join("pg_dump");
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrap
}

#[test]
fn sigterm_during_a_snapshot_stops_cleanly_and_the_repository_passes_check() {
    let s = Setup::new("");
    // One good snapshot first, by hand.
    let first = s.run(&["run", "app"]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "no job yet: {}",
        stderr(&first)
    );
    let job = "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\n";
    s.write_config(job);
    assert!(s.run(&["run", "app"]).status.success());
    let before = s.repo.snapshots();
    assert_eq!(before.len(), 1);
    // Now the slow dump, run by the daemon at its every-second schedule.
    let slow = slow_pg_dump(s.dir.path(), &s.pg.bin);
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(
            &format!("pg_bin_dir = \"{}\"", s.pg.bin.display()),
            &format!("pg_bin_dir = \"{}\"", slow.display()),
        )
        .replace("schedule = \"@daily\"", "schedule = \"*/1 * * * * *\"");
    std::fs::write(&s.config, text).unwrap();
    let mut daemon = Reaped(
        s.sbk(&["daemon", "--listen", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until the dump has run and sbk waits for the end of its output.
    wait_for("the slow dump", Duration::from_secs(60), || {
        Command::new("pgrep")
            .args(["-f", "sleep 3607"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = Instant::now();
    sigterm(&daemon.0);
    let st = wait_exit(&mut daemon.0, Duration::from_secs(30));
    assert!(st.success(), "daemon exit: {st}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "the stop waited for the dump"
    );
    // Nothing half-done is listed; the history says interrupted; check passes.
    assert_eq!(s.repo.snapshots().len(), 1);
    let history = std::fs::read_to_string(s.state().join("history.jsonl")).unwrap();
    assert!(history.contains("\"outcome\":\"interrupted\""), "{history}");
    let check = s.repo.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let id = before[0]["id"].as_str().unwrap();
    let dump = s.repo.run(&["dump", id, "app.pgdump"]);
    assert!(dump.status.success() && dump.stdout.len() > 100_000);
}

#[test]
fn a_job_on_s3_takes_its_credentials_from_the_configured_secrets() {
    let server = common::s3::S3Server::start();
    let s3repo = TestRepo::on_s3(&server, "jobs/sbk");
    // No retry: the default waits an hour before it.
    let s = Setup::new(
        "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nretries = 0\n",
    );
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("url = \"{}\"", s.repo.path.display()),
        &format!(
            "url = \"{}\"\naccess_key_id = {{ env = \"SBK_TEST_S3_KEY\" }}\n\
             secret_access_key = {{ file = \"{}\" }}\ns3_region = \"us-east-1\"\ncache_dir = \"{}\"",
            server.url("jobs/sbk"),
            s.dir.path().join("s3-secret").display(),
            s.dir.path().join("cache").display()
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    std::fs::write(
        s.dir.path().join("s3-secret"),
        format!("{}\n", server.secret_key),
    )
    .unwrap();
    // No AWS_* credentials in the environment: only the configured secrets can work.
    let out = s
        .sbk(&["run", "app", "--json"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SBK_TEST_S3_KEY", &server.access_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshot"]["spooled"], false);
    assert!(r["repository"]["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s3repo.snapshots().len(), 1);
    let history = std::fs::read_to_string(s.state().join("history.jsonl")).unwrap();
    assert!(!history.contains(&server.secret_key));
}

fn sighup(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
}

/// SIGHUP: a broken file is logged and the running configuration kept; a valid one adds a job,
/// which then runs at its schedule and shows on the status endpoint.
#[test]
fn sighup_reloads_a_valid_configuration_and_keeps_the_running_one_otherwise() {
    let yearly = "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@yearly\"\n";
    let s = Setup::new(yearly);
    let port = free_port();
    let logs = s.dir.path().join("logs");
    let mut daemon = Reaped(
        s.sbk(&[
            "daemon",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-dir",
            logs.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for("the daemon's endpoint", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    std::fs::write(&s.config, "state_dir = = \"broken\"\n").unwrap();
    sighup(&daemon.0);
    wait_for("the reload error", Duration::from_secs(30), || {
        std::fs::read_to_string(logs.join("sbk-errors.log"))
            .is_ok_and(|l| l.contains("configuration not reloaded"))
    });
    let (line, body) = http_get(port, "/api/status");
    assert!(line.contains("200"), "{line}");
    assert!(
        body.contains("\"app\""),
        "the running jobs are kept: {body}"
    );
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );

    s.write_config(&format!(
        "{yearly}\n[job.often]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"*/1 * * * * *\"\n"
    ));
    sighup(&daemon.0);
    wait_for("a run of the added job", Duration::from_secs(60), || {
        std::fs::read_to_string(s.state().join("history.jsonl")).is_ok_and(|h| {
            h.lines().any(|l| {
                l.contains("\"event\":\"finish\"")
                    && l.contains("\"job\":\"often\"")
                    && l.contains("\"outcome\":\"success\"")
            })
        })
    });
    let (_, body) = http_get(port, "/api/status");
    assert!(body.contains("\"often\""), "{body}");
    let log = std::fs::read_to_string(logs.join("sbk.log")).unwrap();
    assert!(log.contains("configuration reloaded"), "{log}");
    sigterm(&daemon.0);
    let st = wait_exit(&mut daemon.0, Duration::from_secs(60));
    assert!(st.success(), "daemon exit: {st}");
}

/// A damaged snapshot file stops no run: the job snapshots, forgets and prunes (keeping
/// everything) around it, the status and metrics show the damage, and one alert names it once.
#[test]
fn a_damaged_snapshot_is_passed_over_shown_and_alerted_once() {
    let (hook_port, hooks) = http_sink();
    let s = Setup::new(
        r#"
[alert.hook]
type = "webhook"
url = { env = "SBK_TEST_WEBHOOK_URL" }

[job.app]
source = "app"
repository = "main"
schedule = "@daily"
retention = { keep_last = 5 }
prune = true
alerts = ["hook"]
"#,
    );
    let hook_url = format!("http://127.0.0.1:{hook_port}/hook");
    let run = |round: u32| {
        let metrics = s.dir.path().join("sbk.prom");
        let out = s
            .sbk(&["run", "app", "--json", "--metrics-file"])
            .arg(&metrics)
            .env(HOOK_VAR, &hook_url)
            .output()
            .unwrap();
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (r, std::fs::read_to_string(&metrics).unwrap())
    };
    let (r, metrics) = run(0);
    assert!(r["repository"].get("damaged").is_none(), "{r:#}");
    assert!(
        metrics.contains("sbk_repository_damaged_files{job=\"app\",repository=\"main\"} 0"),
        "{metrics}"
    );
    let snap = s.repo.files("snapshots").pop().unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    b[60] ^= 1;
    std::fs::write(&snap, b).unwrap();
    for round in 1..3 {
        let (r, metrics) = run(round);
        assert_eq!(r["outcome"], "success", "{r:#}");
        for name in ["snapshot", "forget", "prune"] {
            assert_eq!(step(&r, name)["outcome"], "success", "{name}: {r:#}");
        }
        let damaged = r["repository"]["damaged"].to_string();
        let name = snap.file_name().unwrap().to_str().unwrap();
        assert!(
            damaged.contains(&name[..8]) && damaged.contains("sbk forget"),
            "{r:#}"
        );
        assert!(
            metrics.contains("sbk_repository_damaged_files{job=\"app\",repository=\"main\"} 1"),
            "{metrics}"
        );
    }
    // One alert for the two runs that saw the same damage.
    let alert = hooks.recv_timeout(Duration::from_secs(10)).unwrap();
    let body = String::from_utf8_lossy(&alert.body).into_owned();
    assert!(body.contains("found repository damage"), "{body}");
    assert!(hooks.recv_timeout(Duration::from_secs(2)).is_err());
    let status = s.run(&["status"]);
    let text = common::pg::text(&status.stdout);
    assert!(
        text.contains("DAMAGE") && text.contains("1 damaged"),
        "{text}"
    );
    // Only the intact snapshots are counted: the damaged one is kept, not judged.
    assert_eq!(s.repo.snapshots().len(), 2);
}

/// A snapshot deleted behind sbk's back is reported by the next run with the damage (status,
/// metrics, one alert) and prune judges nothing; every step leaves an audit record.
#[test]
fn a_deleted_snapshot_is_alerted_and_steps_are_audited() {
    let (hook_port, hooks) = http_sink();
    let s = Setup::new(
        r#"
[alert.hook]
type = "webhook"
url = { env = "SBK_TEST_WEBHOOK_URL" }

[job.app]
source = "app"
repository = "main"
schedule = "@daily"
retention = { keep_last = 5 }
prune = true
alerts = ["hook"]
"#,
    );
    let hook_url = format!("http://127.0.0.1:{hook_port}/hook");
    let run = || {
        let out = s
            .sbk(&["run", "app", "--json"])
            .env(HOOK_VAR, &hook_url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    run();
    let snap = s.repo.files("snapshots").pop().unwrap();
    std::fs::remove_file(&snap).unwrap();
    let r = run();
    let name = snap.file_name().unwrap().to_str().unwrap();
    let damaged = r["repository"]["damaged"].to_string();
    assert!(
        damaged.contains(name) && damaged.contains("without `sbk forget`"),
        "{r:#}"
    );
    assert_eq!(step(&r, "prune")["outcome"], "success", "{r:#}");
    let alert = hooks.recv_timeout(Duration::from_secs(10)).unwrap();
    let body = String::from_utf8_lossy(&alert.body).into_owned();
    assert!(body.contains(name), "{body}");
    let records = s.repo.run(&["--json", "audit"]);
    let records: serde_json::Value = serde_json::from_slice(&records.stdout).unwrap();
    let steps: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["args"][0] == "job app")
        .map(|r| r["verb"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["snapshot", "forget", "prune", "snapshot", "forget", "prune"],
        "{records:#}"
    );
}

/// Kills a spawned daemon when the test ends, even by a panic.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET with headers: the status line.
fn http_get_with(port: u16, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).unwrap();
    buf.lines().next().unwrap_or_default().to_owned()
}

/// The status pages: a bearer token on every path but /healthz when one is set; a listen
/// address off loopback without one is refused by `config check` and by the daemon; a client
/// that never sends its request is cut off.
#[test]
fn the_daemon_requires_its_token_off_loopback_and_cuts_off_slow_clients() {
    let s = Setup::new("[daemon]\nlisten = \"0.0.0.0:9187\"\n");
    let out = s.run(&["config", "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reachable from other machines"), "{err}");
    let out = s.run(&["daemon", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let port = free_port();
    s.write_config(&format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"SBK_TEST_TOKEN\" }}\n"
    ));
    assert!(s.run(&["config", "check"]).status.success());
    let _daemon = Reaped(
        s.sbk(&["daemon"])
            .env("SBK_TEST_TOKEN", "token-for-the-tests")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the daemon", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(http_get_with(port, "/healthz", "").contains("200"));
    for path in ["/metrics", "/api/status", "/"] {
        assert!(http_get_with(port, path, "").contains("401"), "{path}");
        let wrong = "Authorization: Bearer token-for-the-testz\r\n";
        assert!(http_get_with(port, path, wrong).contains("401"), "{path}");
        let right = "Authorization: Bearer token-for-the-tests\r\n";
        assert!(http_get_with(port, path, right).contains("200"), "{path}");
    }
    // A connection that sends nothing is closed by the server (header timeout).
    use std::io::Read;
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = idle
        .read(&mut buf)
        .expect("closed by the server before 40 s");
    let _ = n;
}

/// Logs, the run history and the metrics file name hosts, users and databases: 0600 in 0700
/// folders, even where an older sbk left them readable.
#[test]
fn what_a_job_writes_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    // No retry: the default waits an hour before it.
    let s = Setup::new(
        "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nretries = 0\n",
    );
    // An older history, world-readable.
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let history = s.state().join("history.jsonl");
    std::fs::write(&history, b"").unwrap();
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o644)).unwrap();
    let logs = s.dir.path().join("logs");
    let metrics = s.dir.path().join("metrics/sbk.prom");
    let out = s
        .sbk(&["run", "app", "--log-dir"])
        .arg(&logs)
        .arg("--metrics-file")
        .arg(&metrics)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for f in [history.clone(), logs.join("sbk.log"), metrics.clone()] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    for d in [
        s.state(),
        logs.clone(),
        metrics.parent().unwrap().to_path_buf(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
}

/// A failed last run is news even while an older snapshot is recent enough: `status` says
/// FAILED and warns (exit 0), and `--strict` exits 1.
#[test]
fn status_reports_a_failed_last_run_and_strict_exits_1() {
    // No retry: the default waits an hour before it.
    let s = Setup::new(
        "[job.app]\nsource = \"app\"\nrepository = \"main\"\nschedule = \"@daily\"\nretries = 0\n",
    );
    assert!(s.run(&["run", "app"]).status.success());
    s.pg.kill();
    assert!(!s.run(&["run", "app"]).status.success());
    let out = s.run(&["status"]);
    let text = common::pg::text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.contains("FAILED"), "{text}");
    assert!(
        stderr(&out).contains("last run failed for: app"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&["status", "--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// `rest` of a configuration naming an S3 repository, an SMTP channel, a webhook and the
/// daemon's token, all of which exist; `extra` adds more sections.
struct ProbeWorld {
    s3: common::s3::S3Server,
    _s3repo: TestRepo,
    smtp: common::mail::Smtp,
    /// Accepts the webhook probe's connection (the kernel's backlog does; nothing is read).
    hook: std::net::TcpListener,
}

const S3_KEY_VAR: &str = "SBK_TEST_S3_KEY";
/// The webhook URL's token: a secret that must not appear in any output.
const HOOK_TOKEN: &str = "T0KEN-in-the-webhook-url-77";

impl ProbeWorld {
    fn start(dir: &Path) -> Self {
        let s3 = common::s3::S3Server::start();
        let s3repo = TestRepo::on_s3(&s3, "probe/sbk");
        ProbeWorld {
            _s3repo: s3repo,
            smtp: start_smtp(dir, true),
            hook: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            s3,
        }
    }

    fn rest(&self, dir: &Path, extra: &str) -> String {
        std::fs::write(dir.join("s3-secret"), format!("{}\n", self.s3.secret_key)).unwrap();
        std::fs::write(dir.join("s3-password"), format!("{PASSWORD}\n")).unwrap();
        format!(
            r#"[daemon]
token = {{ file = "{token}" }}

[repository.s3]
url = "{s3url}"
password = {{ file = "{s3password}" }}
access_key_id = {{ env = "{S3_KEY_VAR}" }}
secret_access_key = {{ file = "{s3secret}" }}
s3_region = "us-east-1"

[alert.mail]
type = "email"
server = "localhost"
port = {smtp_port}
security = "starttls"
username = "{SMTP_USER}"
password = {{ env = "{SMTP_PW_VAR}" }}
from = "sbk <sbk@example.com>"
to = ["ops@example.com"]
ca_file = "{cert}"

[alert.hook]
type = "webhook"
url = {{ env = "{HOOK_VAR}" }}

[job.app-daily]
source = "app"
repository = "main"
schedule = "0 2 * * *"

{extra}
"#,
            token = dir.join("token").display(),
            s3url = self.s3.url("probe/sbk"),
            s3secret = dir.join("s3-secret").display(),
            s3password = dir.join("s3-password").display(),
            smtp_port = self.smtp.port,
            cert = self.smtp.cert.display(),
        )
    }

    /// `sbk config check --probe` with every environment secret set, and no AWS set-up of
    /// the host's.
    fn probe(&self, s: &Setup, args: &[&str]) -> Output {
        self.probe_with(s, args, &[])
    }

    /// [`ProbeWorld::probe`] with some variables set otherwise.
    fn probe_with(&self, s: &Setup, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut c = s.sbk(&["config", "check", "--probe", "--timeout", "5s"]);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.args(args)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(S3_KEY_VAR, &self.s3.access_key)
            .env(
                HOOK_VAR,
                format!(
                    "http://127.0.0.1:{}/hooks/{HOOK_TOKEN}",
                    self.hook.local_addr().unwrap().port()
                ),
            )
            .envs(vars.iter().copied())
            .output()
            .unwrap()
    }
}

fn lines_of(out: &Output) -> Vec<String> {
    common::pg::text(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn config_check_probe_tries_every_secret_repository_source_and_channel() {
    let s = Setup::new("");
    let w = ProbeWorld::start(s.dir.path());
    std::fs::write(s.dir.path().join("token"), "daemon-token-value-123\n").unwrap();
    s.write_config(&w.rest(s.dir.path(), ""));
    let secrets = [
        PASSWORD,
        SMTP_PASSWORD,
        HOOK_TOKEN,
        "daemon-token-value-123",
        s.pg.password.as_str(),
        w.s3.secret_key.as_str(),
    ];

    // Everything exists: one ok line per check, exit 0.
    let out = w.probe(&s, &[]);
    let all = format!("{}{}", common::pg::text(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{all}");
    let lines = lines_of(&out);
    for want in [
        "ok   secret token of the daemon (file ",
        &format!("ok   secret password of repository main (environment variable {REPO_PW_VAR})"),
        "ok   secret secret_access_key of repository s3 (file ",
        "ok   secret password of repository s3 (file ",
        "ok   secret password of source app (environment variable",
        "ok   secret password of alert channel mail (environment variable",
        &format!("ok   secret url of alert channel hook (environment variable {HOOK_VAR})"),
        "ok   repository main (",
        "ok   repository s3 (s3:http://",
        &format!(
            "ok   source app (127.0.0.1:{}, database app): PostgreSQL ",
            s.pg.port
        ),
        &format!(
            "ok   smtp mail (localhost:{}, starttls): connected and logged in",
            w.smtp.port
        ),
        "ok   webhook hook (127.0.0.1:",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{want:?} in\n{all}"
        );
    }
    assert!(!lines.iter().any(|l| l.starts_with("FAIL")), "{all}");
    // Nothing was mailed.
    assert!(w.smtp.got.lock().unwrap().is_empty());
    for secret in secrets {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }

    // JSON: the same checks as {check, target, ok, detail}.
    let out = w.probe(&s, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), lines.len() - 1, "{v:#}"); // less the "valid; probing" line
    assert!(list
        .iter()
        .all(|c| c["ok"] == true && c["check"].is_string() && c["detail"].is_string()));

    // A missing secret file, a wrong repository password, a dead PostgreSQL port and an
    // SMTP port nobody listens on: one FAIL line each, every other check still made, exit 1.
    std::fs::remove_file(s.dir.path().join("token")).unwrap();
    let dead_pg = free_port();
    let dead_smtp = free_port();
    let extra = format!(
        r#"[source.dead]
url = "postgresql://postgres@127.0.0.1:{dead_pg}/app"
password = {{ env = "{PG_PW_VAR}" }}

[alert.deadmail]
type = "email"
server = "127.0.0.1"
port = {dead_smtp}
security = "none"
from = "sbk@example.com"
to = ["ops@example.com"]
"#
    );
    s.write_config(&w.rest(s.dir.path(), &extra));
    let out = w.probe_with(&s, &[], &[(REPO_PW_VAR, "Wr0ng-repo-password-999")]);
    let all = format!("{}{}", common::pg::text(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{all}");
    let lines = lines_of(&out);
    let fails: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 4, "{all}");
    for want in [
        "FAIL secret token of the daemon (file ",
        "FAIL repository main (",
        &format!("FAIL source dead (127.0.0.1:{dead_pg}, database app): "),
        &format!("FAIL smtp deadmail (127.0.0.1:{dead_smtp}, no TLS): "),
    ] {
        assert!(
            fails.iter().any(|l| l.starts_with(want)),
            "{want:?} in\n{all}"
        );
    }
    assert!(fails.iter().any(|l| l.contains("wrong password")), "{all}");
    // The rest still probed fine.
    for want in [
        "ok   repository s3 ",
        "ok   source app ",
        "ok   smtp mail ",
        "ok   webhook hook ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{want:?} in\n{all}"
        );
    }
    assert!(stderr(&out).contains("4 of"), "{all}");
    for secret in secrets.iter().chain(&["Wr0ng-repo-password-999"]) {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[test]
fn schedule_print_hands_the_jobs_their_secrets_through_an_environment_file() {
    let smtp_dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(smtp_dir.path(), true);
    let s = Setup::new(&format!(
        r#"[alert.mail]
type = "email"
server = "localhost"
port = {}
username = "{SMTP_USER}"
password = {{ env = "{SMTP_PW_VAR}" }}
from = "sbk@example.com"
to = ["ops@example.com"]
ca_file = "{}"

[job.app-daily]
source = "app"
repository = "main"
schedule = "0 2 * * *"
retries = 0
"#,
        smtp.port,
        smtp.cert.display()
    ));
    let env_file = std::fs::canonicalize(&s.config)
        .unwrap()
        .with_extension("env");
    // The values a careless printer would show.
    let sentinels = [
        (REPO_PW_VAR, "SENTINEL-repo-pw-4711"),
        (PG_PW_VAR, "SENTINEL-pg-pw-4712"),
        (SMTP_PW_VAR, "SENTINEL-smtp-pw-4713"),
    ];
    let print = |form: &str, extra: &[&str]| {
        let out = s
            .sbk(&["schedule", "print", form, "--sbk", sbk_bin()])
            .args(extra)
            .envs(sentinels.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        common::pg::text(&out.stdout)
    };

    let systemd = print("--systemd", &[]);
    assert!(
        systemd.contains(&format!("\nEnvironmentFile={}\n", env_file.display())),
        "{systemd}"
    );
    let cron = print("--cron", &[]);
    for text in [&systemd, &cron] {
        for (name, value) in sentinels {
            assert!(
                text.contains(&format!("#   {name}  (")),
                "{name} in\n{text}"
            );
            assert!(!text.contains(value), "{value} leaked:\n{text}");
        }
        assert!(text.contains("password of repository main"), "{text}");
    }
    let custom = print("--systemd", &["--env-file", "/etc/sbk/other.env"]);
    assert!(
        custom.contains("\nEnvironmentFile=/etc/sbk/other.env\n"),
        "{custom}"
    );

    // The crontab line, run as cron runs it: sh, an almost empty environment.
    let line = cron
        .lines()
        .find(|l| l.starts_with("0 2 * * * ") && l.contains(" run app-daily"))
        .unwrap_or_else(|| panic!("no line for app-daily in\n{cron}"));
    let command = line.splitn(6, ' ').nth(5).unwrap().to_owned();
    assert!(
        command.starts_with(&format!("set -a; . {}; set +a; exec ", env_file.display())),
        "{command}"
    );
    let cron_run = || {
        Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", s.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Without the file the job does not start at all.
    let out = cron_run();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(s.repo.snapshots().is_empty());
    // With it, the job has its secrets and succeeds.
    let q = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
    std::fs::write(
        &env_file,
        format!(
            "# sbk secrets\n{REPO_PW_VAR}={}\n{PG_PW_VAR}={}\n{SMTP_PW_VAR}={}\n",
            q(PASSWORD),
            q(&s.pg.password),
            q(SMTP_PASSWORD)
        ),
    )
    .unwrap();
    let out = cron_run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.repo.snapshots().len(), 1);
}
