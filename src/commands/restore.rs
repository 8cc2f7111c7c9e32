//! `sbk restore` and `sbk dump`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
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

/// Restores every file of a snapshot into `target`. Each file is written under a temporary name
/// and renamed only after its whole content has been verified.
pub fn restore(
    repo: &Repository,
    spec: &str,
    target: &Path,
    overwrite: bool,
) -> Result<RestoreOutcome> {
    let clock = std::time::Instant::now();
    let (id, snap) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    let tree = repo.load_tree(&index, &snap.tree)?;
    fs::create_dir_all(target).map_err(|e| Error::io("create folder", target, e))?;
    if !overwrite {
        for f in &tree.files {
            let p = target.join(&f.name);
            if p.exists() {
                return Err(Error::Invalid(format!(
                    "{} exists; remove it or pass --overwrite",
                    p.display()
                )));
            }
        }
    }
    let mut files = Vec::new();
    let mut bytes = 0;
    for f in &tree.files {
        let dest = target.join(&f.name);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", f.name))
            .suffix(".sbk-partial")
            .tempfile_in(target)
            .map_err(|e| Error::io("create file in", target, e))?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            write_file(repo, &index, f, &mut w).map_err(|e| in_snapshot(e, &id))?;
            w.flush().map_err(|e| Error::io("write", &dest, e))?;
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("fsync", &dest, e))?;
        if overwrite {
            tmp.persist(&dest)
                .map_err(|e| Error::io("rename into", &dest, e.error))?;
        } else {
            // Fails rather than replace a file that appeared since the check above.
            tmp.persist_noclobber(&dest)
                .map_err(|e| Error::io("create (without replacing)", &dest, e.error))?;
        }
        bytes += f.size;
        files.push(RestoredFile {
            name: f.name.clone(),
            path: dest,
            size: f.size,
        });
    }
    std::fs::File::open(target)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync folder", target, e))?;
    Ok(RestoreOutcome {
        snapshot: id,
        files,
        bytes,
        duration_secs: clock.elapsed().as_secs_f64(),
    })
}

/// Writes one file of a snapshot to `out`; `file` may be omitted when the snapshot holds one.
pub fn dump(repo: &Repository, spec: &str, file: Option<&str>, out: &mut dyn Write) -> Result<u64> {
    let (id, snap) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    let tree = repo.load_tree(&index, &snap.tree)?;
    let node = match file {
        Some(name) => tree.file(name).ok_or_else(|| {
            let names: Vec<&str> = tree.files.iter().map(|f| f.name.as_str()).collect();
            Error::NotFound(format!(
                "no file {name:?} in the snapshot; it holds: {}",
                names.join(", ")
            ))
        })?,
        None if tree.files.len() == 1 => &tree.files[0],
        None => {
            let names: Vec<&str> = tree.files.iter().map(|f| f.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "the snapshot holds several files; name one of: {}",
                names.join(", ")
            )));
        }
    };
    write_file(repo, &index, node, out).map_err(|e| in_snapshot(e, &id))
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
