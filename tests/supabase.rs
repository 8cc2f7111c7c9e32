//! Supabase projects with real parts: two throwaway PostgreSQL clusters shaped like Supabase
//! projects (`tests/fixtures/supabase/`), Storage on a real S3 server (s3s-fs over HTTP), and
//! the one stand-in, a Management API server with the published endpoints
//! (`common/supabase_api.rs`).

mod common;
#[path = "common/supabase_api.rs"]
mod supabase_api;

use std::process::Output;

use common::pg::Cluster;
use common::s3::{S3Server, REGION};
use common::{stderr, TestRepo};
use sbk::supabase::storage::{ObjectMeta, StorageClient, StorageOptions};
use supabase_api::{ApiServer, Function};

const PLATFORM: &str = include_str!("fixtures/supabase/platform.sql");
const APP: &str = include_str!("fixtures/supabase/app.sql");

/// A project: database, storage and API.
struct Project {
    db: Cluster,
    storage: S3Server,
    api: ApiServer,
    project_ref: String,
}

impl Project {
    fn new(project_ref: &str, app: bool) -> Self {
        let db = Cluster::start();
        run_sql(&db, PLATFORM);
        if app {
            run_sql(&db, APP);
        }
        Project {
            db,
            storage: S3Server::start(),
            api: ApiServer::start(project_ref),
            project_ref: project_ref.into(),
        }
    }

    /// A Storage client with the project's keys (also what the tests set up data with).
    fn storage_client(&self) -> StorageClient {
        StorageClient::new(
            &StorageOptions {
                endpoint: format!("http://{}", self.storage.addr),
                region: REGION.into(),
                ca_cert: None,
                deadline: std::time::Duration::from_secs(10),
                io_timeout: std::time::Duration::from_secs(30),
            },
            &self.storage.access_key,
            &self.storage.secret_key,
        )
        .unwrap()
    }

    /// Options naming this project's parts.
    fn args(&self) -> Vec<String> {
        vec![
            "--db".into(),
            self.db.url_without_password("postgres"),
            "--storage-endpoint".into(),
            format!("http://{}", self.storage.addr),
            "--storage-region".into(),
            REGION.into(),
            "--project-ref".into(),
            self.project_ref.clone(),
            "--api-url".into(),
            self.api.url(),
        ]
    }

    /// Credentials, from the environment only.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGPASSWORD", self.db.password.clone()),
            ("SUPABASE_S3_ACCESS_KEY_ID", self.storage.access_key.clone()),
            (
                "SUPABASE_S3_SECRET_ACCESS_KEY",
                self.storage.secret_key.clone(),
            ),
            ("SUPABASE_ACCESS_TOKEN", self.api.token.clone()),
        ]
    }

    fn user_id(&self, g: u32) -> String {
        self.db
            .psql("postgres", &format!("SELECT md5('user' || {g})::uuid"))
            .trim()
            .to_string()
    }
}

fn run_sql(db: &Cluster, sql: &str) {
    let out = db
        .client("psql", "postgres")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fixture SQL: {}",
        common::pg::text(&out.stderr)
    );
}

/// An object of the source project: bucket, key, bytes, content type, owner (user number).
struct Obj {
    bucket: &'static str,
    key: String,
    data: Vec<u8>,
    content_type: &'static str,
    owner: Option<u32>,
}

/// Uploads objects and adds their `storage.objects` rows, as Storage would.
fn put_objects(p: &Project, objects: &[Obj]) {
    let c = p.storage_client();
    for b in ["avatars", "docs"] {
        if !c.bucket_exists(b).unwrap() {
            c.create_bucket(b).unwrap();
        }
    }
    let mut sql = String::from("BEGIN;");
    for o in objects {
        let mut meta = ObjectMeta {
            content_type: Some(o.content_type.into()),
            cache_control: Some("max-age=3600".into()),
            ..Default::default()
        };
        meta.metadata
            .insert("origin".into(), format!("test-{}", o.key.len()));
        c.put(o.bucket, &o.key, &meta, &o.data).unwrap();
        let owner = o
            .owner
            .map(|g| format!("'{}'", p.user_id(g)))
            .unwrap_or_else(|| "NULL".into());
        sql.push_str(&format!(
            "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata) \
             VALUES ('{}', '{}', {owner}, {owner}::text, '{{\"mimetype\": \"{}\", \"size\": {}}}', \
             '{{\"origin\": \"test\"}}') ON CONFLICT (bucket_id, name) DO UPDATE SET metadata = EXCLUDED.metadata;",
            o.bucket,
            o.key,
            o.content_type,
            o.data.len()
        ));
    }
    sql.push_str("COMMIT;");
    run_sql(&p.db, &sql);
}

fn sbk(repo: &TestRepo, p: &Project, args: &[&str]) -> Output {
    let mut c = repo.cmd(args);
    c.args(p.args());
    for (k, v) in p.env() {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "sbk failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn source_functions(api: &ApiServer) {
    let mut st = api.state.lock().unwrap();
    st.functions = vec![
        Function {
            slug: "hello".into(),
            verify_jwt: true,
            files: vec![
                ("index.ts".into(), b"import { greet } from './lib/greet.ts';\nDeno.serve(() => new Response(greet()));\n".to_vec()),
                ("lib/greet.ts".into(), b"export const greet = () => 'hi';\n".to_vec()),
            ],
        },
        Function {
            slug: "stripe-webhook".into(),
            verify_jwt: false,
            files: vec![("index.ts".into(), b"Deno.serve(async (r) => new Response('ok'));\n".to_vec())],
        },
    ];
    st.secrets = vec!["STRIPE_KEY".into(), "OPENAI_API_KEY".into()];
    st.settings.insert(
        "/config/auth".into(),
        serde_json::json!({"site_url": "https://app.example.com", "jwt_exp": 3600, "disable_signup": false}),
    );
    st.settings.insert(
        "/postgrest".into(),
        serde_json::json!({"db_schema": "public,graphql_public", "max_rows": 1000}),
    );
    st.settings.insert(
        "/config/storage".into(),
        serde_json::json!({"fileSizeLimit": 52428800}),
    );
}

fn target_settings(api: &ApiServer) {
    let mut st = api.state.lock().unwrap();
    st.settings.insert(
        "/config/auth".into(),
        serde_json::json!({"site_url": "http://localhost:3000", "jwt_exp": 3600, "disable_signup": false}),
    );
    st.settings.insert(
        "/postgrest".into(),
        serde_json::json!({"db_schema": "public,graphql_public", "max_rows": 1000}),
    );
}

fn sample_objects() -> Vec<Obj> {
    let mut v = Vec::new();
    for g in 1..=5u32 {
        v.push(Obj {
            bucket: "avatars",
            key: format!("u{g}/avatar.png"),
            data: common::dump_like(g as u64, 3000 + g as usize * 100),
            content_type: "image/png",
            owner: Some(g),
        });
    }
    for (key, len, ct) in [
        ("readme.txt", 900usize, "text/plain"),
        ("a-c.txt", 10, "text/plain"),
        ("a/b.txt", 20, "text/plain"),
        ("reports/2026/q1.pdf", 70_000, "application/pdf"),
        // Above the small-object size: streamed, never held whole, several at once.
        ("big.bin", 9 << 20, "application/octet-stream"),
        ("big2.bin", (9 << 20) + 17, "application/octet-stream"),
        ("videos/clip.mp4", 10 << 20, "video/mp4"),
    ] {
        v.push(Obj {
            bucket: "docs",
            key: key.into(),
            data: common::dump_like(len as u64, len),
            content_type: ct,
            owner: Some(7),
        });
    }
    v
}

#[test]
fn project_round_trip_into_a_fresh_project() {
    let src = Project::new("srcproject", true);
    let dst = Project::new("dstproject", false);
    source_functions(&src.api);
    target_settings(&dst.api);
    let objects = sample_objects();
    put_objects(&src, &objects);
    // As Supabase Storage does, the target's S3 endpoint upserts the object's row on every
    // upload, with no owner (uploads with the project's S3 keys have none).
    {
        let (port, password) = (dst.db.port, dst.db.password.clone());
        let bin = dst.db.bin.clone();
        *dst.storage.on_put.lock().unwrap() = Some(Box::new(move |path: &str| {
            let (bucket, key) = path.split_once('/').unwrap();
            let sql = format!(
                "UPDATE storage.objects SET owner = NULL, owner_id = NULL, user_metadata = NULL \
                 WHERE bucket_id = '{bucket}' AND name = '{key}'"
            );
            let out = std::process::Command::new(bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    &sql,
                ])
                .env("PGPORT", port.to_string())
                .env("PGPASSWORD", &password)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }));
    }
    let repo = TestRepo::new();

    let out = sbk(
        &repo,
        &src,
        &["--json", "snapshot", "supabase", "--tag", "nightly"],
    );
    let snap = json(&out);
    let sb = &snap["supabase"];
    assert_eq!(sb["storage"]["objects"], objects.len() as u64, "{sb}");
    assert_eq!(sb["functions"].as_array().unwrap().len(), 2);
    assert_eq!(
        sb["secret_names"],
        serde_json::json!(["STRIPE_KEY", "OPENAI_API_KEY"])
    );
    assert_eq!(snap["source"]["kind"], "supabase");
    assert!(
        sb["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "pgcrypto" && e["schema"] == "extensions"),
        "{sb}"
    );
    assert!(sb["auth_migration"].as_str().is_some());

    // Dry run first: counts, and nothing changes.
    let dry = json(&sbk(
        &repo,
        &dst,
        &["--json", "restore", "latest", "--to-supabase", "--dry-run"],
    ));
    assert_eq!(dry["objects"], objects.len() as u64);
    assert!(
        dst.db
            .psql("postgres", "SELECT to_regclass('public.todos') IS NULL")
            .trim()
            == "t"
    );
    assert!(dst.api.state.lock().unwrap().deployed.is_empty());

    let out = sbk(
        &repo,
        &dst,
        &["--json", "restore", "latest", "--to-supabase"],
    );
    let restored = json(&out);
    // Progress on stderr: the dump's bytes, then every object's, all counted by the end line.
    let end: serde_json::Value = stderr(&out)
        .lines()
        .rfind(|l| l.starts_with("{\"progress\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no progress lines: {}", stderr(&out)));
    assert_eq!(end["event"], "end", "{end}");
    assert_eq!(end["phase"], "restore storage", "{end}");
    assert_eq!(end["items_done"], objects.len() as u64, "{end}");
    assert!(end["bytes_total"].as_u64().unwrap() > 0, "{end}");
    assert_eq!(end["bytes_done"], end["bytes_total"], "{end}");
    let skipped = &restored["database"]["skipped"];
    let names = |k: &str| -> Vec<String> {
        skipped[k]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert!(
        names("event_trigger")
            .iter()
            .any(|e| e.contains("issue_pg_graphql_access")),
        "{skipped}"
    );
    assert!(
        names("platform_state")
            .iter()
            .any(|e| e == "TABLE DATA vault secrets"),
        "{skipped}"
    );
    assert!(
        names("platform_state")
            .iter()
            .any(|e| e == "TABLE DATA auth schema_migrations"),
        "{skipped}"
    );
    assert!(
        names("on_target")
            .iter()
            .any(|e| e.contains("platform_service_role_all")),
        "{skipped}"
    );
    let manual = restored["manual"].to_string();
    assert!(
        manual.contains("STRIPE_KEY") && manual.contains("site_url"),
        "{manual}"
    );
    assert!(
        !manual.contains("https://app.example.com"),
        "setting values stay out of the list"
    );

    // The schema (platform and application, user policies and triggers on auth and storage
    // included) and every user table's rows are the source's.
    assert_eq!(
        src.db.schema_text("postgres"),
        dst.db.schema_text("postgres")
    );
    let digests = |db: &Cluster| -> Vec<(String, String)> {
        db.table_digests("postgres")
            .into_iter()
            // Vault is not restored; storage.objects rows are compared below, without the
            // times an upload stamps.
            .filter(|(t, _)| t != "vault.secrets" && t != "storage.objects")
            .collect()
    };
    assert_eq!(digests(&src.db), digests(&dst.db));
    assert_eq!(
        dst.db
            .psql("postgres", "SELECT count(*) FROM vault.secrets")
            .trim(),
        "0"
    );
    assert_eq!(
        dst.db
            .psql("postgres", "SELECT count(*) FROM pg_event_trigger")
            .trim(),
        "1"
    );

    // Row level security still holds: a user sees their own rows only.
    let u1 = src.user_id(1);
    let seen = dst.db.psql(
        "postgres",
        &format!(
            "SET ROLE authenticated; SELECT set_config('request.jwt.claims', '{{\"sub\":\"{u1}\",\"role\":\"authenticated\"}}', false); \
             SELECT count(*) FROM public.todos;"
        ),
    );
    assert_eq!(seen.lines().last().unwrap().trim(), "100", "{seen}");
    // The user's trigger on auth.users fires on the target.
    dst.db.psql(
        "postgres",
        "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES \
         ('00000000-0000-0000-0000-0000000000aa', 'new@example.com', '{\"username\": \"newbie\"}')",
    );
    assert_eq!(
        dst.db.psql("postgres", "SELECT username FROM public.profiles WHERE id = '00000000-0000-0000-0000-0000000000aa'").trim(),
        "newbie"
    );

    // Every object's bytes and attributes, and rows consistent with them, owner included.
    let c = dst.storage_client();
    for o in &objects {
        let (meta, bytes) = c
            .get_bytes(o.bucket, &o.key)
            .unwrap()
            .expect("object restored");
        assert!(bytes == o.data, "{}/{} differs", o.bucket, o.key);
        assert_eq!(meta.content_type.as_deref(), Some(o.content_type));
        assert_eq!(meta.cache_control.as_deref(), Some("max-age=3600"));
        assert_eq!(
            meta.metadata.get("origin").cloned(),
            Some(format!("test-{}", o.key.len()))
        );
    }
    let rows = |db: &Cluster| {
        db.psql(
            "postgres",
            "SELECT bucket_id, name, owner, owner_id, metadata, user_metadata FROM storage.objects ORDER BY 1, 2",
        )
    };
    assert_eq!(rows(&src.db), rows(&dst.db));
    assert_eq!(restored["owners_restored"], objects.len() as u64);
    let buckets = |db: &Cluster| {
        db.psql(
            "postgres",
            "SELECT id, public, file_size_limit, allowed_mime_types FROM storage.buckets ORDER BY 1",
        )
    };
    assert_eq!(buckets(&src.db), buckets(&dst.db));

    // Functions were deployed with their files and settings.
    let st = dst.api.state.lock().unwrap();
    let mut deployed: Vec<_> = st.deployed.iter().map(|d| d.0.clone()).collect();
    deployed.sort();
    assert_eq!(deployed, ["hello", "stripe-webhook"]);
    let hello = st.deployed.iter().find(|d| d.0 == "hello").unwrap();
    assert_eq!(hello.1["entrypoint_path"], "index.ts");
    let mut files = hello.2.clone();
    files.sort();
    assert_eq!(files, src.api.state.lock().unwrap().functions[0].files);
    let webhook = st
        .deployed
        .iter()
        .find(|d| d.0 == "stripe-webhook")
        .unwrap();
    assert_eq!(webhook.1["verify_jwt"], false);
}

#[test]
fn second_snapshot_downloads_only_changed_objects() {
    let src = Project::new("incproject", true);
    let mut objects = Vec::new();
    for i in 0..400u32 {
        objects.push(Obj {
            bucket: "docs",
            key: format!("f{:02}/{i:04}.bin", i % 23),
            data: common::dump_like(1000 + i as u64, 10 << 10),
            content_type: "application/octet-stream",
            owner: None,
        });
    }
    // One object far larger than the pipeline holds: it must stream.
    objects.push(Obj {
        bucket: "avatars",
        key: "huge.bin".into(),
        data: common::dump_like(7, 96 << 20),
        content_type: "application/octet-stream",
        owner: None,
    });
    put_objects(&src, &objects);
    let repo = TestRepo::new();

    let mut cmd = repo.cmd(&["--json", "snapshot", "supabase", "--no-functions"]);
    cmd.args(src.args());
    for (k, v) in src.env() {
        cmd.env(k, v);
    }
    let child = common::spawn(cmd);
    let rss = common::PeakRss::watch(child.id());
    let out = child.wait_with_output().unwrap();
    let peak = rss.stop();
    let first = json(&out);
    assert_eq!(first["supabase"]["storage"]["downloaded"], 401);
    assert!(
        peak < 200 << 20,
        "peak RSS {} MiB with a 96 MiB object",
        peak >> 20
    );

    // 10 of 400 objects and 1% of the rows change.
    let mut changed = Vec::new();
    for i in (0..400).step_by(40) {
        let mut o = Obj {
            bucket: "docs",
            key: objects[i].key.clone(),
            data: objects[i].data.clone(),
            content_type: "application/octet-stream",
            owner: None,
        };
        o.data[100] ^= 0xff;
        changed.push(o);
    }
    put_objects(&src, &changed);
    src.db.psql(
        "postgres",
        "UPDATE public.todos SET is_complete = NOT is_complete WHERE id % 100 = 7",
    );
    let gets_before = src.storage.gets.load(std::sync::atomic::Ordering::SeqCst);
    let second = json(&sbk(
        &repo,
        &src,
        &["--json", "snapshot", "supabase", "--no-functions"],
    ));
    let gets = src.storage.gets.load(std::sync::atomic::Ordering::SeqCst) - gets_before;
    let st = &second["supabase"]["storage"];
    assert_eq!(st["downloaded"], 10, "{st}");
    assert_eq!(st["reused"], 391, "{st}");
    assert_eq!(gets, 10, "object GETs the second snapshot made");
    let added = |v: &serde_json::Value| v["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added(&second) * 20 < added(&first),
        "second snapshot added {} bytes, first {}",
        added(&second),
        added(&first)
    );

    // Changed and unchanged objects read back exactly from the second snapshot.
    let id = second["id"].as_str().unwrap();
    for o in [&changed[3], &objects[5], &objects[400]] {
        let path = format!("storage/{}/{}", o.bucket, o.key);
        let out = repo.run(&["dump", id, &path]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out.stdout == o.data, "{path} differs");
    }
    // --reread-storage downloads everything again.
    let third = json(&sbk(
        &repo,
        &src,
        &[
            "--json",
            "snapshot",
            "supabase",
            "--no-functions",
            "--reread-storage",
        ],
    ));
    assert_eq!(third["supabase"]["storage"]["downloaded"], 401);
}

#[test]
fn bad_credentials_and_inputs_save_nothing() {
    let src = Project::new("badproject", true);
    source_functions(&src.api);
    put_objects(&src, &sample_objects()[..3]);
    let repo = TestRepo::new();
    let count = || repo.snapshots().len();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = repo.cmd(&["snapshot", "supabase"]);
        c.args(src.args()).args(extra);
        for (k, v) in src.env() {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    let out = run(&[], &[("SUPABASE_S3_SECRET_ACCESS_KEY", "wrong-secret")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("SUPABASE_S3_ACCESS_KEY_ID") && !err.contains("wrong-secret"),
        "{err}"
    );
    assert_eq!(count(), 0);

    let out = run(
        &[],
        &[(
            "SUPABASE_ACCESS_TOKEN",
            "sbp_0000000000000000000000000000000000000000",
        )],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("401") && err.contains("SUPABASE_ACCESS_TOKEN") && !err.contains("sbp_0000"),
        "{err}"
    );
    assert_eq!(count(), 0);

    let out = run(&["--bucket", "nope"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bucket \"nope\" does not exist"),
        "{}",
        stderr(&out)
    );

    let out = run(&["--project-url", "https://not a url"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--project-url"), "{}", stderr(&out));
    assert_eq!(count(), 0);

    // Missing Storage keys: the part is skipped with one line, or refused when required.
    let mut c = repo.cmd(&["snapshot", "supabase", "--require", "storage"]);
    c.args(src.args())
        .env("PGPASSWORD", &src.db.password)
        .env("SUPABASE_ACCESS_TOKEN", &src.api.token)
        .env_remove("SUPABASE_S3_ACCESS_KEY_ID")
        .env_remove("SUPABASE_S3_SECRET_ACCESS_KEY");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(count(), 0);

    // Throttling: two 429s with Retry-After, then the snapshot goes through. An object
    // deleted between the listing and its download is skipped with a warning.
    src.api.state.lock().unwrap().throttle = 2;
    src.storage
        .vanish
        .lock()
        .unwrap()
        .push("avatars/u2/avatar.png".into());
    let out = run(&["--json"], &[]);
    let v = json(&out);
    assert_eq!(src.api.state.lock().unwrap().throttle, 0);
    assert_eq!(
        v["supabase"]["storage"]["vanished"],
        serde_json::json!(["avatars/u2/avatar.png"])
    );
    assert_eq!(v["supabase"]["storage"]["objects"], 2);
    assert_eq!(count(), 1);
}

#[test]
fn functions_folder_round_trip_and_only_parts() {
    let src = Project::new("dirproject", true);
    let dst = Project::new("dirtarget", false);
    let fdir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fdir.path().join("hello/lib")).unwrap();
    std::fs::write(
        fdir.path().join("hello/index.ts"),
        "Deno.serve(() => new Response('x'));\n",
    )
    .unwrap();
    std::fs::write(fdir.path().join("hello/lib/a.ts"), "export {};\n").unwrap();
    std::fs::create_dir_all(fdir.path().join("main")).unwrap();
    std::fs::write(fdir.path().join("main/index.ts"), "// router\n").unwrap();
    let repo = TestRepo::new();
    let mut c = repo.cmd(&[
        "--json",
        "snapshot",
        "supabase",
        "--no-storage",
        "--functions-dir",
    ]);
    c.arg(fdir.path()).args(src.args());
    for (k, v) in src.env() {
        c.env(k, v);
    }
    let snap = json(&c.output().unwrap());
    assert_eq!(snap["supabase"]["functions_from"], "dir");

    // Only the functions, into a folder: the database is left alone.
    let out_dir = tempfile::tempdir().unwrap();
    let mut c = repo.cmd(&[
        "restore",
        "latest",
        "--to-supabase",
        "--only",
        "functions",
        "--functions-dir",
    ]);
    c.arg(out_dir.path()).args(dst.args());
    for (k, v) in dst.env() {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["hello/index.ts", "hello/lib/a.ts", "main/index.ts"] {
        assert_eq!(
            std::fs::read(out_dir.path().join(f)).unwrap(),
            std::fs::read(fdir.path().join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        dst.db
            .psql("postgres", "SELECT to_regclass('public.todos') IS NULL")
            .trim(),
        "t"
    );

    // Files of a snapshot with folders restore into a folder too.
    let files = tempfile::tempdir().unwrap();
    let out = repo.run(&[
        "restore",
        "latest",
        "--target",
        files.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(files.path().join("functions/hello/lib/a.ts").exists());
    assert!(files.path().join("postgres.pgdump").exists());
}

#[test]
fn configured_job_snapshots_a_project_with_its_secrets() {
    let src = Project::new("jobproject", true);
    source_functions(&src.api);
    put_objects(&src, &sample_objects()[..4]);
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sbk.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"

[repository.main]
url = "{repo}"
password = {{ env = "JOB_REPO_PW" }}

[source.project]
type = "supabase"
url = "{db}"
password = {{ env = "JOB_DB_PW" }}
storage_endpoint = "http://{s3}"
project_ref = "{r}"
api_url = "{api}"
exclude_table_data = ["public.audit_logs"]
require = ["storage", "functions"]
storage_access_key_id = {{ env = "JOB_S3_KEY" }}
storage_secret_access_key = {{ env = "JOB_S3_SECRET" }}
access_token = {{ env = "JOB_API_TOKEN" }}

[job.nightly]
source = "project"
repository = "main"
schedule = "@daily"
retries = 0
retention = {{ keep_last = 1 }}
drill = true
drill_scratch = "{scratch}"
drill_password = {{ env = "JOB_DB_PW" }}
"#,
            state = dir.path().join("state").display(),
            repo = repo.path.display(),
            db = src.db.url_without_password("postgres"),
            s3 = src.storage.addr,
            r = src.project_ref,
            api = src.api.url(),
            scratch = src.db.url_without_password("postgres"),
        ),
    )
    .unwrap();
    let run = || {
        let mut c = std::process::Command::new(common::sbk_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("SBK_") || k.starts_with("SUPABASE_") || k.starts_with("PG") {
                c.env_remove(k);
            }
        }
        c.arg("--config")
            .arg(&config)
            .args(["run", "nightly", "--json"])
            .env("JOB_REPO_PW", common::PASSWORD)
            .env("JOB_DB_PW", &src.db.password)
            .env("JOB_S3_KEY", &src.storage.access_key)
            .env("JOB_S3_SECRET", &src.storage.secret_key)
            .env("JOB_API_TOKEN", &src.api.token)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    // A stream snapshot beside it: retention of the job must leave it alone.
    assert!(repo
        .run_with_input(&["snapshot", "stdin", "--name", "x"], b"other")
        .status
        .success());
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps = repo.snapshots();
    let kinds: Vec<&str> = snaps
        .iter()
        .map(|s| s["source"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "supabase").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "stdin").count(),
        1,
        "{kinds:?}"
    );
    // The excluded table's rows are not in the dump; the functions are.
    let id = snaps
        .iter()
        .find(|s| s["source"]["kind"] == "supabase")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = repo.run(&["dump", &id, "functions/hello/lib/greet.ts"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo.run(&["dump", &id, "manifest.json"]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        m["options"]["exclude_table_data"],
        serde_json::json!(["public.audit_logs"])
    );
}
