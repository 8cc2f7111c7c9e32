//! Row counts read from a `pg_dump --format=custom --compress=0` archive as it streams past, so
//! that a restore can report per-table row counts without scanning the restored tables.
//!
//! The archive (PostgreSQL's `pg_backup_archiver.c` and `pg_backup_custom.c`): a header
//! (`PGDMP`, version, integer and offset sizes, format, compression, creation time, names), a
//! table of contents, then data blocks in dump order. Integers are a sign byte and `intSize`
//! bytes, least significant first; strings are an integer length (−1 for none) and the bytes.
//! A table's data block (`1`, dump ID, then chunks of length + bytes, ended by length 0) holds its
//! `COPY` text, where every row ends with a newline and newlines inside values are escaped, so
//! counting newlines counts rows. Large-object blocks (`3`) are skipped.
//!
//! Archive versions 1.14 to 1.16 (pg_dump 12 to 17) without compression are understood; for
//! anything else [`RowCounter::finish`] returns `None` and the caller counts with queries.

use std::collections::HashMap;

/// Largest header + table of contents held while waiting for it to be complete.
const MAX_TOC: usize = 64 << 20;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Where the data section's parser is.
#[derive(Clone, Copy, Debug)]
enum Data {
    BlockType,
    /// Reading an integer: what it is for, bytes so far, value so far.
    Int(IntFor, usize, u64),
    /// Inside a chunk: bytes left.
    Chunk(u64, Owner),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum IntFor {
    DataId,
    BlobsId,
    DataLen(Owner),
    BlobOid,
    BlobLen,
}

/// Whose bytes a chunk holds: a table's (index into the tables), a large object's, or another
/// data entry's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Owner {
    Table(usize),
    Blob,
    Other,
}

/// Counts rows per table in an archive fed to it in pieces of any size.
#[derive(Default)]
pub struct RowCounter {
    /// Bytes of the header and table of contents until they parse.
    head: Vec<u8>,
    next_try: usize,
    parsed: Option<Toc>,
    state: Option<Data>,
    failed: bool,
}

struct Toc {
    int_size: usize,
    /// Every entry, in archive order.
    entries: Vec<TocEntry>,
    /// Dump ID to index into `tables`, for `TABLE DATA` entries.
    data_ids: HashMap<i64, usize>,
    tables: Vec<TableRows>,
}

/// One table's rows so far, and where its COPY text is.
struct TableRows {
    schema: String,
    name: String,
    rows: u64,
    /// The current line's length and first two bytes, to recognise the `\.` end marker.
    line_len: usize,
    line_start: [u8; 2],
    /// Past the end marker: what follows is no row.
    ended: bool,
}

impl TableRows {
    /// Counts the rows in the next piece of the table's COPY text: every line until the `\.`
    /// line pg_dump ends it with (an empty line is a row: one empty text column).
    fn feed(&mut self, data: &[u8]) {
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            self.extend_line(&data[from..nl]);
            if !self.ended {
                if self.line_len == 2 && &self.line_start == b"\\." {
                    self.ended = true;
                } else {
                    self.rows += 1;
                }
            }
            self.line_len = 0;
            from = nl + 1;
        }
        self.extend_line(&data[from..]);
    }

    fn extend_line(&mut self, part: &[u8]) {
        for (i, &b) in part.iter().take(2).enumerate() {
            if self.line_len + i < 2 {
                self.line_start[self.line_len + i] = b;
            }
        }
        self.line_len += part.len();
    }
}

/// One entry of an archive's table of contents, as `pg_restore -l` lists it, without the
/// ambiguity of that listing's spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: i64,
    /// `TABLE`, `TABLE DATA`, `POLICY`, `EVENT TRIGGER`...
    pub desc: String,
    /// Schema; empty for objects outside one.
    pub namespace: String,
    /// Name: `users`, `uid()`, for a policy or trigger `table name`.
    pub tag: String,
    pub owner: String,
}

/// Reads the table of contents of an archive written to it, then refuses more bytes (the
/// writer stops early: the data section is not needed).
#[derive(Default)]
pub struct TocReader {
    head: Vec<u8>,
    next_try: usize,
    entries: Option<Vec<TocEntry>>,
    unsupported: bool,
}

impl TocReader {
    pub fn new() -> Self {
        TocReader {
            next_try: 4096,
            ..Default::default()
        }
    }

    /// The entries, once the table of contents was complete; `None` for an archive this parser
    /// does not understand (compressed, another format or version) or one cut short.
    pub fn finish(self) -> Option<Vec<TocEntry>> {
        self.entries
    }
}

impl std::io::Write for TocReader {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let done = || std::io::Error::other("table of contents read");
        if self.entries.is_some() || self.unsupported {
            return Err(done());
        }
        self.head.extend_from_slice(buf);
        if self.head.len() >= self.next_try {
            match parse_toc(&self.head) {
                Ok((toc, _)) => {
                    self.entries = Some(toc.entries);
                    self.head = Vec::new();
                }
                Err(Parse::Incomplete) if self.head.len() < MAX_TOC => {
                    self.next_try = self.head.len() * 2;
                }
                Err(_) => self.unsupported = true,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.entries.is_none() && !self.unsupported {
            // The whole archive fit below the next try: parse what there is.
            if let Ok((toc, _)) = parse_toc(&self.head) {
                self.entries = Some(toc.entries);
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Parse {
    Incomplete,
    Unsupported,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    int_size: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], Parse> {
        let end = self.at.checked_add(n).ok_or(Parse::Unsupported)?;
        let s = self.b.get(self.at..end).ok_or(Parse::Incomplete)?;
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Parse> {
        Ok(self.bytes(1)?[0])
    }

    fn int(&mut self) -> Result<i64, Parse> {
        let sign = self.byte()?;
        let mut v: u64 = 0;
        for (i, &b) in self.bytes(self.int_size)?.iter().enumerate() {
            if i < 8 {
                v |= (b as u64) << (8 * i);
            }
        }
        let v = i64::try_from(v).map_err(|_| Parse::Unsupported)?;
        Ok(if sign != 0 { -v } else { v })
    }

    fn string(&mut self) -> Result<Option<String>, Parse> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| Parse::Unsupported)?;
        if len > MAX_TOC {
            return Err(Parse::Unsupported);
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(len)?).into_owned()))
    }
}

/// Parses the header and table of contents; returns them and where the data section starts.
fn parse_toc(b: &[u8]) -> Result<(Toc, usize), Parse> {
    let mut r = Reader {
        b,
        at: 0,
        int_size: 4,
    };
    if r.bytes(5)? != b"PGDMP" {
        return Err(Parse::Unsupported);
    }
    let (major, minor) = (r.byte()?, r.byte()?);
    let _rev = r.byte()?;
    let version = (major as u32) << 8 | minor as u32;
    if !(0x010E..=0x0110).contains(&version) {
        return Err(Parse::Unsupported);
    }
    r.int_size = r.byte()? as usize;
    let off_size = r.byte()? as usize;
    if !(1..=16).contains(&r.int_size) || !(1..=16).contains(&off_size) {
        return Err(Parse::Unsupported);
    }
    let format = r.byte()?;
    if format != 1 {
        return Err(Parse::Unsupported); // not the custom format
    }
    let compressed = if version >= 0x010F {
        r.byte()? != 0
    } else {
        r.int()? != 0
    };
    if compressed {
        return Err(Parse::Unsupported);
    }
    for _ in 0..7 {
        r.int()?; // creation time
    }
    for _ in 0..3 {
        r.string()?; // database name, server version, pg_dump version
    }
    let count = r.int()?;
    if !(0..=10_000_000).contains(&count) {
        return Err(Parse::Unsupported);
    }
    let mut toc = Toc {
        int_size: r.int_size,
        entries: Vec::new(),
        data_ids: HashMap::new(),
        tables: Vec::new(),
    };
    for _ in 0..count {
        let dump_id = r.int()?;
        let _had_dumper = r.int()?;
        r.string()?; // table OID
        r.string()?; // OID
        let tag = r.string()?.unwrap_or_default();
        let desc = r.string()?.unwrap_or_default();
        let _section = r.int()?;
        for _ in 0..3 {
            r.string()?; // definition, drop statement, COPY statement
        }
        let namespace = r.string()?.unwrap_or_default();
        r.string()?; // tablespace
        r.string()?; // table access method
        if version >= 0x0110 {
            r.int()?; // relkind
        }
        let owner = r.string()?.unwrap_or_default();
        r.string()?; // "false" (with OIDs)
        while r.string()?.is_some() {} // dependencies, ended by a null string
        r.bytes(1 + off_size)?; // data offset: flag and offset
        if desc == "TABLE DATA" {
            toc.data_ids.insert(dump_id, toc.tables.len());
            toc.tables.push(TableRows {
                schema: namespace.clone(),
                name: tag.clone(),
                rows: 0,
                line_len: 0,
                line_start: [0; 2],
                ended: false,
            });
        }
        toc.entries.push(TocEntry {
            dump_id,
            desc,
            namespace,
            tag,
            owner,
        });
    }
    Ok((toc, r.at))
}

impl RowCounter {
    pub fn new() -> Self {
        RowCounter {
            next_try: 4096,
            ..Default::default()
        }
    }

    /// Takes the next bytes of the archive.
    pub fn update(&mut self, mut data: &[u8]) {
        if self.failed {
            return;
        }
        if self.parsed.is_none() {
            self.head.extend_from_slice(data);
            if self.head.len() >= self.next_try {
                self.try_parse(false);
            }
            return;
        }
        while !data.is_empty() && !self.failed {
            let n = self.step(data);
            data = &data[n..];
        }
    }

    /// Parses the header and table of contents once they may be complete (re-tried at doubling
    /// sizes, so the cost stays linear); `last` at the end of the stream.
    fn try_parse(&mut self, last: bool) {
        match parse_toc(&self.head) {
            Ok((toc, end)) => {
                self.parsed = Some(toc);
                self.state = Some(Data::BlockType);
                let rest = std::mem::take(&mut self.head).split_off(end);
                self.update(&rest);
            }
            Err(Parse::Incomplete) if !last && self.head.len() < MAX_TOC => {
                self.next_try = self.head.len() * 2;
            }
            Err(_) => self.fail(),
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.head = Vec::new();
    }

    /// Consumes some bytes of the data section; returns how many.
    fn step(&mut self, data: &[u8]) -> usize {
        let (Some(toc), Some(state)) = (self.parsed.as_mut(), self.state) else {
            return data.len();
        };
        let int_len = 1 + toc.int_size;
        match state {
            Data::BlockType => {
                self.state = match data[0] {
                    BLK_DATA => Some(Data::Int(IntFor::DataId, 0, 0)),
                    BLK_BLOBS => Some(Data::Int(IntFor::BlobsId, 0, 0)),
                    _ => {
                        self.fail();
                        None
                    }
                };
                1
            }
            Data::Int(what, got, mut value) => {
                let take = (int_len - got).min(data.len());
                for (i, &b) in data[..take].iter().enumerate() {
                    let pos = got + i;
                    // Byte 0 is the sign; lengths and IDs here are never negative.
                    if pos == 0 && b != 0 {
                        self.fail();
                        return take;
                    }
                    if (1..=8).contains(&pos) {
                        value |= (b as u64) << (8 * (pos - 1));
                    }
                }
                if got + take < int_len {
                    self.state = Some(Data::Int(what, got + take, value));
                    return take;
                }
                self.state = Some(match what {
                    IntFor::DataId => {
                        let owner = toc
                            .data_ids
                            .get(&(value as i64))
                            .map_or(Owner::Other, |&i| Owner::Table(i));
                        Data::Int(IntFor::DataLen(owner), 0, 0)
                    }
                    IntFor::DataLen(_) if value == 0 => Data::BlockType,
                    IntFor::DataLen(owner) => Data::Chunk(value, owner),
                    IntFor::BlobsId => Data::Int(IntFor::BlobOid, 0, 0),
                    IntFor::BlobOid if value == 0 => Data::BlockType,
                    IntFor::BlobOid => Data::Int(IntFor::BlobLen, 0, 0),
                    IntFor::BlobLen if value == 0 => Data::Int(IntFor::BlobOid, 0, 0),
                    IntFor::BlobLen => Data::Chunk(value, Owner::Blob),
                });
                take
            }
            Data::Chunk(left, owner) => {
                let take = (left.min(data.len() as u64)) as usize;
                if let Owner::Table(i) = owner {
                    toc.tables[i].feed(&data[..take]);
                }
                let left = left - take as u64;
                self.state = Some(if left > 0 {
                    Data::Chunk(left, owner)
                } else if owner == Owner::Blob {
                    Data::Int(IntFor::BlobLen, 0, 0)
                } else {
                    Data::Int(IntFor::DataLen(owner), 0, 0)
                });
                take
            }
        }
    }

    /// Rows per table, `(schema, table, rows)` in archive order; `None` when the archive was
    /// not understood or ended inside a block.
    pub fn finish(mut self) -> Option<Vec<(String, String, u64)>> {
        if self.parsed.is_none() && !self.failed {
            self.try_parse(true);
        }
        match (self.failed, self.parsed, self.state) {
            (false, Some(toc), Some(Data::BlockType)) => Some(
                toc.tables
                    .into_iter()
                    .map(|t| (t.schema, t.name, t.rows))
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Passes bytes to `inner` and counts rows on the way.
pub struct CountingWriter<'w> {
    pub inner: &'w mut dyn std::io::Write,
    pub counter: RowCounter,
}

impl std::io::Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counter.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(out: &mut Vec<u8>, v: i64) {
        out.push((v < 0) as u8);
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    }

    fn string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => int(out, -1),
            Some(s) => {
                int(out, s.len() as i64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// A small archive as pg_dump 15 lays it out (version 1.14): two tables' data, a large
    /// object block and an empty table.
    fn archive() -> Vec<u8> {
        let mut a = b"PGDMP".to_vec();
        a.extend_from_slice(&[1, 14, 0, 4, 8, 1]);
        int(&mut a, 0); // no compression
        for v in [1, 2, 3, 4, 5, 126, 0] {
            int(&mut a, v);
        }
        for s in ["app", "15.1", "15.1"] {
            string(&mut a, Some(s));
        }
        let entries = [
            (1, "TABLE", "accounts"),
            (2, "TABLE DATA", "accounts"),
            (3, "TABLE DATA", "weird\nname"),
            (4, "BLOBS", "BLOBS"),
            (5, "TABLE DATA", "empty"),
        ];
        int(&mut a, entries.len() as i64);
        for (id, desc, tag) in entries {
            int(&mut a, id);
            int(&mut a, 1);
            string(&mut a, Some("1259"));
            string(&mut a, Some("16384"));
            string(&mut a, Some(tag));
            string(&mut a, Some(desc));
            int(&mut a, 2);
            string(&mut a, Some(""));
            string(&mut a, None);
            string(&mut a, Some("COPY x FROM stdin;\n"));
            string(&mut a, Some("public"));
            string(&mut a, Some(""));
            string(&mut a, Some("heap"));
            string(&mut a, Some("postgres"));
            string(&mut a, Some("false"));
            string(&mut a, Some("1"));
            string(&mut a, None);
            a.push(1);
            a.extend_from_slice(&[0; 8]);
        }
        let data = |a: &mut Vec<u8>, id: i64, chunks: &[&[u8]]| {
            a.push(BLK_DATA);
            int(a, id);
            for c in chunks {
                int(a, c.len() as i64);
                a.extend_from_slice(c);
            }
            int(a, 0);
        };
        data(
            &mut a,
            2,
            &[
                b"1\talice\n",
                b"2\tbob with a \\n inside\n3\tc",
                b"arol\n",
                b"\\.\n\n\n",
            ],
        );
        // An empty line is a row (one empty text column); the end marker split over chunks.
        data(&mut a, 3, &[b"\n\\", b".\n\n"]);
        a.push(BLK_BLOBS);
        int(&mut a, 4);
        int(&mut a, 16500); // a large object full of newlines: not rows
        int(&mut a, 3);
        a.extend_from_slice(b"\n\n\n");
        int(&mut a, 0);
        int(&mut a, 0);
        data(&mut a, 5, &[]);
        a
    }

    fn counts(a: &[u8], piece: usize) -> Option<Vec<(String, String, u64)>> {
        let mut c = RowCounter::new();
        for p in a.chunks(piece.max(1)) {
            c.update(p);
        }
        c.finish()
    }

    #[test]
    fn counts_rows_whatever_the_pieces() {
        let a = archive();
        let want = vec![
            ("public".to_string(), "accounts".to_string(), 3),
            ("public".to_string(), "weird\nname".to_string(), 1),
            ("public".to_string(), "empty".to_string(), 0),
        ];
        for piece in [1, 2, 3, 7, 64, 4096, a.len()] {
            assert_eq!(counts(&a, piece), Some(want.clone()), "pieces of {piece}");
        }
    }

    #[test]
    fn truncated_compressed_or_foreign_input_gives_none() {
        let a = archive();
        assert_eq!(counts(&a[..a.len() - 3], 100), None);
        let mut z = a.clone();
        z[11..16].copy_from_slice(&[0, 6, 0, 0, 0]); // compression level 6
        assert_eq!(counts(&z, 100), None);
        assert_eq!(counts(b"not an archive at all", 5), None);
        let mut v = a.clone();
        v[6] = 9; // version 1.9
        assert_eq!(counts(&v, 100), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4000),
                        cut in 0usize..4000, piece in 1usize..300) {
            let mut a = archive();
            a.truncate(cut.min(a.len()));
            a.extend_from_slice(&bytes);
            let _ = counts(&a, piece);
        }
    }
}
