//! Test helpers: a throwaway repository driven through the real `sbk` binary, and repeatable
//! dump-like input streams.
#![allow(dead_code)]

pub mod browser;
pub mod faulty;
pub mod mail;
pub mod pg;
pub mod s3;
pub mod seaweed;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const PASSWORD: &str = "test-password-not-a-secret";

/// A repository in a temporary folder.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    /// For a repository on S3: its URL and the environment that reaches the server.
    pub remote: Option<(String, Vec<(String, String)>)>,
}

pub fn sbk_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sbk")
}

impl TestRepo {
    /// A new, initialized repository with a cheap KDF (tests only).
    pub fn new() -> Self {
        let r = Self::uninit();
        let out = r.run(&["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        r
    }

    /// A temporary folder path where no repository exists yet.
    pub fn uninit() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        TestRepo {
            dir,
            path,
            remote: None,
        }
    }

    /// A new, initialized repository at `bucket_and_prefix` on a test S3 server.
    pub fn on_s3(server: &s3::S3Server, bucket_and_prefix: &str) -> Self {
        Self::on_url(server.url(bucket_and_prefix), server.env())
    }

    /// A new, initialized repository at a remote URL reached with `env`.
    pub fn on_url(url: String, env: Vec<(String, String)>) -> Self {
        let mut r = Self::uninit();
        r.remote = Some((url, env));
        let out = r.run(&["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        r
    }

    /// An `sbk` command aimed at this repository with the test password.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(sbk_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("SBK_") {
                c.env_remove(k);
            }
        }
        c.env("SBK_REPOSITORY", &self.path)
            .env("SBK_PASSWORD", PASSWORD)
            .args(args)
            .stdin(Stdio::null());
        if let Some((url, env)) = &self.remote {
            for (k, _) in std::env::vars() {
                if k.starts_with("AWS_") {
                    c.env_remove(k);
                }
            }
            c.env("SBK_REPOSITORY", url)
                .env("SBK_CACHE_DIR", self.dir.path().join("cache"))
                .envs(env.iter().map(|(k, v)| (k, v)));
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs `sbk` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let t = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        t.join().unwrap();
        out
    }

    /// Takes a snapshot of `input` and returns its JSON summary.
    pub fn snapshot(&self, name: &str, input: &[u8]) -> serde_json::Value {
        let out = self.run_with_input(&["--json", "snapshot", "stdin", "--name", name], input);
        assert!(out.status.success(), "snapshot failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `sbk dump` output.
    pub fn dump(&self, id: &str) -> Vec<u8> {
        let out = self.run(&["dump", id]);
        assert!(out.status.success(), "dump failed: {}", stderr(&out));
        out.stdout
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["--json", "snapshots"]);
        assert!(out.status.success(), "snapshots failed: {}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    /// Files of a repository folder (relative paths), e.g. "index" or "data".
    pub fn files(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path.join(sub), &mut out);
        out.sort();
        out
    }
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Its output is pinned by the golden repository test: never change it.
///
/// A repeatable stream that looks like a `COPY` section of a dump: tab-separated rows with ids,
/// words and numbers. Compresses about 3x, like real table data.
pub struct DumpLike {
    state: u64,
    row: u64,
    remaining: u64,
    line: Vec<u8>,
    pos: usize,
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
];

impl DumpLike {
    pub fn new(seed: u64, len: u64) -> Self {
        DumpLike {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            row: 0,
            remaining: len,
            line: Vec::new(),
            pos: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn refill(&mut self) {
        self.line.clear();
        self.pos = 0;
        self.row += 1;
        let r = self.next_u64();
        let w1 = WORDS[(r % 20) as usize];
        let w2 = WORDS[((r >> 8) % 20) as usize];
        let n = (r >> 16) % 1_000_000;
        let h = self.next_u64();
        let _ = writeln!(
            self.line,
            "{}\t{w1} {w2}\t{n}\t{h:016x}\t2026-11-{:02}",
            self.row,
            1 + (r >> 40) % 28
        );
    }
}

impl Read for DumpLike {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.remaining > 0 {
            if self.pos == self.line.len() {
                self.refill();
            }
            let take = (self.line.len() - self.pos)
                .min(buf.len() - n)
                .min(self.remaining as usize);
            buf[n..n + take].copy_from_slice(&self.line[self.pos..self.pos + take]);
            self.pos += take;
            n += take;
            self.remaining -= take as u64;
        }
        Ok(n)
    }
}

/// `len` bytes of [`DumpLike`] in memory.
pub fn dump_like(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    DumpLike::new(seed, len as u64).read_to_end(&mut v).unwrap();
    v
}

/// Applies one day's drift to a dump-like stream: every 97th row changed, a block of rows moved
/// to the end (as PostgreSQL moves updated rows), a row inserted and one deleted.
pub fn drift(data: &[u8], day: u64) -> Vec<u8> {
    let rows: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(rows.len() + 1);
    let mut moved = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if (i as u64 + day * 13).is_multiple_of(97) {
            moved.push(format!("{i}\tupdated on day {day}\t{}\n", i as u64 * day).into_bytes());
        } else if i as u64 == 500 + day * 7 {
            continue; // deleted
        } else {
            out.push(r.to_vec());
        }
    }
    out.insert(
        (day as usize * 1000) % out.len().max(1),
        format!("inserted on day {day}\n").into_bytes(),
    );
    out.extend(moved);
    out.concat()
}

/// Spawns `sbk` with piped stdin/stdout/stderr.
pub fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn u64_of(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

/// Polls a process's peak resident set (`VmHWM`) until stopped.
pub struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    pub fn watch(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0u64;
            let mut exec_seen = false;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    // Only count the process once it runs sbk (after exec).
                    let is_sbk = s.lines().next().is_some_and(|l| l.contains("sbk"));
                    exec_seen |= is_sbk;
                    if is_sbk {
                        for l in s.lines() {
                            if let Some(v) = l.strip_prefix("VmHWM:") {
                                let kb: u64 =
                                    v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                                peak = peak.max(kb * 1024);
                            }
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(exec_seen, "never saw the sbk process");
            peak
        });
        PeakRss { stop, thread }
    }

    /// Stops polling and returns the peak in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Polls `ok` until it holds; panics naming `what` after `timeout`. For waiting on a state
/// instead of sleeping for a guess.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
