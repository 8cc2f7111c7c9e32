//! What the history says about each job: `sbk status` (one line per job, overdue jobs fail),
//! `sbk report` (success rate, durations, sizes, growth, drills over a period) and the figures
//! the metrics and the dashboard show. Nothing here opens a repository: the history holds
//! every figure, so monitoring needs no password and costs nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Local, Utc};
use serde::Serialize;

use super::config::Config;
use super::cron;
use super::history::{History, Outcome, RunRecord, Step};
use crate::error::Result;

/// One job's state.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub repository: String,
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// Newest snapshot taken by a successful snapshot step (for maintenance jobs: the newest
    /// successful run).
    pub newest_good: Option<DateTime<Utc>>,
    pub newest_good_age_secs: Option<i64>,
    pub max_age_secs: u64,
    /// The newest good snapshot (maintenance jobs: successful run) is older than `max_age`, or
    /// there is none (a maintenance job that never ran is not overdue).
    pub overdue: bool,
    /// The job takes snapshots (else it only maintains its repository).
    pub snapshots: bool,
    /// The next scheduled run, when a daemon is running to start it.
    pub next_run: Option<DateTime<Local>>,
    /// A daemon serves this configuration's state folder.
    pub daemon: bool,
    pub last_success: Option<DateTime<Utc>>,
    /// Failed attempts over the whole history.
    pub failures: u64,
    pub runs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<super::history::SnapshotFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_facts: Option<super::history::RepositoryFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<(DateTime<Utc>, super::history::DrillFacts)>,
    /// Recent failures, newest first: (time, step, error).
    pub recent_failures: Vec<(DateTime<Utc>, String, String)>,
    /// The newest measurement of the WAL archive's lag (jobs taking base backups; `None`
    /// before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_lag: Option<super::wal_lag::WalLag>,
}

impl JobStatus {
    /// Whether the job's last finished run failed (whatever the age of its newest good
    /// snapshot: a failure is news even while an older snapshot is still recent enough).
    pub fn last_run_failed(&self) -> bool {
        self.last_run
            .as_ref()
            .is_some_and(|r| r.outcome == super::history::Outcome::Failure)
    }

    /// Whether the newest measurement of the WAL archive's lag was above `wal_lag_alert`.
    pub fn wal_lagging(&self) -> bool {
        self.wal_lag.as_ref().is_some_and(|m| m.over)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LastRun {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub outcome: Outcome,
    pub duration_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The status of every job of `config` at `now`.
pub fn status(config: &Config, now: DateTime<Utc>) -> Result<Vec<JobStatus>> {
    let history = History::new(&config.state_dir);
    let running = |job: &str, _: &str| super::lock::is_running(&config.state_dir, job);
    let runs = history.runs(&running)?;
    let mut by_job: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in &runs {
        by_job.entry(r.job.as_str()).or_default().push(r);
    }
    let daemon = super::lock::daemon_running(&config.state_dir);
    let mut lags: BTreeMap<String, super::wal_lag::WalLag> = BTreeMap::new();
    if config.jobs.values().any(|j| j.wal_lag.is_some()) {
        for m in super::wal_lag::measurements(&config.state_dir)? {
            lags.insert(m.job.clone(), m);
        }
    }
    let mut out = Vec::new();
    for (name, job) in &config.jobs {
        let list = by_job.remove(name.as_str()).unwrap_or_default();
        let last = list.last();
        let good_snapshot = |r: &&&RunRecord| {
            r.steps
                .iter()
                .any(|s| s.step == Step::Snapshot && s.outcome == Outcome::Success)
        };
        let newest_good = if job.snapshot {
            list.iter()
                .rev()
                .find(good_snapshot)
                .and_then(|r| r.snapshot.as_ref().map(|s| s.time))
        } else {
            list.iter()
                .rev()
                .find(|r| r.outcome == Outcome::Success)
                .map(|r| r.finished)
        };
        let age = newest_good.map(|t| (now - t).num_seconds());
        let max_age = job.max_age.as_secs();
        let mut recent_failures: Vec<(DateTime<Utc>, String, String)> = list
            .iter()
            .rev()
            .filter(|r| r.outcome != Outcome::Success)
            .take(5)
            .map(|r| {
                let step = r.failure();
                (
                    r.started,
                    step.map_or_else(
                        || format!("{:?}", r.outcome).to_lowercase(),
                        |s| s.step.as_str().to_owned(),
                    ),
                    step.and_then(|s| s.error.clone()).unwrap_or_default(),
                )
            })
            .collect();
        recent_failures.truncate(5);
        out.push(JobStatus {
            job: name.clone(),
            repository: job.repository.clone(),
            running: super::lock::is_running(&config.state_dir, name),
            last_run: last.map(|r| LastRun {
                started: r.started,
                finished: r.finished,
                outcome: r.outcome,
                duration_secs: r.duration_secs(),
                failed_step: r.failure().map(|s| s.step.as_str().to_owned()),
                error: r.failure().and_then(|s| s.error.clone()),
            }),
            newest_good,
            newest_good_age_secs: age,
            max_age_secs: max_age,
            // A snapshot job without a good snapshot is overdue; a maintenance job that never
            // ran is only waiting (the data it maintains is safe meanwhile).
            overdue: match age {
                Some(a) => a > max_age as i64,
                None => job.snapshot || !list.is_empty(),
            },
            snapshots: job.snapshot,
            // Without a daemon nothing starts the next run (cron or systemd may: their times
            // are theirs, `schedule print`).
            next_run: daemon
                .then(|| cron::next_of(&job.schedules, now.with_timezone(&Local)))
                .flatten(),
            daemon,
            last_success: list
                .iter()
                .rev()
                .find(|r| r.outcome == Outcome::Success)
                .map(|r| r.finished),
            failures: list.iter().map(|r| r.failed_attempts as u64).sum(),
            runs: list.len() as u64,
            last_snapshot: list.iter().rev().find_map(|r| r.snapshot.clone()),
            repository_facts: list.iter().rev().find_map(|r| r.repository.clone()),
            last_drill: list
                .iter()
                .rev()
                .find_map(|r| r.drill.clone().map(|d| (r.finished, d))),
            recent_failures,
            wal_lag: job
                .wal_lag
                .as_ref()
                .and_then(|_| lags.remove(name.as_str())),
        });
    }
    Ok(out)
}

/// "3h 12m", "2d 4h": an age for people ([`crate::human::duration`]).
pub fn age_text(secs: i64) -> String {
    crate::human::duration(std::time::Duration::from_secs(secs.max(0) as u64))
}

/// The `sbk status` line of a job.
pub fn status_line(s: &JobStatus) -> String {
    let last = match &s.last_run {
        None => "never run".to_owned(),
        Some(r) => format!(
            "last run {} {}{}",
            r.started.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
            format!("{:?}", r.outcome).to_lowercase(),
            r.failed_step
                .as_ref()
                .map(|st| format!(" at {st}"))
                .unwrap_or_default()
        ),
    };
    let good = if s.snapshots { "snapshot" } else { "run" };
    let newest = match (s.newest_good, s.newest_good_age_secs) {
        (Some(t), Some(age)) => format!(
            "newest good {good} {} ({} old)",
            t.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
            age_text(age)
        ),
        _ => format!("no good {good} yet"),
    };
    let next = match s.next_run {
        Some(t) => format!("next {}", t.format("%Y-%m-%d %H:%M")),
        None if s.daemon => "no next run".into(),
        None => "no daemon running (cron or systemd may start it)".into(),
    };
    let damaged = s.repository_facts.as_ref().map_or(0, |r| r.damaged.len());
    let wal = s.wal_lag.as_ref().map_or(String::new(), |m| {
        format!(
            "; {} (measured {})",
            super::wal_lag::describe(m),
            m.at.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S")
        )
    });
    format!(
        "{:<20} {:<8} {last}; {newest}; {next}{}{}{wal}",
        s.job,
        if s.running {
            "RUNNING"
        } else if s.last_run.is_none() && !s.overdue {
            "waiting"
        } else if s.overdue {
            "OVERDUE"
        } else if s.last_run_failed() {
            "FAILED"
        } else if s.wal_lagging() {
            "WAL LAG"
        } else if damaged > 0 {
            "DAMAGE"
        } else {
            "ok"
        },
        if s.overdue {
            format!(" (allowed age {})", age_text(s.max_age_secs as i64))
        } else {
            String::new()
        },
        if damaged > 0 {
            format!("; {damaged} damaged repository file(s) passed over: `sbk check` names them")
        } else {
            String::new()
        }
    )
}

/// One job over a report's period.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobReport {
    pub job: String,
    pub runs: u64,
    pub successes: u64,
    pub failures: u64,
    pub interrupted: u64,
    /// Successes over runs; `None` (JSON null) when the period holds no run.
    pub success_rate: Option<f64>,
    pub duration_min_secs: f64,
    pub duration_avg_secs: f64,
    pub duration_max_secs: f64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub repository_size_first: Option<u64>,
    pub repository_size_last: Option<u64>,
    pub growth_bytes: Option<i64>,
    pub drills: u64,
    pub drills_passed: u64,
    pub last_drill_restore_secs: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub jobs: Vec<JobReport>,
}

/// The report of runs started in `[from, to]`.
pub fn report(config: &Config, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Report> {
    let history = History::new(&config.state_dir);
    let running = |job: &str, _: &str| super::lock::is_running(&config.state_dir, job);
    let runs = history.runs(&running)?;
    let mut jobs = Vec::new();
    for name in config.jobs.keys() {
        let list: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| &r.job == name && r.started >= from && r.started <= to)
            .collect();
        let mut j = JobReport {
            job: name.clone(),
            runs: list.len() as u64,
            ..Default::default()
        };
        let mut durations = Vec::new();
        for r in &list {
            match r.outcome {
                Outcome::Success => j.successes += 1,
                Outcome::Failure => j.failures += 1,
                _ => j.interrupted += 1,
            }
            durations.push(r.duration_secs());
            if let Some(s) = &r.snapshot {
                j.bytes_read += s.bytes_in;
                j.bytes_added += s.bytes_added;
            }
            if let Some(rep) = &r.repository {
                j.repository_size_first.get_or_insert(rep.size_bytes);
                j.repository_size_last = Some(rep.size_bytes);
            }
            if let Some(d) = &r.drill {
                j.drills += 1;
                j.drills_passed += d.ok as u64;
                j.last_drill_restore_secs = Some(d.restore_secs);
            }
        }
        if !durations.is_empty() {
            j.success_rate = Some(j.successes as f64 / j.runs as f64);
            j.duration_min_secs = durations.iter().cloned().fold(f64::INFINITY, f64::min);
            j.duration_max_secs = durations.iter().cloned().fold(0.0, f64::max);
            j.duration_avg_secs = durations.iter().sum::<f64>() / durations.len() as f64;
        }
        j.growth_bytes = j
            .repository_size_first
            .zip(j.repository_size_last)
            .map(|(a, b)| b as i64 - a as i64);
        jobs.push(j);
    }
    Ok(Report { from, to, jobs })
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn signed_bytes(n: Option<i64>) -> String {
    match n {
        None => "–".into(),
        Some(n) if n < 0 => format!("-{}", bytes(n.unsigned_abs())),
        Some(n) => format!("+{}", bytes(n as u64)),
    }
}

/// The report's columns, and each job's cells (unescaped).
const REPORT_COLUMNS: [&str; 11] = [
    "job",
    "runs",
    "success rate",
    "failures",
    "duration min/avg/max",
    "read",
    "added",
    "repository",
    "growth",
    "drills passed",
    "last drill restore",
];

fn report_cells(j: &JobReport) -> [String; 11] {
    let none = || "–".to_owned();
    [
        j.job.clone(),
        j.runs.to_string(),
        j.success_rate
            .map_or_else(|| "no runs yet".into(), |r| format!("{:.0}%", r * 100.0)),
        (j.failures + j.interrupted).to_string(),
        if j.runs == 0 {
            none()
        } else {
            format!(
                "{:.1}s / {:.1}s / {:.1}s",
                j.duration_min_secs, j.duration_avg_secs, j.duration_max_secs
            )
        },
        bytes(j.bytes_read),
        bytes(j.bytes_added),
        j.repository_size_last.map_or("–".into(), bytes),
        signed_bytes(j.growth_bytes),
        format!("{}/{}", j.drills_passed, j.drills),
        j.last_drill_restore_secs
            .map_or("–".into(), |t| format!("{t:.1}s")),
    ]
}

fn period(r: &Report) -> String {
    format!(
        "{} to {}",
        r.from.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
        r.to.with_timezone(&Local).format("%Y-%m-%d %H:%M")
    )
}

/// The report as a Markdown table.
pub fn report_markdown(r: &Report) -> String {
    let mut s = format!(
        "# sbk report\n\n{}\n\n| {} |\n|{}\n",
        period(r),
        REPORT_COLUMNS.join(" | "),
        "---|".repeat(REPORT_COLUMNS.len())
    );
    for j in &r.jobs {
        let _ = writeln!(s, "| {} |", report_cells(j).join(" | "));
    }
    s
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as a standalone HTML page.
pub fn report_html(r: &Report) -> String {
    let head: String = REPORT_COLUMNS
        .iter()
        .map(|c| format!("<th>{c}</th>"))
        .collect();
    let mut rows = String::new();
    for j in &r.jobs {
        let cells: String = report_cells(j)
            .iter()
            .map(|c| format!("<td>{}</td>", esc(c)))
            .collect();
        let _ = writeln!(rows, "<tr>{cells}</tr>");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sbk report</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:4px 8px;border-bottom:1px solid #ddd}}</style></head>\
         <body><h1>sbk report</h1><p>{}</p><table><tr>{head}</tr>\n{rows}</table></body></html>\n",
        period(r)
    )
}
