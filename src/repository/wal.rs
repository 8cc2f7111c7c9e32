//! The WAL archive (`docs/pitr.md`): one sealed file per WAL file PostgreSQL archives, named
//! `<WAL file name>-<id>` so that a lookup by name is one prefix listing, while the hash of the
//! stored bytes stays in the name as for every other file. Not chunked: consecutive segments
//! share nothing at chunk granularity, and one file is the one write that makes a push durable.

use super::*;

/// What [`Repository::push_wal`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pushed {
    /// Stored now, as this file.
    Stored(Id),
    /// The same bytes were archived already (PostgreSQL ran the command again).
    AlreadyStored,
}

/// Whether `name` is a file PostgreSQL archives: a segment (24 hex digits), a partial segment
/// (`.partial`), a timeline history file (8 hex digits + `.history`) or a backup history file
/// (segment + `.` + 8 hex digits + `.backup`).
pub fn is_wal_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest
            .split_once('.')
            .is_some_and(|(seg, off)| hex(seg, 24) && hex(off, 8));
    }
    hex(name, 24)
}

/// The archive at a glance (`sbk wal status`): per timeline, the first and last segment and the
/// segments missing between them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WalStatus {
    pub files: usize,
    pub bytes: u64,
    pub timelines: Vec<TimelineStatus>,
    /// The archive's head: the newest segment (highest timeline, then position).
    pub newest: Option<String>,
    /// When the head was archived (the store's time of its file).
    pub newest_archived_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds since then: on a server writing steadily, how far the archive lags.
    pub newest_age_seconds: Option<u64>,
}

/// One timeline's segments.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TimelineStatus {
    pub timeline: u32,
    pub segments: usize,
    pub first: String,
    pub last: String,
    /// Missing runs, first and last missing segment of each.
    pub gaps: Vec<(String, String)>,
}

/// Segments per "log" file number with the default 16 MiB segment size (the only size this
/// status reads; clusters initialised with another `--wal-segsize` show false gaps).
const SEGMENTS_PER_LOG: u64 = 0x1_0000_0000 / (16 << 20);

/// A segment's timeline and position (segment number), for plain segments.
fn segment_position(name: &str) -> Option<(u32, u64)> {
    if name.len() != 24 || !is_wal_name(name) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    Some((tli, log * SEGMENTS_PER_LOG + seg))
}

/// The segment position holding WAL location `lsn` (`X/Y` hex, as PostgreSQL prints it).
pub fn lsn_position(lsn: &str) -> Option<u64> {
    Some(parse_lsn(lsn)? / (16 << 20))
}

/// A WAL location (`X/Y` hex) as a number.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The `n` segment names after segment `name` on its timeline (none when `name` is not a
/// plain segment).
pub fn next_segments(name: &str, n: usize) -> Vec<String> {
    match segment_position(name) {
        Some((tli, pos)) => (1..=n as u64).map(|i| segment_name(tli, pos + i)).collect(),
        None => Vec::new(),
    }
}

fn segment_name(tli: u32, pos: u64) -> String {
    format!(
        "{tli:08X}{:08X}{:08X}",
        pos / SEGMENTS_PER_LOG,
        pos % SEGMENTS_PER_LOG
    )
}

/// Where a base backup lies in the WAL: its timeline and the segment positions of its start
/// and end (what recovery needs to make it consistent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalSpan {
    pub timeline: u32,
    pub start: u64,
    pub end: u64,
}

/// Segments (or a timeline history file) recovery needs and the archive lacks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WalGap {
    pub timeline: u32,
    /// The first and last missing file.
    pub first: String,
    pub last: String,
    /// The first missing segment's position (the timeline's first judged one for a missing
    /// history file).
    #[serde(skip)]
    pub position: u64,
}

impl WalGap {
    fn segments(tli: u32, first: u64, last: u64) -> Self {
        WalGap {
            timeline: tli,
            first: segment_name(tli, first),
            last: segment_name(tli, last),
            position: first,
        }
    }
}

/// The archived WAL `prune` keeps: every segment from `from` on, and each range of `ranges`
/// (the WAL that older kept base backups need to become consistent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalKeep {
    pub from: u64,
    pub ranges: Vec<(u64, u64)>,
}

impl WalKeep {
    /// What to keep for the kept base backups `bases` (span, when the backup finished): by
    /// default everything from the oldest one's start, so that each can be recovered to any
    /// later point. With `window`, point-in-time recovery is kept over that window only: the
    /// WAL from the start of the newest base backup finished before `now - window` (or the
    /// oldest, when none is that old), and for older ones just what makes them consistent.
    /// `None` when no base backup is kept: nothing is removed then.
    pub fn plan(
        bases: &[(WalSpan, chrono::DateTime<chrono::Utc>)],
        window: Option<std::time::Duration>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<WalKeep> {
        let oldest = bases.iter().min_by_key(|(s, _)| s.start)?;
        let anchor = window
            .and_then(|w| chrono::Duration::from_std(w).ok())
            .and_then(|w| {
                bases
                    .iter()
                    .filter(|(_, finished)| *finished <= now - w)
                    .max_by_key(|(s, _)| s.start)
            })
            .unwrap_or(oldest);
        let from = anchor.0.start;
        let ranges = bases
            .iter()
            .filter(|(s, _)| s.start < from)
            .map(|(s, _)| (s.start, s.end))
            .collect();
        Some(WalKeep { from, ranges })
    }

    fn keeps(&self, pos: u64) -> bool {
        pos >= self.from || self.ranges.iter().any(|&(a, b)| (a..=b).contains(&pos))
    }
}

fn wal_aad(name: &str) -> Vec<u8> {
    [aad::WAL, name.as_bytes()].concat()
}

fn check_wal_name(name: &str) -> Result<()> {
    if is_wal_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name:?} is not a WAL file name (a segment such as 000000010000000000000001, a \
             .partial, .history or .backup file)"
        )))
    }
}

impl Repository {
    /// Archives the WAL file `name` with bytes `data`. Succeeds when the same bytes are
    /// archived already; refuses different bytes under the same name.
    pub fn push_wal(&self, name: &str, data: &[u8]) -> Result<Pushed> {
        check_wal_name(name)?;
        if let Some(stored) = self.fetch_wal(name)? {
            if blake3::hash(&stored) == blake3::hash(data) {
                return Ok(Pushed::AlreadyStored);
            }
            return Err(Error::Refused(format!(
                "a different WAL file {name} is archived already (stored BLAKE3 {}, this one {}): \
                 are two clusters archiving into one repository? Nothing was stored",
                blake3::hash(&stored).to_hex(),
                blake3::hash(data).to_hex()
            )));
        }
        let sealed = self.key.seal(
            &wal_aad(name),
            &payload::encode(data, self.config.compression.level.min(MAX_FILE_LEVEL)),
        );
        let id = Id::of_file_bytes(&sealed);
        self.backend
            .write(FileType::Wal, &format!("{name}-{}", id.to_hex()), &sealed)?;
        Ok(Pushed::Stored(id))
    }

    /// The bytes of the archived WAL file `name`, or `None` when it is not archived. A stored
    /// copy that fails its checks is an error, never bytes.
    pub fn fetch_wal(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_wal_name(name)?;
        let prefix = format!("{name}-");
        let stored = self.backend.list_prefix(FileType::Wal, &prefix)?;
        let mut failure = None;
        for f in stored {
            let Some(id) = f.name.strip_prefix(&prefix).and_then(Id::from_hex) else {
                continue;
            };
            match self.open_wal(name, &f.name, &id) {
                Ok(data) => return Ok(Some(data)),
                // Another copy (two pushes that raced) may be whole.
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// The names of the archived WAL files (one per name, however many copies).
    pub fn wal_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .backend
            .list(FileType::Wal)?
            .into_iter()
            .filter_map(|f| {
                let (name, id) = f.name.rsplit_once('-')?;
                (is_wal_name(name) && Id::from_hex(id).is_some()).then(|| name.to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// What the archive holds, per timeline, with its gaps.
    pub fn wal_status(&self) -> Result<WalStatus> {
        let files = self.backend.list(FileType::Wal)?;
        let mut status = WalStatus {
            files: files.len(),
            bytes: files.iter().map(|f| f.size).sum(),
            ..Default::default()
        };
        let mut by_tli: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
        let mut head: Option<((u32, u64), &str, Option<std::time::SystemTime>)> = None;
        for f in &files {
            let Some((name, id)) = f.name.rsplit_once('-') else {
                continue;
            };
            if Id::from_hex(id).is_none() {
                continue;
            }
            if let Some(at) = segment_position(name) {
                by_tli.entry(at.0).or_default().push(at.1);
                if head.as_ref().is_none_or(|h| at > h.0) {
                    head = Some((at, name, f.modified));
                }
            }
        }
        if let Some((_, name, modified)) = head {
            status.newest = Some(name.to_string());
            status.newest_archived_at = modified.map(chrono::DateTime::<chrono::Utc>::from);
            status.newest_age_seconds = modified.map(|m| {
                std::time::SystemTime::now()
                    .duration_since(m)
                    .unwrap_or_default()
                    .as_secs()
            });
        }
        for (tli, mut positions) in by_tli {
            positions.sort_unstable();
            positions.dedup();
            let gaps = positions
                .windows(2)
                .filter(|w| w[1] > w[0] + 1)
                .map(|w| (segment_name(tli, w[0] + 1), segment_name(tli, w[1] - 1)))
                .collect();
            status.timelines.push(TimelineStatus {
                timeline: tli,
                segments: positions.len(),
                first: segment_name(tli, positions[0]),
                last: segment_name(tli, *positions.last().expect("non-empty")),
                gaps,
            });
        }
        Ok(status)
    }

    /// Removes the archived WAL that `keep` does not keep (plain segments, partial segments and
    /// backup history files, by their segment); timeline history files always stay (they are
    /// tiny and recovery reads them). Returns the files and bytes removed (or, with `dry_run`,
    /// that would be).
    pub fn remove_unneeded_wal(&self, keep: &WalKeep, dry_run: bool) -> Result<(usize, u64)> {
        let mut removed = (0, 0);
        for f in self.backend.list(FileType::Wal)? {
            let Some((name, _)) = f.name.rsplit_once('-') else {
                continue;
            };
            let segment = name.get(..24).unwrap_or(name);
            let old = !name.ends_with(".history")
                && segment_position(segment).is_some_and(|(_, pos)| !keep.keeps(pos));
            if old {
                if !dry_run {
                    self.backend
                        .remove(FileType::Wal, &f.name)
                        .map_err(|e| super::lock::refused_delete(e, "remove old WAL"))?;
                    self.journal.removed_wal(&f.name);
                }
                removed.0 += 1;
                removed.1 += f.size;
            }
        }
        Ok(removed)
    }

    /// The runs of segments that recovery from `bases` needs and the archive lacks: on each
    /// base backup's timeline every segment from its start to the newest archived there (at
    /// least to its end); on each later timeline every segment from its first archived to its
    /// last, and its history file. Timelines older than every base backup are not judged.
    pub fn wal_gaps(&self, bases: &[WalSpan]) -> Result<Vec<WalGap>> {
        let names = self.wal_names()?;
        let mut by_tli: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
        for name in &names {
            if let Some((tli, pos)) = segment_position(name) {
                by_tli.entry(tli).or_default().push(pos);
            }
        }
        for b in bases {
            by_tli.entry(b.timeline).or_default();
        }
        let Some(oldest_tli) = bases.iter().map(|b| b.timeline).min() else {
            return Ok(Vec::new());
        };
        let mut gaps = Vec::new();
        for (tli, positions) in by_tli.into_iter().filter(|(t, _)| *t >= oldest_tli) {
            let on_tli = bases.iter().filter(|b| b.timeline == tli);
            let from = on_tli.clone().map(|b| b.start).min();
            let to = on_tli.map(|b| b.end).max();
            let (Some(lo), Some(hi)) = (
                from.or(positions.first().copied()),
                positions.last().copied().max(to),
            ) else {
                continue;
            };
            let present: std::collections::BTreeSet<u64> = positions.into_iter().collect();
            let mut run: Option<(u64, u64)> = None;
            for pos in lo..=hi {
                if present.contains(&pos) {
                    if let Some((a, b)) = run.take() {
                        gaps.push(WalGap::segments(tli, a, b));
                    }
                } else {
                    run = Some((run.map_or(pos, |r| r.0), pos));
                }
            }
            if let Some((a, b)) = run {
                gaps.push(WalGap::segments(tli, a, b));
            }
            let history = format!("{tli:08X}.history");
            if tli > 1 && !names.contains(&history) {
                gaps.push(WalGap {
                    timeline: tli,
                    first: history.clone(),
                    last: history,
                    position: lo,
                });
            }
        }
        Ok(gaps)
    }

    /// The stored WAL files, by stored name (`<WAL name>-<id>`).
    pub fn wal_files(&self) -> Result<Vec<crate::backend::FileInfo>> {
        Ok(self.backend.list(FileType::Wal)?)
    }

    /// Reads stored WAL file `file` (`<WAL name>-<id>`) whole: its hash, authentication and
    /// decompression. An error says what is wrong.
    pub fn verify_wal_file(&self, file: &str) -> Result<u64> {
        let (name, id) = file
            .rsplit_once('-')
            .and_then(|(n, id)| Some((n, Id::from_hex(id)?)))
            .filter(|(n, _)| is_wal_name(n))
            .ok_or_else(|| Error::damaged(format!("WAL file {file}"), "not a name sbk writes"))?;
        Ok(self.open_wal(name, file, &id)?.len() as u64)
    }

    fn open_wal(&self, name: &str, file: &str, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.backend.read(FileType::Wal, file)?;
        let what = || format!("WAL file {file}");
        if Id::of_file_bytes(&bytes) != *id {
            return Err(Error::damaged(
                what(),
                "its bytes do not match its name (storage corruption)".to_string(),
            ));
        }
        let plain = self
            .key
            .open(&wal_aad(name), &bytes)
            .map_err(|e| Error::damaged(what(), open_err(e)))?;
        payload::decode(&plain, MAX_FILE_PLAINTEXT)
            .map_err(|e| Error::damaged(what(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_positions_round_trip() {
        for name in [
            "000000010000000000000001",
            "0000000A000000FF000000FE",
            "000000020000000100000000",
        ] {
            let (tli, pos) = segment_position(name).unwrap();
            assert_eq!(segment_name(tli, pos), name);
        }
        let (_, a) = segment_position("0000000100000000000000FF").unwrap();
        let (_, b) = segment_position("000000010000000100000000").unwrap();
        assert_eq!(b, a + 1, "the segment after ...FF is the next log's first");
        assert_eq!(segment_position("00000002.history"), None);
        assert_eq!(
            next_segments("0000000100000000000000FE", 2),
            ["0000000100000000000000FF", "000000010000000100000000"]
        );
        assert!(next_segments("00000002.history", 2).is_empty());
        // 0/2000028 lies in the third 16 MiB segment; 1/0 is the first of log 1.
        assert_eq!(lsn_position("0/2000028"), Some(2));
        assert_eq!(
            lsn_position("1/0"),
            segment_position("000000010000000100000000").map(|p| p.1)
        );
    }

    #[test]
    fn prune_keeps_the_wal_of_the_window_and_what_older_backups_need() {
        let t = |h: i64| chrono::DateTime::<chrono::Utc>::from_timestamp(h * 3600, 0).unwrap();
        let span = |start, end| WalSpan {
            timeline: 1,
            start,
            end,
        };
        // Base backups at segments 10, 40 and 70 (finished at hours 1, 50 and 100).
        let bases = [
            (span(10, 11), t(1)),
            (span(40, 42), t(50)),
            (span(70, 70), t(100)),
        ];
        let now = t(120);
        // Default: all from the oldest start.
        let all = WalKeep::plan(&bases, None, now).unwrap();
        assert_eq!(all.from, 10);
        assert!(all.ranges.is_empty());
        // A 24 h window reaches back to hour 96: the newest base before then is the one of
        // hour 50; the oldest keeps only its own WAL.
        let day = WalKeep::plan(&bases, Some(std::time::Duration::from_secs(86400)), now).unwrap();
        assert_eq!(day.from, 40);
        assert_eq!(day.ranges, vec![(10, 11)]);
        assert!(day.keeps(10) && day.keeps(11) && !day.keeps(12) && !day.keeps(39));
        assert!(day.keeps(40) && day.keeps(1000) && !day.keeps(9));
        // A window longer than every backup's age: from the oldest.
        let long = WalKeep::plan(
            &bases,
            Some(std::time::Duration::from_secs(86400 * 30)),
            now,
        );
        assert_eq!(long.unwrap().from, 10);
        // A window shorter than the newest's age: from the newest.
        let hour = WalKeep::plan(&bases, Some(std::time::Duration::from_secs(3600)), now);
        assert_eq!(hour.unwrap().from, 70);
        assert_eq!(WalKeep::plan(&[], None, now), None);
    }

    #[test]
    fn wal_names() {
        for ok in [
            "000000010000000000000001",
            "0000000A000000FF000000FE",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(is_wal_name(ok), "{ok}");
        }
        for bad in [
            "00000001000000000000001",
            "00000001000000000000000G",
            "../00000001.history",
            "000000010000000000000001-x",
            "0000000100000000000000020000.backup",
            "",
        ] {
            assert!(!is_wal_name(bad), "{bad}");
        }
    }
}
