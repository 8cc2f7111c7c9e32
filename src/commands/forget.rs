//! `sbk forget`: remove snapshots by restic's retention rules ([`crate::retention`]), per group of
//! related snapshots, or by ID. Only snapshot files are removed; `prune` frees their data.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;

use super::SnapshotView;
use crate::commands::snapshot_postgres::SYSTEM_IDENTIFIER;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::FileType;
use crate::repository::{Repository, SnapshotRef};
use crate::repository::{Snapshot, Source};
use crate::retention::{self, Candidate, Policy};

/// What snapshots are grouped by before the policy is applied to each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupBy {
    /// The machine that took the snapshot.
    Host,
    /// The source's kind and where it reads from (a PostgreSQL server's host and port, a
    /// command line), without the databases.
    Source,
    /// The databases of a PostgreSQL snapshot.
    Database,
    /// The snapshot's tags, as a set.
    Tags,
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "host" => Ok(GroupBy::Host),
            "source" => Ok(GroupBy::Source),
            "database" => Ok(GroupBy::Database),
            "tags" => Ok(GroupBy::Tags),
            other => Err(format!(
                "{other:?}: group by host, source, database or tags"
            )),
        }
    }
}

/// The default grouping: one series per machine and source.
pub const DEFAULT_GROUP_BY: [GroupBy; 3] = [GroupBy::Host, GroupBy::Source, GroupBy::Database];

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: Vec<GroupBy>,
    /// Snapshots to remove by ID (instead of a policy).
    pub ids: Vec<SnapshotRef>,
    /// Only consider snapshots of these hosts (all when empty).
    pub hosts: Vec<String>,
    /// Only consider snapshots carrying every one of these tags (all when empty): a job's
    /// retention considers only the snapshots it made.
    pub tags: Vec<String>,
    /// Only consider snapshots of this source: same kind, and these values among its details
    /// (a configured job forgets only its own server's snapshots), widened to the cluster a
    /// PostgreSQL server's snapshots name ([`widen_to_cluster`]).
    pub source: Option<Source>,
    pub dry_run: bool,
}

/// Whether `s` is of the source `filter` describes: the same kind, and every detail of the
/// filter equal in `s`.
pub fn matches_source(s: &Snapshot, filter: &Source) -> bool {
    s.source.kind == filter.kind
        && filter
            .details
            .iter()
            .all(|(k, v)| s.source.details.get(k) == Some(v))
}

/// `filter` widened from how a PostgreSQL server is reached (host and port) to the cluster the
/// newest of `snapshots` it matches names, so that snapshots taken over another route (the
/// socket, another host name) count as the same source. Unchanged when none names a cluster.
pub fn widen_to_cluster(snapshots: &[(Id, Snapshot)], filter: &Source) -> Source {
    let cluster = snapshots
        .iter()
        .rev()
        .filter(|(_, s)| matches_source(s, filter))
        .find_map(|(_, s)| s.source.details.get(SYSTEM_IDENTIFIER).cloned());
    match cluster {
        Some(id) => Source {
            kind: filter.kind.clone(),
            details: [(SYSTEM_IDENTIFIER.to_owned(), id)].into_iter().collect(),
        },
        None => filter.clone(),
    }
}

/// The values a group shares; only the fields grouped by are set.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h:?}"));
        }
        if let Some(s) = &self.source {
            parts.push(format!("source {s}"));
        }
        if let Some(d) = self.database.as_ref().filter(|d| !d.is_empty()) {
            parts.push(format!("databases {d}"));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// A snapshot kept, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    #[serde(flatten)]
    pub snapshot: SnapshotView,
    pub reasons: Vec<String>,
}

/// One group's outcome, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetGroup {
    #[serde(flatten)]
    pub key: GroupKey,
    pub keep: Vec<Kept>,
    pub remove: Vec<SnapshotView>,
}

/// What forget decided and (unless `dry_run`) did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub groups: Vec<ForgetGroup>,
    /// Snapshots removed (or, with `dry_run`, to remove).
    pub removed: Vec<Id>,
}

/// The source without its databases, unambiguous: kind, then each detail as JSON. A
/// PostgreSQL cluster that names its system identifier is that identifier alone, however it
/// was reached (socket or TCP, another host name).
fn source_key(s: &Snapshot) -> String {
    let mut out = s.source.kind.clone();
    let cluster = s.source.details.get(SYSTEM_IDENTIFIER);
    for (k, v) in &s.source.details {
        let reach = k == "host" || k == "port";
        if k != "databases" && !(cluster.is_some() && reach) {
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}

/// The databases as a JSON list (unambiguous, unlike a joined string).
fn database_key(s: &Snapshot) -> String {
    s.source
        .details
        .get("databases")
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// The group a snapshot belongs to.
pub fn group_key(s: &Snapshot, by: &[GroupBy]) -> GroupKey {
    let mut k = GroupKey::default();
    for g in by {
        match g {
            GroupBy::Host => k.host = Some(s.host.clone()),
            GroupBy::Source => k.source = Some(source_key(s)),
            GroupBy::Database => k.database = Some(database_key(s)),
            GroupBy::Tags => {
                let mut t = s.tags.clone();
                t.sort();
                t.dedup();
                k.tags = Some(t);
            }
        }
    }
    k
}

/// Decides which snapshots go, then removes them (unless `dry_run`).
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let mut report = ForgetReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if !opts.ids.is_empty() {
        if !opts.policy.is_empty() {
            return Err(Error::Invalid(
                "give either snapshot IDs or --keep-* options, not both".into(),
            ));
        }
        for spec in &opts.ids {
            // A snapshot deleted behind sbk's back is forgotten by its full ID: the audit
            // trail then records it as removed, and prune goes on.
            if let SnapshotRef::Id(id) = spec {
                if !repo.list_ids(FileType::Snapshot)?.contains(id)
                    && repo.vanished_snapshots(&Default::default())?.contains(id)
                {
                    report.removed.push(*id);
                    continue;
                }
            }
            // A damaged snapshot can be forgotten by its ID: that is its way out.
            let id = repo.snapshot_id(spec)?;
            if *spec != SnapshotRef::Latest {
                match repo.load_snapshot(&id) {
                    Ok(_) | Err(Error::Damaged { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if !report.removed.contains(&id) {
                report.removed.push(id);
            }
        }
    } else {
        if opts.policy.is_empty() {
            return Err(Error::Invalid(
                "no policy given: pass --keep-last, --keep-daily, --keep-within ... or snapshot \
                 IDs; nothing was removed"
                    .into(),
            ));
        }
        let mut groups: BTreeMap<GroupKey, Vec<(Id, Snapshot)>> = BTreeMap::new();
        let all = repo.list_snapshots()?;
        let source = opts.source.as_ref().map(|f| widen_to_cluster(&all, f));
        for (id, s) in all {
            // Spooled snapshots are not in the repository yet: `sync` first.
            if repo.is_spooled(&id)
                || (!opts.hosts.is_empty() && !opts.hosts.contains(&s.host))
                || source.as_ref().is_some_and(|f| !matches_source(&s, f))
                || !opts.tags.iter().all(|t| s.tags.contains(t))
            {
                continue;
            }
            groups
                .entry(group_key(&s, &opts.group_by))
                .or_default()
                .push((id, s));
        }
        let now = chrono::Utc::now();
        for (key, mut list) in groups {
            // Ties in time: a stable order by ID.
            list.sort_by_key(|e| e.0);
            let candidates: Vec<Candidate<'_>> = list
                .iter()
                .map(|(_, s)| Candidate {
                    time: s.time,
                    tags: &s.tags,
                })
                .collect();
            let verdicts = retention::apply_at(&opts.policy, &candidates, now);
            if verdicts.iter().all(|v| !v.keep) {
                return Err(Error::Refused(format!(
                    "refusing to remove every snapshot of the group {key} (the policy keeps \
                     none of its {}); nothing was removed",
                    list.len()
                )));
            }
            let mut group = ForgetGroup {
                key,
                keep: Vec::new(),
                remove: Vec::new(),
            };
            for v in verdicts {
                let (id, s) = &list[v.index];
                let view = SnapshotView::new(*id, s.clone());
                if v.keep {
                    group.keep.push(Kept {
                        snapshot: view,
                        reasons: v.reasons,
                    });
                } else {
                    report.removed.push(*id);
                    group.remove.push(view);
                }
            }
            report.groups.push(group);
        }
    }
    if !opts.dry_run {
        repo.announce_removals("forget", &report.removed)?;
        repo.remove_files(FileType::Snapshot, &report.removed, |_| {
            crate::cleanup::crash_point("forget:removing")
        })?;
    }
    Ok(report)
}
