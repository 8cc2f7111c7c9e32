//! Blobs: reading them from packs (runs of neighbours in one request), opening and checking
//! them, rebuilding deltas from their bases (through the blob cache), trees.

use super::*;

impl Repository {
    /// Reads, opens, decompresses and verifies one blob, following a delta blob's chain of
    /// bases. Every blob of the chain is authenticated; only the requested one is re-hashed: a
    /// wrong base can only produce a wrong result, which that final check catches (hashing
    /// every level cost a third of a deep chain's restore time).
    pub fn load_blob(&self, index: &Index, blob: &BlobRef) -> Result<Vec<u8>> {
        self.load_blob_at(index, blob, 0, true, false, None)
    }

    /// Like [`Repository::load_blob`], with the blob's sealed bytes already read (by a read
    /// that covered several blobs of its pack).
    pub fn load_blob_sealed(
        &self,
        index: &Index,
        blob: &BlobRef,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.load_blob_at(index, blob, 0, true, false, Some(sealed))
    }

    /// Reads the sealed bytes of `blobs`, which must lie back to back in one pack, with one
    /// ranged read.
    pub fn read_sealed_run(&self, blobs: &[BlobRef]) -> Result<Vec<Vec<u8>>> {
        let (Some(first), Some(last)) = (blobs.first(), blobs.last()) else {
            return Ok(Vec::new());
        };
        let adjacent = blobs.windows(2).all(|w| {
            w[1].pack == w[0].pack
                && w[1].offset as u64 == w[0].offset as u64 + w[0].stored_len as u64
        });
        if !adjacent {
            return Err(Error::Invalid(
                "read_sealed_run: blobs are not back to back in one pack".into(),
            ));
        }
        let end = last.offset as u64 + last.stored_len as u64;
        let len = u32::try_from(end - first.offset as u64)
            .map_err(|_| Error::Invalid("blob run too long".into()))?;
        let bytes = self.backend.read_range(
            FileType::Pack,
            &first.pack.to_hex(),
            first.offset as u64,
            len,
        )?;
        Ok(blobs
            .iter()
            .map(|b| {
                let at = (b.offset - first.offset) as usize;
                bytes[at..at + b.stored_len as usize].to_vec()
            })
            .collect())
    }

    /// Loads a blob to serve as a delta base while writing: authenticated but not re-hashed,
    /// since a delta reproduces its blob from exactly these bytes whatever they are.
    /// It and its chain are read through the blob cache, and cached when fetched.
    pub(crate) fn load_base(&self, index: &Index, blob: &BlobRef) -> Result<Vec<u8>> {
        self.load_blob_at(index, blob, 0, false, true, None)
    }

    fn read_sealed(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        Ok(self.backend.read_range(
            FileType::Pack,
            &blob.pack.to_hex(),
            blob.offset as u64,
            blob.stored_len,
        )?)
    }

    fn load_blob_at(
        &self,
        index: &Index,
        blob: &BlobRef,
        depth: usize,
        verify: bool,
        use_cache: bool,
        preread: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let cache = self.cache.as_deref().filter(|_| use_cache);
        let cached = match preread {
            Some(_) => None,
            None => cache.and_then(|c| c.get(&blob.id)),
        };
        let from_cache = cached.is_some();
        let sealed = match cached.or(preread) {
            Some(s) => s,
            None => {
                let s = self.read_sealed(blob)?;
                if let Some(c) = cache {
                    c.put(&blob.id, &s);
                }
                s
            }
        };
        let base = match (blob.kind, blob.base) {
            (BlobKind::Delta, Some(base_id)) => {
                let what = || format!("delta blob {} in pack {}", blob.id.short(), blob.pack);
                if depth >= MAX_CHAIN_DEPTH {
                    return Err(Error::damaged(
                        what(),
                        format!("its chain of bases is longer than {MAX_CHAIN_DEPTH}"),
                    ));
                }
                let base_ref = index.get(&base_id).ok_or_else(|| {
                    Error::damaged(
                        what(),
                        format!(
                            "its base blob {} is missing from the index",
                            base_id.short()
                        ),
                    )
                })?;
                Some(self.load_blob_at(index, &base_ref, depth + 1, false, use_cache, None)?)
            }
            (BlobKind::Delta, None) => {
                return Err(Error::damaged(
                    format!("delta blob {}", blob.id.short()),
                    "no base recorded",
                ))
            }
            _ => None,
        };
        match self.open_blob_checked(blob, &sealed, base.as_deref(), verify) {
            // A damaged cache entry: drop it and read the blob from the repository.
            Err(_) if from_cache => {
                if let Some(c) = cache {
                    c.remove(&blob.id);
                }
                let sealed = self.read_sealed(blob)?;
                self.open_blob_checked(blob, &sealed, base.as_deref(), verify)
            }
            other => other,
        }
    }

    /// Opens a sealed blob read from its pack (given its base's plaintext if it is a delta) and
    /// checks its ID.
    pub fn open_blob(&self, blob: &BlobRef, sealed: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>> {
        self.open_blob_checked(blob, sealed, base, true)
    }

    /// Authenticates a pack entry's sealed bytes, as read from its pack, without decoding them
    /// (prune checks what it copies into a new pack).
    pub fn authenticate_entry(&self, pack: &Id, e: &PackEntry, sealed: &[u8]) -> Result<()> {
        let aad = sealed_blob_aad(e.kind, &e.id, e.base.as_ref());
        self.key.open(&aad, sealed).map(|_| ()).map_err(|err| {
            Error::damaged(
                format!("blob {} in pack {pack}", e.id.short()),
                open_err(err),
            )
        })
    }

    /// Authenticates a sealed blob without decoding it (a delta whose base is gone).
    pub fn open_sealed(&self, blob: &BlobRef, sealed: &[u8]) -> Result<()> {
        let aad = sealed_blob_aad(blob.kind, &blob.id, blob.base.as_ref());
        self.key.open(&aad, sealed).map(|_| ()).map_err(|e| {
            Error::damaged(
                format!("blob {} in pack {}", blob.id.short(), blob.pack),
                open_err(e),
            )
        })
    }

    fn open_blob_checked(
        &self,
        blob: &BlobRef,
        sealed: &[u8],
        base: Option<&[u8]>,
        check_id: bool,
    ) -> Result<Vec<u8>> {
        let what = || format!("blob {} in pack {}", blob.id.short(), blob.pack);
        let aad = sealed_blob_aad(blob.kind, &blob.id, blob.base.as_ref());
        let plain = self
            .key
            .open(&aad, sealed)
            .map_err(|e| Error::damaged(what(), open_err(e)))?;
        let len = blob.raw_len as usize;
        let data = match base {
            Some(base) => crate::format::delta::decode(base, &plain, len),
            None => with_decompressor(|d| payload::decode_exact(d, &plain, len)),
        }
        .map_err(|e: FormatError| Error::damaged(what(), e.to_string()))?;
        if check_id && self.key.blob_id(&data) != blob.id {
            return Err(Error::damaged(what(), "content does not match its ID"));
        }
        Ok(data)
    }

    /// Loads a tree blob.
    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let blob = index
            .get(id)
            .ok_or_else(|| Error::damaged(format!("tree {}", id.short()), "not in the index"))?;
        let json = self.load_blob(index, &blob)?;
        let tree: Tree = serde_json::from_slice(&json)
            .map_err(|e| Error::damaged(format!("tree {}", id.short()), e.to_string()))?;
        tree.validate()
            .map_err(|e| Error::damaged(format!("tree {}", id.short()), e))?;
        Ok(tree)
    }
}

/// Runs `f` with this thread's reusable zstd decompressor.
pub(crate) fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> T,
) -> T {
    thread_local! {
        static D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    D.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
        f(d)
    })
}

/// A sealed blob's associated data: its kind, ID and (deltas only) base, so that no sealed
/// blob can be passed off as another (`docs/format.md`).
fn sealed_blob_aad(kind: BlobKind, id: &Id, base: Option<&Id>) -> Vec<u8> {
    crate::crypto::blob_aad(kind as u8, id, base.filter(|_| kind == BlobKind::Delta))
}
