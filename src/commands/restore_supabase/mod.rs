//! `sbk restore <id> --to-supabase`: a Supabase snapshot into a new or existing project, in
//! order: extensions (created when missing; the restore stops before any change when the
//! target lacks one), roles, the database through `pg_restore` with a filtered table of
//! contents ([`crate::supabase::toc`]; one transaction, data loaded with
//! `session_replication_role = replica` so that no user trigger fires twice), buckets and
//! objects (content type, cache control and user metadata kept; `storage.objects` owners put
//! back after the uploads, which set them to the uploader), functions (deployed through the
//! Management API, or written to a folder), then the list of what must be done by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::postgres::archive::TocReader;
use crate::postgres::client::{quote_ident, Client};
use crate::postgres::conn::ConnParams;
use crate::postgres::tools::Tools;
use crate::repository::trees::{find_file, walk, Visit};
use crate::repository::FileNode;
use crate::repository::Repository;
use crate::restorer::write_file;
use crate::supabase::api::ApiClient;
use crate::supabase::manifest::*;
use crate::supabase::names::{decode_component, path_to_key};
use crate::supabase::project::Project;
use crate::supabase::storage::{ObjectMeta, StorageClient};
use crate::supabase::toc::{plan, Plan, Skip, TargetFacts};

use super::restore_postgres::{find_pg_restore, pg_restore_into, RestoreDbOptions};
use super::snapshot_supabase::SMALL_OBJECT;

mod functions;
mod storage;

use functions::*;
use storage::*;

/// A part of a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Database,
    Storage,
    Functions,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "database" => Ok(Part::Database),
            "storage" => Ok(Part::Storage),
            "functions" => Ok(Part::Functions),
            _ => Err(format!("{s:?}: expected database, storage or functions")),
        }
    }
}

/// Where to and what.
#[derive(Clone, Debug)]
pub struct SupabaseRestoreOptions {
    /// The target project.
    pub project: Project,
    /// Write functions here instead of deploying them.
    pub functions_dir: Option<std::path::PathBuf>,
    /// Only these parts (empty: all).
    pub only: Vec<Part>,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    pub connections: usize,
    pub ca_cert: Option<std::path::PathBuf>,
    pub retry_deadline: Duration,
    pub tools: Tools,
}

impl SupabaseRestoreOptions {
    fn wants(&self, p: Part) -> bool {
        self.only.is_empty() || self.only.contains(&p)
    }
}

/// What a restore did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct SupabaseRestoreOutcome {
    pub snapshot: String,
    pub dry_run: bool,
    /// Extensions created on the target (or to create).
    pub extensions_created: Vec<String>,
    /// Roles created, and those that existed already.
    pub roles_created: usize,
    pub roles_existing: usize,
    /// Role statements the target refused (not fatal: a role that exists differently).
    pub role_errors: Vec<String>,
    /// The table of contents' verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<Plan>,
    pub buckets: Vec<String>,
    pub objects: u64,
    pub object_bytes: u64,
    /// `storage.objects` rows whose owner or user metadata were put back after the uploads.
    pub owners_restored: u64,
    pub functions: Vec<String>,
    /// Where functions went: `api` or a folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions_to: Option<String>,
    /// Parts not restored, with why.
    pub skipped_parts: Vec<String>,
    /// What the user must do by hand.
    pub manual: Vec<String>,
    pub duration_secs: f64,
}

/// What the target's catalogue holds, by name (see [`TargetFacts`]).
fn target_facts(c: &Client) -> Result<TargetFacts> {
    let mut t = TargetFacts::default();
    for r in c.query("SELECT nspname::text FROM pg_namespace", &[])? {
        t.schemas.insert(r.get(0));
    }
    for r in c.query(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         UNION ALL SELECT n.nspname::text, p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         UNION ALL SELECT n.nspname::text, t.typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace",
        &[],
    )? {
        t.objects.insert((r.get(0), r.get(1)));
    }
    for r in c.query(
        "SELECT schemaname::text, tablename::text, policyname::text FROM pg_policies
         UNION ALL SELECT n.nspname::text, c.relname::text, g.tgname::text FROM pg_trigger g
           JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         UNION ALL SELECT n.nspname::text, c.relname::text, r.rulename::text FROM pg_rewrite r
           JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
         UNION ALL SELECT n.nspname::text, c.relname::text, k.conname::text FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace",
        &[],
    )? {
        t.table_objects.insert((r.get(0), r.get(1), r.get(2)));
    }
    for r in c.query("SELECT pubname::text FROM pg_publication", &[])? {
        t.publications.insert(r.get(0));
    }
    Ok(t)
}

/// Creates the extensions the target lacks; refuses, before any change, when one is not
/// available there.
fn extensions(c: &Client, wanted: &[ExtensionInfo], dry_run: bool) -> Result<Vec<String>> {
    let installed: BTreeSet<String> = c
        .query("SELECT extname::text FROM pg_extension", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let available: BTreeSet<String> = c
        .query("SELECT name::text FROM pg_available_extensions", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let to_create: Vec<&ExtensionInfo> = wanted
        .iter()
        .filter(|e| !installed.contains(&e.name))
        .collect();
    let missing: Vec<&str> = to_create
        .iter()
        .filter(|e| !available.contains(&e.name))
        .map(|e| e.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "the target database lacks extensions the snapshot uses: {}; install them (on \
             Supabase: Database > Extensions) and restore again; nothing was changed",
            missing.join(", ")
        )));
    }
    let mut created = Vec::new();
    for e in to_create {
        if !dry_run {
            c.batch(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA {schema}",
                schema = quote_ident(&e.schema),
                name = quote_ident(&e.name)
            ))?;
        }
        created.push(format!("{} ({})", e.name, e.schema));
    }
    Ok(created)
}

/// Applies the roles file statement by statement; a role that exists already is counted.
fn roles(c: &Client, script: &str, dry_run: bool, out: &mut SupabaseRestoreOutcome) {
    for stmt in crate::supabase::roles::statements(script) {
        let creates = stmt.starts_with("CREATE ROLE ");
        if dry_run {
            out.roles_created += creates as usize;
            continue;
        }
        match c.batch(stmt) {
            Ok(()) => out.roles_created += creates as usize,
            Err(e) if creates && e.to_string().contains("already exists") => {
                out.roles_existing += 1
            }
            Err(e) => out.role_errors.push(e.to_string()),
        }
    }
}

/// The snapshot being restored, with the index loaded once for every part.
struct Snap<'r> {
    repo: &'r Repository,
    index: crate::index::Index,
    id: Id,
    root: crate::repository::Tree,
    tree: Id,
}

impl<'r> Snap<'r> {
    fn open(repo: &'r Repository, spec: &crate::repository::SnapshotRef) -> Result<Self> {
        let (id, snap) = repo.find_snapshot(spec)?;
        let index = repo.load_index()?;
        let root = repo.load_tree(&index, &snap.tree)?;
        Ok(Snap {
            repo,
            index,
            id,
            root,
            tree: snap.tree,
        })
    }

    /// Writes the file at `path` (verified) to `out`.
    fn write_to(&self, path: &str, out: &mut dyn Write) -> Result<()> {
        let node = find_file(self.repo, &self.index, &self.tree, path)?.ok_or_else(|| {
            Error::NotFound(format!(
                "snapshot {} is not a Supabase snapshot (it has no {path})",
                self.id.short()
            ))
        })?;
        write_file(self.repo, &self.index, &node, out).map(|_| ())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.write_to(path, &mut buf)?;
        Ok(buf)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        serde_json::from_slice(&self.read(path)?).map_err(|e| {
            Error::damaged(
                format!("{path} of snapshot {}", self.id.short()),
                e.to_string(),
            )
        })
    }
}

/// Reads the dump's table of contents from the repository (only its first bytes).
fn read_toc(snap: &Snap<'_>, file: &str) -> Result<Vec<crate::postgres::archive::TocEntry>> {
    let mut reader = TocReader::new();
    let dumped = snap.write_to(file, &mut reader);
    let _ = reader.flush();
    match reader.finish() {
        Some(entries) => Ok(entries),
        None => {
            dumped?;
            Err(Error::Invalid(format!(
                "{file}: not an archive this sbk can filter (expected pg_dump's custom format, \
                 uncompressed, from PostgreSQL 12 to 17)"
            )))
        }
    }
}

/// The login roles of a roles file (their passwords are not in the snapshot).
fn login_roles(script: &str) -> Vec<String> {
    script
        .lines()
        .filter(|l| l.starts_with("ALTER ROLE ") && l.contains(" LOGIN"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

/// Top-level keys whose values differ between two settings documents (names only: values may
/// be secrets).
fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Restores snapshot `spec` into the project `opts.project`.
pub fn restore_to_supabase(
    repo: &Repository,
    spec: &crate::repository::SnapshotRef,
    opts: &SupabaseRestoreOptions,
) -> Result<SupabaseRestoreOutcome> {
    let clock = Instant::now();
    let snap = Snap::open(repo, spec)?;
    let id = snap.id;
    let sb: SupabaseManifest = snap.json(SUPABASE_FILE)?;
    let manifest: crate::postgres::manifest::Manifest =
        snap.json(crate::postgres::manifest::MANIFEST_FILE)?;
    let mut out = SupabaseRestoreOutcome {
        snapshot: id.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let project = &opts.project;
    let conn = ConnParams::resolve(Some(&project.db), &crate::postgres::conn::process_env)?;

    // Every part's access first, so a bad credential changes nothing.
    let db = Client::connect(&conn)?;
    let storage = if opts.wants(Part::Storage) && !sb.buckets.is_empty() && !opts.dry_run {
        match (
            crate::supabase::storage::credentials_from_env(),
            &project.storage_endpoint,
        ) {
            (Some(keys), Some(endpoint)) => Some(StorageClient::connect(
                endpoint,
                &project.storage_region,
                &keys,
                opts.ca_cert.clone(),
                opts.retry_deadline,
            )?),
            _ => {
                return Err(Error::Invalid(format!(
                    "restoring storage needs {} and {} for the target and its --project-url or \
                     --storage-endpoint (or leave storage out with --only)",
                    crate::supabase::storage::ACCESS_KEY_VAR,
                    crate::supabase::storage::SECRET_KEY_VAR
                )))
            }
        }
    } else {
        None
    };
    let api = match (
        &project.project_ref,
        crate::postgres::conn::process_env(crate::supabase::api::TOKEN_VAR),
    ) {
        (Some(r), Some(token)) => Some(ApiClient::new(
            &project.api_url,
            r,
            zeroize::Zeroizing::new(token),
            opts.ca_cert.as_deref(),
            opts.retry_deadline,
        )?),
        _ => None,
    };
    if opts.wants(Part::Functions) && opts.functions_dir.is_none() && sb.functions.is_some() {
        if let Some(api) = &api {
            api.list_functions()?;
        }
    }

    let roles_script = String::from_utf8_lossy(&snap.read(ROLES_FILE)?).into_owned();
    // The dump's bytes are known; storage objects add theirs as the walk finds them.
    let dump_bytes = manifest
        .databases
        .iter()
        .find(|d| d.file == sb.database_file)
        .map_or(0, |d| d.dump_bytes);
    let restores_database = opts.wants(Part::Database) && !opts.dry_run;
    repo.activity().start(
        "restore database",
        if restores_database { dump_bytes } else { 0 },
        0,
    );
    let mut owners_saved = false;
    if opts.wants(Part::Database) {
        out.extensions_created = extensions(&db, &sb.extensions, opts.dry_run)?;
        roles(&db, &roles_script, opts.dry_run, &mut out);
        let entries = read_toc(&snap, &sb.database_file)?;
        let facts = target_facts(&db)?;
        let p = plan(&entries, &facts);
        if !opts.dry_run {
            let mut list = tempfile::Builder::new()
                .prefix("sbk-toc-")
                .tempfile()
                .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
            list.write_all(p.list_file().as_bytes())
                .and_then(|_| list.flush())
                .map_err(|e| Error::io("write", list.path(), e))?;
            let mut restore_conn = conn.clone();
            let replica = "-c session_replication_role=replica";
            restore_conn.options = Some(match &conn.options {
                Some(o) => format!("{o} {replica}"),
                None => replica.to_string(),
            });
            let pg_restore = find_pg_restore(&opts.tools, &conn, &manifest)?;
            let list_arg = format!("--use-list={}", list.path().display());
            pg_restore_into(
                repo,
                &id,
                &sb.database_file,
                &restore_conn,
                &pg_restore,
                &RestoreDbOptions {
                    jobs: 1,
                    tools: opts.tools.clone(),
                    ..Default::default()
                },
                &["--single-transaction", &list_arg],
            )?;
            owners_saved = save_owners(&db)?;
        }
        out.database = Some(p);
    } else {
        out.skipped_parts.push("database: not in --only".into());
    }

    if opts.wants(Part::Storage) {
        if sb.buckets.is_empty() {
            out.skipped_parts
                .push("storage: the snapshot holds no buckets".into());
        } else {
            restore_storage(&snap, &sb, storage.as_ref(), Some(&db), opts, &mut out)?;
            if owners_saved {
                out.owners_restored = restore_owners(&db)?;
            }
        }
    } else {
        out.skipped_parts.push("storage: not in --only".into());
    }

    if opts.wants(Part::Functions) {
        restore_functions(&snap, &sb, api.as_ref(), opts, &mut out)?;
    } else {
        out.skipped_parts.push("functions: not in --only".into());
    }

    // What only a person can do.
    if let Some(names) = sb.secret_names.as_ref().filter(|n| !n.is_empty()) {
        out.manual.push(format!(
            "set the function secrets {} (their values cannot be read from a project): \
             supabase secrets set --project-ref <target> NAME=value",
            names.join(", ")
        ));
    }
    let logins = login_roles(&roles_script);
    if !logins.is_empty() {
        out.manual.push(format!(
            "set passwords for the login roles {} (passwords are never in a snapshot): \
             ALTER ROLE name PASSWORD '...'",
            logins.join(", ")
        ));
    }
    out.manual.push(
        "the target has its own JWT secret and API keys: update clients and any JWTs you \
         issued"
            .into(),
    );
    if let Some(p) = &out.database {
        if p.skipped
            .get(&Skip::PlatformState)
            .is_some_and(|v| v.iter().any(|e| e.contains("vault ")))
        {
            out.manual.push(
                "Vault secrets were not restored (they are encrypted with the source project's \
                 key): add them again in the target"
                    .into(),
            );
        }
    }
    if let Some(api) = &api {
        for name in &sb.settings {
            let path = match name.as_str() {
                "auth.json" => "/config/auth",
                "postgrest.json" => "/postgrest",
                "storage.json" => "/config/storage",
                _ => continue,
            };
            let buf = snap.read(&format!("{SETTINGS_DIR}/{name}"))?;
            let Ok(ours) = serde_json::from_slice::<serde_json::Value>(&buf) else {
                continue;
            };
            if let Some(theirs) = api.settings(path)? {
                let keys = differing_keys(&ours, &theirs);
                if !keys.is_empty() {
                    out.manual.push(format!(
                        "settings {name} differ from the snapshot's in: {} (see `sbk dump {} {SETTINGS_DIR}/{name}`)",
                        keys.join(", "),
                        id.short()
                    ));
                }
            }
        }
    }
    out.duration_secs = clock.elapsed().as_secs_f64();
    Ok(out)
}
