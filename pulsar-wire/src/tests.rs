//! The three steps together, on frames the `pulsar` crate encoded, checked
//! against what the `pulsar` crate itself decodes.

use bytes::BytesMut;
use proptest::prelude::*;
use prost::Message as _;
use tokio_util::codec::Decoder as _;

use crate::proto::SingleMessageMetadata;
use crate::testutil::{compress, frame, message_command, metadata, sample_batch, STYLES};
use crate::{messages, Decompressor, FrameDecoder};

/// What the `pulsar` crate makes of a batch frame: its metadata decoded with
/// prost, each payload copied.
fn pulsar_crate_messages(bytes: &[u8]) -> Vec<(SingleMessageMetadata, Vec<u8>)> {
    let message = pulsar::message::Codec
        .decode(&mut BytesMut::from(bytes))
        .expect("the pulsar crate decodes it")
        .expect("a whole frame");
    let payload = message.payload.expect("a payload");
    let mut data = &payload.data[..];
    let mut out = Vec::new();
    for _ in 0..payload.metadata.num_messages_in_batch.unwrap_or(0) {
        let size = usize::try_from(u32::from_be_bytes(data[..4].try_into().unwrap())).unwrap();
        let single = SingleMessageMetadata::decode(&data[4..4 + size]).expect("decodes");
        let len = usize::try_from(single.payload_size).unwrap();
        out.push((single, data[4 + size..4 + size + len].to_vec()));
        data = &data[4 + size + len..];
    }
    out
}

#[test]
fn batches_in_every_codec_read_as_sent() {
    let (entries, batch) = sample_batch(100);
    let mut decompressor = Decompressor::default();
    let mut styles: Vec<_> = STYLES.iter().copied().map(Some).collect();
    styles.push(None);
    for style in styles {
        let mut meta = metadata(5);
        meta.num_messages_in_batch = Some(100);
        let data = match style {
            Some(style) => compress(style, &batch, &mut meta),
            None => batch.clone(),
        };
        let bytes = frame(message_command(42, 11), Some((meta, data)));
        if style.is_none() {
            assert_eq!(pulsar_crate_messages(&bytes), entries);
        }

        let mut buf = BytesMut::from(&bytes[..]);
        let frame = FrameDecoder::default()
            .decode(&mut buf)
            .expect("decodes")
            .expect("a frame");
        let payload = frame.payload.expect("a payload");
        let plain = decompressor
            .decompress(&payload.metadata, &payload.data)
            .expect("decompresses");
        let read: Vec<_> = messages(&payload.metadata, plain)
            .expect("a batch")
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(read.len(), entries.len(), "{style:?}");
        for ((index, fields, payload), (single, expected)) in read.iter().zip(&entries) {
            assert_eq!(payload, expected, "{style:?} message {index:?}");
            assert_eq!(
                fields.partition_key,
                single.partition_key.as_deref().map(str::as_bytes)
            );
            assert_eq!(fields.event_time, single.event_time);
            assert_eq!(fields.sequence_id, single.sequence_id);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        max in 0usize..4096,
    ) {
        let decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            // Each success or per-frame error consumes at least the size
            // field: bounded.
            for _ in 0..64 {
                match decoder.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.is_connection_fatal() => return Ok(()),
                    Err(_) => {}
                }
            }
        }
    }

    /// Past the size checks: right sizes, then anything, with the payload
    /// magic where a payload section would start.
    #[test]
    fn arbitrary_bodies_never_panic_the_decoder(
        command in proptest::collection::vec(any::<u8>(), 0..32),
        magic in proptest::sample::select(vec![[0x0e, 0x01], [0x0e, 0x02], [0, 0]]),
        section in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let total_size = 4 + command.len() + 2 + section.len();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&u32::try_from(total_size).unwrap().to_be_bytes());
        buf.extend_from_slice(&u32::try_from(command.len()).unwrap().to_be_bytes());
        buf.extend_from_slice(&command);
        buf.extend_from_slice(&magic);
        buf.extend_from_slice(&section);
        let len = buf.len();
        let result = FrameDecoder::default().decode(&mut buf);
        // Whole: decoded or refused, never waited for.
        prop_assert!(!matches!(result, Ok(None)));
        if !matches!(&result, Err(e) if e.is_connection_fatal()) {
            prop_assert!(buf.is_empty(), "{} of {} bytes left", buf.len(), len);
        }
    }

    #[test]
    fn corrupted_frames_never_panic_the_decoder(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let (_, batch) = sample_batch(3);
        let mut meta = metadata(5);
        meta.num_messages_in_batch = Some(3);
        let mut bytes = frame(message_command(42, 11), Some((meta, batch)));
        for (at, mask) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(frame)) = FrameDecoder::default().decode(&mut buf) {
            if let Some(payload) = frame.payload {
                let mut decompressor = Decompressor::new(1 << 20);
                if let Ok(plain) = decompressor.decompress(&payload.metadata, &payload.data) {
                    if let Ok(items) = messages(&payload.metadata, plain) {
                        for item in items.take(1024) {
                            let _ = item;
                        }
                    }
                }
            }
        }
    }
}
