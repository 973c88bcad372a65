//! Avro Object Container Files as partitions.
//!
//! One file is one partition, read front to back. A record's position is its
//! ordinal in the file. Damage does not stop the read: a corrupt or truncated
//! block becomes a dead letter and reading resumes at the next sync marker;
//! a datum that does not decode makes the rest of its block a dead letter
//! (datums are not framed, so nothing after it in that block can be found).

use std::path::{Path, PathBuf};

use tokio::task::JoinHandle;
use weir_common::avro::container::{BlockScanner, Event};
use weir_common::avro::primitive::Input;
use weir_common::avro::DecodePlan;
use weir_common::input::{check_avro_file, InputError};
use weir_common::position::Position;
use weir_common::reading::Reading;

use super::{PartitionReader, Pulled, SourceError};
use crate::emitter::Emitter;

const READ_CHUNK: usize = 1 << 20;

pub struct FileReader {
    path: PathBuf,
    scan: Scan,
    plan: DecodePlan,
    /// Ordinal of the next record in the file.
    ordinal: u64,
    scratch: Vec<u8>,
}

/// The open file and the scanner over it. They travel together to a
/// blocking thread for each read, which puts the file's bytes straight into
/// the scanner's buffer: `tokio::fs` would read into a buffer of its own and
/// copy, and the scanner would copy again (two copies of every byte, ~5% of
/// the job's CPU).
struct Opened {
    file: std::fs::File,
    scanner: BlockScanner,
}

enum Scan {
    Here(Box<Opened>),
    /// On a blocking thread, reading the next bytes. A pull dropped while it
    /// waits leaves the read here for the next pull: nothing is lost.
    Reading(JoinHandle<(Box<Opened>, std::io::Result<usize>)>),
    /// The reading thread failed (panicked or was never run).
    Lost,
}

impl Scan {
    /// The scanner, after any read in flight has finished.
    async fn ready(&mut self, path: &Path) -> Result<&mut Opened, SourceError> {
        let io = |source| SourceError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Scan::Reading(handle) = self {
            match handle.await {
                Ok((opened, result)) => {
                    *self = Scan::Here(opened);
                    result.map_err(io)?;
                }
                Err(e) => {
                    *self = Scan::Lost;
                    return Err(io(std::io::Error::other(format!(
                        "the thread reading the file failed: {e}"
                    ))));
                }
            }
        }
        match self {
            Scan::Here(opened) => Ok(opened),
            _ => Err(io(std::io::Error::other(
                "the file's reader was lost when its thread failed",
            ))),
        }
    }

    /// Starts reading the next bytes (at the end of the file the scanner
    /// learns that it ended).
    fn read_more(&mut self) {
        *self = match std::mem::replace(self, Scan::Lost) {
            Scan::Here(mut opened) => Scan::Reading(tokio::task::spawn_blocking(move || {
                let Opened { file, scanner } = &mut *opened;
                let result = scanner.read_from(file, READ_CHUNK);
                (opened, result)
            })),
            other => other,
        };
    }
}

impl FileReader {
    /// Opens the file and checks its header and writer schema, so that a
    /// wrong input fails the job at start with a clear error instead of
    /// turning every record into a dead letter.
    pub async fn open(path: &Path) -> Result<Self, SourceError> {
        let owned = path.to_owned();
        let (plan, file) = tokio::task::spawn_blocking(move || {
            let plan = check_avro_file(&owned)?;
            let file = std::fs::File::open(&owned).map_err(|source| SourceError::Io {
                path: owned.display().to_string(),
                source,
            })?;
            Ok::<_, SourceError>((plan, file))
        })
        .await
        .map_err(|e| SourceError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })??;
        Ok(FileReader {
            path: path.to_owned(),
            scan: Scan::Here(Box::new(Opened {
                file,
                scanner: BlockScanner::new(),
            })),
            plan,
            ordinal: 0,
            scratch: Vec::new(),
        })
    }
}

impl PartitionReader for FileReader {
    async fn pull(&mut self, out: &mut Emitter) -> Result<Pulled, SourceError> {
        loop {
            let scanner = &mut self.scan.ready(&self.path).await?.scanner;
            let codec = match scanner.read_header() {
                Ok(Some(h)) => h.codec,
                Ok(None) => {
                    self.scan.read_more();
                    continue;
                }
                Err(source) => {
                    return Err(SourceError::Input(InputError::Container {
                        path: self.path.display().to_string(),
                        source,
                    }))
                }
            };
            match scanner.next_event() {
                Event::Block {
                    offset,
                    count,
                    data,
                } => {
                    let first = self.ordinal;
                    // A block's count is input: no arithmetic on it may
                    // overflow.
                    self.ordinal = self.ordinal.saturating_add(count);
                    let data = match codec.decompress(data, &mut self.scratch) {
                        Ok(d) => d,
                        Err(reason) => {
                            let restored = match count.checked_sub(1) {
                                Some(last) => {
                                    !out.consumed(Position::Offset(first.saturating_add(last)))
                                }
                                None => out.region_restored(Position::Offset(first)),
                            };
                            if restored {
                                // In the restored checkpoint: written before.
                                return Ok(Pulled::Progress);
                            }
                            out.dead_letter(
                                format!(
                                    "records {first}..{} (block at byte {offset})",
                                    first.saturating_add(count)
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
                    if out.region_restored(Position::Offset(self.ordinal)) {
                        // In the restored checkpoint: written before.
                        return Ok(Pulled::Progress);
                    }
                    out.dead_letter(
                        format!(
                            "bytes {offset}..{} (after record {})",
                            offset.saturating_add(bytes.len() as u64),
                            self.ordinal
                        ),
                        0,
                        "corrupt-block",
                        reason.to_string(),
                        bytes,
                    );
                    return Ok(Pulled::Progress);
                }
                Event::NeedData => self.scan.read_more(),
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
            Ok(()) => out.reading(&reading, Position::Offset(first.saturating_add(i))),
            Err(e) => {
                // The rest of the block goes with it: its position is the
                // block's last record.
                let last = first.saturating_add(count.saturating_sub(1));
                if !out.consumed(Position::Offset(last)) {
                    return; // in the restored checkpoint: written before
                }
                out.dead_letter(
                    format!(
                        "records {}..{} (block at byte {block_offset})",
                        first.saturating_add(i),
                        first.saturating_add(count)
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
        // Trailing bytes go with the block's last record (in the restored
        // checkpoint if it is). A block of no records has no position: its
        // bytes are kept whenever they are read.
        if let Some(last) = count.checked_sub(1) {
            if !out.consumed(Position::Offset(first.saturating_add(last))) {
                return;
            }
        }
        let place = match count.checked_sub(1) {
            Some(last) => format!("after record {}", first.saturating_add(last)),
            None => "in a block of no records".to_owned(),
        };
        out.dead_letter(
            format!("{place} (block at byte {block_offset})"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::{EmitterConfig, Routing};

    fn emitter() -> Emitter {
        Emitter::new(
            EmitterConfig {
                input: 0,
                source_name: "f.avro".into(),
                batch_size: 16,
                out_of_orderness_ms: 5_000,
                window_ms: 60_000,
                max_dead_letter_payload: 1024,
                pre_aggregate: true,
            },
            Routing::single(128),
        )
    }

    /// After a restore, undecodable records the checkpoint covers are not
    /// dead-lettered again; those after it are, once.
    #[test]
    fn dead_letters_in_the_restored_checkpoint_are_not_written_again() {
        // Records 10..13 of a block, none of them a datum.
        let garbage = [0xffu8; 11];
        for (through, written) in [(13u64, 0usize), (9, 1)] {
            let mut out = emitter();
            out.restore_after(Position::Offset(through), i64::MIN);
            // Record 9, read again first (the checkpoint's own position is
            // seen, as in a real restore).
            assert!(!out.consumed(Position::Offset(9)));
            decode_block(&DecodePlan::contract(), &garbage, 4, 10, 0, &mut out);
            let dead: Vec<_> = out.take_dead_letters().collect();
            assert_eq!(
                dead.len(),
                written,
                "checkpoint through {through}: {dead:?}"
            );
        }
        let mut out = emitter();
        out.restore_after(Position::Offset(13), i64::MIN);
        assert!(out.region_restored(Position::Offset(13)));
        assert!(!out.region_restored(Position::Offset(14)));
    }

    #[test]
    fn leftover_bytes_in_a_block_of_no_records_are_a_dead_letter() {
        let mut out = emitter();
        decode_block(&DecodePlan::contract(), &[1, 2, 3], 0, 0, 4096, &mut out);
        let dead: Vec<_> = out.take_dead_letters().collect();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].kind, "trailing-bytes");
        assert_eq!(
            dead[0].position,
            "in a block of no records (block at byte 4096)"
        );
        assert_eq!(out.emitted(), 0);
    }

    #[test]
    fn block_counts_near_the_top_of_the_range_do_not_overflow() {
        let mut out = emitter();
        // Not a datum at all: the whole block is one dead letter.
        decode_block(
            &DecodePlan::contract(),
            &[0xff],
            u64::MAX,
            u64::MAX - 1,
            0,
            &mut out,
        );
        let dead: Vec<_> = out.take_dead_letters().collect();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].records, u64::MAX);
    }
}
