//! Avro's binary primitives: zig-zag varints, little-endian floats and
//! length-prefixed bytes, read from a slice and written to a `Vec`.

/// What went wrong reading a primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimitiveError {
    /// The datum ended in the middle of a value.
    Eof,
    /// A varint ran past 10 bytes.
    VarintTooLong,
    /// An `int` did not fit 32 bits.
    IntOutOfRange,
    /// A length or count was negative or implausibly large.
    BadLength,
    /// A boolean byte other than 0 or 1.
    BadBoolean,
}

#[inline(always)]
fn zigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A read cursor over one datum (or one container block).
pub struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Input { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A zig-zag varint. Most of this job's varints are one byte (types,
    /// statuses, union branches, lengths): that case is inlined; longer ones
    /// are read without a bounds check per byte when ten bytes remain.
    #[inline(always)]
    pub fn read_long(&mut self) -> Result<i64, PrimitiveError> {
        if let Some(&byte) = self.buf.get(self.pos) {
            if byte & 0x80 == 0 {
                self.pos += 1;
                return Ok(zigzag(u64::from(byte)));
            }
        }
        self.read_long_multibyte()
    }

    #[inline(never)]
    fn read_long_multibyte(&mut self) -> Result<i64, PrimitiveError> {
        if let Some(bytes) = self.buf.get(self.pos..).and_then(|r| r.first_chunk::<10>()) {
            let mut value: u64 = 0;
            for (i, &byte) in bytes.iter().enumerate() {
                value |= u64::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    self.pos += i + 1;
                    return Ok(zigzag(value));
                }
            }
            return Err(PrimitiveError::VarintTooLong);
        }
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(PrimitiveError::Eof);
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(zigzag(value));
            }
            shift += 7;
            if shift > 63 {
                return Err(PrimitiveError::VarintTooLong);
            }
        }
    }

    #[inline(always)]
    pub fn read_int(&mut self) -> Result<i32, PrimitiveError> {
        i32::try_from(self.read_long()?).map_err(|_| PrimitiveError::IntOutOfRange)
    }

    #[inline]
    pub fn read_fixed<const N: usize>(&mut self) -> Result<[u8; N], PrimitiveError> {
        let end = self.pos + N;
        let Some(slice) = self.buf.get(self.pos..end) else {
            return Err(PrimitiveError::Eof);
        };
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    #[inline]
    pub fn read_double(&mut self) -> Result<f64, PrimitiveError> {
        Ok(f64::from_le_bytes(self.read_fixed()?))
    }

    #[inline]
    pub fn read_float(&mut self) -> Result<f32, PrimitiveError> {
        Ok(f32::from_le_bytes(self.read_fixed()?))
    }

    #[inline]
    pub fn read_boolean(&mut self) -> Result<bool, PrimitiveError> {
        match self.read_fixed::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(PrimitiveError::BadBoolean),
        }
    }

    /// A length-prefixed byte string (`bytes` or `string`).
    #[inline]
    pub fn read_bytes(&mut self) -> Result<&'a [u8], PrimitiveError> {
        let len = self.read_long()?;
        let len = usize::try_from(len).map_err(|_| PrimitiveError::BadLength)?;
        self.skip(len)?;
        Ok(&self.buf[self.pos - len..self.pos])
    }

    /// The next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], PrimitiveError> {
        let start = self.pos;
        self.skip(n)?;
        Ok(&self.buf[start..self.pos])
    }

    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), PrimitiveError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                self.pos = end;
                Ok(())
            }
            _ => Err(PrimitiveError::Eof),
        }
    }
}

#[inline]
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
pub fn write_double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            write_long(&mut buf, v);
            let mut input = Input::new(&buf);
            assert_eq!(input.read_long(), Ok(v));
            assert!(input.is_empty());
        }
        // Spec examples: 0 -> 00, -1 -> 01, 1 -> 02, -64 -> 7f, 64 -> 80 01.
        let mut buf = Vec::new();
        write_long(&mut buf, 64);
        assert_eq!(buf, [0x80, 0x01]);
    }

    /// The byte-at-a-time reading the fast paths must agree with.
    fn reference_long(buf: &[u8]) -> (Result<i64, PrimitiveError>, usize) {
        let mut value: u64 = 0;
        for (i, &byte) in buf.iter().enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (Ok(zigzag(value)), i + 1);
            }
            if i == 9 {
                return (Err(PrimitiveError::VarintTooLong), i + 1);
            }
        }
        (Err(PrimitiveError::Eof), buf.len())
    }

    #[test]
    fn varints_read_the_same_whatever_follows_them() {
        // Pseudo-random bytes, biased to continuation bits, at every length
        // from empty to past ten bytes, so that both the bounds-checked and
        // the unchecked path run on the same prefixes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 14) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let b = next() as u8;
                    if next() % 4 == 0 {
                        b & 0x7f
                    } else {
                        b | 0x80
                    }
                })
                .collect();
            let (expected, used) = reference_long(&bytes);
            let mut input = Input::new(&bytes);
            assert_eq!(input.read_long(), expected, "{bytes:02x?}");
            if expected.is_ok() {
                assert_eq!(input.position(), used, "{bytes:02x?}");
            }
        }
        for v in [0i64, -1, 64, -65, 1 << 40, i64::MAX, i64::MIN] {
            for padding in [0usize, 3, 9, 12] {
                let mut buf = Vec::new();
                write_long(&mut buf, v);
                let len = buf.len();
                buf.extend(std::iter::repeat_n(0xffu8, padding));
                let mut input = Input::new(&buf);
                assert_eq!(input.read_long(), Ok(v));
                assert_eq!(input.position(), len);
            }
        }
    }

    #[test]
    fn malformed_primitives_are_errors() {
        assert_eq!(Input::new(&[0x80]).read_long(), Err(PrimitiveError::Eof));
        for len in [10, 11, 20] {
            assert_eq!(
                Input::new(&vec![0xff; len]).read_long(),
                Err(PrimitiveError::VarintTooLong)
            );
        }
        assert_eq!(Input::new(&[0x80; 9]).read_long(), Err(PrimitiveError::Eof));
        let mut big = Vec::new();
        write_long(&mut big, i64::from(i32::MAX) + 1);
        assert_eq!(
            Input::new(&big).read_int(),
            Err(PrimitiveError::IntOutOfRange)
        );
        assert_eq!(
            Input::new(&[2]).read_boolean(),
            Err(PrimitiveError::BadBoolean)
        );
        assert_eq!(
            Input::new(&[1]).read_bytes(),
            Err(PrimitiveError::BadLength)
        );
        assert_eq!(
            Input::new(&[4, b'a']).read_bytes(),
            Err(PrimitiveError::Eof)
        );
        assert_eq!(Input::new(&[0, 0]).read_double(), Err(PrimitiveError::Eof));
    }
}
