//! `sbk restore <id> --to-database URL`: streams a snapshot's dump into `pg_restore` (staged in a
//! temporary file only when `--jobs` needs a seekable file), optionally applies the globals, and
//! reports per-table row counts of the result.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::postgres::archive::{CountingWriter, RowCounter};
use crate::postgres::client::{quote_ident, Client};
use crate::postgres::conn::ConnParams;
use crate::postgres::feed;
use crate::postgres::manifest::{DatabaseManifest, Manifest, GLOBALS_FILE};
use crate::postgres::tools::{parse_major, server_major, Program, Tools};
use crate::repository::Repository;

use super::snapshot_postgres::load_manifest;

#[derive(Clone, Debug, Default)]
pub struct RestoreDbOptions {
    /// Which dump of a several-database snapshot.
    pub database: Option<String>,
    /// Create the target database first (it must not exist).
    pub create: bool,
    /// With `create`: keep the half-made database when the restore fails (else it is dropped).
    pub keep_partial: bool,
    /// Drop objects before recreating them (`pg_restore --clean --if-exists`).
    pub clean: bool,
    pub jobs: usize,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub no_owner: bool,
    pub no_privileges: bool,
    /// Apply `globals.sql` (roles, tablespaces) first, through `psql`.
    pub globals: bool,
    pub tools: Tools,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub rows: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreDbOutcome {
    pub snapshot: Id,
    /// The dumped database.
    pub database: String,
    /// The database restored into, and its server.
    pub target: String,
    pub server: String,
    /// Whether the dump went through a temporary file (`--jobs` above 1).
    pub staged: bool,
    /// Errors `psql` reported while applying the globals (roles that exist already...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals_errors: Option<usize>,
    pub tables: Vec<TableCount>,
    pub duration_secs: f64,
}

/// The manifest entry of the dump to restore: `--database`, or the only one.
pub fn pick_database<'m>(
    manifest: &'m Manifest,
    wanted: Option<&str>,
    id: &Id,
) -> Result<&'m DatabaseManifest> {
    let names = || {
        manifest
            .databases
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => manifest
            .databases
            .iter()
            .find(|d| d.name == w)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "snapshot {} has no dump of database {w:?}; it holds: {}",
                    id.short(),
                    names()
                ))
            }),
        None if manifest.databases.len() == 1 => Ok(&manifest.databases[0]),
        None => Err(Error::Invalid(format!(
            "snapshot {} holds several databases ({}): pick one with --database",
            id.short(),
            names()
        ))),
    }
}

/// Connects to a database of the server that can run `CREATE DATABASE`: the URL's own
/// database when it exists, else `postgres`, else `template1`.
fn maintenance(conn: &ConnParams, avoid: &str) -> Result<Client> {
    let mut last = None;
    for db in [conn.dbname.as_str(), "postgres", "template1"] {
        if db == avoid {
            continue;
        }
        match Client::connect(&conn.with_dbname(db)) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried a database"))
}

/// Creates the database `name` on `conn`'s server.
pub fn create_database(conn: &ConnParams, name: &str) -> Result<()> {
    let c = maintenance(conn, name)?;
    let exists = !c
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_empty();
    if exists {
        return Err(Error::Refused(format!(
            "database {name:?} already exists on {}: --create makes a new database; to restore \
             into the existing one, leave out --create and add --clean (drops and recreates the \
             objects the dump holds), or restore under another name",
            conn.server()
        )));
    }
    c.batch(&format!("CREATE DATABASE {}", quote_ident(name)))
}

/// Drops the database `name` on `conn`'s server, disconnecting its sessions.
pub fn drop_database(conn: &ConnParams, name: &str) -> Result<()> {
    let c = maintenance(conn, name)?;
    c.batch(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    ))
}

/// `pg_restore` new enough for both the server and the archive.
pub fn find_pg_restore(tools: &Tools, conn: &ConnParams, manifest: &Manifest) -> Result<Program> {
    let c = Client::connect(conn)?;
    let num: i32 = c
        .query("SELECT current_setting('server_version_num')::int", &[])?
        .first()
        .map_or(0, |r| r.get(0));
    let archive = parse_major(&manifest.pg_dump_version).unwrap_or(0);
    tools.find("pg_restore", server_major(num).max(archive))
}

/// A `dbname` argument that libpq cannot mistake for a connection string.
fn dbname_arg(name: &str) -> String {
    format!(
        "--dbname=dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// How a dump went into `pg_restore`.
pub struct Restored {
    /// Whether the dump was staged in a temporary file (`--jobs`).
    pub staged: bool,
    /// Rows per table counted in the archive as it streamed, `(schema, table, rows)`, when the
    /// archive was understood (see [`crate::postgres::archive`]).
    pub counted: Option<Vec<(String, String, u64)>>,
}

/// Restores the dump `file` of snapshot `id` into the database `conn` names; its bytes count as
/// done bytes of the repository's activity, whose total the caller sets.
#[allow(clippy::too_many_arguments)]
pub fn pg_restore_into(
    repo: &Repository,
    id: &Id,
    file: &str,
    conn: &ConnParams,
    pg_restore: &Program,
    opts: &RestoreDbOptions,
    extra_args: &[&str],
) -> Result<Restored> {
    let mut cmd = Command::new(&pg_restore.path);
    cmd.args(["--no-password", "--exit-on-error"]);
    cmd.arg(dbname_arg(&conn.dbname));
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if opts.no_owner {
        cmd.arg("--no-owner");
    }
    if opts.no_privileges {
        cmd.arg("--no-privileges");
    }
    cmd.args(opts.tables.iter().map(|t| format!("--table={t}")));
    cmd.args(opts.schemas.iter().map(|s| format!("--schema={s}")));
    cmd.args(extra_args);
    let _auth = conn.configure_command(&mut cmd)?;
    let spec = crate::repository::SnapshotRef::Id(*id);
    if opts.jobs > 1 {
        // Parallel restore seeks in the archive: stage it (decrypted; private to this user).
        let (mut staged, _tracked) = crate::cleanup::scratch_file("restore")?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, staged.as_file_mut());
            super::restore::dump_counted(repo, &spec, Some(file), &mut w)?;
            w.flush()
                .map_err(|e| Error::io("write", std::env::temp_dir(), e))?;
        }
        cmd.arg(format!("--jobs={}", opts.jobs)).arg(staged.path());
        feed::run(cmd, "pg_restore", None).map_err(|e| already_there(e, opts))?;
        return Ok(Restored {
            staged: true,
            counted: None,
        });
    }
    let mut counter = None;
    let mut feed_fn = |w: &mut dyn Write| -> Result<()> {
        let mut counting = CountingWriter {
            inner: w,
            counter: RowCounter::new(),
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut counting);
        super::restore::dump_counted(repo, &spec, Some(file), &mut w)?;
        w.flush().map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Error::BrokenPipe
            } else {
                Error::io("write", "pg_restore", e)
            }
        })?;
        drop(w);
        counter = Some(counting.counter);
        Ok(())
    };
    feed::run(cmd, "pg_restore", Some(&mut feed_fn)).map_err(|e| already_there(e, opts))?;
    Ok(Restored {
        staged: false,
        counted: counter.and_then(RowCounter::finish),
    })
}

/// pg_restore's failure, with the usual fix when it met objects that already exist and
/// `--clean` was not given.
fn already_there(e: Error, opts: &RestoreDbOptions) -> Error {
    match e {
        Error::Postgres(m) if !opts.clean && m.contains("already exists") => {
            Error::Postgres(format!(
                "{m}\nthe database already holds objects of the dump: add --clean to drop and \
                 recreate them, or restore into a new database with --create"
            ))
        }
        other => other,
    }
}

/// Row counts for the restore report: from the archive when it was counted as it streamed and
/// every table of it was restored (no `--table`/`--schema` selection), else by `count(*)`.
/// Counting in the stream spares a scan of every restored table (on a freshly loaded table the
/// first scan also sets hint bits on every page: 0.2-0.5 s for 5M rows).
pub fn restored_counts(
    client: &Client,
    counted: Option<Vec<(String, String, u64)>>,
    opts: &RestoreDbOptions,
) -> Result<Vec<TableCount>> {
    let selective = !opts.tables.is_empty() || !opts.schemas.is_empty();
    let Some(counted) = counted.filter(|_| !selective) else {
        return table_counts(client);
    };
    let by_name: std::collections::HashMap<(String, String), u64> =
        counted.into_iter().map(|(s, t, n)| ((s, t), n)).collect();
    // Tables the archive holds no data for (excluded data, or already in the database before
    // the restore) are counted by query.
    list_tables(client)?
        .into_iter()
        .map(|(schema, name)| {
            let rows = match by_name.get(&(schema.clone(), name.clone())) {
                Some(&n) => n as i64,
                None => count_rows(client, &schema, &name)?,
            };
            Ok(TableCount { schema, name, rows })
        })
        .collect()
}

/// `count(*)` of one table.
fn count_rows(client: &Client, schema: &str, name: &str) -> Result<i64> {
    Ok(client
        .query(
            &format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote_ident(schema),
                quote_ident(name)
            ),
            &[],
        )?
        .first()
        .map_or(0, |r| r.get(0)))
}

/// Every plain table of the database, `(schema, name)`, sorted.
fn list_tables(client: &Client) -> Result<Vec<(String, String)>> {
    Ok(client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
             ORDER BY 1, 2",
            &[],
        )?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Exact row counts of every plain table in the database `client` is connected to.
pub fn table_counts(client: &Client) -> Result<Vec<TableCount>> {
    let tables = list_tables(client)?;
    let mut out = Vec::with_capacity(tables.len());
    for (schema, name) in tables {
        let rows = count_rows(client, &schema, &name)?;
        out.push(TableCount { schema, name, rows });
    }
    Ok(out)
}

/// Applies `globals.sql` with `psql`; returns how many statements failed (roles that exist
/// already are the usual case, so failures are counted, not fatal).
fn apply_globals(repo: &Repository, id: &Id, conn: &ConnParams, tools: &Tools) -> Result<usize> {
    let psql = tools.find("psql", 0)?;
    let mut cmd = Command::new(&psql.path);
    cmd.args(["-X", "-q", "--no-password", "-f", "-"]);
    let _auth = conn.configure_command(&mut cmd)?;
    let spec = crate::repository::SnapshotRef::Id(*id);
    let mut feed_fn = |w: &mut dyn Write| -> Result<()> {
        super::restore::dump(repo, &spec, Some(GLOBALS_FILE), w).map(|_| ())
    };
    let done = feed::run(cmd, "psql (globals)", Some(&mut feed_fn))?;
    Ok(done.stderr.lines().filter(|l| l.contains("ERROR:")).count())
}

/// Restores snapshot `spec` into the database `conn` names.
pub fn restore_to_database(
    repo: &Repository,
    spec: &crate::repository::SnapshotRef,
    conn: &ConnParams,
    opts: &RestoreDbOptions,
) -> Result<RestoreDbOutcome> {
    let clock = Instant::now();
    let (id, _snap, manifest) = load_manifest(repo, spec)?;
    let db = pick_database(&manifest, opts.database.as_deref(), &id)?;
    repo.activity().start("restore", db.dump_bytes, 1);
    let globals_errors = if opts.globals {
        Some(apply_globals(
            repo,
            &id,
            &maintenance_params(conn),
            &opts.tools,
        )?)
    } else {
        None
    };
    if opts.create {
        create_database(conn, &conn.dbname)?;
    }
    let pg_restore = find_pg_restore(&opts.tools, conn, &manifest)?;
    let restored = match pg_restore_into(repo, &id, &db.file, conn, &pg_restore, opts, &[]) {
        Ok(r) => r,
        Err(e) if opts.create => return Err(failed_create(conn, db, opts.keep_partial, e)),
        Err(e) => return Err(e),
    };
    repo.activity().add_items(1);
    let staged = restored.staged;
    let tables = restored_counts(&Client::connect(conn)?, restored.counted, opts)?;
    Ok(RestoreDbOutcome {
        snapshot: id,
        database: db.name.clone(),
        target: conn.dbname.clone(),
        server: conn.server(),
        staged,
        globals_errors,
        tables,
        duration_secs: clock.elapsed().as_secs_f64(),
    })
}

/// A restore into a database it created failed: say which of the dump's tables are left
/// empty (or missing), and drop the half-made database unless asked to keep it, so that a
/// failed restore never leaves a database that looks restored.
fn failed_create(conn: &ConnParams, db: &DatabaseManifest, keep: bool, e: Error) -> Error {
    let have: Option<std::collections::HashMap<(String, String), i64>> = Client::connect(conn)
        .and_then(|c| table_counts(&c))
        .ok()
        .map(|t| {
            t.into_iter()
                .map(|t| ((t.schema, t.name), t.rows))
                .collect()
        });
    let tables = match &have {
        Some(have) => {
            let empty: Vec<String> = db
                .tables
                .iter()
                // Tables that had rows at the source (or may have had).
                .filter(|t| t.kind == "table" && t.rows.or(t.row_estimate).unwrap_or(1) > 0)
                .filter(|t| {
                    have.get(&(t.schema.clone(), t.name.clone()))
                        .is_none_or(|&n| n == 0)
                })
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect();
            match empty.len() {
                0 => "every table of the dump has rows".to_string(),
                n if n <= 20 => format!("{n} tables are empty or missing: {}", empty.join(", ")),
                n => format!(
                    "{n} tables are empty or missing: {}, and {} more",
                    empty[..20].join(", "),
                    n - 20
                ),
            }
        }
        None => "its tables could not be listed".to_string(),
    };
    let fate = if keep {
        format!(
            "database {:?} was kept as it is (--keep-partial)",
            conn.dbname
        )
    } else {
        match drop_database(conn, &conn.dbname) {
            Ok(()) => format!(
                "database {:?} was dropped (--keep-partial keeps it)",
                conn.dbname
            ),
            Err(d) => format!("database {:?} could not be dropped: {d}", conn.dbname),
        }
    };
    Error::Source(format!("the restore failed: {e}; {tables}; {fate}"))
}

/// Globals are applied through the server's `postgres` database: the target may not exist yet.
fn maintenance_params(conn: &ConnParams) -> ConnParams {
    conn.with_dbname("postgres")
}
