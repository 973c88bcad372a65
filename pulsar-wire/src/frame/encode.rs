//! The command-only frames a consumer sends.

use bytes::{BufMut, BytesMut};
use prost::Message as _;

use crate::proto::BaseCommand;

/// Why a command could not be framed. Not retryable: the same command fails
/// the same way.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("Pulsar command of {size} bytes does not fit a frame's 32-bit size")]
    TooLarge { size: usize },
    #[error("Pulsar command does not encode: {0}")]
    Prost(#[from] prost::EncodeError),
}

/// Appends `[total_size][command_size][command]` to `buf` (CONNECT,
/// SUBSCRIBE, FLOW, ACK, SEEK, PING, PONG, ...: every command a consumer
/// sends carries no payload).
pub fn encode_command(command: &BaseCommand, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let size = command.encoded_len();
    let (Some(command_size), Some(total_size)) = (
        u32::try_from(size).ok(),
        u32::try_from(size).ok().and_then(|n| n.checked_add(4)),
    ) else {
        return Err(EncodeError::TooLarge { size });
    };
    buf.reserve(size.saturating_add(8));
    buf.put_u32(total_size);
    buf.put_u32(command_size);
    command.encode(buf)?;
    Ok(())
}
