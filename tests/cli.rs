//! The verbs' behaviour and conventions: exit codes, JSON shapes, IDs, keys, sources.

mod common;

use common::*;

#[test]
fn no_repository_exits_10() {
    let repo = TestRepo::uninit();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("no repository"));
}

#[test]
fn wrong_password_exits_12() {
    let repo = TestRepo::new();
    let out = repo
        .cmd(&["snapshots"])
        .env("SBK_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"));
    assert!(!stderr(&out).contains("wrong\n"));
}

#[test]
fn init_refuses_a_non_empty_folder() {
    let repo = TestRepo::uninit();
    std::fs::create_dir_all(&repo.path).unwrap();
    std::fs::write(repo.path.join("precious.txt"), b"keep me").unwrap();
    let out = repo.run(&["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(repo.path.join("precious.txt")).unwrap(),
        b"keep me"
    );
    // And an existing repository is never re-initialized.
    let repo = TestRepo::new();
    let out = repo.run(&["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn init_prints_the_repository_id() {
    let repo = TestRepo::uninit();
    let out = repo.run(&[
        "--json",
        "init",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"].as_str().unwrap().len(), 64);
}

#[test]
fn password_sources() {
    let repo = TestRepo::new();
    let pwfile = repo.dir.path().join("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let ok = |c: &mut std::process::Command| c.env_remove("SBK_PASSWORD").output().unwrap();
    let out = ok(repo.cmd(&["snapshots"]).arg("--password-file").arg(&pwfile));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ok(repo.cmd(&["snapshots"]).env("SBK_PASSWORD_FILE", &pwfile));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ok(repo
        .cmd(&["snapshots", "--password-command"])
        .arg(format!("cat {}", pwfile.display())));
    assert!(out.status.success(), "{}", stderr(&out));
    // No password and no terminal: a clear error, not a hang.
    let out = ok(&mut repo.cmd(&["snapshots"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no password given"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn snapshots_json_has_the_documented_fields() {
    let repo = TestRepo::new();
    let out = repo.run_with_input(
        &[
            "--json",
            "snapshot",
            "stdin",
            "--name",
            "x.sql",
            "--tag",
            "daily",
            "--tag",
            "pg",
            "--host",
            "db1",
            "--time",
            "2026-11-29T02:00:00+01:00",
        ],
        b"hello",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list = repo.snapshots();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    for field in [
        "id", "short_id", "time", "host", "tags", "source", "summary", "tree",
    ] {
        assert!(!s[field].is_null(), "missing {field} in {s}");
    }
    assert_eq!(s["time"], "2026-11-29T02:00:00+01:00");
    assert_eq!(s["host"], "db1");
    assert_eq!(s["tags"], serde_json::json!(["daily", "pg"]));
    assert_eq!(s["source"]["kind"], "stdin");
    assert_eq!(s["summary"]["bytes_in"], 5);
    assert!(s["summary"]["bytes_added"].as_u64().unwrap() > 0);
    assert_eq!(
        s["short_id"].as_str().unwrap(),
        &s["id"].as_str().unwrap()[..8]
    );
}

#[test]
fn latest_and_prefixes_resolve() {
    let repo = TestRepo::new();
    let a = repo.snapshot("f", b"first");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = repo.snapshot("f", b"second");
    assert_eq!(repo.dump("latest"), b"second");
    let a_id = a["id"].as_str().unwrap();
    assert_eq!(repo.dump(&a_id[..6]), b"first");
    assert_eq!(repo.dump(b["id"].as_str().unwrap()), b"second");
    let out = repo.run(&["dump", "zz"]);
    assert_eq!(out.status.code(), Some(1));
    let out = repo.run(&["dump", "0000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn command_source_stores_stdout() {
    let repo = TestRepo::new();
    let out = repo.run(&[
        "--json",
        "snapshot",
        "command",
        "--name",
        "out.txt",
        "--",
        "sh",
        "-c",
        "echo from a command",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"]["kind"], "command");
    assert_eq!(repo.dump("latest"), b"from a command\n");
}

#[test]
fn failing_command_saves_no_snapshot_and_shows_stderr() {
    let repo = TestRepo::new();
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "out.txt",
        "--",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero; echo 'pg_dump: error: connection lost' >&2; exit 1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("connection lost"), "{}", stderr(&out));
    assert!(repo.snapshots().is_empty());
    assert!(
        repo.files("index").is_empty(),
        "a failed run must not index its packs"
    );
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "x",
        "--",
        "/nonexistent/dumper",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot run"), "{}", stderr(&out));
}

#[test]
fn command_line_passwords_are_not_recorded() {
    let repo = TestRepo::new();
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "o",
        "--",
        "echo",
        "postgres://u:hunter2@db/x",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = &repo.snapshots()[0];
    assert!(!s.to_string().contains("hunter2"), "{s}");
}

#[test]
fn restore_refuses_to_overwrite_unless_asked() {
    let repo = TestRepo::new();
    repo.snapshot("f.txt", b"v1");
    let target = repo.dir.path().join("t");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("f.txt"), b"mine").unwrap();
    let t = target.to_str().unwrap();
    let out = repo.run(&["restore", "latest", "--target", t]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(target.join("f.txt")).unwrap(), b"mine");
    let out = repo.run(&["restore", "latest", "--target", t, "--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(target.join("f.txt")).unwrap(), b"v1");
}

#[test]
fn keys_can_be_added_changed_and_removed_but_not_the_last() {
    let repo = TestRepo::new();
    repo.snapshot("f", b"data");
    let kdf = ["--kdf-memory-kib", "1024", "--kdf-iterations", "1"];
    let mut args = vec!["--json", "key", "add"];
    args.extend(kdf);
    let out = repo
        .cmd(&args)
        .env("SBK_NEW_PASSWORD", "second-password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Both passwords open the repository.
    let out = repo
        .cmd(&["dump", "latest"])
        .env("SBK_PASSWORD", "second-password")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"data");
    let out = repo.run(&["--json", "key", "list"]);
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.len(), 2);
    // Change the first password.
    let mut args = vec!["key", "passwd"];
    args.extend(kdf);
    let out = repo
        .cmd(&args)
        .env("SBK_NEW_PASSWORD", "third-password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(repo.run(&["snapshots"]).status.code(), Some(12));
    let with = |pw: &str, args: &[&str]| repo.cmd(args).env("SBK_PASSWORD", pw).output().unwrap();
    assert!(with("third-password", &["snapshots"]).status.success());
    // Remove the second key, then refuse to remove the last one.
    let id = second["id"].as_str().unwrap();
    assert!(with("third-password", &["key", "remove", &id[..10]])
        .status
        .success());
    let out = with("third-password", &["--json", "key", "list"]);
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.len(), 1);
    let last = keys[0]["id"].as_str().unwrap().to_string();
    let out = with("third-password", &["key", "remove", &last]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));
}

#[test]
fn cat_shows_decrypted_objects() {
    let repo = TestRepo::new();
    let snap = repo.snapshot("f", b"some data to look at");
    let out = repo.run(&["cat", "config"]);
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["version"], 1);
    assert_eq!(cfg["chunker"]["avg_size"], 1 << 20);
    let out = repo.run(&["cat", "snapshot", "latest"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["id"], snap["id"]);
    let out = repo.run(&["cat", "tree", "latest"]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["files"][0]["size"], 20);
    let index = repo.files("index");
    let name = index[0].file_name().unwrap().to_str().unwrap();
    let out = repo.run(&["cat", "index", &name[..8]]);
    let idx: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pack = idx["packs"][0]["id"].as_str().unwrap().to_string();
    let out = repo.run(&["cat", "pack", &pack]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        p["blobs"].as_array().unwrap().len(),
        2,
        "one data blob and one tree blob"
    );
    let out = repo.run(&[
        "cat",
        "key",
        &repo.files("keys")[0].file_name().unwrap().to_str().unwrap()[..8],
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
}

#[test]
fn compression_is_chosen_at_init_and_per_snapshot() {
    use std::io::Read;
    let mut data = Vec::new();
    DumpLike::new(11, 3 << 20).read_to_end(&mut data).unwrap();
    let init = |choice: &str| {
        let repo = TestRepo::uninit();
        let out = repo.run(&[
            "init",
            "--kdf-memory-kib",
            "1024",
            "--kdf-iterations",
            "1",
            "--compression",
            choice,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        repo
    };
    let level = |repo: &TestRepo| {
        let cfg: serde_json::Value =
            serde_json::from_slice(&repo.run(&["cat", "config"]).stdout).unwrap();
        cfg["compression"]["level"].as_i64().unwrap()
    };
    // (repository default, this snapshot's flag) -> stored bytes; every snapshot restores.
    let stored = |repo: &TestRepo, flag: Option<&str>| {
        let mut args = vec!["--json", "snapshot", "stdin", "--name", "d"];
        args.extend(flag.map(|f| ["--compression", f]).iter().flatten());
        let out = repo.run_with_input(&args, &data);
        assert!(out.status.success(), "{}", stderr(&out));
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(repo.dump(s["id"].as_str().unwrap()) == data, "{flag:?}");
        s["summary"]["bytes_added"].as_u64().unwrap()
    };
    let fast = init("fast");
    assert_eq!(level(&fast), -1);
    let max = init("max");
    assert_eq!(level(&max), 12);
    let auto = init("auto");
    assert_eq!(level(&auto), 1);
    let (f, m, a) = (stored(&fast, None), stored(&max, None), stored(&auto, None));
    assert!(m < a && a < f, "max {m} < auto {a} < fast {f}");
    // Per snapshot: a repository whose default is fast stores a max snapshot like a max one
    // (within the chunker seeds' difference), smaller than auto.
    let again = init("fast");
    let x = stored(&again, Some("max"));
    assert!(
        x < a && x.abs_diff(m) * 100 < 3 * m,
        "max flag {x}, max repository {m}"
    );
    assert_eq!(
        level(&again),
        -1,
        "a snapshot's choice is not recorded in the config"
    );
    for bad in ["0", "23", "ultra"] {
        let out = TestRepo::uninit().run(&["init", "--compression", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            stderr(&out).contains("give fast, auto, max"),
            "{}",
            stderr(&out)
        );
    }
}
