//! The run history: one append-only file of JSON lines (`history.jsonl` in the state folder),
//! a `start` line when a run begins and a `finish` line with every step's result when it ends.
//! Each line is written with one `write` on a file opened for appending and then fsync'ed, so a
//! crash loses at most the line being written; a torn last line is skipped when reading, and a
//! `start` without its `finish` reads as a run that was cut short. Status, metrics, reports and
//! alert state are all computed from this file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the history in the state folder.
pub const FILE: &str = "history.jsonl";

/// Why a run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// `sbk run`.
    Manual,
    /// The daemon, at a scheduled time.
    Schedule,
    /// The daemon, for a run missed while it was down.
    CatchUp,
}

/// How a run or step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    Failure,
    /// Stopped by a shutdown request, or cut short by a crash (a `start` with no `finish`).
    Interrupted,
    /// Not run: not due, or an earlier step failed.
    Skipped,
}

/// The steps of a job, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Snapshot,
    Forget,
    Prune,
    Check,
    Drill,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Snapshot => "snapshot",
            Step::Forget => "forget",
            Step::Prune => "prune",
            Step::Check => "check",
            Step::Drill => "drill",
        }
    }
}

/// Figures of a snapshot step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFacts {
    pub id: String,
    pub time: DateTime<Utc>,
    pub bytes_in: u64,
    pub bytes_added: u64,
    pub bytes_added_raw: u64,
    pub blobs_new: u64,
    pub blobs_delta: u64,
    /// Seconds spent writing to the repository, summed over connections.
    pub upload_secs: f64,
    /// Kept in the local spool: the repository was unreachable.
    #[serde(default)]
    pub spooled: bool,
}

impl SnapshotFacts {
    /// Plaintext of the new blobs over their stored size.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.bytes_added_raw, self.bytes_added)
    }

    /// Bytes read over the plaintext of the new blobs: what deduplication and deltas saved.
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.bytes_in, self.bytes_added_raw)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Figures of a restore drill.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillFacts {
    pub snapshot: String,
    pub ok: bool,
    pub restore_secs: f64,
    pub tables: usize,
    pub mismatches: usize,
}

/// The repository after the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepositoryFacts {
    /// Stored bytes of every indexed pack.
    pub size_bytes: u64,
    pub snapshots: u64,
    /// Damaged files the run passed over ("snapshot 1a2b3c4d: … — `sbk forget 1a2b3c4d` …").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
}

/// One step's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub outcome: Outcome,
    pub started: DateTime<Utc>,
    pub duration_secs: f64,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// The last attempt's error (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A one-line summary ("removed 3 snapshots", "2 packs deleted").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// A finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    pub run: String,
    pub host: String,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub outcome: Outcome,
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryFacts>,
    /// Failed attempts of any step during the run (retries included).
    #[serde(default)]
    pub failed_attempts: u32,
    /// The WAL archive's lag measured at the end of the run (jobs taking base backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<super::wal_lag::WalLag>,
}

impl RunRecord {
    pub fn duration_secs(&self) -> f64 {
        (self.finished - self.started).num_milliseconds() as f64 / 1000.0
    }

    /// The failed step and its error, if the run failed.
    pub fn failure(&self) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.outcome == Outcome::Failure)
    }
}

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    Start {
        job: String,
        run: String,
        pid: u32,
        trigger: Trigger,
        started: DateTime<Utc>,
    },
    Finish(Box<RunRecord>),
    /// An alert sent (or given up on), so a restarted daemon knows what was said.
    Alert {
        job: String,
        kind: super::alert::AlertKind,
        at: DateTime<Utc>,
        delivered: bool,
    },
    /// A measurement of the WAL archive's lag (in [`super::wal_lag::FILE`], not the history).
    WalLag(Box<super::wal_lag::WalLag>),
}

/// The history file of a state folder.
#[derive(Clone, Debug)]
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn new(state_dir: &Path) -> Self {
        History {
            path: state_dir.join(FILE),
        }
    }

    /// Another file of entries in the state folder ([`super::wal_lag::FILE`]).
    pub fn named(state_dir: &Path, file: &str) -> Self {
        History {
            path: state_dir.join(file),
        }
    }

    /// Rewrites the file with only the entries `keep` accepts (a temporary file, then a
    /// rename: a crash leaves the old file or the new one).
    pub fn retain(&self, keep: impl Fn(&Entry) -> bool) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create", dir, e))?;
        for e in self.entries()?.iter().filter(|e| keep(e)) {
            let mut line = serde_json::to_vec(e).expect("history entries serialize");
            line.push(b'\n');
            tmp.write_all(&line)
                .map_err(|e| Error::io("write", tmp.path().to_owned(), e))?;
        }
        tmp.as_file()
            .sync_data()
            .map_err(|e| Error::io("write", tmp.path().to_owned(), e))?;
        tmp.persist(&self.path)
            .map_err(|e| Error::io("rename to", &self.path, e.error))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry durably.
    pub fn append(&self, entry: &Entry) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            crate::cleanup::tighten(dir)?;
        }
        crate::cleanup::tighten(&self.path)?;
        let mut line = serde_json::to_vec(entry).expect("history entries serialize");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, e))?;
        // A line torn by a crash must not swallow this one.
        if ends_torn(&mut f).map_err(|e| Error::io("read", &self.path, e))? {
            line.insert(0, b'\n');
        }
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io("append to", &self.path, e))
    }

    /// Every entry, oldest first; unreadable lines (a torn last write) are skipped.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        let mut out = Vec::new();
        for line in BufReader::new(f).split(b'\n') {
            let line = line.map_err(|e| Error::io("read", &self.path, e))?;
            if let Ok(entry) = serde_json::from_slice::<Entry>(&line) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Finished runs, oldest first, with runs that started and never finished (a crash, a
    /// kill) as interrupted runs, unless `running` says they are still going.
    pub fn runs(&self, running: &dyn Fn(&str, &str) -> bool) -> Result<Vec<RunRecord>> {
        let entries = self.entries()?;
        let finished: std::collections::HashSet<&str> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Finish(r) => Some(r.run.as_str()),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for e in &entries {
            match e {
                Entry::Finish(r) => out.push((**r).clone()),
                Entry::Start {
                    job,
                    run,
                    trigger,
                    started,
                    ..
                } if !finished.contains(run.as_str()) && !running(job, run) => {
                    out.push(RunRecord {
                        job: job.clone(),
                        run: run.clone(),
                        host: String::new(),
                        trigger: *trigger,
                        started: *started,
                        finished: *started,
                        outcome: Outcome::Interrupted,
                        steps: Vec::new(),
                        snapshot: None,
                        drill: None,
                        repository: None,
                        failed_attempts: 0,
                        wal: None,
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Whether the file's last byte is not a newline.
fn ends_torn(f: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8];
    f.read_exact(&mut b)?;
    Ok(b[0] != b'\n')
}

/// A run ID: start time and process, unique on one machine.
pub fn new_run_id(started: DateTime<Utc>) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}-{}",
        started.format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, run: &str, outcome: Outcome) -> RunRecord {
        let t = Utc::now();
        RunRecord {
            job: job.into(),
            run: run.into(),
            host: "h".into(),
            trigger: Trigger::Manual,
            started: t,
            finished: t,
            outcome,
            steps: vec![StepRecord {
                step: Step::Snapshot,
                outcome,
                started: t,
                duration_secs: 1.5,
                attempts: 1,
                error: None,
                summary: "ok".into(),
            }],
            snapshot: Some(SnapshotFacts::default()),
            drill: None,
            repository: Some(RepositoryFacts {
                size_bytes: 10,
                snapshots: 1,
                damaged: vec!["snapshot 1a2b3c4d: damaged (`sbk forget 1a2b3c4d`)".into()],
            }),
            failed_attempts: 0,
            wal: None,
        }
    }

    #[test]
    fn round_trip_torn_lines_and_unfinished_runs() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path());
        assert!(h.entries().unwrap().is_empty());
        let start = |run: &str| Entry::Start {
            job: "a".into(),
            run: run.into(),
            pid: 1,
            trigger: Trigger::Schedule,
            started: Utc::now(),
        };
        h.append(&start("r1")).unwrap();
        h.append(&Entry::Finish(Box::new(record(
            "a",
            "r1",
            Outcome::Success,
        ))))
        .unwrap();
        h.append(&start("r2")).unwrap();
        // A crash in the middle of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .unwrap()
            .write_all(b"{\"event\":\"finish\",\"job\":\"a\",\"ru")
            .unwrap();
        let entries = h.entries().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[1],
            Entry::Finish(Box::new(record_like(&entries[1])))
        );
        let runs = h.runs(&|_, _| false).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].outcome, Outcome::Success);
        assert_eq!(runs[1].outcome, Outcome::Interrupted);
        // Still running: not reported as interrupted.
        assert_eq!(h.runs(&|_, run| run == "r2").unwrap().len(), 1);
        // The torn line does not swallow the next one.
        h.append(&Entry::Finish(Box::new(record(
            "a",
            "r3",
            Outcome::Failure,
        ))))
        .unwrap();
        let runs = h.runs(&|_, _| false).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[2].outcome, Outcome::Failure);
    }

    #[test]
    fn retain_rewrites_the_file_with_the_kept_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::named(dir.path(), "other.jsonl");
        let old = Utc::now() - chrono::Duration::days(40);
        for (job, at) in [("a", old), ("b", Utc::now())] {
            h.append(&Entry::WalLag(Box::new(
                crate::automation::wal_lag::WalLag {
                    job: job.into(),
                    at,
                    lag_secs: Some(0),
                    newest: None,
                    newest_age_secs: None,
                    current: None,
                    alert_secs: None,
                    over: false,
                    error: None,
                },
            )))
            .unwrap();
        }
        let cutoff = Utc::now() - chrono::Duration::days(30);
        h.retain(|e| matches!(e, Entry::WalLag(m) if m.at >= cutoff))
            .unwrap();
        let left = h.entries().unwrap();
        assert_eq!(left.len(), 1);
        assert!(matches!(&left[0], Entry::WalLag(m) if m.job == "b"));
        assert!(
            !dir.path().join(FILE).exists(),
            "the run history is untouched"
        );
    }

    #[test]
    fn the_documented_lines_parse_and_round_trip() {
        let doc = include_str!("../../docs/automation.md");
        let lines: Vec<&str> = doc
            .lines()
            .filter(|l| l.starts_with("{\"event\""))
            .collect();
        assert_eq!(lines.len(), 4);
        for line in lines {
            let e: Entry = serde_json::from_str(line).unwrap();
            let again: Entry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(e, again);
        }
    }

    fn record_like(e: &Entry) -> RunRecord {
        match e {
            Entry::Finish(r) => (**r).clone(),
            _ => panic!("not a finish"),
        }
    }
}
