//! The configuration file (TOML): repositories, sources, alert channels and jobs, each a table
//! named by the user (`[job.app-daily]`). Parsing keeps byte spans, so every problem is reported
//! with its line and column, all at once. Secrets are never inline: a secret field takes
//! `{ env = "VAR" }`, `{ file = "/path" }` or `{ command = "..." }`; a plain string there (or a
//! password inside a connection URL) is an error that says how to fix it. Secrets are read
//! when a job needs them, so `sbk config check` works without them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::alert::SmtpSecurity;
use super::cron::Schedule;
use super::secret::SecretSource;
use crate::commands::check::ReadData;
use crate::commands::prune::MaxUnused;
use crate::postgres::conn::ConnParams;
use crate::retention::{Count, Policy, Span};

mod check;
mod raw;
mod tables;

use raw::*;

/// Where `sbk` looks for its configuration when neither `--config` nor `SBK_CONFIG` is given:
/// the system file, then the user's.
pub fn default_paths() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/sbk/sbk.toml")];
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d).join("sbk/sbk.toml"));
    } else if let Some(h) = std::env::var_os("HOME") {
        v.push(PathBuf::from(h).join(".config/sbk/sbk.toml"));
    }
    v
}

/// Run history and locks: `/var/lib/sbk` for root, else the user's state folder.
fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/sbk");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("sbk");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/sbk"),
        None => PathBuf::from("/var/lib/sbk"),
    }
}

/// The daemon's default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

/// One problem in the file, at a line and column (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Everything wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            // Line 0: about the file as a whole (it cannot be read), no position to give.
            match p.line {
                0 => write!(f, "{}: {}", self.path.display(), p.message)?,
                _ => write!(
                    f,
                    "{}:{}:{}: {}",
                    self.path.display(),
                    p.line,
                    p.column,
                    p.message
                )?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    /// Make the metrics file readable by all (0644) for a node_exporter running as another
    /// user; by default it is 0600 like everything sbk writes (it names jobs and repositories).
    pub metrics_file_readable: bool,
    pub daemon: DaemonConfig,
    pub repositories: BTreeMap<String, RepositoryConfig>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub alerts: BTreeMap<String, AlertConfig>,
    pub jobs: BTreeMap<String, JobConfig>,
}

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    /// The bearer token every HTTP path but `/healthz` requires; mandatory when `listen` is
    /// not a loopback address.
    pub token: Option<SecretSource>,
    /// How long a stopping daemon waits for running jobs to end after asking them to stop.
    pub stop_timeout: Duration,
    /// Missed runs no older than this run once when the daemon starts ([`super::cron::missed_run`]).
    pub catch_up: Duration,
}

#[derive(Clone, Debug)]
pub struct RepositoryConfig {
    pub name: String,
    pub url: String,
    pub password: SecretSource,
    pub access_key_id: Option<SecretSource>,
    pub secret_access_key: Option<SecretSource>,
    pub cache_dir: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    pub no_cache: bool,
    pub s3_connections: Option<u16>,
    pub s3_ca_cert: Option<PathBuf>,
    pub s3_region: Option<String>,
    pub s3_timeout: Option<Duration>,
    pub retry_deadline: Option<Duration>,
    /// Allow a plain `http://` S3 endpoint off loopback.
    pub insecure: bool,
}

/// What a `type = "supabase"` source adds (`docs/supabase.md`).
#[derive(Clone, Debug, Default)]
pub struct SupabaseSourceConfig {
    pub project: crate::supabase::project::ProjectSpec,
    pub buckets: Vec<String>,
    pub require_storage: bool,
    pub require_functions: bool,
    pub no_storage: bool,
    pub no_functions: bool,
    /// Storage's S3 keys and the Management API token, else from the environment.
    pub storage_access_key_id: Option<SecretSource>,
    pub storage_secret_access_key: Option<SecretSource>,
    pub access_token: Option<SecretSource>,
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub name: String,
    /// Connection URL or conninfo, without a password (for a Supabase source: its database,
    /// given or derived from the project URL).
    pub url: String,
    /// A Supabase project, for `type = "supabase"`.
    pub supabase: Option<SupabaseSourceConfig>,
    pub password: Option<SecretSource>,
    pub databases: Vec<String>,
    pub all_databases: bool,
    pub schemas: Vec<String>,
    pub exclude_tables: Vec<String>,
    pub exclude_table_data: Vec<String>,
    pub count_rows: bool,
    pub jobs: u16,
    pub pg_bin_dir: Option<PathBuf>,
    /// `type = "postgres-physical"`: base backups of the whole cluster (`pg_basebackup`) for
    /// point-in-time recovery, instead of dumps (`docs/pitr.md`).
    pub physical: bool,
}

/// Which events a channel receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertEvents {
    pub failure: bool,
    pub recovery: bool,
}

#[derive(Clone, Debug)]
pub enum ChannelConfig {
    Email {
        server: String,
        port: u16,
        security: SmtpSecurity,
        username: Option<String>,
        password: Option<SecretSource>,
        from: String,
        to: Vec<String>,
    },
    Webhook {
        url: SecretSource,
    },
}

#[derive(Clone, Debug)]
pub struct AlertConfig {
    pub name: String,
    pub channel: ChannelConfig,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Allow a plain `http://` webhook or SMTP AUTH without TLS off loopback.
    pub insecure: bool,
    pub events: AlertEvents,
    /// A daily digest, sent by the daemon at these times.
    pub digest: Option<Schedule>,
}

/// When a step of a job runs.
#[derive(Clone, Debug, PartialEq)]
pub enum StepWhen {
    Never,
    Always,
    /// When one of these scheduled times passed since the step last ran.
    Due(Vec<Schedule>),
}

impl StepWhen {
    pub fn is_never(&self) -> bool {
        *self == StepWhen::Never
    }
}

/// Which snapshots a job's retention considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionScope {
    /// Only those the job made (tagged [`job_tag`]): the default, so that two jobs, or a job and
    /// a person, sharing a repository never forget each other's snapshots.
    Job,
    /// Every snapshot of the job's source taken from this machine, whoever made it.
    Source,
}

impl std::fmt::Display for RetentionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetentionScope::Job => "job",
            RetentionScope::Source => "source",
        })
    }
}

/// The tag a job puts on every snapshot it takes: what its retention is scoped to.
pub fn job_tag(job: &str) -> String {
    format!("job:{job}")
}

#[derive(Clone, Debug)]
pub struct JobConfig {
    pub name: String,
    pub source: Option<String>,
    pub repository: String,
    pub schedules: Vec<Schedule>,
    /// Take a snapshot (a job without a source only maintains its repository).
    pub snapshot: bool,
    pub tags: Vec<String>,
    pub no_delta: bool,
    /// zstd level for the job's snapshots (`fast`, `auto`, `max` or a level); `None`: the
    /// repository's.
    pub compression: Option<i32>,
    /// Forget by this policy after each run.
    pub retention: Option<Policy>,
    pub retention_scope: RetentionScope,
    pub prune: StepWhen,
    pub prune_max_unused: MaxUnused,
    pub prune_grace: Option<Duration>,
    pub check: StepWhen,
    pub check_read_data: ReadData,
    pub drill: StepWhen,
    pub drill_scratch: Option<String>,
    pub drill_password: Option<SecretSource>,
    /// `sbk status` fails when the newest good snapshot is older than this.
    pub max_age: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    /// Alert channels (all when the job names none).
    pub alerts: Vec<String>,
    /// How the WAL archive's lag is watched: set for jobs that take base backups.
    pub wal_lag: Option<WalLagConfig>,
}

/// How a job taking base backups watches the lag of the WAL archive they need
/// ([`crate::automation::wal_lag`]).
#[derive(Clone, Debug, PartialEq)]
pub struct WalLagConfig {
    /// Alert when the lag exceeds this (`None`: `wal_lag_alert = "off"`).
    pub alert: Option<Duration>,
    /// How often the daemon measures it between runs.
    pub interval: Duration,
}

/// Default `wal_lag_alert`: a quarter of an hour of WAL at risk is worth waking someone for,
/// and a server writing steadily with `archive_timeout` unset never lags that long.
pub const DEFAULT_WAL_LAG_ALERT: Duration = Duration::from_secs(15 * 60);
/// Default `wal_lag_interval`: one repository listing a minute.
pub const DEFAULT_WAL_LAG_INTERVAL: Duration = Duration::from_secs(60);

impl Config {
    /// Things worth knowing that are not errors: jobs whose retention can forget snapshots
    /// another job takes (`retention_scope = "source"` over a source another job also backs
    /// up into the same repository).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for a in self.jobs.values() {
            if a.retention.is_none() || a.retention_scope != RetentionScope::Source {
                continue;
            }
            let others: Vec<String> = self
                .jobs
                .values()
                .filter(|b| {
                    b.name != a.name
                        && b.snapshot
                        && b.source == a.source
                        && b.repository == a.repository
                })
                .map(|b| format!("{:?}", b.name))
                .collect();
            if !others.is_empty() {
                notes.push(format!(
                    "job {:?}'s retention (retention_scope = \"source\") also forgets the \
                     snapshots of source {:?} that job(s) {} take",
                    a.name,
                    a.source.as_deref().unwrap_or_default(),
                    others.join(", ")
                ));
            }
        }
        notes
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "no such file: `sbk config init FILE` writes an example".to_owned()
                    }
                    _ => format!("cannot read the file: {e}"),
                },
            }],
        })?;
        Config::parse(path, &text)
    }

    /// Finds the file: `explicit` (from `--config` or `SBK_CONFIG`), else the first of
    /// [`default_paths`] that exists.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
        if let Some(p) = explicit {
            return Ok(p.to_owned());
        }
        let candidates = default_paths();
        candidates
            .iter()
            .find(|p| p.exists())
            .cloned()
            .ok_or_else(|| {
                let list: Vec<String> =
                    candidates.iter().map(|p| p.display().to_string()).collect();
                format!(
                    "no configuration file: give --config FILE or SBK_CONFIG, or create one of {} \
                     (`sbk config init FILE` writes an example)",
                    list.join(", ")
                )
            })
    }

    /// The job named `name`, or an error listing the jobs there are.
    pub fn job(&self, name: &str) -> crate::Result<&JobConfig> {
        self.jobs.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            crate::Error::NotFound(format!(
                "no job {name:?} in {}; its jobs: {}",
                self.path.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })
    }
}

/// The commented example `sbk config init` writes: the seed schedule.
pub const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(Path::new("sbk.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
                .collect(),
        }
    }

    #[test]
    fn the_example_is_valid() {
        let c = Config::parse(Path::new("example.toml"), EXAMPLE).unwrap();
        assert!(c.jobs.len() >= 5);
        let cleanup = c.jobs.values().find(|j| j.retention.is_some()).unwrap();
        let p = cleanup.retention.as_ref().unwrap();
        assert_eq!(
            (p.daily, p.weekly, p.monthly),
            (Count::Limit(7), Count::Limit(4), Count::Limit(12))
        );
    }

    #[test]
    fn inline_secrets_are_refused_with_their_line() {
        let text = "[repository.main]\nurl = \"/srv/b\"\npassword = \"hunter2\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("3:12: `password` is a secret"), "{p:?}");
        assert!(!p[0].contains("hunter2"));
        let text = "[repository.main]\nurl = \"/srv/b\"\npassword = { env = \"X\" }\n\
                    [source.app]\nurl = \"postgresql://u:pw@db/app\"\n";
        let p = problems(text);
        assert!(p[0].starts_with("5:7: `url` holds a password"), "{p:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[repository.main]
url = "/srv/b"
password = { env = "X", file = "/y" }

[job.a]
repository = "nope"
source = "missing"
schedule = "0 25 * * *"
retention = { keep_daily = -3 }
max_age = "soon"
"#;
        let p = problems(text);
        let joined = p.join("\n");
        assert_eq!(p.len(), 6, "{joined}");
        assert!(
            joined.contains("4:12: `password`: give exactly one"),
            "{joined}"
        );
        assert!(joined.contains("7:14: no repository \"nope\""), "{joined}");
        assert!(joined.contains("8:10: no source \"missing\""), "{joined}");
        assert!(joined.contains("9:12: `schedule`"), "{joined}");
        assert!(joined.contains("`keep_daily`: negative values"), "{joined}");
        assert!(joined.contains("11:11: `max_age`"), "{joined}");
    }

    #[test]
    fn jobs_choose_their_compression() {
        let job = |c: &str| {
            format!(
                "[repository.main]\nurl = \"/srv/b\"\npassword = {{ env = \"X\" }}\n\
                 [source.app]\nurl = \"postgresql://db/app\"\n[job.a]\nsource = \"app\"\n\
                 repository = \"main\"\nschedule = \"@daily\"\ncompression = {c}\n"
            )
        };
        let c = Config::parse(Path::new("sbk.toml"), &job("\"max\"")).unwrap();
        assert_eq!(c.jobs["a"].compression, Some(12));
        let c = Config::parse(Path::new("sbk.toml"), &job("\"-3\"")).unwrap();
        assert_eq!(c.jobs["a"].compression, Some(-3));
        let p = problems(&job("\"ultra\""));
        assert!(p[0].starts_with("10:15: `compression`: \"ultra\""), "{p:?}");
    }

    #[test]
    fn syntax_errors_and_unknown_fields_have_lines() {
        let p = problems("[job.a]\nrepository = \"m\"\nshedule = \"@daily\"\n");
        assert!(p[0].starts_with("3:1: unknown field `shedule`"), "{p:?}");
        let p = problems("[job.a\n");
        assert!(p[0].starts_with("1:"), "{p:?}");
    }

    #[test]
    fn supabase_sources_take_their_parts_and_secrets() {
        let text = "[source.p]\ntype = \"supabase\"\nproject_url = \"https://abcdefghijklmnopqrst.supabase.co\"\n\
                    storage_access_key_id = { env = \"K\" }\nstorage_secret_access_key = { env = \"S\" }\n\
                    access_token = { file = \"/t\" }\nbuckets = [\"avatars\"]\nrequire = [\"storage\"]\n";
        let c = Config::parse(Path::new("sbk.toml"), text).unwrap();
        let s = &c.sources["p"];
        assert_eq!(
            s.url,
            "postgresql://postgres@db.abcdefghijklmnopqrst.supabase.co:5432/postgres?sslmode=require"
        );
        let sb = s.supabase.as_ref().unwrap();
        assert!(sb.storage_access_key_id.is_some() && sb.storage_secret_access_key.is_some());
        assert!(sb.access_token.is_some() && sb.require_storage && !sb.require_functions);
        assert_eq!(sb.buckets, ["avatars"]);
        for (bad, want) in [
            ("[source.p]\nurl = \"postgresql://h/db\"\nbuckets = [\"a\"]\n", "belong to a source with type = \"supabase\""),
            ("[source.p]\ntype = \"supabase\"\nproject_url = \"ftp://x\"\n", "--project-url"),
            ("[source.p]\ntype = \"supabase\"\nproject_url = \"https://abc.supabase.co\"\naccess_token = \"sbp_x\"\n", "`access_token` is a secret"),
            ("[source.p]\ntype = \"supabase\"\nproject_url = \"https://abc.supabase.co\"\nrequire = [\"db\"]\n", "not a part"),
            ("[source.p]\ntype = \"mysql\"\nurl = \"x\"\n", "not supported"),
        ] {
            let e = Config::parse(Path::new("sbk.toml"), bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
