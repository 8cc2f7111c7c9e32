//! The raw file operations commands need beyond sealed files, typed so that no command reaches
//! the backend: whole packs and ranges of them (check, repair, prune, cat), removals in the
//! order each command documents, quarantine, the sweep of abandoned temporary files, sizes.

use super::*;

/// What the repository stores, by kind of file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageSize {
    pub packs: usize,
    pub pack_bytes: u64,
    pub index_files: usize,
    pub snapshot_files: usize,
    /// Packs, index files and snapshot files.
    pub total_bytes: u64,
}

impl Repository {
    /// Where the repository lives (a path or an S3 URL), as given.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// How many requests the storage serves well at once.
    pub fn concurrency(&self) -> usize {
        self.profile.concurrency
    }

    /// Threads for reading many files at once: as many as the storage serves well, and at least
    /// one per core (reads from a local folder are mostly decoding).
    pub fn io_pool(&self) -> Result<rayon::ThreadPool> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(
                self.concurrency()
                    .max(std::thread::available_parallelism().map_or(2, |n| n.get())),
            )
            .build()
            .map_err(|e| Error::Source(format!("start reader threads: {e}")))
    }

    /// Whether the repository is a local folder (reads are cheap, no request to save).
    pub fn is_local(&self) -> bool {
        self.profile.local
    }

    /// A pack file, whole, as stored.
    pub fn read_pack(&self, pack: &Id) -> Result<Vec<u8>> {
        Ok(self.backend.read(FileType::Pack, &pack.to_hex())?)
    }

    /// `len` bytes of a pack from `offset`.
    pub fn read_pack_range(&self, pack: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        Ok(self
            .backend
            .read_range(FileType::Pack, &pack.to_hex(), offset, len)?)
    }

    /// A key file's bytes, as stored (check compares them with their name).
    pub fn read_key_file(&self, id: &Id) -> Result<Vec<u8>> {
        Ok(self.backend.read(FileType::Key, &id.to_hex())?)
    }

    /// Removes a snapshot file.
    pub fn remove_snapshot(&self, id: &Id) -> Result<()> {
        self.backend
            .remove(FileType::Snapshot, &id.to_hex())
            .map_err(|e| super::lock::refused_delete(e, "remove files"))?;
        self.journal.removed(FileType::Snapshot, *id);
        Ok(())
    }

    /// Removes files of one type in batches of [`crate::backend::REMOVE_BATCH`] (one folder
    /// sync, or one S3 request, a batch: removing 10,000 snapshot files one by one took 2.4 s on
    /// an idle disk and ~70 s on a busy one); `after` runs after each batch with its size
    /// (progress, crash points). A batch that fails is removed again file by file, so that the
    /// journal names exactly the files removed and the error is the one file's.
    pub fn remove_files(
        &self,
        t: FileType,
        ids: &[Id],
        mut after: impl FnMut(usize),
    ) -> Result<()> {
        for batch in ids.chunks(crate::backend::REMOVE_BATCH) {
            let names: Vec<String> = batch.iter().map(Id::to_hex).collect();
            let gone = |id: &Id| {
                self.journal.removed(t, *id);
                // A removed file is never read again: its cached copy only takes room.
                if let Some(c) = self.file_cache(t) {
                    c.remove(id);
                }
            };
            if self.backend.remove_all(t, &names).is_ok() {
                batch.iter().for_each(gone);
            } else {
                for (id, name) in batch.iter().zip(&names) {
                    self.backend
                        .remove(t, name)
                        .map_err(|e| super::lock::refused_delete(e, "remove files"))?;
                    gone(id);
                }
            }
            after(batch.len());
        }
        Ok(())
    }

    /// Removes a pack (after no index file in force lists it).
    pub fn remove_pack(&self, id: &Id) -> Result<()> {
        self.backend
            .remove(FileType::Pack, &id.to_hex())
            .map_err(|e| super::lock::refused_delete(e, "remove files"))?;
        self.journal.removed(FileType::Pack, *id);
        Ok(())
    }

    /// Moves a damaged pack's bytes to `quarantine/` and removes the pack.
    pub fn quarantine_pack(&self, id: &Id, bytes: &[u8]) -> Result<()> {
        self.backend
            .write(FileType::Quarantine, &id.to_hex(), bytes)?;
        self.remove_pack(id)
    }

    /// Removes temporary files older than `age` that crashed writers left; how many.
    pub fn sweep_tmp(&self, age: std::time::Duration) -> Result<usize> {
        Ok(self.backend.sweep_tmp(age)?)
    }

    /// Counts and sizes of the stored packs, index files and snapshot files.
    pub fn storage_size(&self) -> Result<StorageSize> {
        let mut s = StorageSize::default();
        for t in [FileType::Pack, FileType::Index, FileType::Snapshot] {
            let files = self.backend.list(t)?;
            let bytes: u64 = files.iter().map(|f| f.size).sum();
            s.total_bytes += bytes;
            match t {
                FileType::Pack => (s.packs, s.pack_bytes) = (files.len(), bytes),
                FileType::Index => s.index_files = files.len(),
                _ => s.snapshot_files = files.len(),
            }
        }
        Ok(s)
    }
}
