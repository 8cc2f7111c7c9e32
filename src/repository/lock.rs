//! Object Lock upkeep (`docs/object-lock.md`): extending the lock of what the repository holds,
//! purging the old versions of files the repository itself removed once their lock has passed,
//! and bringing back files deleted or overwritten after a given time.
//!
//! The rule that keeps purging safe: a version is removed for good only when its file's
//! current version is a delete marker, an audit record says sbk removed that file (forget,
//! prune, key remove), and the index in force does not list it. Files deleted any other way (an
//! attacker with a backup host's keys, a mistake) keep every version for `repair versions`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use super::*;
use crate::backend::lock::Version;

/// What [`Repository::refresh_locks`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefreshReport {
    /// Files whose lock now lasts until `until`.
    pub files: usize,
    pub until: Option<DateTime<Utc>>,
}

/// What [`Repository::purge_removed`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgeReport {
    /// Versions removed for good (their lock had passed).
    pub versions_removed: usize,
    pub bytes_freed: u64,
    /// Versions still locked: a later prune removes them.
    pub versions_held: usize,
    pub bytes_held: u64,
    /// When the earliest held version's lock passes.
    pub next_release: Option<DateTime<Utc>>,
    /// Files deleted without a record of sbk removing them (or still needed): their versions
    /// are kept for `sbk repair versions`.
    pub unexplained_deletions: Vec<String>,
}

/// What [`restore_versions`] found (and, unless a dry run, did).
#[derive(Clone, Debug, Default, Serialize)]
pub struct VersionsReport {
    pub at: Option<DateTime<Utc>>,
    /// Files deleted after `at`, brought back (`type/name`).
    pub deleted: Vec<String>,
    /// Files overwritten (at any time: sbk never rewrites one), their first version made
    /// current again.
    pub overwritten: Vec<String>,
    pub dry_run: bool,
}

fn label(t: FileType, name: &str) -> String {
    crate::backend::relative_path(t, name)
}

/// Runs `f` over `items`, `threads` at a time.
fn in_parallel<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync + Send,
) -> Result<Vec<R>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start threads: {e}")))?;
    Ok(pool.install(|| items.par_iter().map(f).collect()))
}

impl Repository {
    /// The repository's Object Lock policy, if it has one.
    pub fn lock_policy(&self) -> Option<LockPolicy> {
        self.config.object_lock
    }

    /// Checks that the bucket still locks new files as the config says (an administrator may
    /// have changed its default retention); the problem, if any.
    pub fn lock_problem(&self) -> Result<Option<String>> {
        let Some(policy) = self.config.object_lock else {
            return Ok(None);
        };
        let status = self.backend.lock_status()?;
        Ok(match (status.enabled, status.default) {
            (false, _) => Some(format!(
                "the repository was made with Object Lock ({policy}) but {} has none",
                self.location()
            )),
            (true, None) => Some(format!(
                "the bucket no longer locks new files by default (the repository asks {policy}): \
                 new files are unprotected until the next `sbk lock refresh`"
            )),
            (true, Some(found)) if found != policy => Some(format!(
                "the bucket locks new files {found}, the repository asks {policy}"
            )),
            _ => None,
        })
    }

    /// Extends the lock of every file the repository holds (config, keys, index files,
    /// snapshots, packs, audit records) to now + the policy's days, so that everything a kept
    /// snapshot needs stays protected that long. Does nothing without Object Lock.
    pub fn refresh_locks(&self) -> Result<RefreshReport> {
        let Some(policy) = self.config.object_lock else {
            return Ok(RefreshReport::default());
        };
        let until = policy.until(Utc::now());
        let mut files = vec![(FileType::Config, "config".to_string())];
        for t in [
            FileType::Key,
            FileType::Index,
            FileType::Snapshot,
            FileType::Pack,
            FileType::Audit,
            FileType::Wal,
        ] {
            files.extend(self.backend.list(t)?.into_iter().map(|f| (t, f.name)));
        }
        self.activity.start("lock", 0, files.len() as u64);
        let results = in_parallel(self.profile.concurrency, &files, |(t, name)| {
            let r = self.backend.extend_retention(*t, name, &policy, until);
            self.activity.add_items(1);
            match r {
                // Removed since it was listed (a concurrent prune): nothing to protect.
                Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
                Ok(()) => Ok(true),
            }
        })?;
        let mut done = 0;
        for r in results {
            if r.map_err(|e| refused(e, "extend locks", "s3:PutObjectRetention"))? {
                done += 1;
            }
        }
        Ok(RefreshReport {
            files: done,
            until: Some(until),
        })
    }

    /// Removes for good the old versions of files this repository removed, once their lock
    /// has passed (see the module documentation); a version still locked is counted as held
    /// and left for a later run. Does nothing without Object Lock.
    pub fn purge_removed(&self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        if self.config.object_lock.is_none() {
            return Ok(report);
        }
        // What sbk itself removed, by the audit trail and this run.
        let c = self.recorded_removals(&self.audit_records()?);
        let mut removed: HashSet<(FileType, Id)> = HashSet::new();
        removed.extend(c.snapshots.iter().map(|id| (FileType::Snapshot, *id)));
        removed.extend(c.packs.iter().map(|id| (FileType::Pack, *id)));
        removed.extend(c.index.iter().map(|id| (FileType::Index, *id)));
        removed.extend(c.keys.iter().map(|id| (FileType::Key, *id)));
        let index = self.load_index_files()?;
        let listed: HashSet<Id> = index
            .files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
            .collect();
        let mut by_file: BTreeMap<(&'static str, String), Vec<Version>> = BTreeMap::new();
        for v in self.backend.versions()? {
            by_file
                .entry((v.t.dirname(), v.name.clone()))
                .or_default()
                .push(v);
        }
        let now = Utc::now();
        let mut to_remove: Vec<Version> = Vec::new();
        for versions in by_file.values() {
            let Some(current) = versions.iter().find(|v| v.latest) else {
                continue;
            };
            if !current.deleted {
                continue;
            }
            let (t, name) = (current.t, current.name.clone());
            let recorded = (t == FileType::Wal && c.wal.contains(&name))
                || Id::from_hex(&name).is_some_and(|id| {
                    removed.contains(&(t, id)) && !(t == FileType::Pack && listed.contains(&id))
                });
            if !recorded {
                report.unexplained_deletions.push(label(t, &name));
                continue;
            }
            to_remove.extend(versions.iter().filter(|v| !v.deleted).cloned());
        }
        // Data versions first, by their lock; a file's delete markers go once none is left.
        let verdicts = in_parallel(self.profile.concurrency, &to_remove, |v| {
            match self.backend.retention(v.t, &v.name, &v.id)? {
                Some(until) if until > now => Ok(Some(until)),
                _ => self
                    .backend
                    .remove_version(v.t, &v.name, &v.id)
                    .map(|()| None),
            }
        })?;
        let mut still_held: HashSet<(FileType, String)> = HashSet::new();
        for (v, verdict) in to_remove.iter().zip(verdicts) {
            match verdict.map_err(|e| refused_delete(e, "purge old versions"))? {
                Some(until) => {
                    report.versions_held += 1;
                    report.bytes_held += v.size;
                    report.next_release = Some(report.next_release.map_or(until, |n| n.min(until)));
                    still_held.insert((v.t, v.name.clone()));
                }
                None => {
                    report.versions_removed += 1;
                    report.bytes_freed += v.size;
                }
            }
        }
        for versions in by_file.values() {
            let done: Vec<&Version> = versions.iter().filter(|v| v.deleted).collect();
            let Some(first) = versions.first() else {
                continue;
            };
            let purged = to_remove
                .iter()
                .any(|v| v.t == first.t && v.name == first.name)
                && !still_held.contains(&(first.t, first.name.clone()));
            if purged {
                for m in done {
                    self.backend
                        .remove_version(m.t, &m.name, &m.id)
                        .map_err(|e| refused_delete(e, "purge old versions"))?;
                }
            }
        }
        report.unexplained_deletions.sort();
        Ok(report)
    }
}

/// A refused delete, with which credentials the verb needs.
pub fn refused_delete(e: crate::backend::BackendError, what: &str) -> Error {
    refused(e, what, "s3:DeleteObject and s3:DeleteObjectVersion")
}

/// A request refused for want of a permission that backup hosts are meant not to have: the
/// message says which credentials the verb needs.
pub fn refused(e: crate::backend::BackendError, what: &str, permissions: &str) -> Error {
    if e.kind == ErrorKind::Permanent && e.message.contains("access denied") {
        Error::Refused(format!(
            "{}; to {what} sbk needs the maintenance host's credentials ({permissions}): backup \
             hosts are meant not to have them (docs/object-lock.md)",
            e.message
        ))
    } else {
        e.into()
    }
}

/// Brings back every file of the storage deleted after `at`, and every file overwritten, with
/// its first version made current again (a copy inside the bucket); files added since are
/// left. Works without a password, so that a repository whose config and keys were deleted
/// can be brought back too.
pub fn restore_versions(
    storage: &Storage,
    at: DateTime<Utc>,
    dry_run: bool,
) -> Result<VersionsReport> {
    let backend = storage.backend.as_ref();
    let mut by_file: BTreeMap<(&'static str, String), Vec<Version>> = BTreeMap::new();
    for v in backend.versions()? {
        by_file
            .entry((v.t.dirname(), v.name.clone()))
            .or_default()
            .push(v);
    }
    let mut report = VersionsReport {
        at: Some(at),
        dry_run,
        ..Default::default()
    };
    let mut restore: Vec<Version> = Vec::new();
    for versions in by_file.values() {
        let Some(current) = versions.iter().find(|v| v.latest) else {
            continue;
        };
        let name = label(current.t, &current.name);
        // sbk never rewrites a file: its first version holds its true bytes, and any later
        // one is an overwrite or a copy of the first (by an earlier repair). Versions come
        // newest first.
        let Some(first) = versions.iter().rev().find(|v| !v.deleted) else {
            continue;
        };
        if current.deleted {
            // Only a delete marker's time is trusted (see `Version::modified`).
            if current.modified > at {
                report.deleted.push(name);
                restore.push(first.clone());
            }
        } else if current.size != first.size || current.etag != first.etag {
            report.overwritten.push(name);
            restore.push(first.clone());
        }
    }
    if !dry_run {
        // A copy keeps the source version's lock on some servers (SeaweedFS) rather than
        // taking the bucket's default: each restored file is locked anew, when the bucket
        // says for how long.
        let policy = backend.lock_status().ok().and_then(|s| s.default);
        // Packs first, config last: a reader never meets a snapshot whose data is not back.
        let order = |t: FileType| match t {
            FileType::Pack => 0,
            FileType::Index => 1,
            FileType::Snapshot => 2,
            FileType::Config => 4,
            _ => 3,
        };
        restore.sort_by_key(|v| order(v.t));
        let until = policy.map(|p| p.until(Utc::now()));
        let results = in_parallel(storage.profile.concurrency, &restore, |v| {
            backend.restore_version(v.t, &v.name, &v.id)?;
            match (&policy, until) {
                (Some(p), Some(until)) => backend.extend_retention(v.t, &v.name, p, until),
                _ => Ok(()),
            }
        })?;
        for r in results {
            r?;
        }
    }
    Ok(report)
}
