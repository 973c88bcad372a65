use bytes::{BufMut, BytesMut};
use prost::Message as _;
use tokio_util::codec::Decoder as _;

use super::*;
use crate::proto::{base_command, CommandFlow};
use crate::testutil::{frame, message_command, metadata, ping, sample_batch};

fn decode_all(decoder: &FrameDecoder, buf: &mut BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(buf).expect("decodes") {
        frames.push(frame);
    }
    frames
}

fn message_frame(entry_id: u64, data: &[u8]) -> Vec<u8> {
    frame(
        message_command(42, entry_id),
        Some((metadata(entry_id), data.to_vec())),
    )
}

#[test]
fn decodes_a_message_the_pulsar_crate_encoded() {
    let mut buf = BytesMut::from(&message_frame(9, b"{\"celsius\":21.5}")[..]);
    let frame = FrameDecoder::default()
        .decode(&mut buf)
        .expect("decodes")
        .expect("a whole frame");
    assert!(buf.is_empty());
    assert_eq!(frame.command, message_command(42, 9));
    let payload = frame.payload.as_ref().expect("a payload");
    assert_eq!(payload.metadata, metadata(9));
    assert_eq!(payload.broker_entry_metadata, None);
    assert_eq!(&payload.data[..], b"{\"celsius\":21.5}");
    assert_eq!(
        frame.message_ref(),
        Some(MessageRef {
            consumer_id: 7,
            ledger_id: 42,
            entry_id: 9,
            partition: Some(3),
        })
    );
}

#[test]
fn decodes_an_empty_payload_and_command_only_frames() {
    let mut bytes = message_frame(1, b"");
    bytes.extend(frame(ping(), None));
    let mut buf = BytesMut::from(&bytes[..]);
    let frames = decode_all(&FrameDecoder::default(), &mut buf);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].payload.as_ref().map(|p| p.data.len()), Some(0));
    assert_eq!(frames[1].command, ping());
    assert_eq!(frames[1].payload, None);
}

#[test]
fn encodes_commands_as_the_pulsar_crate_does_and_both_decode_them() {
    let commands = [
        ping(),
        BaseCommand {
            r#type: base_command::Type::Flow as i32,
            flow: Some(CommandFlow {
                consumer_id: 7,
                message_permits: 1000,
            }),
            ..Default::default()
        },
    ];
    for command in commands {
        let mut ours = BytesMut::new();
        encode_command(&command, &mut ours).expect("encodes");
        assert_eq!(&ours[..], &frame(command.clone(), None)[..]);

        let theirs = pulsar::message::Codec
            .decode(&mut ours.clone())
            .expect("the pulsar crate decodes it")
            .expect("a whole frame");
        assert_eq!(theirs.command, command);

        let decoded = FrameDecoder::default()
            .decode(&mut ours)
            .expect("decodes")
            .expect("a whole frame");
        assert_eq!(decoded.command, command);
        assert!(ours.is_empty());
    }
}

/// Three frames (a command, a message, a batch) split at every byte: the
/// decoder must wait at each cut and produce the same frames.
#[test]
fn a_stream_cut_at_every_byte_decodes_the_same() {
    let (_, batch) = sample_batch(5);
    let mut batch_metadata = metadata(2);
    batch_metadata.num_messages_in_batch = Some(5);
    let mut stream = frame(ping(), None);
    stream.extend(message_frame(1, b"reading"));
    stream.extend(frame(message_command(42, 2), Some((batch_metadata, batch))));

    let decoder = FrameDecoder::default();
    let expected = decode_all(&decoder, &mut BytesMut::from(&stream[..]));
    assert_eq!(expected.len(), 3);

    for cut in 0..=stream.len() {
        let mut buf = BytesMut::from(&stream[..cut]);
        let mut frames = decode_all(&decoder, &mut buf);
        buf.extend_from_slice(&stream[cut..]);
        frames.extend(decode_all(&decoder, &mut buf));
        assert_eq!(frames, expected, "cut at {cut}");
        assert!(buf.is_empty());
    }

    // And fed one byte at a time.
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in &stream {
        buf.put_u8(*byte);
        frames.extend(decode_all(&decoder, &mut buf));
    }
    assert_eq!(frames, expected);
}

#[test]
fn a_corrupted_byte_fails_its_frame_only() {
    let good = message_frame(5, b"a reading of some length");
    let next = message_frame(6, b"the next reading");
    // The checksummed bytes: metadata size, metadata and payload.
    let command_size = usize::try_from(u32::from_be_bytes(good[4..8].try_into().unwrap())).unwrap();
    let checked_from = 8 + command_size + 6;

    for at in checked_from..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x20;
        bytes.extend(&next);
        let mut buf = BytesMut::from(&bytes[..]);
        let decoder = FrameDecoder::default();
        let err = decoder.decode(&mut buf).expect_err("a checksum error");
        assert!(
            matches!(err, FrameError::Checksum { .. }),
            "byte {at}: {err}"
        );
        assert!(!err.is_connection_fatal());
        assert!(err.is_retryable());
        assert_eq!(err.message().map(|m| m.entry_id), Some(5));
        assert!(
            err.to_string().contains("message 42:5:3 (consumer 7)"),
            "{err}"
        );

        let frame = decoder.decode(&mut buf).expect("decodes").expect("a frame");
        assert_eq!(frame.message_ref().map(|m| m.entry_id), Some(6));
        assert_eq!(
            &frame.payload.expect("a payload").data[..],
            b"the next reading"
        );
    }

    // The checksum field itself.
    let mut bytes = good.clone();
    bytes[checked_from - 1] ^= 1;
    let err = FrameDecoder::default()
        .decode(&mut BytesMut::from(&bytes[..]))
        .expect_err("a checksum error");
    assert!(matches!(err, FrameError::Checksum { .. }), "{err}");
}

#[test]
fn a_corrupted_magic_is_refused_not_skipped() {
    let mut bytes = message_frame(5, b"reading");
    let command_size =
        usize::try_from(u32::from_be_bytes(bytes[4..8].try_into().unwrap())).unwrap();
    bytes[8 + command_size + 1] = 0x07;
    bytes.extend(message_frame(6, b"next"));
    let mut buf = BytesMut::from(&bytes[..]);
    let decoder = FrameDecoder::default();
    let err = decoder.decode(&mut buf).expect_err("refused");
    assert!(
        matches!(
            err,
            FrameError::Payload {
                fault: PayloadFault::NoChecksum { found: 0x0e07 },
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_connection_fatal());
    assert!(decoder.decode(&mut buf).expect("decodes").is_some());
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_buffered() {
    let decoder = FrameDecoder::new(1024);
    let mut buf = BytesMut::new();
    buf.put_u32(2000);
    let err = decoder.decode(&mut buf).expect_err("too large");
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                size: 2004,
                max: 1024
            }
        ),
        "{err}"
    );
    assert!(err.is_connection_fatal());
    assert!(!err.is_retryable());
    assert_eq!(buf.len(), 4, "nothing consumed");

    // The largest size field there is.
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let err = FrameDecoder::default()
        .decode(&mut buf)
        .expect_err("too large");
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");

    // Exactly the limit passes.
    let bytes = message_frame(1, b"x");
    let decoder = FrameDecoder::new(bytes.len());
    assert!(decoder.decode(&mut BytesMut::from(&bytes[..])).is_ok());
    let decoder = FrameDecoder::new(bytes.len() - 1);
    assert!(decoder.decode(&mut BytesMut::from(&bytes[..])).is_err());
}

#[test]
fn the_default_limit_is_pulsars_message_size_and_padding() {
    assert_eq!(
        FrameDecoder::default().max_frame_size(),
        5 * 1024 * 1024 + 10 * 1024
    );
    assert_eq!(
        FrameDecoder::for_max_message_size(1 << 20).max_frame_size(),
        (1 << 20) + FRAME_PADDING
    );
    assert_eq!(
        FrameDecoder::for_max_message_size(usize::MAX).max_frame_size(),
        usize::MAX
    );
}

#[test]
fn malformed_lengths_are_connection_errors() {
    // A total size that cannot hold the command size field.
    for total_size in 0..4u32 {
        let mut buf = BytesMut::new();
        buf.put_u32(total_size);
        let err = FrameDecoder::default()
            .decode(&mut buf)
            .expect_err("too short");
        assert!(matches!(err, FrameError::TooShort { .. }), "{err}");
        assert!(err.is_connection_fatal());
    }

    // A command size beyond the frame: found with the header, before the
    // frame is waited for.
    let mut buf = BytesMut::new();
    buf.put_u32(100);
    buf.put_u32(97);
    let err = FrameDecoder::default()
        .decode(&mut buf)
        .expect_err("bad length");
    assert!(
        matches!(
            err,
            FrameError::BadLength {
                total_size: 100,
                command_size: 97
            }
        ),
        "{err}"
    );
    assert!(err.is_connection_fatal());
    assert_eq!(buf.len(), 8, "nothing consumed");

    // A command that does not decode.
    let mut buf = BytesMut::new();
    buf.put_u32(7);
    buf.put_u32(3);
    buf.put_slice(&[0x0a, 0x05, 0x00]);
    let err = FrameDecoder::default()
        .decode(&mut buf)
        .expect_err("bad command");
    assert!(matches!(err, FrameError::Command(_)), "{err}");
    assert!(err.is_connection_fatal());
}

/// Rebuilds a frame from its command and payload section.
fn with_payload_section(command: &BaseCommand, section: &[u8]) -> BytesMut {
    let command_bytes = command.encode_to_vec();
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(4 + command_bytes.len() + section.len()).unwrap());
    buf.put_u32(u32::try_from(command_bytes.len()).unwrap());
    buf.put_slice(&command_bytes);
    buf.put_slice(section);
    buf
}

/// `[0x0e01][crc][metadata_size][rest...]` with a correct checksum.
fn checksummed(metadata_size: u32, rest: &[u8]) -> Vec<u8> {
    let mut covered = metadata_size.to_be_bytes().to_vec();
    covered.extend_from_slice(rest);
    let mut section = vec![0x0e, 0x01];
    section.extend_from_slice(&crate::crc32c(&covered).to_be_bytes());
    section.extend(covered);
    section
}

#[test]
fn a_malformed_payload_section_fails_its_frame_only() {
    let command = message_command(42, 8);
    // (payload section, the fault, whether a retry may help)
    let cases: Vec<(Vec<u8>, &str, bool)> = vec![
        (vec![0x0e], "Truncated", true),
        (vec![0x0e, 0x01, 0, 0], "Truncated", true),
        // Checksum right, metadata size past the end.
        (
            checksummed(50, &[0x08, 0x01]),
            "MetadataSize { size: 50, left: 2 }",
            false,
        ),
        // Checksum right, metadata garbage (a truncated varint).
        (checksummed(1, &[0x80]), "Metadata(", false),
        // Broker entry metadata larger than the frame.
        (vec![0x0e, 0x02, 0, 0, 1, 0, 1, 2], "Truncated", true),
    ];
    for (section, expected, retryable) in cases {
        let mut buf = with_payload_section(&command, &section);
        buf.extend_from_slice(&frame(ping(), None));
        let decoder = FrameDecoder::default();
        let err = decoder.decode(&mut buf).expect_err("a payload error");
        match &err {
            FrameError::Payload { message, fault } => {
                assert!(
                    format!("{fault:?}").starts_with(expected),
                    "{section:?}: {fault:?}"
                );
                assert_eq!(message.map(|m| m.entry_id), Some(8));
            }
            other => panic!("{section:?}: {other}"),
        }
        assert!(!err.is_connection_fatal());
        assert_eq!(err.is_retryable(), retryable, "{err}");
        let next = decoder.decode(&mut buf).expect("decodes").expect("a frame");
        assert_eq!(next.command, ping());
    }
}

#[test]
fn reads_broker_entry_metadata() {
    let bytes = message_frame(3, b"reading");
    let command_size =
        usize::try_from(u32::from_be_bytes(bytes[4..8].try_into().unwrap())).unwrap();
    let entry = crate::proto::BrokerEntryMetadata {
        broker_timestamp: Some(1_700_000_000_123),
        index: Some(77),
    };
    let entry_bytes = entry.encode_to_vec();
    let mut section = vec![0x0e, 0x02];
    section.extend_from_slice(&u32::try_from(entry_bytes.len()).unwrap().to_be_bytes());
    section.extend(entry_bytes);
    section.extend_from_slice(&bytes[8 + command_size..]);
    let mut buf = with_payload_section(&message_command(42, 3), &section);

    let frame = FrameDecoder::default()
        .decode(&mut buf)
        .expect("decodes")
        .expect("a frame");
    let payload = frame.payload.expect("a payload");
    assert_eq!(payload.broker_entry_metadata, Some(entry));
    assert_eq!(&payload.data[..], b"reading");
}

#[test]
fn the_payload_is_a_view_of_the_read_buffer() {
    let mut bytes = message_frame(1, b"first reading");
    bytes.extend(message_frame(2, b"second reading"));
    let mut buf = BytesMut::with_capacity(bytes.len());
    buf.extend_from_slice(&bytes);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();

    let frames = decode_all(&FrameDecoder::default(), &mut buf);
    assert_eq!(frames.len(), 2);
    for frame in &frames {
        let data = &frame.payload.as_ref().expect("a payload").data;
        let at = data.as_ptr() as usize;
        assert!(
            at >= start && at + data.len() <= end,
            "the payload was copied"
        );
    }
    // The second frame's payload is the tail of the buffer as it was.
    let data = &frames[1].payload.as_ref().expect("a payload").data;
    assert_eq!(data.as_ptr() as usize + data.len(), end);
}

#[test]
fn waits_for_a_partial_frame_and_reserves_room_for_it() {
    let bytes = message_frame(1, &[7u8; 4000]);
    let mut buf = BytesMut::from(&bytes[..10]);
    assert!(FrameDecoder::default()
        .decode(&mut buf)
        .expect("ok")
        .is_none());
    assert_eq!(&buf[..], &bytes[..10], "the buffer is left alone");
    assert!(buf.capacity() >= bytes.len());
}
