//! Per-job metrics in the Prometheus text exposition format (version 0.0.4), for the daemon's
//! `/metrics` and, for cron users, a node_exporter textfile written atomically after each run.

use std::fmt::Write as _;
use std::path::Path;

use chrono::Utc;

use super::config::Config;
use super::status::{status, JobStatus};
use crate::error::{Error, Result};

/// Escapes a label value: backslash, double quote and newline.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    value: fn(&JobStatus) -> Option<f64>,
}

const FAMILIES: &[Family<'static>] = &[
    Family {
        name: "sbk_job_last_success_timestamp_seconds",
        help: "End of the job's last successful run (Unix time).",
        kind: "gauge",
        value: |s| s.last_success.map(|t| t.timestamp() as f64),
    },
    Family {
        name: "sbk_job_last_run_timestamp_seconds",
        help: "Start of the job's last run (Unix time).",
        kind: "gauge",
        value: |s| s.last_run.as_ref().map(|r| r.started.timestamp() as f64),
    },
    Family {
        name: "sbk_job_last_run_success",
        help: "1 if the job's last run succeeded, else 0.",
        kind: "gauge",
        value: |s| {
            s.last_run
                .as_ref()
                .map(|r| (r.outcome == super::history::Outcome::Success) as u8 as f64)
        },
    },
    Family {
        name: "sbk_job_last_duration_seconds",
        help: "Duration of the job's last run.",
        kind: "gauge",
        value: |s| s.last_run.as_ref().map(|r| r.duration_secs),
    },
    Family {
        name: "sbk_job_newest_snapshot_age_seconds",
        help: "Age of the job's newest good snapshot.",
        kind: "gauge",
        value: |s| s.newest_good_age_secs.map(|a| a as f64),
    },
    Family {
        name: "sbk_job_max_age_seconds",
        help: "Allowed age of the newest good snapshot.",
        kind: "gauge",
        value: |s| Some(s.max_age_secs as f64),
    },
    Family {
        name: "sbk_job_overdue",
        help: "1 if the newest good snapshot is older than allowed.",
        kind: "gauge",
        value: |s| Some(s.overdue as u8 as f64),
    },
    Family {
        name: "sbk_job_running",
        help: "1 while the job runs.",
        kind: "gauge",
        value: |s| Some(s.running as u8 as f64),
    },
    Family {
        name: "sbk_job_last_bytes_read",
        help: "Bytes the last snapshot read from its source.",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|x| x.bytes_in as f64),
    },
    Family {
        name: "sbk_job_last_bytes_added",
        help: "Stored bytes the last snapshot added to the repository.",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|x| x.bytes_added as f64),
    },
    Family {
        name: "sbk_job_last_compression_ratio",
        help: "Plaintext over stored bytes of the last snapshot's new blobs.",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|x| x.compression_ratio()),
    },
    Family {
        name: "sbk_job_last_dedup_ratio",
        help:
            "Bytes read over new plaintext bytes of the last snapshot (deduplication and deltas).",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|x| x.dedup_ratio()),
    },
    Family {
        name: "sbk_job_last_upload_seconds",
        help: "Seconds the last snapshot spent writing to the repository, summed over connections.",
        kind: "gauge",
        value: |s| s.last_snapshot.as_ref().map(|x| x.upload_secs),
    },
    Family {
        name: "sbk_repository_size_bytes",
        help: "Stored bytes of the job's repository after its last run.",
        kind: "gauge",
        value: |s| s.repository_facts.as_ref().map(|r| r.size_bytes as f64),
    },
    Family {
        name: "sbk_repository_snapshots",
        help: "Snapshots in the job's repository after its last run.",
        kind: "gauge",
        value: |s| s.repository_facts.as_ref().map(|r| r.snapshots as f64),
    },
    Family {
        name: "sbk_repository_damaged_files",
        help: "Damaged repository files the job's last run passed over (0: none).",
        kind: "gauge",
        value: |s| s.repository_facts.as_ref().map(|r| r.damaged.len() as f64),
    },
    Family {
        name: "sbk_job_runs_total",
        help: "Runs of the job recorded in the history.",
        kind: "counter",
        value: |s| Some(s.runs as f64),
    },
    Family {
        name: "sbk_job_failures_total",
        help: "Failed step attempts of the job (retries included).",
        kind: "counter",
        value: |s| Some(s.failures as f64),
    },
    Family {
        name: "sbk_job_last_drill_success",
        help: "1 if the last restore drill passed, else 0.",
        kind: "gauge",
        value: |s| s.last_drill.as_ref().map(|(_, d)| d.ok as u8 as f64),
    },
    Family {
        name: "sbk_job_last_drill_restore_seconds",
        help: "Restore time of the last restore drill.",
        kind: "gauge",
        value: |s| s.last_drill.as_ref().map(|(_, d)| d.restore_secs),
    },
    Family {
        name: "sbk_wal_archive_lag_seconds",
        help: "The WAL archive's lag at its last measurement: 0 while the segment before the server's current one is archived, else the age of the newest archived segment (jobs taking base backups).",
        kind: "gauge",
        value: |s| s.wal_lag.as_ref().and_then(|m| m.lag_secs).map(|l| l as f64),
    },
    Family {
        name: "sbk_wal_archive_newest_age_seconds",
        help: "Age of the newest archived WAL segment at the last measurement.",
        kind: "gauge",
        value: |s| s.wal_lag.as_ref().and_then(|m| m.newest_age_secs).map(|l| l as f64),
    },
    Family {
        name: "sbk_wal_archive_lag_alert_seconds",
        help: "The job's wal_lag_alert: the lag above which it alerts.",
        kind: "gauge",
        value: |s| s.wal_lag.as_ref().and_then(|m| m.alert_secs).map(|l| l as f64),
    },
    Family {
        name: "sbk_wal_archive_lagging",
        help: "1 while the WAL archive's lag is above wal_lag_alert, else 0.",
        kind: "gauge",
        value: |s| s.wal_lag.as_ref().map(|m| m.over as u8 as f64),
    },
    Family {
        name: "sbk_wal_archive_lag_measured_timestamp_seconds",
        help: "When the WAL archive's lag was last measured (Unix time).",
        kind: "gauge",
        value: |s| s.wal_lag.as_ref().map(|m| m.at.timestamp() as f64),
    },
];

/// Renders every job's metrics.
pub fn render(config: &Config) -> Result<String> {
    let jobs = status(config, Utc::now())?;
    let mut out = String::new();
    for f in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for s in &jobs {
            if let Some(v) = (f.value)(s) {
                let _ = writeln!(
                    out,
                    "{}{{job=\"{}\",repository=\"{}\"}} {}",
                    f.name,
                    label(&s.job),
                    label(&s.repository),
                    v
                );
            }
        }
    }
    Ok(out)
}

/// Writes the metrics to `path` for node_exporter's textfile collector: a temporary file in
/// the same folder, then a rename, so the collector never reads half a file.
pub fn write_textfile(config: &Config, path: &Path) -> Result<()> {
    let text = render(config)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create", dir, e))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .map_err(|e| Error::io("write", tmp.path().to_owned(), e))?;
    // Private (0600, as tempfile makes it) unless the configuration opens it to a
    // node_exporter that runs as another user.
    if config.metrics_file_readable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod", tmp.path().to_owned(), e))?;
    }
    tmp.persist(path)
        .map_err(|e| Error::io("rename to", path, e.error))?;
    Ok(())
}
