//! `--read-data`: packs downloaded and re-hashed, every blob authenticated, decompressed (a
//! delta rebuilt from its base) and re-hashed against its ID, each blob decoded once.

use super::*;

/// What checking one pack found.
#[derive(Default)]
pub(super) struct PackResult {
    pub(super) read: bool,
    /// Every blob was opened and re-hashed: only those in `blob_errors` are damaged.
    pub(super) blobs_verified: bool,
    pub(super) blobs_read: usize,
    pub(super) bytes_read: u64,
    pub(super) pack_error: Option<String>,
    pub(super) blob_errors: Vec<(Id, Id, String)>,
    /// Unused delta blobs whose base is in no index.
    pub(super) orphans: usize,
}

impl PackResult {
    pub(super) fn header(r: std::result::Result<(), String>) -> Self {
        PackResult {
            pack_error: r.err(),
            ..Default::default()
        }
    }
}

/// Whether a pack header lists exactly what the index says.
pub(super) fn same_entries(
    header: &[PackEntry],
    listed: &IndexPack,
) -> std::result::Result<(), String> {
    let mut a: Vec<&PackEntry> = header.iter().collect();
    let mut b: Vec<&PackEntry> = listed.blobs.iter().collect();
    a.sort_by_key(|e| (e.offset, e.id));
    b.sort_by_key(|e| (e.offset, e.id));
    if a != b {
        return Err(format!(
            "its header lists {} blobs that differ from the index's {} entries",
            a.len(),
            b.len()
        ));
    }
    Ok(())
}

pub(super) fn compare_header(
    repo: &Repository,
    id: &Id,
    size: u64,
    listed: &IndexPack,
) -> std::result::Result<(), String> {
    let header = repo.read_pack_header(id, size).map_err(|e| e.to_string())?;
    same_entries(&header, listed)
}

/// What `--read-data` shares between packs.
///
/// Each blob is decoded once: a delta blob whose base lies in a pack being read is verified
/// right after its base, with the base's plaintext still at hand (a "dependent"), instead of
/// decoding the base again for it. Only deltas whose base is not read (a subset) fall back to
/// loading the base through a small cache.
pub(super) struct ReadCtx<'a> {
    repo: &'a Repository,
    index: &'a Index,
    used: &'a crate::repository::liveness::UsedSet<'a>,
    bases: BaseCache,
    /// Base blob -> the delta blobs (their indexed copy) verified right after it.
    dependents: HashMap<Id, Vec<BlobRef>>,
}

impl<'a> ReadCtx<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a Index,
        used: &'a crate::repository::liveness::UsedSet<'a>,
        selected: &HashSet<Id>,
    ) -> Self {
        let mut dependents: HashMap<Id, Vec<BlobRef>> = HashMap::new();
        for (delta, base) in index.deltas() {
            let (Some(d), Some(b)) = (index.get(delta), index.get(base)) else {
                continue;
            };
            if selected.contains(&d.pack) && selected.contains(&b.pack) {
                dependents.entry(*base).or_default().push(d);
            }
        }
        ReadCtx {
            repo,
            index,
            used,
            bases: BaseCache::new(64 << 20),
            dependents,
        }
    }

    /// Whether this copy of a delta blob is verified after its base instead of in its own pack.
    fn deferred(&self, blob: &BlobRef) -> bool {
        blob.base.is_some_and(|b| {
            self.dependents.get(&b).is_some_and(|v| {
                v.iter()
                    .any(|d| d.pack == blob.pack && d.offset == blob.offset)
            })
        })
    }

    /// Verifies the deltas waiting for `base`, given its plaintext, then theirs in turn.
    fn verify_dependents(&self, base: &Id, plain: &[u8], r: &mut PackResult, depth: usize) {
        let Some(deps) = self.dependents.get(base) else {
            return;
        };
        if depth > crate::repository::MAX_CHAIN_DEPTH {
            return;
        }
        for d in deps {
            r.blobs_read += 1;
            let sealed = match self
                .repo
                .read_pack_range(&d.pack, d.offset as u64, d.stored_len)
            {
                Ok(s) => s,
                Err(e) => {
                    r.blob_errors.push((d.id, d.pack, e.to_string()));
                    continue;
                }
            };
            r.bytes_read += sealed.len() as u64;
            match self.repo.open_blob(d, &sealed, Some(plain)) {
                Ok(p) => self.verify_dependents(&d.id, &p, r, depth + 1),
                Err(e) => r.blob_errors.push((d.id, d.pack, e.to_string())),
            }
        }
    }

    /// Downloads a pack, re-hashes it, and opens, decompresses and re-hashes every blob.
    pub(super) fn read_pack(&self, id: &Id, listed: &IndexPack) -> PackResult {
        let repo = self.repo;
        let mut r = PackResult {
            read: true,
            ..Default::default()
        };
        let bytes = match repo.read_pack(id) {
            Ok(b) => b,
            Err(e) => {
                r.pack_error = Some(e.to_string());
                return r;
            }
        };
        r.bytes_read = bytes.len() as u64;
        let header = match repo.parse_pack(id, &bytes) {
            Ok(h) => h,
            Err(e) => {
                r.pack_error = Some(e.to_string());
                // Still try the blobs the index lists: a flipped byte damages one blob, not all.
                listed.blobs.clone()
            }
        };
        if r.pack_error.is_none() {
            if let Err(e) = same_entries(&header, listed) {
                r.pack_error = Some(e);
            }
        }
        r.blobs_verified = true;
        for e in &listed.blobs {
            let blob = BlobRef {
                id: e.id,
                pack: *id,
                kind: e.kind,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                base: e.base,
            };
            let Some(sealed) =
                bytes.get(e.offset as usize..e.offset as usize + e.stored_len as usize)
            else {
                r.blob_errors
                    .push((e.id, *id, "it runs past the end of its pack".into()));
                continue;
            };
            if self.deferred(&blob) {
                // Verified right after its base; its sealing is checked here too.
                if let Err(err) = repo.open_sealed(&blob, sealed) {
                    r.blob_errors.push((e.id, *id, err.to_string()));
                }
                continue;
            }
            r.blobs_read += 1;
            let base = match (e.kind, e.base) {
                (BlobKind::Delta, Some(b))
                    if !self.index.contains(&b) && !self.used.contains(&e.id) =>
                {
                    // Its authentication can still be checked; its content cannot.
                    if let Err(err) = repo.open_sealed(&blob, sealed) {
                        r.blob_errors.push((e.id, *id, err.to_string()));
                    }
                    r.orphans += 1;
                    continue;
                }
                (BlobKind::Delta, Some(b)) => match self.bases.get(repo, self.index, &b) {
                    Ok(p) => Some(p),
                    Err(err) => {
                        let base_pack = self.index.get(&b).map_or(*id, |x| x.pack);
                        r.blob_errors.push((
                            b,
                            base_pack,
                            format!("delta base of blob {} cannot be read: {err}", e.id.short()),
                        ));
                        continue;
                    }
                },
                _ => None,
            };
            match repo.open_blob(&blob, sealed, base.as_deref().map(|v| v.as_slice())) {
                Ok(plain) => {
                    // Only the indexed copy has dependents (the one they were decoded against
                    // is the same bytes, but each copy is checked once).
                    if self
                        .index
                        .get(&e.id)
                        .is_some_and(|c| c.pack == *id && c.offset == e.offset)
                    {
                        self.verify_dependents(&e.id, &plain, &mut r, 0);
                    }
                }
                Err(err) => r.blob_errors.push((e.id, *id, err.to_string())),
            }
        }
        r
    }
}

type Plaintexts = HashMap<Id, Arc<Vec<u8>>>;

/// Plaintexts of delta bases, shared by the check threads: most deltas of a file share a few
/// keyframes, so each is read and reconstructed once. Bounded: cleared when full.
pub(super) struct BaseCache {
    limit: usize,
    /// Bytes held, and the plaintexts.
    inner: Mutex<(usize, Plaintexts)>,
}

impl BaseCache {
    fn new(limit: usize) -> Self {
        BaseCache {
            limit,
            inner: Mutex::new((0, HashMap::new())),
        }
    }

    fn get(&self, repo: &Repository, index: &Index, id: &Id) -> Result<Arc<Vec<u8>>> {
        if let Some(p) = self.inner.lock().expect("base cache").1.get(id) {
            return Ok(Arc::clone(p));
        }
        let blob = index
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("blob {} is in no index", id.short())))?;
        let plain = Arc::new(repo.load_blob(index, &blob)?);
        let mut g = self.inner.lock().expect("base cache");
        if g.0 + plain.len() > self.limit {
            g.1.clear();
            g.0 = 0;
        }
        g.0 += plain.len();
        g.1.insert(*id, Arc::clone(&plain));
        Ok(plain)
    }
}
