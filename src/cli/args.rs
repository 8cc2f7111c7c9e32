//! Command-line grammar (clap). Values are validated here so later code never sees raw strings.
//!
//! One file (~740 lines) on purpose: it is declarations only (clap derives, no logic beyond
//! value parsers), and one file lets a reader see every verb and flag and keep their names
//! consistent.

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use clap::{Args, Parser, Subcommand};
use sbk::repository::SnapshotRef;

#[derive(Parser, Debug)]
#[command(
    name = "sbk",
    version,
    about = "Deduplicating, encrypted backups for PostgreSQL",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository: a local path, or s3:https://host[:port]/bucket[/prefix]
    #[arg(
        short = 'r',
        long = "repo",
        env = "SBK_REPOSITORY",
        global = true,
        help_heading = "Repository options"
    )]
    pub repo: Option<String>,
    /// Read the password from this file (first line)
    #[arg(
        long,
        env = "SBK_PASSWORD_FILE",
        global = true,
        help_heading = "Repository options"
    )]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password
    #[arg(
        long,
        env = "SBK_PASSWORD_COMMAND",
        global = true,
        help_heading = "Repository options"
    )]
    pub password_command: Option<String>,
    /// Keep a local cache of blobs (delta bases) in this folder [default for remote
    /// repositories: $XDG_CACHE_HOME/sbk or ~/.cache/sbk]
    #[arg(
        long,
        env = "SBK_CACHE_DIR",
        global = true,
        help_heading = "Repository options"
    )]
    pub cache_dir: Option<PathBuf>,
    /// Remote repositories: where snapshots finished during an outage wait for `sbk sync`
    /// [default: the cache folder's spool/]
    #[arg(
        long,
        env = "SBK_SPOOL_DIR",
        global = true,
        help_heading = "Repository options"
    )]
    pub spool_dir: Option<PathBuf>,
    /// Use no local blob cache (wins over --cache-dir and SBK_CACHE_DIR)
    #[arg(long, global = true, help_heading = "Repository options")]
    pub no_cache: bool,
    /// S3: requests in flight at once (uploads, ranged reads)
    #[arg(long, env = "SBK_S3_CONNECTIONS", global = true, help_heading = "S3 options", default_value_t = sbk::repository::open::DEFAULT_CONNECTIONS as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub s3_connections: u16,
    /// S3: also trust this CA certificate (PEM), for a self-hosted MinIO
    #[arg(
        long,
        env = "SBK_S3_CA_CERT",
        global = true,
        help_heading = "S3 options"
    )]
    pub s3_ca_cert: Option<PathBuf>,
    /// S3: region, when AWS_REGION and the profile set none [default: us-east-1]
    #[arg(long, global = true, help_heading = "S3 options")]
    pub s3_region: Option<String>,
    /// S3: allow a plain http:// endpoint that is not on this machine (sends requests in clear)
    #[arg(long, env = "SBK_INSECURE", global = true, help_heading = "S3 options")]
    pub insecure: bool,
    /// S3: a request that receives nothing for this long is abandoned and retried
    #[arg(long, env = "SBK_S3_TIMEOUT", global = true, help_heading = "S3 options", default_value = "60s", value_parser = humantime::parse_duration)]
    pub s3_timeout: std::time::Duration,
    /// How long a remote repository may keep failing transiently (time-outs, 5xx, throttling)
    /// before a command gives up, e.g. 30s, 10m, 1h
    #[arg(long, env = "SBK_RETRY_DEADLINE", global = true, help_heading = "S3 options", default_value = "10m", value_parser = humantime::parse_duration)]
    pub retry_deadline: std::time::Duration,
    /// Configuration file of jobs [default: /etc/sbk/sbk.toml, then ~/.config/sbk/sbk.toml]
    #[arg(
        long = "config",
        env = "SBK_CONFIG",
        global = true,
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,
    /// Print results as JSON
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Print nothing but errors
    #[arg(
        short,
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "verbose"
    )]
    pub quiet: bool,
    /// Print more detail
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub verbose: bool,
}

#[derive(Args, Debug, Clone)]
pub struct KdfArgs {
    /// Argon2id memory in KiB for the new key (default 32768 = 32 MiB)
    #[arg(long, default_value_t = crate::cli::DEFAULT_KDF_MEMORY_KIB, value_parser = clap::value_parser!(u32).range(8..=4 * 1024 * 1024))]
    pub kdf_memory_kib: u32,
    /// Argon2id passes for the new key
    #[arg(long, default_value_t = crate::cli::DEFAULT_KDF_ITERATIONS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub kdf_iterations: u32,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Check the configuration file of jobs, or write an example
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run one configured job now: snapshot, forget by its policy, prune/check/drill when due
    Run {
        /// The job's name (a [job.NAME] table of the configuration)
        job: String,
        #[command(flatten)]
        auto: AutomationArgs,
    },
    /// Run every configured job at its times; serve /metrics, /healthz and a status page
    Daemon {
        /// Address to serve on, instead of the configuration's [daemon] listen
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        auto: AutomationArgs,
    },
    /// Print the jobs' schedules as crontab lines or systemd units
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// One line per job; exit 1 when a job's newest good snapshot is older than allowed (with
    /// --strict, also when a job's last run failed)
    Status {
        /// Also exit 1 when the last run of a job failed
        #[arg(long)]
        strict: bool,
    },
    /// Success rate, durations, sizes, growth and restore drills over a period
    Report {
        /// Period to cover, back from now (e.g. 24h, 7d, 4w)
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
        format: ReportFormat,
    },
    /// Create a repository
    Init {
        #[command(flatten)]
        kdf: KdfArgs,
        /// Lock every file on an S3 bucket with Object Lock in this mode (compliance:
        /// no one can delete or shorten a lock; governance: only identities allowed to
        /// bypass it can); the bucket must be new or created with Object Lock
        #[arg(long, value_name = "MODE", requires = "lock_days")]
        object_lock: Option<sbk::repository::LockMode>,
        /// Days every file stays locked after it is written or last refreshed by prune or
        /// `lock refresh`
        #[arg(long, value_name = "N", requires = "object_lock")]
        lock_days: Option<u32>,
        /// How snapshots compress chunks unless told otherwise: fast, auto (zstd level 1), max
        /// (level 12 or level 1, whichever is smaller per chunk: smaller than restic's max, 3-7x the CPU of auto) or a zstd level (-7 to 22)
        #[arg(long, value_name = "LEVEL", default_value = "auto")]
        compression: sbk::format::config::CompressionChoice,
    },
    /// Take a snapshot
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// List snapshots
    Snapshots {
        /// Exit 1 when snapshots or audit records disappeared without sbk removing them (a
        /// warning otherwise)
        #[arg(long)]
        strict: bool,
    },
    /// Upload snapshots that wait in the local spool (kept there while S3 was unreachable)
    Sync,
    /// Restore a snapshot: its files into a folder (--target), a PostgreSQL dump into a
    /// database (--to-database), or a Supabase snapshot into a project (--to-supabase)
    #[command(group(
        clap::ArgGroup::new("destination")
            .required(true)
            .multiple(false)
            .args(["target", "to_database", "to_supabase", "pgdata"])
    ))]
    Restore {
        /// Snapshot ID, unique prefix, or `latest` (with --pgdata it may be left out: the
        /// newest base backup that ended before the recovery target)
        #[arg(required_unless_present = "pgdata")]
        snapshot: Option<SnapshotRef>,
        /// Folder to write the snapshot's files into (created if missing)
        #[arg(long, short = 't')]
        target: Option<PathBuf>,
        /// Replace files that exist in the target
        #[arg(long)]
        overwrite: bool,
        /// Restore into this database (a postgresql:// URL or conninfo string) with pg_restore
        #[arg(long, conflicts_with = "to_supabase", help_heading = "Into a database")]
        to_database: Option<String>,
        #[command(flatten, next_help_heading = "Into a database")]
        db: RestoreDbArgs,
        /// Restore a Supabase snapshot into the project given by --project-url (or --db and
        /// the other parts' options): extensions, roles, database, storage, functions
        #[arg(long, help_heading = "Into a Supabase project")]
        to_supabase: bool,
        #[command(flatten, next_help_heading = "Into a Supabase project")]
        supabase: RestoreSupabaseArgs,
        /// Restore a base backup (`snapshot postgres --physical`) into this empty data folder,
        /// set up to recover from the WAL archive (to the end of it unless a target is given)
        #[arg(long, help_heading = "Point in time")]
        pgdata: Option<PathBuf>,
        /// Recover to this time (RFC 3339)
        #[arg(long, requires = "pgdata", conflicts_with_all = ["target_lsn", "target_name"], help_heading = "Point in time")]
        target_time: Option<String>,
        /// Recover to this WAL location (e.g. 0/3000060)
        #[arg(
            long,
            requires = "pgdata",
            conflicts_with = "target_name",
            help_heading = "Point in time"
        )]
        target_lsn: Option<String>,
        /// Recover to this restore point (pg_create_restore_point)
        #[arg(
            long,
            requires = "pgdata",
            conflicts_with = "target_latest",
            help_heading = "Point in time"
        )]
        target_name: Option<String>,
        /// Recover to the end of the archive (the default; `--target` names the folder of a
        /// file restore)
        #[arg(long, requires = "pgdata", conflicts_with_all = ["target_time", "target_lsn"], help_heading = "Point in time")]
        target_latest: bool,
        /// What the server does at the target: promote (default) or pause
        #[arg(long, default_value = "promote", value_parser = ["promote", "pause"], help_heading = "Point in time")]
        target_action: String,
        /// Start the server on the restored folder, wait until recovery ends (or pauses at
        /// the target) and report the WAL location and time reached; run as the server's user
        #[arg(long, requires = "pgdata", help_heading = "Point in time")]
        start: bool,
        /// With --start: listen on this port instead of the configured one
        #[arg(long, requires = "start", help_heading = "Point in time")]
        port: Option<u16>,
    },
    /// Restore drill: restore a PostgreSQL snapshot into a scratch database, compare it with
    /// the manifest, ANALYZE, drop it; exit 1 unless it passes
    Verify {
        /// Snapshot ID, unique prefix, or `latest`
        snapshot: SnapshotRef,
        /// Server to restore a dump on (a postgresql:// URL or conninfo string; its database is
        /// used to create and drop the scratch database). A base backup needs none: it is
        /// restored into a scratch folder, checked against its manifest and recovered through
        /// the whole WAL archive by a private server
        #[arg(long)]
        scratch: Option<String>,
        /// Where a base backup's drill makes its scratch folder [default: the temporary folder]
        #[arg(long)]
        scratch_dir: Option<PathBuf>,
        /// Check only this database of the snapshot
        #[arg(long)]
        database: Option<String>,
        /// pg_restore jobs (above 1 stages the dump in a temporary file)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        #[command(flatten)]
        pg: PgBinArgs,
    },
    /// Write one file of a snapshot to standard output
    Dump {
        /// Snapshot ID, unique prefix, or `latest`
        snapshot: SnapshotRef,
        /// File name (may be omitted when the snapshot holds one file)
        file: Option<String>,
        /// Write to standard output even when it is a terminal
        #[arg(long)]
        force: bool,
    },
    /// Show a decrypted repository object as JSON
    Cat {
        #[command(subcommand)]
        what: CatCommand,
    },
    /// Manage passwords (key files)
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// Remove snapshots by retention rules (restic's), per group of related snapshots, or by ID
    Forget {
        #[command(flatten)]
        args: ForgetArgs,
    },
    /// Remove data that no snapshot needs (two phases: unused packs are marked, and deleted by
    /// a later prune once the grace period is over)
    Prune {
        #[command(flatten)]
        args: PruneArgs,
        /// Show the plan, change nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// What the repository holds, and what deduplication, deltas and compression save, per
    /// source
    Stats,
    /// Repair a damaged repository (nothing is deleted outright)
    #[command(subcommand)]
    Repair(RepairCommand),
    /// List the audit trail: one record per operation that changed the repository (who, where,
    /// when, what it added and removed)
    Audit {
        /// Only records this recent: a duration (7d, 12h) or an RFC 3339 time
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
    },
    /// Object Lock upkeep (repositories made with `init --object-lock`)
    #[command(subcommand)]
    Lock(LockCommand),
    /// PostgreSQL's WAL archive (`archive_command`, `restore_command`; docs/pitr.md)
    #[command(subcommand)]
    Wal(WalCommand),
    /// Verify the repository: structure always, blob contents with --read-data; exit 1 listing
    /// every damaged pack and the snapshots it affects
    Check {
        /// Download every pack and re-hash every blob
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read only some packs: N/M (group N of M, by pack ID) or P% (a random share)
        #[arg(long, value_parser = parse_subset)]
        read_data_subset: Option<sbk::commands::check::ReadData>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Archive one WAL file: `archive_command = 'sbk wal push %p'`; exits 0 only once it is
    /// durable in the repository (or the same bytes were archived already)
    Push {
        /// The WAL file (PostgreSQL's %p: its path relative to the data folder)
        path: PathBuf,
        /// Fail while a remote repository is unreachable instead of keeping the file in the
        /// local spool (PostgreSQL then keeps the segment in pg_wal and retries)
        #[arg(long)]
        no_spool: bool,
        /// Also push up to N-1 more files the server has marked ready, in parallel, so that
        /// its next calls return at once (for busy servers; each call still returns only once
        /// its file is stored)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
    },
    /// Fetch one archived WAL file: `restore_command = 'sbk wal fetch %f %p'`; exits 1 when it
    /// is not archived
    Fetch {
        /// The WAL file's name (%f)
        name: String,
        /// Where to write it (%p), atomically
        dest: PathBuf,
        /// Also fetch the next N segments in parallel into the cache folder, in the
        /// background, for the next calls (`restore --pgdata` sets 8)
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
        prefetch: u16,
    },
    /// The background part of `wal fetch --prefetch` (started by it)
    #[command(hide = true)]
    FetchAhead {
        /// The segment fetched last
        name: String,
        /// How many after it
        count: u16,
    },
    /// What the archive holds per timeline, and the segments missing; exit 1 when one is
    Status,
}

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Extend the lock of every file the repository holds to now + its lock days (prune does
    /// this too; for hosts that only snapshot)
    Refresh,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers
    Index,
    /// On a versioned bucket: bring back every file deleted or overwritten after a time
    /// (an attacker's or a mistake's), then check the repository
    Versions {
        /// The time the repository was whole (RFC 3339, e.g. 2026-12-05T04:00:00Z)
        #[arg(long, value_name = "TIME")]
        at: String,
        /// List what would be brought back, change nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Salvage the intact blobs of damaged packs, move the packs to quarantine/ and re-index;
    /// lists the snapshots that can no longer be restored whole
    Packs {
        /// Packs to repair (default: those `check --read-data` finds damaged)
        packs: Vec<String>,
        /// Also forget the snapshots that can no longer be restored whole
        #[arg(long)]
        forget_damaged: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Unused data tolerated in partly used packs before they are repacked: a percentage of
    /// the stored data, a size (k, M, G, T) or `unlimited`
    #[arg(long, default_value = "5%", value_parser = parse_max_unused)]
    pub max_unused: sbk::commands::prune::MaxUnused,
    /// Delete unused packs now instead of after the grace period: only for a repository that
    /// nothing else writes to while prune runs
    #[arg(long)]
    pub instant_delete: bool,
    /// How long a pack stays marked before a prune deletes it; longer than any snapshot runs
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Keep archived WAL for point-in-time recovery over this window only (e.g. 7d); older
    /// kept base backups keep just the WAL that makes them consistent. Default: all WAL from
    /// the oldest kept base backup
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_wal_within: Option<std::time::Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct ForgetArgs {
    /// Snapshots to remove (IDs, prefixes or `latest`), instead of a policy
    pub ids: Vec<SnapshotRef>,
    /// Keep the N newest snapshots (-1 or `unlimited`: all)
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count, default_value = "0", hide_default_value = true)]
    pub keep_last: sbk::retention::Count,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count, default_value = "0", hide_default_value = true)]
    pub keep_hourly: sbk::retention::Count,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count, default_value = "0", hide_default_value = true)]
    pub keep_daily: sbk::retention::Count,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count, default_value = "0", hide_default_value = true)]
    pub keep_weekly: sbk::retention::Count,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count, default_value = "0", hide_default_value = true)]
    pub keep_monthly: sbk::retention::Count,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count, default_value = "0", hide_default_value = true)]
    pub keep_yearly: sbk::retention::Count,
    /// Keep snapshots newer than the newest minus this span (e.g. 1y5m7d2h)
    #[arg(long, value_parser = parse_span)]
    pub keep_within: Option<sbk::retention::Span>,
    /// Within this span of the newest, keep one snapshot per hour
    #[arg(long, value_parser = parse_span)]
    pub keep_within_hourly: Option<sbk::retention::Span>,
    /// Within this span of the newest, keep one snapshot per day
    #[arg(long, value_parser = parse_span)]
    pub keep_within_daily: Option<sbk::retention::Span>,
    /// Within this span of the newest, keep one snapshot per ISO week
    #[arg(long, value_parser = parse_span)]
    pub keep_within_weekly: Option<sbk::retention::Span>,
    /// Within this span of the newest, keep one snapshot per month
    #[arg(long, value_parser = parse_span)]
    pub keep_within_monthly: Option<sbk::retention::Span>,
    /// Within this span of the newest, keep one snapshot per year
    #[arg(long, value_parser = parse_span)]
    pub keep_within_yearly: Option<sbk::retention::Span>,
    /// Keep snapshots with all these tags (comma-separated; repeatable)
    #[arg(long = "keep-tag")]
    pub keep_tags: Vec<String>,
    /// Apply the policy per group of snapshots sharing these (comma-separated: host, source,
    /// database, tags; empty for one group)
    #[arg(long, default_value = "host,source,database", value_parser = parse_group_by)]
    pub group_by: GroupByList,
    /// Only consider snapshots of this host (repeatable)
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only consider snapshots carrying this tag (repeatable: every one), e.g. job:nightly for
    /// the snapshots a configured job made
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Show what would be removed, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_args: PruneArgs,
}

/// A parsed `--group-by` list.
#[derive(Clone, Debug)]
pub struct GroupByList(pub Vec<sbk::commands::forget::GroupBy>);

fn parse_group_by(s: &str) -> Result<GroupByList, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<_>, _>>()
        .map(GroupByList)
}

fn parse_count(s: &str) -> Result<sbk::retention::Count, String> {
    s.parse()
        .map_err(|e: sbk::retention::CountError| e.to_string())
}

fn parse_span(s: &str) -> Result<sbk::retention::Span, String> {
    s.parse()
        .map_err(|e: sbk::retention::SpanError| e.to_string())
}

fn parse_max_unused(s: &str) -> Result<sbk::commands::prune::MaxUnused, String> {
    s.parse()
}

fn parse_subset(s: &str) -> Result<sbk::commands::check::ReadData, String> {
    s.parse()
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// Name of the file in the snapshot
    #[arg(long, value_parser = parse_name)]
    pub name: String,
    #[command(flatten)]
    pub common: SnapshotCommon,
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotCommon {
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
    /// Time to record, RFC 3339 (default: now)
    #[arg(long, value_parser = parse_time)]
    pub time: Option<DateTime<FixedOffset>>,
    /// Snapshot to take delta bases from (default: the newest with the same host, source and name)
    #[arg(long, conflicts_with = "no_delta")]
    pub parent: Option<SnapshotRef>,
    /// Store changed chunks in full, without deltas against the parent
    #[arg(long)]
    pub no_delta: bool,
    /// Compress this snapshot's chunks with fast, auto, max or a zstd level (-7 to 22)
    /// [default: the repository's, set at init]
    #[arg(long, value_name = "LEVEL")]
    pub compression: Option<sbk::format::config::CompressionChoice>,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Store standard input as one file
    Stdin {
        #[command(flatten)]
        args: SnapshotArgs,
    },
    /// Run a command and store its standard output; a non-zero exit saves nothing
    Command {
        #[command(flatten)]
        args: SnapshotArgs,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, num_args = 1..)]
        argv: Vec<String>,
    },
    /// Dump PostgreSQL databases (pg_dump, custom format) and the cluster's globals into one
    /// snapshot
    Postgres {
        /// Connection: a postgresql:// URL or a conninfo string [default: the PG* variables]
        url: Option<String>,
        /// Database to dump (repeatable) [default: the connection's database]
        #[arg(long = "dbname", short = 'd', conflicts_with = "all_databases")]
        dbnames: Vec<String>,
        /// Dump every database that accepts connections
        #[arg(long)]
        all_databases: bool,
        /// Leave out tables matching this pg_dump pattern (repeatable)
        #[arg(long)]
        exclude_table: Vec<String>,
        /// Keep the definition but not the rows of matching tables (repeatable)
        #[arg(long)]
        exclude_table_data: Vec<String>,
        /// Dump only this schema (repeatable)
        #[arg(long)]
        schema: Vec<String>,
        /// Record exact per-table row counts, taken in the dump's own snapshot
        #[arg(long)]
        count_rows: bool,
        /// Databases dumped at once
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// A base backup of the whole cluster (pg_basebackup) for point-in-time recovery,
        /// instead of dumps; the server must archive its WAL here (`sbk wal push`)
        #[arg(long, conflicts_with_all = ["dbnames", "all_databases", "exclude_table", "exclude_table_data", "schema", "count_rows"])]
        physical: bool,
        #[command(flatten)]
        pg: PgBinArgs,
        #[command(flatten)]
        common: SnapshotCommon,
    },
    /// A whole Supabase project: the database, Storage buckets and objects, edge functions,
    /// secret names and settings, in one snapshot (docs/supabase.md)
    #[command(
        after_help = "Credentials come only from the environment: the database password as \
for `snapshot postgres` (PGPASSWORD or ~/.pgpass), SUPABASE_S3_ACCESS_KEY_ID and \
SUPABASE_S3_SECRET_ACCESS_KEY (Storage's S3 keys), SUPABASE_ACCESS_TOKEN (Management API). A part \
whose credentials are absent is skipped with one line, unless --require names it."
    )]
    Supabase {
        #[command(flatten)]
        project: SupabaseProjectArgs,
        /// Take only this bucket (repeatable) [default: every bucket]
        #[arg(long = "bucket")]
        buckets: Vec<String>,
        /// Keep the definition but not the rows of matching tables (repeatable)
        #[arg(long)]
        exclude_table_data: Vec<String>,
        /// Record exact per-table row counts, taken in the dump's own snapshot
        #[arg(long)]
        count_rows: bool,
        /// Leave Storage out
        #[arg(long)]
        no_storage: bool,
        /// Leave edge functions out
        #[arg(long)]
        no_functions: bool,
        /// Fail unless these parts can be taken (comma-separated: storage, functions)
        #[arg(long, value_delimiter = ',', value_parser = ["storage", "functions"])]
        require: Vec<String>,
        /// Download every object, also those unchanged since the parent snapshot (same key,
        /// size, ETag and time)
        #[arg(long)]
        reread_storage: bool,
        #[command(flatten)]
        pg: PgBinArgs,
        #[command(flatten)]
        common: SnapshotCommon,
    },
}

/// Where a Supabase project's parts are.
#[derive(Args, Debug, Clone, Default)]
pub struct SupabaseProjectArgs {
    /// The project: https://<ref>.supabase.co (or a self-hosted project's URL)
    #[arg(long)]
    pub project_url: Option<String>,
    /// Database URL [default: postgresql://postgres@db.<ref>.supabase.co:5432/postgres]
    #[arg(long)]
    pub db: Option<String>,
    /// Storage's S3 endpoint [default: <project-url>/storage/v1/s3]
    #[arg(long)]
    pub storage_endpoint: Option<String>,
    /// Storage's region [default: us-east-1]
    #[arg(long)]
    pub storage_region: Option<String>,
    /// Management API [default: https://api.supabase.com]
    #[arg(long)]
    pub api_url: Option<String>,
    /// Project ref for the Management API, when the project URL does not give it
    #[arg(long)]
    pub project_ref: Option<String>,
    /// Edge functions from (or, restoring, to) this folder of <slug>/ folders (self-hosted:
    /// volumes/functions) instead of the Management API
    #[arg(long)]
    pub functions_dir: Option<PathBuf>,
}

impl SupabaseProjectArgs {
    /// Whether any was given.
    pub fn any(&self) -> bool {
        self.project_url.is_some()
            || self.db.is_some()
            || self.storage_endpoint.is_some()
            || self.storage_region.is_some()
            || self.api_url.is_some()
            || self.project_ref.is_some()
            || self.functions_dir.is_some()
    }
}

#[derive(Args, Debug, Clone)]
pub struct PgBinArgs {
    /// Folder with pg_dump, pg_restore and psql [default: the newest suitable of
    /// /usr/lib/postgresql/*/bin, then PATH]
    #[arg(long, env = "SBK_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreDbArgs {
    /// Which database of a several-database snapshot
    #[arg(long, requires = "to_database")]
    pub database: Option<String>,
    /// Create the target database first (it must not exist)
    #[arg(long, requires = "to_database")]
    pub create: bool,
    /// With --create: keep the half-made database when the restore fails (default: drop it)
    #[arg(long, requires = "create")]
    pub keep_partial: bool,
    /// Drop existing objects before restoring them
    #[arg(long, requires = "to_database")]
    pub clean: bool,
    /// pg_restore jobs (above 1 stages the dump in a temporary file, which pg_restore needs)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Restore only this table (repeatable)
    #[arg(long = "table", requires = "to_database")]
    pub tables: Vec<String>,
    /// Restore only this schema (repeatable)
    #[arg(long = "schema", requires = "to_database")]
    pub schemas: Vec<String>,
    /// Do not restore object owners
    #[arg(long, requires = "to_database")]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE)
    #[arg(long, requires = "to_database")]
    pub no_privileges: bool,
    /// Apply the snapshot's globals (roles, tablespaces) first, through psql
    #[arg(long, requires = "to_database")]
    pub globals: bool,
    #[command(flatten)]
    pub pg: PgBinArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreSupabaseArgs {
    #[command(flatten)]
    pub project: SupabaseProjectArgs,
    /// Restore only these parts (comma-separated: database, storage, functions)
    #[arg(long, value_delimiter = ',', requires = "to_supabase", value_parser = parse_part)]
    pub only: Vec<sbk::commands::restore_supabase::Part>,
    /// Say what would be restored (with counts and the skipped table-of-contents entries),
    /// change nothing
    #[arg(long, requires = "to_supabase")]
    pub dry_run: bool,
}

fn parse_part(s: &str) -> Result<sbk::commands::restore_supabase::Part, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum CatCommand {
    /// The repository config
    Config,
    /// A key file
    Key { id: String },
    /// A snapshot
    Snapshot { id: SnapshotRef },
    /// A snapshot's tree
    Tree { id: SnapshotRef },
    /// An index file
    Index { id: String },
    /// A pack's header
    Pack { id: String },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List keys
    List,
    /// Add a key for another password
    Add {
        /// Read the new password from this file
        #[arg(long, env = "SBK_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Change the password of the key in use
    Passwd {
        /// Read the new password from this file
        #[arg(long, env = "SBK_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key (not the last one)
    Remove { id: String },
    /// Print the master key as a paper recovery sheet (anyone holding it can read every backup)
    Export {
        /// The paper recovery sheet (the only export there is)
        #[arg(long, required = true)]
        recovery: bool,
    },
    /// Add a key for a new password from a recovery sheet, when every password is lost
    Import {
        /// Read a recovery sheet (the only import there is)
        #[arg(long, required = true)]
        recovery: bool,
        /// The sheet's text [default: standard input]
        file: Option<PathBuf>,
        /// Read the new password from this file
        #[arg(long, env = "SBK_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{e}; expected RFC 3339, like 2026-11-29T02:00:00+01:00"))
}

fn parse_name(s: &str) -> Result<String, String> {
    sbk::repository::validate_name(s)?;
    Ok(s.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct AutomationArgs {
    /// Write JSON-lines logs here (sbk.log, and sbk-errors.log for errors), rotated by size
    #[arg(long, env = "SBK_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Write metrics after each run to this node_exporter textfile
    #[arg(long, env = "SBK_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration file (FILE, else --config or the default); every problem
    /// is reported with its line
    Check {
        file: Option<PathBuf>,
        /// Then try everything it names: read every secret, open every repository, connect to
        /// every source, SMTP server and webhook host (nothing is written, mailed or posted);
        /// one line per check, exit 1 if any fails
        #[arg(long)]
        probe: bool,
        /// Longest wait for each probe
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, requires = "probe")]
        timeout: std::time::Duration,
    },
    /// Write a commented example configuration (the seed schedule) to FILE, or to stdout
    Init { file: Option<PathBuf> },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Print the schedules for the system's scheduler
    Print {
        /// crontab lines
        #[arg(long, conflicts_with = "systemd", required_unless_present = "systemd")]
        cron: bool,
        /// systemd service and timer units
        #[arg(long)]
        systemd: bool,
        /// The sbk program the entries run [default: this one]
        #[arg(long)]
        sbk: Option<PathBuf>,
        /// The environment file that hands the jobs the secrets read from variables
        /// [default: the configuration file's path ending in .env, e.g. /etc/sbk/sbk.env]
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Markdown,
    Html,
    Json,
}
