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
//! has its top [`ANCHOR_BITS`] bits zero (one position in 64 on average). The hash there depends
//! only on the 64 bytes before it, so an anchor value found in a base means those bytes occur in
//! that base.

use std::collections::HashMap;
use std::ops::Range;

use crate::similarity::GEAR;

/// An anchor where the gear hash's top bits are zero: one position in 2^6 = 64.
pub const ANCHOR_BITS: u32 = 6;
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

/// Calls `f(position, key)` for each anchor of `data`: `position` is the index just past the
/// window, `key` a hash of the window's 64 bytes. The gear hash alone would not do as a key: a
/// byte's weight halves with every later byte, so windows that end alike (rows padded with the
/// same spaces) collide.
fn anchors(data: &[u8], mut f: impl FnMut(usize, u64)) {
    let gear = &*GEAR;
    let mut h = 0u64;
    for (i, &b) in data.iter().enumerate() {
        h = (h << 1).wrapping_add(gear[b as usize]);
        if h >> (64 - ANCHOR_BITS) == 0 && i + 1 >= WINDOW {
            f(i + 1, window_key(&data[i + 1 - WINDOW..=i]));
        }
    }
}

/// A 64-bit hash of one window: each 8-byte word mixed in with a multiply and a rotation.
fn window_key(window: &[u8]) -> u64 {
    window.chunks_exact(8).fold(0x243F_6A88_85A3_08D3, |k, w| {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        (k ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    })
}

/// Cuts `data` into pieces by origin among `bases` (in order of preference: an anchor found in
/// several counts for the first). Content found in no base joins the piece before it (or after
/// it, at the start): new content costs the same in any delta, and a piece of its own would only
/// add a blob. Returns one piece for all of `data` when it has a single origin or when cutting
/// would exceed [`MAX_PIECES`].
pub fn split_by_origin(data: &[u8], bases: &[&[u8]]) -> Vec<Piece> {
    let whole = |base| {
        vec![Piece {
            range: 0..data.len(),
            base,
        }]
    };
    let total: usize = bases.iter().map(|b| b.len()).sum();
    let mut origin: HashMap<u64, usize> = HashMap::with_capacity(total >> ANCHOR_BITS);
    for (i, base) in bases.iter().enumerate() {
        anchors(base, |_, h| {
            origin.entry(h).or_insert(i);
        });
    }
    // Runs of anchors with one origin: (start of the run's content, origin).
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut last_anchor = 0;
    anchors(data, |pos, h| {
        if let Some(&o) = origin.get(&h) {
            if runs.last().is_none_or(|r| r.1 != o) {
                // The matched bytes start a window before the anchor, but not before the
                // previous anchor (which matched elsewhere).
                let start = if runs.is_empty() {
                    0
                } else {
                    (pos - WINDOW).max(last_anchor)
                };
                runs.push((start, o));
            }
            last_anchor = pos;
        }
    });
    if runs.is_empty() {
        return whole(None);
    }
    // Short runs join the piece before them; a short first piece takes the next one's origin.
    let mut pieces: Vec<Piece> = Vec::new();
    for (k, &(start, o)) in runs.iter().enumerate() {
        let end = runs.get(k + 1).map_or(data.len(), |r| r.0);
        match pieces.last_mut() {
            Some(p) if p.base == Some(o) || end - start < MIN_PIECE => p.range.end = end,
            Some(p) if p.range.len() < MIN_PIECE => {
                p.base = Some(o);
                p.range.end = end;
            }
            _ => pieces.push(Piece {
                range: start..end,
                base: Some(o),
            }),
        }
    }
    // A short last piece joins the one before.
    if pieces.len() > 1 && pieces.last().is_some_and(|p| p.range.len() < MIN_PIECE) {
        let last = pieces.pop().expect("two pieces");
        pieces.last_mut().expect("one piece").range.end = last.range.end;
    }
    pieces[0].range.start = 0;
    if pieces.len() > MAX_PIECES {
        return whole(pieces[0].base);
    }
    pieces
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
        // The cut lands within a window of where the content switches.
        assert!(
            pieces[0].range.end.abs_diff(cut) <= 2 * WINDOW,
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
