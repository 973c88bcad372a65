//! Avro Object Container Files, without I/O.
//!
//! [`BlockScanner`] is fed bytes by whoever does the reading (an async file
//! source, a blocking tool, a test) and hands back whole blocks, so one parser
//! serves all of them. A damaged file does not end the scan: when a block is
//! malformed or its sync marker is wrong, the scanner reports the damaged
//! bytes as [`Event::Corrupt`] and resumes after the next sync marker, which
//! is what the marker is for. Only a damaged header, which leaves nothing
//! else readable, is an error.

use std::io::{self, Write};

use super::primitive::{write_bytes, write_long, Input, PrimitiveError};

pub const MAGIC: [u8; 4] = *b"Obj\x01";
pub const SYNC_LEN: usize = 16;

/// Blocks larger than this are treated as corruption (a damaged size field
/// would otherwise make the scanner buffer the whole file).
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// Damaged bytes are reported in pieces of at most this size while the
/// scanner looks for the next sync marker.
const MAX_CORRUPT_PIECE: usize = 1 << 20;

/// Block compression codecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Null,
    Deflate,
    Snappy,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Null => "null",
            Codec::Deflate => "deflate",
            Codec::Snappy => "snappy",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "null" => Some(Codec::Null),
            "deflate" => Some(Codec::Deflate),
            "snappy" => Some(Codec::Snappy),
            _ => None,
        }
    }

    /// Decompresses one block's data; `Null` borrows, the others fill `scratch`.
    pub fn decompress<'a>(
        self,
        data: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], &'static str> {
        match self {
            Codec::Null => Ok(data),
            Codec::Deflate => {
                *scratch =
                    miniz_oxide::inflate::decompress_to_vec_with_limit(data, MAX_BLOCK_BYTES)
                        .map_err(|_| "deflate data is corrupt")?;
                Ok(scratch)
            }
            Codec::Snappy => {
                let Some(body_len) = data.len().checked_sub(4) else {
                    return Err("snappy block is shorter than its checksum");
                };
                let (body, crc) = data.split_at(body_len);
                *scratch = snap::raw::Decoder::new()
                    .decompress_vec(body)
                    .map_err(|_| "snappy data is corrupt")?;
                let expected = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
                if crc32fast::hash(scratch) != expected {
                    return Err("snappy block fails its CRC-32 check");
                }
                Ok(scratch)
            }
        }
    }

    fn compress(self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            Codec::Null => out.extend_from_slice(data),
            Codec::Deflate => {
                out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6))
            }
            Codec::Snappy => {
                let max = snap::raw::max_compress_len(data.len());
                let start = out.len();
                out.resize(start + max, 0);
                // max_compress_len is the documented bound, so this cannot fail.
                let n = snap::raw::Encoder::new()
                    .compress(data, &mut out[start..])
                    .unwrap_or(0);
                out.truncate(start + n);
                out.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
            }
        }
    }
}

/// The file header: the writer schema, codec and sync marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub schema: String,
    pub codec: Codec,
    pub sync: [u8; SYNC_LEN],
}

/// Why a file cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("not an Avro object container file (it does not start with `Obj\\x01`)")]
    BadMagic,
    #[error("the file ends inside its header")]
    TruncatedHeader,
    #[error("the header is corrupt: {0}")]
    BadHeader(&'static str),
    #[error("the header names no writer schema (`avro.schema`)")]
    NoSchema,
    #[error("codec `{0}` is not supported (supported: null, deflate, snappy)")]
    UnsupportedCodec(String),
}

enum Parsed<T> {
    Complete(T, usize),
    Incomplete,
}

fn parse_header(buf: &[u8]) -> Result<Parsed<Header>, ContainerError> {
    let incomplete_or = |e: PrimitiveError, msg| match e {
        PrimitiveError::Eof => Ok(Parsed::Incomplete),
        _ => Err(ContainerError::BadHeader(msg)),
    };
    if buf.len() < MAGIC.len() {
        return if MAGIC.starts_with(buf) {
            Ok(Parsed::Incomplete)
        } else {
            Err(ContainerError::BadMagic)
        };
    }
    if buf[..4] != MAGIC {
        return Err(ContainerError::BadMagic);
    }
    let mut input = Input::new(&buf[4..]);
    let mut schema = None;
    let mut codec = Codec::Null;
    loop {
        let count = match input.read_long() {
            Ok(c) => c,
            Err(e) => return incomplete_or(e, "metadata count"),
        };
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            if let Err(e) = input.read_long() {
                return incomplete_or(e, "metadata block size");
            }
        }
        for _ in 0..count.unsigned_abs() {
            let key = match input.read_bytes() {
                Ok(k) => k,
                Err(e) => return incomplete_or(e, "metadata key"),
            };
            let value = match input.read_bytes() {
                Ok(v) => v,
                Err(e) => return incomplete_or(e, "metadata value"),
            };
            match key {
                b"avro.schema" => {
                    let text = std::str::from_utf8(value)
                        .map_err(|_| ContainerError::BadHeader("schema is not UTF-8"))?;
                    schema = Some(text.to_owned());
                }
                b"avro.codec" => {
                    let name = String::from_utf8_lossy(value);
                    codec = Codec::from_name(&name)
                        .ok_or_else(|| ContainerError::UnsupportedCodec(name.into_owned()))?;
                }
                _ => {}
            }
        }
    }
    let sync = match input.read_fixed::<SYNC_LEN>() {
        Ok(s) => s,
        Err(e) => return incomplete_or(e, "sync marker"),
    };
    let schema = schema.ok_or(ContainerError::NoSchema)?;
    Ok(Parsed::Complete(
        Header {
            schema,
            codec,
            sync,
        },
        4 + input.position(),
    ))
}

enum BlockParse {
    /// A block: record count, where its (compressed) data lies in the
    /// buffer, and the bytes it takes including the sync marker.
    Block {
        count: u64,
        data: std::ops::Range<usize>,
        consumed: usize,
    },
    Incomplete,
    Corrupt(&'static str),
}

fn parse_block(buf: &[u8], sync: &[u8; SYNC_LEN]) -> BlockParse {
    let mut input = Input::new(buf);
    let count = match input.read_long() {
        Ok(c) if c >= 0 => c as u64,
        Ok(_) => return BlockParse::Corrupt("negative record count"),
        Err(PrimitiveError::Eof) => return BlockParse::Incomplete,
        Err(_) => return BlockParse::Corrupt("malformed record count"),
    };
    let size = match input.read_long() {
        Ok(s) if s >= 0 && (s as u64) <= MAX_BLOCK_BYTES as u64 => s as usize,
        Ok(_) => return BlockParse::Corrupt("implausible block size"),
        Err(PrimitiveError::Eof) => return BlockParse::Incomplete,
        Err(_) => return BlockParse::Corrupt("malformed block size"),
    };
    let start = input.position();
    let end = start + size;
    if buf.len() < end + SYNC_LEN {
        return BlockParse::Incomplete;
    }
    if &buf[end..end + SYNC_LEN] != sync {
        return BlockParse::Corrupt("sync marker after the block does not match");
    }
    BlockParse::Block {
        count,
        data: start..end,
        consumed: end + SYNC_LEN,
    }
}

fn find_sync(buf: &[u8], sync: &[u8; SYNC_LEN]) -> Option<usize> {
    buf.windows(SYNC_LEN).position(|w| w == sync)
}

/// What the scanner found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A block of `count` datums; `data` is still compressed with the
    /// header's codec. `offset` is the block's byte offset in the file.
    Block {
        offset: u64,
        count: u64,
        data: &'a [u8],
    },
    /// Bytes that could not be parsed as blocks, starting at `offset`.
    Corrupt {
        offset: u64,
        bytes: &'a [u8],
        reason: &'static str,
    },
    /// The scanner needs more bytes (call [`BlockScanner::feed`] or
    /// [`BlockScanner::finish`]).
    NeedData,
    /// The whole file has been scanned.
    End,
}

/// Incremental container parser. Feed it bytes in order; ask for events.
#[derive(Debug, Default)]
pub struct BlockScanner {
    /// File bytes up to `end`; past it, room for the next read that was
    /// initialised once, so that reading into it needs no zeroing.
    buf: Vec<u8>,
    /// End of the file bytes in `buf`.
    end: usize,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// File offset of `buf[0]`.
    base: u64,
    header: Option<Header>,
    eof: bool,
    /// After corruption: skipping to the next sync marker.
    resyncing: Option<&'static str>,
}

impl BlockScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next bytes of the file.
    pub fn feed(&mut self, data: &[u8]) {
        let room = self.room(data.len());
        room[..data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Reads the next bytes of the file from `file` straight into the
    /// buffer, at most `max` in one read (a reader of its own would need a
    /// second copy). Zero bytes read mark the end of the file.
    pub fn read_from(
        &mut self,
        file: &mut impl std::io::Read,
        max: usize,
    ) -> std::io::Result<usize> {
        let room = self.room(max);
        let n = loop {
            match file.read(&mut room[..max]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            self.eof = true;
        }
        // `read` returns at most the slice's length.
        self.end += n.min(max);
        Ok(n)
    }

    /// At least `want` bytes of room after the file bytes, made by first
    /// dropping consumed bytes once they are half the buffer (so each byte
    /// moves at most about once).
    fn room(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0 && self.start >= self.end / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.end.saturating_add(want);
        if self.buf.len() < needed {
            self.buf.resize(needed, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks the end of the file.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Bytes buffered but not yet consumed (useful to size reads).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Reads the header; `Ok(None)` means more bytes are needed.
    pub fn read_header(&mut self) -> Result<Option<&Header>, ContainerError> {
        if self.header.is_none() {
            match parse_header(&self.buf[self.start..self.end])? {
                Parsed::Complete(h, n) => {
                    self.start += n;
                    self.header = Some(h);
                }
                Parsed::Incomplete if self.eof => return Err(ContainerError::TruncatedHeader),
                Parsed::Incomplete => return Ok(None),
            }
        }
        Ok(self.header.as_ref())
    }

    /// The next block, corrupt region, or a request for data. Call
    /// [`read_header`](Self::read_header) first; before the header is read
    /// this only ever asks for data.
    pub fn next_event(&mut self) -> Event<'_> {
        loop {
            return match self.step() {
                Step::Again => continue,
                Step::NeedData => Event::NeedData,
                Step::End => Event::End,
                Step::Block {
                    offset,
                    count,
                    data,
                } => Event::Block {
                    offset,
                    count,
                    data: &self.buf[data],
                },
                Step::Corrupt {
                    offset,
                    bytes,
                    reason,
                } => Event::Corrupt {
                    offset,
                    bytes: &self.buf[bytes],
                    reason,
                },
            };
        }
    }

    /// One parsing step, in terms of buffer ranges so that no borrow of the
    /// buffer outlives it.
    fn step(&mut self) -> Step {
        let Some(header) = &self.header else {
            return Step::NeedData;
        };
        let sync = header.sync;
        let offset = self.base + self.start as u64;
        let avail_len = self.end - self.start;
        if let Some(reason) = self.resyncing {
            return match find_sync(&self.buf[self.start..self.end], &sync) {
                Some(at) => {
                    self.resyncing = None;
                    let damaged = self.start..self.start + at;
                    self.start += at + SYNC_LEN;
                    if damaged.is_empty() {
                        // The marker directly follows damage already reported.
                        Step::Again
                    } else {
                        Step::Corrupt {
                            offset,
                            bytes: damaged,
                            reason,
                        }
                    }
                }
                None if self.eof => {
                    self.resyncing = None;
                    let damaged = self.start..self.end;
                    self.start = self.end;
                    if damaged.is_empty() {
                        Step::End
                    } else {
                        Step::Corrupt {
                            offset,
                            bytes: damaged,
                            reason,
                        }
                    }
                }
                None if avail_len > MAX_CORRUPT_PIECE + SYNC_LEN => {
                    // Report what cannot hold the start of a marker, keep the tail.
                    let damaged = self.start..self.end - (SYNC_LEN - 1);
                    self.start = damaged.end;
                    Step::Corrupt {
                        offset,
                        bytes: damaged,
                        reason,
                    }
                }
                None => Step::NeedData,
            };
        }
        if avail_len == 0 && self.eof {
            return Step::End;
        }
        match parse_block(&self.buf[self.start..self.end], &sync) {
            BlockParse::Block {
                count,
                data,
                consumed,
            } => {
                let begin = self.start;
                self.start += consumed;
                Step::Block {
                    offset,
                    count,
                    data: begin + data.start..begin + data.end,
                }
            }
            BlockParse::Incomplete if !self.eof => Step::NeedData,
            BlockParse::Incomplete => {
                let damaged = self.start..self.end;
                self.start = self.end;
                Step::Corrupt {
                    offset,
                    bytes: damaged,
                    reason: "the file ends inside a block (truncated)",
                }
            }
            BlockParse::Corrupt(reason) => {
                // The block's own extent cannot be trusted: everything up to
                // the next sync marker is reported as damaged.
                self.resyncing = Some(reason);
                Step::Again
            }
        }
    }
}

/// [`BlockScanner::step`]'s result: [`Event`] with ranges instead of slices.
enum Step {
    Again,
    NeedData,
    End,
    Block {
        offset: u64,
        count: u64,
        data: std::ops::Range<usize>,
    },
    Corrupt {
        offset: u64,
        bytes: std::ops::Range<usize>,
        reason: &'static str,
    },
}

/// Writes an Object Container File.
pub struct ContainerWriter<W: Write> {
    out: W,
    codec: Codec,
    sync: [u8; SYNC_LEN],
    block: Vec<u8>,
    compressed: Vec<u8>,
    count: u64,
    block_target: usize,
}

impl<W: Write> ContainerWriter<W> {
    /// Writes the header. `sync` should be random per file; tools that must
    /// produce identical files for identical inputs derive it from a seed.
    pub fn new(mut out: W, schema: &str, codec: Codec, sync: [u8; SYNC_LEN]) -> io::Result<Self> {
        let mut header = Vec::with_capacity(schema.len() + 64);
        header.extend_from_slice(&MAGIC);
        write_long(&mut header, 2);
        write_bytes(&mut header, b"avro.schema");
        write_bytes(&mut header, schema.as_bytes());
        write_bytes(&mut header, b"avro.codec");
        write_bytes(&mut header, codec.name().as_bytes());
        write_long(&mut header, 0);
        header.extend_from_slice(&sync);
        out.write_all(&header)?;
        Ok(ContainerWriter {
            out,
            codec,
            sync,
            block: Vec::with_capacity(64 << 10),
            compressed: Vec::new(),
            count: 0,
            block_target: 64 << 10,
        })
    }

    /// Sets the uncompressed size at which a block is written out.
    pub fn with_block_size(mut self, bytes: usize) -> Self {
        self.block_target = bytes.max(1);
        self
    }

    /// Appends one datum, encoded by `encode` into the block buffer.
    pub fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        encode(&mut self.block);
        self.count += 1;
        if self.block.len() >= self.block_target {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes the pending datums as one block.
    pub fn flush_block(&mut self) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        self.compressed.clear();
        self.codec.compress(&self.block, &mut self.compressed);
        let mut prefix = Vec::with_capacity(20);
        write_long(&mut prefix, self.count as i64);
        write_long(&mut prefix, self.compressed.len() as i64);
        self.out.write_all(&prefix)?;
        self.out.write_all(&self.compressed)?;
        self.out.write_all(&self.sync)?;
        self.block.clear();
        self.count = 0;
        Ok(())
    }

    /// Flushes the last block and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::encode::encode_reading;
    use crate::avro::{DecodePlan, CONTRACT_SCHEMA};
    use crate::reading::Reading;

    const SYNC: [u8; 16] = *b"0123456789abcdef";

    fn reading(i: i32) -> Reading {
        Reading {
            sensor_id: i,
            timestamp_ms: i64::from(i) * 1000,
            temperature: f64::from(i) / 4.0,
            ..Reading::default()
        }
    }

    fn file(codec: Codec, n: i32, block: usize) -> Vec<u8> {
        let mut w = ContainerWriter::new(Vec::new(), CONTRACT_SCHEMA, codec, SYNC)
            .expect("header")
            .with_block_size(block);
        for i in 0..n {
            w.append_with(|buf| encode_reading(&reading(i), buf))
                .expect("append");
        }
        w.finish().expect("finish")
    }

    /// Scans `bytes` fed in `chunk`-sized pieces; returns decoded sensor ids
    /// and the corrupt regions (offset, length).
    fn scan(bytes: &[u8], chunk: usize) -> (Vec<i32>, Vec<(u64, usize)>) {
        scan_with(bytes, chunk, false)
    }

    /// Scans `bytes` given `chunk` at a time, fed or read from a reader.
    fn scan_with(bytes: &[u8], chunk: usize, read: bool) -> (Vec<i32>, Vec<(u64, usize)>) {
        let mut sc = BlockScanner::new();
        let mut fed = 0;
        let mut reader = std::io::Cursor::new(bytes);
        let plan = DecodePlan::contract();
        let mut ids = Vec::new();
        let mut bad = Vec::new();
        let mut scratch = Vec::new();
        loop {
            let header = match sc.read_header() {
                Ok(Some(h)) => Some(h.codec),
                Ok(None) => None,
                Err(e) => panic!("header: {e}"),
            };
            let event = if header.is_some() {
                sc.next_event()
            } else {
                Event::NeedData
            };
            match event {
                Event::Block { count, data, .. } => {
                    let codec = header.expect("header read");
                    let data = codec.decompress(data, &mut scratch).expect("decompresses");
                    let mut input = Input::new(data);
                    let mut r = Reading::default();
                    for _ in 0..count {
                        plan.decode_from(&mut input, &mut r).expect("decodes");
                        ids.push(r.sensor_id);
                    }
                }
                Event::Corrupt { offset, bytes, .. } => bad.push((offset, bytes.len())),
                Event::End => return (ids, bad),
                Event::NeedData if read => {
                    sc.read_from(&mut reader, chunk).expect("reads");
                }
                Event::NeedData => {
                    if fed >= bytes.len() {
                        sc.finish();
                    } else {
                        let end = (fed + chunk).min(bytes.len());
                        sc.feed(&bytes[fed..end]);
                        fed = end;
                    }
                }
            }
        }
    }

    #[test]
    fn round_trips_with_every_codec_and_feed_size() {
        for codec in [Codec::Null, Codec::Deflate, Codec::Snappy] {
            let bytes = file(codec, 1000, 4096);
            for chunk in [1, 7, 4096, 1 << 20] {
                for read in [false, true] {
                    let (ids, bad) = scan_with(&bytes, chunk, read);
                    assert_eq!(
                        ids,
                        (0..1000).collect::<Vec<_>>(),
                        "{codec:?} chunk {chunk} read {read}"
                    );
                    assert!(bad.is_empty());
                }
            }
        }
    }

    #[test]
    fn apache_avro_reads_weir_containers() {
        for codec in [Codec::Null, Codec::Deflate, Codec::Snappy] {
            let bytes = file(codec, 300, 1000);
            let reader = match apache_avro::Reader::new(&bytes[..]) {
                Ok(r) => r,
                // Snappy needs an apache-avro feature Weir does not enable.
                Err(_) if codec == Codec::Snappy => continue,
                Err(e) => panic!("{codec:?}: {e}"),
            };
            assert_eq!(reader.count(), 300, "{codec:?}");
        }
    }

    #[test]
    fn reads_containers_written_by_apache_avro() {
        let schema = apache_avro::Schema::parse_str(CONTRACT_SCHEMA).expect("parses");
        for codec in [
            apache_avro::Codec::Null,
            apache_avro::Codec::Deflate(Default::default()),
        ] {
            let mut w =
                apache_avro::Writer::with_codec(&schema, Vec::new(), codec).expect("writer");
            for i in 0..50 {
                let mut buf = Vec::new();
                encode_reading(&reading(i), &mut buf);
                let value = crate::avro::test_support::from_datum(&schema, &buf);
                w.append_value(value).expect("append");
            }
            let bytes = w.into_inner().expect("bytes");
            let (ids, bad) = scan(&bytes, 100);
            assert_eq!(ids, (0..50).collect::<Vec<_>>());
            assert!(bad.is_empty());
        }
    }

    #[test]
    fn truncated_file_reports_the_tail_and_keeps_whole_blocks() {
        let bytes = file(Codec::Null, 1000, 4096);
        let (all, _) = scan(&bytes, 1 << 20);
        let cut = bytes.len() - 100;
        for read in [false, true] {
            let (ids, bad) = scan_with(&bytes[..cut], 999, read);
            assert!(ids.len() < all.len() && !ids.is_empty());
            assert_eq!(ids[..], all[..ids.len()]);
            assert_eq!(bad.len(), 1);
            let (offset, len) = bad[0];
            assert_eq!(offset as usize + len, cut);
        }
    }

    #[test]
    fn corrupt_block_is_skipped_up_to_the_next_sync_marker() {
        let bytes = file(Codec::Null, 1000, 4096);
        let (all, _) = scan(&bytes, 1 << 20);
        // Damage the sync marker after the first block.
        let first_sync = find_sync(&bytes[20..], &SYNC).expect("header sync") + 20;
        let second = first_sync
            + SYNC_LEN
            + find_sync(&bytes[first_sync + SYNC_LEN..], &SYNC).expect("block sync");
        let mut damaged = bytes.clone();
        damaged[second + 3] ^= 0x55;
        for (chunk, read) in [(13, false), (1 << 20, false), (13, true), (1 << 20, true)] {
            let (ids, bad) = scan_with(&damaged, chunk, read);
            assert_eq!(bad.len(), 1, "chunk {chunk}");
            assert!(ids.len() < all.len());
            // Every id read is a real one, in order, and only the first
            // block's records are missing.
            let missing: Vec<i32> = all.iter().copied().filter(|i| !ids.contains(i)).collect();
            assert_eq!(missing, all[..missing.len()].to_vec());
        }
        // Garbage in the middle of a block's count/size is also skipped.
        let mut garbage = bytes.clone();
        garbage[second + SYNC_LEN] = 0x01; // count becomes negative (-1)
        let (ids, bad) = scan(&garbage, 64);
        assert_eq!(bad.len(), 1);
        assert!(ids.len() < all.len());
    }

    #[test]
    fn unreadable_headers_are_errors() {
        let mut sc = BlockScanner::new();
        sc.feed(b"PK\x03\x04 not avro");
        assert_eq!(sc.read_header().unwrap_err(), ContainerError::BadMagic);
        let bytes = file(Codec::Null, 1, 10);
        let mut sc = BlockScanner::new();
        sc.feed(&bytes[..30]);
        assert_eq!(sc.read_header(), Ok(None));
        sc.finish();
        assert_eq!(
            sc.read_header().unwrap_err(),
            ContainerError::TruncatedHeader
        );
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        write_long(&mut header, 1);
        write_bytes(&mut header, b"avro.codec");
        write_bytes(&mut header, b"zstandard");
        write_long(&mut header, 0);
        header.extend_from_slice(&SYNC);
        let mut sc = BlockScanner::new();
        sc.feed(&header);
        assert_eq!(
            sc.read_header().unwrap_err(),
            ContainerError::UnsupportedCodec("zstandard".into())
        );
    }
}
