//! `sbk check`: is every snapshot whole?
//!
//! Structure (always): key, snapshot and index files re-hashed against their names and
//! authenticated; every pack the index lists exists, and its header (read with ranged reads)
//! matches the index exactly; every blob a snapshot needs (with its chain of delta bases) is
//! indexed. With `--read-data` (or a subset): every chosen pack is downloaded and re-hashed, and
//! each of its blobs is authenticated, decompressed (a delta reconstructed from its base) and
//! re-hashed against its ID. Every problem is collected, not only the first, and the snapshots it
//! affects are named.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobRef, Index};
use crate::repository::liveness::TreeMark;
use crate::repository::BlobKind;
use crate::repository::FileType;
use crate::repository::IndexPack;
use crate::repository::PackEntry;
use crate::repository::{IndexFiles, Repository};

mod read_data;
mod wal;

use read_data::*;

/// Which packs `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Group `n` of `m` (1-based), by pack ID: `m` runs with `n = 1..=m` read every pack once.
    Subset {
        n: u32,
        m: u32,
    },
    /// A random share of the packs.
    Percent(f64),
}

impl FromStr for ReadData {
    type Err = String;

    /// Parses a `--read-data-subset` value: `N/M` or `P%`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "{s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(|| {
            format!("{s:?}: give N/M (such as 1/5) or a percentage (such as 10%)")
        })?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: N is not a number"))?;
        let m: u32 = m
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: M is not a number"))?;
        if m == 0 || n == 0 || n > m {
            return Err(format!("{s:?}: need 1 <= N <= M"));
        }
        Ok(ReadData::Subset { n, m })
    }
}

impl ReadData {
    fn selects(&self, pack: &Id) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, m } => {
                let v = u32::from_le_bytes(pack.0[..4].try_into().expect("4 bytes"));
                v % m == n - 1
            }
            // Chosen in `select`: a share of a count, not a coin per pack.
            ReadData::Percent(_) => false,
        }
    }

    /// The packs of `ids` to read. A percentage reads that share of the packs, rounded up, at
    /// least one and chosen at random: a coin per pack would read none of 30 packs at 10% once
    /// in 25 runs, and claim success.
    pub fn select(&self, ids: &[Id]) -> HashSet<Id> {
        match *self {
            ReadData::Percent(p) => {
                let want =
                    ((ids.len() as f64 * p / 100.0).ceil() as usize).clamp(1, ids.len().max(1));
                let mut keyed: Vec<(u64, Id)> = ids
                    .iter()
                    .map(|id| {
                        let mut b = [0u8; 8];
                        crate::repository::getrandom(&mut b);
                        (u64::from_le_bytes(b), *id)
                    })
                    .collect();
                keyed.sort_unstable();
                keyed.into_iter().take(want).map(|(_, id)| id).collect()
            }
            _ => ids.iter().filter(|id| self.selects(id)).copied().collect(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub read_data: ReadData,
}

/// One problem found.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `key`, `snapshot`, `index`, `pack`, `blob`, `audit`, `object lock` or `wal`.
    pub kind: &'static str,
    pub id: Id,
    /// The pack holding the damage, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<Id>,
    pub message: String,
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub snapshots: usize,
    pub audit_records: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
    pub bytes_read: u64,
    pub errors: Vec<Problem>,
    /// Harmless findings: packs no index lists (prune removes them), packs marked for deletion.
    pub notes: Vec<String>,
    pub damaged_packs: Vec<Id>,
    /// Snapshots that cannot be restored whole.
    pub damaged_snapshots: Vec<Id>,
    /// Archived WAL files, and of them read whole (`--read-data`).
    pub wal_files: usize,
    pub wal_files_read: usize,
    /// Runs of WAL that recovery from a base backup needs and the archive lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wal_gaps: Vec<crate::repository::wal::WalGap>,
}

/// Collected damage: problems, and which packs and blobs they make unreadable.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    bad_packs: BTreeSet<Id>,
    bad_blobs: HashSet<Id>,
}

impl Findings {
    fn pack(&mut self, id: Id, msg: String) {
        self.problems.push(Problem {
            kind: "pack",
            id,
            pack: Some(id),
            message: msg,
        });
        self.bad_packs.insert(id);
    }

    fn blob(&mut self, id: Id, pack: Id, msg: String) {
        self.problems.push(Problem {
            kind: "blob",
            id,
            pack: Some(pack),
            message: msg,
        });
        self.bad_packs.insert(pack);
        self.bad_blobs.insert(id);
    }

    fn file(&mut self, kind: &'static str, id: Id, msg: String) {
        self.problems.push(Problem {
            kind,
            id,
            pack: None,
            message: msg,
        });
    }
}

/// Runs the check; the report's `ok` says whether all is whole.
pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    // What is stored is judged, never a local cache's copy of it.
    let repo = &repo.uncached();
    let mut found = Findings::default();
    let mut report = CheckReport::default();

    // Keys.
    for id in repo.list_ids(FileType::Key)? {
        match repo.read_key_file(&id) {
            Ok(b) if Id::of_file_bytes(&b) == id => {}
            Ok(_) => found.file(
                "key",
                id,
                "its bytes do not match its name (storage corruption)".into(),
            ),
            Err(e) => found.file("key", id, e.to_string()),
        }
    }

    // The audit trail: every record whole and readable.
    for (id, r) in repo.audit_records()? {
        match r {
            Ok(_) => report.audit_records += 1,
            Err(e) => found.file("audit", id, e.to_string()),
        }
    }
    // Object Lock: the bucket still locks new files as the repository asks.
    if let Some(problem) = repo.lock_problem()? {
        found.file("object lock", repo.config().id, problem);
    }

    // Snapshots, then index files, then packs (the order writers make them durable in reverse),
    // each read in parallel: one request each on S3, 10,000 of each a year.
    let pool = repo.io_pool()?;
    let ids = repo.list_ids(FileType::Snapshot)?;
    let loaded: Vec<_> = pool.install(|| {
        use rayon::prelude::*;
        ids.par_iter().map(|id| repo.load_snapshot(id)).collect()
    });
    let mut snapshots = Vec::new();
    for (id, s) in ids.into_iter().zip(loaded) {
        match s {
            Ok(s) => snapshots.push((id, s)),
            Err(e) => found.file("snapshot", id, e.to_string()),
        }
    }
    report.snapshots = snapshots.len();
    let files = pool.install(|| load_index_files(repo, &mut found))?;
    report.index_files = files.files.len();
    let index = files.to_index()?;
    report.blobs = index.len();
    let stored: HashMap<Id, u64> = repo.stored_packs()?;
    report.packs = stored.len();

    // Packs: the index's view of each (live listing wins), against what is stored.
    let mut packs: BTreeMap<Id, (&IndexPack, bool)> = BTreeMap::new();
    for (_, f) in &files.files {
        for p in &f.packs {
            packs.insert(p.id, (p, true));
        }
    }
    for (_, f) in &files.files {
        for m in &f.marked {
            packs.entry(m.pack.id).or_insert((&m.pack, false));
        }
    }
    for p in &files.recovered {
        packs.insert(p.id, (p, true));
    }
    let mut marked = 0;
    let mut missing_live: Vec<(Id, &IndexPack)> = Vec::new();
    for (id, (p, live)) in &packs {
        if !live {
            marked += 1;
        }
        if !stored.contains_key(id) {
            if *live {
                // Damage only if a snapshot needs it: judged once the snapshots are read.
                missing_live.push((*id, *p));
                found.bad_blobs.extend(p.blobs.iter().map(|b| b.id));
            } else {
                // Harmless unless a snapshot needs its blobs (one that committed while a prune
                // ran): the snapshot verdicts below decide.
                report.notes.push(format!(
                    "pack {} was marked for deletion and is gone",
                    id.short()
                ));
                // Only blobs read from there: a copy in a live pack (a repacked one) is the
                // one read.
                found.bad_blobs.extend(
                    p.blobs
                        .iter()
                        .filter(|b| index.get(&b.id).is_some_and(|r| r.pack == *id))
                        .map(|b| b.id),
                );
            }
        }
    }
    if marked > 0 {
        report.notes.push(format!(
            "{marked} packs are marked for deletion by prune (still readable)"
        ));
    }
    let unindexed = stored.keys().filter(|id| !packs.contains_key(id)).count();
    let index_damaged = found.problems.iter().any(|p| p.kind == "index");
    if index_damaged {
        report.notes.push(
            "an index file is damaged: sbk reads the packs' own headers in its place meanwhile; \
             `sbk repair index` rebuilds the index from the packs for good"
                .into(),
        );
    }
    if unindexed > 0 {
        report.notes.push(format!(
            "{unindexed} packs are in no index (left by an interrupted or running snapshot); \
             prune removes them"
        ));
    }

    // Headers, or whole packs with --read-data.
    let present: Vec<(Id, &IndexPack, u64)> = packs
        .iter()
        .filter_map(|(id, (p, _))| stored.get(id).map(|s| (*id, *p, *s)))
        .collect();
    // Blobs the snapshots need: a delta blob no snapshot needs whose base a prune removed is
    // garbage (the next repack drops it), not damage.
    // Each distinct tree is read once, in parallel; its blobs are marked as used at once and
    // then dropped, so memory stays flat in the number of snapshots (keeping every tree's
    // list took 39 KB a snapshot of 2,000 chunks: 897 MiB at 10,000 snapshots).
    let mut distinct: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let (used, marks) =
        pool.install(|| crate::repository::liveness::mark_trees(repo, &index, &distinct));
    let first_verdicts: Vec<(Id, TreeVerdict)> = marks
        .into_iter()
        .map(|(tree, m)| {
            let v = match m {
                TreeMark::Whole => TreeVerdict::Read(None),
                TreeMark::Lacks(cur) => TreeVerdict::Read(Some(unrestorable(&index, &cur))),
                TreeMark::Unreadable(_) if !index.contains(&tree) => TreeVerdict::Unreadable(
                    format!("it needs tree blob {} which no index lists", tree.short()),
                ),
                TreeMark::Unreadable(e) => {
                    TreeVerdict::Unreadable(format!("its tree cannot be read: {e}"))
                }
            };
            (tree, v)
        })
        .collect();
    // Judging "no snapshot needs it" takes every snapshot's tree: one unreadable (its tree may
    // be in that very pack) keeps the pack counted as damage.
    let every_tree_read = first_verdicts
        .iter()
        .all(|(_, v)| !matches!(v, TreeVerdict::Unreadable(_)));
    for (id, p) in missing_live {
        if !every_tree_read || p.blobs.iter().any(|b| used.contains(&b.id)) {
            found.pack(
                id,
                "the index lists it but the repository does not hold it".into(),
            );
        } else {
            // A snapshot that failed beside a prune indexed packs the prune had deleted:
            // nothing needs them, and the next prune drops them from the index.
            report.notes.push(format!(
                "pack {} is listed by an index file but gone; no snapshot needs it (a snapshot \
                 that failed while a prune ran); prune drops it from the index",
                id.short()
            ));
        }
    }
    let ids: Vec<Id> = present.iter().map(|(id, _, _)| *id).collect();
    let selected = opts.read_data.select(&ids);
    if selected.is_empty() && !ids.is_empty() && opts.read_data != ReadData::None {
        report.notes.push(format!(
            "the read-data subset selected none of the {} packs: no pack data was read this \
             time (a group N/M holds the packs whose ID falls in it; other groups hold the rest)",
            ids.len()
        ));
    }
    let ctx = ReadCtx::new(repo, &index, &used, &selected);
    // Bytes: the stored size of the packs read whole, each counted once it is done.
    let activity = repo.activity();
    activity.start(
        if selected.is_empty() {
            "read headers"
        } else {
            "read packs"
        },
        present
            .iter()
            .filter(|(id, _, _)| selected.contains(id))
            .map(|(_, _, size)| size)
            .sum(),
        present.len() as u64,
    );
    let results: Vec<PackResult> = pool.install(|| {
        use rayon::prelude::*;
        present
            .par_iter()
            .map(|(id, p, size)| {
                let r = if selected.contains(id) {
                    let r = ctx.read_pack(id, p);
                    activity.add_bytes(*size);
                    r
                } else {
                    PackResult::header(compare_header(repo, id, *size, p))
                };
                activity.add_items(1);
                r
            })
            .collect()
    });
    let mut orphans = 0;
    for ((id, p, _), r) in present.iter().zip(results) {
        orphans += r.orphans;
        report.packs_read += r.read as usize;
        report.blobs_read += r.blobs_read;
        report.bytes_read += r.bytes_read;
        if let Some(msg) = r.pack_error {
            found.pack(*id, msg);
            if !r.blobs_verified {
                // Without reading every blob, each is suspect.
                found.bad_blobs.extend(p.blobs.iter().map(|b| b.id));
            }
        }
        for (blob, pack, msg) in r.blob_errors {
            found.blob(blob, pack, msg);
        }
    }

    if orphans > 0 && !index_damaged {
        report.notes.push(format!(
            "{orphans} delta blobs that no snapshot needs have lost their base to a prune \
             (unused data, not damage; prune repacks it away)"
        ));
    }

    // Every blob a snapshot needs, with its chain of bases: indexed and not damaged. The first
    // walk judged what the index lacks; only when damage was found are the trees that passed
    // it walked again, against the damaged blobs.
    let verdicts: HashMap<Id, Option<String>> = pool.install(|| {
        use rayon::prelude::*;
        first_verdicts
            .into_par_iter()
            .map(|(tree, v)| {
                let verdict = match v {
                    TreeVerdict::Unreadable(e) => Some(e),
                    TreeVerdict::Read(Some(msg)) => Some(msg),
                    TreeVerdict::Read(None) if found.bad_blobs.is_empty() => None,
                    TreeVerdict::Read(None) => match tree_blobs(repo, &index, &tree) {
                        Ok(blobs) => snapshot_verdict(&index, &found, &blobs),
                        Err(e) => Some(e),
                    },
                };
                (tree, verdict)
            })
            .collect()
    });
    let mut damaged = BTreeSet::new();
    for (sid, s) in &snapshots {
        if let Some(msg) = verdicts[&s.tree].clone() {
            found.file("snapshot", *sid, msg);
            damaged.insert(*sid);
        }
    }
    wal::check_wal(
        repo,
        opts,
        &snapshots,
        &mut found,
        &mut report,
        &mut damaged,
    )?;
    // A snapshot file that cannot be read is itself a lost snapshot.
    for p in &found.problems {
        if p.kind == "snapshot" {
            damaged.insert(p.id);
        }
    }
    found.problems.sort();
    found.problems.dedup();
    report.ok = found.problems.is_empty();
    report.errors = found.problems;
    report.damaged_packs = found.bad_packs.into_iter().collect();
    report.damaged_snapshots = damaged.into_iter().collect();
    Ok(report)
}

/// Loads every index file, recording (not stopping at) damaged ones.
fn load_index_files(repo: &Repository, found: &mut Findings) -> Result<IndexFiles> {
    use rayon::prelude::*;
    let ids = repo.list_ids(FileType::Index)?;
    let read: Vec<_> = ids.par_iter().map(|id| repo.load_index_file(id)).collect();
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for (id, f) in ids.into_iter().zip(read) {
        match f {
            Ok(f) => loaded.push((id, f)),
            Err(e) => failed.push((id, e)),
        }
    }
    let superseded: HashSet<Id> = loaded
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    // A damaged file that another supersedes is out of use (`repair index` leaves it for prune).
    let mut damaged = Vec::new();
    for (id, e) in failed {
        if !superseded.contains(&id) {
            found.file("index", id, e.to_string());
            damaged.push(id);
        }
    }
    let (gone, mut files): (Vec<_>, Vec<_>) = loaded
        .into_iter()
        .partition(|(id, _)| superseded.contains(id));
    // As every other command does: the packs' headers stand in for the damaged files, so the
    // snapshots are judged by what is stored.
    let recovered = match damaged.is_empty() {
        true => Vec::new(),
        false => repo.recover_index(&mut files)?,
    };
    Ok(IndexFiles {
        files,
        superseded: gone.into_iter().map(|(id, _)| id).collect(),
        damaged,
        recovered,
    })
}

/// The blobs a tree's files need, or why the tree cannot be read.
type TreeBlobs = std::result::Result<Vec<Id>, String>;

fn tree_blobs(repo: &Repository, index: &Index, tree: &Id) -> TreeBlobs {
    if !index.contains(tree) {
        return Err(format!(
            "it needs tree blob {} which no index lists",
            tree.short()
        ));
    }
    crate::repository::liveness::snapshot_blobs(repo, index, tree)
        .map_err(|e| format!("its tree cannot be read: {e}"))
}

/// A distinct tree after its first walk.
enum TreeVerdict {
    /// Read; why the index cannot restore it whole, if it cannot.
    Read(Option<String>),
    Unreadable(String),
}

/// Why a blob [`crate::repository::liveness::UsedSet::mark`] could not mark cannot be read.
fn unrestorable(index: &Index, cur: &Id) -> String {
    if index.contains(cur) {
        format!(
            "its chain of delta bases through blob {} is longer than readers follow",
            cur.short()
        )
    } else {
        format!("it needs blob {} which no index lists", cur.short())
    }
}

/// Why a snapshot cannot be restored whole from these blobs, if it cannot: a blob (or a base
/// in its chain) no index lists or one that is damaged.
fn snapshot_verdict(index: &Index, found: &Findings, blobs: &[Id]) -> Option<String> {
    for id in blobs {
        let mut cur = *id;
        for _ in 0..=crate::repository::MAX_CHAIN_DEPTH {
            let Some(b) = index.get(&cur) else {
                return Some(format!(
                    "it needs blob {} which no index lists",
                    cur.short()
                ));
            };
            if found.bad_blobs.contains(&cur) {
                return Some(format!(
                    "it needs blob {} of damaged pack {}",
                    cur.short(),
                    b.pack.short()
                ));
            }
            match b.base {
                Some(base) => cur = base,
                None => break,
            }
        }
    }
    None
}
