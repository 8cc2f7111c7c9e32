//! One run of a configured job: snapshot, forget by the job's policy, then prune, check and a
//! restore drill when they are due. Each step that fails is retried after the job's
//! `retry_delay`, doubling each time, up to `retries` times. A job runs at most once at a time
//! on a machine (a lock file in the state folder); a second run is refused. Every run is
//! recorded in the [`History`] before it starts and when it ends; alerts go out on the first
//! failure of a streak and on the recovery that ends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, Utc};
use zeroize::Zeroizing;

use super::alert::{self, Alert, AlertKind, Channel, EmailChannel, RetryPolicy, WebhookChannel};
use super::config::{
    job_tag, ChannelConfig, Config, JobConfig, RepositoryConfig, RetentionScope, SourceConfig,
    StepWhen,
};
use super::cron;
use super::history::{
    new_run_id, DrillFacts, Entry, History, Outcome, RepositoryFacts, RunRecord, SnapshotFacts,
    Step, StepRecord, Trigger,
};
use super::secret::redact;
use crate::commands;
use crate::error::{Error, Result};
use crate::postgres::conn::{process_env, ConnParams};
use crate::postgres::manifest::DumpOptions;
use crate::postgres::tools::Tools;
use crate::repository::{Actor, Repository};

mod configured;
mod steps;

pub use configured::*;

/// What a run needs besides the configuration.
#[derive(Clone)]
pub struct RunContext {
    pub trigger: Trigger,
    /// Set on shutdown: running dumps are killed, waits end, the run is recorded as interrupted.
    pub stop: Arc<AtomicBool>,
    pub alert_policy: RetryPolicy,
}

impl RunContext {
    pub fn new(trigger: Trigger, stop: Arc<AtomicBool>) -> Self {
        RunContext {
            trigger,
            stop,
            alert_policy: RetryPolicy::default(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `d` unless stopped first; returns whether it slept the whole time.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopped() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
        !self.stopped()
    }
}

/// The state a run starts from, read from the history.
struct Past {
    last_success: Option<DateTime<Utc>>,
    /// The last finished run failed (a failure alert was due then): no new one now.
    failing: bool,
    /// When each step last succeeded.
    step_success: std::collections::HashMap<Step, DateTime<Utc>>,
    /// The damaged files the last finished run reported (alerted then: not again).
    damaged: Vec<String>,
}

fn past(history: &History, job: &str) -> Result<Past> {
    let mut p = Past {
        last_success: None,
        failing: false,
        step_success: Default::default(),
        damaged: Vec::new(),
    };
    for e in history.entries()? {
        match e {
            Entry::Finish(r) if r.job == job => {
                if let Some(facts) = &r.repository {
                    p.damaged = facts.damaged.clone();
                }
                match r.outcome {
                    Outcome::Success => {
                        p.last_success = Some(r.finished);
                        p.failing = false;
                    }
                    Outcome::Failure => p.failing = true,
                    _ => {}
                }
                for s in &r.steps {
                    if s.outcome == Outcome::Success {
                        p.step_success.insert(s.step, s.started);
                    }
                }
            }
            // A failure alert sent in a run that was then interrupted still opens a streak.
            Entry::Alert { job: j, kind, .. } if j == job => match kind {
                AlertKind::Failure => p.failing = true,
                AlertKind::Recovery => p.failing = false,
                AlertKind::Digest
                | AlertKind::Damage
                | AlertKind::WalLag
                | AlertKind::WalLagRecovered => {}
            },
            _ => {}
        }
    }
    Ok(p)
}

/// Alert deliveries started during a run; joined before the run returns.
struct Alerts<'a> {
    ctx: &'a RunContext,
    history: &'a History,
    config: &'a Config,
    names: &'a [String],
    /// Resolved at the first alert: reading a channel's secret must never delay a backup.
    channels: Option<Vec<(Channel, super::config::AlertEvents)>>,
    pending: Vec<std::thread::JoinHandle<()>>,
}

impl Alerts<'_> {
    fn send(&mut self, alert: Alert) {
        let (config, names) = (self.config, self.names);
        let chosen: Vec<Channel> = self
            .channels
            .get_or_insert_with(|| channels(config, names))
            .iter()
            .filter(|(_, ev)| match alert.kind {
                AlertKind::Failure | AlertKind::Damage | AlertKind::WalLag => ev.failure,
                AlertKind::Recovery | AlertKind::WalLagRecovered => ev.recovery,
                AlertKind::Digest => true,
            })
            .map(|(c, _)| c.clone())
            .collect();
        if chosen.is_empty() {
            return;
        }
        let policy = self.ctx.alert_policy.clone();
        let stop = Arc::clone(&self.ctx.stop);
        let history = self.history.clone();
        self.pending.push(std::thread::spawn(move || {
            let deliveries = alert::deliver(&chosen, &alert, &policy, &stop);
            let delivered = deliveries.iter().all(|d| d.error.is_none());
            let _ = history.append(&Entry::Alert {
                job: alert.job.clone(),
                kind: alert.kind,
                at: Utc::now(),
                delivered,
            });
        }));
    }

    fn join(self) {
        for h in self.pending {
            let _ = h.join();
        }
    }
}

/// Delivers `alert` to the channels `names` of `config` now, outside a run (the daemon's WAL
/// lag alerts), and records it in the history.
pub fn deliver_alert(config: &Config, names: &[String], alert: &Alert, stop: &AtomicBool) {
    let chosen: Vec<Channel> = channels(config, names)
        .into_iter()
        .filter(|(_, ev)| match alert.kind {
            AlertKind::Recovery | AlertKind::WalLagRecovered => ev.recovery,
            AlertKind::Digest => true,
            _ => ev.failure,
        })
        .map(|(c, _)| c)
        .collect();
    if chosen.is_empty() {
        return;
    }
    let deliveries = alert::deliver(&chosen, alert, &RetryPolicy::default(), stop);
    let _ = History::new(&config.state_dir).append(&Entry::Alert {
        job: alert.job.clone(),
        kind: alert.kind,
        at: Utc::now(),
        delivered: deliveries.iter().all(|d| d.error.is_none()),
    });
}

/// Runs job `name` of `config` once, now.
pub fn run_job(config: &Config, name: &str, ctx: &RunContext) -> Result<RunRecord> {
    let job = config.job(name)?;
    let lock = super::lock::lock_job(&config.state_dir, name)?;
    let history = History::new(&config.state_dir);
    let host = Actor::current().host;
    let mut alerts = Alerts {
        ctx,
        history: &history,
        config,
        names: &job.alerts,
        channels: None,
        pending: Vec::new(),
    };
    let started = Utc::now();
    let run = new_run_id(started);
    // The history is sbk's own state: when it cannot be read or written (a full disk), nothing
    // runs, and that is alerted like any failure.
    let before = past(&history, name).and_then(|before| {
        history.append(&Entry::Start {
            job: name.to_owned(),
            run: run.clone(),
            pid: std::process::id(),
            trigger: ctx.trigger,
            started,
        })?;
        Ok(before)
    });
    let before = match before {
        Ok(b) => b,
        Err(e) => {
            alerts.send(Alert {
                kind: AlertKind::Failure,
                job: name.to_owned(),
                host,
                step: Some("history".into()),
                error: Some(redact(&e.to_string()).into_owned()),
                duration_secs: 0.0,
                last_success: None,
                at: Utc::now(),
                details: Some(format!("state folder {}", config.state_dir.display())),
            });
            drop(lock);
            alerts.join();
            return Err(e);
        }
    };
    tracing::info!(job = %name, run = %run, trigger = ?ctx.trigger, "job started");
    let mut runner = Runner {
        config,
        job,
        ctx,
        repo: None,
        timed: None,
        disappeared: None,
        record: RunRecord {
            job: name.to_owned(),
            run,
            host: host.clone(),
            trigger: ctx.trigger,
            started,
            finished: started,
            outcome: Outcome::Success,
            steps: Vec::new(),
            snapshot: None,
            drill: None,
            repository: None,
            failed_attempts: 0,
            wal: None,
        },
        alerted: before.failing,
        last_success: before.last_success,
    };
    let now = Local::now();
    let due = |w: &StepWhen, step: Step| match w {
        StepWhen::Never => false,
        StepWhen::Always => true,
        StepWhen::Due(s) => cron::is_due(
            s,
            before
                .step_success
                .get(&step)
                .map(|t| t.with_timezone(&Local)),
            now,
        ),
    };
    let plan = [
        (Step::Snapshot, job.snapshot),
        (Step::Forget, job.retention.is_some()),
        (Step::Prune, due(&job.prune, Step::Prune)),
        (Step::Check, due(&job.check, Step::Check)),
        (Step::Drill, due(&job.drill, Step::Drill)),
    ];
    for (step, wanted) in plan {
        if !wanted {
            continue;
        }
        // A failed (or spooled) snapshot leaves the repository alone: forgetting or pruning
        // while new snapshots fail would only shrink what is left.
        let blocked = runner.record.steps.iter().any(|s| {
            s.step == Step::Snapshot && s.outcome != Outcome::Success && step != Step::Check
        });
        if blocked || ctx.stopped() {
            runner.record.steps.push(StepRecord {
                step,
                // A run cut short by a stop is interrupted, not a success that skipped steps.
                outcome: if ctx.stopped() {
                    Outcome::Interrupted
                } else {
                    Outcome::Skipped
                },
                started: Utc::now(),
                duration_secs: 0.0,
                attempts: 0,
                error: None,
                summary: if ctx.stopped() {
                    "stopped".into()
                } else {
                    "skipped: the snapshot failed".into()
                },
            });
            continue;
        }
        runner.step(step, &mut alerts);
    }
    runner.facts();
    if job.wal_lag.is_some() && !ctx.stopped() {
        let (m, change) = super::wal_lag::measure(config, job, runner.repo.as_ref());
        tracing::info!(job = %name, "{}", super::wal_lag::describe(&m));
        if let Some(change) = change {
            alerts.send(super::wal_lag::alert(&m, change, &host));
        }
        runner.record.wal = Some(m);
    }
    let mut record = runner.record;
    record.finished = Utc::now();
    record.outcome = if record
        .steps
        .iter()
        .any(|s| s.outcome == Outcome::Interrupted)
    {
        Outcome::Interrupted
    } else if record.steps.iter().any(|s| s.outcome == Outcome::Failure) {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    let recorded = history.append(&Entry::Finish(Box::new(record.clone())));
    // The run is over: alerts and metrics must not keep the job locked.
    drop(lock);
    if let Err(e) = recorded {
        tracing::error!(job = %name, "the run history could not be written: {}", redact(&e.to_string()));
    }
    if record.outcome == Outcome::Success && runner.alerted {
        alerts.send(Alert {
            kind: AlertKind::Recovery,
            job: name.to_owned(),
            host,
            step: None,
            error: None,
            duration_secs: record.duration_secs(),
            last_success: before.last_success,
            at: record.finished,
            details: Some(summary_lines(&record)),
        });
    }
    match record.outcome {
        Outcome::Success => {
            tracing::info!(job = %name, secs = record.duration_secs(), "job succeeded")
        }
        _ => tracing::error!(
            job = %name,
            outcome = ?record.outcome,
            error = %record.failure().and_then(|s| s.error.as_deref()).unwrap_or(""),
            "job did not succeed"
        ),
    }
    let damaged = record
        .repository
        .as_ref()
        .map(|r| r.damaged.clone())
        .unwrap_or_default();
    if !damaged.is_empty() {
        tracing::warn!(job = %name, files = damaged.len(), "damaged repository files were passed over: {}", damaged.join("; "));
    }
    // New damage is alerted once; it stays in the status and metrics until repaired.
    if !damaged.is_empty() && damaged != before.damaged {
        alerts.send(Alert {
            kind: AlertKind::Damage,
            job: name.to_owned(),
            host: Actor::current().host,
            step: None,
            error: None,
            duration_secs: record.duration_secs(),
            last_success: before.last_success,
            at: record.finished,
            details: Some(format!(
                "The run went on without these files:\n{}",
                damaged.join("\n")
            )),
        });
    }
    if let Some(path) = &config.metrics_file {
        if let Err(e) = super::metrics::write_textfile(config, path) {
            tracing::warn!("metrics file {}: {e}", path.display());
        }
    }
    alerts.join();
    Ok(record)
}

/// The steps' summaries, one per line.
fn summary_lines(r: &RunRecord) -> String {
    r.steps
        .iter()
        .map(|s| {
            format!(
                "{}: {:?} in {:.1}s{}",
                s.step.as_str(),
                s.outcome,
                s.duration_secs,
                if s.summary.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.summary)
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Runner<'a> {
    config: &'a Config,
    job: &'a JobConfig,
    ctx: &'a RunContext,
    repo: Option<Repository>,
    /// Write time of the repository handle, for the snapshot's upload time.
    timed: Option<Arc<crate::repository::open::TimedBackend>>,
    record: RunRecord,
    /// Files deleted from the repository behind sbk's back (see [`crate::repository::seen`]):
    /// reported with the damage, so that status, metrics and alerts carry them.
    disappeared: Option<crate::repository::seen::Disappeared>,
    /// A failure alert went out for the current streak.
    alerted: bool,
    last_success: Option<DateTime<Utc>>,
}

impl Runner<'_> {
    /// Runs `step` with its retries and records it.
    fn step(&mut self, step: Step, alerts: &mut Alerts<'_>) {
        let started = Utc::now();
        let clock = Instant::now();
        let mut attempts = 0;
        let (outcome, error, summary) = loop {
            attempts += 1;
            let attempt_clock = Instant::now();
            tracing::info!(job = %self.job.name, step = step.as_str(), attempt = attempts, "step started");
            let result = self.attempt(step);
            self.record_audit(step, &result);
            match result {
                Ok(summary) => break (Outcome::Success, None, summary),
                Err(Error::Interrupted(m)) => break (Outcome::Interrupted, Some(m), String::new()),
                // Failing because of a shutdown is not a failure to alert about.
                Err(e) if self.ctx.stopped() => {
                    break (
                        Outcome::Interrupted,
                        Some(redact(&e.to_string()).into_owned()),
                        String::new(),
                    )
                }
                Err(e) => {
                    // A repository handle that failed may be stale (a dropped connection).
                    self.repo = None;
                    self.record.failed_attempts += 1;
                    let message = redact(&e.to_string()).into_owned();
                    tracing::warn!(job = %self.job.name, step = step.as_str(), attempt = attempts, error = %message, "step failed");
                    if !self.alerted {
                        self.alerted = true;
                        alerts.send(Alert {
                            kind: AlertKind::Failure,
                            job: self.job.name.clone(),
                            host: self.record.host.clone(),
                            step: Some(step.as_str().to_owned()),
                            error: Some(message.clone()),
                            duration_secs: attempt_clock.elapsed().as_secs_f64(),
                            last_success: self.last_success,
                            at: Utc::now(),
                            details: (attempts <= self.job.retries).then(|| {
                                format!(
                                    "sbk retries in {}.",
                                    crate::human::duration(self.retry_delay(attempts))
                                )
                            }),
                        });
                    }
                    if attempts > self.job.retries || self.ctx.stopped() {
                        break (Outcome::Failure, Some(message), String::new());
                    }
                    if !self.ctx.wait(self.retry_delay(attempts)) {
                        break (Outcome::Interrupted, Some(message), String::new());
                    }
                }
            }
        };
        self.record.steps.push(StepRecord {
            step,
            outcome,
            started,
            duration_secs: clock.elapsed().as_secs_f64(),
            attempts,
            error,
            summary,
        });
    }

    /// Writes the audit record of a step that changes the repository (or changed it after
    /// all); a record that cannot be written is logged, never a failure of the step.
    fn record_audit(&self, step: Step, result: &Result<String>) {
        let Some(repo) = &self.repo else { return };
        let auditor = repo.auditor();
        if !matches!(step, Step::Snapshot | Step::Forget | Step::Prune) && !auditor.changed() {
            return;
        }
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("failed: {}", redact(&e.to_string())),
        };
        let op = crate::repository::audit::Operation {
            verb: step.as_str().to_string(),
            args: vec![
                format!("job {}", self.job.name),
                format!("run {}", self.record.run),
            ],
        };
        if let Err(e) = auditor.write(&op, &outcome, &Actor::current()) {
            tracing::warn!(job = %self.job.name, step = step.as_str(), error = %redact(&e.to_string()), "audit record not written");
        }
    }

    /// The wait before retry `n` (1-based): the delay, doubled for each retry before.
    fn retry_delay(&self, n: u32) -> Duration {
        self.job.retry_delay.saturating_mul(1u32 << (n - 1).min(16))
    }

    fn repository(&mut self, offline_start: bool) -> Result<&Repository> {
        if self.repo.is_none() {
            let r = &self.config.repositories[&self.job.repository];
            let (repo, timed) = open_repository(r, offline_start)?;
            self.timed = Some(timed);
            let root = r
                .cache_dir
                .clone()
                .or_else(crate::cache::BlobCache::default_root);
            if let Some(root) = root {
                let path = crate::repository::seen::seen_path(&root, &repo.config().id);
                match repo.detect_disappeared(&path) {
                    Ok(d) if !d.is_empty() => {
                        tracing::warn!(job = %self.job.name, "{}", d.describe());
                        self.disappeared = Some(d);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        "could not compare the repository with what this host saw before: {}",
                        redact(&e.to_string())
                    ),
                }
            }
            if let Some(Err(e)) = crate::repository::open::sync_spool_first(&repo) {
                tracing::warn!(
                    "snapshots wait in the spool and could not be uploaded yet: {}",
                    redact(&e.to_string())
                );
            }
            self.repo = Some(repo);
        }
        Ok(self.repo.as_ref().expect("opened"))
    }

    fn source(&self) -> Result<&SourceConfig> {
        let name = self.job.source.as_deref().unwrap_or_default();
        self.config
            .sources
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("job {} has no source", self.job.name)))
    }

    fn attempt(&mut self, step: Step) -> Result<String> {
        match step {
            Step::Snapshot => self.snapshot(),
            Step::Forget => self.forget(),
            Step::Prune => self.prune(),
            Step::Check => self.check(),
            Step::Drill => self.drill(),
        }
    }
}
