//! Simulates the second snapshot of two files over many chunker seeds, without a repository:
//! where the bytes go (chunks known, stored as deltas, stored whole). Issue 22's lab bench.
//!
//! Per seed: chunks known, stored as deltas against the best match, stored whole, and what
//! pieces (`sbk::pieces`, against the best match's neighbours and the ranked candidates) store
//! instead, counting 300 bytes of index and tree per extra piece. `-g` also tries every parent
//! chunk as an origin (2 KiB pieces): what an index of the whole parent file could reach.
//!
//! Usage: cargo run --release --example delta_sim -- FIRST SECOND [SEEDS] [-v] [-g]

use std::collections::HashMap;

use sbk::chunker::{split, ChunkerParams};
use sbk::format::delta;
use sbk::pieces::{split_by_origin, split_with};
use sbk::similarity::{sketch, ChunkMeta, ParentFile};
use sbk::Id;

fn full_len(data: &[u8]) -> usize {
    zstd::bulk::compress(data, 1).unwrap().len()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let first = std::fs::read(&args[1]).unwrap();
    let second = std::fs::read(&args[2]).unwrap();
    let seeds: u64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(5);
    let verbose = args.iter().any(|a| a == "-v");
    let global = args.iter().any(|a| a == "-g");
    for s in 1..=seeds {
        let seed = s.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let params = ChunkerParams::default_with_seed(seed);
        let pr = split(&first, params);
        let pchunks: Vec<&[u8]> = pr.iter().map(|r| &first[r.clone()]).collect();
        let pid: Vec<Id> = pchunks
            .iter()
            .map(|c| Id(*blake3::hash(c).as_bytes()))
            .collect();
        let by_id: HashMap<Id, usize> = pid.iter().enumerate().map(|(i, d)| (*d, i)).collect();
        let parent = ParentFile::new(
            pchunks
                .iter()
                .zip(&pid)
                .map(|(c, d)| (*d, ChunkMeta(0, sketch(c))))
                .collect(),
        );
        let nr = split(&second, params);
        let (mut known, mut dn, mut db, mut wn, mut wb, mut nomatch) = (0, 0, 0, 0, 0, 0);
        let mut alt = 0usize;
        for (seq, r) in nr.iter().enumerate() {
            let c = &second[r.clone()];
            let id = Id(*blake3::hash(c).as_bytes());
            if by_id.contains_key(&id) {
                known += 1;
                continue;
            }
            let full = full_len(c);
            let sk = sketch(c);
            let cand = parent.most_similar(&sk, seq);
            let (d, ci) = match cand {
                Some((cid, _)) => {
                    let ci = by_id[&cid];
                    let d = delta::encode(pchunks[ci], c, 1, 0, 0).unwrap().len();
                    (Some(d), Some(ci))
                }
                None => (None, None),
            };
            // Alternative: pieces by origin among the ranked candidates and the best's
            // neighbours, each a delta against its own base.
            let a = match (ci, d) {
                (Some(ci), Some(dl)) if dl > c.len() / 64 => {
                    let mut cands = parent.ranked(&sk, seq);
                    cands.truncate(4);
                    for n in [ci.wrapping_sub(1), ci + 1] {
                        if n < pchunks.len() && !cands.contains(&n) {
                            cands.push(n);
                        }
                    }
                    let bases: Vec<&[u8]> = cands.iter().map(|&i| pchunks[i]).collect();
                    let pieces = split_by_origin(c, &bases);
                    let mut sum = 0;
                    for p in &pieces {
                        let pc = &c[p.range.clone()];
                        let f = full_len(pc);
                        let dd = p
                            .base
                            .map(|b| delta::encode(bases[b], pc, 1, 0, 0).unwrap().len());
                        sum += match dd {
                            Some(dd) if dd <= pc.len() / 16 || dd * 2 <= f => dd,
                            _ => f,
                        } + if pieces.len() > 1 { 300 } else { 0 };
                    }
                    if verbose {
                        println!("    split {} -> {} pieces, {sum} B", c.len(), pieces.len());
                    }
                    // What an index of every parent chunk could reach: pieces of 2 KB and up.
                    if global && sum > c.len() / 32 {
                        let all: Vec<&[u8]> = pchunks.clone();
                        let pieces = split_with(c, &all, 2048, 4096);
                        let mut g = 0;
                        for p in &pieces {
                            let pc = &c[p.range.clone()];
                            let f = full_len(pc);
                            let dd = p
                                .base
                                .map(|b| delta::encode(all[b], pc, 1, 0, 0).unwrap().len());
                            g += match dd {
                                Some(dd) if dd <= pc.len() / 16 || dd * 2 <= f => dd,
                                _ => f,
                            } + if pieces.len() > 1 { 300 } else { 0 };
                        }
                        println!("    global: {} pieces, {g} B (local {sum} B)", pieces.len());
                        sum = sum.min(g);
                    }
                    sum
                }
                (_, Some(dl)) if dl <= c.len() / 16 || dl * 2 <= full => dl,
                _ => full,
            };
            let kept = match d {
                Some(d) if d <= c.len() / 16 || d * 2 <= full => {
                    dn += 1;
                    db += d;
                    d
                }
                _ => {
                    if d.is_none() {
                        nomatch += 1;
                    }
                    wn += 1;
                    wb += full;
                    full
                }
            };
            alt += a;
            if verbose && kept > 20_000 {
                println!(
                    "  seq {seq} at {} len {} full {full} delta {:?} cand {:?} multi {a}",
                    r.start,
                    c.len(),
                    d,
                    ci
                );
            }
        }
        println!(
            "seed {s}: chunks {}/{} known {known} delta {dn} ({db} B) whole {wn} ({wb} B, {nomatch} unmatched) total {} | pieces {}",
            pr.len(),
            nr.len(),
            db + wb,
            alt
        );
    }
}
