//! The shuffle's messages on the wire, encoded straight between Weir's
//! envelopes and tonic's buffers.
//!
//! A frame is the protobuf message `weir.shuffle.ShuffleFrame` of
//! proto/weir/shuffle.proto (any protobuf implementation reads it), but it
//! is not built from prost messages: the record batches, nearly all of the
//! bytes, are written by [`wire::write`] into scratch space the encoder
//! keeps and copied into tonic's send buffer in one piece (see
//! [`FrameEncoder`] for why not straight into it), and read straight from
//! tonic's receive buffer into [`RecordBatch`]es (by [`wire::read`]). There
//! is no new `Vec` per batch and no copy into or out of a prost message. Control
//! envelopes (watermarks, barriers, markers) are few and small: prost
//! encodes and decodes those ([`to_proto`], [`from_proto`]).
//!
//! [`SenderCodec`] and [`ReceiverCodec`] are the two ends' tonic codecs.

use prost::bytes::{Buf, BufMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use weir_common::aggregate;
use weir_common::avro::primitive::Input;
use weir_common::position::Position;
use weir_common::reading::Reading;
use weir_common::time::in_datetime_range;
use weir_proto::convert::position_of;
use weir_proto::shuffle as pb;

use super::wire;
use crate::envelope::{Envelope, PartialBatch, RecordBatch};

/// A batch that could not be decoded (a peer speaking another version, or
/// damage).
#[derive(Debug, thiserror::Error)]
#[error("malformed shuffle frame: {0}")]
pub struct FrameError(String);

/// A message of a shuffle stream: envelopes of one partition, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub generation: u64,
    /// Sending worker id (set on the first frame of a stream).
    pub sender: String,
    /// The partition (input index) every envelope belongs to.
    pub input: u32,
    pub envelopes: Vec<Envelope>,
}

/// Field numbers of shuffle.proto.
mod tag {
    /// `ShuffleFrame`.
    pub const GENERATION: u32 = 1;
    pub const SENDER: u32 = 2;
    pub const ENVELOPES: u32 = 3;
    pub const INPUT: u32 = 4;
    /// `Envelope.body`.
    pub const RECORDS: u32 = 1;
    /// `RecordBatch`.
    pub const BATCH_INPUT: u32 = 1;
    pub const COUNT: u32 = 2;
    pub const READINGS: u32 = 3;
    pub const POSITIONS: u32 = 4;
    pub const FORMAT: u32 = 5;
}

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

// ---------------------------------------------------------------------------
// Encoding.

#[inline]
fn put_varint(out: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[inline]
fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Avro's `long` (zig-zag varint), as the positions are written.
#[inline]
fn put_long(out: &mut impl BufMut, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[inline]
fn put_key(out: &mut impl BufMut, tag: u32, wire_type: u32) {
    put_varint(out, u64::from(tag << 3 | wire_type));
}

#[inline]
fn key_len(tag: u32) -> usize {
    varint_len(u64::from(tag << 3))
}

/// A scalar field; proto3 leaves out zeros.
#[inline]
fn put_uint(out: &mut impl BufMut, tag: u32, v: u64) {
    if v != 0 {
        put_key(out, tag, VARINT);
        put_varint(out, v);
    }
}

#[inline]
fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + varint_len(v)
    }
}

/// The key and length of a length-delimited field of `len` bytes.
#[inline]
fn put_len_header(out: &mut impl BufMut, tag: u32, len: usize) {
    put_key(out, tag, LEN);
    put_varint(out, len as u64);
}

/// A nested message (always present) of `len` bytes, with its header.
#[inline]
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + varint_len(len as u64) + len
}

/// A `bytes` field (left out when empty) of `len` bytes, with its header.
#[inline]
fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        message_len(tag, len)
    }
}

#[inline]
fn put_position(out: &mut impl BufMut, p: &Position) {
    match *p {
        Position::Offset(n) => {
            put_long(out, 0);
            put_long(out, n as i64);
        }
        Position::Pulsar {
            ledger,
            entry,
            batch,
        } => {
            put_long(out, 1);
            put_long(out, ledger as i64);
            put_long(out, entry as i64);
            put_long(out, i64::from(batch));
        }
    }
}

/// Where frames are written: a buffer that grows.
pub trait Sink: BufMut {
    fn reserve(&mut self, additional: usize);
}

impl Sink for Vec<u8> {
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

impl Sink for EncodeBuf<'_> {
    fn reserve(&mut self, additional: usize) {
        EncodeBuf::reserve(self, additional);
    }
}

/// Scratch space kept between frames, up to this much.
const SCRATCH_KEEP: usize = 4 << 20;

/// Writes frames (as prost would encode `ShuffleFrame`), keeping its
/// scratch space from one frame to the next.
///
/// A record batch's readings are written once, by [`wire::write`], into
/// the scratch space and copied from there in one piece: a message's
/// length goes before it, and sizing the batch first would take another
/// pass over the in-memory readings, which costs more than that copy of
/// compact, cache-hot bytes.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    readings: Vec<u8>,
    positions: Vec<u8>,
}

impl FrameEncoder {
    /// Appends `frame` to `out`; dead letters cannot be encoded.
    pub fn write(&mut self, frame: &Frame, out: &mut impl Sink) -> Result<(), FrameError> {
        for envelope in &frame.envelopes {
            match envelope {
                Envelope::DeadLetters { input, .. } => {
                    return Err(FrameError(format!(
                        "dead letters of input {input} cannot leave their worker"
                    )))
                }
                Envelope::Records(b)
                    if b.positions.len() != b.len() || u32::try_from(b.len()).is_err() =>
                {
                    return Err(FrameError(format!(
                        "a record batch of input {} with {} readings and {} positions",
                        b.input,
                        b.len(),
                        b.positions.len()
                    )))
                }
                _ => {}
            }
        }
        put_uint(out, tag::GENERATION, frame.generation);
        if !frame.sender.is_empty() {
            put_len_header(out, tag::SENDER, frame.sender.len());
            out.put_slice(frame.sender.as_bytes());
        }
        for envelope in &frame.envelopes {
            match envelope {
                Envelope::Records(batch) => self.write_batch(batch, out),
                other => {
                    if let Some(message) = to_proto(other) {
                        let len = message.encoded_len();
                        out.reserve(message_len(tag::ENVELOPES, len));
                        put_len_header(out, tag::ENVELOPES, len);
                        // Cannot fail: the room is reserved.
                        let _ = message.encode(out);
                    }
                }
            }
        }
        put_uint(out, tag::INPUT, frame.input.into());
        Ok(())
    }

    /// Appends the `Envelope` field of `batch`.
    fn write_batch(&mut self, batch: &RecordBatch, out: &mut impl Sink) {
        self.readings.clear();
        self.positions.clear();
        for r in &batch.readings {
            wire::write(r, &mut self.readings);
        }
        for p in &batch.positions {
            put_position(&mut self.positions, p);
        }
        let count = batch.len() as u32;
        let batch_len = uint_len(tag::BATCH_INPUT, batch.input.into())
            + uint_len(tag::COUNT, count.into())
            + bytes_len(tag::READINGS, self.readings.len())
            + bytes_len(tag::POSITIONS, self.positions.len())
            + uint_len(tag::FORMAT, wire::FORMAT.into());
        let envelope_len = message_len(tag::RECORDS, batch_len);
        out.reserve(message_len(tag::ENVELOPES, envelope_len));
        put_len_header(out, tag::ENVELOPES, envelope_len);
        put_len_header(out, tag::RECORDS, batch_len);
        put_uint(out, tag::BATCH_INPUT, batch.input.into());
        put_uint(out, tag::COUNT, count.into());
        for (field, bytes) in [
            (tag::READINGS, &self.readings),
            (tag::POSITIONS, &self.positions),
        ] {
            if !bytes.is_empty() {
                put_len_header(out, field, bytes.len());
                out.put_slice(bytes);
            }
        }
        put_uint(out, tag::FORMAT, wire::FORMAT.into());
        for scratch in [&mut self.readings, &mut self.positions] {
            scratch.shrink_to(SCRATCH_KEEP);
        }
    }
}

/// Encodes an envelope as a prost message; `None` for dead letters, which
/// stay in the source's process (see [`Envelope::DeadLetters`]).
pub fn to_proto(envelope: &Envelope) -> Option<pb::Envelope> {
    use pb::envelope::Body;
    let body = match envelope {
        Envelope::Records(batch) => {
            let mut readings = Vec::with_capacity(batch.len() * wire::MIN_BYTES);
            for r in &batch.readings {
                wire::write(r, &mut readings);
            }
            let mut positions = Vec::with_capacity(batch.len() * 2);
            for p in &batch.positions {
                put_position(&mut positions, p);
            }
            Body::Records(pb::RecordBatch {
                input: batch.input,
                count: batch.len() as u32,
                readings,
                positions,
                format: wire::FORMAT,
            })
        }
        Envelope::Partials(batch) => Body::Partials(encode_partials(batch)),
        Envelope::Watermark { input, watermark } => Body::Watermark(pb::Watermark {
            input: *input,
            watermark: *watermark,
        }),
        Envelope::Idle { input } => Body::Idle(pb::Mark {
            input: *input,
            through: None,
        }),
        Envelope::Closed { input } => Body::Closed(pb::Mark {
            input: *input,
            through: None,
        }),
        Envelope::End { input, through } => Body::End(pb::Mark {
            input: *input,
            through: through.map(Into::into),
        }),
        Envelope::Barrier {
            input,
            checkpoint,
            through,
            watermark,
        } => Body::Barrier(pb::Barrier {
            input: *input,
            checkpoint: *checkpoint,
            through: through.map(Into::into),
            watermark: *watermark,
        }),
        Envelope::DeadLetters { .. } => return None,
    };
    Some(pb::Envelope { body: Some(body) })
}

// ---------------------------------------------------------------------------
// Decoding.

/// A field's value: varints and length-delimited bytes (fixed-width values
/// are only skipped: the shuffle has none).
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message, in order.
struct Fields<'a> {
    buf: &'a [u8],
    /// The message, for errors.
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Fields { buf, what }
    }

    fn error(&self, problem: &str) -> FrameError {
        FrameError(format!("{}: {problem}", self.what))
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(self.error(if self.buf.len() < 10 {
            "truncated varint"
        } else {
            "invalid varint"
        }))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.buf.len() {
            return Err(self.error(&format!(
                "a field of {n} bytes with {} left",
                self.buf.len()
            )));
        }
        let (field, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(field)
    }

    /// The next field (tag and value), `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, FrameError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| self.error(&format!("invalid field key {key}")))?;
        let value = match (key & 7) as u32 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                Value::Bytes(self.take(n)?)
            }
            FIXED64 => {
                self.take(8)?;
                Value::Fixed
            }
            FIXED32 => {
                self.take(4)?;
                Value::Fixed
            }
            other => {
                return Err(self.error(&format!("unsupported wire type {other} (field {tag})")))
            }
        };
        Ok(Some((tag, value)))
    }

    fn wrong_type(&self, tag: u32) -> FrameError {
        self.error(&format!("field {tag} has the wrong wire type"))
    }
}

/// Decodes a `ShuffleFrame` message.
pub fn decode_frame(buf: &[u8]) -> Result<Frame, FrameError> {
    let mut frame = Frame::default();
    let mut fields = Fields::new(buf, "frame");
    while let Some((tag, value)) = fields.next()? {
        match (tag, value) {
            (tag::GENERATION, Value::Varint(v)) => frame.generation = v,
            (tag::SENDER, Value::Bytes(b)) => {
                frame.sender = std::str::from_utf8(b)
                    .map_err(|_| fields.error("the sender is not UTF-8"))?
                    .to_owned();
            }
            (tag::ENVELOPES, Value::Bytes(b)) => frame.envelopes.push(decode_envelope(b)?),
            // uint32 as protobuf reads it: the low 32 bits.
            (tag::INPUT, Value::Varint(v)) => frame.input = v as u32,
            (tag::GENERATION | tag::SENDER | tag::ENVELOPES | tag::INPUT, _) => {
                return Err(fields.wrong_type(tag))
            }
            // Fields of a later version.
            _ => {}
        }
    }
    Ok(frame)
}

/// Decodes an `Envelope` message: a record batch (as [`FrameEncoder`]
/// writes it) straight into a [`RecordBatch`], anything else through prost.
fn decode_envelope(buf: &[u8]) -> Result<Envelope, FrameError> {
    let mut fields = Fields::new(buf, "envelope");
    if let Some((tag::RECORDS, Value::Bytes(batch))) = fields.next()? {
        if fields.buf.is_empty() {
            return decode_batch(batch).map(Envelope::Records);
        }
    }
    let message =
        pb::Envelope::decode(buf).map_err(|e| FrameError(format!("undecodable envelope: {e}")))?;
    from_proto(message)
}

/// Decodes a `RecordBatch` message.
fn decode_batch(buf: &[u8]) -> Result<RecordBatch, FrameError> {
    let (mut input, mut count, mut format) = (0, 0, 0);
    let (mut readings, mut positions): (&[u8], &[u8]) = (&[], &[]);
    let mut fields = Fields::new(buf, "record batch");
    while let Some((tag, value)) = fields.next()? {
        match (tag, value) {
            (tag::BATCH_INPUT, Value::Varint(v)) => input = v as u32,
            (tag::COUNT, Value::Varint(v)) => count = v as u32,
            (tag::READINGS, Value::Bytes(b)) => readings = b,
            (tag::POSITIONS, Value::Bytes(b)) => positions = b,
            (tag::FORMAT, Value::Varint(v)) => format = v as u32,
            (tag::BATCH_INPUT..=tag::FORMAT, _) => return Err(fields.wrong_type(tag)),
            _ => {}
        }
    }
    records(input, count, format, readings, positions)
}

/// The batch of `count` readings and positions in `format`.
fn records(
    input: u32,
    count: u32,
    format: u32,
    readings: &[u8],
    positions: &[u8],
) -> Result<RecordBatch, FrameError> {
    if format != wire::FORMAT {
        return Err(FrameError(format!(
            "record batch in format {format}, this worker reads format {} (are all workers the same version?)",
            wire::FORMAT
        )));
    }
    let bad = |what: &str| FrameError(format!("record batch of input {input}: {what}"));
    let n = count as usize;
    // Before allocating for them: a damaged count must not ask for
    // gigabytes.
    if n > readings.len() / wire::MIN_BYTES {
        return Err(bad(&format!(
            "{n} readings cannot fit in {} bytes",
            readings.len()
        )));
    }
    let mut batch = RecordBatch::with_capacity(input, n);
    let mut readings = Input::new(readings);
    let mut positions = Input::new(positions);
    for _ in 0..n {
        // Decode straight into the batch.
        batch.readings.push(Reading::default());
        if let Some(r) = batch.readings.last_mut() {
            wire::read(&mut readings, r).map_err(|e| bad(&format!("reading: {e:?}")))?;
        }
        let mut long = || {
            positions
                .read_long()
                .map_err(|_| bad("positions end early"))
        };
        let position = match long()? {
            0 => Position::Offset(long()? as u64),
            1 => Position::Pulsar {
                ledger: long()? as u64,
                entry: long()? as u64,
                batch: long()? as i32,
            },
            k => return Err(bad(&format!("unknown position kind {k}"))),
        };
        batch.positions.push(position);
    }
    if !readings.is_empty() || !positions.is_empty() {
        return Err(bad("bytes left after its records"));
    }
    Ok(batch)
}

fn encode_partials(batch: &PartialBatch) -> pb::Partials {
    let mut accumulators = Vec::with_capacity(batch.partials.len() * 320);
    let mut scratch = Vec::with_capacity(512);
    for (sensor, acc) in &batch.partials {
        scratch.clear();
        aggregate::codec::encode(acc, &mut scratch);
        accumulators.extend_from_slice(&sensor.to_le_bytes());
        // An encoded accumulator is a few hundred bytes plus two
        // identifiers read from one message or file block: far below 4 GiB.
        accumulators.extend_from_slice(&(scratch.len() as u32).to_le_bytes());
        accumulators.extend_from_slice(&scratch);
    }
    pb::Partials {
        input: batch.input,
        window_end: batch.window_end,
        count: batch.partials.len() as u32,
        accumulators,
    }
}

/// Fewest bytes of one accumulator as [`encode_partials`] writes it: the
/// sensor, the length and the shortest encoding of an accumulator (one
/// reading, no identifiers) are more than this.
const MIN_PARTIAL_BYTES: usize = 8 + 100;

fn decode_partials(p: &pb::Partials) -> Result<PartialBatch, FrameError> {
    let bad = |what: String| {
        FrameError(format!(
            "pre-aggregated readings of input {} (window ending {}): {what}",
            p.input, p.window_end
        ))
    };
    let n = p.count as usize;
    // Before allocating for them: a damaged count must not ask for
    // gigabytes.
    if n > p.accumulators.len() / MIN_PARTIAL_BYTES {
        return Err(bad(format!(
            "{n} accumulators cannot fit in {} bytes",
            p.accumulators.len()
        )));
    }
    if !in_datetime_range(p.window_end.saturating_sub(1), 1) {
        return Err(bad("the window end is out of range".into()));
    }
    // Bounded by the sender's envelopes, whatever the count says.
    let mut partials = Vec::with_capacity(n.min(crate::combine::PER_ENVELOPE));
    let mut input = Input::new(&p.accumulators);
    for _ in 0..n {
        let truncated = |_| bad("truncated".into());
        let sensor = i32::from_le_bytes(input.read_fixed::<4>().map_err(truncated)?);
        let len = u32::from_le_bytes(input.read_fixed::<4>().map_err(truncated)?);
        let bytes = input.take(len as usize).map_err(truncated)?;
        let acc = aggregate::codec::decode(bytes)
            .map_err(|e| bad(format!("the accumulator of sensor {sensor}: {e}")))?;
        // No reading, or more than any window holds (sums must not
        // overflow when merged).
        if acc.count == 0 || acc.count > u64::from(u32::MAX) {
            return Err(bad(format!(
                "the accumulator of sensor {sensor} holds {} readings",
                acc.count
            )));
        }
        partials.push((sensor, acc));
    }
    if !input.is_empty() {
        return Err(bad("bytes left after its accumulators".into()));
    }
    Ok(PartialBatch {
        input: p.input,
        window_end: p.window_end,
        partials,
    })
}

/// Decodes an envelope from its prost message.
pub fn from_proto(envelope: pb::Envelope) -> Result<Envelope, FrameError> {
    use pb::envelope::Body;
    Ok(match envelope.body {
        Some(Body::Records(b)) => Envelope::Records(records(
            b.input,
            b.count,
            b.format,
            &b.readings,
            &b.positions,
        )?),
        Some(Body::Partials(p)) => Envelope::Partials(decode_partials(&p)?),
        Some(Body::Watermark(w)) => Envelope::Watermark {
            input: w.input,
            watermark: w.watermark,
        },
        Some(Body::Idle(m)) => Envelope::Idle { input: m.input },
        Some(Body::Closed(m)) => Envelope::Closed { input: m.input },
        Some(Body::End(m)) => Envelope::End {
            input: m.input,
            through: position_of(&m.through),
        },
        Some(Body::Barrier(b)) => Envelope::Barrier {
            input: b.input,
            checkpoint: b.checkpoint,
            through: position_of(&b.through),
            watermark: b.watermark,
        },
        None => return Err(FrameError("envelope without a body".into())),
    })
}

// ---------------------------------------------------------------------------
// tonic.

/// The sending end's codec: frames out, the summary back.
#[derive(Clone, Copy, Debug, Default)]
pub struct SenderCodec;

/// The receiving end's codec: frames in, the summary out.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiverCodec;

impl Codec for SenderCodec {
    type Encode = Frame;
    type Decode = pb::ShuffleSummary;
    type Encoder = FrameEncoder;
    type Decoder = SummaryDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder::default()
    }

    fn decoder(&mut self) -> SummaryDecoder {
        SummaryDecoder
    }
}

impl Codec for ReceiverCodec {
    type Encode = pb::ShuffleSummary;
    type Decode = Frame;
    type Encoder = SummaryEncoder;
    type Decoder = FrameDecoder;

    fn encoder(&mut self) -> SummaryEncoder {
        SummaryEncoder
    }

    fn decoder(&mut self) -> FrameDecoder {
        FrameDecoder
    }
}

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, frame: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.write(&frame, dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Reads frames straight from tonic's buffer.
#[derive(Debug)]
pub struct FrameDecoder;

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Frame>, Status> {
        let len = src.remaining();
        // The message is one contiguous chunk of tonic's buffer; the whole
        // of it is consumed, decoded or not.
        let frame = if src.chunk().len() >= len {
            let frame = decode_frame(&src.chunk()[..len]);
            src.advance(len);
            frame
        } else {
            decode_frame(&src.copy_to_bytes(len))
        };
        frame
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

#[derive(Debug)]
pub struct SummaryEncoder;

impl Encoder for SummaryEncoder {
    type Item = pb::ShuffleSummary;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the shuffle summary: {e}")))
    }
}

#[derive(Debug)]
pub struct SummaryDecoder;

impl Decoder for SummaryDecoder {
    type Item = pb::ShuffleSummary;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::ShuffleSummary::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable shuffle summary: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::avro::primitive::write_long;
    use weir_common::reading::ShortStr;

    fn batch(input: u32, n: usize) -> RecordBatch {
        let mut batch = RecordBatch::with_capacity(input, n);
        for i in 0..n {
            batch.push(
                Reading {
                    sensor_id: i as i32 - 3,
                    timestamp_ms: 1_700_000_000_000 + i as i64,
                    temperature: 1.5 * i as f64,
                    motion_detected: i % 2 == 0,
                    customer_id: (i % 3 != 0).then(|| ShortStr::new(&format!("customer_{i:04}"))),
                    site_id: (i % 4 == 1).then(|| ShortStr::new(&"ü".repeat(i % 40))),
                    ..Reading::default()
                },
                if i % 2 == 0 {
                    Position::Offset(i as u64 * 1000)
                } else {
                    Position::Pulsar {
                        ledger: i as u64,
                        entry: u64::MAX - i as u64,
                        batch: -1,
                    }
                },
            );
        }
        batch
    }

    /// Every kind of envelope that crosses workers.
    fn envelopes() -> Vec<Envelope> {
        let mut two = RecordBatch::with_capacity(3, 2);
        two.push(
            Reading {
                sensor_id: 5,
                timestamp_ms: 1_700_000_000_000,
                temperature: 1.5,
                customer_id: Some(ShortStr::new("c")),
                ..Reading::default()
            },
            Position::Offset(42),
        );
        two.push(
            Reading {
                sensor_id: -1,
                ..Reading::default()
            },
            Position::Pulsar {
                ledger: 7,
                entry: 9,
                batch: -1,
            },
        );
        vec![
            Envelope::Records(two),
            Envelope::Watermark {
                input: 2,
                watermark: -77,
            },
            Envelope::Watermark {
                input: 2,
                watermark: 5,
            },
            Envelope::Idle { input: 1 },
            Envelope::End {
                input: 0,
                through: Some(Position::Pulsar {
                    ledger: 1,
                    entry: 2,
                    batch: 3,
                }),
            },
            Envelope::End {
                input: 0,
                through: None,
            },
            Envelope::Closed { input: 3 },
            Envelope::Barrier {
                input: 4,
                checkpoint: 17,
                through: Some(Position::Offset(99)),
                watermark: 1_700_000_000_000,
            },
            Envelope::Barrier {
                input: 0,
                checkpoint: 0,
                through: None,
                watermark: i64::MIN,
            },
            Envelope::Records(batch(0, 0)),
            Envelope::Records(batch(7, 50)),
            Envelope::Partials(partials(3, 0)),
            Envelope::Partials(partials(3, 40)),
        ]
    }

    /// Accumulators of `n` sensors, some of one reading (the short form of
    /// the state store's encoding), some of several.
    fn partials(input: u32, n: usize) -> PartialBatch {
        let readings = batch(input, n * 3);
        let mut partials: Vec<(i32, weir_common::aggregate::Accumulator)> = Vec::new();
        for (i, r) in readings.readings.iter().enumerate() {
            let sensor = (i % n.max(1)) as i32 * 17 - 100;
            match partials.iter_mut().find(|(s, _)| *s == sensor) {
                Some((_, acc)) if i % 5 != 0 => acc.add(r),
                Some(_) => {}
                None => partials.push((sensor, weir_common::aggregate::Accumulator::new(r))),
            }
        }
        PartialBatch {
            input,
            window_end: 1_700_000_040_000,
            partials,
        }
    }

    #[test]
    fn malformed_partials_are_errors() {
        let good = to_proto(&Envelope::Partials(partials(1, 4))).expect("encodes");
        let set = |f: &dyn Fn(&mut pb::Partials)| {
            let mut e = good.clone();
            if let Some(pb::envelope::Body::Partials(p)) = &mut e.body {
                f(p);
            }
            from_proto(e)
        };
        assert!(set(&|_| {}).is_ok());
        for (what, damage) in [
            (
                "count too high",
                &(|p: &mut pb::Partials| p.count = 5) as &dyn Fn(&mut pb::Partials),
            ),
            ("count absurd", &|p| p.count = u32::MAX),
            ("count too low", &|p| p.count = 3),
            ("cut short", &|p| {
                p.accumulators.pop();
            }),
            ("length beyond the end", &|p| p.accumulators[4] = 0xff),
            ("damaged accumulator", &|p| p.accumulators[8] = 0x7f),
            ("window end before 1970", &|p| p.window_end = 0),
            ("window end beyond 2106", &|p| p.window_end = i64::MAX),
        ] {
            let err = set(damage).expect_err(what);
            assert!(
                err.to_string()
                    .contains("pre-aggregated readings of input 1"),
                "{what}: {err}"
            );
        }
    }

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        FrameEncoder::default()
            .write(frame, &mut out)
            .expect("encodes");
        out
    }

    fn frame(envelopes: Vec<Envelope>) -> Frame {
        Frame {
            generation: 12,
            sender: "w-1".into(),
            input: 4,
            envelopes,
        }
    }

    /// The same frame as prost messages.
    fn proto(frame: &Frame) -> pb::ShuffleFrame {
        pb::ShuffleFrame {
            generation: frame.generation,
            sender: frame.sender.clone(),
            envelopes: frame
                .envelopes
                .iter()
                .map(|e| to_proto(e).expect("encodes"))
                .collect(),
            input: frame.input,
        }
    }

    #[test]
    fn envelopes_round_trip() {
        for envelope in envelopes() {
            let back = from_proto(to_proto(&envelope).expect("encodes")).expect("decodes");
            assert_eq!(back, envelope);
        }
    }

    #[test]
    fn frames_round_trip_and_are_protobuf() {
        for f in [
            frame(envelopes()),
            frame(Vec::new()),
            Frame::default(),
            Frame {
                generation: u64::MAX,
                sender: String::new(),
                input: u32::MAX,
                envelopes: vec![Envelope::Records(batch(u32::MAX, 3))],
            },
        ] {
            let bytes = encode(&f);
            assert_eq!(decode_frame(&bytes).expect("decodes"), f);
            // What prost writes, byte for byte, and reads back.
            let proto = proto(&f);
            assert_eq!(bytes, proto.encode_to_vec());
            assert_eq!(pb::ShuffleFrame::decode(&bytes[..]).expect("prost"), proto);
        }
        // Each envelope alone, too.
        for envelope in envelopes() {
            let f = frame(vec![envelope]);
            assert_eq!(encode(&f), proto(&f).encode_to_vec());
        }
    }

    #[test]
    fn other_valid_encodings_are_read() {
        let f = frame(envelopes());
        let mut proto = proto(&f);
        // Unknown fields (a later version) are skipped, at every level.
        let mut bytes = proto.encode_to_vec();
        bytes.extend_from_slice(&[
            9 << 3,
            1,
            10 << 3 | 2,
            2,
            0xAA,
            0xBB,
            11 << 3 | 5,
            1,
            2,
            3,
            4,
        ]);
        assert_eq!(decode_frame(&bytes).expect("unknown fields"), f);
        if let Some(pb::envelope::Body::Records(b)) = &mut proto.envelopes[0].body {
            // A field repeated (the last value wins) and an unknown one.
            let mut batch = b.encode_to_vec();
            batch.extend_from_slice(&[1 << 3, 9, 1 << 3, 3]);
            batch.extend_from_slice(&[6 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            let mut envelope = Vec::new();
            put_len_header(&mut envelope, tag::RECORDS, batch.len());
            envelope.extend_from_slice(&batch);
            let mut bytes = Vec::new();
            put_len_header(&mut bytes, tag::ENVELOPES, envelope.len());
            bytes.extend_from_slice(&envelope);
            let back = decode_frame(&bytes).expect("batch with an unknown field");
            assert_eq!(back.envelopes, f.envelopes[..1]);
        }
        // An envelope whose records field is not alone goes through prost.
        let mut envelope = pb::Envelope {
            body: Some(pb::envelope::Body::Idle(pb::Mark {
                input: 1,
                through: None,
            })),
        }
        .encode_to_vec();
        envelope.extend(proto.envelopes[0].encode_to_vec());
        let mut bytes = Vec::new();
        put_len_header(&mut bytes, tag::ENVELOPES, envelope.len());
        bytes.extend_from_slice(&envelope);
        let back = decode_frame(&bytes).expect("oneof set twice");
        assert_eq!(back.envelopes, f.envelopes[..1], "the last value wins");
    }

    #[test]
    fn positions_are_avro_longs() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -65,
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ] {
            let (mut ours, mut avro) = (Vec::new(), Vec::new());
            put_long(&mut ours, v);
            write_long(&mut avro, v);
            assert_eq!(ours, avro, "{v}");
        }
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
            assert_eq!(Fields::new(&out, "test").varint().expect("reads"), v);
        }
    }

    #[test]
    fn malformed_batches_are_errors() {
        let mut batch = RecordBatch::with_capacity(0, 1);
        batch.push(Reading::default(), Position::Offset(1));
        let mut encoded = to_proto(&Envelope::Records(batch)).expect("encodes");
        let set = |e: &mut pb::Envelope, f: &dyn Fn(&mut pb::RecordBatch)| {
            if let Some(pb::envelope::Body::Records(b)) = &mut e.body {
                f(b);
            }
        };
        set(&mut encoded, &|b| b.count = 2);
        let err = from_proto(encoded.clone()).unwrap_err().to_string();
        assert!(err.contains("cannot fit"), "{err}");
        // A count the bytes could hold, but the records are not there.
        set(&mut encoded, &|b| b.readings.extend([0; wire::MIN_BYTES]));
        assert!(from_proto(encoded.clone()).is_err());
        // A damaged count must not allocate for it.
        set(&mut encoded, &|b| b.count = u32::MAX);
        assert!(from_proto(encoded.clone()).is_err());
        set(&mut encoded, &|b| {
            b.count = 1;
            b.readings.truncate(wire::MIN_BYTES);
            b.positions.push(0);
        });
        let err = from_proto(encoded.clone()).unwrap_err().to_string();
        assert!(err.contains("bytes left"), "{err}");
        set(&mut encoded, &|b| {
            b.positions = vec![4, 2];
        });
        let err = from_proto(encoded.clone()).unwrap_err().to_string();
        assert!(err.contains("position kind 2"), "{err}");
        set(&mut encoded, &|b| {
            b.positions = vec![0, 2];
            b.format = 99;
        });
        let err = from_proto(encoded.clone()).unwrap_err().to_string();
        assert!(err.contains("format 99"), "{err}");
        // The same, through the codec.
        let bytes = pb::ShuffleFrame {
            envelopes: vec![encoded],
            ..Default::default()
        }
        .encode_to_vec();
        let err = decode_frame(&bytes).unwrap_err().to_string();
        assert!(err.contains("format 99"), "{err}");
        assert!(from_proto(pb::Envelope { body: None }).is_err());
        let empty = pb::ShuffleFrame {
            envelopes: vec![pb::Envelope { body: None }],
            ..Default::default()
        };
        assert!(decode_frame(&empty.encode_to_vec()).is_err());
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let f = frame(envelopes());
        let bytes = encode(&f);
        // Cut anywhere: an error, or (cut between fields) a prefix.
        for cut in 0..bytes.len() {
            if let Ok(back) = decode_frame(&bytes[..cut]) {
                assert!(
                    back != f && f.envelopes.starts_with(&back.envelopes),
                    "cut {cut}: {back:?}"
                );
            }
        }
        // Any byte changed: decoded or refused, never a panic.
        let mut damaged = bytes.clone();
        for i in 0..bytes.len() {
            for v in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff] {
                damaged[i] = v;
                let _ = decode_frame(&damaged);
            }
            damaged[i] = bytes[i];
        }
        // Invalid UTF-8 in a sender and an identifier.
        let mut bad = Vec::new();
        put_len_header(&mut bad, tag::SENDER, 2);
        bad.extend_from_slice(&[0xc3, 0x28]);
        let err = decode_frame(&bad).unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
        let mut one = RecordBatch::with_capacity(0, 1);
        one.push(
            Reading {
                customer_id: Some(ShortStr::new("ab")),
                ..Reading::default()
            },
            Position::Offset(0),
        );
        let mut bytes = encode(&frame(vec![Envelope::Records(one)]));
        let at = bytes
            .windows(2)
            .position(|w| w == b"ab")
            .expect("the identifier");
        bytes[at] = 0xff;
        let err = decode_frame(&bytes).unwrap_err().to_string();
        assert!(err.contains("NotUtf8"), "{err}");
        // Wire types: a group, a varint where bytes belong, a 0 tag.
        for bad in [&[3 << 3 | 3][..], &[3 << 3, 1], &[0, 1], &[0xff; 11]] {
            assert!(decode_frame(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dead_letters_do_not_encode() {
        let f = frame(vec![Envelope::DeadLetters {
            input: 4,
            letters: Vec::new(),
        }]);
        assert!(FrameEncoder::default().write(&f, &mut Vec::new()).is_err());
    }
}
