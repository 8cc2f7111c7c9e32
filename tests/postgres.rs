//! `snapshot postgres`, `restore --to-database` and `verify` against real, throwaway PostgreSQL
//! clusters (see `common/pg.rs`).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::{ok, text, Cluster, ClusterOptions};
use common::TestRepo;

/// A schema with many types and object kinds, two schemas and two roles.
const RICH_SCHEMA: &str = r#"
CREATE ROLE app_reader;
CREATE ROLE app_owner;
CREATE EXTENSION hstore;
CREATE SCHEMA billing AUTHORIZATION app_owner;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE ticket_seq START 1000;
CREATE TABLE people (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    photo bytea,
    attrs jsonb,
    tags text[],
    feeling mood,
    balance numeric(20, 6),
    seen timestamptz,
    extra hstore,
    ticket int DEFAULT nextval('ticket_seq'),
    doc oid
);
INSERT INTO people (name, photo, attrs, tags, feeling, balance, seen, extra)
SELECT 'person ' || i, decode(md5(i::text), 'hex'), jsonb_build_object('i', i, 'sq', i * i),
       ARRAY['t' || i % 7, 'u' || i % 3], (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood,
       i * 1.000001, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute',
       hstore('k', i::text)
FROM generate_series(1, 5000) i;
UPDATE people SET doc = lo_from_bytea(0, convert_to('large object ' || id, 'UTF8')) WHERE id <= 3;
CREATE TABLE billing.invoices (id int PRIMARY KEY, person bigint REFERENCES people(id), total numeric);
INSERT INTO billing.invoices SELECT i, i, i * 10 FROM generate_series(1, 2000) i;
ALTER TABLE billing.invoices OWNER TO app_owner;
CREATE TABLE audit_log (at timestamptz DEFAULT now(), what text);
CREATE FUNCTION log_people() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_log (what) VALUES (TG_OP || ' ' || NEW.name); RETURN NEW; END $$;
CREATE TRIGGER people_audit AFTER INSERT ON people FOR EACH ROW EXECUTE FUNCTION log_people();
CREATE VIEW happy_people AS SELECT id, name FROM people WHERE feeling = 'happy';
CREATE MATERIALIZED VIEW mood_counts AS SELECT feeling, count(*) FROM people GROUP BY 1;
ALTER TABLE people ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON people FOR SELECT TO app_reader USING (name LIKE 'person 1%');
GRANT SELECT ON people TO app_reader;
CREATE TABLE scratch_junk (x int);
INSERT INTO scratch_junk SELECT generate_series(1, 100);
CREATE TABLE bulky_cache (x text);
INSERT INTO bulky_cache SELECT md5(i::text) FROM generate_series(1, 100) i;
ANALYZE;
"#;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn many_types_round_trip_verify_and_tamper() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql("src", RICH_SCHEMA);
    let repo = TestRepo::new();
    let snap = json(&ok(
        repo.run(&[
            "snapshot",
            "postgres",
            &pg.url("src"),
            "--count-rows",
            "--tag",
            "nightly",
            "--json",
        ]),
        "snapshot postgres",
    ));
    assert_eq!(snap["source"]["kind"], "postgres");
    assert_eq!(snap["source"]["databases"], serde_json::json!(["src"]));
    assert_eq!(snap["source"]["port"], pg.port);
    let id = snap["id"].as_str().unwrap().to_string();

    // The manifest: versions, tables with exact counts.
    let manifest: serde_json::Value =
        serde_json::from_slice(&ok(repo.run(&["dump", &id, "manifest.json"]), "dump").stdout)
            .unwrap();
    assert!(manifest["server_version_num"].as_i64().unwrap() >= 100000);
    let tables = manifest["databases"][0]["tables"].as_array().unwrap();
    let people = tables.iter().find(|t| t["name"] == "people").unwrap();
    assert_eq!(people["rows"], 5000);
    assert!(manifest["databases"][0]["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "hstore"));
    let globals = text(&ok(repo.run(&["dump", &id, "globals.sql"]), "dump").stdout);
    assert!(globals.contains("CREATE ROLE app_owner"), "{globals}");

    // Restore into a new database: schema and every row equal.
    let out = ok(
        repo.run(&[
            "restore",
            &id,
            "--to-database",
            &pg.url("copy"),
            "--create",
            "--json",
        ]),
        "restore --to-database",
    );
    let restored = json(&out);
    assert!(restored["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "people" && t["rows"] == 5000));
    // The reported counts (read from the archive as it streamed) are the restored tables'.
    for t in restored["tables"].as_array().unwrap() {
        let (schema, name) = (t["schema"].as_str().unwrap(), t["name"].as_str().unwrap());
        let sql = format!(
            "SELECT count(*) FROM ONLY {}.{}",
            quote(schema),
            quote(name)
        );
        assert_eq!(
            pg.psql("copy", &sql).trim(),
            t["rows"].to_string(),
            "{schema}.{name}"
        );
    }
    assert_eq!(pg.schema_text("src"), pg.schema_text("copy"));
    assert_eq!(pg.table_digests("src"), pg.table_digests("copy"));
    assert_eq!(
        pg.psql(
            "copy",
            "SELECT convert_from(lo_get(doc), 'UTF8') FROM people WHERE id = 2"
        )
        .trim(),
        "large object 2"
    );
    // A restore into an existing database without --create/--clean fails clearly.
    let out = repo.run(&["restore", &id, "--to-database", &pg.url("copy")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pg_restore failed")
            && text(&out.stderr).contains("add --clean to drop and recreate them"),
        "{}",
        text(&out.stderr)
    );
    // --create into it is refused before anything is done, with the usual fix.
    let out = repo.run(&["restore", &id, "--to-database", &pg.url("copy"), "--create"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("database \"copy\" already exists")
            && text(&out.stderr).contains("add --clean"),
        "{}",
        text(&out.stderr)
    );
    assert!(pg
        .psql(
            "postgres",
            "SELECT 1 FROM pg_database WHERE datname = 'copy'"
        )
        .contains('1'));
    // --clean replaces it; --jobs stages the dump and still restores it whole.
    ok(
        repo.run(&[
            "restore",
            &id,
            "--to-database",
            &pg.url("copy"),
            "--clean",
            "--jobs",
            "2",
        ]),
        "restore --clean --jobs 2",
    );
    assert_eq!(pg.table_digests("src"), pg.table_digests("copy"));

    // The restore drill passes and leaves no scratch database behind.
    let out = ok(
        repo.run(&["verify", &id, "--scratch", &pg.url("postgres"), "--json"]),
        "verify",
    );
    let v = json(&out);
    assert_eq!(v["passed"], true, "{v}");
    let checked = v["databases"][0]["tables"].as_array().unwrap();
    assert!(checked
        .iter()
        .any(|t| t["name"] == "invoices" && t["restored"] == 2000));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'sbk_verify%'"
        )
        .trim(),
        "0"
    );

    // A tampered pack: verify fails (exit 1) and names the damage; nothing is left behind.
    let packs = repo.files("data");
    let biggest = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(biggest, bytes).unwrap();
    let out = repo.run(&["verify", &id, "--scratch", &pg.url("postgres")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = text(&out.stdout);
    assert!(said.contains("FAIL") && said.contains("damaged"), "{said}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'sbk_verify%'"
        )
        .trim(),
        "0"
    );
}

#[test]
fn several_databases_exclusions_and_cheap_second_snapshot() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE one");
    pg.psql("postgres", "CREATE DATABASE two");
    pg.psql("one", RICH_SCHEMA);
    pg.psql(
        "two",
        "CREATE TABLE big AS SELECT i, md5(i::text) || md5((i * 7)::text) AS t FROM generate_series(1, 200000) i",
    );
    let repo = TestRepo::new();
    let first = json(&ok(
        repo.run(&[
            "snapshot",
            "postgres",
            &pg.url("postgres"),
            "--all-databases",
            "--jobs",
            "2",
            "--exclude-table",
            "scratch_junk",
            "--exclude-table-data",
            "bulky_cache",
            "--json",
        ]),
        "snapshot --all-databases",
    ));
    let id = first["id"].as_str().unwrap().to_string();
    let databases = first["source"]["databases"].as_array().unwrap().clone();
    assert_eq!(
        databases,
        vec![
            serde_json::json!("one"),
            serde_json::json!("postgres"),
            serde_json::json!("two")
        ]
    );

    // Without --database a several-database snapshot cannot be restored; the error lists them.
    let out = repo.run(&["restore", &id, "--to-database", &pg.url("x"), "--create"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("one, postgres, two"),
        "{}",
        text(&out.stderr)
    );
    ok(
        repo.run(&[
            "restore",
            &id,
            "--to-database",
            &pg.url("one_copy"),
            "--create",
            "--database",
            "one",
            "--no-owner",
        ]),
        "restore --database one",
    );
    let has = |db: &str, t: &str| {
        pg.psql(
            db,
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{t}'"),
        )
        .trim()
            == "1"
    };
    assert!(!has("one_copy", "scratch_junk"), "excluded table restored");
    assert!(has("one_copy", "bulky_cache"));
    assert_eq!(
        pg.psql("one_copy", "SELECT count(*) FROM bulky_cache")
            .trim(),
        "0"
    );
    assert_eq!(
        pg.psql("one_copy", "SELECT count(*) FROM people").trim(),
        "5000"
    );
    // The drill restores every database and checks tables whose data was dumped.
    ok(
        repo.run(&["verify", &id, "--scratch", &pg.url("postgres")]),
        "verify of three databases",
    );

    // ~1% of rows changed: the second snapshot stores deltas, a small part of the first.
    pg.psql("two", "UPDATE big SET t = upper(t) WHERE i % 100 = 0");
    let second = json(&ok(
        repo.run(&[
            "snapshot",
            "postgres",
            &pg.url("postgres"),
            "--all-databases",
            "--json",
        ]),
        "second snapshot",
    ));
    let (a, b) = (
        first["summary"]["bytes_added"].as_u64().unwrap(),
        second["summary"]["bytes_added"].as_u64().unwrap(),
    );
    // A small database (~15 MB of dumps, a few dozen chunks): one chunk that finds no usable
    // base is stored in full and costs several percent on its own, so the bound is a third
    // (a CI run saw 24%, most runs stay far below). Without deltas the second snapshot would
    // add about as much as the first.
    assert!(b * 3 < a, "second snapshot added {b} bytes, first {a}");
    assert!(second["summary"]["blobs_delta"].as_u64().unwrap() > 0);
    let two = ok(
        repo.run(&[
            "restore",
            second["id"].as_str().unwrap(),
            "--to-database",
            &pg.url("two_copy"),
            "--create",
            "--database",
            "two",
        ]),
        "restore of a delta snapshot",
    );
    drop(two);
    assert_eq!(pg.table_digests("two"), pg.table_digests("two_copy"));
}

#[test]
fn connection_failures_write_nothing_and_hide_the_password() {
    let pg = Cluster::start();
    let repo = TestRepo::new();
    let before = repo.files("");
    let wrong = format!(
        "postgresql://postgres:not-the-password@127.0.0.1:{}/postgres",
        pg.port
    );
    let dead = "postgresql://postgres:some-password@127.0.0.1:1/postgres".to_string();
    let no_tls = format!("{}?sslmode=require", pg.url("postgres"));
    let cases: [(&str, &[&str], &str); 4] = [
        (&wrong, &[], "password authentication failed"),
        (&dead, &[], "Connection refused"),
        (&no_tls, &[], "TLS"),
        (
            &pg.url("postgres"),
            &["--pg-bin", "/nonexistent"],
            "apt-get install postgresql-client",
        ),
    ];
    for (url, extra, expect) in cases {
        let mut args = vec!["snapshot", "postgres", url];
        args.extend_from_slice(extra);
        let out = repo.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expect), "expected {expect:?} in: {err}");
        assert!(
            !err.contains("not-the-password") && !err.contains(&pg.password),
            "{err}"
        );
        // One error (a warning beside it, such as a password on the command line, is fine).
        assert_eq!(
            err.lines().filter(|l| l.starts_with("sbk: error")).count(),
            1,
            "one clear message: {err}"
        );
        assert!(err.lines().all(|l| l.starts_with("sbk: ")), "{err}");
    }
    // Nothing but the audit records of the failed attempts.
    let written: Vec<_> = repo
        .files("")
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("/audit/"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("/audit/"))
        .collect();
    assert_eq!(written, before, "a failed snapshot wrote files");
    assert!(repo.snapshots().is_empty());

    // The password also works from PGPASSWORD and never shows on a command line.
    let out = repo
        .cmd(&["snapshot", "postgres", &pg.url_without_password("postgres")])
        .env("PGPASSWORD", &pg.password)
        .output()
        .unwrap();
    ok(out, "snapshot with PGPASSWORD");
}

/// Whether process `parent` has a child named `name`.
fn has_child(parent: u32, name: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            return false;
        };
        comm.ends_with(&format!("({name}"))
            && rest.split(' ').nth(1) == Some(parent.to_string().as_str())
    })
}

/// Every process's command line, to look for a password.
fn all_cmdlines() -> String {
    let mut s = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
            s.push_str(&String::from_utf8_lossy(&b).replace('\0', " "));
            s.push('\n');
        }
    }
    s
}

#[test]
fn server_dying_mid_dump_saves_nothing() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql("app", "CREATE TABLE t AS SELECT generate_series(1, 1000) i");
    let repo = TestRepo::new();
    // A session holding an exclusive lock makes pg_dump wait inside its dump.
    let mut locker = pg
        .client("psql", "app")
        .args([
            "-X",
            "-c",
            "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The password reaches sbk through the environment, as a careful user gives it.
    let sbk = repo
        .cmd(&["snapshot", "postgres", &pg.url_without_password("app")])
        .env("PGPASSWORD", &pg.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !has_child(sbk.id(), "pg_dump") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "pg_dump never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let listing = all_cmdlines();
    assert!(
        !listing.contains(&pg.password),
        "the password is on a command line"
    );
    pg.kill();
    let out = sbk.wait_with_output().unwrap();
    let _ = locker.kill();
    let _ = locker.wait();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pg_dump") && err.contains("no snapshot was saved"),
        "{err}"
    );
    assert!(repo.snapshots().is_empty());
}

/// A CA and a server certificate for 127.0.0.1 made with openssl.
fn make_certs(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=sbk test CA",
    ]);
    run(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&a);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    (
        std::fs::read(dir.join("server.crt")).unwrap(),
        std::fs::read(dir.join("server.key")).unwrap(),
        dir.join("ca.crt"),
    )
}

#[test]
fn tls_modes_follow_libpq() {
    let certs = tempfile::tempdir().unwrap();
    let (crt, key, ca) = make_certs(certs.path());
    let pg = Cluster::start_with(ClusterOptions {
        conf: vec!["ssl = on".into()],
        files: vec![("server.crt".into(), crt), ("server.key".into(), key)],
    });
    let repo = TestRepo::new();
    let ca = ca.display().to_string();
    let by_ip = pg.url("postgres");
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    for (url, good) in [
        (format!("{by_ip}?sslmode=require"), true),
        (
            format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"),
            true,
        ),
        // The certificate names 127.0.0.1, not localhost: the chain is fine, the name is not.
        (
            format!("{by_name}?sslmode=verify-ca&sslrootcert={ca}"),
            true,
        ),
        (
            format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"),
            false,
        ),
        (
            format!("{by_ip}?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"),
            false,
        ),
    ] {
        let out = repo.run(&["snapshot", "postgres", &url]);
        assert_eq!(out.status.success(), good, "{url}: {}", text(&out.stderr));
        if !good {
            let err = text(&out.stderr);
            assert!(err.contains("certificate") || err.contains("root"), "{err}");
        }
    }
    assert_eq!(repo.snapshots().len(), 3);
}

/// A quoted SQL identifier.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `pg_dump` and `pg_dumpall` inherit only what a client program needs: not sbk's secrets
/// (a daemon's configured secret variables, cloud credentials).
#[test]
fn client_programs_get_only_the_variables_they_need() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let wrap = dir.path().join("bin");
    std::fs::create_dir_all(&wrap).unwrap();
    for prog in ["pg_restore", "psql"] {
        std::os::unix::fs::symlink(pg.bin.join(prog), wrap.join(prog)).unwrap();
    }
    for prog in ["pg_dump", "pg_dumpall"] {
        let script = format!(
            "#!/bin/sh\nenv > '{out}'\nexec '{real}' \"$@\"\n",
            out = dir.path().join(format!("{prog}.env")).display(),
            real = pg.bin.join(prog).display()
        );
        let p = wrap.join(prog);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = repo
        .cmd(&["snapshot", "postgres", &pg.url("app")])
        .env("SBK_PG_BIN", &wrap)
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret-not-for-pg")
        .env("MY_WEBHOOK_TOKEN", "hook-secret-not-for-pg")
        .env("LC_TIME", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    for prog in ["pg_dump", "pg_dumpall"] {
        let env = std::fs::read_to_string(dir.path().join(format!("{prog}.env"))).unwrap();
        for secret in ["aws-secret", "hook-secret", "SBK_PASSWORD"] {
            assert!(!env.contains(secret), "{prog} got {secret}:\n{env}");
        }
        for needed in ["PATH=", "PGHOST=", "PGPASSFILE=", "LC_TIME=C"] {
            assert!(env.contains(needed), "{prog} lacks {needed}:\n{env}");
        }
    }
}

/// A restore with `--create` that fails half-way (a damaged pack) names the tables left
/// empty, and drops the half-made database unless `--keep-partial`.
#[test]
fn a_failed_restore_with_create_names_empty_tables_and_drops_the_database() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    for t in ["alpha", "beta", "gamma", "delta"] {
        pg.psql(
            "app",
            &format!(
                "CREATE TABLE {t} AS SELECT i, md5(i::text) || md5((i * 7)::text) AS h \
                 FROM generate_series(1, 60000) i"
            ),
        );
    }
    let repo = TestRepo::new();
    let out = repo
        .cmd(&["snapshot", "postgres", &pg.url("app"), "--count-rows"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    // Damage the middle of the dump's data.
    let pack = repo
        .files("data")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    let at = b.len() * 3 / 5;
    b[at] ^= 0x10;
    std::fs::write(&pack, b).unwrap();
    let exists = |db: &str| {
        pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
        )
        .trim()
            == "1"
    };
    for keep in [false, true] {
        let target = if keep { "kept" } else { "dropped" };
        let mut args = vec!["restore", "latest", "--to-database"];
        let url = pg.url(target);
        args.push(&url);
        args.push("--create");
        if keep {
            args.push("--keep-partial");
        }
        let out = repo.cmd(&args).output().unwrap();
        let err = common::stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("damaged"), "{err}");
        assert!(err.contains("tables are empty or missing"), "{err}");
        assert!(
            err.contains("public.delta") || err.contains("public.gamma"),
            "{err}"
        );
        if keep {
            assert!(err.contains("was kept") && exists(target), "{err}");
        } else {
            assert!(err.contains("was dropped") && !exists(target), "{err}");
        }
    }
}

/// No database named: sbk refuses to dump only libpq's default (`postgres`, the user's name)
/// while the server holds others, and names them.
#[test]
fn no_database_named_is_refused_when_others_exist() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql("postgres", "CREATE DATABASE billing");
    let repo = TestRepo::new();
    let bare = format!("postgresql://postgres@127.0.0.1:{}", pg.port);
    let out = repo
        .cmd(&["snapshot", "postgres", &bare])
        .env("PGPASSWORD", &pg.password)
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("app, billing") && err.contains("--all-databases"),
        "{err}"
    );
    assert!(repo.snapshots().is_empty());
    // Naming it, even the default, is what the user asked for.
    let out = repo
        .cmd(&["snapshot", "postgres", &bare, "-d", "postgres"])
        .env("PGPASSWORD", &pg.password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = repo
        .cmd(&["snapshot", "postgres", &bare, "--all-databases"])
        .env("PGPASSWORD", &pg.password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// A server that wants a password when none was given: the message says where one goes.
#[test]
fn a_missing_password_names_where_it_goes() {
    let pg = Cluster::start();
    let repo = TestRepo::new();
    let home = tempfile::tempdir().unwrap();
    let out = repo
        .cmd(&["snapshot", "postgres", &pg.url_without_password("postgres")])
        .env_remove("PGPASSWORD")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("PGPASSWORD") && err.contains("pgpass"),
        "{err}"
    );
}
