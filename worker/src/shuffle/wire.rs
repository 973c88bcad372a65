//! How readings travel between workers: a fixed-width little-endian layout.
//!
//! Both ends are Weir, so the shuffle does not need Avro's compactness or
//! schema resolution; it needs to be cheap to write and read, because half
//! of all records cross the network in a two-worker cluster. Every number
//! is written at its full width (no varints), each identifier as a one-byte
//! flag (0 absent, 1 with a two-byte length, 2 with a four-byte length for
//! one longer than 64 KiB), the length and its UTF-8 bytes. Reading still
//! checks every length and every string: a peer is trusted to be Weir, not
//! to be bug-free.

use prost::bytes::BufMut;
use weir_common::avro::primitive::{Input, PrimitiveError};
use weir_common::reading::{Reading, ShortStr};

/// The layout version carried in each batch.
pub const FORMAT: u32 = 1;

/// Bytes of a reading without its identifiers.
pub const FIXED_BYTES: usize = 161;

/// The fewest bytes a reading takes (both identifiers absent).
pub const MIN_BYTES: usize = FIXED_BYTES + 2;

/// Appends `r` to `out`.
#[inline]
pub fn write<B: BufMut>(r: &Reading, out: &mut B) {
    // The fixed-width part is assembled on the stack (constant offsets once
    // inlined) and appended in one piece: one capacity check, not 25.
    let mut fixed = [0u8; FIXED_BYTES];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        fixed[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&r.sensor_id.to_le_bytes());
    put(&r.sensor_type.to_le_bytes());
    put(&r.timestamp_ms.to_le_bytes());
    for v in [r.temperature, r.humidity, r.pressure, r.battery_level] {
        put(&v.to_le_bytes());
    }
    put(&r.status.to_le_bytes());
    for v in [r.co2_level, r.noise_level, r.light_level] {
        put(&v.to_le_bytes());
    }
    put(&[u8::from(r.motion_detected)]);
    for v in [r.signal_strength, r.memory_usage, r.cpu_usage] {
        put(&v.to_le_bytes());
    }
    put(&r.error_count.to_le_bytes());
    for v in [
        r.packets_sent,
        r.packets_received,
        r.bytes_sent,
        r.bytes_received,
    ] {
        put(&v.to_le_bytes());
    }
    for v in [r.latitude, r.longitude, r.altitude] {
        put(&v.to_le_bytes());
    }
    debug_assert_eq!(at, FIXED_BYTES);
    out.put_slice(&fixed);
    for s in [&r.customer_id, &r.site_id] {
        match s.as_ref().map(ShortStr::as_str) {
            None => out.put_u8(0),
            Some(text) => match u16::try_from(text.len()) {
                Ok(len) => {
                    out.put_u8(1);
                    out.put_u16_le(len);
                    out.put_slice(text.as_bytes());
                }
                Err(_) => long_identifier(text, out),
            },
        }
    }
}

/// An identifier longer than 64 KiB: far beyond any real id, but what the
/// input held crosses whole. (A string over 4 GiB cannot have been read
/// from a message or a file block.)
#[cold]
fn long_identifier<B: BufMut>(text: &str, out: &mut B) {
    out.put_u8(2);
    out.put_u32_le(u32::try_from(text.len()).unwrap_or(u32::MAX));
    out.put_slice(text.as_bytes());
}

/// Why a reading could not be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    Truncated,
    BadFlag,
    NotUtf8,
}

impl From<PrimitiveError> for WireError {
    fn from(_: PrimitiveError) -> Self {
        WireError::Truncated
    }
}

/// Reads one reading into `r` (every field is overwritten).
#[inline]
pub fn read(input: &mut Input<'_>, r: &mut Reading) -> Result<(), WireError> {
    let i32_ = |input: &mut Input<'_>| input.read_fixed::<4>().map(i32::from_le_bytes);
    let i64_ = |input: &mut Input<'_>| input.read_fixed::<8>().map(i64::from_le_bytes);
    let f64_ = |input: &mut Input<'_>| input.read_fixed::<8>().map(f64::from_le_bytes);
    r.sensor_id = i32_(input)?;
    r.sensor_type = i32_(input)?;
    r.timestamp_ms = i64_(input)?;
    r.temperature = f64_(input)?;
    r.humidity = f64_(input)?;
    r.pressure = f64_(input)?;
    r.battery_level = f64_(input)?;
    r.status = i32_(input)?;
    r.co2_level = f64_(input)?;
    r.noise_level = f64_(input)?;
    r.light_level = f64_(input)?;
    r.motion_detected = match input.read_fixed::<1>()? {
        [0] => false,
        [1] => true,
        _ => return Err(WireError::BadFlag),
    };
    r.signal_strength = f64_(input)?;
    r.memory_usage = f64_(input)?;
    r.cpu_usage = f64_(input)?;
    r.error_count = i32_(input)?;
    r.packets_sent = i64_(input)?;
    r.packets_received = i64_(input)?;
    r.bytes_sent = i64_(input)?;
    r.bytes_received = i64_(input)?;
    r.latitude = f64_(input)?;
    r.longitude = f64_(input)?;
    r.altitude = f64_(input)?;
    r.customer_id = read_str(input)?;
    r.site_id = read_str(input)?;
    Ok(())
}

#[inline]
fn read_str(input: &mut Input<'_>) -> Result<Option<ShortStr>, WireError> {
    let len = match input.read_fixed::<1>()? {
        [0] => return Ok(None),
        [1] => usize::from(u16::from_le_bytes(input.read_fixed::<2>()?)),
        [2] => u32::from_le_bytes(input.read_fixed::<4>()?) as usize,
        _ => return Err(WireError::BadFlag),
    };
    let bytes = input.take(len)?;
    let text = ShortStr::from_utf8(bytes).map_err(|_| WireError::NotUtf8)?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reading {
        Reading {
            sensor_id: -7,
            sensor_type: 3,
            timestamp_ms: 1_760_054_400_123,
            temperature: 21.5,
            motion_detected: true,
            error_count: 2,
            bytes_received: i64::MAX,
            altitude: -0.5,
            customer_id: Some(ShortStr::new("customer_0042")),
            site_id: Some(ShortStr::new(&"ü".repeat(40))),
            ..Reading::default()
        }
    }

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        write(&sample(), &mut buf);
        write(&Reading::default(), &mut buf);
        assert_eq!(buf.len(), 2 * FIXED_BYTES + 3 + 13 + 3 + 80 + 2);
        let mut empty = Vec::new();
        write(&Reading::default(), &mut empty);
        assert_eq!(empty.len(), MIN_BYTES);
        let mut input = Input::new(&buf);
        let mut r = Reading::default();
        read(&mut input, &mut r).expect("first");
        assert_eq!(r, sample());
        read(&mut input, &mut r).expect("second");
        assert_eq!(r, Reading::default());
        assert!(input.is_empty());
    }

    #[test]
    fn identifiers_longer_than_64_kib_cross_whole() {
        let long = "é".repeat(40_000);
        let r = Reading {
            customer_id: Some(ShortStr::new(&long)),
            site_id: Some(ShortStr::new(&"x".repeat(65_535))),
            ..Reading::default()
        };
        let mut buf = Vec::new();
        write(&r, &mut buf);
        assert_eq!(buf.len(), FIXED_BYTES + 5 + 80_000 + 3 + 65_535);
        let mut back = Reading::default();
        let mut input = Input::new(&buf);
        read(&mut input, &mut back).expect("reads");
        assert!(input.is_empty());
        assert_eq!(back, r);
        // A long length that runs past the end is damage, not a panic.
        let mut cut = buf.clone();
        cut.truncate(FIXED_BYTES + 5 + 100);
        assert_eq!(
            read(&mut Input::new(&cut), &mut back),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        write(&sample(), &mut buf);
        let mut r = Reading::default();
        for cut in 0..buf.len() {
            assert!(
                read(&mut Input::new(&buf[..cut]), &mut r).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = buf.clone();
        bad[FIXED_BYTES] = 7;
        assert_eq!(read(&mut Input::new(&bad), &mut r), Err(WireError::BadFlag));
        let mut not_utf8 = buf.clone();
        not_utf8[FIXED_BYTES + 3] = 0xff;
        assert_eq!(
            read(&mut Input::new(&not_utf8), &mut r),
            Err(WireError::NotUtf8)
        );
    }
}
