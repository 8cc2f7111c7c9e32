//! Starting a restored data folder and following its recovery (`sbk restore --pgdata DIR
//! --start`): `pg_ctl start` without waiting (a long recovery outlasts pg_ctl's wait), then
//! polling until the server has promoted (or paused at its target), and reading where it got to.
//! The server keeps running when sbk returns; a server that stops during recovery (a target
//! past the archive's end, a missing segment) is an error quoting the end of its log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::Client;
use super::conn::{process_env, ConnParams};
use super::tools::Tools;
use crate::error::{Error, Result};

/// How to start the server.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub tools: Tools,
    /// The data folder's major version (its programs must be that version).
    pub major: u32,
    /// Listen on this port instead of the data folder's configured one (the original's port is
    /// taken when restoring beside the running original).
    pub port: Option<u16>,
    /// The recovery target's action is `pause`: done once replay pauses there.
    pub pause: bool,
    /// A private server (a restore drill): its socket in this folder, no TCP listener, and no
    /// WAL archiving (a drill's promoted timeline must not reach the archive).
    pub private: Option<PathBuf>,
    /// Set in the server's environment (S3 credentials of a configured repository, which its
    /// `restore_command` needs).
    pub env: Vec<(String, String)>,
}

/// Where recovery got to.
#[derive(Clone, Debug, Serialize)]
pub struct Reached {
    /// The last WAL location replayed.
    pub lsn: Option<String>,
    /// Commit time of the last transaction replayed (UTC).
    pub time: Option<String>,
    /// The server's timeline now (a new one after a promotion).
    pub timeline: Option<u32>,
    /// Paused at the target (`--target-action pause`) rather than promoted.
    pub paused: bool,
    pub port: u16,
    /// The server's log while sbk started it.
    pub log: PathBuf,
}

/// What the server reports while recovering.
const STARTING: &[&str] = &[
    "starting up",
    "not yet accepting connections",
    "Connection refused",
    "No such file or directory",
    "shutting down",
];

/// One setting as the data folder's configuration gives it (`postgres -C`, no server started).
fn setting(postgres: &Path, dir: &Path, name: &str) -> Result<String> {
    let out = Command::new(postgres)
        .arg("-D")
        .arg(dir)
        .args(["-C", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Postgres(format!("cannot run {}: {e}", postgres.display())))?;
    if !out.status.success() {
        return Err(Error::Postgres(format!(
            "{} -C {name} failed: {}",
            postgres.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last lines of the server's log, for an error.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

/// Stops the server on `dir` (fast shutdown), waiting for it.
pub fn stop(dir: &Path, tools: &Tools, major: u32) -> Result<()> {
    let pg_ctl = tools.find("pg_ctl", major)?;
    let out = Command::new(&pg_ctl.path)
        .arg("-D")
        .arg(dir)
        .args(["-m", "fast", "-w", "stop"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Postgres(format!("cannot run {}: {e}", pg_ctl.path.display())))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(Error::Postgres(format!(
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))),
    }
}

/// Starts the server on `dir` and waits until recovery has ended (or paused at its target).
pub fn start_and_follow(dir: &Path, opts: &StartOptions) -> Result<Reached> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Err(Error::Invalid(
            "PostgreSQL does not run as root: run `sbk restore --pgdata ... --start` as the \
             user the server runs as (e.g. sudo -u postgres), or leave out --start"
                .into(),
        ));
    }
    let pg_ctl = opts.tools.find("pg_ctl", opts.major)?;
    let postgres = pg_ctl.path.with_file_name("postgres");
    let port = match opts.port {
        Some(p) => p,
        None => setting(&postgres, dir, "port")?.parse().map_err(|_| {
            Error::Postgres(format!(
                "the port configured in {} is not a number",
                dir.display()
            ))
        })?,
    };
    let socket = match &opts.private {
        Some(d) => Some(d.display().to_string()),
        None => setting(&postgres, dir, "unix_socket_directories")?
            .split(',')
            .map(str::trim)
            .find(|d| !d.is_empty())
            .map(str::to_string),
    };
    let log = dir.join("sbk-recovery.log");
    // `-w` returns once the server accepts connections (hot standby: once consistent) or reports
    // standby (hot_standby off), and fails at once when it dies first; no time limit, since
    // reaching consistency replays the backup's own WAL, which may be long.
    let mut cmd = Command::new(&pg_ctl.path);
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "31536000", "start"]);
    let mut server_opts = Vec::new();
    if opts.port.is_some() {
        server_opts.push(format!("-p {port}"));
    }
    if let Some(d) = &opts.private {
        let quoted = d.display().to_string().replace('\'', "'\\''");
        server_opts.push(format!(
            "-c listen_addresses='' -c unix_socket_directories='{quoted}' -c archive_mode=off"
        ));
    }
    if !server_opts.is_empty() {
        cmd.args(["-o", &server_opts.join(" ")]);
    }
    // The server's environment: none of sbk's secrets. S3 settings stay, for the
    // restore_command (`sbk wal fetch`) the server runs.
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        let n = name.to_string_lossy();
        let keep = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"]
            .contains(&n.as_ref())
            || n.starts_with("LC_")
            || n.starts_with("AWS_")
            || n.starts_with("SBK_S3_");
        if keep {
            cmd.env(&name, value);
        }
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Postgres(format!("cannot run {}: {e}", pg_ctl.path.display())))?;
    if !out.status.success() {
        return Err(Error::Postgres(format!(
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim_end(),
            match log_tail(&log) {
                t if t.is_empty() => String::new(),
                t => format!("\n{t}"),
            }
        )));
    }
    let host = socket.unwrap_or_else(|| "localhost".into());
    let params = ConnParams::resolve(
        Some(&format!("host='{host}' port={port} dbname=postgres")),
        &process_env,
    )?;
    let started = Instant::now();
    // `pg_get_wal_replay_pause_state()` is PostgreSQL 14's; before, a flag.
    let paused_sql = match opts.major {
        ..=13 => "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE '' END",
        _ => "pg_get_wal_replay_pause_state()",
    };
    // A server that stops later (a target after the archive's end) is "not running"; the grace
    // period covers a pid file not written yet.
    let mut seen_running = false;
    loop {
        let running = Command::new(&pg_ctl.path)
            .arg("-D")
            .arg(dir)
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.code() != Some(3))
            .unwrap_or(true);
        seen_running |= running;
        if !running && (seen_running || started.elapsed() > Duration::from_secs(30)) {
            return Err(Error::Postgres(format!(
                "the restored server stopped during recovery (log {}):\n{}",
                log.display(),
                log_tail(&log)
            )));
        }
        match Client::connect(&params) {
            Ok(client) => {
                if let Some(reached) = poll(&client, paused_sql, opts.pause, port, &log)? {
                    return Ok(reached);
                }
            }
            Err(e) => {
                let text = e.to_string();
                if !STARTING.iter().any(|s| text.contains(s))
                    && started.elapsed() > Duration::from_secs(30)
                {
                    return Err(Error::Postgres(format!(
                        "the restored server is running and recovering (log {}), but sbk cannot \
                         connect to follow it ({text}): set PGUSER/PGPASSWORD for a superuser, \
                         or follow it with psql",
                        log.display()
                    )));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `Some` once recovery has ended (or paused, when that is the target action).
fn poll(
    client: &Client,
    paused_sql: &str,
    pause: bool,
    port: u16,
    log: &Path,
) -> Result<Option<Reached>> {
    client.batch("SET TimeZone = 'UTC'")?;
    let rows = client.query(
        &format!(
            "SELECT pg_is_in_recovery(), \
             CASE WHEN pg_is_in_recovery() THEN {paused_sql} ELSE '' END, \
             pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text, \
             CASE WHEN pg_is_in_recovery() \
               THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
               ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int \
             END"
        ),
        &[],
    )?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Postgres("the server answered nothing".into()))?;
    let (in_recovery, pause_state): (bool, String) = (row.get(0), row.get(1));
    let paused = in_recovery && pause_state == "paused";
    if in_recovery && !(pause && paused) {
        return Ok(None);
    }
    let timeline: Option<i32> = row.get(4);
    Ok(Some(Reached {
        lsn: row.get(2),
        time: row.get(3),
        timeline: timeline.map(|t| t as u32),
        paused,
        port,
        log: log.to_path_buf(),
    }))
}
