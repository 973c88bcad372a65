//! The messages in a payload, as slices of it.
//!
//! A payload whose metadata has `num_messages_in_batch` is a batch: that
//! many entries of
//!
//! ```text
//! [size u32][SingleMessageMetadata][payload of payload_size bytes]
//! ```
//!
//! (as the Java, C++/Python and Rust clients write them); otherwise it is
//! one message. [`messages`] walks either without allocating: each
//! `SingleMessageMetadata` is read by a hand-written scanner (`scan.rs`)
//! that returns keys and properties as slices rather than prost's `String`s
//! and `Vec`s.

mod scan;
#[cfg(test)]
mod tests;

use crate::proto::{KeyValue, MessageMetadata};
use crate::read::{read_u32, slice_at, to_usize};

pub use scan::ScanError;
use scan::{wrong_wire_type, Fields, Value};

/// What a consumer needs of one message's metadata, borrowed from the
/// payload (batched) or the frame's `MessageMetadata` (not batched).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SingleFields<'a> {
    /// The message's length in bytes.
    pub payload_size: u32,
    /// When the event happened, if the producer said; `None` when absent or
    /// zero (Pulsar's "not set").
    pub event_time: Option<u64>,
    /// The producer's sequence id, if it was sent.
    pub sequence_id: Option<u64>,
    /// Removed by topic compaction: the payload is empty and the message is
    /// to be skipped.
    pub compacted_out: bool,
    /// A null value (a tombstone), as opposed to an empty one.
    pub null_value: bool,
    /// The partition key's bytes (a string on the wire; not checked to be
    /// UTF-8 here, unlike prost).
    pub partition_key: Option<&'a [u8]>,
    /// The partition key is base64 (a key that was bytes).
    pub partition_key_b64_encoded: bool,
    pub null_partition_key: bool,
    /// The Key_Shared ordering key, when it differs from the partition key.
    pub ordering_key: Option<&'a [u8]>,
    pub properties: Properties<'a>,
}

/// A message's properties, read only when asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Properties<'a>(PropertiesRepr<'a>);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum PropertiesRepr<'a> {
    #[default]
    None,
    /// The encoded `SingleMessageMetadata` they are in (field 1).
    Encoded(&'a [u8]),
    /// A non-batched message's, already decoded with its `MessageMetadata`.
    Decoded(&'a [KeyValue]),
}

impl<'a> Properties<'a> {
    pub fn is_empty(&self) -> bool {
        match self.0 {
            PropertiesRepr::None => true,
            PropertiesRepr::Encoded(_) => false,
            PropertiesRepr::Decoded(kvs) => kvs.is_empty(),
        }
    }

    /// The `(key, value)` pairs, in order. Keys and values are strings on
    /// the wire, not checked to be UTF-8 here.
    pub fn iter(&self) -> PropertiesIter<'a> {
        let none: &'a [KeyValue] = &[];
        PropertiesIter(match self.0 {
            PropertiesRepr::None => IterRepr::Decoded(none.iter()),
            PropertiesRepr::Encoded(bytes) => IterRepr::Encoded(Fields::new(bytes)),
            PropertiesRepr::Decoded(kvs) => IterRepr::Decoded(kvs.iter()),
        })
    }
}

/// See [`Properties::iter`].
pub struct PropertiesIter<'a>(IterRepr<'a>);

enum IterRepr<'a> {
    Encoded(Fields<'a>),
    Decoded(std::slice::Iter<'a, KeyValue>),
}

impl<'a> Iterator for PropertiesIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Decoded(kvs) => kvs
                .next()
                .map(|kv| Ok((kv.key.as_bytes(), kv.value.as_bytes()))),
            IterRepr::Encoded(fields) => loop {
                match fields.next()? {
                    Err(e) => return Some(Err(e)),
                    Ok((1, Value::Bytes(kv))) => return Some(key_value(kv)),
                    Ok(_) => continue,
                }
            },
        }
    }
}

/// A `KeyValue { key = 1, value = 2 }`; a missing one is empty, as with
/// prost.
fn key_value(bytes: &[u8]) -> Result<(&[u8], &[u8]), ScanError> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Bytes(b)) => key = b,
            (2, Value::Bytes(b)) => value = b,
            (n @ (1 | 2), other) => return Err(wrong_wire_type(n, &other, 2)),
            _ => {}
        }
    }
    Ok((key, value))
}

/// Reads the fields of an encoded `SingleMessageMetadata`.
pub(crate) fn single_fields(bytes: &[u8]) -> Result<SingleFields<'_>, ScanError> {
    let mut fields = SingleFields::default();
    let mut payload_size = None;
    let mut has_properties = false;
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        match (number, value) {
            (1, Value::Bytes(_)) => has_properties = true,
            (2, Value::Bytes(b)) => fields.partition_key = Some(b),
            // int32 on the wire as prost reads it: the low 32 bits.
            (3, Value::Varint(v)) => payload_size = Some(v as i32),
            (4, Value::Varint(v)) => fields.compacted_out = v != 0,
            (5, Value::Varint(v)) => fields.event_time = Some(v).filter(|t| *t != 0),
            (6, Value::Varint(v)) => fields.partition_key_b64_encoded = v != 0,
            (7, Value::Bytes(b)) => fields.ordering_key = Some(b),
            (8, Value::Varint(v)) => fields.sequence_id = Some(v),
            (9, Value::Varint(v)) => fields.null_value = v != 0,
            (10, Value::Varint(v)) => fields.null_partition_key = v != 0,
            (n @ (1 | 2 | 7), other) => return Err(wrong_wire_type(n, &other, 2)),
            (n @ 3..=10, other) => return Err(wrong_wire_type(n, &other, 0)),
            // A field added after this was written: skipped, as prost does.
            _ => {}
        }
    }
    let payload_size = payload_size.ok_or(ScanError::MissingPayloadSize)?;
    fields.payload_size =
        u32::try_from(payload_size).map_err(|_| ScanError::NegativePayloadSize(payload_size))?;
    if has_properties {
        fields.properties = Properties(PropertiesRepr::Encoded(bytes));
    }
    Ok(fields)
}

/// The fields of a message that is not batched, from its frame's metadata.
fn unbatched_fields<'a>(metadata: &'a MessageMetadata, data: &[u8]) -> SingleFields<'a> {
    SingleFields {
        payload_size: u32::try_from(data.len()).unwrap_or(u32::MAX),
        event_time: metadata.event_time.filter(|t| *t != 0),
        sequence_id: Some(metadata.sequence_id),
        compacted_out: false,
        null_value: metadata.null_value.unwrap_or(false),
        partition_key: metadata.partition_key.as_deref().map(str::as_bytes),
        partition_key_b64_encoded: metadata.partition_key_b64_encoded.unwrap_or(false),
        null_partition_key: metadata.null_partition_key.unwrap_or(false),
        ordering_key: metadata.ordering_key.as_deref(),
        properties: Properties(PropertiesRepr::Decoded(&metadata.properties)),
    }
}

/// Why a payload's messages could not be read. Never retryable: the
/// payload's checksum was verified, so the producer wrote it so (the
/// message is to be dead-lettered).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch says it holds {count} messages")]
    Count { count: i32 },
    #[error("batch entry {index}: {fault}")]
    Entry { index: i32, fault: EntryFault },
}

/// What is wrong with one batch entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryFault {
    #[error("the batch ends before it ({left} bytes left)")]
    Truncated { left: usize },
    #[error("metadata of {size} bytes but only {left} left")]
    MetadataSize { size: u32, left: usize },
    #[error("metadata: {0}")]
    Metadata(#[from] ScanError),
    #[error("payload of {size} bytes but only {left} left")]
    PayloadSize { size: u32, left: usize },
}

impl BatchError {
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The batch index of the entry that is wrong.
    pub fn index(&self) -> Option<i32> {
        match self {
            BatchError::Count { .. } => None,
            BatchError::Entry { index, .. } => Some(*index),
        }
    }
}

/// The messages in `data`, a (decompressed) payload described by
/// `metadata`: see [`Messages`].
pub fn messages<'a>(
    metadata: &'a MessageMetadata,
    data: &'a [u8],
) -> Result<Messages<'a>, BatchError> {
    let state = match metadata.num_messages_in_batch {
        None => State::Single(unbatched_fields(metadata, data), data),
        Some(count) if count < 0 => return Err(BatchError::Count { count }),
        Some(count) => State::Batch {
            data,
            pos: 0,
            index: 0,
            count,
        },
    };
    Ok(Messages { state })
}

/// Yields `(batch_index, fields, payload)` per message: the batch index is
/// `None` for a message that was not batched, and `payload` a slice of the
/// data given to [`messages`].
///
/// An entry whose sizes do not fit the data is an error naming its index,
/// and the last item: the entries after it cannot be found. Bytes after the
/// last entry are ignored, as the Java client does.
pub struct Messages<'a> {
    state: State<'a>,
}

enum State<'a> {
    Single(SingleFields<'a>, &'a [u8]),
    Batch {
        data: &'a [u8],
        pos: usize,
        index: i32,
        count: i32,
    },
    Done,
}

/// One message: its batch index, its fields and its bytes.
pub type MessageSlice<'a> = (Option<i32>, SingleFields<'a>, &'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<MessageSlice<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => None,
            State::Single(fields, data) => Some(Ok((None, fields, data))),
            State::Batch {
                data,
                pos,
                index,
                count,
            } => {
                if index >= count {
                    return None;
                }
                match entry(data, pos) {
                    Ok((fields, payload, next)) => {
                        self.state = State::Batch {
                            data,
                            pos: next,
                            // `index < count <= i32::MAX`: cannot overflow.
                            index: index + 1,
                            count,
                        };
                        Some(Ok((Some(index), fields, payload)))
                    }
                    Err(fault) => Some(Err(BatchError::Entry { index, fault })),
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.state {
            State::Done => (0, Some(0)),
            State::Single(..) => (1, Some(1)),
            State::Batch { index, count, .. } => {
                let left = usize::try_from(count.saturating_sub(*index)).unwrap_or(0);
                (0, Some(left))
            }
        }
    }
}

/// The batch entry at `pos` of `data`: its fields, its payload and where
/// the next entry starts.
fn entry(data: &[u8], pos: usize) -> Result<(SingleFields<'_>, &[u8], usize), EntryFault> {
    let left = |at: usize| data.len().saturating_sub(at);
    let size = read_u32(data, pos).ok_or(EntryFault::Truncated { left: left(pos) })?;
    let start = pos + 4;
    let metadata = slice_at(data, start, to_usize(size)).ok_or(EntryFault::MetadataSize {
        size,
        left: left(start),
    })?;
    let fields = single_fields(metadata)?;
    let start = start + metadata.len();
    let payload =
        slice_at(data, start, to_usize(fields.payload_size)).ok_or(EntryFault::PayloadSize {
            size: fields.payload_size,
            left: left(start),
        })?;
    Ok((fields, payload, start + payload.len()))
}
