//! Schema resolution against the contract's reader schema, compiled to a plan.
//!
//! The reader schema is fixed (it is the contract), so its fields are a Rust
//! table here, checked against `sensor_data.avsc` by a test. A writer schema
//! is compiled once into [`DecodePlan`]: one [`Op`] per writer field, each
//! saying how to read the writer's value and which reader slot it lands in,
//! with the Avro promotions (`int`→`long`/`double`, `long`→`double`,
//! `float`→`double`, `bytes`→`string`) decided at compile time. Reader fields
//! the writer lacks keep their defaults, which are `Reading::default()`.
//! Incompatibilities found at compile time are [`SchemaError`]s; a writer
//! union branch that cannot be read is compiled to a failing op, because the
//! Avro specification makes that an error only when such a datum appears.

use std::collections::HashSet;
use std::fmt;

use apache_avro::schema::{InnerDecimalSchema, Name, NamesRef, ResolvedSchema, UuidSchema};
use apache_avro::Schema;

use super::primitive::{Input, PrimitiveError};
use crate::reading::{Reading, ShortStr};

/// Reader fields of type `int`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntSlot {
    SensorId,
    SensorType,
    Status,
    ErrorCount,
}

/// Reader fields of type `long`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongSlot {
    Timestamp,
    PacketsSent,
    PacketsReceived,
    BytesSent,
    BytesReceived,
}

/// Reader fields of type `double`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubleSlot {
    Temperature,
    Humidity,
    Pressure,
    BatteryLevel,
    Co2Level,
    NoiseLevel,
    LightLevel,
    SignalStrength,
    MemoryUsage,
    CpuUsage,
    Latitude,
    Longitude,
    Altitude,
}

/// Reader fields of type `["null", "string"]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrSlot {
    CustomerId,
    SiteId,
}

/// The type of a reader field, with the slot it fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderType {
    Int(IntSlot),
    Long(LongSlot),
    Double(DoubleSlot),
    /// The only boolean field, `motionDetected`.
    Boolean,
    NullableString(StrSlot),
}

/// One field of the contract's reader schema.
#[derive(Clone, Copy, Debug)]
pub struct ReaderField {
    pub name: &'static str,
    pub ty: ReaderType,
    /// Whether the schema gives a default (then `Reading::default()` holds it).
    pub has_default: bool,
}

const fn field(name: &'static str, ty: ReaderType, has_default: bool) -> ReaderField {
    ReaderField {
        name,
        ty,
        has_default,
    }
}

/// The contract's reader schema, in schema order.
pub const READER_FIELDS: [ReaderField; 25] = {
    use DoubleSlot as D;
    use LongSlot as L;
    use ReaderType::*;
    [
        field("sensorId", Int(IntSlot::SensorId), false),
        field("sensorType", Int(IntSlot::SensorType), false),
        field("timestamp", Long(L::Timestamp), false),
        field("temperature", Double(D::Temperature), false),
        field("humidity", Double(D::Humidity), false),
        field("pressure", Double(D::Pressure), false),
        field("batteryLevel", Double(D::BatteryLevel), false),
        field("status", Int(IntSlot::Status), false),
        field("co2Level", Double(D::Co2Level), true),
        field("noiseLevel", Double(D::NoiseLevel), true),
        field("lightLevel", Double(D::LightLevel), true),
        field("motionDetected", Boolean, true),
        field("signalStrength", Double(D::SignalStrength), true),
        field("memoryUsage", Double(D::MemoryUsage), true),
        field("cpuUsage", Double(D::CpuUsage), true),
        field("errorCount", Int(IntSlot::ErrorCount), true),
        field("packetsSent", Long(L::PacketsSent), true),
        field("packetsReceived", Long(L::PacketsReceived), true),
        field("bytesSent", Long(L::BytesSent), true),
        field("bytesReceived", Long(L::BytesReceived), true),
        field("latitude", Double(D::Latitude), true),
        field("longitude", Double(D::Longitude), true),
        field("altitude", Double(D::Altitude), true),
        field("customerId", NullableString(StrSlot::CustomerId), true),
        field("siteId", NullableString(StrSlot::SiteId), true),
    ]
};

impl Reading {
    #[inline]
    fn set_int(&mut self, slot: IntSlot, v: i32) {
        match slot {
            IntSlot::SensorId => self.sensor_id = v,
            IntSlot::SensorType => self.sensor_type = v,
            IntSlot::Status => self.status = v,
            IntSlot::ErrorCount => self.error_count = v,
        }
    }

    #[inline]
    fn set_long(&mut self, slot: LongSlot, v: i64) {
        match slot {
            LongSlot::Timestamp => self.timestamp_ms = v,
            LongSlot::PacketsSent => self.packets_sent = v,
            LongSlot::PacketsReceived => self.packets_received = v,
            LongSlot::BytesSent => self.bytes_sent = v,
            LongSlot::BytesReceived => self.bytes_received = v,
        }
    }

    #[inline]
    fn set_double(&mut self, slot: DoubleSlot, v: f64) {
        match slot {
            DoubleSlot::Temperature => self.temperature = v,
            DoubleSlot::Humidity => self.humidity = v,
            DoubleSlot::Pressure => self.pressure = v,
            DoubleSlot::BatteryLevel => self.battery_level = v,
            DoubleSlot::Co2Level => self.co2_level = v,
            DoubleSlot::NoiseLevel => self.noise_level = v,
            DoubleSlot::LightLevel => self.light_level = v,
            DoubleSlot::SignalStrength => self.signal_strength = v,
            DoubleSlot::MemoryUsage => self.memory_usage = v,
            DoubleSlot::CpuUsage => self.cpu_usage = v,
            DoubleSlot::Latitude => self.latitude = v,
            DoubleSlot::Longitude => self.longitude = v,
            DoubleSlot::Altitude => self.altitude = v,
        }
    }

    #[inline]
    fn set_str(&mut self, slot: StrSlot, v: Option<ShortStr>) {
        match slot {
            StrSlot::CustomerId => self.customer_id = v,
            StrSlot::SiteId => self.site_id = v,
        }
    }
}

/// How to skip a writer value the reader does not want.
#[derive(Clone, Debug, PartialEq)]
enum Skip {
    Nothing,
    /// `boolean`.
    Byte,
    /// `int`, `long`, `enum` symbol index.
    Varint,
    Float,
    Double,
    /// `bytes`, `string`.
    Bytes,
    Fixed(usize),
    Array(Box<Skip>),
    Map(Box<Skip>),
    Record(Box<[Skip]>),
    Union(Box<[Skip]>),
}

/// One step of a plan: read one writer value, convert, store.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Int(IntSlot),
    IntAsLong(LongSlot),
    Long(LongSlot),
    IntAsDouble(DoubleSlot),
    LongAsDouble(DoubleSlot),
    FloatAsDouble(DoubleSlot),
    Double(DoubleSlot),
    Boolean,
    /// Writer `null` into a nullable string: `None`.
    Null(StrSlot),
    /// Writer `string` or `bytes` into a nullable string: `Some`, UTF-8 checked.
    Str(StrSlot),
    /// A writer union: read the branch index, then that branch's op.
    Union(Box<[Op]>),
    Skip(Skip),
    /// A writer union branch (by index) that the reader field cannot take.
    Fail(u8),
}

/// Why a writer schema cannot be read as the contract schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("the writer schema is not valid Avro: {0}")]
    Parse(String),
    #[error("the writer schema is a {0}, but the contract reads a record")]
    NotARecord(String),
    #[error(
        "the writer schema has no field `{0}`, which the contract requires (it has no default)"
    )]
    MissingField(&'static str),
    #[error("field `{field}`: the writer's {writer} cannot be read as the contract's {reader}")]
    Incompatible {
        field: &'static str,
        writer: String,
        reader: &'static str,
    },
    #[error("field `{0}`: the writer's timestamp unit is not milliseconds (the contract's event time is epoch milliseconds)")]
    TimestampUnit(&'static str),
    #[error("the writer schema refers to type `{0}`, which it does not define")]
    UnknownName(String),
    #[error("the writer schema nests types deeper than {0} levels in an unread field")]
    TooDeep(usize),
}

/// Why one datum could not be decoded. Cheap to build: no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    /// Index into [`READER_FIELDS`] of the field being read, if known.
    pub field: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    Primitive(PrimitiveError),
    InvalidUtf8,
    UnionIndex(i64),
    /// The datum took a union branch that the reader field cannot take.
    IncompatibleBranch(u8),
    /// The datum was decoded but bytes were left over (wrong schema).
    TrailingBytes(usize),
}

impl DecodeError {
    /// A short, stable name of the kind of failure, for metrics labels and
    /// for logging each kind once.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::Primitive(PrimitiveError::Eof) => "truncated",
            DecodeErrorKind::Primitive(PrimitiveError::VarintTooLong) => "bad-varint",
            DecodeErrorKind::Primitive(PrimitiveError::IntOutOfRange) => "int-out-of-range",
            DecodeErrorKind::Primitive(PrimitiveError::BadLength) => "bad-length",
            DecodeErrorKind::Primitive(PrimitiveError::BadBoolean) => "bad-boolean",
            DecodeErrorKind::InvalidUtf8 => "invalid-utf8",
            DecodeErrorKind::UnionIndex(_) => "bad-union-index",
            DecodeErrorKind::IncompatibleBranch(_) => "incompatible-union-branch",
            DecodeErrorKind::TrailingBytes(_) => "trailing-bytes",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DecodeErrorKind::Primitive(PrimitiveError::Eof) => write!(f, "datum ends early")?,
            DecodeErrorKind::Primitive(PrimitiveError::VarintTooLong) => {
                write!(f, "varint longer than 10 bytes")?
            }
            DecodeErrorKind::Primitive(PrimitiveError::IntOutOfRange) => {
                write!(f, "int value does not fit 32 bits")?
            }
            DecodeErrorKind::Primitive(PrimitiveError::BadLength) => write!(f, "negative length")?,
            DecodeErrorKind::Primitive(PrimitiveError::BadBoolean) => {
                write!(f, "boolean byte is neither 0 nor 1")?
            }
            DecodeErrorKind::InvalidUtf8 => write!(f, "string is not UTF-8")?,
            DecodeErrorKind::UnionIndex(i) => write!(f, "union branch index {i} out of range")?,
            DecodeErrorKind::IncompatibleBranch(b) => {
                write!(f, "union branch {b} cannot be read as the contract's type")?
            }
            DecodeErrorKind::TrailingBytes(n) => write!(
                f,
                "{n} bytes left after the datum (written with another schema?)"
            )?,
        }
        if let Some(i) = self.field {
            if let Some(rf) = READER_FIELDS.get(usize::from(i)) {
                write!(f, " in field `{}`", rf.name)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}

/// A writer schema compiled against the contract's reader schema.
#[derive(Clone, Debug)]
pub struct DecodePlan {
    /// One op per writer field, in writer order, with the reader field index
    /// (for error messages) when the field is read.
    ops: Box<[(Op, Option<u8>)]>,
    writer_schema: String,
    /// The writer schema is the contract's, field for field: decode with
    /// straight-line code instead of interpreting `ops` (the common case,
    /// and the shuffle's wire format).
    contract_layout: bool,
}

/// Nesting limit for skipped writer types (guards against recursive types).
const MAX_DEPTH: usize = 32;

impl DecodePlan {
    /// The plan for data written with the contract schema itself.
    pub fn contract() -> Self {
        // The contract schema is embedded and tested to resolve against itself.
        Self::from_json(super::CONTRACT_SCHEMA)
            .unwrap_or_else(|e| unreachable!("embedded contract schema does not resolve: {e}"))
    }

    /// Compiles the plan for a writer schema given as Avro JSON.
    pub fn from_json(writer_json: &str) -> Result<Self, SchemaError> {
        let schema =
            Schema::parse_str(writer_json).map_err(|e| SchemaError::Parse(e.to_string()))?;
        Self::new(&schema)
    }

    pub fn new(writer: &Schema) -> Result<Self, SchemaError> {
        let resolved =
            ResolvedSchema::try_from(writer).map_err(|e| SchemaError::Parse(e.to_string()))?;
        let names = resolved.get_names();
        let record = match deref(writer, names)? {
            Schema::Record(r) => r,
            other => return Err(SchemaError::NotARecord(kind_name(other))),
        };
        let mut ops = Vec::with_capacity(record.fields.len());
        let mut seen = HashSet::new();
        for wf in &record.fields {
            match READER_FIELDS.iter().position(|rf| rf.name == wf.name) {
                Some(idx) => {
                    seen.insert(idx);
                    let rf = &READER_FIELDS[idx];
                    let idx = idx as u8;
                    let op = compile_field(rf, &wf.schema, names)?;
                    ops.push((op, Some(idx)));
                }
                None => ops.push((Op::Skip(compile_skip(&wf.schema, names, 0)?), None)),
            }
        }
        for (i, rf) in READER_FIELDS.iter().enumerate() {
            if !seen.contains(&i) && !rf.has_default {
                return Err(SchemaError::MissingField(rf.name));
            }
        }
        let ops: Box<[(Op, Option<u8>)]> = ops.into();
        let contract_layout = ops.iter().map(|(op, _)| op).eq(contract_ops().iter());
        Ok(DecodePlan {
            ops,
            writer_schema: writer.canonical_form(),
            contract_layout,
        })
    }

    /// The same plan, but always interpreting its ops (tests compare both).
    #[cfg(test)]
    fn interpreted(mut self) -> Self {
        self.contract_layout = false;
        self
    }

    /// The writer schema in Avro's parsing canonical form.
    pub fn writer_schema(&self) -> &str {
        &self.writer_schema
    }

    /// Decodes one datum from `input` into `out` (reset to the defaults
    /// first), leaving `input` after the datum.
    #[inline]
    pub fn decode_from(&self, input: &mut Input<'_>, out: &mut Reading) -> Result<(), DecodeError> {
        if self.contract_layout {
            return decode_contract(input, out);
        }
        *out = Reading::default();
        for (op, field) in self.ops.iter() {
            run(op, input, out).map_err(|kind| DecodeError {
                kind,
                field: *field,
            })?;
        }
        Ok(())
    }

    /// Decodes a datum that must fill `bytes` exactly (one message = one datum).
    pub fn decode(&self, bytes: &[u8], out: &mut Reading) -> Result<(), DecodeError> {
        let mut input = Input::new(bytes);
        self.decode_from(&mut input, out)?;
        match input.remaining().len() {
            0 => Ok(()),
            n => Err(DecodeError {
                kind: DecodeErrorKind::TrailingBytes(n),
                field: None,
            }),
        }
    }
}

/// The ops of the contract schema read as itself, for recognising it.
fn contract_ops() -> &'static [Op] {
    static OPS: std::sync::OnceLock<Vec<Op>> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        use DoubleSlot as D;
        use LongSlot as L;
        let str_union = |s| Op::Union(vec![Op::Null(s), Op::Str(s)].into());
        vec![
            Op::Int(IntSlot::SensorId),
            Op::Int(IntSlot::SensorType),
            Op::Long(L::Timestamp),
            Op::Double(D::Temperature),
            Op::Double(D::Humidity),
            Op::Double(D::Pressure),
            Op::Double(D::BatteryLevel),
            Op::Int(IntSlot::Status),
            Op::Double(D::Co2Level),
            Op::Double(D::NoiseLevel),
            Op::Double(D::LightLevel),
            Op::Boolean,
            Op::Double(D::SignalStrength),
            Op::Double(D::MemoryUsage),
            Op::Double(D::CpuUsage),
            Op::Int(IntSlot::ErrorCount),
            Op::Long(L::PacketsSent),
            Op::Long(L::PacketsReceived),
            Op::Long(L::BytesSent),
            Op::Long(L::BytesReceived),
            Op::Double(D::Latitude),
            Op::Double(D::Longitude),
            Op::Double(D::Altitude),
            str_union(StrSlot::CustomerId),
            str_union(StrSlot::SiteId),
        ]
    })
}

/// Decodes a datum written with the contract schema itself, field by field
/// in straight-line code. Every field is written, so `out` needs no reset.
/// Errors are the same as the interpreted plan's.
#[inline]
fn decode_contract(input: &mut Input<'_>, r: &mut Reading) -> Result<(), DecodeError> {
    #[inline]
    fn at(field: u8) -> impl Fn(PrimitiveError) -> DecodeError {
        move |e| DecodeError {
            kind: DecodeErrorKind::Primitive(e),
            field: Some(field),
        }
    }
    #[inline]
    fn nullable_str(input: &mut Input<'_>, field: u8) -> Result<Option<ShortStr>, DecodeError> {
        let fail = |kind| DecodeError {
            kind,
            field: Some(field),
        };
        match input.read_long().map_err(at(field))? {
            0 => Ok(None),
            1 => {
                let bytes = input.read_bytes().map_err(at(field))?;
                let text =
                    ShortStr::from_utf8(bytes).map_err(|_| fail(DecodeErrorKind::InvalidUtf8))?;
                Ok(Some(text))
            }
            other => Err(fail(DecodeErrorKind::UnionIndex(other))),
        }
    }
    r.sensor_id = input.read_int().map_err(at(0))?;
    r.sensor_type = input.read_int().map_err(at(1))?;
    r.timestamp_ms = input.read_long().map_err(at(2))?;
    r.temperature = input.read_double().map_err(at(3))?;
    r.humidity = input.read_double().map_err(at(4))?;
    r.pressure = input.read_double().map_err(at(5))?;
    r.battery_level = input.read_double().map_err(at(6))?;
    r.status = input.read_int().map_err(at(7))?;
    r.co2_level = input.read_double().map_err(at(8))?;
    r.noise_level = input.read_double().map_err(at(9))?;
    r.light_level = input.read_double().map_err(at(10))?;
    r.motion_detected = input.read_boolean().map_err(at(11))?;
    r.signal_strength = input.read_double().map_err(at(12))?;
    r.memory_usage = input.read_double().map_err(at(13))?;
    r.cpu_usage = input.read_double().map_err(at(14))?;
    r.error_count = input.read_int().map_err(at(15))?;
    r.packets_sent = input.read_long().map_err(at(16))?;
    r.packets_received = input.read_long().map_err(at(17))?;
    r.bytes_sent = input.read_long().map_err(at(18))?;
    r.bytes_received = input.read_long().map_err(at(19))?;
    r.latitude = input.read_double().map_err(at(20))?;
    r.longitude = input.read_double().map_err(at(21))?;
    r.altitude = input.read_double().map_err(at(22))?;
    r.customer_id = nullable_str(input, 23)?;
    r.site_id = nullable_str(input, 24)?;
    Ok(())
}

#[inline]
fn run(op: &Op, input: &mut Input<'_>, out: &mut Reading) -> Result<(), DecodeErrorKind> {
    use DecodeErrorKind::Primitive as P;
    match op {
        Op::Double(s) => out.set_double(*s, input.read_double().map_err(P)?),
        Op::Int(s) => out.set_int(*s, input.read_int().map_err(P)?),
        Op::Long(s) => out.set_long(*s, input.read_long().map_err(P)?),
        Op::IntAsLong(s) => out.set_long(*s, i64::from(input.read_int().map_err(P)?)),
        Op::IntAsDouble(s) => out.set_double(*s, f64::from(input.read_int().map_err(P)?)),
        Op::LongAsDouble(s) => out.set_double(*s, input.read_long().map_err(P)? as f64),
        Op::FloatAsDouble(s) => out.set_double(*s, f64::from(input.read_float().map_err(P)?)),
        Op::Boolean => out.motion_detected = input.read_boolean().map_err(P)?,
        Op::Null(s) => out.set_str(*s, None),
        Op::Str(s) => {
            let bytes = input.read_bytes().map_err(P)?;
            let text = ShortStr::from_utf8(bytes).map_err(|_| DecodeErrorKind::InvalidUtf8)?;
            out.set_str(*s, Some(text));
        }
        Op::Union(branches) => {
            let index = input.read_long().map_err(P)?;
            let branch = usize::try_from(index)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or(DecodeErrorKind::UnionIndex(index))?;
            run(branch, input, out)?;
        }
        Op::Skip(skip) => skip_value(skip, input).map_err(P)?,
        Op::Fail(branch) => return Err(DecodeErrorKind::IncompatibleBranch(*branch)),
    }
    Ok(())
}

fn skip_value(skip: &Skip, input: &mut Input<'_>) -> Result<(), PrimitiveError> {
    match skip {
        Skip::Nothing => Ok(()),
        Skip::Byte => input.skip(1),
        Skip::Varint => input.read_long().map(drop),
        Skip::Float => input.skip(4),
        Skip::Double => input.skip(8),
        Skip::Bytes => input.read_bytes().map(drop),
        Skip::Fixed(n) => input.skip(*n),
        Skip::Record(fields) => fields.iter().try_for_each(|f| skip_value(f, input)),
        Skip::Union(branches) => {
            let index = input.read_long()?;
            let branch = usize::try_from(index)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or(PrimitiveError::BadLength)?;
            skip_value(branch, input)
        }
        Skip::Array(item) => skip_blocks(input, |input| skip_value(item, input)),
        Skip::Map(value) => skip_blocks(input, |input| {
            input.read_bytes()?;
            skip_value(value, input)
        }),
    }
}

/// Arrays and maps are written as blocks: a count (negative: followed by the
/// block's byte size) then the items, ended by a zero count.
fn skip_blocks(
    input: &mut Input<'_>,
    mut item: impl FnMut(&mut Input<'_>) -> Result<(), PrimitiveError>,
) -> Result<(), PrimitiveError> {
    loop {
        let count = input.read_long()?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            let size = input.read_long()?;
            let size = usize::try_from(size).map_err(|_| PrimitiveError::BadLength)?;
            input.skip(size)?;
            continue;
        }
        for _ in 0..count {
            item(input)?;
        }
    }
}

fn deref<'s>(schema: &'s Schema, names: &NamesRef<'s>) -> Result<&'s Schema, SchemaError> {
    match schema {
        Schema::Ref { name } => lookup(name, names),
        other => Ok(other),
    }
}

fn lookup<'s>(name: &Name, names: &NamesRef<'s>) -> Result<&'s Schema, SchemaError> {
    names
        .get(name)
        .copied()
        .ok_or_else(|| SchemaError::UnknownName(name.to_string()))
}

/// The plain Avro type a (possibly logical) writer schema is encoded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoded {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// Anything the reader can never take (records, arrays, enums...).
    Other,
}

fn encoded(schema: &Schema) -> Encoded {
    match schema {
        Schema::Null => Encoded::Null,
        Schema::Boolean => Encoded::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Encoded::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Encoded::Long,
        Schema::Float => Encoded::Float,
        Schema::Double => Encoded::Double,
        Schema::Bytes | Schema::BigDecimal => Encoded::Bytes,
        Schema::Decimal(d) if matches!(d.inner, InnerDecimalSchema::Bytes) => Encoded::Bytes,
        Schema::String => Encoded::String,
        Schema::Uuid(UuidSchema::String) => Encoded::String,
        Schema::Uuid(UuidSchema::Bytes) => Encoded::Bytes,
        _ => Encoded::Other,
    }
}

fn kind_name(schema: &Schema) -> String {
    let kind = apache_avro::schema::SchemaKind::from(schema);
    format!("{kind:?}").to_lowercase()
}

fn reader_type_name(ty: ReaderType) -> &'static str {
    match ty {
        ReaderType::Int(_) => "int",
        ReaderType::Long(_) => "long",
        ReaderType::Double(_) => "double",
        ReaderType::Boolean => "boolean",
        ReaderType::NullableString(_) => "[\"null\", \"string\"]",
    }
}

fn compile_field(
    rf: &ReaderField,
    writer: &Schema,
    names: &NamesRef<'_>,
) -> Result<Op, SchemaError> {
    let writer = deref(writer, names)?;
    if let Schema::Union(u) = writer {
        let mut branches = Vec::with_capacity(u.variants().len());
        for (b, variant) in u.variants().iter().enumerate() {
            let variant = deref(variant, names)?;
            branches.push(compile_scalar(rf, variant)?.unwrap_or(Op::Fail(b as u8)));
        }
        return Ok(Op::Union(branches.into()));
    }
    compile_scalar(rf, writer)?.ok_or_else(|| SchemaError::Incompatible {
        field: rf.name,
        writer: kind_name(writer),
        reader: reader_type_name(rf.ty),
    })
}

/// The op reading a non-union writer value into a reader field, or `None`
/// when the writer type cannot be promoted to the reader's.
fn compile_scalar(rf: &ReaderField, writer: &Schema) -> Result<Option<Op>, SchemaError> {
    if matches!(rf.ty, ReaderType::Long(LongSlot::Timestamp))
        && matches!(
            writer,
            Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos
        )
    {
        return Err(SchemaError::TimestampUnit(rf.name));
    }
    let w = encoded(writer);
    Ok(match (rf.ty, w) {
        (ReaderType::Int(s), Encoded::Int) => Some(Op::Int(s)),
        (ReaderType::Long(s), Encoded::Int) => Some(Op::IntAsLong(s)),
        (ReaderType::Long(s), Encoded::Long) => Some(Op::Long(s)),
        (ReaderType::Double(s), Encoded::Int) => Some(Op::IntAsDouble(s)),
        (ReaderType::Double(s), Encoded::Long) => Some(Op::LongAsDouble(s)),
        (ReaderType::Double(s), Encoded::Float) => Some(Op::FloatAsDouble(s)),
        (ReaderType::Double(s), Encoded::Double) => Some(Op::Double(s)),
        (ReaderType::Boolean, Encoded::Boolean) => Some(Op::Boolean),
        (ReaderType::NullableString(s), Encoded::Null) => Some(Op::Null(s)),
        (ReaderType::NullableString(s), Encoded::String | Encoded::Bytes) => Some(Op::Str(s)),
        _ => None,
    })
}

fn compile_skip(schema: &Schema, names: &NamesRef<'_>, depth: usize) -> Result<Skip, SchemaError> {
    if depth > MAX_DEPTH {
        return Err(SchemaError::TooDeep(MAX_DEPTH));
    }
    let schema = deref(schema, names)?;
    Ok(match encoded(schema) {
        Encoded::Null => Skip::Nothing,
        Encoded::Boolean => Skip::Byte,
        Encoded::Int | Encoded::Long => Skip::Varint,
        Encoded::Float => Skip::Float,
        Encoded::Double => Skip::Double,
        Encoded::Bytes | Encoded::String => Skip::Bytes,
        Encoded::Other => match schema {
            Schema::Enum(_) => Skip::Varint,
            Schema::Fixed(f) | Schema::Duration(f) => Skip::Fixed(f.size),
            Schema::Uuid(UuidSchema::Fixed(f)) => Skip::Fixed(f.size),
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Fixed(f) => Skip::Fixed(f.size),
                InnerDecimalSchema::Bytes => Skip::Bytes,
            },
            Schema::Array(a) => Skip::Array(Box::new(compile_skip(&a.items, names, depth + 1)?)),
            Schema::Map(m) => Skip::Map(Box::new(compile_skip(&m.types, names, depth + 1)?)),
            Schema::Record(r) => Skip::Record(
                r.fields
                    .iter()
                    .map(|f| compile_skip(&f.schema, names, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Union(u) => Skip::Union(
                u.variants()
                    .iter()
                    .map(|v| compile_skip(v, names, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(SchemaError::Incompatible {
                    field: "(unread field)",
                    writer: kind_name(other),
                    reader: "anything",
                })
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::test_support::to_datum;
    use crate::avro::CONTRACT_SCHEMA;
    use apache_avro::types::Value;

    /// The Rust table of reader fields is the contract schema, field for
    /// field, and the defaults it relies on are `Reading::default()`.
    #[test]
    fn reader_table_matches_the_contract_avsc() {
        let schema = Schema::parse_str(CONTRACT_SCHEMA).expect("contract parses");
        let Schema::Record(record) = schema else {
            panic!("contract is a record")
        };
        assert_eq!(record.fields.len(), READER_FIELDS.len());
        for (wf, rf) in record.fields.iter().zip(READER_FIELDS.iter()) {
            assert_eq!(wf.name, rf.name);
            assert_eq!(wf.default.is_some(), rf.has_default, "{}", rf.name);
            if let Some(d) = &wf.default {
                let zero = match d {
                    serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
                    serde_json::Value::Bool(b) => !b,
                    serde_json::Value::Null => true,
                    _ => false,
                };
                assert!(
                    zero,
                    "default of {} is {d}, Reading::default() assumes zero",
                    rf.name
                );
            }
        }
    }

    fn full_value(r: &Reading) -> Value {
        Value::Record(vec![
            ("sensorId".into(), Value::Int(r.sensor_id)),
            ("sensorType".into(), Value::Int(r.sensor_type)),
            ("timestamp".into(), Value::TimestampMillis(r.timestamp_ms)),
            ("temperature".into(), Value::Double(r.temperature)),
            ("humidity".into(), Value::Double(r.humidity)),
            ("pressure".into(), Value::Double(r.pressure)),
            ("batteryLevel".into(), Value::Double(r.battery_level)),
            ("status".into(), Value::Int(r.status)),
            ("co2Level".into(), Value::Double(r.co2_level)),
            ("noiseLevel".into(), Value::Double(r.noise_level)),
            ("lightLevel".into(), Value::Double(r.light_level)),
            ("motionDetected".into(), Value::Boolean(r.motion_detected)),
            ("signalStrength".into(), Value::Double(r.signal_strength)),
            ("memoryUsage".into(), Value::Double(r.memory_usage)),
            ("cpuUsage".into(), Value::Double(r.cpu_usage)),
            ("errorCount".into(), Value::Int(r.error_count)),
            ("packetsSent".into(), Value::Long(r.packets_sent)),
            ("packetsReceived".into(), Value::Long(r.packets_received)),
            ("bytesSent".into(), Value::Long(r.bytes_sent)),
            ("bytesReceived".into(), Value::Long(r.bytes_received)),
            ("latitude".into(), Value::Double(r.latitude)),
            ("longitude".into(), Value::Double(r.longitude)),
            ("altitude".into(), Value::Double(r.altitude)),
            (
                "customerId".into(),
                match &r.customer_id {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(s) => Value::Union(1, Box::new(Value::String(s.as_str().into()))),
                },
            ),
            (
                "siteId".into(),
                match &r.site_id {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(s) => Value::Union(1, Box::new(Value::String(s.as_str().into()))),
                },
            ),
        ])
    }

    fn sample() -> Reading {
        Reading {
            sensor_id: 123_456,
            sensor_type: 8,
            timestamp_ms: 1_760_111_359_123,
            temperature: 21.5,
            humidity: 40.25,
            pressure: 1013.0,
            battery_level: 88.0,
            status: 2,
            co2_level: 415.5,
            noise_level: 33.0,
            light_level: 700.0,
            motion_detected: true,
            signal_strength: -71.0,
            memory_usage: 55.5,
            cpu_usage: 12.5,
            error_count: -3,
            packets_sent: 1 << 40,
            packets_received: 17,
            bytes_sent: 123_456_789_012,
            bytes_received: 5,
            latitude: 52.52,
            longitude: 13.405,
            altitude: 34.0,
            customer_id: Some(ShortStr::new("customer_0042")),
            site_id: None,
        }
    }

    #[test]
    fn decodes_what_apache_avro_encodes_with_the_contract_schema() {
        let schema = Schema::parse_str(CONTRACT_SCHEMA).expect("contract parses");
        let r = sample();
        let bytes = to_datum(&schema, full_value(&r));
        let mut out = Reading::default();
        DecodePlan::contract()
            .decode(&bytes, &mut out)
            .expect("decodes");
        assert_eq!(out, r);
    }

    /// Producers that send only the first eight fields are read with the
    /// reader's defaults for the rest.
    #[test]
    fn eight_field_writer_gets_defaults() {
        let writer = r#"{"type":"record","name":"SensorData","namespace":"com.iot.pipeline.avro","fields":[
            {"name":"sensorId","type":"int"},{"name":"sensorType","type":"int"},
            {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"temperature","type":"double"},{"name":"humidity","type":"double"},
            {"name":"pressure","type":"double"},{"name":"batteryLevel","type":"double"},
            {"name":"status","type":"int"}]}"#;
        let schema = Schema::parse_str(writer).expect("parses");
        let value = Value::Record(vec![
            ("sensorId".into(), Value::Int(7)),
            ("sensorType".into(), Value::Int(3)),
            ("timestamp".into(), Value::TimestampMillis(60_001)),
            ("temperature".into(), Value::Double(1.5)),
            ("humidity".into(), Value::Double(2.5)),
            ("pressure".into(), Value::Double(3.5)),
            ("batteryLevel".into(), Value::Double(4.5)),
            ("status".into(), Value::Int(1)),
        ]);
        let bytes = to_datum(&schema, value);
        let plan = DecodePlan::from_json(writer).expect("resolves");
        let mut out = sample(); // stale values must be reset
        plan.decode(&bytes, &mut out).expect("decodes");
        let expected = Reading {
            sensor_id: 7,
            sensor_type: 3,
            timestamp_ms: 60_001,
            temperature: 1.5,
            humidity: 2.5,
            pressure: 3.5,
            battery_level: 4.5,
            status: 1,
            ..Reading::default()
        };
        assert_eq!(out, expected);
    }

    /// Reordered fields, promotions, extra fields of every kind, and a
    /// nullable union in a different branch order.
    #[test]
    fn resolves_promotions_reordering_and_skips() {
        let writer = r#"{"type":"record","name":"Other","fields":[
            {"name":"extraArr","type":{"type":"array","items":{"type":"record","name":"P","fields":[{"name":"x","type":"string"},{"name":"y","type":["null","float"]}]}}},
            {"name":"status","type":"int"},
            {"name":"timestamp","type":"int"},
            {"name":"temperature","type":"float"},
            {"name":"humidity","type":"long"},
            {"name":"extraMap","type":{"type":"map","values":"P"}},
            {"name":"pressure","type":"int"},
            {"name":"batteryLevel","type":"double"},
            {"name":"sensorType","type":"int"},
            {"name":"extraEnum","type":{"type":"enum","name":"E","symbols":["A","B"]}},
            {"name":"extraFixed","type":{"type":"fixed","name":"F","size":3}},
            {"name":"siteId","type":["string","null"]},
            {"name":"customerId","type":"bytes"},
            {"name":"packetsSent","type":"int"},
            {"name":"sensorId","type":"int"}]}"#;
        let schema = Schema::parse_str(writer).expect("parses");
        let p = |x: &str| {
            Value::Record(vec![
                ("x".into(), Value::String(x.into())),
                ("y".into(), Value::Union(1, Box::new(Value::Float(0.5)))),
            ])
        };
        let value = Value::Record(vec![
            ("extraArr".into(), Value::Array(vec![p("a"), p("b")])),
            ("status".into(), Value::Int(4)),
            ("timestamp".into(), Value::Int(120_000)),
            ("temperature".into(), Value::Float(2.5)),
            ("humidity".into(), Value::Long(60)),
            (
                "extraMap".into(),
                Value::Map([("k".to_string(), p("c"))].into_iter().collect()),
            ),
            ("pressure".into(), Value::Int(999)),
            ("batteryLevel".into(), Value::Double(0.25)),
            ("sensorType".into(), Value::Int(2)),
            ("extraEnum".into(), Value::Enum(1, "B".into())),
            ("extraFixed".into(), Value::Fixed(3, vec![1, 2, 3])),
            (
                "siteId".into(),
                Value::Union(0, Box::new(Value::String("s1".into()))),
            ),
            ("customerId".into(), Value::Bytes(b"c9".to_vec())),
            ("packetsSent".into(), Value::Int(-5)),
            ("sensorId".into(), Value::Int(77)),
        ]);
        let bytes = to_datum(&schema, value);
        let plan = DecodePlan::new(&schema).expect("resolves");
        let mut out = Reading::default();
        plan.decode(&bytes, &mut out).expect("decodes");
        assert_eq!(out.sensor_id, 77);
        assert_eq!(out.status, 4);
        assert_eq!(out.timestamp_ms, 120_000);
        assert_eq!(out.temperature, 2.5);
        assert_eq!(out.humidity, 60.0);
        assert_eq!(out.pressure, 999.0);
        assert_eq!(out.sensor_type, 2);
        assert_eq!(out.site_id.as_ref().map(ShortStr::as_str), Some("s1"));
        assert_eq!(out.customer_id.as_ref().map(ShortStr::as_str), Some("c9"));
        assert_eq!(out.packets_sent, -5);
    }

    #[test]
    fn incompatible_writer_schemas_are_named_errors() {
        let missing = r#"{"type":"record","name":"X","fields":[{"name":"sensorId","type":"int"}]}"#;
        assert_eq!(
            DecodePlan::from_json(missing).unwrap_err(),
            SchemaError::MissingField("sensorType")
        );
        let demotion = CONTRACT_SCHEMA.replacen(
            r#"{"name": "sensorId", "type": "int"}"#,
            r#"{"name": "sensorId", "type": "long"}"#,
            1,
        );
        assert!(matches!(
            DecodePlan::from_json(&demotion).unwrap_err(),
            SchemaError::Incompatible {
                field: "sensorId",
                ..
            }
        ));
        let micros = CONTRACT_SCHEMA.replacen("timestamp-millis", "timestamp-micros", 1);
        assert_eq!(
            DecodePlan::from_json(&micros).unwrap_err(),
            SchemaError::TimestampUnit("timestamp")
        );
        assert!(matches!(
            DecodePlan::from_json(r#""string""#).unwrap_err(),
            SchemaError::NotARecord(_)
        ));
        assert!(matches!(
            DecodePlan::from_json("{not json").unwrap_err(),
            SchemaError::Parse(_)
        ));
    }

    #[test]
    fn union_branch_that_cannot_be_read_fails_only_when_used() {
        let writer = CONTRACT_SCHEMA.replacen(
            r#"{"name": "temperature", "type": "double"}"#,
            r#"{"name": "temperature", "type": ["double", "string"]}"#,
            1,
        );
        let plan = DecodePlan::from_json(&writer).expect("resolves");
        let schema = Schema::parse_str(&writer).expect("parses");
        let mut value = full_value(&sample());
        if let Value::Record(fields) = &mut value {
            fields[3].1 = Value::Union(0, Box::new(Value::Double(5.0)));
        }
        let ok = to_datum(&schema, value.clone());
        let mut out = Reading::default();
        plan.decode(&ok, &mut out).expect("double branch decodes");
        assert_eq!(out.temperature, 5.0);
        if let Value::Record(fields) = &mut value {
            fields[3].1 = Value::Union(1, Box::new(Value::String("hot".into())));
        }
        let bad = to_datum(&schema, value);
        let err = plan.decode(&bad, &mut out).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::IncompatibleBranch(1));
        assert_eq!(
            err.to_string(),
            "union branch 1 cannot be read as the contract's type in field `temperature`"
        );
    }

    /// The straight-line decoder of the contract layout agrees with the
    /// interpreted plan: same readings, same errors, on good and damaged data.
    #[test]
    fn contract_fast_path_agrees_with_the_interpreter() {
        let fast = DecodePlan::contract();
        assert!(fast.contract_layout);
        let slow = DecodePlan::contract().interpreted();
        let eight = DecodePlan::from_json(&CONTRACT_SCHEMA.replacen(
            r#"{"name": "co2Level", "type": "double", "default": 0.0},"#,
            "",
            1,
        ))
        .expect("resolves");
        assert!(
            !eight.contract_layout,
            "another writer schema is interpreted"
        );
        let schema = Schema::parse_str(CONTRACT_SCHEMA).expect("contract parses");
        let mut with_site = sample();
        with_site.site_id = Some(ShortStr::new("site_ä"));
        for r in [sample(), with_site, Reading::default()] {
            let bytes = to_datum(&schema, full_value(&r));
            for cut in 0..=bytes.len() {
                for flip in [None, Some(cut.min(bytes.len().saturating_sub(1)))] {
                    let mut data = bytes[..cut].to_vec();
                    if let Some(i) = flip.filter(|&i| i < data.len()) {
                        data[i] ^= 0x5a;
                    }
                    let (mut a, mut b) = (sample(), Reading::default());
                    let ra = fast.decode(&data, &mut a);
                    let rb = slow.decode(&data, &mut b);
                    assert_eq!(ra, rb, "cut {cut} flip {flip:?}");
                    if ra.is_ok() {
                        assert_eq!(a, b);
                    }
                }
            }
        }
    }

    #[test]
    fn corrupt_datums_are_errors_not_panics() {
        let schema = Schema::parse_str(CONTRACT_SCHEMA).expect("contract parses");
        let bytes = to_datum(&schema, full_value(&sample()));
        let plan = DecodePlan::contract();
        let mut out = Reading::default();
        for cut in 0..bytes.len() {
            let err = plan.decode(&bytes[..cut], &mut out).unwrap_err();
            assert_eq!(err.kind_name(), "truncated", "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            plan.decode(&longer, &mut out).unwrap_err().kind,
            DecodeErrorKind::TrailingBytes(1)
        );
        // Flip every byte: never a panic, and the plan stays usable.
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0xff;
            let _ = plan.decode(&corrupt, &mut out);
        }
        plan.decode(&bytes, &mut out).expect("still decodes");
    }
}
