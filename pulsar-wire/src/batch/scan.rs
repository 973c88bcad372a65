//! A minimal protobuf wire-format reader: the fields of one message, in
//! order, as numbers and borrowed values. Enough to read
//! `SingleMessageMetadata` and `KeyValue` without allocating.

/// Why protobuf bytes could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("protobuf truncated")]
    Truncated,
    #[error("protobuf varint longer than 64 bits")]
    VarintTooLong,
    #[error("protobuf field number {0} is invalid")]
    FieldNumber(u64),
    #[error("protobuf wire type {0} is not supported")]
    WireType(u8),
    #[error("protobuf field {field} has wire type {found}, expected {expected}")]
    WrongWireType { field: u32, found: u8, expected: u8 },
    #[error("payload_size is missing")]
    MissingPayloadSize,
    #[error("payload_size is negative ({0})")]
    NegativePayloadSize(i32),
}

/// A field's value as it is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

impl Value<'_> {
    pub(crate) fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Fixed64 => 1,
            Value::Bytes(_) => 2,
            Value::Fixed32 => 5,
        }
    }
}

/// The fields of one protobuf message. Stops after the first error.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), ScanError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(ScanError::FieldNumber(key >> 3))?;
        // Masked to three bits: the cast cannot truncate.
        let wire_type = (key & 7) as u8;
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| ScanError::Truncated)?;
                Value::Bytes(self.skip(len)?)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed32
            }
            // 3 and 4 are proto2 groups, which Pulsar does not use.
            other => return Err(ScanError::WireType(other)),
        };
        Ok((number, value))
    }

    /// A base-128 varint, as prost reads it: at most ten bytes, the tenth
    /// holding only the 64th bit.
    #[inline]
    fn varint(&mut self) -> Result<u64, ScanError> {
        // Keys, sizes and flags are nearly always one byte.
        if let Some(&byte) = self.bytes.get(self.pos) {
            if byte & 0x80 == 0 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
        }
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.bytes.get(self.pos).ok_or(ScanError::Truncated)?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(ScanError::VarintTooLong);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ScanError::VarintTooLong)
    }

    fn skip(&mut self, len: usize) -> Result<&'a [u8], ScanError> {
        let bytes = crate::read::slice_at(self.bytes, self.pos, len).ok_or(ScanError::Truncated)?;
        self.pos += len;
        Ok(bytes)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.pos = self.bytes.len();
        }
        Some(field)
    }
}

/// The error for a known field with an unexpected wire type (prost refuses
/// those too).
pub(crate) fn wrong_wire_type(field: u32, found: &Value<'_>, expected: u8) -> ScanError {
    ScanError::WrongWireType {
        field,
        found: found.wire_type(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Vec<Result<(u32, Value<'_>), ScanError>> {
        Fields::new(bytes).collect()
    }

    #[test]
    fn reads_every_wire_type() {
        let bytes = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 2, 3, 4, 5, 6, 7, 8, // 2: fixed64
            0x1a, 0x03, b'a', b'b', b'c', // 3: bytes "abc"
            0x25, 1, 2, 3, 4, // 4: fixed32
        ];
        assert_eq!(
            fields(&bytes),
            vec![
                Ok((1, Value::Varint(150))),
                Ok((2, Value::Fixed64)),
                Ok((3, Value::Bytes(b"abc"))),
                Ok((4, Value::Fixed32)),
            ]
        );
    }

    #[test]
    fn varints_of_ten_bytes_and_no_more() {
        let max = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(fields(&max), vec![Ok((1, Value::Varint(u64::MAX)))]);
        let over = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        assert_eq!(fields(&over), vec![Err(ScanError::VarintTooLong)]);
        let eleven = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0,
        ];
        assert_eq!(fields(&eleven), vec![Err(ScanError::VarintTooLong)]);
    }

    #[test]
    fn refuses_what_it_cannot_read_and_stops() {
        assert_eq!(fields(&[0x08]), vec![Err(ScanError::Truncated)]);
        assert_eq!(fields(&[0x1a, 0x05, b'a']), vec![Err(ScanError::Truncated)]);
        assert_eq!(fields(&[0x11, 1, 2]), vec![Err(ScanError::Truncated)]);
        assert_eq!(fields(&[0x00, 0x00]), vec![Err(ScanError::FieldNumber(0))]);
        assert_eq!(
            fields(&[0x0b, 0x08, 0x01]),
            vec![Err(ScanError::WireType(3))]
        );
        assert_eq!(fields(&[0x0e]), vec![Err(ScanError::WireType(6))]);
        // A length beyond any buffer.
        let huge = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(fields(&huge), vec![Err(ScanError::Truncated)]);
    }
}
