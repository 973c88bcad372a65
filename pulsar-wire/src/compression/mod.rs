//! Payload decompression, matching how Pulsar's clients compress.
//!
//! | `compression` | what the payload is                          | written by |
//! |---------------|----------------------------------------------|------------|
//! | LZ4           | one raw LZ4 block (no size prefix)           | all clients |
//! | ZLIB          | a zlib stream (RFC 1950, not raw deflate)    | all clients |
//! | ZSTD          | zstd frame(s), with or without content size  | Java (with), `pulsar` crate (without) |
//! | SNAPPY        | a raw snappy block                           | Java, C++/Python |
//! | SNAPPY        | the snappy *framed* format                   | the `pulsar` crate |
//!
//! The two snappy formats are told apart by the framed format's stream
//! identifier, which no valid raw block can start with (its bytes would be
//! a copy from before the start of the output). Every client sets
//! `uncompressed_size`: it is checked against a maximum before anything is
//! allocated, and the output must have exactly that size (as the Java client
//! checks).

use std::error::Error as StdError;
use std::io::Read;

use crate::proto::{CompressionType, MessageMetadata};
use crate::read::to_usize;

#[cfg(test)]
mod tests;

/// The largest decompressed payload [`Decompressor::default`] accepts.
/// Producers limit the *compressed* size to the broker's maximum message
/// size (5 MiB by default), so a well-compressed batch may legitimately be
/// much larger; 64 MiB leaves room for that while a hostile size cannot
/// make a consumer allocate gigabytes.
pub const DEFAULT_MAX_UNCOMPRESSED_SIZE: usize = 64 * 1024 * 1024;

/// How the snappy framed format starts (chunk type 0xff, length 6,
/// "sNaPpY").
const SNAPPY_STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// Why a payload could not be decompressed. Never retryable: the payload's
/// checksum was verified, so the producer wrote it so.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("unknown compression type {0}")]
    UnknownCodec(i32),
    #[error("{codec} payload of {size} bytes uncompressed, more than the maximum of {max}")]
    TooLarge {
        codec: &'static str,
        size: u64,
        max: usize,
    },
    #[error("{codec} payload without the uncompressed_size it needs")]
    MissingSize { codec: &'static str },
    #[error("{codec} payload does not decompress: {source}")]
    Corrupt {
        codec: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("{codec} payload decompresses to {actual} bytes, its metadata says {declared}")]
    SizeMismatch {
        codec: &'static str,
        declared: u32,
        actual: usize,
    },
}

impl DecompressError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Decompresses payloads into a buffer it keeps: cleared for each payload,
/// its capacity kept, so a consumer decompresses without allocating once the
/// buffer has grown to its batches' size. The zstd and zlib contexts are
/// kept too.
pub struct Decompressor {
    buffer: Vec<u8>,
    max_uncompressed_size: usize,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    zlib: Option<flate2::Decompress>,
}

impl Default for Decompressor {
    fn default() -> Self {
        Decompressor::new(DEFAULT_MAX_UNCOMPRESSED_SIZE)
    }
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("capacity", &self.buffer.capacity())
            .field("max_uncompressed_size", &self.max_uncompressed_size)
            .finish_non_exhaustive()
    }
}

impl Decompressor {
    pub fn new(max_uncompressed_size: usize) -> Self {
        Decompressor {
            buffer: Vec::new(),
            max_uncompressed_size,
            zstd: None,
            zlib: None,
        }
    }

    pub fn max_uncompressed_size(&self) -> usize {
        self.max_uncompressed_size
    }

    /// The uncompressed payload: `data` itself when `metadata` says it is
    /// not compressed (no copy), else the decompressor's buffer.
    pub fn decompress<'a>(
        &'a mut self,
        metadata: &MessageMetadata,
        data: &'a [u8],
    ) -> Result<&'a [u8], DecompressError> {
        let codec = match metadata.compression {
            None => CompressionType::None,
            Some(value) => CompressionType::try_from(value)
                .map_err(|_| DecompressError::UnknownCodec(value))?,
        };
        if codec == CompressionType::None {
            return Ok(data);
        }
        let name = codec.as_str_name();
        let max = self.max_uncompressed_size;
        let declared = metadata.uncompressed_size;
        if let Some(size) = declared.filter(|n| to_usize(*n) > max) {
            return Err(DecompressError::TooLarge {
                codec: name,
                size: size.into(),
                max,
            });
        }
        self.buffer.clear();
        let corrupt = |source: Box<dyn StdError + Send + Sync>| DecompressError::Corrupt {
            codec: name,
            source,
        };
        match codec {
            CompressionType::None => {}
            CompressionType::Lz4 => {
                let size = declared.ok_or(DecompressError::MissingSize { codec: name })?;
                lz4(data, size, &mut self.buffer).map_err(|e| corrupt(e.into()))?;
            }
            CompressionType::Zlib => {
                zlib(data, declared, max, &mut self.zlib, &mut self.buffer).map_err(corrupt)?
            }
            CompressionType::Zstd => zstd(data, declared, max, &mut self.zstd, &mut self.buffer)
                .map_err(|e| corrupt(e.into()))?,
            CompressionType::Snappy => {
                // The `pulsar` crate's framed encoder writes nothing at all
                // for an empty payload (a raw block is never empty).
                if data.is_empty() || data.starts_with(SNAPPY_STREAM_IDENTIFIER) {
                    let limit = declared.map_or(max, to_usize);
                    read_bounded(snap::read::FrameDecoder::new(data), limit, &mut self.buffer)
                        .map_err(|e| corrupt(e.into()))?;
                } else {
                    let size = snap::raw::decompress_len(data).map_err(|e| corrupt(e.into()))?;
                    if size > max {
                        return Err(DecompressError::TooLarge {
                            codec: name,
                            size: u64::try_from(size).unwrap_or(u64::MAX),
                            max,
                        });
                    }
                    self.buffer.resize(size, 0);
                    let written = snap::raw::Decoder::new()
                        .decompress(data, &mut self.buffer)
                        .map_err(|e| corrupt(e.into()))?;
                    self.buffer.truncate(written);
                }
            }
        }
        let actual = self.buffer.len();
        match declared {
            Some(declared) if actual != to_usize(declared) => Err(DecompressError::SizeMismatch {
                codec: name,
                declared,
                actual,
            }),
            None if actual > max => Err(DecompressError::TooLarge {
                codec: name,
                size: u64::try_from(actual).unwrap_or(u64::MAX),
                max,
            }),
            _ => Ok(self.buffer.as_slice()),
        }
    }
}

/// A raw LZ4 block of `size` bytes uncompressed.
fn lz4(data: &[u8], size: u32, out: &mut Vec<u8>) -> std::io::Result<()> {
    let signed = i32::try_from(size).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "size beyond LZ4's limit")
    })?;
    out.resize(to_usize(size), 0);
    let written = lz4::block::decompress_to_buffer(data, Some(signed), out)?;
    out.truncate(written);
    Ok(())
}

/// A zlib stream: into exactly the declared room when there is a size (the
/// inflater cannot write past it), else read up to `max` (+1, to notice
/// more).
fn zlib(
    data: &[u8],
    declared: Option<u32>,
    max: usize,
    context: &mut Option<flate2::Decompress>,
    out: &mut Vec<u8>,
) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let Some(size) = declared else {
        read_bounded(flate2::read::ZlibDecoder::new(data), max, out)?;
        return Ok(());
    };
    out.reserve_exact(to_usize(size));
    let inflater = context.get_or_insert_with(|| flate2::Decompress::new(true));
    inflater.reset(true);
    let status = inflater.decompress_vec(data, out, flate2::FlushDecompress::Finish)?;
    if status != flate2::Status::StreamEnd {
        return Err("the zlib stream is truncated or longer than the declared size".into());
    }
    Ok(())
}

/// Zstd frames: into the declared room when there is a size (the
/// decompressor fails rather than write past it), else streamed up to `max`.
fn zstd(
    data: &[u8],
    declared: Option<u32>,
    max: usize,
    context: &mut Option<zstd::bulk::Decompressor<'static>>,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let Some(size) = declared else {
        return read_bounded(zstd::stream::read::Decoder::with_buffer(data)?, max, out);
    };
    out.reserve_exact(to_usize(size));
    let decompressor = match context.take() {
        Some(d) => d,
        None => zstd::bulk::Decompressor::new()?,
    };
    let decompressor = context.insert(decompressor);
    decompressor.decompress_to_buffer(data, out)?;
    Ok(())
}

/// Reads `reader` into `out`, at most `limit` + 1 bytes: one more than
/// allowed is enough for the caller to tell the output is too large.
fn read_bounded(reader: impl Read, limit: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(limit).read_to_end(out)?;
    Ok(())
}
