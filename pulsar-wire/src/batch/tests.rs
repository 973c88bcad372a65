use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::proto::SingleMessageMetadata;
use crate::testutil::{bare_single, batch, full_single, metadata, sample_batch};

type Owned = Vec<(Vec<u8>, Vec<u8>)>;

/// What prost decodes, in the scanner's terms.
fn expected(single: &SingleMessageMetadata) -> (SingleFields<'_>, Owned) {
    let fields = SingleFields {
        payload_size: u32::try_from(single.payload_size).expect("non-negative"),
        event_time: single.event_time.filter(|t| *t != 0),
        sequence_id: single.sequence_id,
        compacted_out: single.compacted_out.unwrap_or(false),
        null_value: single.null_value.unwrap_or(false),
        partition_key: single.partition_key.as_deref().map(str::as_bytes),
        partition_key_b64_encoded: single.partition_key_b64_encoded.unwrap_or(false),
        null_partition_key: single.null_partition_key.unwrap_or(false),
        ordering_key: single.ordering_key.as_deref(),
        properties: Properties::default(),
    };
    let properties = single
        .properties
        .iter()
        .map(|kv| (kv.key.clone().into_bytes(), kv.value.clone().into_bytes()))
        .collect();
    (fields, properties)
}

fn properties(p: &Properties<'_>) -> Owned {
    p.iter()
        .map(|kv| {
            let (k, v) = kv.expect("properties scan");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn assert_scans_as_prost_decodes(single: &SingleMessageMetadata) {
    let bytes = single.encode_to_vec();
    let scanned = single_fields(&bytes).expect("scans");
    let (fields, props) = expected(single);
    assert_eq!(
        SingleFields {
            properties: Properties::default(),
            ..scanned
        },
        fields
    );
    assert_eq!(properties(&scanned.properties), props);
    assert_eq!(scanned.properties.is_empty(), single.properties.is_empty());
}

#[test]
fn scans_every_field_as_prost_encodes_it() {
    for i in 0..4 {
        assert_scans_as_prost_decodes(&full_single(40, i));
    }
    assert_scans_as_prost_decodes(&bare_single(0));
    assert_scans_as_prost_decodes(&SingleMessageMetadata {
        payload_size: i32::MAX,
        event_time: Some(u64::MAX),
        sequence_id: Some(u64::MAX),
        compacted_out: Some(true),
        null_value: Some(true),
        partition_key: Some(String::new()),
        ordering_key: Some(Vec::new()),
        ..Default::default()
    });
}

#[test]
fn event_time_zero_means_unset() {
    let single = SingleMessageMetadata {
        payload_size: 1,
        event_time: Some(0),
        ..Default::default()
    };
    let bytes = single.encode_to_vec();
    assert_eq!(single_fields(&bytes).expect("scans").event_time, None);
}

#[test]
fn skips_fields_it_does_not_know_and_refuses_misused_ones() {
    let mut bytes = bare_single(3).encode_to_vec();
    // Field 99 (varint), field 100 (fixed64), field 101 (bytes), field 102
    // (fixed32): fields of a newer protocol.
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    bytes.extend_from_slice(&[0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    bytes.extend_from_slice(&[0xaa, 0x06, 0x02, b'h', b'i']);
    bytes.extend_from_slice(&[0xb5, 0x06, 1, 2, 3, 4]);
    assert_eq!(single_fields(&bytes).expect("scans").payload_size, 3);

    // payload_size (3) sent as bytes.
    let err = single_fields(&[0x1a, 0x00]).expect_err("wrong wire type");
    assert_eq!(
        err,
        ScanError::WrongWireType {
            field: 3,
            found: 2,
            expected: 0
        }
    );
    // partition_key (2) sent as a varint.
    assert!(matches!(
        single_fields(&[0x10, 0x01, 0x18, 0x01]),
        Err(ScanError::WrongWireType { field: 2, .. })
    ));
    assert_eq!(single_fields(&[]), Err(ScanError::MissingPayloadSize));
    let negative = SingleMessageMetadata {
        payload_size: -5,
        ..Default::default()
    };
    assert_eq!(
        single_fields(&negative.encode_to_vec()),
        Err(ScanError::NegativePayloadSize(-5))
    );
}

#[test]
fn iterates_a_batch_as_the_java_client_lays_it_out() {
    let (entries, data) = sample_batch(10);
    let mut meta = metadata(1);
    meta.num_messages_in_batch = Some(10);
    let messages: Vec<_> = messages(&meta, &data)
        .expect("a batch")
        .collect::<Result<_, _>>()
        .expect("reads");
    assert_eq!(messages.len(), 10);
    for (i, ((index, fields, payload), (single, expected_payload))) in
        messages.iter().zip(&entries).enumerate()
    {
        assert_eq!(*index, Some(i32::try_from(i).unwrap()));
        assert_eq!(payload, expected_payload);
        let (expected_fields, props) = expected(single);
        assert_eq!(
            SingleFields {
                properties: Properties::default(),
                ..*fields
            },
            expected_fields
        );
        assert_eq!(properties(&fields.properties), props);
        // A slice of the batch, not a copy.
        let at = payload.as_ptr() as usize - data.as_ptr() as usize;
        assert!(at + payload.len() <= data.len());
    }
}

#[test]
fn a_message_that_is_not_batched_is_one_item() {
    let mut meta = metadata(17);
    meta.event_time = Some(1_700_000_000_500);
    meta.partition_key = Some("sensor-9".to_owned());
    meta.ordering_key = Some(vec![9]);
    meta.null_value = Some(false);
    meta.properties = vec![crate::proto::KeyValue {
        key: "site".to_owned(),
        value: "north".to_owned(),
    }];
    let data = b"{\"celsius\":4}";
    let items: Vec<_> = messages(&meta, data).expect("one message").collect();
    assert_eq!(items.len(), 1);
    let (index, fields, payload) = items[0].as_ref().expect("reads");
    assert_eq!(*index, None);
    assert_eq!(*payload, data);
    assert_eq!(fields.payload_size, 13);
    assert_eq!(fields.event_time, Some(1_700_000_000_500));
    assert_eq!(fields.sequence_id, Some(17));
    assert_eq!(fields.partition_key, Some(&b"sensor-9"[..]));
    assert_eq!(fields.ordering_key, Some(&[9u8][..]));
    assert_eq!(
        properties(&fields.properties),
        vec![(b"site".to_vec(), b"north".to_vec())]
    );
}

fn batch_of(count: i32, data: &[u8]) -> Vec<Result<MessageSlice<'_>, BatchError>> {
    // Leaked: the metadata must outlive the items, and this is a test.
    let meta: &'static _ = Box::leak(Box::new(crate::proto::MessageMetadata {
        num_messages_in_batch: Some(count),
        ..Default::default()
    }));
    messages(meta, data).expect("a batch").collect()
}

#[test]
fn entries_that_lie_about_their_sizes_are_errors_naming_them() {
    let (_, data) = sample_batch(3);

    // More messages claimed than there are.
    let items = batch_of(5, &data);
    assert_eq!(items.len(), 4);
    assert!(items[..3].iter().all(Result::is_ok));
    assert_eq!(
        items[3],
        Err(BatchError::Entry {
            index: 3,
            fault: EntryFault::Truncated { left: 0 }
        })
    );

    // A metadata size past the end.
    let mut lying = batch(&[(bare_single(2), b"ok".to_vec())]);
    lying.extend_from_slice(&1000u32.to_be_bytes());
    lying.extend_from_slice(&[0x18, 0x01]);
    let items = batch_of(2, &lying);
    assert_eq!(
        items[1],
        Err(BatchError::Entry {
            index: 1,
            fault: EntryFault::MetadataSize {
                size: 1000,
                left: 2
            }
        })
    );
    assert!(!items[1].as_ref().unwrap_err().is_retryable());
    assert_eq!(items[1].as_ref().unwrap_err().index(), Some(1));

    // A payload size past the end.
    let lying = batch(&[(bare_single(50), b"short".to_vec())]);
    assert_eq!(
        batch_of(1, &lying),
        vec![Err(BatchError::Entry {
            index: 0,
            fault: EntryFault::PayloadSize { size: 50, left: 5 }
        })]
    );

    // The largest sizes there are.
    let mut lying = u32::MAX.to_be_bytes().to_vec();
    lying.extend_from_slice(&[0x18, 0x01]);
    assert!(matches!(
        batch_of(1, &lying)[..],
        [Err(BatchError::Entry {
            index: 0,
            fault: EntryFault::MetadataSize { .. }
        })]
    ));
    let lying = batch(&[(bare_single(i32::MAX), Vec::new())]);
    assert!(matches!(
        batch_of(1, &lying)[..],
        [Err(BatchError::Entry {
            index: 0,
            fault: EntryFault::PayloadSize { .. }
        })]
    ));

    // A negative count.
    let meta = crate::proto::MessageMetadata {
        num_messages_in_batch: Some(-1),
        ..Default::default()
    };
    assert!(matches!(
        messages(&meta, &data),
        Err(BatchError::Count { count: -1 })
    ));

    // An empty batch, and trailing bytes after the last entry.
    assert!(batch_of(0, &data).is_empty());
    assert_eq!(batch_of(2, &data).len(), 2);
}

proptest! {
    #[test]
    fn the_scanner_agrees_with_prost(
        payload_size in 0..i32::MAX,
        partition_key in proptest::option::of(".{0,12}"),
        ordering_key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        event_time in proptest::option::of(any::<u64>()),
        sequence_id in proptest::option::of(any::<u64>()),
        flags in proptest::array::uniform5(proptest::option::of(any::<bool>())),
        props in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
    ) {
        let single = SingleMessageMetadata {
            properties: props
                .into_iter()
                .map(|(key, value)| crate::proto::KeyValue { key, value })
                .collect(),
            partition_key,
            payload_size,
            compacted_out: flags[0],
            event_time,
            partition_key_b64_encoded: flags[1],
            ordering_key,
            sequence_id,
            null_value: flags[2],
            null_partition_key: flags[3],
        };
        assert_scans_as_prost_decodes(&single);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_batch_iterator(
        count in any::<i32>(),
        data in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let meta = crate::proto::MessageMetadata {
            num_messages_in_batch: Some(count),
            ..Default::default()
        };
        if let Ok(items) = messages(&meta, &data) {
            // Bounded: an error ends the iteration, and each entry takes at
            // least four bytes.
            for (_, fields, payload) in items.take(1024).flatten() {
                prop_assert_eq!(payload.len(), usize::try_from(fields.payload_size).unwrap());
                for property in fields.properties.iter() {
                    let _ = property;
                }
            }
        }
        let _ = single_fields(&data);
    }
}
