//! Content-defined chunking with FastCDC (the 2020 algorithm of the `fastcdc` crate).
//!
//! Cut points depend only on the bytes, so an insert early in a stream moves only the chunks
//! around it. The gear table is XORed with a per-repository random seed kept in the encrypted
//! config, so chunk lengths do not reveal which known file a repository holds.
//!
//! [`Chunker`] reads into one buffer of twice the maximum chunk size and cuts with
//! `FastCDC::cut`, yielding exactly the cut points of `fastcdc::v2020::StreamCDC` (a test pins
//! that) while copying each byte only once into its chunk.

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

/// Chunker settings stored in the repository config.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Always `fastcdc-2020`.
    #[serde(default = "algorithm_name")]
    pub algorithm: AlgorithmName,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// FastCDC normalization level (0-3).
    pub normalization: u8,
    /// Gear-table seed.
    pub seed: u64,
}

/// The chunking algorithm's stable name.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum AlgorithmName {
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

fn algorithm_name() -> AlgorithmName {
    AlgorithmName::FastCdc2020
}

impl ChunkerParams {
    /// sbk's defaults: 256 KiB / 1 MiB / 4 MiB (see `docs/format.md` for the measurements).
    pub fn default_with_seed(seed: u64) -> Self {
        ChunkerParams {
            algorithm: AlgorithmName::FastCdc2020,
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
            normalization: 1,
            seed,
        }
    }

    /// Checks the limits the fastcdc crate asserts, so bad stored parameters are an error, not a
    /// panic.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(format!("invalid chunker parameters {self:?}"))
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// Splits a reader into content-defined chunks.
pub struct Chunker<R> {
    params: ChunkerParams,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`; `params` must have passed [`ChunkerParams::validate`].
    pub fn new(reader: R, params: ChunkerParams) -> Self {
        Chunker {
            params,
            reader,
            buf: vec![0u8; 2 * params.max_size as usize],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Fills the buffer after moving unconsumed bytes to its front.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let max = self.params.max_size as usize;
        if self.end - self.start < max && !self.eof {
            self.fill()?;
        }
        let remaining = self.end - self.start;
        if remaining == 0 {
            return Ok(None);
        }
        let p = &self.params;
        let cdc = FastCDC::with_level_and_seed(
            &self.buf[..self.end],
            p.min_size,
            p.avg_size,
            p.max_size,
            p.level(),
            p.seed,
        );
        let (_, cut) = cdc.cut(self.start, remaining);
        let chunk = self.buf[self.start..cut].to_vec();
        self.start = cut;
        Ok(Some(chunk))
    }
}

/// The chunks of bytes held in memory, as ranges: cut exactly where [`Chunker`] cuts the same
/// bytes, without its buffer of twice the largest chunk (what many small storage objects would
/// otherwise each allocate and zero).
pub fn split(data: &[u8], params: ChunkerParams) -> Vec<std::ops::Range<usize>> {
    let cdc = FastCDC::with_level_and_seed(
        data,
        params.min_size,
        params.avg_size,
        params.max_size,
        params.level(),
        params.seed,
    );
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let (_, cut) = cdc.cut(start, data.len() - start);
        out.push(start..cut);
        start = cut;
    }
    out
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> ChunkerParams {
        ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
            ..ChunkerParams::default_with_seed(seed)
        }
    }

    fn pseudo_random(n: usize, mut s: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn same_cuts_as_streamcdc() {
        let data = pseudo_random(1_000_000, 42);
        for seed in [0, 0xdead_beef] {
            let p = params(seed);
            let ours: Vec<usize> = Chunker::new(&data[..], p)
                .map(|c| c.unwrap().len())
                .collect();
            let theirs: Vec<usize> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                &data[..],
                p.min_size,
                p.avg_size,
                p.max_size,
                p.level(),
                seed,
            )
            .map(|c| c.unwrap().length)
            .collect();
            assert_eq!(ours, theirs);
            assert_eq!(ours.iter().sum::<usize>(), data.len());
        }
    }

    #[test]
    fn small_reads_do_not_change_cuts() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = pseudo_random(300_000, 7);
        let a: Vec<Vec<u8>> = Chunker::new(&data[..], params(1))
            .map(|c| c.unwrap())
            .collect();
        let b: Vec<Vec<u8>> = Chunker::new(Trickle(&data), params(1))
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(a, b);
        assert_eq!(a.concat(), data);
    }

    #[test]
    fn split_cuts_where_the_chunker_does() {
        for (len, seed) in [(0, 1), (100, 2), (4096, 3), (300_000, 4), (1 << 20, 5)] {
            let data = pseudo_random(len, seed + 11);
            let streamed: Vec<Vec<u8>> = Chunker::new(&data[..], params(seed))
                .map(|c| c.unwrap())
                .collect();
            let split: Vec<Vec<u8>> = split(&data, params(seed))
                .into_iter()
                .map(|r| data[r].to_vec())
                .collect();
            assert_eq!(streamed, split, "{len} bytes");
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert_eq!(Chunker::new(&b""[..], params(0)).count(), 0);
    }

    #[test]
    fn validate_rejects_bad_sizes() {
        let mut p = params(0);
        assert!(p.validate().is_ok());
        p.max_size = 100;
        assert!(p.validate().is_err());
    }
}
