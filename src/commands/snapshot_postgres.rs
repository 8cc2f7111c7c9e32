//! `sbk snapshot postgres`: one snapshot holding, for each database, the dump that
//! `pg_dump --format=custom --compress=0` streams (`<db>.pgdump`), the cluster's globals
//! (`globals.sql`) and `manifest.json`.
//!
//! Order of work, so that failures cost nothing: connect and authenticate first (a wrong password
//! or an unreachable server writes nothing), find client programs new enough for the server, then
//! dump (databases concurrently with `jobs`), and save the snapshot only after every dump and
//! `pg_dumpall` exited 0.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::archiver::{ArchiveStats, Archiver, Progress};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::postgres::client::Client;
use crate::postgres::conn::ConnParams;
use crate::postgres::manifest::{
    count_rows, describe_database, DatabaseManifest, DumpOptions, Manifest, GLOBALS_FILE,
    MANIFEST_FILE, MANIFEST_VERSION,
};
use crate::postgres::tools::{server_major, Program, Tools};
use crate::repository::FileNode;
use crate::repository::{Actor, Repository};
use crate::repository::{Snapshot, Source};
use crate::similarity::ParentFile;
use crate::source::CommandSource;

use super::snapshot::{parent_file, save_snapshot, SnapshotCommon, SnapshotMeta};
use super::SnapshotView;

/// What to dump and how.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub conn: ConnParams,
    /// Databases to dump; empty means the connection's database.
    pub databases: Vec<String>,
    pub all_databases: bool,
    pub dump: DumpOptions,
    /// Databases dumped at once.
    pub jobs: usize,
    pub tools: Tools,
    /// Tags, host, time, parent and delta choice, as for every snapshot verb.
    pub common: SnapshotCommon,
    /// Set from another thread to stop the snapshot (a daemon shutting down): the dumps are
    /// killed and nothing is saved.
    pub stop: Option<Arc<AtomicBool>>,
}

/// No database was named, so libpq's default (the user's name) would be dumped alone: refused
/// when the server holds other databases, which the user most likely meant to back up.
fn refuse_default_database(client: &Client, default: &str) -> Result<()> {
    let others: Vec<String> = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate \
             AND datname <> $1 ORDER BY 1",
            &[&default],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let shown = match others.len() {
        n if n <= 10 => others.join(", "),
        n => format!("{}, and {} more", others[..10].join(", "), n - 10),
    };
    Err(Error::Invalid(format!(
        "no database named: that would dump only {default:?} (libpq's default, the user name), \
         but the server also holds {shown}; name the database (-d NAME, or in the URL: \
         postgresql://host/NAME) or take every one with --all-databases"
    )))
}

/// The snapshots of the server `conn` reaches, whatever their databases: what a drill
/// restores and what a job's retention with `retention_scope = "source"` applies to.
pub fn server_filter(conn: &ConnParams) -> Source {
    let mut s = source_of(conn, None, &[]);
    s.details.remove("databases");
    s
}

/// Snapshot kind recorded in [`Source::kind`].
pub const SOURCE_KIND: &str = "postgres";

/// Source detail naming the cluster: `pg_control_system().system_identifier`, as a decimal
/// string (a JSON number above 2^53 loses digits in many readers).
pub const SYSTEM_IDENTIFIER: &str = "system_identifier";

/// The snapshot's source: server and databases, so retention can group by them. The cluster's
/// system identifier, when the server tells it, is what identifies the server; host and port
/// are kept for people to read (the same cluster over its socket and over TCP is one source).
fn source_of(conn: &ConnParams, system_identifier: Option<&str>, databases: &[String]) -> Source {
    let mut details = serde_json::Map::new();
    details.insert("host".into(), conn.host.clone().into());
    details.insert("port".into(), conn.port.into());
    if let Some(id) = system_identifier {
        details.insert(SYSTEM_IDENTIFIER.into(), id.into());
    }
    details.insert("databases".into(), databases.to_vec().into());
    Source {
        kind: SOURCE_KIND.into(),
        details,
    }
}

/// Whether `s` is a snapshot of the same server (any databases): the same cluster when both
/// name one, else the same host and port.
fn same_server(s: &Snapshot, src: &Source) -> bool {
    let d = &s.source.details;
    s.source.kind == SOURCE_KIND
        && match (d.get(SYSTEM_IDENTIFIER), src.details.get(SYSTEM_IDENTIFIER)) {
            (Some(a), Some(b)) => a == b,
            _ => {
                d.get("host") == src.details.get("host") && d.get("port") == src.details.get("port")
            }
        }
}

/// The cluster's system identifier (PostgreSQL 9.6 and later; `None` when the server does not
/// tell it, and then host and port identify it).
pub(crate) fn system_identifier(client: &Client) -> Option<String> {
    client
        .query(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .ok()?
        .first()
        .map(|r| r.get(0))
}

/// Snapshots whose files can serve as delta parents: `--parent`, or the newest few of the same
/// host and server (a database missing from the newest may be in an older one).
fn parent_candidates(
    repo: &Repository,
    opts: &PostgresOptions,
    host: &str,
    src: &Source,
) -> Result<Vec<(Id, Snapshot)>> {
    if opts.common.no_delta {
        return Ok(Vec::new());
    }
    if let Some(spec) = &opts.common.parent {
        return Ok(vec![repo.find_snapshot(spec)?]);
    }
    Ok(repo
        .list_snapshots_cached()?
        .into_iter()
        .rev()
        .filter(|(_, s)| s.host == host && same_server(s, src))
        .take(8)
        .collect())
}

/// Sketched parent version of `file`, and the snapshot it came from. A first snapshot gets an
/// empty parent, so its sketches are recorded for the next one; `--no-delta` gets none.
pub(crate) fn find_parent_file(
    repo: &Repository,
    index: &Index,
    candidates: &[(Id, Snapshot)],
    file: &str,
    no_delta: bool,
) -> Result<(Option<Id>, Option<ParentFile>)> {
    if no_delta {
        return Ok((None, None));
    }
    for (id, snap) in candidates {
        if let Some(p) = parent_file(repo, index, snap, file)? {
            return Ok((Some(*id), Some(p)));
        }
    }
    Ok((None, Some(ParentFile::default())))
}

/// Everything the dump jobs share.
struct Ctx<'a> {
    repo: &'a Repository,
    index: &'a Index,
    opts: &'a PostgresOptions,
    pg_dump: &'a Program,
    progress: &'a Arc<Progress>,
    candidates: &'a [(Id, Snapshot)],
    /// Killers of running dumps: the first failure stops them all.
    killers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    failed: std::sync::atomic::AtomicBool,
}

impl Ctx<'_> {
    fn fail_all(&self) {
        self.failed.store(true, Ordering::SeqCst);
        for k in self.killers.lock().expect("killers").iter() {
            k();
        }
    }
}

/// A dumped database: its file, its manifest entry and the parent its deltas used.
struct Dumped {
    node: FileNode,
    manifest: DatabaseManifest,
    parent: Option<Id>,
}

/// Dumps one database into `archiver`.
fn dump_database(ctx: &Ctx<'_>, archiver: &mut Archiver<'_>, db: &str) -> Result<Dumped> {
    let conn = ctx.opts.conn.with_dbname(db);
    let client = Client::connect(&conn)?;
    let started = chrono::Local::now().fixed_offset();
    let exported = if ctx.opts.dump.count_rows {
        // The counts and pg_dump share this transaction's snapshot, so they agree exactly.
        client.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let rows = client.query("SELECT pg_export_snapshot()", &[])?;
        Some(
            rows.first()
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_default(),
        )
    } else {
        None
    };
    let mut manifest = describe_database(&client, db)?;
    manifest.started = started;
    let file = manifest.file.clone();
    let (parent, parent_file) = find_parent_file(
        ctx.repo,
        ctx.index,
        ctx.candidates,
        &file,
        ctx.opts.common.no_delta,
    )?;

    let mut cmd = Command::new(&ctx.pg_dump.path);
    cmd.args(["--format=custom", "--compress=0", "--no-password"]);
    if let Some(s) = &exported {
        cmd.arg(format!("--snapshot={s}"));
    }
    let d = &ctx.opts.dump;
    cmd.args(d.schemas.iter().map(|s| format!("--schema={s}")));
    cmd.args(
        d.exclude_tables
            .iter()
            .map(|s| format!("--exclude-table={s}")),
    );
    cmd.args(
        d.exclude_table_data
            .iter()
            .map(|s| format!("--exclude-table-data={s}")),
    );
    let _auth = conn.configure_command(&mut cmd)?;
    let mut source = CommandSource::spawn_command(cmd, &format!("pg_dump of database {db:?}"))?;
    let stdout = source.stdout();
    let killer = Arc::new(source.killer());
    {
        let k = Arc::clone(&killer);
        ctx.killers
            .lock()
            .expect("killers")
            .push(Box::new(move || k()));
    }
    if ctx.failed.load(Ordering::SeqCst) {
        killer();
    }
    let (stored, counted) = std::thread::scope(|s| {
        let counter = exported.as_ref().map(|_| {
            s.spawn(|| -> Result<Vec<_>> {
                let mut tables = manifest.tables.clone();
                count_rows(&client, &mut tables)?;
                Ok(tables)
            })
        });
        let stored = archiver
            .add_stream_cancellable(&file, stdout, parent_file.as_ref(), &|| ctx.fail_all());
        let counted = counter.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Postgres("row counting failed".into())))
        });
        (stored, counted)
    });
    let waited = source.wait();
    let node = match (stored, waited) {
        // pg_dump's own message says more than a broken stream does.
        (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        (Ok(node), Ok(())) => node,
    };
    if let Some(tables) = counted {
        manifest.tables = tables?;
    }
    if exported.is_some() {
        client.batch("COMMIT")?;
    }
    manifest.dump_bytes = node.size;
    manifest.finished = chrono::Local::now().fixed_offset();
    Ok(Dumped {
        node,
        manifest,
        parent,
    })
}

/// Dumps one database into `archiver` on its own (no concurrent dumps): what a Supabase
/// snapshot does with its project's database. Returns the file, its manifest entry and the
/// snapshot its deltas used.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dump_one(
    repo: &Repository,
    index: &Index,
    opts: &PostgresOptions,
    pg_dump: &Program,
    progress: &Arc<Progress>,
    candidates: &[(Id, Snapshot)],
    archiver: &mut Archiver<'_>,
    db: &str,
) -> Result<(FileNode, DatabaseManifest, Option<Id>)> {
    let ctx = Ctx {
        repo,
        index,
        opts,
        pg_dump,
        progress,
        candidates,
        killers: Mutex::new(Vec::new()),
        failed: Default::default(),
    };
    let d = dump_database(&ctx, archiver, db)?;
    Ok((d.node, d.manifest, d.parent))
}

/// Stores `pg_dumpall --globals-only` as `globals.sql`; a role without access to role passwords
/// (not a superuser, as on managed services) gets the roles without them.
fn dump_globals(
    opts: &PostgresOptions,
    pg_dumpall: &Program,
    archiver: &mut Archiver<'_>,
) -> Result<(FileNode, bool)> {
    let mut last_error = None;
    for without_passwords in [false, true] {
        let mut cmd = Command::new(&pg_dumpall.path);
        cmd.args(["--globals-only", "--no-password"]);
        cmd.arg(format!("--database={}", opts.conn.dbname));
        if without_passwords {
            cmd.arg("--no-role-passwords");
        }
        let _auth = opts.conn.configure_command(&mut cmd)?;
        let mut source = CommandSource::spawn_command(cmd, "pg_dumpall --globals-only")?;
        let stdout = source.stdout();
        let killer = source.killer();
        let stored = archiver.add_stream_cancellable(GLOBALS_FILE, stdout, None, &killer);
        match (stored, source.wait()) {
            (Ok(node), Ok(())) => return Ok((node, without_passwords)),
            (_, Err(e)) | (Err(e), _) => last_error = Some(e),
        }
    }
    Err(last_error.expect("tried"))
}

/// Takes the snapshot.
pub fn snapshot_postgres(
    repo: &Repository,
    opts: &PostgresOptions,
    progress: Arc<Progress>,
) -> Result<SnapshotView> {
    let repo = &repo.with_compression(opts.common.compression);
    let actor = Actor::current();
    let started = actor.now;
    let clock = Instant::now();
    // Connect before anything else: a wrong password or a dead server writes nothing.
    let first = Client::connect(&opts.conn)?;
    let version = first.query(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
        &[],
    )?;
    let (server_version, version_num): (String, i32) = version
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .ok_or_else(|| Error::Postgres("the server did not report its version".into()))?;
    let cluster = system_identifier(&first);
    let databases: Vec<String> = if opts.all_databases {
        first
            .query(
                "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else if opts.databases.is_empty() {
        if !opts.conn.dbname_given {
            refuse_default_database(&first, &opts.conn.dbname)?;
        }
        vec![opts.conn.dbname.clone()]
    } else {
        let mut d = opts.databases.clone();
        d.dedup();
        d
    };
    let sizes: i64 = first
        .query(
            "SELECT coalesce(sum(pg_database_size(datname)), 0)::bigint FROM pg_database WHERE datname = ANY($1)",
            &[&databases],
        )?
        .first()
        .map_or(0, |r| r.get(0));
    progress
        .bytes_expected
        .store(sizes.max(0) as u64, Ordering::Relaxed);
    drop(first);

    let major = server_major(version_num);
    let pg_dump = opts.tools.find("pg_dump", major)?;
    let pg_dumpall = opts.tools.find("pg_dumpall", major)?;

    let index = repo.load_index()?;
    let host = opts.common.host.clone().unwrap_or(actor.host);
    let source = source_of(&opts.conn, cluster.as_deref(), &databases);
    let candidates = parent_candidates(repo, opts, &host, &source)?;
    let ctx = Ctx {
        repo,
        index: &index,
        opts,
        pg_dump: &pg_dump,
        progress: &progress,
        candidates: &candidates,
        killers: Mutex::new(Vec::new()),
        failed: Default::default(),
    };

    // Databases go to `jobs` workers, each with its own archiver (its own packs and index
    // file); the results keep the order of `databases`.
    let jobs = opts.jobs.clamp(1, databases.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Dumped>>>> =
        Mutex::new((0..databases.len()).map(|_| None).collect());
    let mut job_stats = ArchiveStats::default();
    let workers_done = AtomicBool::new(false);
    let stopped = AtomicBool::new(false);
    let job_outcomes: Vec<Result<ArchiveStats>> = std::thread::scope(|s| {
        if let Some(stop) = &opts.stop {
            let (ctx, done, stopped) = (&ctx, &workers_done, &stopped);
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if stop.load(Ordering::SeqCst) {
                        stopped.store(true, Ordering::SeqCst);
                        ctx.fail_all();
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| -> Result<ArchiveStats> {
                    let mut archiver = Archiver::new(repo, &index, Arc::clone(ctx.progress));
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= databases.len() || ctx.failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = dump_database(&ctx, &mut archiver, &databases[i]);
                        let failed = r.is_err();
                        results.lock().expect("results")[i] = Some(r);
                        if failed {
                            ctx.fail_all();
                            return Ok(ArchiveStats::default());
                        }
                    }
                    Ok(archiver.finish()?.0)
                })
            })
            .collect();
        let outcomes = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error::Source("a dump worker failed".into())))
            })
            .collect();
        workers_done.store(true, Ordering::SeqCst);
        outcomes
    });
    let interrupted = || {
        Error::Interrupted(
            "the snapshot was stopped by a shutdown request; nothing was saved".into(),
        )
    };
    if stopped.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    // The first database's error in order is the one reported; the others were stopped by it.
    let mut dumped = Vec::new();
    let mut first_error = None;
    for r in results.into_inner().expect("results").into_iter().flatten() {
        match r {
            Ok(d) => dumped.push(d),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for o in job_outcomes {
        match o {
            Ok(st) => job_stats.merge(&st),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if dumped.len() != databases.len() {
        return Err(Error::Source("a database was not dumped".into()));
    }

    if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
        return Err(interrupted());
    }
    let mut main = Archiver::new(repo, &index, Arc::clone(&progress));
    let (globals_node, no_role_passwords) = dump_globals(opts, &pg_dumpall, &mut main)?;
    let parent = dumped.iter().find_map(|d| d.parent);
    let mut files: Vec<FileNode> = Vec::with_capacity(dumped.len() + 2);
    let mut db_manifests = Vec::with_capacity(dumped.len());
    for d in dumped {
        files.push(d.node);
        db_manifests.push(d.manifest);
    }
    files.push(globals_node);
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        server_version,
        server_version_num: version_num,
        host: opts.conn.host.clone(),
        port: opts.conn.port,
        pg_dump_version: pg_dump.version.clone(),
        started,
        finished: chrono::Local::now().fixed_offset(),
        options: opts.dump.clone(),
        globals: true,
        globals_without_role_passwords: no_role_passwords,
        databases: db_manifests,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    files.push(main.add_stream(MANIFEST_FILE, &json[..])?);
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
    let mut view = save_snapshot(repo, main, files, &job_stats, meta)?;
    view.dumped = manifest
        .databases
        .iter()
        .map(|d| super::DumpedDatabase {
            name: d.name.clone(),
            dump_bytes: d.dump_bytes,
            database_bytes: d.size_bytes.max(0) as u64,
        })
        .collect();
    Ok(view)
}

/// Reads a snapshot's manifest.
pub fn load_manifest(
    repo: &Repository,
    snapshot: &crate::repository::SnapshotRef,
) -> Result<(Id, Snapshot, Manifest)> {
    let (id, snap) = repo.find_snapshot(snapshot)?;
    let mut buf = Vec::new();
    let exact = crate::repository::SnapshotRef::Id(id);
    super::restore::dump(repo, &exact, Some(MANIFEST_FILE), &mut buf).map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!(
            "snapshot {} is not a PostgreSQL snapshot (it has no {MANIFEST_FILE})",
            id.short()
        )),
        e => e,
    })?;
    let manifest = serde_json::from_slice(&buf).map_err(|e| {
        Error::damaged(
            format!("{MANIFEST_FILE} of snapshot {}", id.short()),
            e.to_string(),
        )
    })?;
    Ok((id, snap, manifest))
}
