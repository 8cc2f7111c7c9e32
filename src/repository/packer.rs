//! Writes pack files to a staging file as blobs arrive, so a pack never sits whole in memory,
//! and makes finished packs durable in the repository ([`PackStore`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, FileType};
use crate::format::index::IndexPack;

use crate::crypto::{aad, MasterKey};
use crate::format::pack::{encode_header, PackEntry};
use crate::format::BlobKind;
use crate::id::Id;

/// A pack being written.
pub struct PackWriter {
    file: tempfile::NamedTempFile,
    /// Removed should the run be interrupted.
    tracked: crate::cleanup::TrackedPath,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    len: u64,
}

/// A pack whose bytes are complete in its staging file.
pub struct FinishedPack {
    pub id: Id,
    /// The staging file, removed when dropped (unless the store moved it into place).
    pub file: tempfile::TempPath,
    pub entries: Vec<PackEntry>,
    pub len: u64,
    /// Unregistered once the file is written (dropped after `file` is moved out).
    pub tracked: crate::cleanup::TrackedPath,
}

impl PackWriter {
    /// Starts a pack in `dir` (or the system temp folder).
    pub fn new(dir: Option<&Path>) -> std::io::Result<Self> {
        let (file, tracked) = match dir {
            Some(d) => {
                let f = tempfile::Builder::new().prefix("pack-").tempfile_in(d)?;
                let t = crate::cleanup::track_path(f.path());
                (f, t)
            }
            // Named for this process in sbk's scratch folder, so that the next run sweeps it
            // should this one be killed.
            None => crate::cleanup::scratch_file("pack").map_err(std::io::Error::other)?,
        };
        Ok(PackWriter {
            tracked,
            file,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            len: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Appends one sealed blob.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: Id,
        raw_len: u32,
        sealed: &[u8],
        base: Option<Id>,
    ) -> std::io::Result<()> {
        let offset = self.len as u32;
        self.put(sealed)?;
        self.entries.push(PackEntry {
            kind,
            id,
            offset,
            stored_len: sealed.len() as u32,
            raw_len,
            base,
        });
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed header and its length; the pack's ID is the hash of all its bytes.
    pub fn finish(mut self, key: &MasterKey) -> std::io::Result<FinishedPack> {
        let header = key.seal(aad::PACK_HEADER, &encode_header(&self.entries));
        self.put(&header)?;
        self.put(&(header.len() as u32).to_le_bytes())?;
        self.file.flush()?;
        Ok(FinishedPack {
            id: Id(*self.hasher.finalize().as_bytes()),
            file: self.file.into_temp_path(),
            entries: self.entries,
            len: self.len,
            tracked: self.tracked,
        })
    }
}

/// Makes finished packs durable in the repository; one clone per writer thread.
#[derive(Clone)]
pub struct PackStore {
    backend: Arc<dyn Backend>,
    journal: Arc<super::audit::Journal>,
}

impl PackStore {
    /// Stores the pack (its staging file is moved or uploaded, then gone) and returns its
    /// index entry.
    pub fn store(&self, p: FinishedPack) -> crate::Result<IndexPack> {
        self.backend
            .write_staged(FileType::Pack, &p.id.to_hex(), &p.file)?;
        self.journal.added(FileType::Pack, p.id);
        Ok(IndexPack {
            id: p.id,
            blobs: p.entries,
        })
    }
}

impl crate::Repository {
    /// Where new packs are staged: on the repository's own file system when it is local (so
    /// storing one is a rename), else the system's temp folder.
    pub fn staging_dir(&self) -> PathBuf {
        self.profile
            .staging_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Starts a pack in the staging folder.
    pub fn start_pack(&self) -> crate::Result<PackWriter> {
        PackWriter::new(self.profile.staging_dir.as_deref()).map_err(|e| self.staging_error(e))
    }

    /// A staging file that could not be written, named with its folder.
    pub fn staging_error(&self, e: std::io::Error) -> crate::Error {
        crate::Error::io("write pack staging file in", self.staging_dir(), e)
    }

    /// The store for this repository's finished packs.
    pub fn pack_store(&self) -> PackStore {
        PackStore {
            backend: Arc::clone(&self.backend),
            journal: Arc::clone(&self.journal),
        }
    }
}

/// Copies sealed blobs into as many packs as needed, each made durable when full (repacking in
/// `prune`, salvage in `repair packs`).
pub struct PackCopier<'a> {
    repo: &'a crate::Repository,
    store: PackStore,
    writer: Option<PackWriter>,
    written: Vec<IndexPack>,
}

impl<'a> PackCopier<'a> {
    pub fn new(repo: &'a crate::Repository) -> Self {
        PackCopier {
            repo,
            store: repo.pack_store(),
            writer: None,
            written: Vec::new(),
        }
    }

    /// Appends one blob's sealed bytes, as stored.
    pub fn add(&mut self, e: &PackEntry, sealed: &[u8]) -> crate::Result<()> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(self.repo.start_pack()?),
        };
        w.add(e.kind, e.id, e.raw_len, sealed, e.base)
            .map_err(|e| self.repo.staging_error(e))?;
        if w.len() >= self.repo.config().pack_size as u64 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> crate::Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let p = w
            .finish(self.repo.key())
            .map_err(|e| self.repo.staging_error(e))?;
        self.written.push(self.store.store(p)?);
        Ok(())
    }

    /// Writes the last pack; returns every pack written, durable, for the index.
    pub fn finish(mut self) -> crate::Result<Vec<IndexPack>> {
        self.flush()?;
        Ok(std::mem::take(&mut self.written))
    }
}
