//! `sbk wal push|fetch`: PostgreSQL's `archive_command` and `restore_command`. PostgreSQL reads
//! only the exit status (and logs stderr), so every failure is one line on stderr and exit 1;
//! success is quiet unless asked (`-v` is not needed by PostgreSQL).

use std::path::Path;

use super::*;
use sbk::repository::wal::Pushed;

/// `sbk wal push PATH`: durable in the repository, or (a remote repository being unreachable)
/// in the local spool, fsynced, for `sbk sync` or the daemon to upload; with `no_spool`, an
/// error instead. With `parallel` above 1, files the server marked ready are pushed ahead
/// (`sbk::commands::wal`), and a file pushed ahead is answered without opening the repository.
pub(super) fn push(
    g: &GlobalArgs,
    path: &Path,
    no_spool: bool,
    parallel: usize,
) -> Result<(), Error> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: no WAL file name", path.display())))?;
    let data = std::fs::read(path).map_err(|e| Error::io("read WAL file", path, e))?;
    let local = local_wal(g);
    if parallel > 1 && local.as_ref().is_some_and(|l| l.pushed_ahead(name, &data)) {
        say!(g, "{name} was archived ahead by an earlier push");
        return Ok(());
    }
    let mut opts = options::open_options(g, true);
    opts.no_spool = no_spool;
    let (repo, _) = open_plain_with(g, opts)?;
    match repo.push_wal(name, &data)? {
        Pushed::Stored(id) => match repo.spool().and_then(|s| s.spooled_because()) {
            // PostgreSQL logs what the command prints on stderr: the outage is seen there.
            Some(why) => eprintln!(
                "sbk: {name} kept in the local spool until the repository can be reached \
                 (`sbk sync` uploads it): {why}"
            ),
            None => {
                say!(
                    g,
                    "archived {name} ({} bytes) as {}",
                    data.len(),
                    id.short()
                );
                upload_spooled_wal(g, &repo);
            }
        },
        Pushed::AlreadyStored => say!(g, "{name} was archived already with the same bytes"),
    }
    if let (true, Some(local)) = (parallel > 1, &local) {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let ahead = commands::wal::push_ahead(&repo, local, dir, name, parallel - 1);
        if ahead.files > 0 {
            say!(
                g,
                "archived {} more ready files ahead ({})",
                ahead.files,
                HumanBytes(ahead.bytes)
            );
        }
    }
    Ok(())
}

/// The host-local folders of this repository's WAL work (none without a cache folder).
fn local_wal(g: &GlobalArgs) -> Option<commands::wal::LocalWal> {
    let root = g
        .cache_dir
        .clone()
        .or_else(sbk::cache::BlobCache::default_root)?;
    Some(commands::wal::LocalWal::new(
        &root,
        g.repo.as_deref().unwrap_or_default(),
    ))
}

/// Uploads WAL files an earlier push left in the spool, now that the repository takes writes.
fn upload_spooled_wal(g: &GlobalArgs, repo: &Repository) {
    let Some(spool) = repo.spool() else {
        return;
    };
    match spool.sync_wal() {
        Ok(0) => {}
        Ok(n) => say_err(g, &format!("uploaded {n} WAL files waiting in the spool")),
        Err(e) => eprintln!("sbk: warning: WAL files wait in the spool: {e}"),
    }
}

/// `sbk wal fetch NAME DEST`: written to a temporary file beside DEST, synced, then renamed,
/// so that PostgreSQL never reads a partial segment. With `prefetch`, a segment fetched ahead
/// (or being fetched ahead) is answered without opening the repository, and a background
/// process fetches the next segments ahead (`sbk::commands::wal`).
pub(super) fn fetch(g: &GlobalArgs, name: &str, dest: &Path, prefetch: usize) -> Result<(), Error> {
    let local = local_wal(g).filter(|_| prefetch > 0);
    if let Some(l) = &local {
        let ahead = l.take_fetched(name, dest)?
            || (l.wait_for_fetched(name, commands::wal::AHEAD_WAIT)
                && l.take_fetched(name, dest)?);
        if ahead {
            say!(g, "fetched {name} (fetched ahead)");
            start_fetch_ahead(l, name, prefetch);
            return Ok(());
        }
    }
    // While a remote repository is unreachable, what waits in this host's spool is still found.
    let (repo, _) = open_plain(g, true)?;
    let Some(data) = repo.fetch_wal(name)? else {
        return Err(Error::NotFound(format!("WAL file {name} is not archived")));
    };
    commands::wal::write_atomically(dest, &data)?;
    say!(g, "fetched {name} ({} bytes)", data.len());
    if let Some(l) = &local {
        start_fetch_ahead(l, name, prefetch);
    }
    Ok(())
}

/// Starts `sbk ... wal fetch-ahead NAME N` in the background (same global options), unless
/// nothing after NAME is missing; it outlives this process, which PostgreSQL waits for.
fn start_fetch_ahead(local: &commands::wal::LocalWal, name: &str, n: usize) {
    if local.fetching() || local.missing_after(name, n).is_empty() {
        return;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The global options are everything before this run's `wal fetch`.
    let Some(at) = (1..args.len().saturating_sub(1))
        .rev()
        .find(|&i| args[i] == "wal" && args[i + 1] == "fetch")
    else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    local.announce();
    let _ = std::process::Command::new(exe)
        .args(&args[1..at])
        .args(["wal", "fetch-ahead", name, &n.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}

/// `sbk wal fetch-ahead NAME N`: fetches the N segments after NAME that are missing from the
/// fetch-ahead folder, unless another process does it now.
pub(super) fn fetch_ahead(g: &GlobalArgs, name: &str, n: usize) -> Result<(), Error> {
    let Some(local) = local_wal(g) else {
        return Ok(());
    };
    let Some(lock) = local.fetch_lock() else {
        return Ok(());
    };
    if !local.missing_after(name, n).is_empty() {
        if let Ok((repo, _)) = open_plain(g, true) {
            commands::wal::fetch_ahead(&repo, &local, name, n);
        }
    }
    commands::wal::LocalWal::done(&lock);
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
