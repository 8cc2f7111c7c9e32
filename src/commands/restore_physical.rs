//! `sbk restore ID --pgdata DIR`: a base backup into an empty data folder, set up to recover
//! from the WAL archive to a point in time (`docs/pitr.md`). The tar goes to the system's `tar`
//! as it is read (verified blob by blob); then `recovery.signal` and the recovery settings,
//! whose `restore_command` is this sbk binary's `wal fetch`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::{Repository, SnapshotRef};

use super::snapshot_physical::{base_backups, read_manifest, BaseBackup, BASE_FILE, SOURCE_KIND};
use crate::postgres::server::{start_and_follow, Reached, StartOptions};
use crate::postgres::tools::{server_major, Tools};
use crate::repository::wal::parse_lsn;

/// Where recovery stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// The end of the archive.
    #[default]
    Latest,
    /// `recovery_target_time`, RFC 3339.
    Time(String),
    /// `recovery_target_lsn`.
    Lsn(String),
    /// `recovery_target_name` (a `pg_create_restore_point` name).
    Name(String),
}

/// How to restore.
#[derive(Clone, Debug)]
pub struct PgdataOptions {
    pub pgdata: PathBuf,
    pub target: RecoveryTarget,
    /// `promote` or `pause` once the target is reached.
    pub action: String,
    /// The command PostgreSQL runs to fetch a WAL file, up to `wal fetch %f %p` (the sbk
    /// binary, the repository, how to get the password), shell-quoted by the caller.
    pub fetch_command: String,
    /// Start the server and follow its recovery (`--start`): the programs and the port.
    pub start: Option<(Tools, Option<u16>)>,
    /// Start it as a private server with its socket in this folder (a drill; see
    /// [`StartOptions::private`]).
    pub private: Option<PathBuf>,
    /// Check every restored file against the backup manifest (`pg_verifybackup`) before
    /// recovery is set up.
    pub verify_manifest: bool,
    /// Set in a started server's environment (see [`StartOptions::env`]).
    pub server_env: Vec<(String, String)>,
}

/// What was restored.
#[derive(Clone, Debug, Serialize)]
pub struct PgdataOutcome {
    pub snapshot: Id,
    pub pgdata: PathBuf,
    pub bytes: u64,
    pub start_lsn: String,
    pub timeline: u32,
    pub target: RecoveryTarget,
    /// With `--start`: where recovery got to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached: Option<Reached>,
    /// With `verify_manifest`: whether the files matched the backup manifest (`None`: the
    /// backup has no manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_verified: Option<bool>,
    /// The data folder's major version.
    pub major: u32,
}

/// The base backup to restore for `target` when none is named: the newest one that finished
/// before the target (any for `latest` and restore points). Refuses to guess between clusters.
pub fn choose_base_backup(repo: &Repository, target: &RecoveryTarget) -> Result<Id> {
    let bases = base_backups(repo)?;
    let systems: std::collections::BTreeSet<_> = bases
        .iter()
        .map(|b| b.manifest.system_identifier.clone())
        .collect();
    if systems.len() > 1 {
        return Err(Error::Invalid(format!(
            "the repository holds base backups of {} clusters: name the one to restore (sbk \
             snapshots)",
            systems.len()
        )));
    }
    let fits = |b: &&BaseBackup| -> Result<bool> {
        Ok(match target {
            RecoveryTarget::Latest | RecoveryTarget::Name(_) => true,
            RecoveryTarget::Time(t) => {
                let at = chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| Error::Invalid(format!("recovery target {t:?}: {e}")))?;
                b.manifest.finished <= at
            }
            RecoveryTarget::Lsn(l) => {
                let at = parse_lsn(l).ok_or_else(|| {
                    Error::Invalid(format!("recovery target {l:?} is not a WAL location (X/Y)"))
                })?;
                parse_lsn(&b.manifest.end_lsn).is_some_and(|end| end <= at)
            }
        })
    };
    let mut best: Option<&BaseBackup> = None;
    for b in &bases {
        if fits(&b)? && best.is_none_or(|x| b.manifest.finished >= x.manifest.finished) {
            best = Some(b);
        }
    }
    match (best, bases.first()) {
        (Some(b), _) => Ok(b.id),
        (None, None) => Err(Error::NotFound(
            "the repository holds no base backup (sbk snapshot postgres --physical)".into(),
        )),
        (None, Some(_)) => Err(Error::NotFound(format!(
            "no base backup ended before the recovery target {target:?}: the oldest ended at \
             {} (WAL {})",
            bases
                .iter()
                .map(|b| b.manifest.finished)
                .min()
                .expect("non-empty"),
            bases
                .iter()
                .min_by_key(|b| b.manifest.finished)
                .expect("non-empty")
                .manifest
                .end_lsn
        ))),
    }
}

fn empty_or_missing(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Refused(format!(
                    "{} is not empty: a base backup is restored into an empty or new folder",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))
        }
        Err(e) => Err(Error::io("read folder", dir, e)),
    }
}

/// Checks the restored files against the manifest `pg_basebackup` wrote into the backup
/// (`pg_verifybackup --no-parse-wal`: the WAL is checked by replaying it). `Ok(None)` when the
/// backup has none; a mismatch is an error naming what `pg_verifybackup` found.
fn verify_manifest(
    dir: &Path,
    tools: Option<&Tools>,
    manifest: &super::snapshot_physical::PhysicalManifest,
) -> Result<Option<bool>> {
    if !dir.join("backup_manifest").exists() {
        return Ok(None);
    }
    let default = Tools::default();
    let program = tools
        .unwrap_or(&default)
        .find("pg_verifybackup", server_major(manifest.server_version_num))?;
    let out = Command::new(&program.path)
        .arg("--no-parse-wal")
        .arg("--quiet")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Postgres(format!("cannot run {}: {e}", program.path.display())))?;
    if !out.status.success() {
        return Err(Error::damaged(
            format!("base backup restored into {}", dir.display()),
            format!(
                "its files do not match its backup manifest: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        ));
    }
    Ok(Some(true))
}

/// A word for `/bin/sh`: as it is when nothing in it is special to the shell (the line stays
/// readable in `postgresql.auto.conf`), else single-quoted with quotes escaped. A `%` is doubled
/// as PostgreSQL's `restore_command` reads `%f`, `%p` and `%%`.
pub fn command_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.,:=+@".contains(&b));
    let word = match plain {
        true => w.to_string(),
        false => format!("'{}'", w.replace('\'', "'\\''")),
    };
    word.replace('%', "%%")
}

/// A value for `postgresql.auto.conf`: single-quoted, quotes doubled.
fn conf_value(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Restores a base backup into `opts.pgdata` and sets up recovery.
pub fn restore_pgdata(
    repo: &Repository,
    spec: Option<&SnapshotRef>,
    opts: &PgdataOptions,
) -> Result<PgdataOutcome> {
    let chosen;
    let spec = match spec {
        Some(s) => s,
        None => {
            chosen = SnapshotRef::Id(choose_base_backup(repo, &opts.target)?);
            &chosen
        }
    };
    let (id, snap) = repo.find_snapshot(spec)?;
    if snap.source.kind != SOURCE_KIND {
        return Err(Error::Invalid(format!(
            "snapshot {} is not a base backup (it is a {} snapshot): --pgdata restores \
             `snapshot postgres --physical` snapshots",
            id.short(),
            snap.source.kind
        )));
    }
    let manifest = read_manifest(repo, id)?;
    let dir = &opts.pgdata;
    empty_or_missing(dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("set the mode of", dir, e))?;
    }
    let mut tar = Command::new("tar")
        .args(["--extract", "--file=-", "--no-same-owner", "--directory"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Source(format!("cannot run tar: {e}")))?;
    let mut stdin = tar.stdin.take().expect("stdin piped");
    let written = super::restore::dump(repo, &SnapshotRef::Id(id), Some(BASE_FILE), &mut stdin);
    drop(stdin);
    let out = tar
        .wait_with_output()
        .map_err(|e| Error::Source(format!("waiting for tar: {e}")))?;
    let bytes = written?;
    if !out.status.success() {
        return Err(Error::Source(format!(
            "tar failed ({}) extracting the base backup into {}: {}",
            out.status,
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    let manifest_verified = match opts.verify_manifest {
        true => verify_manifest(dir, opts.start.as_ref().map(|s| &s.0), &manifest)?,
        false => None,
    };
    let mut conf = format!(
        "\n# Written by sbk restore --pgdata (snapshot {id})\nrestore_command = {}\n",
        conf_value(&format!(
            "{} wal fetch --prefetch 8 %f %p",
            opts.fetch_command
        ))
    );
    let target = match &opts.target {
        RecoveryTarget::Latest => String::new(),
        RecoveryTarget::Time(t) => {
            // PostgreSQL reads `2026-12-05 05:59:14.8+00:00`, not RFC 3339's `T`/`Z` forms.
            let at = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| Error::Invalid(format!("recovery target {t:?}: {e}")))?;
            let pg = at.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string();
            format!("recovery_target_time = {}\n", conf_value(&pg))
        }
        RecoveryTarget::Lsn(l) => format!("recovery_target_lsn = {}\n", conf_value(l)),
        RecoveryTarget::Name(n) => format!("recovery_target_name = {}\n", conf_value(n)),
    };
    conf.push_str(&target);
    if opts.target != RecoveryTarget::Latest {
        conf.push_str(&format!(
            "recovery_target_action = {}\n",
            conf_value(&opts.action)
        ));
    }
    let auto = dir.join("postgresql.auto.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto)
        .and_then(|mut f| f.write_all(conf.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| Error::io("write", &auto, e))?;
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io("write", &signal, e))?;
    let reached = match &opts.start {
        None => None,
        Some((tools, port)) => Some(start_and_follow(
            dir,
            &StartOptions {
                tools: tools.clone(),
                major: server_major(manifest.server_version_num),
                port: *port,
                pause: opts.target != RecoveryTarget::Latest && opts.action == "pause",
                private: opts.private.clone(),
                env: opts.server_env.clone(),
            },
        )?),
    };
    Ok(PgdataOutcome {
        snapshot: id,
        pgdata: dir.clone(),
        bytes,
        start_lsn: manifest.start_lsn,
        timeline: manifest.timeline,
        target: opts.target.clone(),
        reached,
        manifest_verified,
        major: server_major(manifest.server_version_num),
    })
}
