//! `sbk wal push|fetch`: PostgreSQL's `archive_command` and `restore_command`. PostgreSQL reads
//! only the exit status (and logs stderr), so every failure is one line on stderr and exit 1;
//! success is quiet unless asked (`-v` is not needed by PostgreSQL).

use std::io::Write;
use std::path::Path;

use super::*;
use sbk::repository::wal::Pushed;

/// `sbk wal push PATH`.
pub(super) fn push(g: &GlobalArgs, path: &Path) -> Result<(), Error> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: no WAL file name", path.display())))?;
    let data = std::fs::read(path).map_err(|e| Error::io("read WAL file", path, e))?;
    let (repo, _) = open_plain(g, false)?;
    match repo.push_wal(name, &data)? {
        Pushed::Stored(id) => say!(
            g,
            "archived {name} ({} bytes) as {}",
            data.len(),
            id.short()
        ),
        Pushed::AlreadyStored => say!(g, "{name} was archived already with the same bytes"),
    }
    Ok(())
}

/// `sbk wal fetch NAME DEST`: written to a temporary file beside DEST, synced, then renamed,
/// so that PostgreSQL never reads a partial segment.
pub(super) fn fetch(g: &GlobalArgs, name: &str, dest: &Path) -> Result<(), Error> {
    let (repo, _) = open_plain(g, false)?;
    let Some(data) = repo.fetch_wal(name)? else {
        return Err(Error::NotFound(format!("WAL file {name} is not archived")));
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    tmp.write_all(&data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", dest, e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io("rename into", dest, e.error))?;
    say!(g, "fetched {name} ({} bytes)", data.len());
    Ok(())
}

/// `sbk wal status`: exit 1 when a timeline has a gap (a recovery through it would stop there).
pub(super) fn status(g: &GlobalArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let st = repo.wal_status()?;
    if g.json {
        print_json(&st)?;
    } else {
        say!(
            g,
            "{} archived WAL files ({})",
            st.files,
            HumanBytes(st.bytes)
        );
        if let Some(newest) = &st.newest {
            say!(
                g,
                "newest segment {newest}{}",
                match (st.newest_archived_at, st.newest_age_seconds) {
                    (Some(at), Some(age)) => format!(
                        ", archived {} ({} ago)",
                        at.format("%Y-%m-%d %H:%M:%S UTC"),
                        sbk::human::duration(std::time::Duration::from_secs(age))
                    ),
                    _ => String::new(),
                }
            );
        }
        for t in &st.timelines {
            say!(
                g,
                "timeline {}: {} segments, {} to {}{}",
                t.timeline,
                t.segments,
                t.first,
                t.last,
                if t.gaps.is_empty() {
                    String::new()
                } else {
                    format!("; {} gaps", t.gaps.len())
                }
            );
            for (from, to) in &t.gaps {
                eprintln!(
                    "sbk: missing WAL segments {from} to {to} on timeline {}",
                    t.timeline
                );
            }
        }
    }
    if st.timelines.iter().any(|t| !t.gaps.is_empty()) {
        return Err(Error::Silent(1));
    }
    Ok(())
}
