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
pub(crate) static GEAR: std::sync::LazyLock<[u64; 256]> = std::sync::LazyLock::new(|| {
    let mut s = 0u64;
    std::array::from_fn(|_| {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
});

/// Keeps `f` if it is among the [`SKETCH_LEN`] smallest distinct features seen.
#[inline]
fn offer(best: &mut [u32; SKETCH_LEN], h: u64) {
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

/// Independent hash chains run side by side in [`sketch`].
const LANES: usize = 4;
/// Bytes that determine a gear hash: after 64 shifts older bytes no longer count.
const GEAR_WINDOW: usize = 64;

/// The sketch of a chunk: its smallest sampled features, ascending; `u32::MAX` fills unused
/// slots (chunks too short or too uniform to sample).
///
/// The gear hash at a position depends only on the 64 bytes ending there, so the chunk is cut
/// into [`LANES`] segments hashed in one interleaved loop (four independent dependency chains
/// instead of one), each lane starting 64 bytes early to warm up: the result is exactly that of
/// one pass ([`sketch_reference`]), about 3x faster.
pub fn sketch(data: &[u8]) -> [u32; SKETCH_LEN] {
    sketch_lanes(data, None)
}

/// A sample: the position just past its window, and the gear hash there.
pub type Sample = (u32, u64);

/// The sketch, and the samples whose window lies inside `data` (positions 64 and up, in
/// order): what [`sketch_range`] needs to sketch parts of `data` without hashing them again,
/// and the anchors of [`crate::pieces`], which sample by the same rule.
pub fn sketch_sampled(data: &[u8]) -> ([u32; SKETCH_LEN], Vec<Sample>) {
    let mut lanes: [Vec<Sample>; LANES] =
        std::array::from_fn(|_| Vec::with_capacity(data.len() / LANES / 200 + 4));
    let sk = sketch_lanes(data, Some(&mut lanes));
    let [mut all, b, c, d] = lanes;
    all.extend(b);
    all.extend(c);
    all.extend(d);
    (sk, all)
}

/// The sketch of `data[range]`, equal to `sketch(&data[range])`, from the samples of
/// [`sketch_sampled`]`(data)`: a sample whose window lies inside the range is the range's own;
/// only the range's first 63 bytes, where its own hash has not yet seen a full window, are
/// hashed again.
pub fn sketch_range(
    data: &[u8],
    samples: &[Sample],
    range: std::ops::Range<usize>,
) -> [u32; SKETCH_LEN] {
    let (s, e) = (range.start, range.end);
    let mut best = sketch_reference(&data[s..(s + GEAR_WINDOW - 1).min(e)]);
    let lo = samples.partition_point(|&(p, _)| (p as usize) < s + GEAR_WINDOW);
    let hi = samples.partition_point(|&(p, _)| (p as usize) <= e);
    for &(_, h) in &samples[lo.min(hi)..hi] {
        offer(&mut best, h);
    }
    best
}

/// The sketch of a set of samples' hashes (the samples of part of a chunk, say: what a
/// stretch whose origin is unknown resembles).
pub fn sketch_of(hashes: impl IntoIterator<Item = u64>) -> [u32; SKETCH_LEN] {
    let mut best = [u32::MAX; SKETCH_LEN];
    for h in hashes {
        offer(&mut best, h);
    }
    best
}

/// [`sketch`], recording samples per lane when asked (see [`sketch_sampled`]).
fn sketch_lanes(data: &[u8], mut rec: Option<&mut [Vec<Sample>; LANES]>) -> [u32; SKETCH_LEN] {
    let gear = &*GEAR;
    let n = data.len();
    if n < LANES * 4 * GEAR_WINDOW {
        if let Some(r) = rec {
            let mut h = 0u64;
            for (i, &b) in data.iter().enumerate() {
                h = (h << 1).wrapping_add(gear[b as usize]);
                if h >> 56 == 0 && i + 1 >= GEAR_WINDOW {
                    r[0].push(((i + 1) as u32, h));
                }
            }
        }
        return sketch_reference(data);
    }
    let seg = n / LANES;
    let mut best = [u32::MAX; SKETCH_LEN];
    // Lane k samples positions [k * seg, end_k); lanes after the first start hashing
    // GEAR_WINDOW bytes earlier, without sampling, so their hashes equal one pass's.
    let lanes: [&[u8]; LANES] = std::array::from_fn(|k| {
        let start = if k == 0 { 0 } else { k * seg - GEAR_WINDOW };
        let end = if k == LANES - 1 { n } else { (k + 1) * seg };
        &data[start..end]
    });
    // Position in `data` just past lane k's byte i, less i.
    let past: [usize; LANES] =
        std::array::from_fn(|k| if k == 0 { 1 } else { k * seg - GEAR_WINDOW + 1 });
    let mut h = [0u64; LANES];
    for i in 0..GEAR_WINDOW {
        for k in 0..LANES {
            h[k] = (h[k] << 1).wrapping_add(gear[lanes[k][i] as usize]);
        }
        if h[0] >> 56 == 0 {
            offer(&mut best, h[0]);
            if let Some(r) = rec.as_deref_mut().filter(|_| i + 1 == GEAR_WINDOW) {
                r[0].push((GEAR_WINDOW as u32, h[0]));
            }
        }
    }
    let common = lanes.iter().map(|l| l.len()).min().expect("lanes");
    let body: [&[u8]; LANES] = lanes.map(|l| &l[GEAR_WINDOW..common]);
    // Eight bytes per lane per step, read as one word: fewer loads and bounds checks.
    let words = (common - GEAR_WINDOW) / 8;
    for j in 0..words {
        let w: [u64; LANES] = std::array::from_fn(|k| {
            u64::from_le_bytes(body[k][j * 8..j * 8 + 8].try_into().expect("8 bytes"))
        });
        for t in 0..8 {
            for k in 0..LANES {
                let b = (w[k] >> (8 * t)) as u8;
                h[k] = (h[k] << 1).wrapping_add(gear[b as usize]);
            }
            // One test for all lanes: a sample is rare (1 in 256 per lane).
            if h.iter().fold(u64::MAX, |m, &x| m.min(x)) >> 56 == 0 {
                for (k, &hk) in h.iter().enumerate() {
                    if hk >> 56 == 0 {
                        offer(&mut best, hk);
                        if let Some(r) = rec.as_deref_mut() {
                            r[k].push(((past[k] + GEAR_WINDOW + j * 8 + t) as u32, hk));
                        }
                    }
                }
            }
        }
    }
    let common = GEAR_WINDOW + words * 8;
    for k in 0..LANES {
        let mut hk = h[k];
        for (i, &b) in lanes[k].iter().enumerate().skip(common) {
            hk = (hk << 1).wrapping_add(gear[b as usize]);
            if hk >> 56 == 0 {
                offer(&mut best, hk);
                if let Some(r) = rec.as_deref_mut() {
                    r[k].push(((past[k] + i) as u32, hk));
                }
            }
        }
    }
    best
}

/// The sketch in one plain pass: the definition [`sketch`] must match.
pub fn sketch_reference(data: &[u8]) -> [u32; SKETCH_LEN] {
    let gear = &*GEAR;
    let mut best = [u32::MAX; SKETCH_LEN];
    let mut h = 0u64;
    for &b in data {
        h = (h << 1).wrapping_add(gear[b as usize]);
        if h >> 56 == 0 {
            offer(&mut best, h);
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
    /// Chunk ID -> its metadata and its last position in `chunks`.
    by_id: HashMap<Id, (ChunkMeta, usize)>,
}

impl ParentFile {
    /// Indexes a parent file's chunks.
    pub fn new(chunks: Vec<(Id, ChunkMeta)>) -> Self {
        let mut by_feature = HashMap::with_capacity(chunks.len() * SKETCH_LEN);
        let mut by_id = HashMap::with_capacity(chunks.len());
        for (i, (id, meta)) in chunks.iter().enumerate() {
            by_id.insert(*id, (*meta, i));
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
        self.by_id.get(id).map(|&(m, _)| m)
    }

    /// Where in [`ParentFile::chunks`] the parent holds a chunk (its last place, if several).
    pub fn position_of(&self, id: &Id) -> Option<usize> {
        self.by_id.get(id).map(|&(_, i)| i)
    }

    /// The parent chunk sharing the most features with `sketch` (at least one), with the
    /// candidate nearest the chunk's position `near` winning ties.
    pub fn most_similar(&self, sketch: &[u32; SKETCH_LEN], near: usize) -> Option<(Id, ChunkMeta)> {
        let i = *self.ranked(sketch, near).first()?;
        self.chunks.get(i).copied()
    }

    /// Positions in [`ParentFile::chunks`] of the chunks sharing a feature with `sketch`, most
    /// shared features first, then nearest to `near`.
    pub fn ranked(&self, sketch: &[u32; SKETCH_LEN], near: usize) -> Vec<usize> {
        let mut votes: Vec<(usize, u32)> = Vec::with_capacity(SKETCH_LEN);
        for f in sketch.iter().filter(|&&f| f != u32::MAX) {
            if let Some(&i) = self.by_feature.get(f) {
                match votes.iter_mut().find(|(c, _)| *c == i as usize) {
                    Some(v) => v.1 += 1,
                    None => votes.push((i as usize, 1)),
                }
            }
        }
        votes.sort_by_key(|&(i, n)| (std::cmp::Reverse(n), i.abs_diff(near), i));
        votes.into_iter().map(|(i, _)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::rows;

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

    proptest::proptest! {
        #[test]
        fn interleaved_sketch_equals_the_reference(seed in proptest::prelude::any::<u64>(), len in 0usize..300_000) {
            let mut s = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 56) as u8 }).collect();
            proptest::prop_assert_eq!(sketch(&data), sketch_reference(&data));
        }
    }

    #[test]
    fn interleaved_sketch_equals_the_reference_on_rows() {
        for n in [0, 100, 4095, 4096, 4097, 100_000, 1 << 20] {
            let data = rows(n / 30 + 1, 7);
            let data = &data[..n.min(data.len())];
            assert_eq!(sketch(data), sketch_reference(data), "len {n}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ranges_sketch_as_if_alone(seed in proptest::prelude::any::<u64>(), len in 0usize..100_000, a in 0usize..100_000, b in 0usize..100_000) {
            let mut s = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 58) as u8 }).collect();
            let (sk, samples) = sketch_sampled(&data);
            proptest::prop_assert_eq!(sk, sketch(&data));
            let (lo, hi) = (a.min(b).min(len), a.max(b).min(len));
            proptest::prop_assert_eq!(sketch_range(&data, &samples, lo..hi), sketch(&data[lo..hi]));
        }
    }

    #[test]
    fn ranges_of_rows_sketch_as_if_alone() {
        let data = rows(40_000, 3);
        let (_, samples) = sketch_sampled(&data);
        for (lo, hi) in [
            (0, 0),
            (0, 63),
            (0, 64),
            (1, 1000),
            (5000, 300_000),
            (77, data.len()),
        ] {
            assert_eq!(
                sketch_range(&data, &samples, lo..hi),
                sketch(&data[lo..hi]),
                "{lo}..{hi}"
            );
        }
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
