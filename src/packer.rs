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
}

impl PackWriter {
    /// Starts a pack in `dir` (or the system temp folder).
    pub fn new(dir: Option<&Path>) -> std::io::Result<Self> {
        let file = match dir {
            Some(d) => tempfile::Builder::new().prefix("pack-").tempfile_in(d)?,
            None => tempfile::Builder::new().prefix("sbk-pack-").tempfile()?,
        };
        Ok(PackWriter {
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
        })
    }
}
