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

/// How a configured repository is reached, without credentials (shared with
/// [`super::probe`], which supplies its own already-resolved keys).
pub fn remote_options(r: &RepositoryConfig) -> crate::repository::open::RemoteOptions {
    let mut remote = crate::repository::open::RemoteOptions::default();
    if let Some(n) = r.s3_connections {
        remote.connections = n as usize;
    }
    remote.ca_cert = r.s3_ca_cert.clone();
    remote.insecure = r.insecure;
    remote.region = r.s3_region.clone();
    if let Some(t) = r.s3_timeout {
        remote.io_timeout = t;
    }
    if let Some(d) = r.retry_deadline {
        remote.retry_deadline = d;
    }
    remote
}

/// Opens a configured repository; `offline_start` for runs that snapshot (see
/// [`crate::repository::open::OpenOptions::offline_start`]).
pub fn open_repository(
    r: &RepositoryConfig,
    offline_start: bool,
) -> Result<(Repository, Arc<crate::repository::open::TimedBackend>)> {
    let mut remote = remote_options(r);
    let what = |field: &str| format!("{field} of repository {}", r.name);
    if let (Some(id), Some(secret)) = (&r.access_key_id, &r.secret_access_key) {
        remote.credentials = Some(crate::repository::open::StaticCredentials {
            access_key_id: id.resolve(&what("access_key_id"))?.to_string(),
            secret_access_key: secret.resolve(&what("secret_access_key"))?,
        });
    }
    let opts = crate::repository::open::OpenOptions {
        location: r.url.clone(),
        remote,
        cache_dir: r.cache_dir.clone(),
        spool_dir: r.spool_dir.clone(),
        no_cache: r.no_cache,
        offline_start,
    };
    let password = r.password.resolve(&what("password"))?;
    opts.open_timed(password.as_bytes())
}

/// Connection parameters of a source, its password taken from the configured secret.
pub fn source_conn(s: &SourceConfig) -> Result<ConnParams> {
    let password: Option<Zeroizing<String>> = match &s.password {
        Some(p) => Some(p.resolve(&format!("password of source {}", s.name))?),
        None => None,
    };
    source_conn_with(s, password.as_deref().map(String::as_str))
}

/// Connection parameters of a source with its password already read (or none configured).
pub fn source_conn_with(s: &SourceConfig, password: Option<&str>) -> Result<ConnParams> {
    let lookup = |var: &str| -> Option<String> {
        match (password, var) {
            (Some(p), "PGPASSWORD") => Some(p.to_owned()),
            _ => process_env(var),
        }
    };
    let conn = ConnParams::resolve(Some(&s.url), &lookup)?;
    if let Some(w) = conn.tls_warning() {
        tracing::warn!(source = %s.name, "{w}");
    }
    Ok(conn)
}

/// The snapshots a source's retention and drill apply to: a PostgreSQL server (whatever its
/// databases), or a Supabase project.
pub fn source_filter(s: &SourceConfig) -> Result<crate::repository::Source> {
    match &s.supabase {
        Some(sb) => {
            let project = sb.project.resolve()?;
            Ok(commands::snapshot_supabase::project_filter(&project))
        }
        None => Ok(commands::snapshot_postgres::server_filter(&source_conn(s)?)),
    }
}

/// The alert channels of a job, their secrets resolved (a channel whose secret cannot be read
/// is left out, and logged).
pub fn channels(config: &Config, names: &[String]) -> Vec<(Channel, super::config::AlertEvents)> {
    let mut out = Vec::new();
    for name in names {
        let Some(a) = config.alerts.get(name) else {
            continue;
        };
        let resolved = match &a.channel {
            ChannelConfig::Email {
                server,
                port,
                security,
                username,
                password,
                from,
                to,
            } => password
                .as_ref()
                .map(|p| p.resolve(&format!("password of alert channel {name}")))
                .transpose()
                .map(|password| {
                    Channel::Email(EmailChannel {
                        name: name.clone(),
                        server: server.clone(),
                        port: *port,
                        security: *security,
                        username: username.clone(),
                        password,
                        from: from.clone(),
                        to: to.clone(),
                        ca_file: a.ca_file.clone(),
                        timeout: a.timeout,
                        insecure: a.insecure,
                    })
                }),
            ChannelConfig::Webhook { url } => url
                .resolve(&format!("url of alert channel {name}"))
                .map(|url| {
                    Channel::Webhook(WebhookChannel {
                        name: name.clone(),
                        url,
                        ca_file: a.ca_file.clone(),
                        timeout: a.timeout,
                        insecure: a.insecure,
                    })
                }),
        };
        match resolved {
            Ok(c) => out.push((c, a.events)),
            Err(e) => {
                tracing::error!(channel = %name, "alert channel unusable: {}", redact(&e.to_string()))
            }
        }
    }
    out
}

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
                AlertKind::Digest | AlertKind::Damage => {}
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
                AlertKind::Failure | AlertKind::Damage => ev.failure,
                AlertKind::Recovery => ev.recovery,
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
            match self.attempt(step) {
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

    /// The wait before retry `n` (1-based): the delay, doubled for each retry before.
    fn retry_delay(&self, n: u32) -> Duration {
        self.job.retry_delay.saturating_mul(1u32 << (n - 1).min(16))
    }

    fn repository(&mut self, offline_start: bool) -> Result<&Repository> {
        if self.repo.is_none() {
            let r = &self.config.repositories[&self.job.repository];
            let (repo, timed) = open_repository(r, offline_start)?;
            self.timed = Some(timed);
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

    /// A Supabase source's snapshot, its secrets resolved.
    fn snapshot_supabase(
        &self,
        src: &SourceConfig,
        sb: &super::config::SupabaseSourceConfig,
        repo: &crate::Repository,
    ) -> Result<commands::SnapshotView> {
        let what = |f: &str| format!("{f} of source {}", src.name);
        let storage = match (&sb.storage_access_key_id, &sb.storage_secret_access_key) {
            (Some(id), Some(secret)) => Some((
                id.resolve(&what("storage_access_key_id"))?.to_string(),
                secret.resolve(&what("storage_secret_access_key"))?,
            )),
            _ => None,
        };
        let access_token = match &sb.access_token {
            Some(t) => Some(t.resolve(&what("access_token"))?),
            None => None,
        };
        let opts = commands::snapshot_supabase::SupabaseOptions {
            credentials: commands::snapshot_supabase::Credentials {
                db: Some(source_conn(src)?),
                storage,
                access_token,
            },
            stop: Some(Arc::clone(&self.ctx.stop)),
            project: sb.project.resolve()?,
            functions_dir: sb.project.functions_dir.clone(),
            require: commands::snapshot_supabase::Required {
                storage: sb.require_storage,
                functions: sb.require_functions,
            },
            buckets: sb.buckets.clone(),
            exclude_table_data: src.exclude_table_data.clone(),
            count_rows: src.count_rows,
            no_storage: sb.no_storage,
            no_functions: sb.no_functions,
            reread_storage: false,
            connections: repo
                .concurrency()
                .max(crate::repository::open::DEFAULT_CONNECTIONS),
            ca_cert: None,
            retry_deadline: crate::repository::open::DEFAULT_DEADLINE,
            tools: Tools {
                bindir: src.pg_bin_dir.clone(),
            },
            common: self.snapshot_common(),
        };
        Ok(commands::snapshot_supabase::snapshot_supabase(repo, &opts, Default::default())?.view)
    }

    /// A PostgreSQL source's snapshot options.
    fn postgres_options(
        &self,
        src: &SourceConfig,
    ) -> Result<commands::snapshot_postgres::PostgresOptions> {
        Ok(commands::snapshot_postgres::PostgresOptions {
            conn: source_conn(src)?,
            databases: src.databases.clone(),
            all_databases: src.all_databases,
            dump: DumpOptions {
                schemas: src.schemas.clone(),
                exclude_tables: src.exclude_tables.clone(),
                exclude_table_data: src.exclude_table_data.clone(),
                count_rows: src.count_rows,
            },
            jobs: src.jobs as usize,
            tools: Tools {
                bindir: src.pg_bin_dir.clone(),
            },
            common: self.snapshot_common(),
            stop: Some(Arc::clone(&self.ctx.stop)),
        })
    }

    fn snapshot(&mut self) -> Result<String> {
        let src = self.source()?.clone();
        self.repository(true)?;
        let written_before = self.timed.as_ref().map_or(0.0, |t| t.write_secs());
        let repo = self.repo.as_ref().expect("opened");
        let view = match &src.supabase {
            Some(sb) => self.snapshot_supabase(&src, sb, repo)?,
            None => {
                let opts = self.postgres_options(&src)?;
                commands::snapshot_postgres::snapshot_postgres(repo, &opts, Default::default())?
            }
        };
        let upload_secs = self.timed.as_ref().map_or(0.0, |t| t.write_secs()) - written_before;
        let spooled = repo.spool().and_then(|s| s.spooled_because());
        let s = &view.snapshot.summary;
        self.record.snapshot = Some(SnapshotFacts {
            id: view.id.to_hex(),
            time: view.snapshot.time.with_timezone(&Utc),
            bytes_in: s.bytes_in,
            bytes_added: s.bytes_added,
            bytes_added_raw: s.bytes_added_raw,
            blobs_new: s.blobs_new,
            blobs_delta: s.blobs_delta,
            upload_secs,
            spooled: spooled.is_some(),
        });
        if let Some(reason) = spooled {
            return Err(Error::Spooled(format!(
                "snapshot {} is stored in the local spool and not yet uploaded: {reason}",
                view.short_id
            )));
        }
        Ok(format!(
            "snapshot {}: {} read, {} added",
            view.short_id,
            indicatif::HumanBytes(s.bytes_in),
            indicatif::HumanBytes(s.bytes_added)
        ))
    }

    /// What the job's snapshots are labelled with and how they are stored: its tags (and the
    /// one naming the job, which scopes its retention), deltas unless `no_delta`.
    fn snapshot_common(&self) -> commands::snapshot::SnapshotCommon {
        commands::snapshot::SnapshotCommon {
            tags: self.job_tags(),
            no_delta: self.job.no_delta,
            ..Default::default()
        }
    }

    /// The job's tags, and the one naming the job that scopes its retention.
    fn job_tags(&self) -> Vec<String> {
        let mut tags = self.job.tags.clone();
        tags.push(job_tag(&self.job.name));
        tags
    }

    fn forget(&mut self) -> Result<String> {
        let filter = source_filter(self.source()?)?;
        let tags = match self.job.retention_scope {
            RetentionScope::Job => vec![job_tag(&self.job.name)],
            RetentionScope::Source => Vec::new(),
        };
        let opts = commands::forget::ForgetOptions {
            policy: self.job.retention.clone().unwrap_or_default(),
            group_by: commands::forget::DEFAULT_GROUP_BY.to_vec(),
            ids: Vec::new(),
            hosts: vec![Actor::current().host],
            tags,
            source: Some(filter),
            dry_run: false,
        };
        let repo = self.repository(false)?;
        let report = commands::forget::forget(repo, &opts)?;
        let kept: usize = report.groups.iter().map(|g| g.keep.len()).sum();
        Ok(format!(
            "removed {} snapshot(s), kept {kept}",
            report.removed.len()
        ))
    }

    fn prune(&mut self) -> Result<String> {
        let opts = commands::prune::PruneOptions {
            max_unused: self.job.prune_max_unused,
            grace: self
                .job
                .prune_grace
                .unwrap_or(commands::prune::DEFAULT_GRACE),
            ..Default::default()
        };
        let repo = self.repository(false)?;
        let r = commands::prune::prune(repo, &opts)?;
        Ok(format!(
            "{} pack(s) marked, {} deleted, {} repacked",
            r.packs_marked, r.packs_deleted, r.packs_repacked
        ))
    }

    fn check(&mut self) -> Result<String> {
        let opts = commands::check::CheckOptions {
            read_data: self.job.check_read_data,
        };
        let repo = self.repository(false)?;
        let r = commands::check::check(repo, &opts)?;
        if !r.ok {
            let first = r.errors.first().map_or("", |p| p.message.as_str());
            return Err(Error::Damaged {
                what: "the repository".into(),
                reason: format!(
                    "check found {} problem(s), {} damaged pack(s); first: {first}; run `sbk check` for all",
                    r.errors.len(),
                    r.damaged_packs.len()
                ),
            });
        }
        Ok(format!(
            "{} snapshots, {} packs, read {} of them",
            r.snapshots, r.packs, r.packs_read
        ))
    }

    fn drill(&mut self) -> Result<String> {
        let src = self.source()?.clone();
        let filter = source_filter(&src)?;
        let scratch_url = self.job.drill_scratch.clone().unwrap_or_default();
        let password = match &self.job.drill_password {
            Some(p) => Some(p.resolve(&format!("drill_password of job {}", self.job.name))?),
            None => None,
        };
        let lookup = |var: &str| -> Option<String> {
            match (&password, var) {
                (Some(p), "PGPASSWORD") => Some(p.to_string()),
                _ => process_env(var),
            }
        };
        let scratch = ConnParams::resolve(Some(&scratch_url), &lookup)?;
        let repo = self.repository(false)?;
        let all = repo.list_snapshots()?;
        let filter = commands::forget::widen_to_cluster(&all, &filter);
        let newest = all
            .into_iter()
            .filter(|(id, s)| !repo.is_spooled(id) && commands::forget::matches_source(s, &filter))
            .max_by_key(|(_, s)| s.time)
            .ok_or_else(|| {
                Error::NotFound(format!("no snapshot of source {} to drill", src.name))
            })?;
        let tools = Tools {
            bindir: src.pg_bin_dir.clone(),
        };
        let out = commands::verify::verify(
            repo,
            &crate::repository::SnapshotRef::Id(newest.0),
            &scratch,
            None,
            1,
            &tools,
        )?;
        let restore_secs: f64 = out.databases.iter().map(|d| d.restore_secs).sum();
        let tables: usize = out.databases.iter().map(|d| d.tables.len()).sum();
        let mismatches: usize = out
            .databases
            .iter()
            .map(|d| d.tables.iter().filter(|t| !t.ok).count())
            .sum();
        self.record.drill = Some(DrillFacts {
            snapshot: out.snapshot.to_hex(),
            ok: out.passed,
            restore_secs,
            tables,
            mismatches,
        });
        if !out.passed {
            let why = out
                .databases
                .iter()
                .find_map(|d| d.error.clone())
                .unwrap_or_else(|| format!("{mismatches} table(s) differ from the manifest"));
            return Err(Error::Source(format!(
                "restore drill of snapshot {} failed: {why}",
                out.snapshot.short()
            )));
        }
        Ok(format!(
            "snapshot {} restored in {restore_secs:.1}s, {tables} tables match",
            out.snapshot.short()
        ))
    }

    /// Repository size and snapshot count, when the repository could be opened.
    fn facts(&mut self) {
        let Some(repo) = &self.repo else { return };
        if let Ok(size) = repo.storage_size() {
            self.record.repository = Some(RepositoryFacts {
                size_bytes: size.pack_bytes,
                snapshots: size.snapshot_files as u64,
                damaged: repo
                    .damage()
                    .iter()
                    .map(|d| format!("{} {}: {} ({})", d.kind, d.id.short(), d.message, d.remedy))
                    .collect(),
            });
        }
    }
}
