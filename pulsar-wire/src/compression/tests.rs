use proptest::prelude::*;

use super::*;
use crate::testutil::{compress, metadata, sample_batch, Style, STYLES};

fn compressed(style: Style, data: &[u8]) -> (MessageMetadata, Vec<u8>) {
    let mut meta = metadata(1);
    let bytes = compress(style, data, &mut meta);
    (meta, bytes)
}

#[test]
fn decompresses_every_codec_as_clients_write_it() {
    let (_, batch) = sample_batch(100);
    let mut decompressor = Decompressor::default();
    for style in STYLES {
        for data in [&batch[..], b"", b"x"] {
            let (meta, bytes) = compressed(style, data);
            let out = decompressor
                .decompress(&meta, &bytes)
                .unwrap_or_else(|e| panic!("{style:?}: {e}"));
            assert_eq!(out, data, "{style:?}");
        }
    }
}

#[test]
fn an_uncompressed_payload_is_returned_as_is() {
    let data = b"plain reading".to_vec();
    let mut decompressor = Decompressor::default();
    for compression in [None, Some(CompressionType::None as i32)] {
        let meta = MessageMetadata {
            compression,
            ..metadata(1)
        };
        let out = decompressor.decompress(&meta, &data).expect("plain");
        assert_eq!(out.as_ptr(), data.as_ptr(), "not copied");
    }
}

#[test]
fn the_buffer_is_reused() {
    let (_, batch) = sample_batch(100);
    let (meta, bytes) = compressed(Style::Lz4, &batch);
    let mut decompressor = Decompressor::default();
    let first = decompressor
        .decompress(&meta, &bytes)
        .expect("lz4")
        .as_ptr();
    for style in STYLES {
        let (meta, bytes) = compressed(style, &batch);
        let again = decompressor
            .decompress(&meta, &bytes)
            .expect("decompresses");
        assert_eq!(again.as_ptr(), first, "{style:?}: reallocated");
    }
}

#[test]
fn a_hostile_size_is_refused_before_allocating() {
    let mut decompressor = Decompressor::new(1 << 20);
    for style in STYLES {
        let (mut meta, bytes) = compressed(style, b"tiny");
        meta.uncompressed_size = Some(u32::MAX);
        let err = decompressor
            .decompress(&meta, &bytes)
            .expect_err("too large");
        assert!(
            matches!(err, DecompressError::TooLarge { size, max: 1_048_576, .. } if size == u64::from(u32::MAX)),
            "{style:?}: {err}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(decompressor.buffer.capacity(), 0, "nothing allocated");
}

#[test]
fn output_must_have_the_declared_size() {
    let (_, batch) = sample_batch(20);
    let mut decompressor = Decompressor::default();
    for style in STYLES {
        for declared in [batch.len() - 1, batch.len() + 1, 0] {
            let (mut meta, bytes) = compressed(style, &batch);
            meta.uncompressed_size = Some(u32::try_from(declared).unwrap());
            let err = decompressor
                .decompress(&meta, &bytes)
                .expect_err("size mismatch");
            assert!(
                matches!(
                    err,
                    DecompressError::SizeMismatch { .. } | DecompressError::Corrupt { .. }
                ),
                "{style:?} declared {declared}: {err}"
            );
        }
    }
}

#[test]
fn without_a_declared_size() {
    let (_, batch) = sample_batch(20);
    let mut decompressor = Decompressor::default();
    for style in STYLES {
        let (mut meta, bytes) = compressed(style, &batch);
        meta.uncompressed_size = None;
        let result = decompressor.decompress(&meta, &bytes);
        match style {
            // A raw LZ4 block does not say how large it is.
            Style::Lz4 => assert!(
                matches!(result, Err(DecompressError::MissingSize { codec: "LZ4" })),
                "{result:?}"
            ),
            _ => assert_eq!(result.expect("decompresses"), &batch[..], "{style:?}"),
        }
    }

    // A bomb without a declared size stops at the maximum.
    let zeros = vec![0u8; 100_000];
    let mut small = Decompressor::new(10_000);
    for style in [
        Style::Zlib,
        Style::ZstdStream,
        Style::SnappyFramed,
        Style::SnappyRaw,
    ] {
        let (mut meta, bytes) = compressed(style, &zeros);
        meta.uncompressed_size = None;
        let err = small.decompress(&meta, &bytes).expect_err("too large");
        assert!(
            matches!(err, DecompressError::TooLarge { max: 10_000, .. }),
            "{style:?}: {err}"
        );
        assert!(small.buffer.capacity() < 100_000, "{style:?}");
    }
}

#[test]
fn corrupt_payloads_and_unknown_codecs_are_errors() {
    let (_, batch) = sample_batch(20);
    let mut decompressor = Decompressor::default();
    for style in STYLES {
        let (meta, mut bytes) = compressed(style, &batch);
        bytes.truncate(bytes.len() / 2);
        let err = decompressor.decompress(&meta, &bytes).expect_err("corrupt");
        assert!(!err.is_retryable());
        assert!(
            matches!(
                err,
                DecompressError::Corrupt { .. } | DecompressError::SizeMismatch { .. }
            ),
            "{style:?}: {err}"
        );
    }
    let meta = MessageMetadata {
        compression: Some(9),
        ..metadata(1)
    };
    assert!(matches!(
        decompressor.decompress(&meta, b"??"),
        Err(DecompressError::UnknownCodec(9))
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_codec(
        codec in 1..5i32,
        declared in proptest::option::of(0u32..100_000),
        data in proptest::collection::vec(any::<u8>(), 0..256),
        framed in any::<bool>(),
    ) {
        let mut data = data;
        if framed && codec == CompressionType::Snappy as i32 {
            let mut with_identifier = SNAPPY_STREAM_IDENTIFIER.to_vec();
            with_identifier.extend(data);
            data = with_identifier;
        }
        let meta = MessageMetadata {
            compression: Some(codec),
            uncompressed_size: declared,
            ..metadata(1)
        };
        let mut decompressor = Decompressor::new(50_000);
        if let Ok(out) = decompressor.decompress(&meta, &data) {
            if let Some(declared) = declared {
                prop_assert_eq!(out.len(), to_usize(declared));
            }
            prop_assert!(out.len() <= 50_000);
        }
    }
}
