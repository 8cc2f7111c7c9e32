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

use super::snapshot_physical::{PhysicalManifest, BASE_FILE, PHYSICAL_FILE, SOURCE_KIND};

/// Where recovery stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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

/// A value for `postgresql.auto.conf`: single-quoted, quotes doubled.
fn conf_value(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Restores a base backup into `opts.pgdata` and sets up recovery.
pub fn restore_pgdata(
    repo: &Repository,
    spec: &SnapshotRef,
    opts: &PgdataOptions,
) -> Result<PgdataOutcome> {
    let (id, snap) = repo.find_snapshot(spec)?;
    if snap.source.kind != SOURCE_KIND {
        return Err(Error::Invalid(format!(
            "snapshot {} is not a base backup (it is a {} snapshot): --pgdata restores \
             `snapshot postgres --physical` snapshots",
            id.short(),
            snap.source.kind
        )));
    }
    let mut json = Vec::new();
    super::restore::dump(repo, &SnapshotRef::Id(id), Some(PHYSICAL_FILE), &mut json)?;
    let manifest: PhysicalManifest = serde_json::from_slice(&json).map_err(|e| {
        Error::damaged(
            format!("{PHYSICAL_FILE} of snapshot {}", id.short()),
            e.to_string(),
        )
    })?;
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
    let mut conf = format!(
        "\n# Written by sbk restore --pgdata (snapshot {id})\nrestore_command = {}\n",
        conf_value(&format!("{} wal fetch %f %p", opts.fetch_command))
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
    Ok(PgdataOutcome {
        snapshot: id,
        pgdata: dir.clone(),
        bytes,
        start_lsn: manifest.start_lsn,
        timeline: manifest.timeline,
        target: opts.target.clone(),
    })
}
