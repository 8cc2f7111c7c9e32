//! Keys cannot be lost: removals cannot race to zero keys, damaged or planted key files are
//! skipped with their own messages, key-file metadata is authenticated, and a paper recovery
//! sheet brings a repository back when every password is lost.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const KDF: [&str; 4] = ["--kdf-memory-kib", "1024", "--kdf-iterations", "1"];

fn with_password(repo: &TestRepo, pw: &str, args: &[&str]) -> std::process::Output {
    repo.cmd(args).env("SBK_PASSWORD", pw).output().unwrap()
}

fn add_key(repo: &TestRepo, new_pw: &str) -> String {
    let mut args = vec!["--json", "key", "add"];
    args.extend(KDF);
    let out = repo
        .cmd(&args)
        .env("SBK_NEW_PASSWORD", new_pw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn key_files(repo: &TestRepo) -> Vec<PathBuf> {
    repo.files("keys")
}

fn golden_copy(dir: &Path) -> PathBuf {
    let to = dir.join("golden");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1"))
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success());
    to
}

/// Two `key remove`s of the two keys at once, many rounds: one key always survives and opens.
#[test]
fn concurrent_removes_never_leave_no_key() {
    for round in 0..6 {
        let repo = TestRepo::new();
        let second = add_key(&repo, "second-password");
        let out = repo.run(&["--json", "key", "list"]);
        let keys: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let first = keys
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .find(|k| *k != second)
            .unwrap();
        let a = repo.cmd(&["key", "remove", &first]).spawn().unwrap();
        let b = repo
            .cmd(&["key", "remove", &second])
            .env("SBK_PASSWORD", "second-password")
            .spawn()
            .unwrap();
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert!(
            !(a.status.success() && b.status.success()),
            "round {round}: both removals succeeded"
        );
        let left = key_files(&repo).len();
        assert!(left >= 1, "round {round}: no key left");
        let opens = [PASSWORD, "second-password"]
            .iter()
            .any(|pw| with_password(&repo, pw, &["snapshots"]).status.success());
        assert!(opens, "round {round}: no password opens the repository");
    }
}

/// Wrong password, a damaged only key, no key at all: three different messages.
#[test]
fn wrong_password_damaged_key_and_no_key_are_told_apart() {
    let repo = TestRepo::new();
    let out = with_password(&repo, "not-the-password", &["snapshots"]);
    assert_eq!(out.status.code(), Some(12));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    // One flipped byte in the clear JSON of the only key (its host): bound by the sealed key.
    let key = key_files(&repo).pop().unwrap();
    let text = std::fs::read_to_string(&key).unwrap();
    let host_at = text.find("\"host\"").unwrap() + 10;
    let mut b = text.into_bytes();
    b[host_at] ^= 0x01;
    std::fs::write(&key, &b).unwrap();
    let out = repo.run(&["snapshots"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("damaged") && err.contains("key file"), "{err}");
    assert!(!err.contains("wrong password"), "{err}");
    // Renamed to its new hash, as a tamperer would: the metadata no longer opens the key.
    let renamed = key.with_file_name(hex::encode(blake3::hash(&b).as_bytes()));
    std::fs::rename(&key, &renamed).unwrap();
    let out = repo.run(&["snapshots"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(12), "{err}");
    std::fs::remove_file(&renamed).unwrap();
    let out = repo.run(&["snapshots"]);
    let err = stderr(&out);
    assert!(err.contains("no usable key"), "{err}");
    assert!(!err.contains("wrong password"), "{err}");
}

/// A version-1 key file (not bound) whose clear host was changed still opens, with a warning
/// naming the way out; a planted key file asking Argon2 for too much is refused unrun.
#[test]
fn an_old_key_with_a_changed_host_still_opens_and_planted_keys_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden_copy(dir.path());
    let key = std::fs::read_dir(golden.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&key).unwrap();
    let kf: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(kf["version"], 1);
    let host = kf["host"].as_str().unwrap().to_string();
    std::fs::write(&key, text.replacen(&host, "elsewhere", 1)).unwrap();
    // A planted key: 3 GiB of Argon2 memory asked, a name that matches its bytes.
    let mut planted = kf.clone();
    planted["kdf"]["m_cost"] = serde_json::json!(3u64 << 20);
    let bytes = serde_json::to_vec(&planted).unwrap();
    std::fs::write(
        golden
            .join("keys")
            .join(hex::encode(blake3::hash(&bytes).as_bytes())),
        &bytes,
    )
    .unwrap();
    let out = std::process::Command::new(sbk_bin())
        .args(["-r", golden.to_str().unwrap(), "snapshots"])
        .env("SBK_PASSWORD", "golden-repository-password")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("do not match its name (it still opens)") && err.contains("sbk key add"),
        "{err}"
    );
    // With a wrong password every key is tried: the planted one is refused at once, not run,
    // and with no intact key file left the message says so (not "wrong password").
    let out = std::process::Command::new(sbk_bin())
        .args(["-r", golden.to_str().unwrap(), "snapshots"])
        .env("SBK_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no intact key file was left"), "{err}");
}

/// Every key lost: the recovery sheet adds one for a new password; data reads back exactly.
#[test]
fn a_recovery_sheet_brings_back_a_repository_with_no_key() {
    let repo = TestRepo::new();
    let data = dump_like(3, 3 << 20);
    let snap = repo.snapshot("db.dump", &data);
    let out = repo.run(&["key", "export", "--recovery"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sheet = String::from_utf8(out.stdout).unwrap();
    assert!(
        sheet.contains("recovery sheet") && sheet.contains("check"),
        "{sheet}"
    );
    assert!(!sheet.contains(PASSWORD));
    for k in key_files(&repo) {
        std::fs::remove_file(k).unwrap();
    }
    assert!(!repo.run(&["snapshots"]).status.success());
    // A mistyped digit is caught before anything is written or asked.
    let typo = {
        let line = sheet.lines().find(|l| l.starts_with("encrypt")).unwrap();
        let c = line.chars().last().unwrap();
        let swapped = if c == '0' { '1' } else { '0' };
        sheet.replacen(line, &format!("{}{swapped}", &line[..line.len() - 1]), 1)
    };
    let out = repo
        .cmd(&["key", "import", "--recovery"])
        .env("SBK_NEW_PASSWORD", "recovered-password")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(typo.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(stderr(&out).contains("mistyped"), "{}", stderr(&out));
    assert!(key_files(&repo).is_empty());
    // Another repository's sheet does not open this one.
    let other = TestRepo::new();
    let other_sheet = other.run(&["key", "export", "--recovery"]).stdout;
    let path = repo.dir.path().join("other-sheet.txt");
    std::fs::write(&path, &other_sheet).unwrap();
    let out = repo
        .cmd(&["key", "import", "--recovery", path.to_str().unwrap()])
        .env("SBK_NEW_PASSWORD", "recovered-password")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("another repository"),
        "{}",
        stderr(&out)
    );
    // The right sheet.
    let path = repo.dir.path().join("sheet.txt");
    std::fs::write(&path, &sheet).unwrap();
    let mut args = vec!["key", "import", "--recovery", path.to_str().unwrap()];
    args.extend(KDF);
    let out = repo
        .cmd(&args)
        .env("SBK_NEW_PASSWORD", "recovered-password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with_password(&repo, "recovered-password", &["dump", "latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data);
    let id = snap["id"].as_str().unwrap();
    let out = with_password(&repo, "recovered-password", &["check", "--read-data"]);
    assert!(out.status.success(), "{id}: {}", stderr(&out));
}
