//! `sbk verify <id> --scratch URL`: a restore drill. Each database of the snapshot is restored
//! into a fresh scratch database, its tables are compared with the manifest (exact counts where
//! `--count-rows` recorded them), `ANALYZE` runs, and the scratch database is dropped whatever
//! happened. Owners and privileges are not restored: the drill checks data, and the scratch
//! server need not have the source's roles.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::postgres::client::Client;
use crate::postgres::conn::ConnParams;
use crate::postgres::manifest::DatabaseManifest;
use crate::postgres::tools::Tools;
use crate::repository::Repository;

use super::restore_postgres::{
    create_database, drop_database, find_pg_restore, pg_restore_into, table_counts,
    RestoreDbOptions,
};
use super::snapshot_postgres::load_manifest;

#[derive(Clone, Debug, Serialize)]
pub struct TableCheck {
    pub schema: String,
    pub name: String,
    /// Exact count recorded at dump time, if any.
    pub expected: Option<i64>,
    pub estimate: Option<i64>,
    /// Rows after the restore (`None`: the table is missing).
    pub restored: Option<i64>,
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatabaseCheck {
    pub database: String,
    pub scratch_database: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub restore_secs: f64,
    pub analyze_secs: f64,
    pub tables: Vec<TableCheck>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyOutcome {
    pub snapshot: Id,
    pub passed: bool,
    pub databases: Vec<DatabaseCheck>,
    pub duration_secs: f64,
}

/// Compares the manifest's tables with what the restore holds. A table the manifest lists but
/// the dump left out (`--exclude-table`, `--schema`) is only expected when its data was dumped,
/// which the archive's table of contents says.
fn compare(
    db: &DatabaseManifest,
    restored: &[super::restore_postgres::TableCount],
    dumped: &[(String, String)],
) -> Vec<TableCheck> {
    db.tables
        .iter()
        .filter(|t| t.kind == "table")
        .filter(|t| dumped.iter().any(|(s, n)| *s == t.schema && *n == t.name))
        .map(|t| {
            let got = restored
                .iter()
                .find(|r| r.schema == t.schema && r.name == t.name)
                .map(|r| r.rows);
            let ok = match (t.rows, got) {
                (_, None) => false,
                (Some(want), Some(have)) => want == have,
                (None, Some(_)) => true,
            };
            TableCheck {
                schema: t.schema.clone(),
                name: t.name.clone(),
                expected: t.rows,
                estimate: t.row_estimate,
                restored: got,
                ok,
            }
        })
        .collect()
}

/// Tables whose data the dump holds, from `pg_restore --list` (reads only the archive's table
/// of contents).
fn dumped_tables(
    repo: &Repository,
    id: &Id,
    file: &str,
    pg_restore: &crate::postgres::tools::Program,
) -> Result<Vec<(String, String)>> {
    let mut cmd = std::process::Command::new(&pg_restore.path);
    cmd.arg("--list");
    let spec = crate::repository::SnapshotRef::Id(*id);
    let mut feed_fn = |w: &mut dyn std::io::Write| -> Result<()> {
        super::restore::dump(repo, &spec, Some(file), w).map(|_| ())
    };
    let out = crate::postgres::feed::run(cmd, "pg_restore --list", Some(&mut feed_fn))?;
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let rest = l.split_once(" TABLE DATA ")?.1;
            let mut f = rest.split(' ');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect())
}

fn check_database(
    repo: &Repository,
    id: &Id,
    db: &DatabaseManifest,
    scratch: &ConnParams,
    pg_restore: &crate::postgres::tools::Program,
    jobs: usize,
) -> DatabaseCheck {
    let name = format!(
        "sbk_verify_{}_{}",
        id.short(),
        hex::encode(rand_bytes::<3>())
    );
    let target = scratch.with_dbname(&name);
    let mut check = DatabaseCheck {
        database: db.name.clone(),
        scratch_database: name.clone(),
        passed: false,
        error: None,
        restore_secs: 0.0,
        analyze_secs: 0.0,
        tables: Vec::new(),
    };
    let result = (|| -> Result<()> {
        create_database(scratch, &name)?;
        let clock = Instant::now();
        let opts = RestoreDbOptions {
            jobs,
            no_owner: true,
            no_privileges: true,
            ..Default::default()
        };
        pg_restore_into(repo, id, &db.file, &target, pg_restore, &opts, &[])?;
        check.restore_secs = clock.elapsed().as_secs_f64();
        let client = Client::connect(&target)?;
        let restored = table_counts(&client)?;
        let dumped = dumped_tables(repo, id, &db.file, pg_restore)?;
        check.tables = compare(db, &restored, &dumped);
        let clock = Instant::now();
        client.batch("ANALYZE")?;
        check.analyze_secs = clock.elapsed().as_secs_f64();
        Ok(())
    })();
    let dropped = drop_database(scratch, &name);
    match (result, dropped) {
        (Err(e), _) | (Ok(()), Err(e)) => check.error = Some(e.to_string()),
        (Ok(()), Ok(())) => check.passed = check.tables.iter().all(|t| t.ok),
    }
    check
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    crate::repository::getrandom(&mut b);
    b
}

/// Runs the drill for every database of snapshot `spec` (or only `database`).
pub fn verify(
    repo: &Repository,
    spec: &crate::repository::SnapshotRef,
    scratch: &ConnParams,
    database: Option<&str>,
    jobs: usize,
    tools: &Tools,
) -> Result<VerifyOutcome> {
    let clock = Instant::now();
    let (id, _snap, manifest) = load_manifest(repo, spec)?;
    let pg_restore = find_pg_restore(tools, scratch, &manifest)?;
    let dbs: Vec<&DatabaseManifest> = match database {
        Some(_) => vec![super::restore_postgres::pick_database(
            &manifest, database, &id,
        )?],
        None => manifest.databases.iter().collect(),
    };
    repo.activity().start(
        "restore",
        dbs.iter().map(|d| d.dump_bytes).sum(),
        dbs.len() as u64,
    );
    let databases: Vec<DatabaseCheck> = dbs
        .into_iter()
        .map(|db| {
            let c = check_database(repo, &id, db, scratch, &pg_restore, jobs);
            repo.activity().add_items(1);
            c
        })
        .collect();
    Ok(VerifyOutcome {
        snapshot: id,
        passed: !databases.is_empty() && databases.iter().all(|d| d.passed),
        databases,
        duration_secs: clock.elapsed().as_secs_f64(),
    })
}
