//! Avro Object Container Files as partitions.
//!
//! One file is one partition, read front to back. A record's position is its
//! ordinal in the file. Damage does not stop the read: a corrupt or truncated
//! block becomes a dead letter and reading resumes at the next sync marker;
//! a datum that does not decode makes the rest of its block a dead letter
//! (datums are not framed, so nothing after it in that block can be found).

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use weir_common::avro::container::{BlockScanner, Event, Header};
use weir_common::avro::primitive::Input;
use weir_common::avro::DecodePlan;
use weir_common::position::Position;
use weir_common::reading::Reading;

use super::{PartitionReader, Pulled, SourceError};
use crate::emitter::Emitter;

const READ_CHUNK: usize = 1 << 20;

pub struct FileReader {
    path: PathBuf,
    file: tokio::fs::File,
    scanner: BlockScanner,
    header: Header,
    plan: DecodePlan,
    /// Ordinal of the next record in the file.
    ordinal: u64,
    read_buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl FileReader {
    /// Opens the file and checks its header and writer schema, so that a
    /// wrong input fails the job at start with a clear error instead of
    /// turning every record into a dead letter.
    pub async fn open(path: &Path) -> Result<Self, SourceError> {
        let name = path.display().to_string();
        let io = |source| SourceError::Io {
            path: name.clone(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut scanner = BlockScanner::new();
        let mut read_buf = vec![0u8; 64 << 10];
        let header = loop {
            match scanner.read_header() {
                Ok(Some(h)) => break h.clone(),
                Ok(None) => {
                    let n = file.read(&mut read_buf).await.map_err(io)?;
                    if n == 0 {
                        scanner.finish();
                    } else {
                        scanner.feed(&read_buf[..n]);
                    }
                }
                Err(source) => {
                    return Err(SourceError::Container { path: name, source });
                }
            }
        };
        let plan = DecodePlan::from_json(&header.schema).map_err(|source| SourceError::Schema {
            path: name.clone(),
            source,
        })?;
        read_buf.resize(READ_CHUNK, 0);
        Ok(FileReader {
            path: path.to_owned(),
            file,
            scanner,
            header,
            plan,
            ordinal: 0,
            read_buf,
            scratch: Vec::new(),
        })
    }

    pub fn writer_schema(&self) -> &str {
        self.plan.writer_schema()
    }
}

impl PartitionReader for FileReader {
    async fn pull(&mut self, out: &mut Emitter) -> Result<Pulled, SourceError> {
        loop {
            match self.scanner.next_event() {
                Event::Block {
                    offset,
                    count,
                    data,
                } => {
                    let first = self.ordinal;
                    self.ordinal += count;
                    let data = match self.header.codec.decompress(data, &mut self.scratch) {
                        Ok(d) => d,
                        Err(reason) => {
                            out.dead_letter(
                                format!(
                                    "records {first}..{} (block at byte {offset})",
                                    first + count
                                ),
                                count,
                                "corrupt-block",
                                reason.to_string(),
                                data,
                            );
                            return Ok(Pulled::Progress);
                        }
                    };
                    decode_block(&self.plan, data, count, first, offset, out);
                    return Ok(Pulled::Progress);
                }
                Event::Corrupt {
                    offset,
                    bytes,
                    reason,
                } => {
                    out.dead_letter(
                        format!(
                            "bytes {offset}..{} (after record {})",
                            offset + bytes.len() as u64,
                            self.ordinal
                        ),
                        0,
                        "corrupt-block",
                        reason.to_string(),
                        bytes,
                    );
                    return Ok(Pulled::Progress);
                }
                Event::NeedData => {
                    let n = self.file.read(&mut self.read_buf).await.map_err(|source| {
                        SourceError::Io {
                            path: self.path.display().to_string(),
                            source,
                        }
                    })?;
                    if n == 0 {
                        self.scanner.finish();
                    } else {
                        self.scanner.feed(&self.read_buf[..n]);
                    }
                }
                Event::End => return Ok(Pulled::End),
            }
        }
    }
}

/// Decodes the `count` datums of one block; the first that fails takes the
/// rest of the block with it into one dead letter.
fn decode_block(
    plan: &DecodePlan,
    data: &[u8],
    count: u64,
    first: u64,
    block_offset: u64,
    out: &mut Emitter,
) {
    let mut input = Input::new(data);
    let mut reading = Reading::default();
    for i in 0..count {
        let start = input.position();
        match plan.decode_from(&mut input, &mut reading) {
            Ok(()) => out.reading(std::mem::take(&mut reading), Position::Offset(first + i)),
            Err(e) => {
                out.dead_letter(
                    format!(
                        "records {}..{} (block at byte {block_offset})",
                        first + i,
                        first + count
                    ),
                    count - i,
                    e.kind_name(),
                    e.to_string(),
                    &data[start..],
                );
                return;
            }
        }
    }
    if !input.is_empty() {
        out.dead_letter(
            format!("after record {} (block at byte {block_offset})", first + count - 1),
            0,
            "trailing-bytes",
            format!(
                "{} bytes left in the block after its {count} records (written with another schema?)",
                input.remaining().len()
            ),
            input.remaining(),
        );
    }
}
