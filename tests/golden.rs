//! The golden repository: made by format version 1 and kept under `tests/golden/v1`. Every later
//! sbk must still read it, byte for byte. Regenerate only when the format version changes (and
//! then keep the old one too): `cargo test --test golden -- --ignored make_golden_v1`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const GOLDEN_PASSWORD: &str = "golden-repository-password";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn golden_delta_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-delta")
}

/// Three versions of a dump, each with every 50th row changed: stored as delta blobs.
fn golden_delta_inputs() -> Vec<Vec<u8>> {
    let mut data = dump_like(43, 1_500_000);
    let mut out = vec![data.clone()];
    for day in 1..3 {
        let rows: Vec<Vec<u8>> = data
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .map(|(i, r)| {
                if i % 50 == day {
                    format!("{i}\tchanged on day {day}\n").into_bytes()
                } else {
                    r.to_vec()
                }
            })
            .collect();
        data = rows.concat();
        out.push(data.clone());
    }
    out
}

/// The files the golden snapshots hold, in snapshot order.
fn golden_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let base = dump_like(42, 1_500_000);
    let mut changed = base[..700_000].to_vec();
    changed.extend_from_slice(b"a row inserted between snapshots\n");
    changed.extend_from_slice(&base[700_000..]);
    vec![
        ("app.pgdump", base),
        ("app.pgdump", changed),
        ("globals.sql", b"CREATE ROLE app;\n".to_vec()),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Checks that the golden repository at `dir` lists one snapshot per input, in order, and that
/// each restores byte for byte; returns the snapshots' JSON for further checks.
fn check_golden(dir: &Path, inputs: &[(&str, Vec<u8>)]) -> Vec<serde_json::Value> {
    let repo = TestRepo::uninit();
    copy_dir(dir, &repo.path);
    let run = |args: &[&str]| {
        repo.cmd(args)
            .env("SBK_PASSWORD", GOLDEN_PASSWORD)
            .output()
            .unwrap()
    };
    let out = run(&["--json", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.len(), inputs.len());
    for (snap, (name, data)) in snaps.iter().zip(inputs) {
        let out = run(&["dump", snap["id"].as_str().unwrap(), name]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            out.stdout == *data,
            "golden snapshot {} in {} changed",
            snap["short_id"],
            dir.display()
        );
        assert_eq!(snap["host"], "golden-host");
    }
    let out = run(&["cat", "config"]);
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["version"], 1);
    snaps
}

#[test]
fn golden_v1_repository_still_reads() {
    check_golden(&golden_dir(), &golden_inputs());
}

#[test]
fn golden_v1_delta_repository_still_reads() {
    let inputs: Vec<_> = golden_delta_inputs()
        .into_iter()
        .map(|d| ("app.pgdump", d))
        .collect();
    let snaps = check_golden(&golden_delta_dir(), &inputs);
    assert!(snaps[1]["summary"]["blobs_delta"].as_u64().unwrap() > 0);
    assert!(snaps[2]["summary"]["blobs_delta"].as_u64().unwrap() > 0);
}

/// Writes a golden repository at `dir` from snapshots of (file name, content, extra args).
fn make_golden(dir: &Path, snapshots: &[(&str, Vec<u8>, &[&str])]) {
    assert!(
        !dir.exists(),
        "{} exists: a golden repository is never regenerated in place",
        dir.display()
    );
    let repo = TestRepo::uninit();
    let run_in = |args: &[&str], input: &[u8]| {
        let mut c = repo.cmd(args);
        c.env("SBK_PASSWORD", GOLDEN_PASSWORD);
        let mut child = spawn(c);
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run_in(
        &["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"],
        b"",
    );
    for (i, (name, data, extra)) in snapshots.iter().enumerate() {
        let time = format!("2026-11-29T0{i}:00:00+01:00");
        let mut args = vec![
            "snapshot",
            "stdin",
            "--name",
            name,
            "--host",
            "golden-host",
            "--time",
            &time,
        ];
        args.extend_from_slice(extra);
        run_in(&args, data);
    }
    copy_dir(&repo.path, dir);
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
}

#[test]
#[ignore]
fn make_golden_v1_delta() {
    let snapshots: Vec<_> = golden_delta_inputs()
        .into_iter()
        .map(|d| ("app.pgdump", d, &[][..]))
        .collect();
    make_golden(&golden_delta_dir(), &snapshots);
}

#[test]
#[ignore]
fn make_golden_v1() {
    let snapshots: Vec<_> = golden_inputs()
        .into_iter()
        .map(|(name, d)| (name, d, &["--tag", "golden"][..]))
        .collect();
    make_golden(&golden_dir(), &snapshots);
}
