//! Receive-path throughput: this crate against the `pulsar` crate's `Codec`
//! on the same stream of batched MESSAGE frames (100 messages of ~40 bytes
//! per batch, keyed, as Weir's sensor producers send them).
//!
//! ```text
//! CARGO_TARGET_DIR=/var/cache/weir-target \
//!     cargo run --release -p weir-pulsar-wire --example decode_bench [MB]
//! ```
//!
//! A 20 MB stream is decoded until MB (default 200) have gone through each
//! decoder; copying the stream into a fresh read buffer before each round
//! is not timed (the socket read does that in real life, for both).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prost::Message as _;
use pulsar::proto::{
    base_command, BaseCommand, CommandMessage, MessageIdData, MessageMetadata,
    SingleMessageMetadata,
};
use tokio_util::codec::{Decoder, Encoder};
use weir_pulsar_wire::{messages, Decompressor, FrameDecoder};

const MESSAGES_PER_BATCH: usize = 100;
const ROUND_BYTES: usize = 20 * 1024 * 1024;

fn main() {
    let total_mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let (stream, frames) = build_stream();
    let rounds = (total_mb * 1024 * 1024).div_ceil(stream.len());
    let messages_per_round = frames * MESSAGES_PER_BATCH;
    println!(
        "stream: {} frames, {} messages, {:.1} MB; {rounds} rounds; CRC-32C kernel: {}",
        frames,
        messages_per_round,
        stream.len() as f64 / 1e6,
        crc_fast::get_calculator_target(crc_fast::CrcAlgorithm::Crc32Iscsi),
    );

    // Warm up both, and check they agree.
    assert_eq!(ours(&mut fresh(&stream)), pulsar_crate(&mut fresh(&stream)));

    let decoders: [(&str, DecodeFn); 4] = [
        ("weir-pulsar-wire: frames + batches", ours),
        ("weir-pulsar-wire: frames alone", ours_frames_only),
        ("pulsar: Codec + batch split", pulsar_crate),
        ("pulsar: Codec alone", pulsar_codec_only),
    ];
    for (name, decode) in decoders {
        report(name, &stream, rounds, messages_per_round, decode);
    }
}

/// Decodes a whole buffer; returns a checksum of what it read.
type DecodeFn = fn(&mut BytesMut) -> u64;

fn report(name: &str, stream: &[u8], rounds: usize, messages_per_round: usize, decode: DecodeFn) {
    let mut spent = Duration::ZERO;
    for _ in 0..rounds {
        let mut buf = fresh(stream);
        let start = Instant::now();
        black_box(decode(&mut buf));
        spent += start.elapsed();
    }
    let secs = spent.as_secs_f64();
    let bytes = (stream.len() * rounds) as f64;
    let count = (messages_per_round * rounds) as f64;
    println!(
        "{name:<36} {:>8.0} MB/s {:>8.2} M messages/s ({secs:.2} s)",
        bytes / secs / 1e6,
        count / secs / 1e6,
    );
}

fn fresh(stream: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(stream.len());
    buf.extend_from_slice(stream);
    buf
}

/// Frames, payload, the batch's messages as slices.
fn ours(buf: &mut BytesMut) -> u64 {
    let decoder = FrameDecoder::default();
    let mut decompressor = Decompressor::default();
    let mut sum = 0u64;
    while let Some(frame) = decoder.decode(buf).expect("decodes") {
        let payload = frame.payload.expect("a payload");
        let plain = decompressor
            .decompress(&payload.metadata, &payload.data)
            .expect("decompresses");
        for message in messages(&payload.metadata, plain).expect("a batch") {
            let (_, fields, data) = message.expect("reads");
            sum += data.len() as u64 + fields.sequence_id.unwrap_or(0);
        }
    }
    sum
}

fn ours_frames_only(buf: &mut BytesMut) -> u64 {
    let decoder = FrameDecoder::default();
    let mut sum = 0u64;
    while let Some(frame) = decoder.decode(buf).expect("decodes") {
        sum += frame.payload.map_or(0, |p| p.data.len() as u64);
    }
    sum
}

/// What the `pulsar` crate's consumer does per frame: `Codec::decode`, then
/// its `BatchedMessageIterator` (each `SingleMessageMetadata` decoded with
/// prost, each payload copied, the batch's metadata cloned per message).
fn pulsar_crate(buf: &mut BytesMut) -> u64 {
    let mut codec = pulsar::message::Codec;
    let mut sum = 0u64;
    while let Some(message) = codec.decode(buf).expect("decodes") {
        let payload = message.payload.expect("a payload");
        let mut data = &payload.data[..];
        for _ in 0..payload.metadata.num_messages_in_batch.unwrap_or(0) {
            let size = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
            let single = SingleMessageMetadata::decode(&data[4..4 + size]).expect("decodes");
            let len = single.payload_size as usize;
            let bytes = data[4 + size..4 + size + len].to_vec();
            let metadata = MessageMetadata {
                properties: single.properties,
                partition_key: single.partition_key,
                partition_key_b64_encoded: single.partition_key_b64_encoded,
                ordering_key: single.ordering_key,
                event_time: single.event_time,
                ..payload.metadata.clone()
            };
            sum += bytes.len() as u64 + single.sequence_id.unwrap_or(0);
            black_box(metadata);
            data = &data[4 + size + len..];
        }
    }
    sum
}

fn pulsar_codec_only(buf: &mut BytesMut) -> u64 {
    let mut codec = pulsar::message::Codec;
    let mut sum = 0u64;
    while let Some(message) = codec.decode(buf).expect("decodes") {
        sum += message.payload.map_or(0, |p| p.data.len() as u64);
    }
    sum
}

/// ~20 MB of batch frames, encoded by the `pulsar` crate's `Codec`.
fn build_stream() -> (Vec<u8>, usize) {
    let mut out = BytesMut::new();
    let mut frames = 0;
    let mut sequence_id = 0u64;
    while out.len() < ROUND_BYTES {
        let mut batch = Vec::new();
        for _ in 0..MESSAGES_PER_BATCH {
            sequence_id += 1;
            let payload = format!(
                "{{\"s\":{},\"t\":{},\"c\":{:.2}}}",
                sequence_id % 5000,
                1_700_000_000_000 + sequence_id,
                (sequence_id % 400) as f64 / 10.0
            );
            let single = SingleMessageMetadata {
                partition_key: Some(format!("sensor-{}", sequence_id % 5000)),
                payload_size: payload.len() as i32,
                sequence_id: Some(sequence_id),
                ..Default::default()
            };
            batch.extend_from_slice(&(single.encoded_len() as u32).to_be_bytes());
            single.encode(&mut batch).expect("encodes");
            batch.extend_from_slice(payload.as_bytes());
        }
        let message = pulsar::message::Message {
            command: BaseCommand {
                r#type: base_command::Type::Message as i32,
                message: Some(CommandMessage {
                    consumer_id: 1,
                    message_id: MessageIdData {
                        ledger_id: 1,
                        entry_id: frames as u64,
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                ..Default::default()
            },
            payload: Some(pulsar::Payload {
                metadata: MessageMetadata {
                    producer_name: "sensor-gateway-0".to_owned(),
                    sequence_id: sequence_id - MESSAGES_PER_BATCH as u64 + 1,
                    publish_time: 1_700_000_000_000,
                    num_messages_in_batch: Some(MESSAGES_PER_BATCH as i32),
                    ..Default::default()
                },
                data: batch,
            }),
        };
        pulsar::message::Codec
            .encode(message, &mut out)
            .expect("encodes");
        frames += 1;
    }
    (out.to_vec(), frames)
}
