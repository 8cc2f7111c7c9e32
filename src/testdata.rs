//! Test inputs shared by unit tests (compiled only for tests).

/// `n` tab-separated rows with an index, a pseudo-random hex token and a number, like a table in
/// a dump; `seed` picks the tokens (seeds differing only in the lowest bit give the same rows).
pub(crate) fn rows(n: usize, seed: u64) -> Vec<u8> {
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
