//! The WAL archive's part of `check` (`docs/pitr.md`): every kept base backup must be able to
//! become consistent (its own WAL whole), and recovery from the newest must reach the newest
//! archived segment: a missing segment there is damage, named with the base backups it cuts
//! short. A hole between an older base backup's end and a newer one's start (what `prune
//! --keep-wal-within` removes) only limits the times one can recover to: a note. With
//! `--read-data` every archived WAL file is read whole.

use std::collections::BTreeSet;

use super::{CheckOptions, CheckReport, Findings, ReadData};
use crate::commands::snapshot_physical::{read_manifest, SOURCE_KIND};
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::repository::Repository;

/// Checks the archive against the base backups among `snapshots`.
pub(super) fn check_wal(
    repo: &Repository,
    opts: &CheckOptions,
    snapshots: &[(Id, Snapshot)],
    found: &mut Findings,
    report: &mut CheckReport,
    damaged: &mut BTreeSet<Id>,
) -> Result<()> {
    let files = repo.wal_files()?;
    report.wal_files = files.len();
    if opts.read_data != ReadData::None {
        for f in &files {
            match repo.verify_wal_file(&f.name) {
                Ok(_) => report.wal_files_read += 1,
                Err(e) => {
                    let id = f
                        .name
                        .rsplit_once('-')
                        .and_then(|(_, id)| Id::from_hex(id))
                        .unwrap_or_default();
                    found.file("wal", id, e.to_string());
                }
            }
        }
    }
    let mut bases = Vec::new();
    for (id, s) in snapshots {
        if s.source.kind != SOURCE_KIND || damaged.contains(id) {
            continue;
        }
        match read_manifest(repo, *id) {
            Ok(m) => bases.push((*id, m.span().expect("read_manifest checks it"))),
            Err(e) => {
                found.file("snapshot", *id, e.to_string());
                damaged.insert(*id);
            }
        }
    }
    let spans: Vec<_> = bases.iter().map(|(_, s)| *s).collect();
    for gap in repo.wal_gaps(&spans)? {
        // The base backups recovery would have to pass the gap from.
        let cut: Vec<_> = bases
            .iter()
            .filter(|(_, s)| s.timeline <= gap.timeline && s.start <= gap.position)
            .collect();
        let Some(newest) = cut.iter().max_by_key(|(_, s)| s.start) else {
            continue;
        };
        let newest_start = bases.iter().map(|(_, s)| s.start).max().unwrap_or(0);
        let inconsistent: Vec<_> = cut
            .iter()
            .filter(|(_, s)| s.timeline == gap.timeline && gap.position <= s.end)
            .map(|(id, _)| *id)
            .collect();
        let what = if gap.first == gap.last {
            format!("WAL file {} is missing", gap.first)
        } else {
            format!("WAL segments {} to {} are missing", gap.first, gap.last)
        };
        let consequence = if inconsistent.is_empty() {
            format!(
                "point-in-time recovery from base backups up to {} stops before it; a new base \
                 backup starts a whole archive again",
                newest.0.short()
            )
        } else {
            format!(
                "base backup{} {} cannot be made consistent",
                if inconsistent.len() == 1 { "" } else { "s" },
                inconsistent
                    .iter()
                    .map(Id::short)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if inconsistent.is_empty() && gap.position < newest_start {
            report.notes.push(format!(
                "{what} (timeline {}): point-in-time recovery between base backup {} and the \
                 next is not possible (removed by prune --keep-wal-within, or lost)",
                gap.timeline,
                newest.0.short()
            ));
            continue;
        }
        found.file(
            "wal",
            newest.0,
            format!("{what} (timeline {}): {consequence}", gap.timeline),
        );
        damaged.extend(inconsistent);
        report.wal_gaps.push(gap);
    }
    Ok(())
}
