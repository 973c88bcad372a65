//! How readings travel between workers: a fixed-width little-endian layout.
//!
//! Both ends are Weir, so the shuffle does not need Avro's compactness or
//! schema resolution; it needs to be cheap to write and read, because half
//! of all records cross the network in a two-worker cluster. Every number
//! is written at its full width (no varints), each identifier as a one-byte
//! presence flag, a two-byte length and its UTF-8 bytes. Reading still
//! checks every length and every string: a peer is trusted to be Weir, not
//! to be bug-free.

use weir_common::avro::primitive::{Input, PrimitiveError};
use weir_common::reading::{Reading, ShortStr};

/// The layout version carried in each batch.
pub const FORMAT: u32 = 1;

/// Bytes of a reading without its identifiers.
pub const FIXED_BYTES: usize = 161;

/// Appends `r` to `out`.
pub fn write(r: &Reading, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.sensor_id.to_le_bytes());
    out.extend_from_slice(&r.sensor_type.to_le_bytes());
    out.extend_from_slice(&r.timestamp_ms.to_le_bytes());
    for v in [r.temperature, r.humidity, r.pressure, r.battery_level] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&r.status.to_le_bytes());
    for v in [r.co2_level, r.noise_level, r.light_level] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(u8::from(r.motion_detected));
    for v in [r.signal_strength, r.memory_usage, r.cpu_usage] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&r.error_count.to_le_bytes());
    for v in [
        r.packets_sent,
        r.packets_received,
        r.bytes_sent,
        r.bytes_received,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [r.latitude, r.longitude, r.altitude] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for s in [&r.customer_id, &r.site_id] {
        match s {
            None => out.push(0),
            Some(s) => {
                // Longer identifiers are cut at a character boundary rather
                // than failing the batch; 64 KiB is far beyond any real id.
                let mut text = s.as_str();
                while text.len() > usize::from(u16::MAX) {
                    let mut end = usize::from(u16::MAX);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text = &text[..end];
                }
                out.push(1);
                out.extend_from_slice(&(text.len() as u16).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
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
    match input.read_fixed::<1>()? {
        [0] => Ok(None),
        [1] => {
            let len = usize::from(u16::from_le_bytes(input.read_fixed::<2>()?));
            let bytes = input.take(len)?;
            let text = std::str::from_utf8(bytes).map_err(|_| WireError::NotUtf8)?;
            Ok(Some(ShortStr::new(text)))
        }
        _ => Err(WireError::BadFlag),
    }
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
        let mut input = Input::new(&buf);
        let mut r = Reading::default();
        read(&mut input, &mut r).expect("first");
        assert_eq!(r, sample());
        read(&mut input, &mut r).expect("second");
        assert_eq!(r, Reading::default());
        assert!(input.is_empty());
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
