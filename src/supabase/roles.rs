//! The roles file of a Supabase snapshot: `pg_dumpall --roles-only --no-role-passwords`, with
//! the roles the platform reserves left out, as the Supabase CLI's `db dump --role-only` does
//! (its `reservedRoles`, `supabase/cli` `internal/db/dump`): those exist in every project, and
//! a project's `postgres` may not create or alter them.

/// Roles every Supabase project has (exact names).
const RESERVED: &[&str] = &[
    "anon",
    "authenticated",
    "authenticator",
    "dashboard_user",
    "pgbouncer",
    "postgres",
    "service_role",
    "pgsodium_keyholder",
    "pgsodium_keyiduser",
    "pgsodium_keymaker",
    "pgtle_admin",
];
/// Prefixes of reserved roles (`supabase_admin`, `supabase_auth_admin`, `cli_login_...`).
const RESERVED_PREFIXES: &[&str] = &["supabase_", "cli_login_"];

/// Whether the platform owns the role `name`.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Quoted identifiers in a line, unquoted (`"a""b"` is `a"b`).
fn quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut ident = String::new();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    ident.push('"');
                } else {
                    break;
                }
            } else {
                ident.push(c);
            }
        }
        out.push(ident);
    }
    out
}

/// Keeps the statements of a `pg_dumpall --roles-only --quote-all-identifiers` script that a
/// project's `postgres` may run: `CREATE ROLE`/`ALTER ROLE` of roles that are not reserved,
/// grants of memberships to them (not to reserved roles), and no psql meta-commands.
/// `NOSUPERUSER`/`NOREPLICATION` are dropped (a non-superuser may not say them).
pub fn filter_roles(script: &str) -> String {
    let mut out = String::new();
    for line in script.lines() {
        let keep = if line.starts_with('\\') || line.starts_with("--") || line.trim().is_empty() {
            false
        } else if line.starts_with("CREATE ROLE ") || line.starts_with("ALTER ROLE ") {
            quoted(line).first().is_some_and(|r| !is_reserved(r))
        } else if line.starts_with("GRANT ") {
            // GRANT "member_of" TO "grantee" [WITH ...] [GRANTED BY "x"]
            let q = quoted(line);
            q.len() >= 2 && !is_reserved(&q[1])
        } else {
            line.starts_with("SET ") || line.starts_with("RESET ")
        };
        if keep {
            let cleaned = line
                .replace(" NOSUPERUSER", "")
                .replace(" NOREPLICATION", "");
            out.push_str(&cleaned);
            out.push('\n');
        }
    }
    out
}

/// The statements of a filtered roles file, one per line.
pub fn statements(roles: &str) -> impl Iterator<Item = &str> {
    roles.lines().filter(|l| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_roles_and_meta_commands_are_left_out() {
        let dump = "\\restrict abc\nSET default_transaction_read_only = off;\n--\n-- Roles\n--\n\
CREATE ROLE \"anon\";\nALTER ROLE \"anon\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\n\
CREATE ROLE \"app_reader\";\nALTER ROLE \"app_reader\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;\n\
CREATE ROLE \"supabase_auth_admin\";\n\
GRANT \"authenticated\" TO \"app_reader\" GRANTED BY \"postgres\";\n\
GRANT \"app_reader\" TO \"authenticator\" GRANTED BY \"postgres\";\n\\unrestrict abc\n";
        let out = filter_roles(dump);
        assert_eq!(
            out,
            "SET default_transaction_read_only = off;\nCREATE ROLE \"app_reader\";\n\
ALTER ROLE \"app_reader\" WITH INHERIT NOCREATEROLE NOCREATEDB LOGIN NOBYPASSRLS;\n\
GRANT \"authenticated\" TO \"app_reader\" GRANTED BY \"postgres\";\n"
        );
    }

    #[test]
    fn quoted_identifiers_unescape() {
        assert_eq!(quoted(r#"CREATE ROLE "a""b";"#), vec!["a\"b"]);
        assert!(is_reserved("supabase_storage_admin"));
        assert!(!is_reserved("app"));
    }
}
