//! Finding the chunk of the parent snapshot that a new chunk most resembles, so that it can be
//! stored as a delta against it.
//!
//! Each chunk gets a **sketch**: the [`SKETCH_LEN`] smallest of the features sampled at
//! content-defined positions (a gear rolling hash whose top 8 bits are zero, about one position
//! in 256; the feature is a mix of that hash, which covers the preceding 64 bytes). Two chunks
//! that share most of their bytes share most of their smallest features (bottom-k min-hashing),
//! whatever shifted inside them. Sketches are stored in the tree next to each chunk, so the next
//! snapshot chooses bases without reading the parent's data; only the chosen base is read.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Features per sketch.
pub const SKETCH_LEN: usize = 8;

/// A chunk's generation in its delta chain and its sketch, as stored in the tree:
/// `[generation, [f0, ..., f7]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChunkMeta(pub u32, pub [u32; SKETCH_LEN]);

impl ChunkMeta {
    pub fn generation(&self) -> u32 {
        self.0
    }

    pub fn sketch(&self) -> &[u32; SKETCH_LEN] {
        &self.1
    }
}

/// The gear table: fixed, derived with SplitMix64 from 0, so sketches are stable across versions.
static GEAR: std::sync::LazyLock<[u64; 256]> = std::sync::LazyLock::new(|| {
    let mut s = 0u64;
    std::array::from_fn(|_| {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
});

/// The sketch of a chunk: its smallest sampled features, ascending; `u32::MAX` fills unused
/// slots (chunks too short or too uniform to sample).
pub fn sketch(data: &[u8]) -> [u32; SKETCH_LEN] {
    let gear = &*GEAR;
    let mut best = [u32::MAX; SKETCH_LEN];
    let mut h = 0u64;
    for &b in data {
        h = (h << 1).wrapping_add(gear[b as usize]);
        if h >> 56 == 0 {
            let f = (h.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 32) as u32;
            if f < best[SKETCH_LEN - 1] && !best.contains(&f) {
                let mut i = SKETCH_LEN - 1;
                while i > 0 && best[i - 1] > f {
                    best[i] = best[i - 1];
                    i -= 1;
                }
                best[i] = f;
            }
        }
    }
    best
}

/// The chunks of a parent snapshot's file, searchable by sketch.
#[derive(Default)]
pub struct ParentFile {
    /// Chunk IDs and their metadata, in file order.
    pub chunks: Vec<(Id, ChunkMeta)>,
    by_feature: HashMap<u32, u32>,
    by_id: HashMap<Id, ChunkMeta>,
}

impl ParentFile {
    /// Indexes a parent file's chunks.
    pub fn new(chunks: Vec<(Id, ChunkMeta)>) -> Self {
        let mut by_feature = HashMap::with_capacity(chunks.len() * SKETCH_LEN);
        let mut by_id = HashMap::with_capacity(chunks.len());
        for (i, (id, meta)) in chunks.iter().enumerate() {
            by_id.insert(*id, *meta);
            for &f in meta.sketch() {
                if f != u32::MAX {
                    by_feature.entry(f).or_insert(i as u32);
                }
            }
        }
        ParentFile {
            chunks,
            by_feature,
            by_id,
        }
    }

    /// The metadata the parent recorded for a chunk it also holds.
    pub fn meta_of(&self, id: &Id) -> Option<ChunkMeta> {
        self.by_id.get(id).copied()
    }

    /// The parent chunk sharing the most features with `sketch` (at least one), with the
    /// candidate nearest the chunk's position `near` winning ties.
    pub fn most_similar(&self, sketch: &[u32; SKETCH_LEN], near: usize) -> Option<(Id, ChunkMeta)> {
        let mut votes: Vec<(u32, u32)> = Vec::with_capacity(SKETCH_LEN);
        for f in sketch.iter().filter(|&&f| f != u32::MAX) {
            if let Some(&i) = self.by_feature.get(f) {
                match votes.iter_mut().find(|(c, _)| *c == i) {
                    Some(v) => v.1 += 1,
                    None => votes.push((i, 1)),
                }
            }
        }
        let (i, _) = votes
            .into_iter()
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse((i as usize).abs_diff(near))))?;
        self.chunks.get(i as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut out = Vec::new();
        for i in 0..n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            out.extend_from_slice(format!("{i}\t{:016x}\t{}\n", s, s % 1000).as_bytes());
        }
        out
    }

    #[test]
    fn similar_chunks_share_sketch_features() {
        let a = rows(20_000, 1);
        let mut b = a.clone();
        for i in (0..b.len()).step_by(5000) {
            b[i] ^= 1;
        }
        b.drain(1000..1500); // and a shift
        let (sa, sb, sc) = (sketch(&a), sketch(&b), sketch(&rows(20_000, 2)));
        let shared = |x: &[u32; 8], y: &[u32; 8]| x.iter().filter(|f| y.contains(f)).count();
        assert!(shared(&sa, &sb) >= 5, "{sa:?} {sb:?}");
        assert_eq!(shared(&sa, &sc), 0);
    }

    #[test]
    fn most_similar_picks_the_matching_chunk() {
        let chunks: Vec<Vec<u8>> = (0..5).map(|i| rows(5000, 2 * i + 10)).collect();
        let parent = ParentFile::new(
            chunks
                .iter()
                .enumerate()
                .map(|(i, c)| (Id([i as u8; 32]), ChunkMeta(0, sketch(c))))
                .collect(),
        );
        let mut changed = chunks[3].clone();
        changed[100] ^= 1;
        let (id, _) = parent.most_similar(&sketch(&changed), 0).unwrap();
        assert_eq!(id, Id([3; 32]));
        assert!(parent.most_similar(&sketch(&rows(5000, 99)), 0).is_none());
    }

    #[test]
    fn sketch_is_pinned() {
        // A change here changes every stored sketch's meaning: bump the tree format instead.
        let s = sketch(&rows(2000, 1));
        assert_eq!(s.iter().filter(|&&f| f != u32::MAX).count(), SKETCH_LEN);
        let again = sketch(&rows(2000, 1));
        assert_eq!(s, again);
    }
}
