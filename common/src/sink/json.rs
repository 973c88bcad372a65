//! JSON lines of the output rows, written directly.
//!
//! A closing window of half a million devices becomes a million lines, and
//! going through serde's generic map serialisation cost more than building
//! the rows. Each row type lists its fields once (the macro below destructures
//! the struct, so a field added to a row and not here fails to compile) and
//! every value is written as serde_json writes it: the same float formatter
//! (`zmij`), `null` for non-finite floats, serde_json's own escaping for any
//! string that needs escaping. A test compares the two byte for byte.

use crate::reading::ShortStr;
use crate::rows::{LateReadingRow, SensorAggregatesRow, SensorsLocalRow};

/// A row that can write itself as one line of JSON (with the newline).
pub trait JsonLine {
    fn write_json_line(&self, out: &mut Vec<u8>);
}

/// A value of a row's field.
pub trait JsonValue {
    /// Writes the value; `last` is the float written last in this line.
    fn write_json(&self, out: &mut Vec<u8>, last: &mut LastFloat);
}

/// The float written last in a line, as text. A window of one reading has
/// the same minimum, average and maximum of every measurement, next to each
/// other in `sensor_aggregates_1m`: with millions of devices most windows
/// are like that, and formatting each value once saves a third of the
/// floats formatted.
#[derive(Default)]
pub struct LastFloat {
    bits: Option<u64>,
    /// Where its text is in the line being written.
    at: usize,
    len: usize,
}

impl JsonValue for str {
    #[inline]
    fn write_json(&self, out: &mut Vec<u8>, _: &mut LastFloat) {
        let plain = self.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if plain {
            out.push(b'"');
            out.extend_from_slice(self.as_bytes());
            out.push(b'"');
        } else {
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, self);
        }
    }
}

impl JsonValue for String {
    #[inline]
    fn write_json(&self, out: &mut Vec<u8>, last: &mut LastFloat) {
        self.as_str().write_json(out, last)
    }
}

impl JsonValue for ShortStr {
    #[inline]
    fn write_json(&self, out: &mut Vec<u8>, last: &mut LastFloat) {
        self.as_str().write_json(out, last)
    }
}

impl JsonValue for f64 {
    #[inline]
    fn write_json(&self, out: &mut Vec<u8>, last: &mut LastFloat) {
        if !self.is_finite() {
            out.extend_from_slice(b"null");
            return;
        }
        let at = out.len();
        if last.bits == Some(self.to_bits()) {
            out.extend_from_within(last.at..last.at + last.len);
        } else {
            out.extend_from_slice(zmij::Buffer::new().format_finite(*self).as_bytes());
            last.bits = Some(self.to_bits());
        }
        last.at = at;
        last.len = out.len() - at;
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl JsonValue for $t {
            #[inline]
            fn write_json(&self, out: &mut Vec<u8>, _: &mut LastFloat) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
integers!(u8, u32, u64, i64);

/// Implements [`JsonLine`] for a row struct from the list of its fields, in
/// declaration order (serde's order).
macro_rules! json_line {
    ($row:ident { $first:ident $(, $field:ident)* $(,)? }) => {
        impl JsonLine for $row {
            fn write_json_line(&self, out: &mut Vec<u8>) {
                let $row { $first, $($field),* } = self;
                let mut last = LastFloat::default();
                out.extend_from_slice(concat!("{\"", stringify!($first), "\":").as_bytes());
                $first.write_json(out, &mut last);
                $(
                    out.extend_from_slice(concat!(",\"", stringify!($field), "\":").as_bytes());
                    $field.write_json(out, &mut last);
                )*
                out.extend_from_slice(b"}\n");
            }
        }
    };
}

json_line!(SensorsLocalRow {
    device_id,
    device_type,
    customer_id,
    site_id,
    latitude,
    longitude,
    altitude,
    time,
    temperature,
    humidity,
    pressure,
    co2_level,
    noise_level,
    light_level,
    motion_detected,
    battery_level,
    signal_strength,
    memory_usage,
    cpu_usage,
    status,
    error_count,
    packets_sent,
    packets_received,
    bytes_sent,
    bytes_received,
});

json_line!(SensorAggregatesRow {
    device_id,
    window_start,
    window_end,
    readings,
    temperature_min,
    temperature_avg,
    temperature_max,
    humidity_min,
    humidity_avg,
    humidity_max,
    pressure_min,
    pressure_avg,
    pressure_max,
    battery_min,
    battery_avg,
    battery_max,
    co2_min,
    co2_avg,
    co2_max,
    noise_min,
    noise_avg,
    noise_max,
    light_min,
    light_avg,
    light_max,
    signal_min,
    signal_avg,
    signal_max,
    error_count,
    motion_readings,
    bytes_sent,
    bytes_received,
});

json_line!(LateReadingRow {
    device_id,
    event_time,
    timestamp_ms,
    window_end,
    watermark_ms,
    source,
    position,
    reading,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Accumulator;
    use crate::reading::Reading;

    fn line<T: JsonLine>(row: &T) -> String {
        let mut out = Vec::new();
        row.write_json_line(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    fn serde_line<T: serde::Serialize>(row: &T) -> String {
        serde_json::to_string(row).expect("serialize") + "\n"
    }

    /// Byte for byte what serde_json writes, for ordinary and awkward
    /// values: escapes, non-ASCII, non-finite floats, extremes.
    #[test]
    fn lines_are_what_serde_json_writes() {
        let mut readings = vec![Reading {
            sensor_id: 42,
            sensor_type: 3,
            temperature: 21.5,
            humidity: 1e-300,
            pressure: -0.0,
            latitude: 1.0 / 3.0,
            longitude: 180.0,
            altitude: 1e21,
            bytes_sent: i64::MAX,
            packets_sent: -3,
            status: 300,
            customer_id: Some(ShortStr::new("cust \"quoted\" \\ back\nline\u{1}")),
            site_id: Some(ShortStr::new(
                "sïte ünïcode ✓ and a long tail past thirty bytes",
            )),
            ..Reading::default()
        }];
        readings.push(readings[0].clone());
        readings.push(Reading {
            sensor_id: i32::MIN,
            temperature: f64::NAN,
            humidity: f64::INFINITY,
            pressure: f64::NEG_INFINITY,
            error_count: i32::MIN,
            ..Reading::default()
        });
        for (i, r) in readings.iter().enumerate() {
            // One reading (minimum = average = maximum) and two.
            let mut acc = Accumulator::new(r);
            if i % 2 == 0 {
                acc.add(r);
            }
            let local = acc.sensors_local_row(r.sensor_id, 1_760_054_460_000);
            assert_eq!(line(&local), serde_line(&local));
            let agg = acc.aggregates_row(r.sensor_id, 1_760_054_400_000, 1_760_054_460_000);
            assert_eq!(line(&agg), serde_line(&agg));
            let late = LateReadingRow {
                device_id: Reading::device_id(r.sensor_id),
                event_time: u32::MAX,
                timestamp_ms: i64::MIN,
                window_end: 0,
                watermark_ms: -1,
                source: "topic-partition-0\t".into(),
                position: "12:34:-1".into(),
                reading: r.to_json().to_string(),
            };
            assert_eq!(line(&late), serde_line(&late));
        }
    }
}
