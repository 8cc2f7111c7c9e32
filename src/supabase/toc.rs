//! Which entries of a Supabase database dump to restore into another project.
//!
//! A new project already has the platform's schemas (`auth`, `storage`, `realtime`...), their
//! tables, functions, triggers, grants and event triggers, owned by roles the project's
//! `postgres` is not (`supabase_admin`, `supabase_auth_admin`...). Replaying those fails or
//! collides; skipping the managed schemas whole (what the Supabase CLI's dump does) loses the
//! user's own policies and triggers on `auth.users` or `storage.objects` and the user data in
//! those tables. So each table-of-contents entry is judged on its own:
//!
//! | entry | verdict |
//! |---|---|
//! | `EXTENSION`, its comment | skipped: the extension step creates what is missing |
//! | `EVENT TRIGGER` | skipped: the platform's |
//! | data (`TABLE DATA`, `SEQUENCE SET`) in a user schema, or user data in `auth`/`storage` | kept |
//! | data of platform bookkeeping (migration tables, `realtime`, `vault`, multipart uploads...) | skipped |
//! | anything else owned by a platform role | skipped |
//! | an object in a managed schema that the target already has (by name) | skipped |
//! | the rest (the user's tables, functions, policies, triggers, grants; their objects in managed schemas) | kept |
//!
//! What the target has is read from its catalogue first ([`TargetFacts`]), so a user-made
//! policy on `storage.objects` is restored while the platform's own are not.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::postgres::archive::TocEntry;

/// Schemas the platform manages (the Supabase CLI's `InternalSchemas`; `*` ends a prefix).
const MANAGED_SCHEMAS: &[&str] = &[
    "information_schema",
    "pg_*",
    "_analytics",
    "_realtime",
    "_supavisor",
    "auth",
    "etl",
    "extensions",
    "pgbouncer",
    "realtime",
    "storage",
    "supabase_functions",
    "supabase_migrations",
    "cron",
    "dbdev",
    "graphql",
    "graphql_public",
    "net",
    "pgmq",
    "pgsodium",
    "pgsodium_masks",
    "pgtle",
    "repack",
    "tiger",
    "tiger_data",
    "timescaledb_*",
    "_timescaledb_*",
    "topology",
    "vault",
];

/// Managed schemas whose data is the platform's state, not the user's (the CLI's data dump
/// leaves these out; `auth`, `storage`, `cron`, `net`, `pgmq`, `supabase_functions` stay).
const STATE_SCHEMAS: &[&str] = &[
    "graphql",
    "graphql_public",
    "pgsodium",
    "pgsodium_masks",
    "pgtle",
    "repack",
    "tiger",
    "tiger_data",
    "timescaledb_*",
    "_timescaledb_*",
    "topology",
    "vault",
    "etl",
    "extensions",
    "pgbouncer",
    "realtime",
    "supabase_migrations",
    "_analytics",
    "_realtime",
    "_supavisor",
];

/// Platform bookkeeping tables in schemas whose other data is the user's.
const STATE_TABLES: &[(&str, &str)] = &[
    ("auth", "schema_migrations"),
    ("storage", "migrations"),
    ("storage", "s3_multipart_uploads"),
    ("storage", "s3_multipart_uploads_parts"),
    ("supabase_functions", "migrations"),
];

fn matches(list: &[&str], schema: &str) -> bool {
    list.iter().any(|m| match m.strip_suffix('*') {
        Some(prefix) => schema.starts_with(prefix),
        None => *m == schema,
    })
}

/// Whether `schema` is one the platform manages.
pub fn is_managed_schema(schema: &str) -> bool {
    matches(MANAGED_SCHEMAS, schema)
}

/// Whether `role` is a platform role that owns platform objects.
pub fn is_platform_owner(role: &str) -> bool {
    role.starts_with("supabase_")
        || role.starts_with("pgsodium_")
        || matches!(role, "dashboard_user" | "pgbouncer" | "pgtle_admin")
}

/// What the target database already has, by name.
#[derive(Clone, Debug, Default)]
pub struct TargetFacts {
    pub schemas: HashSet<String>,
    /// (schema, name) of relations (tables, views, sequences, indexes), types and functions.
    pub objects: HashSet<(String, String)>,
    /// (schema, table, name) of policies, triggers, rules and constraints.
    pub table_objects: HashSet<(String, String, String)>,
    /// Publications.
    pub publications: HashSet<String>,
}

/// Why an entry is not restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Extensions are created by their own step.
    Extension,
    /// Event triggers belong to the platform.
    EventTrigger,
    /// The platform's bookkeeping data (migration tables, realtime, vault...).
    PlatformState,
    /// Owned by a platform role.
    PlatformOwned,
    /// The target already has an object of this name in a managed schema.
    OnTarget,
}

impl Skip {
    pub fn describe(self) -> &'static str {
        match self {
            Skip::Extension => "extensions (created by the extension step)",
            Skip::EventTrigger => "event triggers (the platform's)",
            Skip::PlatformState => "platform bookkeeping data",
            Skip::PlatformOwned => "objects owned by platform roles",
            Skip::OnTarget => "managed-schema objects the target already has",
        }
    }
}

/// The verdict on every entry.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    /// Dump IDs to restore, in archive order.
    #[serde(skip)]
    pub keep: Vec<i64>,
    /// Entries kept, by kind (`TABLE DATA`: 12).
    pub kept: BTreeMap<String, usize>,
    /// Entries skipped, by reason, each as `DESC schema name`.
    pub skipped: BTreeMap<Skip, Vec<String>>,
}

impl Plan {
    /// The `pg_restore --use-list` file.
    pub fn list_file(&self) -> String {
        self.keep.iter().map(|id| format!("{id};\n")).collect()
    }

    pub fn skipped_count(&self) -> usize {
        self.skipped.values().map(Vec::len).sum()
    }
}

/// `table name` tags (policies, triggers, rules, constraints) split at the first space.
fn table_and_name(tag: &str) -> Option<(&str, &str)> {
    tag.split_once(' ')
}

/// Judges one entry (see the module documentation).
pub fn judge(e: &TocEntry, target: &TargetFacts) -> Option<Skip> {
    let ns = e.namespace.as_str();
    match e.desc.as_str() {
        "EXTENSION" => return Some(Skip::Extension),
        "COMMENT" if e.tag.starts_with("EXTENSION ") => return Some(Skip::Extension),
        "EVENT TRIGGER" => return Some(Skip::EventTrigger),
        "TABLE DATA" | "SEQUENCE SET" | "MATERIALIZED VIEW DATA" => {
            return if matches(STATE_SCHEMAS, ns)
                || STATE_TABLES.iter().any(|(s, t)| *s == ns && *t == e.tag)
            {
                Some(Skip::PlatformState)
            } else {
                None
            };
        }
        _ => {}
    }
    // Entries about a schema itself: its creation, comment and grants.
    let schema_named = match e.desc.as_str() {
        "SCHEMA" => Some(e.tag.as_str()),
        "COMMENT" | "ACL" => e.tag.strip_prefix("SCHEMA "),
        _ => None,
    };
    if let Some(s) = schema_named {
        if is_managed_schema(s) && target.schemas.contains(s) {
            return Some(Skip::OnTarget);
        }
        if is_platform_owner(&e.owner) {
            return Some(Skip::PlatformOwned);
        }
        return None;
    }
    if e.desc == "PUBLICATION" {
        return target
            .publications
            .contains(&e.tag)
            .then_some(Skip::OnTarget);
    }
    if e.desc == "PUBLICATION TABLE" && is_managed_schema(ns) {
        return Some(Skip::OnTarget);
    }
    if is_platform_owner(&e.owner) && !matches!(e.desc.as_str(), "POLICY" | "TRIGGER" | "RULE") {
        // A policy's or trigger's owner is its table's: judged by name below.
        return Some(Skip::PlatformOwned);
    }
    if !is_managed_schema(ns) {
        return None;
    }
    // An object in a managed schema: the target's own, or one the user added.
    let exists = match e.desc.as_str() {
        "POLICY" | "TRIGGER" | "RULE" | "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" => {
            table_and_name(&e.tag).is_some_and(|(t, n)| {
                target
                    .table_objects
                    .contains(&(ns.to_string(), t.to_string(), n.to_string()))
            })
        }
        "COMMENT" | "ACL" => {
            // `COMMENT`/`ACL` tags name their object: `TABLE users`, `FUNCTION uid()`.
            let object = e.tag.split_once(' ').map_or(e.tag.as_str(), |(_, o)| o);
            let name = object.split('(').next().unwrap_or(object);
            target.objects.contains(&(ns.to_string(), name.to_string()))
        }
        _ => {
            let name = e.tag.split('(').next().unwrap_or(&e.tag);
            target.objects.contains(&(ns.to_string(), name.to_string()))
        }
    };
    exists.then_some(Skip::OnTarget)
}

/// Judges every entry.
pub fn plan(entries: &[TocEntry], target: &TargetFacts) -> Plan {
    let mut p = Plan::default();
    for e in entries {
        match judge(e, target) {
            None => {
                p.keep.push(e.dump_id);
                *p.kept.entry(e.desc.clone()).or_default() += 1;
            }
            Some(why) => {
                let ns = if e.namespace.is_empty() {
                    String::new()
                } else {
                    format!("{} ", e.namespace)
                };
                p.skipped
                    .entry(why)
                    .or_default()
                    .push(format!("{} {ns}{}", e.desc, e.tag));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(desc: &str, ns: &str, tag: &str, owner: &str) -> TocEntry {
        TocEntry {
            dump_id: 1,
            desc: desc.into(),
            namespace: ns.into(),
            tag: tag.into(),
            owner: owner.into(),
        }
    }

    fn target() -> TargetFacts {
        let mut t = TargetFacts::default();
        for s in ["auth", "storage", "public", "extensions"] {
            t.schemas.insert(s.into());
        }
        t.objects.insert(("auth".into(), "users".into()));
        t.objects.insert(("auth".into(), "uid".into()));
        t.table_objects
            .insert(("storage".into(), "objects".into(), "platform_policy".into()));
        t.publications.insert("supabase_realtime".into());
        t
    }

    #[test]
    fn verdicts() {
        let t = target();
        let cases = [
            (
                e("SCHEMA", "", "auth", "supabase_admin"),
                Some(Skip::OnTarget),
            ),
            (e("SCHEMA", "", "app", "postgres"), None),
            (
                e("ACL", "", "SCHEMA auth", "supabase_admin"),
                Some(Skip::OnTarget),
            ),
            (
                e("TABLE", "auth", "users", "supabase_auth_admin"),
                Some(Skip::PlatformOwned),
            ),
            (
                e("TABLE DATA", "auth", "users", "supabase_auth_admin"),
                None,
            ),
            (
                e(
                    "TABLE DATA",
                    "auth",
                    "schema_migrations",
                    "supabase_auth_admin",
                ),
                Some(Skip::PlatformState),
            ),
            (
                e(
                    "TABLE DATA",
                    "storage",
                    "migrations",
                    "supabase_storage_admin",
                ),
                Some(Skip::PlatformState),
            ),
            (
                e("TABLE DATA", "vault", "secrets", "supabase_admin"),
                Some(Skip::PlatformState),
            ),
            (e("TABLE DATA", "public", "todos", "postgres"), None),
            (
                e("FUNCTION", "auth", "uid()", "supabase_auth_admin"),
                Some(Skip::PlatformOwned),
            ),
            (
                e("FUNCTION", "auth", "uid()", "postgres"),
                Some(Skip::OnTarget),
            ),
            (e("FUNCTION", "auth", "my_hook()", "postgres"), None),
            (
                e(
                    "EVENT TRIGGER",
                    "",
                    "issue_pg_graphql_access",
                    "supabase_admin",
                ),
                Some(Skip::EventTrigger),
            ),
            (e("EXTENSION", "", "pgcrypto", ""), Some(Skip::Extension)),
            (
                e("COMMENT", "", "EXTENSION pgcrypto", ""),
                Some(Skip::Extension),
            ),
            (
                e(
                    "POLICY",
                    "storage",
                    "objects platform_policy",
                    "supabase_storage_admin",
                ),
                Some(Skip::OnTarget),
            ),
            (
                e(
                    "POLICY",
                    "storage",
                    "objects user_uploads",
                    "supabase_storage_admin",
                ),
                None,
            ),
            (
                e(
                    "TRIGGER",
                    "auth",
                    "users on_auth_user_created",
                    "supabase_auth_admin",
                ),
                None,
            ),
            (e("POLICY", "public", "todos own_rows", "postgres"), None),
            (
                e(
                    "DEFAULT ACL",
                    "public",
                    "DEFAULT PRIVILEGES FOR TABLES",
                    "supabase_admin",
                ),
                Some(Skip::PlatformOwned),
            ),
            (
                e("PUBLICATION", "", "supabase_realtime", "postgres"),
                Some(Skip::OnTarget),
            ),
            (
                e("PUBLICATION TABLE", "public", "supabase_realtime todos", ""),
                None,
            ),
        ];
        for (entry, want) in cases {
            assert_eq!(judge(&entry, &t), want, "{entry:?}");
        }
    }

    #[test]
    fn list_file_names_kept_ids_in_order() {
        let mut a = e("TABLE", "public", "a", "postgres");
        a.dump_id = 7;
        let mut b = e("EVENT TRIGGER", "", "x", "supabase_admin");
        b.dump_id = 8;
        let mut c = e("TABLE DATA", "public", "a", "postgres");
        c.dump_id = 9;
        let p = plan(&[a, b, c], &target());
        assert_eq!(p.list_file(), "7;\n9;\n");
        assert_eq!(p.skipped_count(), 1);
    }
}
