//! `sbk snapshot stdin|command`: store one stream as one file of a new snapshot.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, FixedOffset};

use crate::archiver::{ArchiveStats, Archiver, Progress};
use crate::error::{Error, Result};
use crate::folders::Folder;
use crate::index::Index;
use crate::repository::BlobKind;
use crate::repository::{validate_name, FileNode, Tree};
use crate::repository::{Actor, Repository};
use crate::repository::{Snapshot, Source, Summary, SNAPSHOT_VERSION};
use crate::similarity::ParentFile;
use crate::source::{redact_argv, CommandSource};

use super::SnapshotView;

/// What every snapshot verb takes beside its source; the command line's flags and a configured
/// job both build this one struct, so they cannot drift apart.
#[derive(Clone, Debug, Default)]
pub struct SnapshotCommon {
    pub tags: Vec<String>,
    /// Host to record (default: this machine).
    pub host: Option<String>,
    /// Time to record (default: now).
    pub time: Option<DateTime<FixedOffset>>,
    /// Snapshot whose files are the bases of delta blobs; default: the newest snapshot of the
    /// same host and source.
    pub parent: Option<crate::repository::SnapshotRef>,
    /// Store changed chunks in full, without deltas (for comparisons).
    pub no_delta: bool,
    /// zstd level for this snapshot's blobs instead of the repository's (deltas keep theirs).
    pub compression: Option<i32>,
}

/// A snapshot of one stream (stdin or a command's output).
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Name of the file in the snapshot.
    pub name: String,
    /// The source's kind and details.
    pub source: Source,
    pub common: SnapshotCommon,
}

impl SnapshotOptions {
    /// Defaults for a stream stored as `name`.
    pub fn new(name: &str) -> Self {
        SnapshotOptions {
            name: name.to_string(),
            source: Source {
                kind: "stdin".into(),
                details: Default::default(),
            },
            common: SnapshotCommon::default(),
        }
    }
}

/// The parent snapshot and its version of the file, for delta blobs.
fn find_parent(
    repo: &Repository,
    index: &Index,
    opts: &SnapshotOptions,
    host: &str,
) -> Result<Option<(crate::Id, ParentFile)>> {
    let (id, snap) = match &opts.common.parent {
        Some(spec) => repo.find_snapshot(spec)?,
        None => match repo
            .list_snapshots_cached()?
            .into_iter()
            .rev()
            .find(|(_, s)| s.host == host && s.source == opts.source)
        {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    Ok(parent_file(repo, index, &snap, &opts.name)?.map(|f| (id, f)))
}

/// `snap`'s version of the file `name`, searchable for delta bases; `None` when it has no such
/// file or wrote it without sketches (`--no-delta`).
pub(crate) fn parent_file(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    name: &str,
) -> Result<Option<ParentFile>> {
    let tree = repo.load_tree(index, &snap.tree)?;
    let Some(file) = tree.file(name) else {
        return Ok(None);
    };
    if file.chunks.len() != file.content.len() {
        return Ok(None);
    }
    let chunks = file
        .content
        .iter()
        .copied()
        .zip(file.chunks.iter().copied())
        .collect();
    Ok(Some(ParentFile::new(chunks)))
}

/// What a snapshot records besides its files.
pub(crate) struct SnapshotMeta {
    pub time: DateTime<FixedOffset>,
    pub host: String,
    pub username: String,
    pub tags: Vec<String>,
    pub source: Source,
    pub parent: Option<crate::Id>,
    pub started: DateTime<FixedOffset>,
    pub clock: Instant,
}

/// Stores the tree of `files` through `main`, makes every blob durable and indexed, then writes
/// the snapshot: the last step, so a failure anywhere before leaves no snapshot. `other` holds
/// the figures of archivers that already finished (concurrent dumps).
pub(crate) fn save_snapshot(
    repo: &Repository,
    main: Archiver<'_>,
    files: Vec<FileNode>,
    other: &ArchiveStats,
    meta: SnapshotMeta,
) -> Result<SnapshotView> {
    save_snapshot_with_folders(repo, main, files, Vec::new(), other, meta)
}

/// [`save_snapshot`] with folders beside the files (their pages already stored).
pub(crate) fn save_snapshot_with_folders(
    repo: &Repository,
    mut main: Archiver<'_>,
    files: Vec<FileNode>,
    folders: Vec<Folder>,
    other: &ArchiveStats,
    meta: SnapshotMeta,
) -> Result<SnapshotView> {
    let mut folder_blobs = Vec::new();
    let mut dirs = Vec::new();
    for f in folders {
        folder_blobs.extend(f.needed);
        dirs.push(f.node);
    }
    let tree = Tree::new(files, dirs);
    tree.validate().map_err(Error::Invalid)?;
    let tree_id = main.add_blob(
        BlobKind::Tree,
        serde_json::to_vec(&tree).expect("tree serializes"),
    )?;
    let index = main.index();
    let (mut stats, _index_ids) = main.finish()?;
    stats.merge(other);
    // A prune may have marked packs this snapshot reuses while it ran.
    let needed = tree
        .files
        .iter()
        .flat_map(|f| f.content.iter().copied())
        .chain(std::iter::once(tree_id))
        .chain(folder_blobs)
        .collect();
    crate::repository::liveness::secure_references(repo, index, &stats.index_files, needed)?;
    let (cache_hits, cache_misses) = repo.cache().map_or((0, 0), |c| c.counts());
    let finished = chrono::Local::now().fixed_offset();
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: meta.time,
        host: meta.host,
        username: meta.username,
        tags: meta.tags,
        source: meta.source,
        tree: tree_id,
        parent: meta.parent,
        summary: Summary {
            blobs_delta: stats.blobs_delta,
            bytes_delta: stats.bytes_delta,
            bases_from_cache: cache_hits,
            bases_from_repository: cache_misses,
            bytes_in: stats.bytes_in,
            bytes_added: stats.bytes_added,
            bytes_added_raw: stats.bytes_added_raw,
            blobs_total: stats.blobs_total,
            blobs_new: stats.blobs_new,
            packs_new: stats.packs_new,
            started: meta.started,
            finished,
            duration_secs: meta.clock.elapsed().as_secs_f64(),
        },
    };
    crate::cleanup::crash_point("snapshot:index-written");
    let id = repo.save_snapshot(&snapshot)?;
    crate::cleanup::crash_point("snapshot:saved");
    repo.trim_caches();
    Ok(SnapshotView::new(id, snapshot))
}

/// Stores `reader` as a snapshot; `check_source` runs after the stream ends and can veto the
/// snapshot (a command's exit status).
fn run(
    repo: &Repository,
    opts: &SnapshotOptions,
    reader: impl Read + Send,
    progress: Arc<Progress>,
    cancel: &(dyn Fn() + Sync),
    check_source: impl FnOnce() -> Result<()>,
) -> Result<SnapshotView> {
    validate_name(&opts.name).map_err(Error::Invalid)?;
    let actor = Actor::current();
    let started = actor.now;
    let clock = Instant::now();
    let index = repo.load_index()?;
    let host = opts.common.host.clone().unwrap_or(actor.host);
    let (parent_id, parent_file) = if opts.common.no_delta {
        (None, None)
    } else {
        match find_parent(repo, &index, opts, &host)? {
            Some((id, file)) => (Some(id), Some(file)),
            // A first snapshot records sketches so that the next one can use deltas.
            None => (None, Some(ParentFile::default())),
        }
    };
    let mut archiver = Archiver::new(repo, &index, progress);
    let node = archiver.add_stream_cancellable(&opts.name, reader, parent_file.as_ref(), cancel)?;
    check_source()?;
    let meta = SnapshotMeta {
        time: opts.common.time.unwrap_or(started),
        host,
        username: actor.username,
        tags: opts.common.tags.clone(),
        source: opts.source.clone(),
        parent: parent_id,
        started,
        clock,
    };
    save_snapshot(repo, archiver, vec![node], &ArchiveStats::default(), meta)
}

/// Snapshots a reader (standard input).
pub fn snapshot_reader(
    repo: &Repository,
    opts: &SnapshotOptions,
    reader: impl Read + Send,
    progress: Arc<Progress>,
) -> Result<SnapshotView> {
    let repo = &repo.with_compression(opts.common.compression);
    run(repo, opts, reader, progress, &|| {}, || Ok(()))
}

/// Runs a command and snapshots its standard output; a non-zero exit saves nothing.
pub fn snapshot_command(
    repo: &Repository,
    opts: &SnapshotOptions,
    argv: &[String],
    progress: Arc<Progress>,
) -> Result<SnapshotView> {
    let repo = &repo.with_compression(opts.common.compression);
    let mut opts = opts.clone();
    if opts.source.kind.is_empty() || opts.source.kind == "stdin" {
        opts.source.kind = "command".into();
    }
    opts.source
        .details
        .insert("command".into(), serde_json::Value::from(redact_argv(argv)));
    let mut cmd = CommandSource::spawn(argv)?;
    let stdout = cmd.stdout();
    let killer = cmd.killer();
    let mut cmd = Some(cmd);
    let result = run(repo, &opts, stdout, progress, &killer, || {
        cmd.take().expect("checked once").wait()
    });
    if let Some(cmd) = cmd {
        // The pipeline failed before the command ended: stop it.
        cmd.kill();
    }
    result
}
