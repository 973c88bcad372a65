//! Test frames, built the way real clients build them: frames by the
//! `pulsar` crate's own `Codec`, batches as the Java and Python clients lay
//! them out, payloads compressed as each client compresses them.

use std::io::Write;

use bytes::BytesMut;
use prost::Message as _;
use tokio_util::codec::Encoder;

use crate::proto::{
    base_command, BaseCommand, CommandMessage, CompressionType, KeyValue, MessageIdData,
    MessageMetadata, SingleMessageMetadata,
};

/// A MESSAGE command for consumer 7.
pub fn message_command(ledger_id: u64, entry_id: u64) -> BaseCommand {
    BaseCommand {
        r#type: base_command::Type::Message as i32,
        message: Some(CommandMessage {
            consumer_id: 7,
            message_id: MessageIdData {
                ledger_id,
                entry_id,
                partition: Some(3),
                ..Default::default()
            },
            redelivery_count: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ping() -> BaseCommand {
    BaseCommand {
        r#type: base_command::Type::Ping as i32,
        ping: Some(Default::default()),
        ..Default::default()
    }
}

/// The metadata a producer sends with a message.
pub fn metadata(sequence_id: u64) -> MessageMetadata {
    MessageMetadata {
        producer_name: "sensor-gateway".to_owned(),
        sequence_id,
        publish_time: 1_700_000_000_000,
        ..Default::default()
    }
}

/// A frame as the `pulsar` crate's `Codec` writes it.
pub fn frame(command: BaseCommand, payload: Option<(MessageMetadata, Vec<u8>)>) -> Vec<u8> {
    let message = pulsar::message::Message {
        command,
        payload: payload.map(|(metadata, data)| pulsar::Payload { metadata, data }),
    };
    let mut out = BytesMut::new();
    pulsar::message::Codec
        .encode(message, &mut out)
        .expect("the pulsar codec encodes");
    out.to_vec()
}

/// A single message's metadata with every field set.
pub fn full_single(payload_size: i32, i: u64) -> SingleMessageMetadata {
    SingleMessageMetadata {
        properties: vec![
            KeyValue {
                key: "site".to_owned(),
                value: format!("plant-{i}"),
            },
            KeyValue {
                key: "unit".to_owned(),
                value: "°C".to_owned(),
            },
        ],
        partition_key: Some(format!("sensor-{i}")),
        payload_size,
        compacted_out: Some(false),
        event_time: Some(1_700_000_000_000 + i),
        partition_key_b64_encoded: Some(true),
        ordering_key: Some(vec![0, 1, 2, i as u8]),
        sequence_id: Some(1000 + i),
        null_value: Some(i % 2 == 1),
        null_partition_key: Some(i % 3 == 1),
    }
}

/// A single message's metadata as the Java client writes it with no key
/// and no properties.
pub fn bare_single(payload_size: i32) -> SingleMessageMetadata {
    SingleMessageMetadata {
        payload_size,
        ..Default::default()
    }
}

/// A batch payload: `[size u32][SingleMessageMetadata][payload]` per message
/// (Java's `Commands.serializeSingleMessageInBatchWithPayload`).
pub fn batch(entries: &[(SingleMessageMetadata, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (single, payload) in entries {
        let size = u32::try_from(single.encoded_len()).expect("small metadata");
        out.extend_from_slice(&size.to_be_bytes());
        single.encode(&mut out).expect("encodes into a Vec");
        out.extend_from_slice(payload);
    }
    out
}

/// `n` messages of about 40 bytes each, alternating full and bare metadata.
pub fn sample_batch(n: usize) -> (Vec<(SingleMessageMetadata, Vec<u8>)>, Vec<u8>) {
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let payload = format!("{{\"sensor\":{i},\"celsius\":{}.5}}", 20 + i % 7).into_bytes();
            let size = i32::try_from(payload.len()).expect("small payload");
            let single = if i % 2 == 0 {
                full_single(size, i as u64)
            } else {
                bare_single(size)
            };
            (single, payload)
        })
        .collect();
    let data = batch(&entries);
    (entries, data)
}

/// Compressions as clients write them.
#[derive(Clone, Copy, Debug)]
pub enum Style {
    /// `lz4::block::compress(.., false)`: a raw block (all clients).
    Lz4,
    /// `flate2::write::ZlibEncoder` (all clients: a zlib stream).
    Zlib,
    /// `zstd::encode_all`, the `pulsar` crate's (no content size).
    ZstdStream,
    /// `zstd::bulk::compress`, as Java's `Zstd.compress` (content size).
    ZstdBulk,
    /// `snap::write::FrameEncoder`, the `pulsar` crate's (framed).
    SnappyFramed,
    /// `snap::raw::Encoder`, as Java's `Snappy.compress` (raw).
    SnappyRaw,
}

pub const STYLES: [Style; 6] = [
    Style::Lz4,
    Style::Zlib,
    Style::ZstdStream,
    Style::ZstdBulk,
    Style::SnappyFramed,
    Style::SnappyRaw,
];

/// `data` compressed in `style`, and the metadata fields that say so.
pub fn compress(style: Style, data: &[u8], metadata: &mut MessageMetadata) -> Vec<u8> {
    let (codec, compressed) = match style {
        Style::Lz4 => (
            CompressionType::Lz4,
            lz4::block::compress(data, None, false).expect("lz4 compresses"),
        ),
        Style::Zlib => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("zlib compresses");
            (CompressionType::Zlib, e.finish().expect("zlib finishes"))
        }
        Style::ZstdStream => (
            CompressionType::Zstd,
            zstd::encode_all(data, 3).expect("zstd compresses"),
        ),
        Style::ZstdBulk => (
            CompressionType::Zstd,
            zstd::bulk::compress(data, 3).expect("zstd compresses"),
        ),
        Style::SnappyFramed => {
            let mut out = Vec::new();
            {
                let mut e = snap::write::FrameEncoder::new(&mut out);
                e.write_all(data).expect("snappy compresses");
                e.flush().expect("snappy flushes");
            }
            (CompressionType::Snappy, out)
        }
        Style::SnappyRaw => (
            CompressionType::Snappy,
            snap::raw::Encoder::new()
                .compress_vec(data)
                .expect("snappy compresses"),
        ),
    };
    metadata.compression = Some(codec as i32);
    metadata.uncompressed_size = Some(u32::try_from(data.len()).expect("small data"));
    compressed
}
