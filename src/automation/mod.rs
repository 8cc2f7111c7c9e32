//! Automation: jobs declared in a configuration file, run once (`sbk run`) or on a schedule
//! (`sbk daemon`), with a durable run history, alerts, metrics, status and reports.
//!
//! - [`config`]: the TOML file, validated with line numbers; secrets only by reference.
//! - [`secret`]: where secrets come from, and the redaction every message passes through.
//! - [`schedule`]: cron expressions, next and missed runs, crontab and systemd output.
//! - [`history`]: the append-only run history that survives crashes.
//! - [`job`]: one run of a job: snapshot, forget, prune, check, drill, with retries.
//! - [`alert`]: e-mail (SMTP) and webhook delivery.
//! - [`probe`]: `config check --probe`: every secret, repository, source and alert channel tried.
//! - [`wal_lag`]: the WAL archive's lag for jobs taking base backups, measured and alerted.
//! - [`metrics`], [`status`]: Prometheus text, status lines and reports from the history.
//! - [`chart`]: the status page's pictures, inline SVG.
//! - [`daemon`]: the scheduler and its HTTP endpoints.
//! - [`runtime`]: the one Tokio runtime their network I/O shares.

pub mod alert;
pub mod chart;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod history;
pub mod job;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod probe;
pub mod runtime;
pub mod schedule;
pub mod secret;
pub mod status;
pub mod wal_lag;
