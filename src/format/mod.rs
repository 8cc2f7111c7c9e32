//! Stored structures and their bytes, with no I/O. `docs/format.md` specifies each one; every
//! decoder here rejects malformed input with a [`FormatError`] instead of panicking.

pub mod audit;
pub mod config;
pub mod delta;
pub mod index;
pub mod key;
pub mod pack;
pub mod payload;
pub mod snapshot;
pub mod tree;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("unsupported {what} version {version}")]
    Version { what: &'static str, version: u32 },
    #[error("unknown blob kind {0}")]
    BlobKind(u8),
    #[error("{0}")]
    Invalid(String),
}

/// The kind of a blob, stored as one byte in pack headers and index files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A chunk of a file's content.
    Data = 0,
    /// A serialized [`tree::Tree`].
    Tree = 1,
    /// A chunk stored as a zstd delta against a base blob (reserved for delta blobs: entries of
    /// this kind carry the base blob's ID; this version writes none).
    Delta = 2,
}

impl BlobKind {
    pub fn from_u8(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            2 => Ok(BlobKind::Delta),
            _ => Err(FormatError::BlobKind(b)),
        }
    }
}

/// A little-endian reader over a byte slice that reports truncation as an error.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let rest = self.buf.len() - self.pos;
        if rest < n {
            return Err(FormatError::Truncated {
                offset: self.pos,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn id(&mut self) -> Result<crate::Id, FormatError> {
        Ok(crate::Id(self.take(32)?.try_into().expect("32 bytes")))
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn finish(&self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(FormatError::Invalid(format!(
                "{} trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}
