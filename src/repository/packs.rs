//! Pack headers: read from a pack's tail in one request, or parsed from a whole pack.

use super::*;

/// Bytes read from a pack's end to find its header in one request.
const PACK_TAIL_READ: u64 = 16 * 1024;

impl Repository {
    /// Reads a pack's header with ranged reads of its tail (`size` from the listing): what
    /// `prune`, `check` and `repair index` need without downloading the pack.
    pub fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<PackEntry>> {
        let what = || format!("pack file {pack}");
        if size < 4 + crate::crypto::SEAL_OVERHEAD as u64 {
            return Err(Error::damaged(what(), format!("too short ({size} bytes)")));
        }
        // One read usually covers the header (41 bytes per blob); a second when it does not.
        let tail_len = size.min(PACK_TAIL_READ);
        let tail = self.backend.read_range(
            FileType::Pack,
            &pack.to_hex(),
            size - tail_len,
            tail_len as u32,
        )?;
        let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as u64;
        if hlen + 4 > size {
            return Err(Error::damaged(
                what(),
                format!("its header length {hlen} exceeds its size {size} (truncated?)"),
            ));
        }
        let sealed = if hlen + 4 <= tail_len {
            tail[(tail_len - 4 - hlen) as usize..tail.len() - 4].to_vec()
        } else {
            self.backend
                .read_range(FileType::Pack, &pack.to_hex(), size - 4 - hlen, hlen as u32)?
        };
        self.open_pack_header(pack, &sealed, size - 4 - hlen)
    }

    /// Checks a whole pack's bytes against its name and returns its header entries.
    pub fn parse_pack(&self, pack: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
        let what = || format!("pack file {pack}");
        if Id::of_file_bytes(bytes) != *pack {
            return Err(Error::damaged(
                what(),
                "its bytes do not match its name (storage corruption)",
            ));
        }
        let (data, sealed) =
            crate::format::pack::split(bytes).map_err(|e| Error::damaged(what(), e.to_string()))?;
        self.open_pack_header(pack, sealed, data.len() as u64)
    }

    fn open_pack_header(&self, pack: &Id, sealed: &[u8], data_len: u64) -> Result<Vec<PackEntry>> {
        let what = || format!("pack file {pack}");
        let plain = self
            .key
            .open(crate::crypto::aad::PACK_HEADER, sealed)
            .map_err(|e| Error::damaged(what(), format!("header: {}", open_err(e))))?;
        crate::format::pack::decode_header(&plain, data_len)
            .map_err(|e| Error::damaged(what(), format!("header: {e}")))
    }
}

/// Bytes of a pack holding `entries` that are not blobs: its sealed header and the header's
/// length (`docs/format.md`: a count byte, 41 bytes per entry and 32 more for a delta's base).
pub fn pack_overhead(entries: &[PackEntry]) -> u64 {
    let header: u64 = 1 + entries
        .iter()
        .map(|e| 41 + if e.base.is_some() { 32 } else { 0 })
        .sum::<u64>();
    header + crate::crypto::SEAL_OVERHEAD as u64 + 4
}
