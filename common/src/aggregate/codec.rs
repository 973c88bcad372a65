//! Binary encoding of accumulators for the state store. Little-endian,
//! versioned, no dependency on a serialisation framework.

use super::{Accumulator, Earliest, Stat};
use crate::reading::ShortStr;

/// The full form.
const VERSION: u8 = 1;
/// The form of an accumulator of one reading.
const SINGLE: u8 = 2;
const NONE: u32 = u32::MAX;

/// Why stored state could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorruptState {
    #[error("state value is truncated")]
    Truncated,
    #[error("state value has unknown version {0}")]
    Version(u8),
    #[error("state value has a non-UTF-8 identifier")]
    Utf8,
    #[error("state value has {0} trailing bytes")]
    Trailing(usize),
}

/// Bytes before the identifiers: version, count, 26 floating-point
/// fields, 7 counters, timestamp and sensor type.
const HEAD: usize = 1 + 8 + 26 * 8 + 6 * 8 + 8 + 4;

/// Appends the encoding of `acc`. The fixed part is assembled in a
/// stack buffer (constant offsets, no per-field calls) and appended
/// once: spills encode every accumulator they write. An accumulator of
/// a single reading — most of what is spilled when devices far
/// outnumber the memory budget — is written in its own, shorter form
/// (every minimum, maximum and sum is the reading's value).
pub fn encode(acc: &Accumulator, out: &mut Vec<u8>) {
    if is_single(acc) {
        encode_single(acc, out);
    } else {
        encode_full(acc, out);
    }
}

/// Whether `acc` holds exactly one reading's values (compared by bits,
/// so that NaN and -0.0 survive the shorter form unchanged).
fn is_single(acc: &Accumulator) -> bool {
    let same =
        |st: &Stat| st.sum.to_bits() == st.min.to_bits() && st.sum.to_bits() == st.max.to_bits();
    acc.count == 1
        && acc.latest_ms == acc.earliest.timestamp_ms
        && [
            &acc.temperature,
            &acc.humidity,
            &acc.pressure,
            &acc.battery,
            &acc.co2,
            &acc.noise,
            &acc.light,
            &acc.signal,
        ]
        .into_iter()
        .all(same)
}

/// Bytes of the single-reading form before the identifiers: version,
/// 10 values, 6 counters, timestamp and sensor type.
const SINGLE_HEAD: usize = 1 + 10 * 8 + 6 * 8 + 8 + 4;

fn encode_single(acc: &Accumulator, out: &mut Vec<u8>) {
    let e = &acc.earliest;
    let values = [
        acc.temperature.sum,
        acc.humidity.sum,
        acc.pressure.sum,
        acc.battery.sum,
        acc.co2.sum,
        acc.noise.sum,
        acc.light.sum,
        acc.signal.sum,
        acc.memory_sum,
        acc.cpu_sum,
    ];
    let mut head = [0u8; SINGLE_HEAD];
    head[0] = SINGLE;
    for (i, v) in values.iter().enumerate() {
        head[1 + i * 8..][..8].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in counters(acc).iter().enumerate() {
        head[81 + i * 8..][..8].copy_from_slice(&v.to_le_bytes());
    }
    head[129..137].copy_from_slice(&e.timestamp_ms.to_le_bytes());
    head[137..141].copy_from_slice(&e.sensor_type.to_le_bytes());
    out.extend_from_slice(&head);
    encode_place(e, out);
    out.extend_from_slice(&acc.latest_status.to_le_bytes());
}

fn counters(acc: &Accumulator) -> [i64; 6] {
    [
        acc.motion_count as i64,
        acc.error_sum,
        acc.packets_sent_sum,
        acc.packets_received_sum,
        acc.bytes_sent_sum,
        acc.bytes_received_sum,
    ]
}

/// Position and identifiers of the earliest reading.
fn encode_place(e: &Earliest, out: &mut Vec<u8>) {
    let mut place = [0u8; 28];
    for (i, v) in [e.latitude, e.longitude, e.altitude].iter().enumerate() {
        place[i * 8..][..8].copy_from_slice(&v.to_le_bytes());
    }
    let (customer, site) = (
        e.customer_id.as_ref().map(ShortStr::as_str),
        e.site_id.as_ref().map(ShortStr::as_str),
    );
    place[24..28].copy_from_slice(&string_len(customer).to_le_bytes());
    out.extend_from_slice(&place);
    out.extend_from_slice(customer.unwrap_or_default().as_bytes());
    out.extend_from_slice(&string_len(site).to_le_bytes());
    out.extend_from_slice(site.unwrap_or_default().as_bytes());
}

fn encode_full(acc: &Accumulator, out: &mut Vec<u8>) {
    let e = &acc.earliest;
    let floats = [
        acc.temperature.sum,
        acc.temperature.min,
        acc.temperature.max,
        acc.humidity.sum,
        acc.humidity.min,
        acc.humidity.max,
        acc.pressure.sum,
        acc.pressure.min,
        acc.pressure.max,
        acc.battery.sum,
        acc.battery.min,
        acc.battery.max,
        acc.co2.sum,
        acc.co2.min,
        acc.co2.max,
        acc.noise.sum,
        acc.noise.min,
        acc.noise.max,
        acc.light.sum,
        acc.light.min,
        acc.light.max,
        acc.signal.sum,
        acc.signal.min,
        acc.signal.max,
        acc.memory_sum,
        acc.cpu_sum,
    ];
    let counters = counters(acc);
    let mut head = [0u8; HEAD];
    head[0] = VERSION;
    head[1..9].copy_from_slice(&acc.count.to_le_bytes());
    for (i, v) in floats.iter().enumerate() {
        head[9 + i * 8..][..8].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in counters.iter().enumerate() {
        head[217 + i * 8..][..8].copy_from_slice(&v.to_le_bytes());
    }
    head[265..273].copy_from_slice(&e.timestamp_ms.to_le_bytes());
    head[273..277].copy_from_slice(&e.sensor_type.to_le_bytes());
    out.extend_from_slice(&head);
    encode_place(e, out);
    out.extend_from_slice(&acc.latest_ms.to_le_bytes());
    out.extend_from_slice(&acc.latest_status.to_le_bytes());
}

/// The length field of an optional identifier. Identifiers come from
/// Avro strings the decoder accepted, far below 4 GiB.
fn string_len(s: Option<&str>) -> u32 {
    s.map_or(NONE, |s| u32::try_from(s.len()).unwrap_or(NONE - 1))
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptState> {
        if self.0.len() < n {
            return Err(CorruptState::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptState> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, CorruptState> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, CorruptState> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, CorruptState> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, CorruptState> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, CorruptState> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn stat(&mut self) -> Result<Stat, CorruptState> {
        Ok(Stat {
            sum: self.f64()?,
            min: self.f64()?,
            max: self.f64()?,
        })
    }
    fn opt_string(&mut self) -> Result<Option<ShortStr>, CorruptState> {
        let len = self.u32()?;
        if len == NONE {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes)
            .map(|s| Some(ShortStr::new(s)))
            .map_err(|_| CorruptState::Utf8)
    }
}

pub fn decode(bytes: &[u8]) -> Result<Accumulator, CorruptState> {
    let mut c = Cursor(bytes);
    // The short form of one reading has no count and no latest
    // timestamp, and one value for a minimum, sum and maximum.
    let single = match c.array::<1>()? {
        [VERSION] => false,
        [SINGLE] => true,
        [other] => return Err(CorruptState::Version(other)),
    };
    let count = if single { 1 } else { c.u64()? };
    let mut stat = || match single {
        true => c.f64().map(|v| Stat {
            sum: v,
            min: v,
            max: v,
        }),
        false => c.stat(),
    };
    let (temperature, humidity, pressure, battery) = (stat()?, stat()?, stat()?, stat()?);
    let (co2, noise, light, signal) = (stat()?, stat()?, stat()?, stat()?);
    let memory_sum = c.f64()?;
    let cpu_sum = c.f64()?;
    let motion_count = c.u64()?;
    let error_sum = c.i64()?;
    let packets_sent_sum = c.i64()?;
    let packets_received_sum = c.i64()?;
    let bytes_sent_sum = c.i64()?;
    let bytes_received_sum = c.i64()?;
    let timestamp_ms = c.i64()?;
    let sensor_type = c.i32()?;
    let latitude = c.f64()?;
    let longitude = c.f64()?;
    let altitude = c.f64()?;
    let customer_id = c.opt_string()?;
    let site_id = c.opt_string()?;
    let latest_ms = if single { timestamp_ms } else { c.i64()? };
    let latest_status = c.i32()?;
    if !c.0.is_empty() {
        return Err(CorruptState::Trailing(c.0.len()));
    }
    Ok(Accumulator {
        count,
        temperature,
        humidity,
        pressure,
        battery,
        co2,
        noise,
        light,
        signal,
        memory_sum,
        cpu_sum,
        motion_count,
        error_sum,
        packets_sent_sum,
        packets_received_sum,
        bytes_sent_sum,
        bytes_received_sum,
        earliest: Earliest {
            timestamp_ms,
            sensor_type,
            customer_id,
            site_id,
            latitude,
            longitude,
            altitude,
        },
        latest_ms,
        latest_status,
    })
}
