//! `manifest.json`: what a PostgreSQL snapshot holds, gathered from the server's catalogue, so a
//! restore can be checked against it (`sbk verify`) without the original server.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::client::Client;
use crate::error::Result;

/// Manifest JSON version.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's file name in a snapshot.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The cluster globals' file name in a snapshot.
pub const GLOBALS_FILE: &str = "globals.sql";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub server_version: String,
    pub server_version_num: i32,
    pub host: String,
    pub port: u16,
    pub pg_dump_version: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    pub options: DumpOptions,
    /// Whether `globals.sql` is in the snapshot, and whether it lacks role passwords (a
    /// non-superuser can only dump roles without them).
    pub globals: bool,
    #[serde(default)]
    pub globals_without_role_passwords: bool,
    pub databases: Vec<DatabaseManifest>,
}

/// The dump options that shaped the snapshot (they decide which tables hold data).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DumpOptions {
    pub schemas: Vec<String>,
    pub exclude_tables: Vec<String>,
    pub exclude_table_data: Vec<String>,
    pub count_rows: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatabaseManifest {
    pub name: String,
    /// The dump's file name in the snapshot (`<name>.pgdump`).
    pub file: String,
    pub size_bytes: i64,
    pub dump_bytes: u64,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    pub schemas: Vec<String>,
    pub extensions: Vec<Extension>,
    pub tables: Vec<Table>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Extension {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `table`, `partitioned table` or `materialized view`.
    pub kind: String,
    /// Table, indexes and TOAST, in bytes, from the catalogue's page counts (as of the last
    /// VACUUM or ANALYZE): reading them takes no lock, so a locked table cannot stall sbk
    /// before pg_dump starts.
    pub size_bytes: i64,
    /// The planner's estimate (`reltuples`), absent when the table was never analysed.
    pub row_estimate: Option<i64>,
    /// The exact count in the dump's own snapshot (`--count-rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
}

/// The database's file name in a snapshot: `<db>.pgdump`, with `%`, `/` and `\\` (legal in
/// database names, not in file names) percent-encoded.
pub fn dump_file_name(db: &str) -> String {
    let mut name = String::with_capacity(db.len() + 7);
    for c in db.chars() {
        match c {
            '%' | '/' | '\\' | '\0' => name.push_str(&format!("%{:02X}", c as u32)),
            c => name.push(c),
        }
    }
    name + ".pgdump"
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// Catalogue facts about the database `client` is connected to (rows not counted).
pub fn describe_database(client: &Client, name: &str) -> Result<DatabaseManifest> {
    let size: i64 = client
        .query("SELECT pg_database_size(current_database())", &[])?
        .first()
        .map_or(0, |r| r.get(0));
    let schemas = client
        .query(
            &format!("SELECT n.nspname::text FROM pg_namespace n WHERE {USER_SCHEMAS} ORDER BY 1"),
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let extensions = client
        .query(
            "SELECT extname::text, extversion FROM pg_extension ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            version: r.get(1),
        })
        .collect();
    let tables = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text,
                        CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                                       ELSE 'materialized view' END,
                        ((c.relpages::bigint + coalesce(t.relpages, 0)
                          + coalesce((SELECT sum(i.relpages) FROM pg_index x
                                      JOIN pg_class i ON i.oid = x.indexrelid
                                      WHERE x.indrelid = c.oid), 0))
                         * current_setting('block_size')::bigint)::bigint,
                        c.reltuples::float8
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
                 WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMAS}
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                   AND d.objid = c.oid AND d.deptype = 'e')
                 ORDER BY 1, 2"
            ),
            &[],
        )?
        .iter()
        .map(|r| {
            let estimate: f64 = r.get(4);
            Table {
                schema: r.get(0),
                name: r.get(1),
                kind: r.get(2),
                size_bytes: r.get(3),
                row_estimate: (estimate >= 0.0).then_some(estimate as i64),
                rows: None,
            }
        })
        .collect();
    let now = chrono::Local::now().fixed_offset();
    Ok(DatabaseManifest {
        name: name.to_string(),
        file: dump_file_name(name),
        size_bytes: size,
        dump_bytes: 0,
        started: now,
        finished: now,
        schemas,
        extensions,
        tables,
    })
}

/// Exact row counts of the plain tables in `tables` (`SELECT count(*) FROM ONLY ...`), in the
/// client's current transaction.
pub fn count_rows(client: &Client, tables: &mut [Table]) -> Result<()> {
    use super::client::quote_ident;
    for t in tables.iter_mut().filter(|t| t.kind == "table") {
        let sql = format!(
            "SELECT count(*) FROM ONLY {}.{}",
            quote_ident(&t.schema),
            quote_ident(&t.name)
        );
        t.rows = client.query(&sql, &[])?.first().map(|r| r.get(0));
    }
    Ok(())
}
