//! `sbk prune`: remove the data no snapshot needs, without taking a lock.
//!
//! Two phases (see `docs/format.md`, section 12): a run *marks* packs it finds unused (and the
//! old copies of packs it repacks, and packs no index lists) in the index file it writes, and
//! deletes packs that an earlier run marked more than a grace period ago and that nothing listed
//! as live again since. A snapshot that was running meanwhile has either committed by then (its
//! blobs count as used and their packs are revived) or revived the packs itself before writing its
//! snapshot ([`crate::repository::liveness::secure_references`]).
//!
//! Order of a run: list snapshots, then index files, then packs (each listing sees everything the
//! previous one refers to, as writers make packs durable before the index and the index before
//! the snapshot); plan; delete the packs whose grace period is over (after a small index file
//! with their tombstones: space is freed before anything large is written); write repacked
//! packs; write the new index, superseding every index file read; delete what this run
//! decided; remove the superseded index files. A crash at any point leaves a repository that
//! `check` passes and that the next prune completes.
//!
//! One file (~690 lines) on purpose: the two phases share one plan of the repository (which
//! packs are live, marked, due) and their safety argument reads top to bottom; splitting the
//! marking from the deleting would hide that each depends on the other's invariants.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::repository::liveness::{mark_trees, TreeMark, UsedSet};
use crate::repository::FileType;
use crate::repository::PackCopier;
use crate::repository::PackEntry;
use crate::repository::Repository;
use crate::repository::{DeletedPack, IndexPack, MarkedPack};

/// How long a marked pack waits before a prune deletes it, by default: longer than any snapshot
/// runs.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The youngest a `tmp/` file must be left alone, whatever the grace period: running writers
/// stage their packs there and touch them every few seconds.
pub const TMP_MIN_AGE: Duration = Duration::from_secs(3600);

/// How long tombstones of deleted packs are kept in the index: a snapshot still running that
/// long after a deletion it relied on is refused at its end rather than saved damaged.
pub const TOMBSTONE_SECS: i64 = 30 * 24 * 3600;

/// How much unused data may stay in partly used packs (restic's `--max-unused`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// Unused bytes at most this percentage of all stored bytes.
    Percent(f64),
    Bytes(u64),
    Unlimited,
}

impl FromStr for MaxUnused {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..100.0).contains(&p) {
                return Err(format!(
                    "{s:?}: the percentage must be at least 0 and below 100"
                ));
            }
            return Ok(MaxUnused::Percent(p));
        }
        let (digits, mult) = match s.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_lowercase() {
                    'k' => 1 << 10,
                    'm' => 1 << 20,
                    'g' => 1 << 30,
                    't' => 1 << 40,
                    _ => return Err(format!("{s:?}: unknown unit {c:?} (use k, M, G, T or %)")),
                };
                (&s[..i], m)
            }
            _ => (s, 1),
        };
        let n: u64 = digits
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a size, a percentage or `unlimited`"))?;
        Ok(MaxUnused::Bytes(n.saturating_mul(mult)))
    }
}

impl MaxUnused {
    /// Unused bytes tolerated beside `used` bytes in use.
    fn limit(self, used: u64) -> u64 {
        match self {
            MaxUnused::Percent(p) => (p / (100.0 - p) * used as f64) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub max_unused: MaxUnused,
    /// Delete unused packs in this run instead of marking them (only for a repository that
    /// nothing else writes to).
    pub instant_delete: bool,
    pub grace: Duration,
    pub dry_run: bool,
    /// Keep archived WAL for point-in-time recovery over this window only
    /// ([`crate::repository::wal::WalKeep::plan`]); `None`: from the oldest kept base backup.
    pub keep_wal_within: Option<Duration>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Percent(5.0),
            instant_delete: false,
            grace: DEFAULT_GRACE,
            dry_run: false,
            keep_wal_within: None,
        }
    }
}

/// What a prune found and did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_used: usize,
    pub bytes_used: u64,
    /// Stored bytes no snapshot needs (before this run).
    pub bytes_unused: u64,
    pub packs: usize,
    pub packs_kept: usize,
    pub packs_repacked: usize,
    /// Bytes copied into new packs by repacking.
    pub bytes_repacked: u64,
    pub packs_written: usize,
    /// Packs marked for deletion by this run (unused, repacked or listed by no index).
    pub packs_marked: usize,
    pub bytes_marked: u64,
    /// Of those, packs that no index listed (left by an interrupted run).
    pub packs_unindexed: usize,
    /// Of the unindexed packs, those whose header fails authentication (marked and deleted
    /// like the others).
    pub packs_unreadable: usize,
    /// Packs marked by an earlier run whose grace period is not over.
    pub packs_waiting: usize,
    pub bytes_waiting: u64,
    /// Marked packs that a snapshot needs again, listed as live again.
    pub packs_revived: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Packs the index listed but the repository no longer holds (no snapshot needed them).
    pub packs_missing: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    pub grace_secs: u64,
    /// Temporary files of killed runs removed from the repository's `tmp/` (older than the
    /// grace period, and than an hour).
    pub tmp_files_removed: usize,
    /// Damaged files (`snapshot <id>`, `index <id>`) for which this run kept everything:
    /// marked and deleted nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_for_damage: Vec<String>,
    /// Snapshots deleted without a forget (see [`Repository::vanished_snapshots`]): while
    /// any is missing, nothing is marked or deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vanished_snapshots: Vec<Id>,
    /// Archived WAL files older than every kept base backup's start, removed.
    pub wal_files_removed: usize,
    pub wal_bytes_removed: u64,
    /// On a repository with Object Lock: locks extended and old versions purged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockUpkeep>,
    /// Earliest time (Unix seconds) at which a later prune can delete the packs marked now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<i64>,
}

/// A pack as the plan sees it.
struct PackInfo<'a> {
    /// Borrowed from the index files (owned only for packs no index lists): prune holds every
    /// entry once.
    entries: std::borrow::Cow<'a, [PackEntry]>,
    /// Listed live by some effective index file.
    live: bool,
    /// Latest mark among the effective files, when marked.
    marked_at: Option<i64>,
    size: Option<u64>,
    used_bytes: u64,
}

enum Fate {
    Keep,
    Repack,
    /// Marked for deletion by this run.
    Mark,
    /// Marked by an earlier run (at this time), grace period not over.
    Wait(i64),
    Delete,
    /// Listed by the index but not stored, and not needed: dropped from the index.
    Drop,
}

/// Plans and (unless `dry_run`) runs a prune.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = prune_packs(repo, opts)?;
    if report.held_for_damage.is_empty() && report.vanished_snapshots.is_empty() {
        if let Some(keep) = wal_to_keep(repo, opts.keep_wal_within)? {
            (report.wal_files_removed, report.wal_bytes_removed) =
                repo.remove_unneeded_wal(&keep, opts.dry_run)?;
        }
    }
    if !opts.dry_run && repo.lock_policy().is_some() {
        // Data removed above is only hidden (a delete marker) until its lock passes; what
        // stays gets its lock extended; what an earlier run removed and whose lock has passed
        // goes for good.
        let refreshed = repo.refresh_locks()?;
        // Damage leaves nothing judged: nothing is purged either.
        let purged = match report.held_for_damage.is_empty() && report.vanished_snapshots.is_empty()
        {
            true => repo.purge_removed()?,
            false => Default::default(),
        };
        report.lock = Some(LockUpkeep { refreshed, purged });
    }
    Ok(report)
}

/// The archived WAL the kept base backups need (`WalKeep::plan`), `None` when none is kept.
fn wal_to_keep(
    repo: &Repository,
    window: Option<std::time::Duration>,
) -> Result<Option<crate::repository::wal::WalKeep>> {
    let bases: Vec<_> = super::snapshot_physical::base_backups(repo)?
        .iter()
        .map(|b| (b.span(), b.manifest.finished.with_timezone(&chrono::Utc)))
        .collect();
    Ok(crate::repository::wal::WalKeep::plan(
        &bases,
        window,
        chrono::Utc::now(),
    ))
}

/// Object Lock upkeep done by a prune (`docs/object-lock.md`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockUpkeep {
    pub refreshed: crate::repository::lock::RefreshReport,
    pub purged: crate::repository::lock::PurgeReport,
}

/// The prune proper: marks and deletes packs, rewrites the index.
fn prune_packs(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let now = chrono::Utc::now().timestamp();
    let grace = opts.grace.as_secs().min(i64::MAX as u64) as i64;
    let activity = repo.activity();
    activity.start("plan", 0, 0);
    // Snapshots, then index files, then packs: see the module documentation.
    // First, what killed runs left in the repository's `tmp/`: it frees space before this
    // run writes anything (a full disk's way out).
    let tmp_files_removed = match opts.dry_run {
        true => 0,
        false => repo.sweep_tmp(opts.grace.max(TMP_MIN_AGE))?,
    };
    let snapshots = repo.list_snapshots()?;
    let files = repo.load_index_files()?;
    let damage = repo.damage();
    if !damage.is_empty() {
        // A damaged snapshot may need any blob, and a damaged index file may have held marks,
        // revivals or tombstones: nothing can be judged unused, so nothing is marked or
        // deleted until the damage is repaired.
        return Ok(PruneReport {
            dry_run: opts.dry_run,
            snapshots: snapshots.len(),
            held_for_damage: damage
                .iter()
                .map(|d| format!("{} {}", d.kind, d.id.short()))
                .collect(),
            tmp_files_removed,
            ..Default::default()
        });
    }
    // A snapshot deleted behind sbk's back (an attacker, a mistake) would make its data look
    // unused: nothing is judged until it is brought back (`repair versions`) or forgotten.
    let listed: HashSet<Id> = repo.list_ids(FileType::Snapshot)?.into_iter().collect();
    let vanished = repo.vanished_snapshots(&listed)?;
    if !vanished.is_empty() {
        return Ok(PruneReport {
            dry_run: opts.dry_run,
            snapshots: snapshots.len(),
            vanished_snapshots: vanished,
            tmp_files_removed,
            ..Default::default()
        });
    }
    let index = files.to_index()?;
    let stored: HashMap<Id, u64> = repo.stored_packs()?;

    let used = mark_used(repo, &index, &snapshots)?;
    let mut report = PruneReport {
        tmp_files_removed,
        dry_run: opts.dry_run,
        snapshots: snapshots.len(),
        blobs_used: used.count(),
        grace_secs: opts.grace.as_secs(),
        packs: stored.len(),
        ..Default::default()
    };

    // Every pack the index knows, live or marked.
    let mut packs: HashMap<Id, PackInfo> = HashMap::new();
    for (_, f) in &files.files {
        for p in &f.packs {
            let info = packs.entry(p.id).or_insert_with(|| PackInfo::new(p));
            info.live = true;
        }
        for m in &f.marked {
            let info = packs
                .entry(m.pack.id)
                .or_insert_with(|| PackInfo::new(&m.pack));
            info.marked_at = Some(info.marked_at.map_or(m.marked_at, |t| t.max(m.marked_at)));
        }
    }
    // Packs no index lists: left by an interrupted run, or being written by a running one.
    let mut unindexed: Vec<Id> = stored
        .keys()
        .filter(|id| !packs.contains_key(id))
        .copied()
        .collect();
    unindexed.sort();
    for id in &unindexed {
        // A pack whose header fails authentication (damage, a pack of another repository)
        // holds nothing any index can use: marked like any unused pack, deleted after the
        // grace period. One that cannot be read now (a transient failure) is left alone.
        let entries = match repo.read_pack_header(id, stored[id]) {
            Ok(e) => e,
            Err(Error::Damaged { .. }) => {
                report.packs_unreadable += 1;
                Vec::new()
            }
            Err(_) => continue,
        };
        packs.insert(
            *id,
            PackInfo {
                entries: entries.into(),
                live: false,
                marked_at: None,
                size: None,
                used_bytes: 0,
            },
        );
    }
    for (id, info) in packs.iter_mut() {
        info.size = stored.get(id).copied();
        info.used_bytes = info
            .entries
            .iter()
            .filter(|e| is_chosen_copy(&index, &used, id, e))
            .map(|e| e.stored_len as u64)
            .sum();
    }

    let mut ids: Vec<Id> = packs.keys().copied().collect();
    ids.sort();
    let mut fates: HashMap<Id, Fate> = HashMap::new();
    let mut candidates = Vec::new();
    for id in &ids {
        let info = &packs[id];
        let Some(size) = info.size else {
            if info.used_bytes > 0 {
                return Err(Error::damaged(
                    format!("pack file {id}"),
                    "the index lists it and snapshots need its blobs, but the repository does \
                     not hold it; prune deletes nothing while data is missing: run `sbk check`",
                ));
            }
            fates.insert(*id, Fate::Drop);
            continue;
        };
        report.bytes_used += info.used_bytes;
        report.bytes_unused += size.saturating_sub(info.used_bytes);
        if info.used_bytes == 0 && !info.live && info.marked_at.is_none() {
            report.packs_unindexed += 1;
        }
        let fate = if info.used_bytes > 0 {
            if !info.live {
                report.packs_revived += 1;
            } else if info.used_bytes + slack(info) < size {
                candidates.push(*id);
            }
            Fate::Keep
        } else if opts.instant_delete {
            Fate::Delete
        } else {
            match info.marked_at {
                // Live somewhere (a mark another file overrides): marked afresh.
                _ if info.live => Fate::Mark,
                Some(at) if now.saturating_sub(at) >= grace => Fate::Delete,
                Some(at) => Fate::Wait(at),
                None => Fate::Mark,
            }
        };
        fates.insert(*id, fate);
    }

    // Repack the partly used packs with the most unused bytes until what stays unused is within
    // the limit.
    candidates.sort_by_key(|id| {
        let i = &packs[id];
        std::cmp::Reverse(i.size.unwrap_or(0).saturating_sub(i.used_bytes))
    });
    let mut unused_left: u64 = ids
        .iter()
        .filter(|id| matches!(fates[*id], Fate::Keep))
        .map(|id| {
            packs[id]
                .size
                .unwrap_or(0)
                .saturating_sub(packs[id].used_bytes)
        })
        .sum();
    let limit = opts.max_unused.limit(report.bytes_used);
    let mut to_repack = Vec::new();
    for id in candidates {
        if unused_left <= limit {
            break;
        }
        let i = &packs[&id];
        unused_left = unused_left.saturating_sub(i.size.unwrap_or(0).saturating_sub(i.used_bytes));
        report.bytes_repacked += i.used_bytes;
        to_repack.push(id);
        fates.insert(id, Fate::Repack);
    }
    report.packs_repacked = to_repack.len();
    for id in &ids {
        let size = packs[id].size.unwrap_or(0);
        match fates[id] {
            Fate::Keep => report.packs_kept += 1,
            Fate::Mark => {
                report.packs_marked += 1;
                report.bytes_marked += size;
            }
            Fate::Repack if !opts.instant_delete => {
                report.packs_marked += 1;
                report.bytes_marked += size;
            }
            Fate::Delete | Fate::Repack => {
                report.packs_deleted += 1;
                report.bytes_deleted += size;
            }
            Fate::Wait(_) => {
                report.packs_waiting += 1;
                report.bytes_waiting += size;
            }
            Fate::Drop => report.packs_missing += 1,
        }
    }
    if report.packs_marked > 0 {
        report.delete_after = Some(now.saturating_add(grace));
    }
    let nothing_to_do = to_repack.is_empty()
        && report.packs_marked == 0
        && report.packs_deleted == 0
        && report.packs_missing == 0
        && report.packs_revived == 0
        && files.superseded.is_empty()
        && files.files.len() <= 1;
    if opts.dry_run || nothing_to_do {
        return Ok(report);
    }

    // 0. Free space first: packs an earlier run marked whose grace period is over are deleted
    //    before this run writes packs (a nearly full disk's way out). Same order as step 3: a
    //    small index file with their tombstones, a fresh look for files reviving them, then the
    //    deletions; a revived one is spared and marked again by the new index.
    let mut supersedes: Vec<Id> = files.files.iter().map(|(id, _)| *id).collect();
    supersedes.extend_from_slice(&files.superseded);
    let mut gone_early: HashSet<Id> = HashSet::new();
    let early: Vec<Id> = ids
        .iter()
        .filter(|id| matches!(fates[*id], Fate::Delete) && packs[*id].marked_at.is_some())
        .copied()
        .collect();
    // Bytes: what repacking copies; items: the packs of each phase.
    activity.start("delete packs", report.bytes_repacked, early.len() as u64);
    if !early.is_empty() {
        let at = chrono::Utc::now().timestamp();
        let tombstones = repo.save_index(&crate::repository::IndexFile {
            deleted: early
                .iter()
                .map(|id| DeletedPack {
                    id: *id,
                    deleted_at: at,
                })
                .collect(),
            ..Default::default()
        })?;
        report.index_files_written += 1;
        let known: HashSet<Id> = supersedes.iter().chain([&tombstones]).copied().collect();
        let (revived, unsure) = revived_since(repo, &known)?;
        let mut now_gone = Vec::new();
        for id in &early {
            if unsure || revived.contains(id) {
                fates.insert(*id, Fate::Wait(packs[id].marked_at.unwrap_or(at)));
                report.packs_deleted -= 1;
                report.bytes_deleted -= packs[id].size.unwrap_or(0);
                activity.add_items(1);
                continue;
            }
            now_gone.push(*id);
        }
        crate::cleanup::crash_point("prune:deleting");
        repo.remove_files(FileType::Pack, &now_gone, |n| {
            activity.add_items(n as u64);
            crate::cleanup::crash_point("prune:deleting");
        })?;
        gone_early.extend(now_gone);
        // The new index carries these tombstones and supersedes this file.
        supersedes.push(tombstones);
    }

    // 1. Repack.
    crate::cleanup::crash_point("prune:repacking");
    activity.next_phase("repack", to_repack.len() as u64);
    let written = repack(repo, &index, &used, &packs, &to_repack)?;
    report.packs_written = written.len();
    // Planning is over: the index (~100 bytes a blob) is not held while the new one is written.
    drop(used);
    drop(index);

    // 2. The new index: live packs, marks (with their times; new ones stamped now, when they
    //    become visible), and tombstones for the packs this run deletes, superseding every file
    //    read.
    let mark_time = chrono::Utc::now().timestamp();
    let mut live: Vec<IndexPack> = written;
    let mut marked: Vec<MarkedPack> = Vec::new();
    let mut doomed: Vec<(Id, Option<i64>)> = Vec::new();
    for id in &ids {
        let info = &packs[id];
        let pack = || IndexPack {
            id: *id,
            blobs: info.entries.to_vec(),
        };
        match fates[id] {
            Fate::Keep => live.push(pack()),
            Fate::Wait(at) => marked.push(MarkedPack {
                marked_at: at,
                pack: pack(),
            }),
            Fate::Mark => marked.push(MarkedPack {
                marked_at: mark_time,
                pack: pack(),
            }),
            Fate::Repack if !opts.instant_delete => marked.push(MarkedPack {
                marked_at: mark_time,
                pack: pack(),
            }),
            // Deleted in step 0: only its tombstone is left to write.
            Fate::Delete if gone_early.contains(id) => {}
            Fate::Repack | Fate::Delete => doomed.push((*id, info.marked_at)),
            Fate::Drop => {}
        }
    }
    // Tombstones of earlier runs stay for a while (a snapshot still running may rely on a pack
    // they name); one whose pack is still stored was never deleted (a crash) and is dropped.
    let mut deleted: Vec<DeletedPack> = files
        .files
        .iter()
        .flat_map(|(_, f)| f.deleted.iter())
        .filter(|d| {
            d.deleted_at >= now.saturating_sub(TOMBSTONE_SECS) && !stored.contains_key(&d.id)
        })
        .cloned()
        .collect();
    deleted.sort_by_key(|d| d.id);
    deleted.dedup_by_key(|d| d.id);
    deleted.extend(
        doomed
            .iter()
            .map(|(id, _)| *id)
            .chain(gone_early.iter().copied())
            .map(|id| DeletedPack {
                id,
                deleted_at: mark_time,
            }),
    );
    crate::cleanup::crash_point("prune:planned");
    let new_files = repo.replace_index(&live, &marked, &deleted, &supersedes)?;
    report.index_files_written += new_files.len();

    // 3. Delete, unless an index file written meanwhile lists a doomed pack as live again (a
    //    snapshot reviving it); an index file that cannot be read spares them all.
    activity.next_phase("delete packs", doomed.len() as u64);
    if !doomed.is_empty() {
        let known: HashSet<Id> = supersedes.iter().chain(&new_files).copied().collect();
        let (revived, unsure) = revived_since(repo, &known)?;
        let spared: Vec<(Id, Option<i64>)> = doomed
            .iter()
            .filter(|(id, _)| unsure || revived.contains(id))
            .copied()
            .collect();
        let now_gone: Vec<Id> = doomed
            .iter()
            .filter(|d| !spared.contains(d))
            .map(|(id, _)| *id)
            .collect();
        crate::cleanup::crash_point("prune:deleting");
        repo.remove_files(FileType::Pack, &now_gone, |n| {
            activity.add_items(n as u64);
            crate::cleanup::crash_point("prune:deleting");
        })?;
        activity.add_items(spared.len() as u64);
        report.packs_deleted -= spared.len();
        report.bytes_deleted -= spared
            .iter()
            .map(|(id, _)| packs[id].size.unwrap_or(0))
            .sum::<u64>();
        if !spared.is_empty() {
            // Correct the tombstones: a spared pack is marked again (a later prune decides).
            let spared_ids: HashSet<Id> = spared.iter().map(|(id, _)| *id).collect();
            deleted.retain(|d| !spared_ids.contains(&d.id));
            for (id, at) in &spared {
                marked.push(MarkedPack {
                    marked_at: at.unwrap_or(mark_time),
                    pack: IndexPack {
                        id: *id,
                        blobs: packs[id].entries.to_vec(),
                    },
                });
            }
            let mut again = supersedes.clone();
            again.extend_from_slice(&new_files);
            let corrected = repo.replace_index(&live, &marked, &deleted, &again)?;
            report.index_files_written += corrected.len();
            repo.remove_files(FileType::Index, &new_files, |_| {})?;
        }
    }

    // 4. The superseded index files.
    repo.remove_files(FileType::Index, &supersedes, |n| {
        report.index_files_removed += n;
    })?;
    Ok(report)
}

impl<'a> PackInfo<'a> {
    fn new(p: &'a IndexPack) -> Self {
        PackInfo {
            entries: std::borrow::Cow::Borrowed(&p.blobs),
            live: false,
            marked_at: None,
            size: None,
            used_bytes: 0,
        }
    }
}

/// Bytes of a pack that are neither blobs nor waste: its sealed header and length.
fn slack(info: &PackInfo<'_>) -> u64 {
    crate::repository::pack_overhead(&info.entries)
}

/// Whether this entry is the copy of a used blob that the repository keeps (a blob stored twice
/// keeps the copy the index resolves to).
fn is_chosen_copy(index: &Index, used: &UsedSet<'_>, pack: &Id, e: &PackEntry) -> bool {
    used.contains(&e.id) && index.get(&e.id).is_some_and(|b| b.pack == *pack)
}

/// Marks every blob a snapshot needs; a snapshot whose blobs the index lacks stops the prune.
fn mark_used<'a>(
    repo: &Repository,
    index: &'a Index,
    snapshots: &[(Id, crate::repository::Snapshot)],
) -> Result<UsedSet<'a>> {
    let mut trees: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    trees.sort_unstable();
    trees.dedup();
    let (used, marks) = repo.io_pool()?.install(|| mark_trees(repo, index, &trees));
    let marks: HashMap<Id, TreeMark> = marks.into_iter().collect();
    // The first incomplete snapshot, in the order listed, is the one named.
    for (sid, s) in snapshots {
        let reason = match &marks[&s.tree] {
            TreeMark::Whole => continue,
            TreeMark::Lacks(missing) => {
                format!("it needs blob {} which no index lists", missing.short())
            }
            TreeMark::Unreadable(e) => e.to_string(),
        };
        return Err(Error::damaged(
            format!("snapshot {}", sid.short()),
            format!(
                "{reason}; prune deletes nothing while a snapshot is incomplete: run `sbk check`"
            ),
        ));
    }
    Ok(used)
}

/// Copies the used blobs of `ids` into new packs (sealed bytes as they are, each authenticated
/// first), makes them durable and returns their index entries.
/// Packs listed live by index files other than `known` (written since this run listed them:
/// snapshots reviving packs), and whether one of those files could not be read (then every
/// pack must be counted as revived).
fn revived_since(repo: &Repository, known: &HashSet<Id>) -> Result<(HashSet<Id>, bool)> {
    let mut revived = HashSet::new();
    let mut unsure = false;
    for id in repo.list_ids(FileType::Index)? {
        if known.contains(&id) {
            continue;
        }
        match repo.load_index_file(&id) {
            Ok(f) => revived.extend(f.packs.iter().map(|p| p.id)),
            Err(_) => unsure = true,
        }
    }
    Ok((revived, unsure))
}

fn repack(
    repo: &Repository,
    index: &Index,
    used: &UsedSet<'_>,
    packs: &HashMap<Id, PackInfo<'_>>,
    ids: &[Id],
) -> Result<Vec<IndexPack>> {
    let mut out = PackCopier::new(repo);
    for pid in ids {
        let bytes = repo.read_pack(pid)?;
        repo.parse_pack(pid, &bytes).map_err(|e| {
            Error::damaged(
                format!("pack file {pid}"),
                format!("cannot be repacked ({e}); run `sbk check` and `sbk repair packs`"),
            )
        })?;
        for e in packs[pid]
            .entries
            .iter()
            .filter(|e| is_chosen_copy(index, used, pid, e))
        {
            let end = e.offset as usize + e.stored_len as usize;
            let sealed = bytes.get(e.offset as usize..end).ok_or_else(|| {
                Error::damaged(
                    format!("pack file {pid}"),
                    "an index entry runs past its end",
                )
            })?;
            repo.authenticate_entry(pid, e, sealed).map_err(|_| {
                Error::damaged(
                    format!("blob {} in pack {pid}", e.id.short()),
                    "authentication failed while repacking: run `sbk check`",
                )
            })?;
            out.add(e, sealed)?;
            repo.activity().add_bytes(e.stored_len as u64);
        }
        repo.activity().add_items(1);
    }
    out.finish()
}
