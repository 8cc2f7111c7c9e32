//! Writes pack files to a staging file as blobs arrive, so a pack never sits whole in memory.

use std::io::Write;
use std::path::Path;

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
    pub file: tempfile::NamedTempFile,
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
            file: self.file,
            entries: self.entries,
            len: self.len,
            tracked: self.tracked,
        })
    }
}

/// Copies sealed blobs into as many packs as needed, each made durable when full (repacking in
/// `prune`, salvage in `repair packs`).
pub struct PackCopier<'a> {
    backend: &'a dyn crate::backend::Backend,
    key: &'a MasterKey,
    pack_size: u64,
    writer: Option<PackWriter>,
    written: Vec<crate::format::index::IndexPack>,
}

impl<'a> PackCopier<'a> {
    pub fn new(repo: &'a crate::Repository) -> Self {
        PackCopier {
            backend: repo.backend().as_ref(),
            key: repo.key(),
            pack_size: repo.config().pack_size as u64,
            writer: None,
            written: Vec::new(),
        }
    }

    fn io(&self, e: std::io::Error) -> crate::Error {
        let dir = self
            .backend
            .staging_dir()
            .unwrap_or_else(std::env::temp_dir);
        crate::Error::io("write pack staging file in", dir, e)
    }

    /// Appends one blob's sealed bytes, as stored.
    pub fn add(&mut self, e: &PackEntry, sealed: &[u8]) -> crate::Result<()> {
        if self.writer.is_none() {
            let w =
                PackWriter::new(self.backend.staging_dir().as_deref()).map_err(|e| self.io(e))?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("just set");
        let r = w.add(e.kind, e.id, e.raw_len, sealed, e.base);
        r.map_err(|e| self.io(e))?;
        if self
            .writer
            .as_ref()
            .is_some_and(|w| w.len() >= self.pack_size)
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> crate::Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let p = w.finish(self.key).map_err(|e| self.io(e))?;
        self.backend
            .write_staged(crate::backend::FileType::Pack, &p.id.to_hex(), p.file)?;
        self.written.push(crate::format::index::IndexPack {
            id: p.id,
            blobs: p.entries,
        });
        Ok(())
    }

    /// Writes the last pack; returns every pack written, durable, for the index.
    pub fn finish(mut self) -> crate::Result<Vec<crate::format::index::IndexPack>> {
        self.flush()?;
        Ok(std::mem::take(&mut self.written))
    }
}
