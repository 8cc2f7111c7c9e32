//! Cutting a changed chunk into pieces that each come from one parent chunk.
//!
//! A content-defined chunk of the new stream need not line up with the parent's chunks: once
//! rows are removed a cut point can move, and the new chunk then spans the end of one parent
//! chunk and the start of the next. A delta against either alone stores the other part nearly
//! whole (a 3.8 MB chunk of pgbench rows: 284 KB against its best match, 3.6 KB against it and
//! its neighbour; `docs/measurements/delta-seeds.md`), and which seeds hit this is luck. The
//! format keeps one base per delta (chains stay simple to restore, check and prune), so such a
//! chunk is cut where its content switches from one base to another, and each piece becomes a
//! delta against its own base.
//!
//! Origins are found by **anchors**: positions where the gear rolling hash of [`crate::similarity`]
//! has its top [`ANCHOR_BITS`] bits zero (one position in 256 on average). The hash there depends
//! only on the 64 bytes before it, so an anchor value found in a base means those bytes occur in
//! that base.

use std::collections::HashMap;
use std::ops::Range;

/// Anchor keys are hashes already: a fast hasher, no DoS concern (keys come from our own data).
type KeyMap<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// An anchor where the gear hash's top bits are zero: one position in 2^8 = 256 (the
/// sketch's sampling rate: cuts land within a few rows of the switch, for a quarter of the
/// hashing of one anchor in 64).
pub const ANCHOR_BITS: u32 = 8;
/// Bytes that determine a gear hash.
const WINDOW: usize = 64;
/// Smallest piece cut out of a chunk: smaller runs of another origin stay in their neighbour
/// (a piece costs ~300 bytes of index, pack header and tree; a delta carries a few hundred
/// bytes of foreign content for less).
pub const MIN_PIECE: usize = 16 * 1024;
/// Most pieces one chunk is cut into.
pub const MAX_PIECES: usize = 64;

/// A part of a chunk and the base its content comes from (an index into the bases given), or
/// `None` when no base holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub range: Range<usize>,
    pub base: Option<usize>,
}

/// Calls `f(position, key)` for each anchor of `data`, in order: `position` is the index just
/// past the window, `key` a hash of the window's 64 bytes. The gear hash alone would not do as a
/// key: a byte's weight halves with every later byte, so windows that end alike (rows padded
/// with the same spaces) collide.
fn anchors(data: &[u8], mut f: impl FnMut(usize, u64)) {
    for pos in anchor_positions(data) {
        f(pos, window_key(&data[pos - WINDOW..pos]));
    }
}

/// The anchor positions of `data`, in order: the sketch's samples, whose rule is the anchors'
/// (one pass, four interleaved lanes; see [`crate::similarity::sketch_sampled`]).
fn anchor_positions(data: &[u8]) -> Vec<usize> {
    const {
        assert!(
            ANCHOR_BITS == 8,
            "sketches sample where the top 8 bits are zero"
        )
    };
    let (_, samples) = crate::similarity::sketch_sampled(data);
    samples.into_iter().map(|(p, _)| p as usize).collect()
}

/// The anchor positions in one plain pass: the definition [`anchor_positions`] must match.
#[cfg(test)]
fn anchor_positions_reference(data: &[u8]) -> Vec<usize> {
    let gear = &*crate::similarity::GEAR;
    let mut out = Vec::new();
    let mut h = 0u64;
    for (i, &b) in data.iter().enumerate() {
        h = (h << 1).wrapping_add(gear[b as usize]);
        if h >> (64 - ANCHOR_BITS) == 0 && i + 1 >= WINDOW {
            out.push(i + 1);
        }
    }
    out
}

/// A 64-bit hash of one window: each 8-byte word mixed in with a multiply and a rotation.
fn window_key(window: &[u8]) -> u64 {
    window.chunks_exact(8).fold(0x243F_6A88_85A3_08D3, |k, w| {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        (k ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    })
}

/// The anchors of a chunk and, as bases are offered one at a time, where each was found.
///
/// Only the chunk's anchors are kept in a map (one per 256 bytes of the chunk); a base is hashed
/// once and looked up, never stored, so offering a base costs one pass over it, and a caller can
/// stop offering once [`Origins::missing`] is small.
pub struct Origins {
    len: usize,
    /// (position, origin) per anchor, in order; `u16::MAX` for none yet.
    anchors: Vec<(usize, u16)>,
    /// Anchor key -> (first, last) anchor with it; `same[i]`: the next anchor with anchor
    /// `i`'s key (repeated content: a chunk of identical rows).
    by_key: KeyMap<(u32, u32)>,
    same: Vec<u32>,
    bases: u16,
}

const NONE: u16 = u16::MAX;
const END: u32 = u32::MAX;

impl Origins {
    pub fn new(data: &[u8]) -> Self {
        Self::from_positions(data, anchor_positions(data).into_iter())
    }

    fn from_positions(data: &[u8], positions: impl Iterator<Item = usize>) -> Self {
        let expected = data.len() >> ANCHOR_BITS;
        // Periodic content can put an anchor at every period; past 4x the expected count the
        // rest of the chunk stays without anchors (it then counts as missing, never wrong).
        let cap = expected * 4 + 16;
        let mut o = Origins {
            len: data.len(),
            anchors: Vec::with_capacity(expected),
            by_key: KeyMap::with_capacity_and_hasher(expected, Default::default()),
            same: Vec::with_capacity(expected),
            bases: 0,
        };
        for pos in positions.take(cap) {
            let k = window_key(&data[pos - WINDOW..pos]);
            let i = o.anchors.len() as u32;
            o.anchors.push((pos, NONE));
            o.same.push(END);
            match o.by_key.get_mut(&k) {
                Some((_, last)) => {
                    o.same[*last as usize] = i;
                    *last = i;
                }
                None => {
                    o.by_key.insert(k, (i, i));
                }
            }
        }
        o
    }

    /// Like [`Origins::new`], from the samples [`crate::similarity::sketch_sampled`] took of
    /// `data` (the same positions: its sampling rule is the anchors' rule), without hashing
    /// `data` again.
    pub fn from_samples(data: &[u8], samples: &[crate::similarity::Sample]) -> Self {
        const {
            assert!(
                ANCHOR_BITS == 8,
                "sketches sample where the top 8 bits are zero"
            )
        };
        Self::from_positions(data, samples.iter().map(|&(p, _)| p as usize))
    }

    /// Offers the next base (numbered from 0 in the order offered): the anchors it holds that no
    /// earlier base did get it as their origin. Returns the bytes it newly covers.
    pub fn add(&mut self, base: &[u8]) -> usize {
        let b = self.bases;
        self.bases = self.bases.saturating_add(1).min(NONE - 1);
        self.mark(b, base)
    }

    /// More of the base offered last (the rest of a neighbour whose near end was not enough).
    pub fn add_more(&mut self, part: &[u8]) -> usize {
        match self.bases.checked_sub(1) {
            Some(b) => self.mark(b, part),
            None => self.add(part),
        }
    }

    /// Gives base `b` as origin to the anchors `base` holds that have none yet.
    fn mark(&mut self, b: u16, base: &[u8]) -> usize {
        let mut found = Vec::new();
        anchors(base, |_, k| {
            if let Some(&(first, _)) = self.by_key.get(&k) {
                found.push(first);
            }
        });
        // Each chain once, however often the base repeats the key.
        found.sort_unstable();
        found.dedup();
        let mut covered = 0;
        for mut i in found {
            while i != END {
                if self.anchors[i as usize].1 == NONE {
                    self.anchors[i as usize].1 = b;
                    covered += self.span(i as usize);
                }
                i = self.same[i as usize];
            }
        }
        covered
    }

    /// Bytes an anchor stands for: those since the anchor before it.
    fn span(&self, i: usize) -> usize {
        self.anchors[i].0 - if i == 0 { 0 } else { self.anchors[i - 1].0 }
    }

    /// Bytes whose anchors no base offered holds: what a delta against these bases must store
    /// as new content. (A delta's size alone cannot tell this from many small changes, which cost
    /// a delta little.)
    pub fn missing(&self) -> usize {
        (0..self.anchors.len())
            .filter(|&i| self.anchors[i].1 == NONE)
            .map(|i| self.span(i))
            .sum()
    }

    /// The anchors no base offered holds, as indices into the positions (or samples) the
    /// chunk's anchors were made from: what the missing content's sketch is made of.
    pub fn missing_anchors(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.anchors.len()).filter(|&i| self.anchors[i].1 == NONE)
    }

    /// Missing bytes at each end of the chunk: the run of anchors no base holds from its start,
    /// and the run to its end. A parent chunk before the best base can only hold what is
    /// missing at the start, one after it what is missing at the end; a stretch missing in the
    /// middle (new rows, rows moved from elsewhere) is no neighbour's.
    pub fn missing_ends(&self) -> [usize; 2] {
        let run = |order: &mut dyn Iterator<Item = usize>| {
            order
                .take_while(|&i| self.anchors[i].1 == NONE)
                .map(|i| self.span(i))
                .sum()
        };
        let n = self.anchors.len();
        [run(&mut (0..n)), run(&mut (0..n).rev())]
    }

    /// Cuts the chunk into pieces by origin (an anchor found in several bases counts for the
    /// first offered). A stretch found in no base becomes a piece without a base (stored whole),
    /// so that one large block of new rows cannot make the delta of the rest fail its "pays"
    /// test and the whole chunk be stored in full. Runs (of a base or of none) standing for
    /// fewer than `min_piece` bytes join the piece before them. One piece for the whole chunk
    /// when it has a single origin or when cutting would make more than `max_pieces`.
    pub fn pieces(&self, min_piece: usize, max_pieces: usize) -> Vec<Piece> {
        let whole = |base| {
            vec![Piece {
                range: 0..self.len,
                base,
            }]
        };
        // Runs of anchors with one origin, or none: (start of the run's content, origin, bytes
        // it stands for). A short run (rows moved from all over a table match a loaded base only
        // here and there) stays in the piece before it, so neither scattered matches nor
        // scattered new rows make pieces.
        let mut runs: Vec<(usize, Option<usize>, usize)> = Vec::new();
        let mut last_anchor = 0;
        for (i, &(pos, o)) in self.anchors.iter().enumerate() {
            let o = (o != NONE).then_some(o as usize);
            if runs.last().is_none_or(|r| r.1 != o) {
                // Matched bytes start a window before their anchor, but not before the
                // previous anchor (which matched elsewhere, or nowhere).
                let start = match (runs.is_empty(), o) {
                    (true, _) => 0,
                    (false, None) => last_anchor,
                    (false, Some(_)) => (pos - WINDOW).max(last_anchor),
                };
                runs.push((start, o, 0));
            }
            runs.last_mut().expect("just pushed").2 += self.span(i);
            last_anchor = pos;
        }
        if runs.iter().all(|r| r.1.is_none()) {
            return whole(None);
        }
        // Pieces with the bytes their runs stood for.
        let mut pieces: Vec<(Piece, usize)> = Vec::new();
        for (k, &(start, o, weight)) in runs.iter().enumerate() {
            let end = runs.get(k + 1).map_or(self.len, |r| r.0);
            match pieces.last_mut() {
                Some((p, w)) if p.base == o => {
                    p.range.end = end;
                    *w += weight;
                }
                // A short run of another origin stays in the piece.
                Some((p, _)) if weight < min_piece => p.range.end = end,
                // A short first piece takes the next one's origin.
                Some((p, w)) if *w < min_piece => {
                    p.base = o;
                    p.range.end = end;
                    *w = weight;
                }
                _ => pieces.push((
                    Piece {
                        range: start..end,
                        base: o,
                    },
                    weight,
                )),
            }
        }
        // A short last piece joins the one before.
        if pieces.len() > 1 && pieces.last().is_some_and(|p| p.1 < min_piece) {
            let (last, _) = pieces.pop().expect("two pieces");
            pieces.last_mut().expect("one piece").0.range.end = last.range.end;
        }
        let mut pieces: Vec<Piece> = pieces.into_iter().map(|(p, _)| p).collect();
        pieces[0].range.start = 0;
        if pieces.len() > max_pieces {
            return whole(pieces[0].base);
        }
        pieces
    }
}

/// Cuts `data` into pieces by origin among `bases`, in order of preference
/// ([`Origins::pieces`] with [`MIN_PIECE`] and [`MAX_PIECES`]).
pub fn split_by_origin(data: &[u8], bases: &[&[u8]]) -> Vec<Piece> {
    split_with(data, bases, MIN_PIECE, MAX_PIECES)
}

/// [`split_by_origin`] with its limits given (the smallest piece, the most pieces).
pub fn split_with(data: &[u8], bases: &[&[u8]], min_piece: usize, max_pieces: usize) -> Vec<Piece> {
    let mut o = Origins::new(data);
    for base in bases {
        o.add(base);
    }
    o.pieces(min_piece, max_pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::rows;

    #[test]
    fn a_chunk_spanning_two_bases_is_cut_between_them() {
        let a = rows(20_000, 1);
        let b = rows(20_000, 2);
        // The new chunk: the second half of a, then the first half of b, with a few rows of a
        // and b changed.
        let mut data = a[a.len() / 2..].to_vec();
        let cut = data.len();
        data.extend_from_slice(&b[..b.len() / 2]);
        for i in (0..data.len()).step_by(40_000) {
            data[i] ^= 1;
        }
        let pieces = split_by_origin(&data, &[&b, &a]);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert_eq!(pieces[0].base, Some(1));
        assert_eq!(pieces[1].base, Some(0));
        assert_eq!(pieces[0].range.start, 0);
        assert_eq!(pieces[1].range.end, data.len());
        assert_eq!(pieces[0].range.end, pieces[1].range.start);
        // The cut lands between the last anchor before the switch and the first after it.
        assert!(
            pieces[0].range.end.abs_diff(cut) <= 4 << ANCHOR_BITS,
            "{pieces:?} {cut}"
        );
    }

    #[test]
    fn one_origin_and_no_origin_stay_whole() {
        let a = rows(20_000, 1);
        let mut changed = a.clone();
        changed.truncate(a.len() - 1000);
        assert_eq!(
            split_by_origin(&changed, &[&rows(20_000, 2), &a]),
            vec![Piece {
                range: 0..changed.len(),
                base: Some(1)
            }]
        );
        let other = rows(10_000, 3);
        assert_eq!(
            split_by_origin(&other, &[&a]),
            vec![Piece {
                range: 0..other.len(),
                base: None
            }]
        );
    }

    #[test]
    fn missing_counts_what_the_bases_lack_and_where() {
        let a = rows(20_000, 1);
        let mut o = Origins::new(&a);
        let last = o.anchors.last().unwrap().0;
        assert_eq!(o.add(&a), last);
        assert_eq!(o.missing(), 0);
        let b = rows(10_000, 2);
        let mut data = a[..a.len() / 2].to_vec();
        data.extend_from_slice(&b);
        let mut o = Origins::new(&data);
        o.add(&a);
        let foreign = b.len();
        let missing = o.missing();
        assert!(
            missing.abs_diff(foreign) < foreign / 20,
            "{missing} of {foreign}"
        );
        let [start, end] = o.missing_ends();
        assert_eq!(start, 0);
        assert!(end.abs_diff(foreign) < foreign / 20, "{end} of {foreign}");
        // The second base covers what the first lacked; a base offered again covers nothing.
        assert!(o.add(&b).abs_diff(missing) < foreign / 20);
        assert!(o.missing() < 4 << ANCHOR_BITS, "{}", o.missing());
        assert_eq!(o.add(&a), 0);
    }

    proptest::proptest! {
        #[test]
        fn interleaved_anchors_equal_the_reference(seed in proptest::prelude::any::<u64>(), len in 0usize..200_000) {
            let mut s = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 56) as u8 }).collect();
            proptest::prop_assert_eq!(anchor_positions(&data), anchor_positions_reference(&data));
        }
    }

    #[test]
    fn interleaved_anchors_equal_the_reference_on_rows() {
        for n in [0, 63, 64, 1023, 1024, 1025, 100_000, 1 << 20] {
            let data = rows(n / 20 + 1, 7);
            let data = &data[..n.min(data.len())];
            assert_eq!(
                anchor_positions(data),
                anchor_positions_reference(data),
                "len {n}"
            );
        }
    }

    #[test]
    fn periodic_content_is_bounded() {
        // Periodic content whose hash cycle passes an anchor: one anchor every period, far
        // more than one in 256. Origins keeps at most 4x the expected count, and offering the
        // content back stays linear (each key's chain walked once).
        let data = (1u8..=255)
            .map(|p| {
                let pattern: Vec<u8> = (0..p).map(|i| i.wrapping_mul(37).wrapping_add(p)).collect();
                pattern
                    .iter()
                    .copied()
                    .cycle()
                    .take(1 << 20)
                    .collect::<Vec<u8>>()
            })
            .find(|d| anchor_positions(d).len() > (d.len() >> ANCHOR_BITS) * 4 + 16)
            .expect("a periodic input with an anchor every period");
        let mut o = Origins::new(&data);
        assert!(o.anchors.len() <= (data.len() >> ANCHOR_BITS) * 4 + 16);
        o.add(&data);
        assert_eq!(o.pieces(MIN_PIECE, MAX_PIECES).len(), 1);
    }

    #[test]
    fn repeated_windows_are_all_found() {
        // The same rows twice in the chunk: both copies get the base as their origin.
        let a = rows(5_000, 1);
        let data = [a.as_slice(), a.as_slice()].concat();
        let mut o = Origins::new(&data);
        o.add(&a);
        assert!(o.missing() < 2 << ANCHOR_BITS, "{}", o.missing());
    }

    #[test]
    fn rows_gathered_from_everywhere_stay_one_piece() {
        // Rows moved from all over a table to its end: each base offered holds a row here and
        // there. No run of one base is long, whatever the stretches between its rows.
        let bases: Vec<Vec<u8>> = (0..4).map(|i| rows(20_000, 2 * i as u64 + 20)).collect();
        let mut s = 12345u64;
        let mut data = Vec::new();
        for k in 0..40 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // 20 KB of new rows, then a 1 KB "row" from some base.
            data.extend_from_slice(&rows(1000, 100 + 2 * k)[..20_000]);
            let b = &bases[(s % 4) as usize];
            let at = (s >> 8) as usize % (b.len() - 1000);
            data.extend_from_slice(&b[at..at + 1000]);
        }
        let refs: Vec<&[u8]> = bases.iter().map(|b| b.as_slice()).collect();
        let mut o = Origins::new(&data);
        for b in &refs {
            o.add(b);
        }
        assert!(
            o.missing() < data.len() * 99 / 100,
            "the moved rows are found"
        );
        assert_eq!(o.pieces(MIN_PIECE, MAX_PIECES).len(), 1);
    }

    #[test]
    fn a_block_of_new_rows_is_a_piece_of_its_own() {
        let a = rows(20_000, 1);
        let new = rows(10_000, 2);
        let data = [&a[..a.len() / 2], &new[..], &a[a.len() / 2..]].concat();
        let pieces = split_by_origin(&data, &[&a]);
        let bases: Vec<_> = pieces.iter().map(|p| p.base).collect();
        assert_eq!(bases, [Some(0), None, Some(0)], "{pieces:?}");
        let mid = &pieces[1].range;
        assert!(
            mid.start.abs_diff(a.len() / 2) <= 4 << ANCHOR_BITS,
            "{pieces:?}"
        );
        assert!(
            mid.end.abs_diff(a.len() / 2 + new.len()) <= 4 << ANCHOR_BITS,
            "{pieces:?}"
        );
    }

    #[test]
    fn short_foreign_runs_stay_in_their_piece() {
        let a = rows(20_000, 1);
        let b = rows(20_000, 2);
        // 2 KB of b inside a: below MIN_PIECE, not worth a blob of its own.
        let mut data = a[..a.len() / 2].to_vec();
        data.extend_from_slice(&b[1000..3000]);
        data.extend_from_slice(&a[a.len() / 2..]);
        let pieces = split_by_origin(&data, &[&a, &b]);
        assert_eq!(pieces.len(), 1, "{pieces:?}");
        assert_eq!(pieces[0].base, Some(0));
    }

    #[test]
    fn pieces_cover_the_chunk_in_order() {
        let bases: Vec<Vec<u8>> = (0..4).map(|i| rows(8_000, 2 * i as u64 + 10)).collect();
        // Interleave 40 KB stretches of the four bases.
        let mut data = Vec::new();
        for k in 0..8 {
            let b = &bases[k % 4];
            let off = (k / 4) * 40_000;
            data.extend_from_slice(&b[off..off + 40_000]);
        }
        let refs: Vec<&[u8]> = bases.iter().map(|b| b.as_slice()).collect();
        let pieces = split_by_origin(&data, &refs);
        assert_eq!(pieces.len(), 8, "{pieces:?}");
        let mut at = 0;
        for (k, p) in pieces.iter().enumerate() {
            assert_eq!(p.range.start, at);
            assert_eq!(p.base, Some(k % 4));
            at = p.range.end;
        }
        assert_eq!(at, data.len());
    }
}
