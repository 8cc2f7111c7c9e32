//! The local-folder backend, sbk's embedded default.
//!
//! Writes go to a temporary file in `tmp/`, are fsynced, renamed into place, and the folder is
//! fsynced, so a crash leaves either the whole file or nothing under its final name (at worst a
//! stray temporary file that the next `prune` removes).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{relative_path, BResult, Backend, BackendError, ErrorKind, FileInfo, FileType};

/// A repository in a local folder.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

fn classify(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            ErrorKind::Transient
        }
        _ => ErrorKind::Permanent,
    }
}

fn err(op: &str, path: &Path, e: io::Error) -> BackendError {
    BackendError::new(classify(&e), format!("{op} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> BResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("fsync folder", dir, e))
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    /// Where a file of this repository lives on disk.
    pub fn file_path(&self, t: FileType, name: &str) -> PathBuf {
        self.path(t, name)
    }

    fn path(&self, t: FileType, name: &str) -> PathBuf {
        self.root.join(relative_path(t, name))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Moves the file at `staged` (on any file system) into place durably; on success it is gone
    /// from `staged`.
    fn persist(&self, t: FileType, name: &str, staged: &Path) -> BResult<()> {
        let dest = self.path(t, name);
        File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(|e| err("fsync", staged, e))?;
        let dir = dest
            .parent()
            .expect("repository files live in a folder")
            .to_path_buf();
        if t.optional() && !dir.exists() {
            // Repositories made by older versions lack the folder.
            fs::create_dir_all(&dir).map_err(|e| err("create folder", &dir, e))?;
        }
        let moved = match t {
            // Never replace an existing config: a hard link fails if the name exists.
            FileType::Config => fs::hard_link(staged, &dest).and_then(|()| fs::remove_file(staged)),
            _ => fs::rename(staged, &dest),
        };
        match moved {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(18) => {
                // EXDEV: staged on another file system; copy through our own tmp folder.
                let copy = tempfile::NamedTempFile::new_in(self.tmp_dir())
                    .map_err(|e| err("create temp", &dest, e))?
                    .into_temp_path();
                fs::copy(staged, &copy).map_err(|e| err("copy", &dest, e))?;
                self.persist(t, name, &copy)?;
                let _ = copy.keep();
                return fs::remove_file(staged).map_err(|e| err("remove", staged, e));
            }
            Err(e) if t == FileType::Config => return Err(err("write", &dest, e)),
            Err(e) => return Err(err("rename into", &dest, e)),
        }
        sync_dir(&dir)
    }

    /// What this storage is: local, its `tmp/` folder for staging.
    pub fn profile(&self) -> super::Profile {
        super::Profile {
            local: true,
            concurrency: super::Profile::default().concurrency,
            staging_dir: Some(self.tmp_dir()),
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> BResult<()> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(BackendError::new(
                        ErrorKind::AlreadyExists,
                        format!("{} is not empty", self.root.display()),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.root).map_err(|e| err("create folder", &self.root, e))?;
            }
            Err(e) => return Err(err("read folder", &self.root, e)),
        }
        let mut dirs = vec![self.tmp_dir()];
        for t in FileType::LISTED {
            dirs.push(self.root.join(t.dirname()));
        }
        for d in &dirs {
            fs::create_dir_all(d).map_err(|e| err("create folder", d, e))?;
        }
        let data = self.root.join(FileType::Pack.dirname());
        for i in 0..=255u8 {
            let d = data.join(hex::encode([i]));
            fs::create_dir_all(&d).map_err(|e| err("create folder", &d, e))?;
        }
        sync_dir(&data)?;
        sync_dir(&self.root)?;
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn list(&self, t: FileType) -> BResult<Vec<FileInfo>> {
        let dir = self.root.join(t.dirname());
        if t.optional() && !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut dirs = vec![dir.clone()];
        if t == FileType::Pack {
            dirs.clear();
            for e in fs::read_dir(&dir).map_err(|e| err("list", &dir, e))? {
                let e = e.map_err(|e| err("list", &dir, e))?;
                if e.file_type().map(|f| f.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
        for d in dirs {
            for e in fs::read_dir(&d).map_err(|e| err("list", &d, e))? {
                let e = e.map_err(|e| err("list", &d, e))?;
                let meta = match e.metadata() {
                    Ok(m) => m,
                    // Removed since the folder was read (a concurrent prune or forget).
                    Err(er) if er.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(er) => return Err(err("stat", &e.path(), er)),
                };
                if !meta.is_file() {
                    continue;
                }
                if let Some(name) = e.file_name().to_str() {
                    if !name.starts_with('.') {
                        out.push(FileInfo {
                            name: name.to_string(),
                            size: meta.len(),
                            modified: meta.modified().ok(),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        super::check_name(name)?;
        let p = self.path(t, name);
        fs::read(&p).map_err(|e| err("read", &p, e))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> BResult<Vec<u8>> {
        super::check_name(name)?;
        let p = self.path(t, name);
        let mut f = File::open(&p).map_err(|e| err("open", &p, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| err("seek", &p, e))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackendError::new(
                    ErrorKind::Permanent,
                    format!(
                        "short read of {} at offset {offset} (+{len}): file is truncated",
                        p.display()
                    ),
                )
            } else {
                err("read", &p, e)
            }
        })?;
        Ok(buf)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        super::check_name(name)?;
        let tmp = self.tmp_dir();
        let mut f = tempfile::NamedTempFile::new_in(&tmp)
            .map_err(|e| err("create temp file in", &tmp, e))?;
        let _tracked = crate::cleanup::track_path(f.path());
        f.write_all(data).map_err(|e| err("write", f.path(), e))?;
        let staged = f.into_temp_path();
        self.persist(t, name, &staged)?;
        // Moved into place: nothing left for the guard to remove.
        let _ = staged.keep();
        Ok(())
    }

    fn write_staged(&self, t: FileType, name: &str, staged: &Path) -> BResult<()> {
        super::check_name(name)?;
        self.persist(t, name, staged)
    }

    fn sweep_tmp(&self, age: std::time::Duration) -> BResult<usize> {
        let tmp = self.tmp_dir();
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(err("list", &tmp, e)),
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let old = e
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a >= age);
            if old && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        super::check_name(name)?;
        let p = self.path(t, name);
        match fs::remove_file(&p) {
            // Durable like a write: a removed key must not come back after a crash.
            Ok(()) => sync_dir(p.parent().expect("repository files live in a folder")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("remove", &p, e)),
        }
    }

    fn remove_all(&self, t: FileType, names: &[String]) -> BResult<()> {
        names.iter().try_for_each(|n| super::check_name(n))?;
        let mut folders: Vec<PathBuf> = Vec::new();
        let mut failed = None;
        for name in names {
            let p = self.path(t, name);
            match fs::remove_file(&p) {
                Ok(()) => {
                    let dir = p.parent().expect("repository files live in a folder");
                    if !folders.iter().any(|f| f == dir) {
                        folders.push(dir.to_path_buf());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed = Some(err("remove", &p, e));
                    break;
                }
            }
        }
        // What was removed is made durable even when a later removal failed.
        for dir in &folders {
            sync_dir(dir)?;
        }
        failed.map_or(Ok(()), Err)
    }
}
