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

mod database;
mod functions;
mod storage;

use super::snapshot::SnapshotCommon;
use database::*;
use functions::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use storage::*;

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
        .list_snapshots_cached()?
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
    let repo = &repo.with_compression(opts.common.compression);
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
