//! Progress of the long commands (restore, verify, check --read-data, prune, sync, repair):
//! JSON lines on stderr under `--json` (a start line, an end line with every byte counted when
//! the total is known, stdout still the one result), nothing under `-q`, and a bar drawn on a
//! real pseudo-terminal (util-linux `script`).

mod common;

use std::process::{Command, Output};

use common::pg::{ok, Cluster};
use common::s3::S3Server;
use common::*;
use serde_json::Value;

/// The JSON progress lines of a run's stderr (warnings and other lines left out).
fn progress_lines(out: &Output) -> Vec<Value> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("{\"progress\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A `--json` run: progress lines for `command` from a start line to an end line, every byte
/// counted at the end when a total is known, and stdout the single JSON result. Returns the end
/// line and the result.
fn assert_progress(out: &Output, command: &str) -> (Value, Value) {
    assert!(out.status.success(), "{}", stderr(out));
    let lines = progress_lines(out);
    assert!(lines.len() >= 2, "no start and end lines: {}", stderr(out));
    for l in &lines {
        assert_eq!(l["progress"], command, "{l}");
        for field in [
            "bytes_done",
            "bytes_total",
            "items_done",
            "items_total",
            "bytes_per_sec",
        ] {
            assert!(l[field].is_u64(), "{field} in {l}");
        }
        assert!(l["phase"].is_string(), "{l}");
    }
    assert_eq!(lines[0]["event"], "start");
    let end = lines.last().unwrap().clone();
    assert_eq!(end["event"], "end", "{}", stderr(out));
    assert!(lines[1..lines.len() - 1]
        .iter()
        .all(|l| l["event"] == "update"));
    if end["bytes_total"].as_u64().unwrap() > 0 {
        assert_eq!(end["bytes_done"], end["bytes_total"], "{end}");
    }
    if end["items_total"].as_u64().unwrap() > 0 {
        assert_eq!(end["items_done"], end["items_total"], "{end}");
    }
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", stderr(out)));
    (end, result)
}

/// A `-q --json` run: the result on stdout, no progress on stderr.
fn assert_quiet(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
    assert!(
        !stderr(out).contains("\"progress\""),
        "progress under -q: {}",
        stderr(out)
    );
    let _: Value = serde_json::from_slice(&out.stdout).unwrap();
}

fn with_flags<'a>(flags: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    flags.iter().chain(args).copied().collect()
}

#[test]
fn restore_reports_bytes_of_the_snapshot_size() {
    let repo = TestRepo::new();
    let data = dump_like(1, 3 << 20);
    repo.snapshot("db.dump", &data);
    let target = repo.dir.path().join("out");
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let (end, result) = assert_progress(&repo.run(&with_flags(&["--json"], &args)), "restore");
    assert_eq!(end["phase"], "restore");
    assert_eq!(end["bytes_total"], data.len() as u64);
    assert_eq!(end["items_total"], 1);
    assert_eq!(result["bytes"], data.len() as u64);
    std::fs::remove_dir_all(&target).unwrap();
    assert_quiet(&repo.run(&with_flags(&["-q", "--json"], &args)));
}

#[test]
fn check_read_data_reports_pack_bytes_read() {
    let repo = TestRepo::new();
    repo.snapshot("a.dump", &dump_like(2, 3 << 20));
    let stored: u64 = repo
        .files("data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let args = ["check", "--read-data"];
    let (end, result) = assert_progress(&repo.run(&with_flags(&["--json"], &args)), "check");
    assert_eq!(end["phase"], "read packs");
    assert_eq!(end["bytes_total"], stored);
    assert_eq!(result["ok"], true);
    assert_quiet(&repo.run(&with_flags(&["-q", "--json"], &args)));
}

#[test]
fn prune_reports_bytes_repacked_and_packs_deleted() {
    let repo = TestRepo::new();
    // One pack holds both halves; the snapshot kept needs only the first: a repack. The second
    // half is 8 MiB so that whatever the chunker seed, chunks lie wholly in it past the one
    // spanning both halves (chunks are at most 4 MiB); that one stays as the kept snapshot's
    // delta base. (With 2 MiB, one repository in ~20 cut the rest as one chunk: nothing to
    // repack.)
    let (x, y) = (dump_like(3, 2 << 20), dump_like(4, 8 << 20));
    let both = repo.snapshot("db.dump", &[x.clone(), y].concat());
    repo.snapshot("db.dump", &x);
    let out = repo.run(&["forget", both["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let args = ["prune", "--instant-delete"];
    let (end, result) = assert_progress(&repo.run(&with_flags(&["--json"], &args)), "prune");
    assert!(result["packs_repacked"].as_u64().unwrap() > 0, "{result:#}");
    assert_eq!(end["bytes_total"], result["bytes_repacked"], "{end}");
    assert!(end["bytes_total"].as_u64().unwrap() > 0);
    assert_eq!(end["phase"], "delete packs");
    assert_eq!(end["items_total"], result["packs_deleted"], "{end}");
    assert_quiet(&repo.run(&with_flags(&["-q", "--json"], &args)));
}

#[test]
fn repair_reports_packs_scanned_and_bytes_salvaged() {
    let repo = TestRepo::new();
    repo.snapshot("a.dump", &dump_like(5, 3 << 20));
    let packs = repo.files("data");
    let (end, _) = assert_progress(&repo.run(&["--json", "repair", "index"]), "repair");
    assert_eq!(end["phase"], "read pack headers");
    assert_eq!(end["items_total"], packs.len() as u64);
    assert_quiet(&repo.run(&["-q", "--json", "repair", "index"]));

    let pack = &repo.files("data")[0];
    let mut b = std::fs::read(pack).unwrap();
    b[1000] ^= 0x01;
    std::fs::write(pack, &b).unwrap();
    let (end, result) = assert_progress(&repo.run(&["--json", "repair", "packs"]), "repair");
    assert_eq!(
        result["quarantined"].as_array().unwrap().len(),
        1,
        "{result}"
    );
    assert_eq!(end["phase"], "salvage");
    assert_eq!(end["bytes_total"], b.len() as u64);
    assert_quiet(&repo.run(&["-q", "--json", "repair", "packs"]));
}

#[test]
fn sync_reports_bytes_uploaded_from_the_spool() {
    let mut server = S3Server::start();
    let repo = TestRepo::on_s3(&server, "progress");
    repo.snapshot("a.dump", &dump_like(6, 1 << 20));
    server.stop();
    let flags = ["--retry-deadline", "1s", "snapshot", "stdin", "--name", "b"];
    let out = repo.run_with_input(&flags, &dump_like(7, 2 << 20));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    server.restart();
    let (end, result) = assert_progress(&repo.run(&["--json", "sync"]), "sync");
    assert_eq!(end["phase"], "upload");
    assert_eq!(end["bytes_total"], result["bytes"], "{end}");
    assert!(result["bytes"].as_u64().unwrap() > 0);
    assert_quiet(&repo.run(&["-q", "--json", "sync"]));
}

#[test]
fn verify_and_restore_to_a_database_report_dump_bytes() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql(
        "src",
        "CREATE TABLE t AS SELECT i, md5(i::text) AS m FROM generate_series(1, 20000) i",
    );
    let repo = TestRepo::new();
    let snap: Value = serde_json::from_slice(
        &ok(
            repo.run(&["--json", "snapshot", "postgres", &pg.url("src")]),
            "snapshot",
        )
        .stdout,
    )
    .unwrap();
    let id = snap["id"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&ok(repo.run(&["dump", id, "manifest.json"]), "dump").stdout)
            .unwrap();
    let dump_bytes = manifest["databases"][0]["dump_bytes"].as_u64().unwrap();
    assert!(dump_bytes > 0);

    let scratch = pg.url("postgres");
    let args = ["verify", id, "--scratch", &scratch];
    let (end, result) = assert_progress(&repo.run(&with_flags(&["--json"], &args)), "verify");
    assert_eq!(result["passed"], true, "{result:#}");
    assert_eq!(end["bytes_total"], dump_bytes);
    assert_eq!(end["items_total"], 1);
    assert_quiet(&repo.run(&with_flags(&["-q", "--json"], &args)));

    let copy = pg.url("copy");
    let args = ["restore", id, "--to-database", &copy, "--create"];
    let (end, _) = assert_progress(&repo.run(&with_flags(&["--json"], &args)), "restore");
    assert_eq!(end["bytes_total"], dump_bytes);
    let copy2 = pg.url("copy2");
    let args = ["restore", id, "--to-database", &copy2, "--create"];
    assert_quiet(&repo.run(&with_flags(&["-q", "--json"], &args)));
}

/// Runs `sbk ARGS` on a pseudo-terminal (util-linux `script`), returning what the terminal got.
fn on_a_terminal(repo: &TestRepo, args: &[&str]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(sbk_bin())
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let mut c = Command::new("script");
    // The environment `repo.cmd` gives sbk (repository, password, no stray SBK_ variables).
    for (k, v) in repo.cmd(&[]).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs (scripts/ci-setup.sh installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_gets_a_bar_that_is_cleared_and_quiet_gets_none() {
    let repo = TestRepo::new();
    let data = dump_like(8, 3 << 20);
    repo.snapshot("db.dump", &data);
    let target = repo.dir.path().join("out");
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let screen = on_a_terminal(&repo, &args);
    // The last frame: the full bar with bytes of the total and the rate; then it is erased
    // (ESC [2K) before the summary line.
    let size = indicatif::HumanBytes(data.len() as u64);
    let last = screen
        .rfind(&format!(
            "restore (1/1) [====================] {size}/{size}, "
        ))
        .unwrap_or_else(|| panic!("no finished bar drawn: {screen:?}"));
    let rest = &screen[last..];
    assert!(rest.contains("/s"), "{rest:?}");
    let cleared = rest.find("\x1b[2K").expect("the bar is cleared");
    assert!(rest[cleared..].contains("restored snapshot"), "{rest:?}");

    std::fs::remove_dir_all(&target).unwrap();
    let screen = on_a_terminal(&repo, &with_flags(&["-q"], &args));
    assert!(!screen.contains("restore ("), "a bar under -q: {screen:?}");
    assert!(!screen.contains('\x1b'), "{screen:?}");
}
