//! `sbk snapshot postgres --physical`: a base backup for point-in-time recovery
//! (`docs/pitr.md`). `pg_basebackup --format=tar --pgdata=- --wal-method=none` streams the
//! cluster as one tar through the chunker (`base.tar`): unchanged relation pages deduplicate
//! and changed ones become deltas against the previous base backup, as dumps do. The WAL the
//! backup needs comes from the archive (`sbk wal push`), so the server must archive into the
//! same repository. `physical.json` records where the backup starts and stops in the WAL.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::archiver::{ArchiveStats, Archiver, Progress};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::postgres::client::Client;
use crate::postgres::conn::ConnParams;
use crate::postgres::tools::{server_major, Tools};
use crate::repository::{Actor, Repository, SnapshotRef, Source};
use crate::source::CommandSource;

use super::snapshot::{save_snapshot, SnapshotCommon, SnapshotMeta};
use super::snapshot_postgres::{find_parent_file, system_identifier, SYSTEM_IDENTIFIER};
use super::SnapshotView;

/// Snapshot kind of base backups.
pub const SOURCE_KIND: &str = "postgres-physical";
/// The tar `pg_basebackup` writes.
pub const BASE_FILE: &str = "base.tar";
/// Where the backup starts and stops in the WAL.
pub const PHYSICAL_FILE: &str = "physical.json";

/// What to back up.
#[derive(Clone, Debug)]
pub struct PhysicalOptions {
    pub conn: ConnParams,
    pub tools: Tools,
    pub common: SnapshotCommon,
    /// Set from another thread to stop the backup (a daemon shutting down): `pg_basebackup` is
    /// killed and nothing is saved.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// `physical.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhysicalManifest {
    pub version: u32,
    pub server_version: String,
    pub server_version_num: i32,
    pub system_identifier: Option<String>,
    /// The WAL location the backup starts at (`backup_label`'s START WAL LOCATION).
    pub start_lsn: String,
    pub end_lsn: String,
    pub timeline: u32,
    pub pg_basebackup_version: String,
    pub started: chrono::DateTime<chrono::FixedOffset>,
    pub finished: chrono::DateTime<chrono::FixedOffset>,
}

impl PhysicalManifest {
    /// Where the backup lies in the WAL.
    pub fn span(&self) -> Option<crate::repository::wal::WalSpan> {
        use crate::repository::wal::lsn_position;
        Some(crate::repository::wal::WalSpan {
            timeline: self.timeline,
            start: lsn_position(&self.start_lsn)?,
            end: lsn_position(&self.end_lsn)?,
        })
    }
}

/// A base backup in the repository, with its `physical.json`.
#[derive(Clone, Debug)]
pub struct BaseBackup {
    pub id: Id,
    pub snapshot: Snapshot,
    pub manifest: PhysicalManifest,
}

impl BaseBackup {
    /// Where it lies in the WAL (checked when read).
    pub fn span(&self) -> crate::repository::wal::WalSpan {
        self.manifest.span().expect("checked in read_manifest")
    }
}

/// The `physical.json` of base backup `id`.
pub fn read_manifest(repo: &Repository, id: Id) -> Result<PhysicalManifest> {
    let mut json = Vec::new();
    super::restore::dump(repo, &SnapshotRef::Id(id), Some(PHYSICAL_FILE), &mut json)?;
    let damaged =
        |why: String| Error::damaged(format!("{PHYSICAL_FILE} of snapshot {}", id.short()), why);
    let m: PhysicalManifest = serde_json::from_slice(&json).map_err(|e| damaged(e.to_string()))?;
    if m.span().is_none() {
        return Err(damaged(format!(
            "its WAL locations {:?} and {:?} are not X/Y",
            m.start_lsn, m.end_lsn
        )));
    }
    Ok(m)
}

/// Every base backup in the repository, oldest first (one small read each).
pub fn base_backups(repo: &Repository) -> Result<Vec<BaseBackup>> {
    let mut out = Vec::new();
    for (id, snapshot) in repo.list_snapshots_cached()? {
        if snapshot.source.kind == SOURCE_KIND {
            let manifest = read_manifest(repo, id)?;
            out.push(BaseBackup {
                id,
                snapshot,
                manifest,
            });
        }
    }
    Ok(out)
}

/// Reads a backup history file (`<segment>.<offset>.backup`, which the server archives when a
/// base backup ends): its label, start and stop locations and start timeline.
fn history_fields(text: &str) -> Option<(String, String, u32, String)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let lsn = |v: String| v.split_whitespace().next().map(str::to_string);
    Some((
        field("LABEL:")?,
        lsn(field("START WAL LOCATION:")?)?,
        field("START TIMELINE:")?.parse().ok()?,
        lsn(field("STOP WAL LOCATION:")?)?,
    ))
}

/// Finds the backup history file labelled `label` in the archive: the server archives it
/// after the backup's last segment is on its way, so it may take a moment.
fn archived_history(repo: &Repository, label: &str) -> Result<(String, u32, String)> {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let mut names: Vec<String> = repo.wal_names()?;
        names.retain(|n| n.ends_with(".backup"));
        names.sort();
        for name in names.iter().rev().take(8) {
            if let Some(bytes) = repo.fetch_wal(name)? {
                if let Some((l, start, tli, stop)) =
                    history_fields(&String::from_utf8_lossy(&bytes))
                {
                    if l == label {
                        return Ok((start, tli, stop));
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Postgres(format!(
                "the server did not archive the backup history file of base backup {label} into \
                 this repository within 2 minutes: is archive_command `sbk wal push %p` with \
                 this repository? Nothing was stored"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Takes a base backup into a snapshot.
pub fn snapshot_physical(
    repo: &Repository,
    opts: &PhysicalOptions,
    progress: Arc<Progress>,
) -> Result<SnapshotView> {
    let repo = &repo.with_compression(opts.common.compression);
    let actor = Actor::current();
    let started = actor.now;
    let clock = Instant::now();
    let client = Client::connect(&opts.conn)?;
    let rows = client.query(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
         (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))::int, \
         current_setting('archive_mode'), \
         (SELECT coalesce(sum(pg_database_size(datname)), 0)::bigint FROM pg_database)",
        &[],
    )?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Postgres("the server did not report its version".into()))?;
    let (server_version, version_num): (String, i32) = (row.get(0), row.get(1));
    let (tablespaces, archive_mode, size): (i32, String, i64) =
        (row.get(2), row.get(3), row.get(4));
    if tablespaces > 0 {
        return Err(Error::Refused(format!(
            "the cluster has {tablespaces} tablespaces besides pg_default and pg_global: base \
             backups of clusters with tablespaces are not supported yet (docs/pitr.md); nothing \
             was stored"
        )));
    }
    if archive_mode == "off" {
        return Err(Error::Refused(
            "archive_mode is off: a base backup needs the server to archive its WAL into this \
             repository (archive_mode = on, archive_command = 'sbk wal push %p'; docs/pitr.md); \
             nothing was stored"
                .into(),
        ));
    }
    progress
        .bytes_expected
        .store(size.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
    let cluster = system_identifier(&client);
    drop(client);
    let pg_basebackup = opts
        .tools
        .find("pg_basebackup", server_major(version_num))?;

    let mut details = serde_json::Map::new();
    details.insert("host".into(), opts.conn.host.clone().into());
    details.insert("port".into(), opts.conn.port.into());
    if let Some(id) = &cluster {
        details.insert(SYSTEM_IDENTIFIER.into(), id.clone().into());
    }
    let source = Source {
        kind: SOURCE_KIND.into(),
        details,
    };
    let host = opts.common.host.clone().unwrap_or(actor.host);
    let candidates: Vec<_> = match (&opts.common.parent, opts.common.no_delta) {
        (_, true) => Vec::new(),
        (Some(spec), false) => vec![repo.find_snapshot(spec)?],
        (None, false) => repo
            .list_snapshots_cached()?
            .into_iter()
            .rev()
            .filter(|(_, s)| {
                s.host == host
                    && s.source.kind == SOURCE_KIND
                    && s.source.details.get(SYSTEM_IDENTIFIER)
                        == source.details.get(SYSTEM_IDENTIFIER)
            })
            .take(2)
            .collect(),
    };
    let index = repo.load_index()?;
    let (parent, parent_file) =
        find_parent_file(repo, &index, &candidates, BASE_FILE, opts.common.no_delta)?;

    // The label finds the backup's history file in the archive afterwards.
    let mut nonce = [0u8; 8];
    crate::crypto::getrandom(&mut nonce);
    let label = format!("sbk-{}", hex::encode(nonce));
    let mut cmd = Command::new(&pg_basebackup.path);
    cmd.args([
        "--format=tar",
        "--pgdata=-",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-password",
    ])
    .arg(format!("--label={label}"));
    let _auth = opts.conn.configure_command(&mut cmd)?;
    let mut source_cmd = CommandSource::spawn_command(cmd, "pg_basebackup")?;
    let stdout = source_cmd.stdout();
    let mut main = Archiver::new(repo, &index, Arc::clone(&progress));
    let killer = source_cmd.killer();
    let done = std::sync::atomic::AtomicBool::new(false);
    let stopped = std::sync::atomic::AtomicBool::new(false);
    let (stored, waited) = std::thread::scope(|s| {
        if let Some(stop) = &opts.stop {
            let (done, stopped, killer) = (&done, &stopped, &killer);
            s.spawn(move || {
                use std::sync::atomic::Ordering::SeqCst;
                while !done.load(SeqCst) {
                    if stop.load(SeqCst) {
                        stopped.store(true, SeqCst);
                        killer();
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
        let stored = main.add_stream_cancellable(BASE_FILE, stdout, parent_file.as_ref(), &killer);
        let waited = source_cmd.wait();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (stored, waited)
    });
    if stopped.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Interrupted(
            "the base backup was stopped by a shutdown request; nothing was saved".into(),
        ));
    }
    let node = match (stored, waited) {
        (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        (Ok(node), Ok(())) => node,
    };
    let (start_lsn, timeline, end_lsn) = archived_history(repo, &label)?;
    let manifest = PhysicalManifest {
        version: 1,
        server_version,
        server_version_num: version_num,
        system_identifier: cluster,
        start_lsn,
        end_lsn,
        timeline,
        pg_basebackup_version: pg_basebackup.version.clone(),
        started,
        finished: chrono::Local::now().fixed_offset(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let meta_node = main.add_stream(PHYSICAL_FILE, &json[..])?;
    let meta = SnapshotMeta {
        time: opts.common.time.unwrap_or(started),
        host,
        username: actor.username,
        tags: opts.common.tags.clone(),
        source,
        parent,
        started,
        clock,
    };
    save_snapshot(
        repo,
        main,
        vec![node, meta_node],
        &ArchiveStats::default(),
        meta,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_history_files_are_read() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                    STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n\
                    CHECKPOINT LOCATION: 0/2000060\n\
                    BACKUP METHOD: streamed\n\
                    BACKUP FROM: primary\n\
                    START TIME: 2026-12-05 05:56:45 UTC\n\
                    LABEL: sbk-0011223344556677\n\
                    START TIMELINE: 1\n\
                    STOP TIME: 2026-12-05 05:56:46 UTC\n\
                    STOP TIMELINE: 1\n";
        assert_eq!(
            history_fields(text),
            Some((
                "sbk-0011223344556677".into(),
                "0/2000028".into(),
                1,
                "0/2000100".into()
            ))
        );
        assert_eq!(history_fields("LABEL: x\n"), None);
    }
}
