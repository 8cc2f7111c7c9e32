//! What the database of a Supabase project says about it (versions, extensions, migrations,
//! buckets), and its roles.

use super::*;

/// What the database says about the project.
pub(super) struct DatabaseFacts {
    pub(super) server_version: String,
    pub(super) version_num: i32,
    pub(super) extensions: Vec<ExtensionInfo>,
    pub(super) auth_migration: Option<String>,
    pub(super) storage_migration: Option<String>,
    pub(super) buckets: Vec<BucketInfo>,
}

pub(super) fn database_facts(client: &Client) -> Result<DatabaseFacts> {
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
pub(super) fn dump_roles(conn: &ConnParams, tools: &Tools, major: u32) -> Result<String> {
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
