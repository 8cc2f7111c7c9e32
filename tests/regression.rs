//! One test per fixed defect, named after it.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn child_command_does_not_see_the_repository_password() {
    let repo = TestRepo::new();
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "env",
        "--",
        "sh",
        "-c",
        "echo \"${SBK_PASSWORD:-unset}\"",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(repo.dump("latest"), b"unset\n");
}

#[test]
fn secrets_in_connection_strings_and_queries_are_not_recorded() {
    let repo = TestRepo::new();
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "o",
        "--",
        "echo",
        "host=db user=app password=s3cret-a",
        "postgresql://db/x?sslmode=require&password=s3cret-b",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = repo.snapshots()[0].to_string();
    assert!(!s.contains("s3cret"), "{s}");
}

/// Plants a key file (correctly named by its hash) with the given KDF settings.
fn plant_key(repo: &TestRepo, m_cost: u64, p_cost: u64) {
    let json = format!(
        r#"{{"version":1,"role":"full","created":"2026-11-29T00:00:00+00:00","host":"x","username":"x",
        "kdf":{{"algorithm":"argon2id","version":19,"m_cost":{m_cost},"t_cost":1,"p_cost":{p_cost},"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}},
        "master_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#
    );
    let name = blake3::hash(json.as_bytes()).to_hex().to_string();
    std::fs::write(repo.path.join("keys").join(name), json).unwrap();
}

#[test]
fn a_key_file_with_bad_parameters_does_not_lock_out_valid_passwords() {
    let repo = TestRepo::new();
    plant_key(&repo, 1024, 0); // p_cost 0: invalid
    plant_key(&repo, 1 << 40, 1); // 1 PiB of memory: refused, not attempted
    let out = repo.run(&["snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo
        .cmd(&["snapshots"])
        .env("SBK_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
}

#[test]
fn json_output_into_a_closed_pipe_exits_zero() {
    let repo = TestRepo::new();
    for i in 0..30 {
        repo.snapshot("f", format!("{i}").as_bytes());
    }
    let mut child = spawn(repo.cmd(&["--json", "snapshots"]));
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn a_failing_run_stops_its_command_instead_of_waiting_for_it() {
    let repo = TestRepo::new();
    // Make pack staging impossible: `tmp` becomes a file.
    let tmp = repo.path.join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a folder").unwrap();
    let start = Instant::now();
    let out = repo.run(&[
        "snapshot",
        "command",
        "--name",
        "x",
        "--",
        "sh",
        "-c",
        "head -c 20000000 /dev/urandom; sleep 60; echo never",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("staging"), "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(repo.snapshots().is_empty());
}

#[test]
fn removing_a_key_needs_another_intact_key() {
    let repo = TestRepo::new();
    plant_key(&repo, 1024, 1); // parses, but opens nothing
    let keys = repo.files("keys");
    let real = keys
        .iter()
        .find(|k| {
            !std::fs::read_to_string(k)
                .unwrap()
                .contains("\"host\":\"x\"")
        })
        .unwrap();
    let name = real.file_name().unwrap().to_str().unwrap();
    // The planted key is intact JSON with role full, so it counts; a damaged one would not.
    let planted = keys.iter().find(|k| *k != real).unwrap();
    std::fs::write(planted, b"{damaged").unwrap();
    let out = repo.run(&["key", "remove", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));
}

#[test]
fn a_repository_flag_naming_a_file_exits_10_saying_not_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("some-file");
    std::fs::write(&file, b"not a repository").unwrap();
    let out = std::process::Command::new(sbk_bin())
        .args(["-r", file.to_str().unwrap(), "snapshots"])
        .env("SBK_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(err.contains("not a repository"), "{err}");
}

#[test]
fn a_plain_http_s3_endpoint_off_this_machine_is_refused_without_insecure() {
    let out = std::process::Command::new(sbk_bin())
        .args(["-r", "s3:http://192.0.2.1:9000/backups", "snapshots"])
        .env("SBK_PASSWORD", PASSWORD)
        .env("AWS_ACCESS_KEY_ID", "test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-not-real")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("plain http://") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn a_connection_off_this_machine_without_verify_full_is_warned_about() {
    let repo = TestRepo::new();
    // Nothing listens there; the warning comes before the connection is tried.
    let out = repo
        .cmd(&[
            "snapshot",
            "postgres",
            "postgresql://postgres@192.0.2.1:1/app?sslmode=require&connect_timeout=1",
        ])
        .env("PGPASSWORD", "test-password-not-real")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("does not verify the server's certificate") && err.contains("sslmode=require"),
        "{err}"
    );
    let out = repo
        .cmd(&[
            "snapshot",
            "postgres",
            "postgresql://postgres@127.0.0.1:1/app",
        ])
        .output()
        .unwrap();
    assert!(
        !stderr(&out).contains("does not verify"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn prune_collects_unreadable_unindexed_packs_after_the_grace_period() {
    let repo = TestRepo::new();
    repo.snapshot("db.dump", &dump_like(4, 1 << 20));
    // A file in data/ with a pack's name whose header is garbage (damage, or a stray copy).
    let name = "ab".repeat(32);
    let planted = repo.path.join("data").join(&name[..2]).join(&name);
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, vec![7u8; 5000]).unwrap();
    let out = repo.run(&["--json", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs_unreadable"], 1, "{v:#}");
    assert!(planted.exists(), "deleted before the grace period");
    let out = repo.run(&["--json", "prune", "--grace", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!planted.exists(), "left after the grace period");
    let out = repo.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(repo.dump("latest") == dump_like(4, 1 << 20));
}

#[test]
fn restore_without_a_destination_names_all_three() {
    let repo = TestRepo::new();
    let out = repo.run(&["restore", "latest"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0));
    for d in ["--target", "--to-database", "--to-supabase"] {
        assert!(err.contains(d), "{d} missing from: {err}");
    }
}

#[test]
fn dump_refuses_a_terminal_unless_forced() {
    let repo = TestRepo::new();
    repo.snapshot("db.dump", b"binary\x00dump");
    // `script` gives the command a pseudo-terminal as standard output.
    let run = |extra: &str| {
        std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{} dump latest {extra}", sbk_bin()),
                "/dev/null",
            ])
            .env("SBK_REPOSITORY", &repo.path)
            .env("SBK_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    };
    let out = run("");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("standard output is a terminal"), "{text}");
    assert!(!text.contains("binary"), "{text}");
    let out = run("--force");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("binary"), "{text}");
}

#[test]
fn a_password_in_the_connection_url_is_warned_about() {
    let repo = TestRepo::new();
    let out = repo
        .cmd(&[
            "snapshot",
            "postgres",
            "postgresql://postgres:visible-secret@127.0.0.1:1/app",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("password is on the command line"), "{err}");
    assert!(!err.contains("visible-secret"), "{err}");
}
