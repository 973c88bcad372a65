//! Frames out of a connection's read buffer.

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use super::{
    Frame, FrameError, MessageRef, Payload, PayloadFault, DEFAULT_MAX_FRAME_SIZE, FRAME_PADDING,
    MAGIC_BROKER_ENTRY_METADATA, MAGIC_CRC32C,
};
use crate::crc::crc32c;
use crate::proto::{BaseCommand, BrokerEntryMetadata, MessageMetadata};
use crate::read::{read_u16, read_u32, slice_at, to_usize};

/// Reads frames from a connection's read buffer.
///
/// It holds no state between frames (only its limit): a frame is decoded
/// once it is wholly in the buffer, and until then the buffer is left alone,
/// so the caller simply reads more from the socket into the same buffer and
/// calls [`FrameDecoder::decode`] again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames larger than `max_frame_size` bytes (all
    /// of the frame, its size field included).
    pub fn new(max_frame_size: usize) -> Self {
        FrameDecoder { max_frame_size }
    }

    /// A decoder sized for the maximum message size a broker announced in
    /// CONNECTED, plus the frame padding the Java client allows.
    pub fn for_max_message_size(max_message_size: usize) -> Self {
        FrameDecoder::new(max_message_size.saturating_add(FRAME_PADDING))
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// The next frame, or `Ok(None)` until all of it is in `buf`.
    ///
    /// A decoded frame is split off the front of `buf`; its payload shares
    /// the buffer's memory. On a per-frame error (see
    /// [`FrameError::is_connection_fatal`]) the frame is consumed too, and
    /// the next call decodes the frame after it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(frame_len) = self.frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < frame_len {
            // Room for the rest now: one allocation, not one per socket read.
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(frame_len).freeze();
        parse(frame).map(Some)
    }

    /// The length of the frame at the front of `buf` (size field included)
    /// once its header is there, checked as far as the header allows: a bad
    /// length is found before the frame is waited for.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(total_size) = read_u32(buf, 0) else {
            return Ok(None);
        };
        let size = u64::from(total_size) + 4;
        let frame_len = usize::try_from(size)
            .ok()
            .filter(|len| *len <= self.max_frame_size)
            .ok_or(FrameError::TooLarge {
                size,
                max: self.max_frame_size,
            })?;
        let Some(room) = total_size.checked_sub(4) else {
            return Err(FrameError::TooShort { total_size });
        };
        if let Some(command_size) = read_u32(buf, 4) {
            if command_size > room {
                return Err(FrameError::BadLength {
                    total_size,
                    command_size,
                });
            }
        }
        Ok(Some(frame_len))
    }
}

/// Decodes a whole frame, whose command size the header check vouched for.
fn parse(frame: Bytes) -> Result<Frame, FrameError> {
    let command_size = read_u32(&frame, 4).map(to_usize).unwrap_or(usize::MAX);
    let command_bytes = slice_at(&frame, 8, command_size);
    let Some(command_bytes) = command_bytes else {
        // Unreachable after `frame_len`'s check; kept as an error, not a
        // panic, should the two ever disagree.
        return Err(FrameError::BadLength {
            total_size: read_u32(&frame, 0).unwrap_or(0),
            command_size: read_u32(&frame, 4).unwrap_or(0),
        });
    };
    let command = BaseCommand::decode(command_bytes).map_err(FrameError::Command)?;
    let rest = 8 + command_bytes.len();
    if rest == frame.len() {
        return Ok(Frame {
            command,
            payload: None,
        });
    }
    let message = MessageRef::of(&command);
    let payload = parse_payload(&frame, rest, message)?;
    Ok(Frame {
        command,
        payload: Some(payload),
    })
}

/// Decodes the payload section of `frame`, from byte `at` to the end.
fn parse_payload(
    frame: &Bytes,
    mut at: usize,
    message: Option<MessageRef>,
) -> Result<Payload, FrameError> {
    let fault = |fault| FrameError::Payload { message, fault };

    let mut magic = read_u16(frame, at).ok_or_else(|| fault(PayloadFault::Truncated))?;
    let mut broker_entry_metadata = None;
    if magic == MAGIC_BROKER_ENTRY_METADATA {
        let size = read_u32(frame, at + 2).ok_or_else(|| fault(PayloadFault::Truncated))?;
        let start = at + 6;
        let bytes =
            slice_at(frame, start, to_usize(size)).ok_or_else(|| fault(PayloadFault::Truncated))?;
        let decoded = BrokerEntryMetadata::decode(bytes)
            .map_err(|e| fault(PayloadFault::BrokerEntryMetadata(e)))?;
        broker_entry_metadata = Some(decoded);
        at = start + bytes.len();
        magic = read_u16(frame, at).ok_or_else(|| fault(PayloadFault::Truncated))?;
    }
    if magic != MAGIC_CRC32C {
        return Err(fault(PayloadFault::NoChecksum { found: magic }));
    }

    let expected = read_u32(frame, at + 2).ok_or_else(|| fault(PayloadFault::Truncated))?;
    let checked = at + 6;
    // In place, over the received bytes: no copy to checksum.
    let computed = crc32c(&frame[checked..]);
    if computed != expected {
        return Err(FrameError::Checksum {
            message,
            expected,
            computed,
        });
    }

    let metadata_size = read_u32(frame, checked).ok_or_else(|| fault(PayloadFault::Truncated))?;
    let start = checked + 4;
    let left = frame.len() - start;
    let metadata_bytes = slice_at(frame, start, to_usize(metadata_size)).ok_or_else(|| {
        fault(PayloadFault::MetadataSize {
            size: metadata_size,
            left,
        })
    })?;
    let metadata =
        MessageMetadata::decode(metadata_bytes).map_err(|e| fault(PayloadFault::Metadata(e)))?;
    let data = frame.slice(start + metadata_bytes.len()..);
    Ok(Payload {
        metadata,
        broker_entry_metadata,
        data,
    })
}
