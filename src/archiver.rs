//! The ingest pipeline: stream -> chunker -> hash + dedup -> compress -> seal -> packer -> writer.
//!
//! ```text
//!  reader thread        seal workers (one per core)     this thread         writer threads
//!  read + FastCDC  -->  keyed BLAKE3, dedup lookup, -->  reorder, PackWriter -->  PackStore::store
//!  whole-file hash      zstd, XChaCha20-Poly1305         (staging file)           (WRITERS at once)
//! ```
//! Every queue is bounded. At most [`IN_FLIGHT`] chunks exist between the chunker and the packer
//! (a token is taken per chunk by the reader and given back by the packer once the chunk is
//! stored in order), so memory is flat whatever the stream's size: the chunker's buffer
//! (2 x max chunk), `IN_FLIGHT` chunks and their sealed forms, one zstd context per worker. Packs
//! are staged in files, not in memory. Workers pull single chunks, so one large chunk never
//! stalls the others (no batch barrier); the packer restores the input order.
//!
//! One file (~680 lines) on purpose: the stages above share the bounded queues, the token
//! budget and the error path that stops them all; a reader checks the memory bound and the
//! write order in one place.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunker::Chunker;
use crate::crypto::{blob_aad, MasterKey, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::tree::FileNode;
use crate::format::{delta, payload, BlobKind};
use crate::id::Id;
use crate::index::Index;
use crate::repository::packer::{FinishedPack, PackStore, PackWriter};
use crate::repository::{Repository, MAX_BLOBS_PER_INDEX};
use crate::similarity::{
    sketch, sketch_of, sketch_range, sketch_sampled, ChunkMeta, ParentFile, Sample,
};
use crate::trail::Trail;

/// Chunks in flight between the chunker and the packer.
pub const IN_FLIGHT: usize = 8;
/// Concurrent pack writes.
pub const WRITERS: usize = 2;
/// Most pack writers, whatever the backend's concurrency.
pub const MAX_WRITERS: usize = 8;

/// Live counters for a progress display; the library only updates them.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_in: AtomicU64,
    pub bytes_added: AtomicU64,
    /// What the source expects to produce, when it knows (a database's size); 0 if unknown.
    pub bytes_expected: AtomicU64,
}

/// What a run added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub bytes_in: u64,
    pub blobs_total: u64,
    pub blobs_new: u64,
    pub bytes_added: u64,
    pub bytes_added_raw: u64,
    pub packs_new: u64,
    /// New blobs stored as deltas, and their stored bytes.
    pub blobs_delta: u64,
    pub bytes_delta: u64,
    /// The index files the run wrote: the snapshot's commit check knows them without reading
    /// them back.
    pub index_files: Vec<Id>,
}

impl ArchiveStats {
    /// Adds another run's figures (several archivers working for one snapshot).
    pub fn merge(&mut self, o: &ArchiveStats) {
        self.bytes_in += o.bytes_in;
        self.blobs_total += o.blobs_total;
        self.blobs_new += o.blobs_new;
        self.bytes_added += o.bytes_added;
        self.bytes_added_raw += o.bytes_added_raw;
        self.packs_new += o.packs_new;
        self.blobs_delta += o.blobs_delta;
        self.bytes_delta += o.bytes_delta;
        self.index_files.extend_from_slice(&o.index_files);
    }
}

/// A chunk after the parallel stage.
enum Processed {
    /// The worker failed (a panic, which only running out of memory can cause).
    Failed(String),
    Known {
        id: Id,
        meta: ChunkMeta,
    },
    New {
        id: Id,
        kind: BlobKind,
        base: Option<Id>,
        raw_len: u32,
        sealed: Vec<u8>,
        meta: ChunkMeta,
    },
    /// A chunk cut into pieces by origin ([`crate::pieces`]), each a blob of the file.
    Pieces(Vec<Processed>),
}

/// zstd level of delta blobs: level 1's fast match finder, with a hash table sized to the window
/// (see [`crate::format::delta`]), finds a base's long runs (`cargo bench --bench stages -- delta`).
pub const DELTA_LEVEL: i32 = 1;
/// Generations of a chunk's delta chain before it is stored in full again (a keyframe). With
/// skip-deltas the chain of generation `g` has `popcount(g)` deltas, so depth stays at most 6.
pub const GENERATION_CAP: u32 = 64;
/// Deepest delta chain a writer creates (readers follow up to
/// [`crate::repository::MAX_CHAIN_DEPTH`]).
pub const MAX_WRITE_DEPTH: usize = 8;

/// Compresses and seals one blob's plaintext.
fn seal_blob(key: &MasterKey, level: i32, kind: BlobKind, id: &Id, data: &[u8]) -> Vec<u8> {
    seal_payload(key, kind, id, compress(level, data))
}

/// Seals a full blob's payload made by [`compress`] (room for nonce and tag included).
fn seal_payload(key: &MasterKey, kind: BlobKind, id: &Id, mut buf: Vec<u8>) -> Vec<u8> {
    crate::crypto::seal_in_place(&key.encrypt, &blob_aad(kind as u8, id, None), &mut buf);
    buf
}

/// A full payload with room for sealing, from this thread's reusable compressors.
///
/// Above level [`SECOND_OPINION_ABOVE`] the chunk is also compressed at level 1 and the smaller
/// kept: on a real pg_dump (md5 text columns) levels 3 to 12 store 17% *more* than level 1
/// (`docs/measurements/compression-level.md`), and a level-1 pass costs a tenth of a level-12
/// one.
fn compress(level: i32, data: &[u8]) -> Vec<u8> {
    let payload = compress_at(level, data);
    if level <= SECOND_OPINION_ABOVE {
        return payload;
    }
    let fast = compress_at(1, data);
    if fast.len() < payload.len() {
        fast
    } else {
        payload
    }
}

/// Levels above this also try level 1 (see [`compress`]).
const SECOND_OPINION_ABOVE: i32 = 3;

fn compress_at(level: i32, data: &[u8]) -> Vec<u8> {
    type Slot = (i32, zstd::bulk::Compressor<'static>);
    thread_local! {
        // One compressor per level in use (at most two: the run's, and level 1).
        static C: std::cell::RefCell<(Vec<Slot>, Vec<u8>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    C.with(|cell| {
        let (slots, scratch) = &mut *cell.borrow_mut();
        let i = match slots.iter().position(|s| s.0 == level) {
            Some(i) => i,
            None => {
                if slots.len() >= 2 {
                    slots.remove(0);
                }
                slots.push((
                    level,
                    zstd::bulk::Compressor::new(level).expect("zstd context"),
                ));
                slots.len() - 1
            }
        };
        payload::encode_with(&mut slots[i].1, data, scratch, NONCE_LEN, TAG_LEN)
    })
}

/// A chunk on its way through the delta path: its ID, bytes, sketch and sketch samples.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    id: &'a Id,
    data: &'a [u8],
    sketch: &'a [u32; 8],
    samples: &'a [Sample],
}

/// The read-only state the parallel stage shares with the packer.
struct Shared<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// Blobs stored by this run (the packer inserts; the parallel stage only reads).
    session: RwLock<HashSet<Id>>,
}

impl Shared<'_> {
    fn known(&self, id: &Id) -> bool {
        self.index.contains_live(id) || self.session.read().expect("lock").contains(id)
    }

    /// Deltas in a blob's chain of bases (0 for a full blob), as far as the index knows.
    fn depth(&self, id: &Id) -> usize {
        let mut depth = 0;
        let mut cur = *id;
        while let Some(b) = self.index.base_of(&cur) {
            depth += 1;
            cur = b;
            if depth > crate::repository::MAX_CHAIN_DEPTH {
                break;
            }
        }
        depth
    }

    /// A blob (a tree, say) without delta handling.
    fn process(&self, kind: BlobKind, data: Vec<u8>) -> Processed {
        let key = self.repo.key();
        let id = key.blob_id(&data);
        if self.known(&id) {
            return Processed::Known {
                id,
                meta: ChunkMeta::default(),
            };
        }
        let sealed = seal_blob(key, self.repo.compression_level(), kind, &id, &data);
        Processed::New {
            id,
            kind,
            base: None,
            raw_len: data.len() as u32,
            sealed,
            meta: ChunkMeta::default(),
        }
    }

    /// A chunk of a stream: exact dedup first, then a delta against the most similar chunk of
    /// the parent (when there is one and it pays), else a full blob. `trail` tells a chunk
    /// that resembles no parent chunk where its predecessor left off ([`crate::trail`]); every
    /// path publishes this chunk's entry before compressing a full blob.
    fn process_chunk(
        &self,
        data: Vec<u8>,
        parent: Option<&ParentFile>,
        seq: u64,
        trail: &Trail,
    ) -> Processed {
        let Some(parent) = parent else {
            return self.process(BlobKind::Data, data);
        };
        let id = self.repo.key().blob_id(&data);
        if self.known(&id) {
            // The content after a chunk the parent holds goes on at the parent's next chunk.
            trail.publish(seq, parent.position_of(&id).map(|i| i + 1));
            return self.known_chunk(parent, id, &data);
        }
        // The samples let a chunk cut into pieces find its anchors and sketch its pieces
        // without hashing it again.
        let (sk, samples) = sketch_sampled(&data);
        let mut ranked = parent.ranked(&sk, seq as usize);
        let hinted = ranked.is_empty();
        if hinted {
            ranked.extend(trail.before(seq).filter(|&i| i < parent.chunks.len()));
        }
        let mut full = None;
        let chunk = Chunk {
            id: &id,
            data: &data,
            sketch: &sk,
            samples: &samples,
        };
        let (delta, next) = self.try_delta(parent, &chunk, &ranked, &mut full);
        // A chunk the trail led nowhere is new content (a new table, say): the trail ends
        // here, so the chunks after it are not walked against the parent one by one.
        trail.publish(seq, next.filter(|_| !hinted || delta.is_some()));
        match delta {
            Some(p) => p,
            None => self.full_chunk(id, &data, sk, full),
        }
    }

    /// A chunk already stored, with the metadata the parent recorded for it (or one derived
    /// from its chain depth).
    fn known_chunk(&self, parent: &ParentFile, id: Id, data: &[u8]) -> Processed {
        let meta = parent.meta_of(&id).unwrap_or_else(|| {
            let depth = self.depth(&id) as u32;
            ChunkMeta(
                if depth == 0 {
                    0
                } else {
                    (1 << depth.min(16)) - 1
                },
                sketch(data),
            )
        });
        Processed::Known { id, meta }
    }

    /// A chunk stored whole; `full` is its payload when a delta attempt already compressed it.
    fn full_chunk(&self, id: Id, data: &[u8], sk: [u32; 8], full: Option<Vec<u8>>) -> Processed {
        let key = self.repo.key();
        let sealed = match full {
            Some(payload) => seal_payload(key, BlobKind::Data, &id, payload),
            None => seal_blob(
                key,
                self.repo.compression_level(),
                BlobKind::Data,
                &id,
                data,
            ),
        };
        Processed::New {
            id,
            kind: BlobKind::Data,
            base: None,
            raw_len: data.len() as u32,
            sealed,
            meta: ChunkMeta(0, sk),
        }
    }

    /// The base a chunk similar to the parent's chunk `candidate` is stored against, with the
    /// generation it gets. Skip-delta: a chunk similar to one of generation `g` becomes
    /// generation `g + 1`, a delta against that chunk's ancestor of generation `(g + 1) & g`
    /// (Subversion's skip-deltas), so chains stay `popcount(g + 1)` deep.
    fn base_for(&self, candidate: Id, cmeta: ChunkMeta) -> Option<(Id, u32)> {
        let g = cmeta.generation();
        if g + 1 >= GENERATION_CAP {
            return None;
        }
        let target = (g + 1) & g;
        let (mut node, mut x) = (candidate, g);
        while x > target {
            match self.index.base_of(&node) {
                Some(b) => {
                    node = b;
                    x &= x - 1;
                }
                None => break,
            }
        }
        if self.depth(&node) + 1 > MAX_WRITE_DEPTH {
            return None;
        }
        Some((node, g + 1))
    }

    /// A base's plaintext, or `None` when it cannot be read (the chunk is then stored whole).
    fn load(&self, node: &Id) -> Option<Vec<u8>> {
        let base_ref = self.index.get_live(node)?;
        self.repo.load_base(self.index, &base_ref).ok()
    }

    /// `data` as a delta against `base` (the blob `node`), sealed, if it pays: at most 1/16 of
    /// the chunk, or at most half its full payload (which is then left in `full` when it does
    /// not pay, for the caller to seal instead of compressing again).
    #[allow(clippy::too_many_arguments)]
    fn delta_blob(
        &self,
        id: &Id,
        data: &[u8],
        node: Id,
        base: &[u8],
        meta: ChunkMeta,
        full: &mut Option<Vec<u8>>,
        encoded: Option<Vec<u8>>,
    ) -> Option<Processed> {
        let mut buf = match encoded {
            Some(b) => b,
            None => delta::encode(base, data, DELTA_LEVEL, NONCE_LEN, TAG_LEN).ok()?,
        };
        let delta_len = buf.len() - NONCE_LEN;
        if delta_len > data.len() / 16 {
            let payload = compress(self.repo.compression_level(), data);
            if delta_len * 2 > payload.len() - NONCE_LEN {
                *full = Some(payload);
                return None;
            }
        }
        crate::crypto::seal_in_place(
            &self.repo.key().encrypt,
            &blob_aad(BlobKind::Delta as u8, id, Some(&node)),
            &mut buf,
        );
        Some(Processed::New {
            id: *id,
            kind: BlobKind::Delta,
            base: Some(node),
            raw_len: data.len() as u32,
            sealed: buf,
            meta,
        })
    }

    /// A delta against the base found for the first of the `ranked` parent chunks; when that
    /// delta is not small, the chunk may span several parent chunks, and is cut into pieces by
    /// origin ([`Shared::try_pieces`]). `None`: store the chunk whole (its payload may be in
    /// `full`). Also returns where in the parent the chunk's content ends (for the trail).
    fn try_delta(
        &self,
        parent: &ParentFile,
        chunk: &Chunk<'_>,
        ranked: &[usize],
        full: &mut Option<Vec<u8>>,
    ) -> (Option<Processed>, Option<usize>) {
        let Chunk {
            id,
            data,
            sketch: sk,
            ..
        } = *chunk;
        let Some(&best) = ranked.first() else {
            return (None, None);
        };
        let (candidate, cmeta) = parent.chunks[best];
        let Some((node, generation)) = self.base_for(candidate, cmeta) else {
            return (None, Some(best));
        };
        let Some(base) = self.load(&node) else {
            return (None, Some(best));
        };
        let best_base = (node, generation, base.as_slice());
        let Ok(buf) = delta::encode(&base, data, DELTA_LEVEL, NONCE_LEN, TAG_LEN) else {
            return (None, Some(best));
        };
        if buf.len() - NONCE_LEN > data.len() / SPLIT_ABOVE {
            if let Some((p, end)) = self.try_pieces(parent, chunk, ranked, best_base) {
                return (Some(p), Some(end));
            }
        }
        let meta = ChunkMeta(generation, *sk);
        let p = self.delta_blob(id, data, node, &base, meta, full, Some(buf));
        (p, Some(best))
    }

    /// Cuts `data` by origin among the best base, its neighbours in the parent file (where the
    /// content of a chunk whose cut point moved comes from), the parent chunks the missing
    /// content's own sketch points at, and the next-ranked candidates, each piece stored as a
    /// delta against its own base. Bases are read one at a time, nearest neighbour first on
    /// the side where the missing content lies, until what is left is below a piece. `None`
    /// when the chunk's content all comes from the best base (or from none). Also returns
    /// where in the parent the chunk's content ends.
    fn try_pieces(
        &self,
        parent: &ParentFile,
        chunk: &Chunk<'_>,
        ranked: &[usize],
        best: (Id, u32, &[u8]),
    ) -> Option<(Processed, usize)> {
        use crate::pieces::{Origins, MAX_PIECES, MIN_PIECE};
        let data = chunk.data;
        let mut origins = Origins::from_samples(data, chunk.samples);
        origins.add(best.2);
        // Most large deltas are many small changes (a skip-delta spanning several runs): only
        // content the best base lacks makes other bases worth reading.
        if origins.missing() < MIN_PIECE {
            return None;
        }
        let b = ranked[0];
        // Bases offered, in order (index k + 1 in `origins`): the parent chunk each came from,
        // and its plaintext if it held anything.
        let mut bases: Vec<(Id, u32, usize, Option<Vec<u8>>)> = Vec::new();
        // Neighbours first, walking out from the best candidate on the side of the chunk's end
        // that misses more (a chunk may span several parent entries, pieces of earlier
        // snapshots among them); a side is left after two that held less than a piece (rows
        // moved from all over the table match every neighbour a little). Then the chunks that
        // share features with what is still missing, the other side, a side further on (parent
        // chunks deleted whole: the content goes on beyond them), and the ranked candidates.
        // A side is walked only while its end of the chunk misses a piece's worth, so neither
        // new rows at one end nor the wrong side spend the budget the other end needs; the
        // side before only once something was found.
        let mut next = [b.checked_sub(1), Some(b + 1)];
        let mut empty = [0u8; 2];
        let mut neighbours = 0;
        let mut by_missing: Option<std::vec::IntoIter<usize>> = None;
        let mut ranked_left = ranked[1..].iter().take(PIECE_CANDIDATES);
        // Bytes of bases hashed: a straddle needs about the chunk's length; rows moved from
        // all over a table (found a little in every base) would otherwise read them all.
        let budget = 2 * data.len() + (1 << 20);
        let mut hashed = 0;
        loop {
            let missing = origins.missing();
            if missing < MIN_PIECE || hashed >= budget {
                break;
            }
            let ends = origins.missing_ends();
            let walk = |s: usize, patience: u8| {
                ends[s] >= MIN_PIECE
                    && neighbours < MAX_NEIGHBOURS
                    && next[s].is_some_and(|i| i < parent.chunks.len())
                    && empty[s] < patience
            };
            let prefer = usize::from(ends[1] >= ends[0]);
            // Nothing found yet (a candidate from the trail that was wrong): the content is
            // more likely further along the parent than behind, as a stream follows its
            // parent's order.
            let lost = ends[0] + ends[1] > missing;
            let (i, side) = if walk(prefer, 2) {
                (next[prefer].expect("open"), Some(prefer))
            } else if let Some(i) = by_missing
                .get_or_insert_with(|| {
                    let hashes = origins.missing_anchors().map(|a| chunk.samples[a].1);
                    let mut r = parent.ranked(&sketch_of(hashes), b);
                    r.truncate(PIECE_CANDIDATES);
                    r.into_iter()
                })
                .next()
            {
                (i, None)
            } else if !lost && walk(1 - prefer, 2) {
                (next[1 - prefer].expect("open"), Some(1 - prefer))
            } else if let Some(s) = [prefer, 1 - prefer].into_iter().find(|&s| walk(s, u8::MAX)) {
                // Whole parent chunks deleted: the content goes on further along.
                (next[s].expect("open"), Some(s))
            } else if let Some(&i) = ranked_left.next() {
                (i, None)
            } else {
                break;
            };
            if let Some(s) = side {
                neighbours += 1;
                next[s] = if s == 1 {
                    Some(i + 1)
                } else {
                    i.checked_sub(1)
                };
            }
            let (candidate, cmeta) = parent.chunks[i];
            let Some((node, generation)) = self.base_for(candidate, cmeta) else {
                continue;
            };
            if node == best.0 || bases.iter().any(|b| b.0 == node) {
                continue;
            }
            let Some(plain) = self.load(&node) else {
                continue;
            };
            // A neighbour holds what the chunk lacks next to where they meet: that end of it is
            // hashed first, the rest only if a piece's worth is still missing (rows deleted
            // between, say).
            let want = (missing + missing / 4 + (64 << 10)).min(plain.len());
            let (near, rest) = match side {
                Some(1) => (0..want, want..plain.len()),
                Some(_) => (plain.len() - want..plain.len(), 0..plain.len() - want),
                None => (0..plain.len(), 0..0),
            };
            hashed += near.len();
            let mut covered = origins.add(&plain[near]);
            if origins.missing() >= MIN_PIECE && !rest.is_empty() && hashed < budget {
                hashed += rest.len();
                covered += origins.add_more(&plain[rest]);
            }
            if let Some(s) = side {
                empty[s] = if covered < MIN_PIECE {
                    empty[s].saturating_add(1)
                } else {
                    0
                };
            }
            bases.push((node, generation, i, (covered > 0).then_some(plain)));
        }
        let cuts = origins.pieces(MIN_PIECE, MAX_PIECES);
        // One piece is worth it only when another base than the best holds the whole chunk.
        if cuts.len() < 2 && cuts[0].base.is_none_or(|k| k == 0) {
            return None;
        }
        let end = match cuts.last().and_then(|c| c.base) {
            Some(k) if k > 0 => bases[k - 1].2,
            _ => b,
        };
        let key = self.repo.key();
        let pieces = cuts
            .into_iter()
            .map(|cut| {
                let piece = &data[cut.range.clone()];
                let id = key.blob_id(piece);
                if self.known(&id) {
                    return self.known_chunk(parent, id, piece);
                }
                let sk = sketch_range(data, chunk.samples, cut.range);
                let mut full = None;
                let delta = cut.base.and_then(|k| {
                    let (node, generation, base) = match k {
                        0 => (best.0, best.1, best.2),
                        k => {
                            let (node, generation, _, base) = &bases[k - 1];
                            (*node, *generation, base.as_deref()?)
                        }
                    };
                    let meta = ChunkMeta(generation, sk);
                    self.delta_blob(&id, piece, node, base, meta, &mut full, None)
                });
                delta.unwrap_or_else(|| self.full_chunk(id, piece, sk, full))
            })
            .collect();
        Some((Processed::Pieces(pieces), end))
    }
}

/// A delta larger than 1/SPLIT_ABOVE of its chunk makes the archiver look for the chunk's other
/// origins ([`crate::pieces`]): a chunk of rows with a few changed costs well under 1% as a
/// delta; 1/64 is already a tenth of the full payload. Looking costs a hash pass over the base:
/// at 1/256 a series of 8 pgbench snapshots took 30% more CPU for 0.3% less space.
const SPLIT_ABOVE: usize = 64;
/// Ranked candidates (after the best) a chunk may be cut against, besides its neighbours.
const PIECE_CANDIDATES: usize = 3;
/// Neighbours of the best candidate (both sides together) a chunk may be cut against: a 4 MiB
/// chunk spans about four parent chunks of the 1 MiB average, more once some are pieces.
const MAX_NEIGHBOURS: usize = 8;

/// The packer and the pack writers.
struct Sink {
    /// Set by a writer that failed, so the run stops at the next pack instead of at the end.
    writer_failed: Arc<AtomicBool>,
    pack: Option<PackWriter>,
    to_writers: Option<Sender<FinishedPack>>,
    writers: Vec<JoinHandle<Result<Vec<IndexPack>>>>,
    stats: ArchiveStats,
    progress: Arc<Progress>,
}

fn writer_loop(
    store: PackStore,
    rx: Receiver<FinishedPack>,
    failed: Arc<AtomicBool>,
) -> Result<Vec<IndexPack>> {
    let mut done = Vec::new();
    for p in rx {
        match store.store(p) {
            Ok(stored) => done.push(stored),
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Most plaintext bytes in one blob (the format's `raw_len` limit).
pub const MAX_BLOB_LEN: usize = (1 << 29) - 1;

impl Sink {
    /// Stores a processed chunk (its pieces, if it was cut) and appends its blobs to a file's
    /// content.
    fn store_chunk(
        &mut self,
        shared: &Shared<'_>,
        p: Processed,
        content: &mut Vec<Id>,
        metas: &mut Vec<ChunkMeta>,
    ) -> Result<()> {
        if let Processed::Pieces(pieces) = p {
            for piece in pieces {
                self.store_chunk(shared, piece, content, metas)?;
            }
            return Ok(());
        }
        let (id, meta) = self.store(shared, p)?;
        content.push(id);
        metas.push(meta);
        Ok(())
    }

    /// Appends a processed blob to the current pack unless it is already stored.
    fn store(&mut self, shared: &Shared<'_>, p: Processed) -> Result<(Id, ChunkMeta)> {
        self.stats.blobs_total += 1;
        let (id, kind, base, raw_len, sealed, meta) = match p {
            Processed::Known { id, meta } => return Ok((id, meta)),
            Processed::Failed(msg) => return Err(Error::Source(msg)),
            Processed::Pieces(_) => {
                return Err(Error::Source("pieces where one blob was expected".into()))
            }
            Processed::New {
                id,
                kind,
                base,
                raw_len,
                sealed,
                meta,
            } => (id, kind, base, raw_len, sealed, meta),
        };
        if shared.index.contains_live(&id) || !shared.session.write().expect("lock").insert(id) {
            return Ok((id, meta));
        }
        if self.pack.is_none() {
            self.pack = Some(shared.repo.start_pack()?);
        }
        let pack = self.pack.as_mut().expect("just set");
        pack.add(kind, id, raw_len, &sealed, base)
            .map_err(|e| shared.repo.staging_error(e))?;
        if kind != BlobKind::Tree {
            if let Some(cache) = shared.repo.cache() {
                // Tomorrow's delta bases, without fetching them back from the repository.
                cache.put(&id, &sealed);
            }
        }
        self.stats.blobs_new += 1;
        if kind == BlobKind::Delta {
            self.stats.blobs_delta += 1;
            self.stats.bytes_delta += sealed.len() as u64;
        }
        self.stats.bytes_added += sealed.len() as u64;
        self.stats.bytes_added_raw += raw_len as u64;
        self.progress
            .bytes_added
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        if pack.len() >= shared.repo.config().pack_size as u64 {
            self.flush_pack(shared.repo)?;
        }
        Ok((id, meta))
    }

    /// Hands the current pack to the writers.
    fn flush_pack(&mut self, repo: &Repository) -> Result<()> {
        let Some(pack) = self.pack.take() else {
            return Ok(());
        };
        let finished = pack.finish(repo.key()).map_err(|e| repo.staging_error(e))?;
        self.stats.packs_new += 1;
        let tx = self.to_writers.as_ref().expect("writers run until finish");
        if self.writer_failed.load(Ordering::SeqCst) || tx.send(finished).is_err() {
            // Every writer stopped, so one of them failed: report its error.
            self.join_writers()?;
            return Err(Error::Source("pack writers stopped".into()));
        }
        Ok(())
    }

    fn join_writers(&mut self) -> Result<Vec<IndexPack>> {
        self.to_writers = None;
        let mut packs = Vec::new();
        let mut first_err = None;
        for h in self.writers.drain(..) {
            match h.join() {
                Ok(Ok(p)) => packs.extend(p),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Source("a pack writer thread panicked".into()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(packs),
        }
    }
}

/// Adds streams and blobs to a repository; [`Archiver::finish`] makes them durable and indexed.
///
/// Dropping an archiver without `finish` leaves only unreferenced packs, never a partial index.
pub struct Archiver<'a> {
    shared: Shared<'a>,
    sink: Sink,
}

impl<'a> Archiver<'a> {
    /// Starts a run against `repo`, deduplicating against `index`.
    pub fn new(repo: &'a Repository, index: &'a Index, progress: Arc<Progress>) -> Self {
        let (tx, rx) = bounded::<FinishedPack>(1);
        let writer_failed = Arc::new(AtomicBool::new(false));
        // A remote backend gets as many uploads in flight as it has connections.
        // Each holds a finished pack (16 MiB) in memory while uploading: at most MAX_WRITERS.
        let writers = (0..repo.concurrency().clamp(WRITERS, MAX_WRITERS))
            .map(|_| {
                let store = repo.pack_store();
                let (rx, failed) = (rx.clone(), Arc::clone(&writer_failed));
                std::thread::spawn(move || writer_loop(store, rx, failed))
            })
            .collect();
        Archiver {
            shared: Shared {
                repo,
                index,
                session: RwLock::new(HashSet::new()),
            },
            sink: Sink {
                writer_failed,
                pack: None,
                to_writers: Some(tx),
                writers,
                stats: ArchiveStats::default(),
                progress,
            },
        }
    }

    /// The index this run deduplicates against.
    pub fn index(&self) -> &'a Index {
        self.shared.index
    }

    /// A keyed hash of `data` as a number: content-defined decisions (tree page cuts) that do
    /// not reveal names to whoever sees blob sizes.
    pub fn key_hash(&self, data: &[u8]) -> u64 {
        let id = self.shared.repo.key().blob_id(data);
        u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
    }

    /// Stores a small file held in memory, on this thread: for many small files (storage
    /// objects) a pipeline's threads per file would cost more than the work. Deltas and
    /// sketches as in [`Archiver::add_stream_cancellable`].
    pub fn add_bytes(
        &mut self,
        name: &str,
        data: &[u8],
        parent: Option<&ParentFile>,
    ) -> Result<FileNode> {
        let params = self.shared.repo.config().chunker;
        let mut hasher = self.shared.repo.key().hasher();
        hasher.update(data);
        let mut content = Vec::new();
        let mut metas = Vec::new();
        let trail = Trail::default();
        for (seq, range) in crate::chunker::split(data, params).into_iter().enumerate() {
            let chunk = data[range].to_vec();
            self.sink
                .progress
                .bytes_in
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let p = self.shared.process_chunk(chunk, parent, seq as u64, &trail);
            trail.publish(seq as u64, None);
            self.sink
                .store_chunk(&self.shared, p, &mut content, &mut metas)?;
        }
        self.sink.stats.bytes_in += data.len() as u64;
        Ok(FileNode {
            name: name.to_string(),
            size: data.len() as u64,
            hash: Id(*hasher.finalize().as_bytes()),
            content,
            chunks: if parent.is_some() { metas } else { Vec::new() },
            attrs: None,
        })
    }

    /// Counts a file whose blobs are all stored already (an unchanged storage object taken
    /// from the parent snapshot): its blobs count as referenced, nothing is read.
    pub fn add_known(&mut self, node: &FileNode) {
        self.sink.stats.blobs_total += node.content.len() as u64;
    }

    /// Stores one blob (a tree, say) and returns its ID.
    pub fn add_blob(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<Id> {
        if data.len() > MAX_BLOB_LEN {
            return Err(Error::Invalid(format!(
                "a {kind:?} blob of {} bytes exceeds the format's limit of {MAX_BLOB_LEN} bytes",
                data.len()
            )));
        }
        let p = self.shared.process(kind, data);
        let (id, _) = self.sink.store(&self.shared, p)?;
        Ok(id)
    }

    /// Stores a whole stream as a file named `name` and returns its tree node.
    pub fn add_stream<R: Read + Send>(&mut self, name: &str, reader: R) -> Result<FileNode> {
        self.add_stream_cancellable(name, reader, None, &|| {})
    }

    /// Like [`Archiver::add_stream`], with delta blobs against `parent` (the parent snapshot's
    /// version of this file; an empty one for a first snapshot, so sketches are recorded; `None`
    /// for no deltas and no sketches). `cancel` is called when the run fails before the stream
    /// ends, to unblock the reader (a command source kills its process), so the error is
    /// reported at once rather than when the source next writes.
    pub fn add_stream_cancellable<R: Read + Send>(
        &mut self,
        name: &str,
        reader: R,
        parent: Option<&ParentFile>,
        cancel: &(dyn Fn() + Sync),
    ) -> Result<FileNode> {
        let params = self.shared.repo.config().chunker;
        let key = self.shared.repo.key().clone();
        let progress = Arc::clone(&self.sink.progress);
        // More workers than chunks in flight would only hold idle buffers and zstd contexts.
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(IN_FLIGHT);
        // Tokens bound the chunks in flight; the packer returns one per chunk it has stored.
        let (token_tx, token_rx) = bounded::<()>(IN_FLIGHT);
        let (chunk_tx, chunk_rx) = bounded::<(u64, Vec<u8>)>(workers);
        let (done_tx, done_rx) = bounded::<(u64, Processed)>(IN_FLIGHT);
        let shared = &self.shared;
        let trail = &Trail::default();
        let sink = &mut self.sink;
        let mut content = Vec::new();
        let mut metas = Vec::new();

        let (read_result, store_result) = std::thread::scope(|s| {
            let reader_thread = s.spawn(move || -> std::io::Result<(u64, Id)> {
                let mut hasher = key.hasher();
                let mut size = 0u64;
                let stopped = || std::io::Error::other("pipeline stopped");
                for (seq, chunk) in Chunker::new(reader, params).enumerate() {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    progress
                        .bytes_in
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    token_tx.send(()).map_err(|_| stopped())?;
                    chunk_tx.send((seq as u64, chunk)).map_err(|_| stopped())?;
                }
                Ok((size, Id(*hasher.finalize().as_bytes())))
            });
            for _ in 0..workers {
                let (rx, tx) = (chunk_rx.clone(), done_tx.clone());
                s.spawn(move || {
                    for (seq, data) in rx {
                        let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            shared.process_chunk(data, parent, seq, trail)
                        }))
                        .unwrap_or_else(|_| {
                            Processed::Failed("a compression worker failed".into())
                        });
                        // Whatever happened (a panic too), the next chunk may be waiting for
                        // this one's entry.
                        trail.publish(seq, None);
                        if tx.send((seq, p)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop((chunk_rx, done_tx));
            let store_result = (|| -> Result<()> {
                let mut pending = BTreeMap::new();
                let mut next = 0u64;
                for (seq, p) in &done_rx {
                    pending.insert(seq, p);
                    while let Some(p) = pending.remove(&next) {
                        sink.store_chunk(shared, p, &mut content, &mut metas)?;
                        next += 1;
                        let _ = token_rx.recv();
                    }
                }
                if !pending.is_empty() {
                    return Err(Error::Source("the pipeline lost a chunk".into()));
                }
                Ok(())
            })();
            // On failure, dropping the receivers stops the workers and then the reader; the
            // cancel hook unblocks a reader waiting on its source.
            drop((done_rx, token_rx));
            if store_result.is_err() {
                cancel();
            }
            (reader_thread.join(), store_result)
        });
        store_result?;
        let (size, hash) = match read_result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(Error::Source(format!("reading {name}: {e}"))),
            Err(_) => {
                return Err(Error::Source(format!(
                    "reading {name}: reader thread panicked"
                )))
            }
        };
        self.sink.stats.bytes_in += size;
        Ok(FileNode {
            name: name.to_string(),
            size,
            hash,
            content,
            chunks: if parent.is_some() { metas } else { Vec::new() },
            attrs: None,
        })
    }

    /// Flushes the last pack, waits until every pack is durable, then writes the index file that
    /// lists them. Returns the run's figures and the index files written (none if nothing was
    /// new).
    pub fn finish(mut self) -> Result<(ArchiveStats, Vec<Id>)> {
        self.sink.flush_pack(self.shared.repo)?;
        let packs = self.sink.join_writers()?;
        // One index file per MAX_BLOBS_PER_INDEX blobs; the snapshot is written only after all.
        let mut index_ids = Vec::new();
        let mut group: Vec<IndexPack> = Vec::new();
        let mut blobs = 0;
        for p in packs {
            if blobs + p.blobs.len() > MAX_BLOBS_PER_INDEX && !group.is_empty() {
                index_ids.push(self.save_index_group(std::mem::take(&mut group))?);
                blobs = 0;
            }
            blobs += p.blobs.len();
            group.push(p);
        }
        if !group.is_empty() {
            index_ids.push(self.save_index_group(group)?);
        }
        let mut stats = self.sink.stats.clone();
        stats.index_files = index_ids.clone();
        Ok((stats, index_ids))
    }

    fn save_index_group(&self, packs: Vec<IndexPack>) -> Result<Id> {
        crate::cleanup::crash_point("snapshot:packs-written");
        self.shared.repo.save_index(&IndexFile {
            packs,
            ..Default::default()
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Stop the writers; packs they already wrote stay unreferenced until prune.
        self.to_writers = None;
        for h in self.writers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks whose sketches share nothing with the parent's (blanked here: every parent chunk
    /// keeps only 8 features, so a chunk holding a third of one misses them all about one time
    /// in 17) still find their bases: by the trail, where the chunk before left off, and by
    /// walking the parent past chunks a deletion removed whole.
    #[test]
    fn chunks_that_match_no_sketch_find_their_bases_by_position() {
        use crate::crypto::KdfParams;
        use crate::repository::Actor;
        use crate::similarity::SKETCH_LEN;
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            crate::backend::Storage::local(dir.path().join("repo")),
            b"pw",
            KdfParams::with_cost(1024, 1, 1),
            &Actor::current(),
        )
        .unwrap()
        // A fixed seed: the same cuts every run, so the case below is met every run.
        .with_chunker_seed(1);
        let data = crate::testdata::rows(1_200_000, 7);
        let index = repo.load_index().unwrap();
        let mut ar = Archiver::new(&repo, &index, Default::default());
        let first = ar
            .add_bytes("db", &data, Some(&ParentFile::default()))
            .unwrap();
        ar.finish().unwrap();
        let parent = ParentFile::new(
            first
                .content
                .iter()
                .zip(&first.chunks)
                .map(|(id, m)| (*id, ChunkMeta(m.0, [u32::MAX; SKETCH_LEN])))
                .collect(),
        );
        let cuts = crate::chunker::split(&data, repo.config().chunker);
        // A byte changed in the second chunk. The second half of chunk j and the two chunks
        // after it deleted, for the j whose two are shortest: the walk hashes those two before
        // it reaches the chunk after them, within twice the chunk plus 1 MiB (at least 1.5).
        let j = (3..cuts.len() - 4)
            .min_by_key(|&j| cuts[j + 1].len() + cuts[j + 2].len())
            .expect("chunks");
        assert!(cuts[j + 1].len() + cuts[j + 2].len() < 3 << 19, "{cuts:?}");
        let mut changed = data.clone();
        changed[cuts[1].start + cuts[1].len() / 2] ^= 1;
        changed.drain(cuts[j].start + cuts[j].len() / 2..cuts[j + 3].start);
        let index = repo.load_index().unwrap();
        let mut ar = Archiver::new(&repo, &index, Default::default());
        let node = ar
            .add_stream_cancellable("db", &changed[..], Some(&parent), &|| {})
            .unwrap();
        let (stats, _) = ar.finish().unwrap();
        let index = repo.load_index().unwrap();
        let mut out = Vec::new();
        crate::restorer::write_file(&repo, &index, &node, &mut out).unwrap();
        assert!(out == changed, "restores exactly");
        // Stored whole, the changed chunk and the one spanning the deletion would add ~1 MB.
        assert!(stats.blobs_delta >= 3, "{stats:?}");
        assert!(stats.bytes_added < 20_000, "{stats:?}");
    }

    #[test]
    fn high_levels_never_store_more_than_level_1() {
        // Rows with md5 text (pgbench's filler): where levels 3 to 12 lose to level 1.
        let mut data = Vec::new();
        for i in 0..30_000u32 {
            let md5 = blake3::hash(&i.to_le_bytes()).to_hex();
            data.extend_from_slice(format!("{i}\t1\t0\t{}\n", &md5[..32]).as_bytes());
        }
        let one = compress_at(1, &data).len();
        let alone = compress_at(12, &data).len();
        let twelve = compress(12, &data).len();
        assert!(alone > one, "the input shows the case: {alone} > {one}");
        assert_eq!(twelve, one.min(alone));
    }
}
