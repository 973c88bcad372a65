//! Pulsar's binary framing
//! (<https://pulsar.apache.org/docs/next/developing-binary-protocol/>).
//!
//! A frame is
//!
//! ```text
//! [total_size u32][command_size u32][BaseCommand]
//! ```
//!
//! and, when the command carries a message,
//!
//! ```text
//!   [0x0e02 u16][size u32][BrokerEntryMetadata]      (optional)
//!   [0x0e01 u16][checksum u32][metadata_size u32][MessageMetadata][payload]
//! ```
//!
//! all big-endian; `total_size` counts everything after itself, and the
//! checksum is the CRC-32C of everything after the checksum field.
//!
//! [`FrameDecoder`] reads frames from a connection's read buffer;
//! [`encode_command`] writes the command-only frames a consumer sends.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;

use crate::proto::{BaseCommand, BrokerEntryMetadata, MessageMetadata};

pub use decode::FrameDecoder;
pub use encode::{encode_command, EncodeError};

/// Pulsar's default maximum message size (`maxMessageSize`, 5 MiB); a broker
/// announces its own in CONNECTED.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 5 * 1024 * 1024;

/// Room for the command and metadata on top of a maximal message
/// (`Commands.MESSAGE_SIZE_FRAME_PADDING` in the Java client, which sizes its
/// frame decoder the same way).
pub const FRAME_PADDING: usize = 10 * 1024;

/// The largest frame [`FrameDecoder::default`] accepts.
pub const DEFAULT_MAX_FRAME_SIZE: usize = DEFAULT_MAX_MESSAGE_SIZE + FRAME_PADDING;

/// Marks the checksummed payload section.
pub(crate) const MAGIC_CRC32C: u16 = 0x0e01;
/// Marks the broker entry metadata a broker may put before it.
pub(crate) const MAGIC_BROKER_ENTRY_METADATA: u16 = 0x0e02;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub command: BaseCommand,
    /// Present for MESSAGE frames (the only incoming frames with a payload).
    pub payload: Option<Payload>,
}

impl Frame {
    /// The message this frame carries, if it is a MESSAGE.
    pub fn message_ref(&self) -> Option<MessageRef> {
        MessageRef::of(&self.command)
    }
}

/// A message's metadata and its (possibly compressed, possibly batched)
/// payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    pub metadata: MessageMetadata,
    /// Only when the consumer announced support for it in CONNECT.
    pub broker_entry_metadata: Option<BrokerEntryMetadata>,
    /// The payload bytes: a view of the read buffer the frame arrived in
    /// (no copy). Its CRC-32C has been verified.
    pub data: Bytes,
}

/// Which message a frame carried, so a per-frame error can be acted on
/// (negatively acknowledged, dead-lettered) without the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRef {
    pub consumer_id: u64,
    pub ledger_id: u64,
    pub entry_id: u64,
    pub partition: Option<i32>,
}

impl MessageRef {
    pub(crate) fn of(command: &BaseCommand) -> Option<MessageRef> {
        let message = command.message.as_ref()?;
        Some(MessageRef {
            consumer_id: message.consumer_id,
            ledger_id: message.message_id.ledger_id,
            entry_id: message.message_id.entry_id,
            partition: message.message_id.partition,
        })
    }
}

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {}:{}", self.ledger_id, self.entry_id)?;
        if let Some(partition) = self.partition.filter(|p| *p >= 0) {
            write!(f, ":{partition}")?;
        }
        write!(f, " (consumer {})", self.consumer_id)
    }
}

/// Names the frame an error is about.
fn describe(message: &Option<MessageRef>) -> String {
    match message {
        Some(m) => m.to_string(),
        None => "a frame that is not a MESSAGE".to_owned(),
    }
}

/// Why a frame could not be decoded.
///
/// Two kinds: the byte stream is out of step (a length that cannot be
/// right, a command that does not decode) and the connection must be
/// dropped ([`FrameError::is_connection_fatal`]); or one frame is bad (its
/// checksum, its payload section) and was consumed from the buffer: the next
/// [`FrameDecoder::decode`] carries on with the next frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "Pulsar frame of {size} bytes is larger than the maximum of {max} \
         (a broker allowing larger messages, or a corrupted size)"
    )]
    TooLarge { size: u64, max: usize },
    #[error(
        "malformed Pulsar frame: total size {total_size} cannot hold its command size \
         (the connection is out of step)"
    )]
    TooShort { total_size: u32 },
    #[error(
        "malformed Pulsar frame: total size {total_size} cannot hold a command of \
         {command_size} bytes (the connection is out of step)"
    )]
    BadLength { total_size: u32, command_size: u32 },
    #[error("malformed Pulsar frame: the command does not decode: {0}")]
    Command(#[source] prost::DecodeError),
    #[error(
        "checksum mismatch in {}: the frame says {expected:#010x}, its bytes give \
         {computed:#010x}",
        describe(message)
    )]
    Checksum {
        message: Option<MessageRef>,
        expected: u32,
        computed: u32,
    },
    #[error("bad payload in {}: {fault}", describe(message))]
    Payload {
        message: Option<MessageRef>,
        fault: PayloadFault,
    },
}

/// What is wrong with a frame's payload section.
#[derive(Debug, thiserror::Error)]
pub enum PayloadFault {
    #[error("the payload section is truncated")]
    Truncated,
    #[error(
        "no checksum (magic {found:#06x}, expected 0x0e01); payloads without one \
         (producers before protocol v6) are refused, so that a corrupted magic cannot \
         skip verification"
    )]
    NoChecksum { found: u16 },
    #[error("broker entry metadata does not decode: {0}")]
    BrokerEntryMetadata(#[source] prost::DecodeError),
    #[error("metadata of {size} bytes but only {left} left in the frame")]
    MetadataSize { size: u32, left: usize },
    #[error("metadata does not decode: {0}")]
    Metadata(#[source] prost::DecodeError),
}

impl FrameError {
    /// The connection's byte stream can no longer be trusted: drop the
    /// connection and its read buffer (the broker redelivers what was not
    /// acknowledged).
    pub fn is_connection_fatal(&self) -> bool {
        match self {
            FrameError::TooLarge { .. }
            | FrameError::TooShort { .. }
            | FrameError::BadLength { .. }
            | FrameError::Command(_) => true,
            FrameError::Checksum { .. } | FrameError::Payload { .. } => false,
        }
    }

    /// Whether receiving the same bytes again (reconnecting, or asking for
    /// redelivery) may succeed: yes for corruption in transit, no when the
    /// checksum vouches that the producer wrote them so, or when the frame
    /// is larger than this consumer accepts.
    pub fn is_retryable(&self) -> bool {
        match self {
            FrameError::TooLarge { .. } => false,
            FrameError::TooShort { .. } | FrameError::BadLength { .. } | FrameError::Command(_) => {
                true
            }
            FrameError::Checksum { .. } => true,
            FrameError::Payload { fault, .. } => match fault {
                // Outside the checksummed bytes: could be corruption.
                PayloadFault::Truncated
                | PayloadFault::NoChecksum { .. }
                | PayloadFault::BrokerEntryMetadata(_) => true,
                // Inside them: the producer wrote this.
                PayloadFault::MetadataSize { .. } | PayloadFault::Metadata(_) => false,
            },
        }
    }

    /// The message of a per-frame error.
    pub fn message(&self) -> Option<MessageRef> {
        match self {
            FrameError::Checksum { message, .. } | FrameError::Payload { message, .. } => *message,
            _ => None,
        }
    }
}
