//! The WAL archive's lag, watched for jobs that take base backups (a source with
//! `type = "postgres-physical"`): how long the server's WAL has not been reaching the
//! repository, which bounds what a point-in-time restore could lose.
//!
//! **Definition.** When the server can be reached, the lag is 0 while the newest archived
//! segment is at or after the segment before the one the server writes
//! (`pg_walfile_name(pg_current_wal_lsn())`): a segment is archived only once full, so the one
//! being written is always open, and an idle server is not lagging however old its last
//! segment is. Otherwise (archiving is behind, or the server cannot be asked) the lag is the
//! age of the newest archived segment: the time since the archive last moved.
//!
//! Measured at the end of every run of such a job and, by the daemon, every
//! `wal_lag_interval` in between. Each measurement is a line of [`FILE`] in the state folder
//! (the last 30 days are kept), which `sbk status`, the metrics, the status page and the lag
//! alerts read; the run history stays small. A lag above `wal_lag_alert` opens a streak: one
//! alert when it starts, one when the lag drops below the threshold again. A lag that could
//! not be measured (nothing archived yet, the repository unreachable) leaves the streak as it
//! was: the failure of a run says that.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{Alert, AlertKind};
use super::config::{Config, JobConfig};
use super::history::{Entry, History};
use super::secret::redact;
use crate::error::{Error, Result};
use crate::postgres::client::Client;
use crate::postgres::conn::ConnParams;
use crate::repository::Repository;

/// The measurements' file in the state folder.
pub const FILE: &str = "wal-lag.jsonl";

/// Measurements older than this are dropped when the file is trimmed (the status page's span).
pub const KEEP_DAYS: i64 = 30;

/// The file is rewritten without old measurements once it grows past this: at one
/// measurement a minute, a job writes about 6 MiB in 30 days.
const TRIM_ABOVE_BYTES: u64 = 16 << 20;

/// One measurement of a job's WAL archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalLag {
    pub job: String,
    pub at: DateTime<Utc>,
    /// The lag by the definition above; `None` when it could not be measured.
    pub lag_secs: Option<u64>,
    /// The newest archived segment and its age (since the repository stored it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_age_secs: Option<u64>,
    /// The segment the server was writing, when it could be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The job's `wal_lag_alert` then, in seconds (`None`: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_secs: Option<u64>,
    /// The lag was above `wal_lag_alert`: an alert streak is open.
    #[serde(default)]
    pub over: bool,
    /// Why the server or the repository could not be read (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A segment file name's timeline and position, for segments of `segment_size` bytes.
fn segment_key(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) || segment_size == 0 {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    Some((tli, log * (0x1_0000_0000 / segment_size) + seg))
}

/// The lag by the module's definition: `newest` archived segment and its age, and, when the
/// server could be asked, the segment it writes and its segment size. `None` when nothing is
/// archived.
pub fn lag(
    newest: Option<&str>,
    newest_age_secs: Option<u64>,
    current: Option<(&str, u64)>,
) -> Option<u64> {
    let newest = newest?;
    if let Some((current, size)) = current {
        if let (Some(n), Some(c)) = (segment_key(newest, size), segment_key(current, size)) {
            // At or after the segment before the current one, on its timeline or a later one.
            if n.0 > c.0 || (n.0 == c.0 && n.1 + 1 >= c.1) {
                return Some(0);
            }
        }
    }
    newest_age_secs
}

/// The segment the server writes and its WAL segment size.
fn server_segment(conn: &ConnParams) -> Result<(String, u64)> {
    let client = Client::connect(conn)?;
    let rows = client.query(
        "SELECT pg_walfile_name(pg_current_wal_lsn()), \
         (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
        &[],
    )?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Postgres("the server did not name its WAL segment".into()))?;
    let (name, size): (String, i64) = (row.get(0), row.get(1));
    Ok((name, size.max(0) as u64))
}

/// The measurements of a state folder.
fn log(state_dir: &Path) -> History {
    History::named(state_dir, FILE)
}

/// Every measurement recorded, oldest first.
pub fn measurements(state_dir: &Path) -> Result<Vec<WalLag>> {
    Ok(log(state_dir)
        .entries()?
        .into_iter()
        .filter_map(|e| match e {
            Entry::WalLag(m) => Some(*m),
            _ => None,
        })
        .collect())
}

/// What a measurement changed: a streak of lag above the threshold started or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Started,
    Ended,
}

/// Measures job `job`'s archive now, through `repo` when the caller has it open, records the
/// measurement and says whether a streak started or ended. Never fails: what could not be
/// read is in the measurement's `error`.
pub fn measure(
    config: &Config,
    job: &JobConfig,
    repo: Option<&Repository>,
) -> (WalLag, Option<Change>) {
    let watch = job.wal_lag.clone().unwrap_or(super::config::WalLagConfig {
        alert: None,
        interval: super::config::DEFAULT_WAL_LAG_INTERVAL,
    });
    let mut errors = Vec::new();
    let opened;
    let repo = match repo {
        Some(r) => Some(r),
        None => {
            opened = config
                .repositories
                .get(&job.repository)
                .ok_or_else(|| Error::Invalid(format!("no repository {}", job.repository)))
                .and_then(|r| super::job::open_repository(r, false));
            match &opened {
                Ok((r, _)) => Some(r),
                Err(e) => {
                    errors.push(format!("repository: {e}"));
                    None
                }
            }
        }
    };
    let status = repo
        .map(|r| r.wal_status())
        .transpose()
        .unwrap_or_else(|e| {
            errors.push(format!("repository: {e}"));
            None
        });
    let server = job
        .source
        .as_ref()
        .and_then(|s| config.sources.get(s))
        .ok_or_else(|| Error::Invalid(format!("job {} has no source", job.name)))
        .and_then(super::job::source_conn)
        .and_then(|c| server_segment(&c))
        .map_err(|e| errors.push(format!("server: {e}")))
        .ok();
    let newest = status.as_ref().and_then(|s| s.newest.clone());
    let newest_age_secs = status.as_ref().and_then(|s| s.newest_age_seconds);
    let lag_secs = lag(
        newest.as_deref(),
        newest_age_secs,
        server.as_ref().map(|(n, size)| (n.as_str(), *size)),
    );
    let history = log(&config.state_dir);
    let before = measurements(&config.state_dir)
        .ok()
        .and_then(|all| all.into_iter().rev().find(|m| m.job == job.name))
        .is_some_and(|m| m.over);
    let over = match lag_secs {
        Some(l) => watch.alert.is_some_and(|t| l > t.as_secs()),
        None => before,
    };
    let m = WalLag {
        job: job.name.clone(),
        at: Utc::now(),
        lag_secs,
        newest,
        newest_age_secs,
        current: server.map(|(n, _)| n),
        alert_secs: watch.alert.map(|t| t.as_secs()),
        over,
        error: (!errors.is_empty()).then(|| redact(&errors.join("; ")).into_owned()),
    };
    if let Err(e) = history.append(&Entry::WalLag(Box::new(m.clone()))) {
        tracing::warn!(job = %job.name, "the WAL lag could not be recorded: {}", redact(&e.to_string()));
    }
    trim(&history);
    let change = match (before, over) {
        (false, true) => Some(Change::Started),
        (true, false) => Some(Change::Ended),
        _ => None,
    };
    (m, change)
}

/// Drops measurements older than [`KEEP_DAYS`] once the file is large.
fn trim(history: &History) {
    let big = std::fs::metadata(history.path()).is_ok_and(|m| m.len() > TRIM_ABOVE_BYTES);
    if !big {
        return;
    }
    let cutoff = Utc::now() - chrono::Duration::days(KEEP_DAYS);
    if let Err(e) = history.retain(|e| matches!(e, Entry::WalLag(m) if m.at >= cutoff)) {
        tracing::warn!("could not trim {}: {e}", history.path().display());
    }
}

/// The alert a streak's start or end sends.
pub fn alert(m: &WalLag, change: Change, host: &str) -> Alert {
    let age =
        |s: Option<u64>| s.map_or("unknown".to_owned(), |s| super::status::age_text(s as i64));
    let (kind, error, details) = match change {
        Change::Started => (
            AlertKind::WalLag,
            Some(format!(
                "the WAL archive lags {} (alert above {}): the newest archived segment is {}, \
                 archived {} ago; the server writes {}",
                age(m.lag_secs),
                age(m.alert_secs),
                m.newest.as_deref().unwrap_or("none"),
                age(m.newest_age_secs),
                m.current.as_deref().unwrap_or("(server not reached)")
            )),
            "WAL written since then is not in the repository: a point-in-time restore cannot \
             reach past it. Look at the server's log and pg_stat_archiver (failed_count, \
             last_failed_wal) for why `sbk wal push` fails."
                .to_owned(),
        ),
        Change::Ended => (
            AlertKind::WalLagRecovered,
            None,
            format!(
                "The WAL archive caught up: lag {}, newest archived segment {}.",
                age(m.lag_secs),
                m.newest.as_deref().unwrap_or("none")
            ),
        ),
    };
    Alert {
        kind,
        job: m.job.clone(),
        host: host.to_owned(),
        step: Some("wal-archive".into()),
        error,
        duration_secs: 0.0,
        last_success: None,
        at: m.at,
        details: Some(match &m.error {
            Some(e) => format!("{details}\n{e}"),
            None => details,
        }),
    }
}

/// "lag 0s (newest 0000000100000000000000A3, server at 0000000100000000000000A4)": one line.
pub fn describe(m: &WalLag) -> String {
    let lag = m
        .lag_secs
        .map_or("unknown".to_owned(), |s| super::status::age_text(s as i64));
    let mut s = format!("WAL archive lag {lag}");
    if m.over {
        s.push_str(" (OVER the alert threshold)");
    }
    if let Some(n) = &m.newest {
        s.push_str(&format!(", newest archived {n}"));
    }
    if let Some(c) = &m.current {
        s.push_str(&format!(", server writes {c}"));
    }
    if let Some(e) = &m.error {
        s.push_str(&format!(" [{e}]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    #[test]
    fn lag_is_zero_up_to_the_segment_before_the_current_one() {
        let cur = Some(("000000010000000000000010", MB16));
        // The segment before the current one is archived: caught up, however old.
        assert_eq!(
            lag(Some("00000001000000000000000F"), Some(5000), cur),
            Some(0)
        );
        assert_eq!(
            lag(Some("000000010000000000000010"), Some(5000), cur),
            Some(0)
        );
        // Two behind: the age of the newest archived segment.
        assert_eq!(
            lag(Some("00000001000000000000000E"), Some(42), cur),
            Some(42)
        );
        // Across a log boundary: ...01 00000000 follows ...00 000000FF with 16 MiB segments.
        let cur = Some(("000000010000000100000000", MB16));
        assert_eq!(lag(Some("0000000100000000000000FF"), Some(7), cur), Some(0));
        assert_eq!(lag(Some("0000000100000000000000FE"), Some(7), cur), Some(7));
        // Another segment size: 64 MiB segments make 64 per log.
        let cur = Some(("000000010000000100000000", 64 << 20));
        assert_eq!(lag(Some("00000001000000000000003F"), Some(7), cur), Some(0));
        // A newer timeline in the archive than the server's: not behind it.
        let cur = Some(("000000010000000000000010", MB16));
        assert_eq!(lag(Some("000000020000000000000001"), Some(9), cur), Some(0));
        // An older timeline (the server was promoted): behind.
        let cur = Some(("000000020000000000000010", MB16));
        assert_eq!(lag(Some("00000001000000000000000F"), Some(9), cur), Some(9));
    }

    #[test]
    fn without_the_server_the_lag_is_the_age() {
        assert_eq!(
            lag(Some("00000001000000000000000F"), Some(77), None),
            Some(77)
        );
        assert_eq!(
            lag(None, None, Some(("000000010000000000000010", MB16))),
            None
        );
    }
}
