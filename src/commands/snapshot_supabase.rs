//! `sbk snapshot supabase`: a whole Supabase project in one snapshot: the database
//! (`<db>.pgdump`, `roles.sql`, `manifest.json`), Storage (`storage/<bucket>/<key>`), edge
//! functions (`functions/<slug>/<file>`), settings (`settings/<name>.json`) and `supabase.json`.
//!
//! Order of work, so that failures cost nothing: every part's credentials are tried first (the
//! database connection, a Storage bucket listing, the API's function list), so a wrong key or
//! token stops the run before anything is stored; the snapshot is written only after every part
//! succeeded.
//!
//! Storage runs as a pipeline: a planner walks each bucket's sorted listing beside the parent
//! snapshot's `storage/` folder (in the same order, one tree page per level in memory) and takes
//! an object whose size, ETag and last-modified time match its parent entry without
//! downloading it; `connections` download threads fetch the others (small objects whole, large
//! ones streamed); one archiver per core stores the small ones (they share packs) and a few
//! more archivers stream large ones, several at once; this thread adds the results, in order,
//! to the folder's tree pages.

use super::snapshot::SnapshotCommon;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use crate::archiver::{ArchiveStats, Archiver, Progress};
use crate::error::{Error, Result};
use crate::folders::{path_order, Folder, TreeBuilder};
use crate::id::Id;
use crate::index::Index;
use crate::postgres::client::Client;
use crate::postgres::conn::ConnParams;
use crate::postgres::manifest::{DumpOptions, Manifest, MANIFEST_FILE, MANIFEST_VERSION};
use crate::postgres::tools::{server_major, Tools};
use crate::repository::trees::TreeCursor;
use crate::repository::FileNode;
use crate::repository::{Actor, Repository};
use crate::repository::{Snapshot, Source};
use crate::similarity::ParentFile;
use crate::supabase::api::{ApiClient, FunctionInfo};
use crate::supabase::manifest::*;
use crate::supabase::names::{encode_component, key_to_path};
use crate::supabase::project::Project;
use crate::supabase::storage::{ObjectInfo, ObjectMeta, StorageClient};

use super::snapshot::{save_snapshot_with_folders, SnapshotMeta};
use super::snapshot_postgres::{dump_one, PostgresOptions};
use super::SnapshotView;

/// Snapshot kind recorded in [`Source::kind`].
pub const SOURCE_KIND: &str = "supabase";
/// Objects up to this size are downloaded whole and stored on the archiver's thread; larger
/// ones stream through the pipeline.
pub const SMALL_OBJECT: u64 = 8 << 20;
/// Large objects read at once: a single S3 stream is slow (about 100 MB/s), so several are
/// read side by side, each through its own streaming pipeline (chunker buffer and chunks in
/// flight: up to ~40 MiB each), hence the cap.
fn large_streams(connections: usize) -> usize {
    connections.div_ceil(2).clamp(1, 4)
}
/// How far the planner may run ahead of the tree builder (entries).
const WINDOW: u64 = 4096;

/// The parts of a project that must be taken (a missing credential is then an error).
#[derive(Clone, Debug, Default)]
pub struct Required {
    pub storage: bool,
    pub functions: bool,
}

/// Credentials given directly (a configured job's secrets) rather than read from the
/// environment.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The database connection, password included.
    pub db: Option<ConnParams>,
    /// Storage's S3 key ID and secret.
    pub storage: Option<(String, zeroize::Zeroizing<String>)>,
    pub access_token: Option<zeroize::Zeroizing<String>>,
}

/// What to take and how.
#[derive(Clone, Debug)]
pub struct SupabaseOptions {
    pub credentials: Credentials,
    /// Set from another thread to stop the snapshot (a daemon shutting down): checked between
    /// parts and objects; nothing is saved.
    pub stop: Option<Arc<AtomicBool>>,
    pub project: Project,
    /// Edge functions from this folder instead of the API.
    pub functions_dir: Option<std::path::PathBuf>,
    pub require: Required,
    /// Buckets to take (default: all).
    pub buckets: Vec<String>,
    pub exclude_table_data: Vec<String>,
    pub count_rows: bool,
    pub no_storage: bool,
    pub no_functions: bool,
    /// Download every object even when its parent entry matches.
    pub reread_storage: bool,
    /// Download threads.
    pub connections: usize,
    pub ca_cert: Option<std::path::PathBuf>,
    pub retry_deadline: Duration,
    pub tools: Tools,
    /// Tags, host, time, parent and delta choice, as for every snapshot verb.
    pub common: SnapshotCommon,
}

/// A finished Supabase snapshot.
#[derive(Debug, serde::Serialize)]
pub struct SupabaseOutcome {
    #[serde(flatten)]
    pub view: SnapshotView,
    pub supabase: SupabaseManifest,
}

/// The snapshot's source: project, server and database.
fn source_of(project: &Project, conn: &ConnParams) -> Source {
    let mut details = serde_json::Map::new();
    details.insert("project".into(), project.name.clone().into());
    details.insert("host".into(), conn.host.clone().into());
    details.insert("port".into(), conn.port.into());
    details.insert("databases".into(), vec![conn.dbname.clone()].into());
    Source {
        kind: SOURCE_KIND.into(),
        details,
    }
}

/// The snapshots of a project, whatever their server: what a configured job's retention
/// applies to.
pub fn project_filter(project: &Project) -> Source {
    let mut details = serde_json::Map::new();
    details.insert("project".into(), project.name.clone().into());
    Source {
        kind: SOURCE_KIND.into(),
        details,
    }
}

/// Snapshots of the same project from this host: delta and reuse parents.
fn parent_candidates(
    repo: &Repository,
    opts: &SupabaseOptions,
    host: &str,
    src: &Source,
) -> Result<Vec<(Id, Snapshot)>> {
    if let Some(spec) = &opts.common.parent {
        return Ok(vec![repo.find_snapshot(spec)?]);
    }
    Ok(repo
        .list_snapshots()?
        .into_iter()
        .rev()
        .filter(|(_, s)| {
            s.host == host
                && s.source.kind == SOURCE_KIND
                && s.source.details.get("project") == src.details.get("project")
        })
        .take(8)
        .collect())
}

/// What the database says about the project.
struct DatabaseFacts {
    server_version: String,
    version_num: i32,
    extensions: Vec<ExtensionInfo>,
    auth_migration: Option<String>,
    storage_migration: Option<String>,
    buckets: Vec<BucketInfo>,
}

fn database_facts(client: &Client) -> Result<DatabaseFacts> {
    let v = client.query(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
        &[],
    )?;
    let (server_version, version_num) = v
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .ok_or_else(|| Error::Postgres("the server did not report its version".into()))?;
    let extensions = client
        .query(
            "SELECT e.extname::text, e.extversion, n.nspname::text FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| ExtensionInfo {
            name: r.get(0),
            version: r.get(1),
            schema: r.get(2),
        })
        .collect();
    let has = |table: &str| -> Result<bool> {
        Ok(client
            .query("SELECT to_regclass($1) IS NOT NULL", &[&table])?
            .first()
            .is_some_and(|r| r.get(0)))
    };
    let auth_migration = if has("auth.schema_migrations")? {
        client
            .query("SELECT max(version)::text FROM auth.schema_migrations", &[])?
            .first()
            .and_then(|r| r.get(0))
    } else {
        None
    };
    let storage_migration = if has("storage.migrations")? {
        client
            .query(
                "SELECT name::text FROM storage.migrations ORDER BY id DESC LIMIT 1",
                &[],
            )?
            .first()
            .map(|r| r.get(0))
    } else {
        None
    };
    let buckets = if has("storage.buckets")? {
        let cols: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'storage' AND table_name = 'buckets'",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let col = |c: &str, fallback: &str| {
            if cols.iter().any(|x| x == c) {
                c.to_string()
            } else {
                fallback.to_string()
            }
        };
        let sql = format!(
            "SELECT id, name, coalesce({}, false), {}::bigint, {}::text[] FROM storage.buckets ORDER BY id",
            col("public", "false"),
            col("file_size_limit", "NULL"),
            col("allowed_mime_types", "NULL")
        );
        client
            .query(&sql, &[])?
            .iter()
            .map(|r| BucketInfo {
                id: r.get(0),
                name: r.get(1),
                public: r.get(2),
                file_size_limit: r.get(3),
                allowed_mime_types: r.get(4),
                objects: 0,
                bytes: 0,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(DatabaseFacts {
        server_version,
        version_num,
        extensions,
        auth_migration,
        storage_migration,
        buckets,
    })
}

/// `pg_dumpall --roles-only`, without passwords and the platform's roles.
fn dump_roles(conn: &ConnParams, tools: &Tools, major: u32) -> Result<String> {
    let prog = tools.find("pg_dumpall", major)?;
    let mut cmd = std::process::Command::new(&prog.path);
    cmd.args([
        "--roles-only",
        "--no-role-passwords",
        "--no-comments",
        "--quote-all-identifiers",
        "--no-password",
    ]);
    cmd.arg(format!("--database={}", conn.dbname));
    let _auth = conn.configure_command(&mut cmd)?;
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Source(format!("cannot run {}: {e}", prog.path.display())))?;
    if !out.status.success() {
        return Err(Error::Source(format!(
            "pg_dumpall --roles-only failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(crate::supabase::roles::filter_roles(
        &String::from_utf8_lossy(&out.stdout),
    ))
}

/// A storage object on its way through the pipeline.
struct Work {
    seq: u64,
    bucket: String,
    info: ObjectInfo,
    /// The parent snapshot's version, for deltas.
    parent: Option<FileNode>,
}

enum Fetched {
    Small(Work, ObjectMeta, Vec<u8>),
    Large(Work, ObjectMeta, aws_sdk_s3::primitives::ByteStream),
}

/// A stored object, or one that vanished.
enum Done {
    Stored(FileNode),
    Vanished(String),
}

/// Results by sequence number, for the tree builder to take in order.
struct Results {
    done: Mutex<ResultsState>,
    changed: Condvar,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    downloaded: std::sync::atomic::AtomicU64,
    reused: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct ResultsState {
    /// (bucket, object folders, outcome) by sequence number.
    ready: BTreeMap<u64, (String, Vec<String>, Done)>,
    /// Sequence numbers the builder has taken.
    taken: u64,
    /// Total, once the planner has listed everything.
    total: Option<u64>,
}

impl Results {
    fn fail(&self, e: Error) {
        self.error.lock().expect("error").get_or_insert(e);
        self.failed.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn put(&self, seq: u64, bucket: String, info: &ObjectInfo, done: Done) {
        let (dirs, _) = key_to_path(&info.key);
        self.done
            .lock()
            .expect("results")
            .ready
            .insert(seq, (bucket, dirs, done));
        self.changed.notify_all();
    }
}

fn attrs_of(info: &ObjectInfo, meta: &ObjectMeta) -> serde_json::Map<String, serde_json::Value> {
    let mut a = serde_json::Map::new();
    a.insert("key".into(), info.key.clone().into());
    a.insert("size".into(), info.size.into());
    // The listing's ETag and time: the next snapshot compares its listing with these. If the
    // object changed between listing and download, the download's ETag is kept instead, so
    // the next listing differs and the object is fetched again.
    let etag = match &meta.etag {
        Some(e) if unquote(e) != unquote(&info.etag) => e.clone(),
        _ => info.etag.clone(),
    };
    a.insert("etag".into(), etag.into());
    a.insert("last_modified".into(), info.last_modified.clone().into());
    if let Some(c) = &meta.content_type {
        a.insert("content_type".into(), c.clone().into());
    }
    if let Some(c) = &meta.cache_control {
        a.insert("cache_control".into(), c.clone().into());
    }
    if !meta.metadata.is_empty() {
        a.insert(
            "metadata".into(),
            serde_json::to_value(&meta.metadata).expect("map serializes"),
        );
    }
    a
}

/// An ETag without the quotes some servers put around it in one answer and not another.
fn unquote(e: &str) -> &str {
    e.trim_matches('"')
}

/// Whether the parent's entry has this listing entry's size and time (and, when given, ETag).
fn same_listing(parent: &FileNode, info: &ObjectInfo) -> bool {
    let Some(a) = &parent.attrs else {
        return false;
    };
    a.get("size").and_then(|v| v.as_u64()) == Some(info.size)
        && parent.size == info.size
        && a.get("last_modified").and_then(|v| v.as_str()) == Some(info.last_modified.as_str())
}

/// Whether the parent's entry describes this object: same size, time and ETag (the server's
/// hash of the content). Never judged without an ETag.
fn unchanged(parent: &FileNode, info: &ObjectInfo) -> bool {
    let etag = parent
        .attrs
        .as_ref()
        .and_then(|a| a.get("etag"))
        .and_then(|v| v.as_str());
    same_listing(parent, info)
        && !info.etag.is_empty()
        && etag.is_some_and(|e| unquote(e) == unquote(&info.etag))
}

enum Reuse {
    No,
    Yes(FileNode),
    Vanished,
}

/// Decides whether an object can be taken from the parent snapshot without downloading it.
/// A listing without ETags (some servers send none) costs a HEAD for the objects whose size
/// and time match.
fn reuse(client: &StorageClient, w: &mut Work, reread: bool) -> Result<Reuse> {
    let Some(parent) = w.parent.as_ref().filter(|_| !reread) else {
        return Ok(Reuse::No);
    };
    if !same_listing(parent, &w.info) {
        return Ok(Reuse::No);
    }
    if w.info.etag.is_empty() {
        match client.head_etag(&w.bucket, &w.info.key)? {
            Some(e) => w.info.etag = e,
            None => return Ok(Reuse::Vanished),
        }
    }
    Ok(if unchanged(parent, &w.info) {
        Reuse::Yes(parent.clone())
    } else {
        Reuse::No
    })
}

/// The storage part: every bucket's objects into the folder `storage`.
#[allow(clippy::too_many_arguments)]
fn snapshot_storage(
    repo: &Repository,
    index: &Index,
    opts: &SupabaseOptions,
    client: &StorageClient,
    buckets: &mut [BucketInfo],
    parent_storage: Option<Vec<Id>>,
    main: &mut Archiver<'_>,
    progress: &Arc<Progress>,
) -> Result<(Folder, StorageSummary, ArchiveStats)> {
    let results = Results {
        done: Mutex::new(ResultsState::default()),
        changed: Condvar::new(),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        downloaded: Default::default(),
        reused: Default::default(),
    };
    let connections = opts.connections.max(1);
    let archivers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let streams = large_streams(connections);
    let (work_tx, work_rx) = bounded::<Work>(connections * 2);
    let (fetch_tx, fetch_rx) = bounded::<Fetched>(archivers * 2);
    let (large_tx, large_rx) = bounded::<Fetched>(0);
    let bucket_ids: Vec<String> = buckets.iter().map(|b| b.id.clone()).collect();
    let mut builder = TreeBuilder::new(STORAGE_DIR);
    let mut summary = StorageSummary::default();
    let mut per_bucket: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stats = ArchiveStats::default();

    std::thread::scope(|s| -> Result<()> {
        // Planner: listing, order, reuse decisions.
        let planner = {
            let results = &results;
            let bucket_ids = &bucket_ids;
            let parent_storage = parent_storage.clone();
            s.spawn(move || {
                let mut cursor = match &parent_storage {
                    Some(pages) => TreeCursor::new(repo, index, pages),
                    None => TreeCursor::empty(repo, index),
                };
                let mut pending_parent = None;
                let mut seq = 0u64;
                let mut sorted: Vec<&String> = bucket_ids.iter().collect();
                sorted.sort_by_key(|b| encode_component(b));
                for bucket in sorted {
                    let mut objects = match client.list_objects(bucket) {
                        Ok(o) => o,
                        Err(e) => return results.fail(e),
                    };
                    // Tree order (by escaped path components), whatever the server's order.
                    let mut keyed: Vec<(Vec<String>, String, ObjectInfo)> = objects
                        .drain(..)
                        .map(|o| {
                            let (mut d, n) = key_to_path(&o.key);
                            d.insert(0, encode_component(bucket));
                            (d, n, o)
                        })
                        .collect();
                    keyed.sort_by(|a, b| path_order(&a.0, &a.1, &b.0, &b.1));
                    for (dirs, name, info) in keyed {
                        // Wait while too far ahead of the builder.
                        {
                            let mut st = results.done.lock().expect("results");
                            while seq >= st.taken + WINDOW && !results.failed.load(Ordering::SeqCst)
                            {
                                st = results
                                    .changed
                                    .wait_timeout(st, Duration::from_millis(100))
                                    .expect("results")
                                    .0;
                            }
                        }
                        if results.failed.load(Ordering::SeqCst) {
                            return;
                        }
                        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                            return results.fail(Error::Interrupted(
                                "the snapshot was stopped by a shutdown request; nothing was saved"
                                    .into(),
                            ));
                        }
                        // The parent's entry at this path, if any.
                        let parent = loop {
                            let next = match pending_parent.take() {
                                Some(p) => Some(p),
                                None => match cursor.next_file() {
                                    Ok(n) => n,
                                    Err(e) => return results.fail(e),
                                },
                            };
                            let Some((pd, pnode)) = next else { break None };
                            match path_order(&pd, &pnode.name, &dirs, &name) {
                                std::cmp::Ordering::Less => continue,
                                std::cmp::Ordering::Equal => break Some(pnode),
                                std::cmp::Ordering::Greater => {
                                    pending_parent = Some((pd, pnode));
                                    break None;
                                }
                            }
                        };
                        if work_tx
                            .send(Work {
                                seq,
                                bucket: bucket.clone(),
                                info,
                                parent,
                            })
                            .is_err()
                        {
                            return;
                        }
                        seq += 1;
                    }
                }
                results.done.lock().expect("results").total = Some(seq);
                results.changed.notify_all();
            })
        };
        // Downloaders.
        for _ in 0..connections {
            let (rx, results) = (work_rx.clone(), &results);
            let (tx, large_tx) = (fetch_tx.clone(), large_tx.clone());
            s.spawn(move || {
                for mut w in rx {
                    if results.failed.load(Ordering::SeqCst) {
                        return;
                    }
                    match reuse(client, &mut w, opts.reread_storage) {
                        Ok(Reuse::No) => {}
                        Ok(Reuse::Yes(node)) => {
                            results.reused.fetch_add(1, Ordering::Relaxed);
                            results.put(w.seq, w.bucket, &w.info, Done::Stored(node));
                            continue;
                        }
                        Ok(Reuse::Vanished) => {
                            let key = w.info.key.clone();
                            results.put(w.seq, w.bucket, &w.info, Done::Vanished(key));
                            continue;
                        }
                        Err(e) => return results.fail(e),
                    }
                    let got = if w.info.size <= SMALL_OBJECT {
                        client
                            .get_bytes(&w.bucket, &w.info.key)
                            .map(|r| r.map(|(m, b)| (m, Ok(b))))
                    } else {
                        client
                            .get(&w.bucket, &w.info.key)
                            .map(|r| r.map(|(m, b)| (m, Err(b))))
                    };
                    let fetched = match got {
                        Ok(Some((m, Ok(bytes)))) => Fetched::Small(w, m, bytes),
                        Ok(Some((m, Err(body)))) => Fetched::Large(w, m, body),
                        Ok(None) => {
                            // Deleted since the listing: skipped and reported.
                            let key = w.info.key.clone();
                            results.put(w.seq, w.bucket, &w.info, Done::Vanished(key));
                            continue;
                        }
                        Err(e) => return results.fail(e),
                    };
                    results.downloaded.fetch_add(1, Ordering::Relaxed);
                    let lane = match fetched {
                        Fetched::Small(..) => &tx,
                        Fetched::Large(..) => &large_tx,
                    };
                    if lane.send(fetched).is_err() {
                        return;
                    }
                }
            });
        }
        drop(fetch_tx);
        drop(large_tx);
        drop(work_rx);
        // Archivers: one per core for small objects, `streams` for large ones (each of those
        // runs the streaming pipeline with its own seal workers, so it is not bound to a core;
        // it is there so that several large bodies are read at once).
        let mut archiver_handles = Vec::new();
        let lanes = std::iter::repeat_n(&fetch_rx, archivers)
            .chain(std::iter::repeat_n(&large_rx, streams));
        for rx in lanes {
            let (rx, results, progress) = (rx.clone(), &results, Arc::clone(progress));
            archiver_handles.push(s.spawn(move || -> Result<ArchiveStats> {
                let mut ar = Archiver::new(repo, index, progress);
                for f in rx {
                    if results.failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let (w, meta, node) = match f {
                        Fetched::Small(w, meta, bytes) => {
                            let parent = delta_parent(&w, opts);
                            let node = ar.add_bytes(&w.info.key, &bytes, parent.as_ref());
                            (w, meta, node)
                        }
                        Fetched::Large(w, meta, body) => {
                            let parent = delta_parent(&w, opts);
                            let reader = client.reader(body);
                            let node = ar.add_stream_cancellable(
                                &w.info.key,
                                reader,
                                parent.as_ref(),
                                &|| {},
                            );
                            (w, meta, node)
                        }
                    };
                    match node {
                        Ok(mut node) => {
                            let (_, name) = key_to_path(&w.info.key);
                            node.name = name;
                            node.attrs = Some(attrs_of(&w.info, &meta));
                            results.put(w.seq, w.bucket.clone(), &w.info, Done::Stored(node));
                        }
                        Err(e) => {
                            results.fail(Error::Source(format!(
                                "storage object {}/{}: {e}",
                                w.bucket, w.info.key
                            )));
                            break;
                        }
                    }
                }
                Ok(ar.finish()?.0)
            }));
        }
        drop(fetch_rx);
        drop(large_rx);
        // Builder: results in order.
        let mut next = 0u64;
        loop {
            let item = {
                let mut st = results.done.lock().expect("results");
                loop {
                    if results.failed.load(Ordering::SeqCst) {
                        break None;
                    }
                    if let Some(item) = st.ready.remove(&next) {
                        st.taken = next + 1;
                        break Some(item);
                    }
                    if st.total == Some(next) {
                        break None;
                    }
                    st = results
                        .changed
                        .wait_timeout(st, Duration::from_millis(100))
                        .expect("results")
                        .0;
                }
            };
            results.changed.notify_all();
            let Some((bucket, mut dirs, done)) = item else {
                break;
            };
            next += 1;
            match done {
                Done::Stored(node) => {
                    let size = node.size;
                    dirs.insert(0, encode_component(&bucket));
                    if let Err(e) = builder.add_file(main, &dirs, node) {
                        results.fail(e);
                        break;
                    }
                    summary.objects += 1;
                    summary.bytes += size;
                    let b = per_bucket.entry(bucket).or_default();
                    b.0 += 1;
                    b.1 += size;
                }
                Done::Vanished(key) => summary.vanished.push(format!("{bucket}/{key}")),
            }
        }
        let _ = planner.join();
        for h in archiver_handles {
            match h.join() {
                Ok(Ok(st)) => stats.merge(&st),
                Ok(Err(e)) => results.fail(e),
                Err(_) => results.fail(Error::Source("a storage archiver failed".into())),
            }
        }
        Ok(())
    })?;
    if let Some(e) = results.error.lock().expect("error").take() {
        return Err(e);
    }
    for b in buckets.iter_mut() {
        if let Some((n, bytes)) = per_bucket.get(&b.id) {
            b.objects = *n;
            b.bytes = *bytes;
        }
    }
    summary.downloaded = results.downloaded.load(Ordering::Relaxed);
    summary.reused = results.reused.load(Ordering::Relaxed);
    let folder = builder.finish(main)?;
    Ok((folder, summary, stats))
}

/// The parent's version of an object as a delta parent; an empty one (so sketches are
/// recorded) for a new object; none with `--no-delta`.
fn delta_parent(w: &Work, opts: &SupabaseOptions) -> Option<ParentFile> {
    if opts.common.no_delta {
        return None;
    }
    match &w.parent {
        Some(p) if p.chunks.len() == p.content.len() && !p.content.is_empty() => {
            Some(ParentFile::new(
                p.content
                    .iter()
                    .copied()
                    .zip(p.chunks.iter().copied())
                    .collect(),
            ))
        }
        _ => Some(ParentFile::default()),
    }
}

/// A function, its entrypoint and its files (path, bytes).
type FunctionFiles = (FunctionInfo, Option<String>, Vec<(String, Vec<u8>)>);

/// A function's files as tree paths, sorted.
fn function_paths(slug: &str, files: &[(String, Vec<u8>)]) -> Vec<(Vec<String>, String, usize)> {
    let mut out: Vec<(Vec<String>, String, usize)> = files
        .iter()
        .enumerate()
        .map(|(i, (path, _))| {
            let (mut dirs, name) = key_to_path(path);
            dirs.insert(0, encode_component(slug));
            (dirs, name, i)
        })
        .collect();
    out.sort_by(|a, b| path_order(&a.0, &a.1, &b.0, &b.1));
    out
}

/// Reads `dir/<slug>/...` (a self-hosted project's `volumes/functions`).
fn functions_from_dir(dir: &std::path::Path) -> Result<Vec<FunctionFiles>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read folder", dir, e))?;
    let mut slugs: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    slugs.sort();
    for path in slugs {
        let slug = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Invalid(format!("{}: not a UTF-8 name", path.display())))?
            .to_string();
        let mut files = Vec::new();
        let mut stack = vec![path.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(|e| Error::io("read folder", &d, e))? {
                let e = e.map_err(|e| Error::io("read folder", &d, e))?;
                let p = e.path();
                let ft = e.file_type().map_err(|e| Error::io("read", &p, e))?;
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let rel = p
                        .strip_prefix(&path)
                        .expect("below")
                        .to_string_lossy()
                        .replace('\\', "/");
                    let data = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
                    files.push((rel, data));
                }
            }
        }
        files.sort();
        let entry = ["index.ts", "index.js", "index.tsx"]
            .iter()
            .find(|n| files.iter().any(|(f, _)| f == *n))
            .map(|s| s.to_string());
        let info = FunctionInfo {
            slug: slug.clone(),
            name: slug,
            version: 0,
            status: "ACTIVE".into(),
            verify_jwt: None,
            entrypoint_path: entry.clone(),
            import_map_path: None,
            other: Default::default(),
        };
        out.push((info, entry, files));
    }
    Ok(out)
}

/// The functions part: metadata and files into the folder `functions`.
fn snapshot_functions(
    main: &mut Archiver<'_>,
    functions: Vec<FunctionFiles>,
) -> Result<(Folder, Vec<FunctionEntry>)> {
    let mut builder = TreeBuilder::new(FUNCTIONS_DIR);
    let mut entries = Vec::new();
    let mut sorted = functions;
    sorted.sort_by_key(|f| encode_component(&f.0.slug));
    for (info, entrypoint, files) in sorted {
        for (dirs, name, i) in function_paths(&info.slug, &files) {
            let mut node = main.add_bytes(&name, &files[i].1, None)?;
            node.name = name;
            builder.add_file(main, &dirs, node)?;
        }
        entries.push(FunctionEntry {
            info,
            entrypoint,
            files: files.into_iter().map(|(p, _)| p).collect(),
        });
    }
    Ok((builder.finish(main)?, entries))
}

/// Settings documents from the API: `(file name, API path)`.
const SETTINGS: &[(&str, &str)] = &[
    ("auth.json", "/config/auth"),
    ("postgrest.json", "/postgrest"),
    ("storage.json", "/config/storage"),
];

/// Takes the snapshot.
pub fn snapshot_supabase(
    repo: &Repository,
    opts: &SupabaseOptions,
    progress: Arc<Progress>,
) -> Result<SupabaseOutcome> {
    let actor = Actor::current();
    let started = actor.now;
    let clock = Instant::now();
    let project = &opts.project;
    let conn = match &opts.credentials.db {
        Some(c) => c.clone(),
        None => ConnParams::resolve(Some(&project.db), &crate::postgres::conn::process_env)?,
    };
    let stopped = || {
        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            Err(Error::Interrupted(
                "the snapshot was stopped by a shutdown request; nothing was saved".into(),
            ))
        } else {
            Ok(())
        }
    };
    let mut skipped = Vec::new();

    // 1. Every part's credentials, before anything is stored.
    let client = Client::connect(&conn)?;
    let facts = database_facts(&client)?;
    drop(client);
    let storage = if opts.no_storage {
        skipped.push("storage: --no-storage".to_string());
        None
    } else {
        let keys = opts
            .credentials
            .storage
            .clone()
            .or_else(crate::supabase::storage::credentials_from_env);
        match (keys, &project.storage_endpoint) {
            (Some(keys), Some(endpoint)) => Some(StorageClient::connect(
                endpoint,
                &project.storage_region,
                &keys,
                opts.ca_cert.clone(),
                opts.retry_deadline,
            )?),
            (keys, _) => {
                let why = if keys.is_none() {
                    format!(
                        "storage: {} and {} are not set",
                        crate::supabase::storage::ACCESS_KEY_VAR,
                        crate::supabase::storage::SECRET_KEY_VAR
                    )
                } else {
                    "storage: no --storage-endpoint or --project-url".to_string()
                };
                if opts.require.storage {
                    return Err(Error::Invalid(format!("{why} (--require storage)")));
                }
                skipped.push(why);
                None
            }
        }
    };
    let mut buckets: Vec<BucketInfo> = facts.buckets.clone();
    if storage.is_some() {
        if !opts.buckets.is_empty() {
            for b in &opts.buckets {
                if !buckets.iter().any(|x| &x.id == b) {
                    let have: Vec<&str> = buckets.iter().map(|x| x.id.as_str()).collect();
                    return Err(Error::NotFound(format!(
                        "bucket {b:?} does not exist in the project; it has: {}",
                        if have.is_empty() {
                            "no buckets".to_string()
                        } else {
                            have.join(", ")
                        }
                    )));
                }
            }
            buckets.retain(|x| opts.buckets.contains(&x.id));
        }
    } else {
        buckets.clear();
    }
    let token = opts.credentials.access_token.clone().or_else(|| {
        crate::postgres::conn::process_env(crate::supabase::api::TOKEN_VAR)
            .map(zeroize::Zeroizing::new)
    });
    let api = match (&project.project_ref, token) {
        (Some(r), Some(token)) => Some(ApiClient::new(
            &project.api_url,
            r,
            token,
            opts.ca_cert.as_deref(),
            opts.retry_deadline,
        )?),
        _ => None,
    };
    let functions = if opts.no_functions {
        skipped.push("functions: --no-functions".to_string());
        None
    } else if let Some(dir) = &opts.functions_dir {
        Some(("dir", functions_from_dir(dir)?))
    } else if let Some(api) = &api {
        let list = api.list_functions()?;
        Some((
            "api",
            list.into_iter()
                .map(|f| (f, None, Vec::new()))
                .collect::<Vec<_>>(),
        ))
    } else {
        let why = if project.project_ref.is_none() {
            "functions: no project ref (give --project-url https://<ref>.supabase.co or --functions-dir)".to_string()
        } else {
            format!("functions: {} is not set", crate::supabase::api::TOKEN_VAR)
        };
        if opts.require.functions {
            return Err(Error::Invalid(format!("{why} (--require functions)")));
        }
        skipped.push(why);
        None
    };
    if api.is_none() {
        skipped.push(format!(
            "settings and secret names: no Management API access ({} and a project ref \
             are needed)",
            crate::supabase::api::TOKEN_VAR
        ));
    }

    // 2. The database.
    stopped()?;
    let major = server_major(facts.version_num);
    let pg_dump = opts.tools.find("pg_dump", major)?;
    let roles = dump_roles(&conn, &opts.tools, major)?;
    let index = repo.load_index()?;
    let host = opts.common.host.clone().unwrap_or(actor.host);
    let source = source_of(project, &conn);
    let candidates = if opts.common.no_delta && opts.reread_storage {
        Vec::new()
    } else {
        parent_candidates(repo, opts, &host, &source)?
    };
    let delta_candidates: &[(Id, Snapshot)] = if opts.common.no_delta {
        &[]
    } else {
        &candidates
    };
    let pg_opts = PostgresOptions {
        conn: conn.clone(),
        databases: vec![conn.dbname.clone()],
        all_databases: false,
        dump: DumpOptions {
            schemas: Vec::new(),
            exclude_tables: Vec::new(),
            exclude_table_data: opts.exclude_table_data.clone(),
            count_rows: opts.count_rows,
        },
        jobs: 1,
        tools: opts.tools.clone(),
        common: SnapshotCommon {
            host: Some(host.clone()),
            ..opts.common.clone()
        },
        stop: None,
    };
    let mut main = Archiver::new(repo, &index, Arc::clone(&progress));
    let (db_node, db_manifest, db_parent) = dump_one(
        repo,
        &index,
        &pg_opts,
        &pg_dump,
        &progress,
        delta_candidates,
        &mut main,
        &conn.dbname,
    )?;
    let database_file = db_node.name.clone();
    let mut files = vec![db_node];
    files.push(main.add_stream(ROLES_FILE, roles.as_bytes())?);

    // 3. Storage.
    stopped()?;
    let mut folders = Vec::new();
    let mut other = ArchiveStats::default();
    let mut storage_summary = None;
    if let Some(client) = &storage {
        // The newest earlier snapshot of the project that holds storage.
        let mut parent_storage = None;
        for (_, snap) in &candidates {
            if let Some(d) = repo.load_tree(&index, &snap.tree)?.dir(STORAGE_DIR) {
                parent_storage = Some(d.trees.clone());
                break;
            }
        }
        let (folder, summary, stats) = snapshot_storage(
            repo,
            &index,
            opts,
            client,
            &mut buckets,
            parent_storage,
            &mut main,
            &progress,
        )?;
        folders.push(folder);
        other.merge(&stats);
        storage_summary = Some(summary);
    }

    // 4. Functions, settings, secret names.
    stopped()?;
    let mut function_entries = None;
    let mut functions_from = None;
    if let Some((from, list)) = functions {
        let list = if from == "api" {
            let api = api.as_ref().expect("api functions need the API");
            let mut with_files = Vec::new();
            for (info, _, _) in list {
                match api.function_source(&info.slug)? {
                    Some(src) => with_files.push((info, src.entrypoint, src.files)),
                    None => skipped.push(format!("function {}: gone since the listing", info.slug)),
                }
            }
            with_files
        } else {
            list
        };
        let (folder, entries) = snapshot_functions(&mut main, list)?;
        folders.push(folder);
        function_entries = Some(entries);
        functions_from = Some(from.to_string());
    }
    let mut secret_names = None;
    let mut settings = Vec::new();
    if let Some(api) = &api {
        secret_names = Some(api.secret_names()?);
        let mut builder = TreeBuilder::new(SETTINGS_DIR);
        for (file, path) in SETTINGS {
            match api.settings(path)? {
                Some(doc) => {
                    let json = serde_json::to_vec_pretty(&doc).expect("json");
                    let node = main.add_bytes(file, &json, None)?;
                    builder.add_file(&mut main, &[], node)?;
                    settings.push(file.to_string());
                }
                None => skipped.push(format!("settings {file}: the API has no {path}")),
            }
        }
        folders.push(builder.finish(&mut main)?);
    }

    // 5. Manifests, then the snapshot.
    stopped()?;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        server_version: facts.server_version,
        server_version_num: facts.version_num,
        host: conn.host.clone(),
        port: conn.port,
        pg_dump_version: pg_dump.version.clone(),
        started,
        finished: chrono::Local::now().fixed_offset(),
        options: pg_opts.dump.clone(),
        globals: false,
        globals_without_role_passwords: true,
        databases: vec![db_manifest],
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    files.push(main.add_stream(MANIFEST_FILE, &json[..])?);
    let supabase = SupabaseManifest {
        version: SUPABASE_MANIFEST_VERSION,
        project: project.name.clone(),
        project_ref: project.project_ref.clone(),
        database_file,
        extensions: facts.extensions,
        auth_migration: facts.auth_migration,
        storage_migration: facts.storage_migration,
        skipped,
        storage: storage_summary,
        buckets,
        functions: function_entries,
        functions_from,
        secret_names,
        settings,
    };
    let json = serde_json::to_vec_pretty(&supabase).expect("supabase.json serializes");
    files.push(main.add_stream(SUPABASE_FILE, &json[..])?);
    let meta = SnapshotMeta {
        time: opts.common.time.unwrap_or(started),
        host,
        username: actor.username,
        tags: opts.common.tags.clone(),
        source,
        parent: db_parent,
        started,
        clock,
    };
    let view = save_snapshot_with_folders(repo, main, files, folders, &other, meta)?;
    Ok(SupabaseOutcome { view, supabase })
}
