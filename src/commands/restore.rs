//! `sbk restore` and `sbk dump`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::progress::Counted;
use crate::repository::trees::{find_file, walk, Visit};
use crate::repository::FileNode;
use crate::repository::Repository;
use crate::repository::SnapshotRef;
use crate::restorer::write_file;

/// A restored file.
#[derive(Debug, Serialize)]
pub struct RestoredFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// What `restore` wrote.
#[derive(Debug, Serialize)]
pub struct RestoreOutcome {
    pub snapshot: Id,
    pub files: Vec<RestoredFile>,
    pub bytes: u64,
    pub duration_secs: f64,
}

/// Restores every file of a snapshot into `target`, folders included. Each file is written
/// under a temporary name and renamed only after its whole content has been verified.
pub fn restore(
    repo: &Repository,
    spec: &SnapshotRef,
    target: &Path,
    overwrite: bool,
) -> Result<RestoreOutcome> {
    let clock = std::time::Instant::now();
    let (id, snap) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    fs::create_dir_all(target).map_err(|e| Error::io("create folder", target, e))?;
    let place = |dirs: &[String], name: &str| -> PathBuf {
        let mut p = target.to_path_buf();
        p.extend(dirs);
        p.push(name);
        p
    };
    // A first pass: nothing is written when a file is in the way, and the total is known
    // for the progress display.
    let (mut total_bytes, mut total_files) = (0, 0);
    walk(repo, &index, &snap.tree, None, &mut |v| {
        if let Visit::File(dirs, f) = v {
            total_bytes += f.size;
            total_files += 1;
            let p = place(dirs, &f.name);
            if !overwrite && p.exists() {
                return Err(Error::Invalid(format!(
                    "{} exists; remove it or pass --overwrite",
                    p.display()
                )));
            }
        }
        Ok(())
    })?;
    let activity = repo.activity();
    activity.start("restore", total_bytes, total_files);
    let mut files = Vec::new();
    let mut bytes = 0;
    let mut folders = std::collections::BTreeSet::new();
    walk(repo, &index, &snap.tree, None, &mut |v| {
        let Visit::File(dirs, f) = v else {
            return Ok(());
        };
        let dest = place(dirs, &f.name);
        let folder = dest.parent().unwrap_or(target).to_path_buf();
        if folders.insert(folder.clone()) {
            fs::create_dir_all(&folder).map_err(|e| Error::io("create folder", &folder, e))?;
        }
        restore_file(repo, &index, &id, f, &folder, &dest, overwrite)?;
        bytes += f.size;
        activity.add_items(1);
        let mut name = dirs.join("/");
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(&f.name);
        files.push(RestoredFile {
            name,
            path: dest,
            size: f.size,
        });
        Ok(())
    })?;
    for folder in folders.iter().rev() {
        std::fs::File::open(folder)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync folder", folder, e))?;
    }
    Ok(RestoreOutcome {
        snapshot: id,
        files,
        bytes,
        duration_secs: clock.elapsed().as_secs_f64(),
    })
}

/// Writes one file into `folder` under a temporary name, verifies it, then renames it to `dest`.
fn restore_file(
    repo: &Repository,
    index: &crate::index::Index,
    id: &Id,
    f: &FileNode,
    folder: &Path,
    dest: &Path,
    overwrite: bool,
) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", f.name))
        .suffix(".sbk-partial")
        .tempfile_in(folder)
        .map_err(|e| Error::io("create file in", folder, e))?;
    let _tracked = crate::cleanup::track_path(tmp.path());
    {
        let mut counted = Counted {
            inner: tmp.as_file_mut(),
            activity: repo.activity(),
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut counted);
        write_file(repo, index, f, &mut w).map_err(|e| in_snapshot(e, id))?;
        w.flush().map_err(|e| Error::io("write", dest, e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("fsync", dest, e))?;
    if overwrite {
        tmp.persist(dest)
            .map_err(|e| Error::io("rename into", dest, e.error))?;
    } else {
        // Fails rather than replace a file that appeared since the check above.
        tmp.persist_noclobber(dest)
            .map_err(|e| Error::io("create (without replacing)", dest, e.error))?;
    }
    Ok(())
}

/// Writes one file of a snapshot to `out`; `file` (a name, or a path `a/b/c` into its folders)
/// may be omitted when the snapshot holds one.
pub fn dump(
    repo: &Repository,
    spec: &SnapshotRef,
    file: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64> {
    let (id, snap) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    let tree = repo.load_tree(&index, &snap.tree)?;
    let names = || {
        let mut n: Vec<String> = tree.files.iter().map(|f| f.name.clone()).collect();
        n.extend(tree.dirs.iter().map(|d| format!("{}/", d.name)));
        n.join(", ")
    };
    let node = match file {
        Some(name) => find_file(repo, &index, &snap.tree, name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no file {name:?} in the snapshot; it holds: {}",
                names()
            ))
        })?,
        None if tree.files.len() == 1 && tree.dirs.is_empty() => tree.files[0].clone(),
        None => {
            return Err(Error::Invalid(format!(
                "the snapshot holds several files; name one of: {}",
                names()
            )));
        }
    };
    write_file(repo, &index, &node, out).map_err(|e| in_snapshot(e, &id))
}

/// [`dump`], counting the bytes written as done bytes of the repository's activity (a restore
/// into a database, whose caller set the total).
pub fn dump_counted(
    repo: &Repository,
    spec: &crate::repository::SnapshotRef,
    file: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut counted = Counted {
        inner: out,
        activity: repo.activity(),
    };
    dump(repo, spec, file, &mut counted)
}

/// Names the snapshot in a damage report, so the user knows which backup is affected.
fn in_snapshot(e: Error, snapshot: &Id) -> Error {
    match e {
        Error::Damaged { what, reason } => Error::Damaged {
            what: format!("{what} of snapshot {}", snapshot.short()),
            reason,
        },
        other => other,
    }
}
