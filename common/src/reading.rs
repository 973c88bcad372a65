//! One decoded sensor reading, in the shape of the contract's reader schema.
//!
//! Readings are decoded by the million per second, so a reading owns no heap
//! memory in the common case: the two optional identifiers (`customerId`,
//! `siteId`) are stored inline when they are short, which they are for every
//! producer we know of.

use std::cmp::Ordering;
use std::fmt;

/// Bytes kept inline by [`ShortStr`] before it falls back to the heap.
const INLINE_CAPACITY: usize = 30;

/// An immutable string that lives inline when it is at most 30 bytes long.
#[derive(Clone)]
pub enum ShortStr {
    /// Up to [`INLINE_CAPACITY`] bytes of UTF-8; `len` says how many are used.
    Inline { len: u8, buf: [u8; INLINE_CAPACITY] },
    /// Anything longer.
    Heap(Box<str>),
}

impl ShortStr {
    pub fn new(s: &str) -> Self {
        if s.len() <= INLINE_CAPACITY {
            let mut buf = [0u8; INLINE_CAPACITY];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            // The length fits in a u8 because INLINE_CAPACITY < 256.
            ShortStr::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            ShortStr::Heap(s.into())
        }
    }

    /// The string of UTF-8 `bytes`. Identifiers are ASCII in practice: a
    /// short ASCII string is checked word by word and copied in one step,
    /// where `from_utf8` and [`new`](Self::new) would cost ~10% of decoding.
    #[inline]
    pub fn from_utf8(bytes: &[u8]) -> Result<Self, std::str::Utf8Error> {
        if bytes.len() <= INLINE_CAPACITY && bytes.is_ascii() {
            let mut buf = [0u8; INLINE_CAPACITY];
            buf[..bytes.len()].copy_from_slice(bytes);
            // ASCII is UTF-8, and the length fits in a u8 (INLINE_CAPACITY < 256).
            return Ok(ShortStr::Inline {
                len: bytes.len() as u8,
                buf,
            });
        }
        std::str::from_utf8(bytes).map(ShortStr::new)
    }

    /// Bytes it holds on the heap (with the allocator's overhead).
    pub fn heap_bytes(&self) -> usize {
        match self {
            ShortStr::Inline { .. } => 0,
            ShortStr::Heap(s) => s.len() + 16,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ShortStr::Inline { len, buf } => {
                // Only `new` builds the inline form, from a whole `&str`, so
                // the bytes are valid UTF-8 up to `len`.
                std::str::from_utf8(&buf[..*len as usize]).unwrap_or_default()
            }
            ShortStr::Heap(s) => s,
        }
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for ShortStr {}
impl PartialOrd for ShortStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ShortStr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        ShortStr::new(s)
    }
}
/// Written as a plain string (JSON, and ClickHouse's `String`).
impl serde::Serialize for ShortStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
impl<'de> serde::Deserialize<'de> for ShortStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ShortStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ShortStr, E> {
                Ok(ShortStr::new(s))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}
impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reading of the contract schema (`contract/sensor_data.avsc`), after
/// schema resolution: fields the writer did not send hold the reader's
/// defaults, which are exactly `Reading::default()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub sensor_id: i32,
    pub sensor_type: i32,
    /// Event time, epoch milliseconds.
    pub timestamp_ms: i64,
    pub temperature: f64,
    pub humidity: f64,
    pub pressure: f64,
    pub battery_level: f64,
    pub status: i32,
    pub co2_level: f64,
    pub noise_level: f64,
    pub light_level: f64,
    pub motion_detected: bool,
    pub signal_strength: f64,
    pub memory_usage: f64,
    pub cpu_usage: f64,
    pub error_count: i32,
    pub packets_sent: i64,
    pub packets_received: i64,
    pub bytes_sent: i64,
    pub bytes_received: i64,
    pub latitude: f64,
    pub longitude: f64,
    pub altitude: f64,
    pub customer_id: Option<ShortStr>,
    pub site_id: Option<ShortStr>,
}

impl Reading {
    /// The contract's `device_id`: `"sensor_" + sensorId`, no padding.
    /// `"sensor_" + sensorId`, without touching the heap.
    pub fn device_id(sensor_id: i32) -> ShortStr {
        const PREFIX: &[u8] = b"sensor_";
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(sensor_id).as_bytes();
        // At most 7 + 11 bytes: always inline.
        let mut buf = [0u8; INLINE_CAPACITY];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        buf[PREFIX.len()..PREFIX.len() + digits.len()].copy_from_slice(digits);
        ShortStr::Inline {
            len: (PREFIX.len() + digits.len()) as u8,
            buf,
        }
    }

    /// The reading as a JSON object with the schema's field names, for the
    /// late-readings and dead-letter outputs (off the hot path).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sensorId": self.sensor_id,
            "sensorType": self.sensor_type,
            "timestamp": self.timestamp_ms,
            "temperature": self.temperature,
            "humidity": self.humidity,
            "pressure": self.pressure,
            "batteryLevel": self.battery_level,
            "status": self.status,
            "co2Level": self.co2_level,
            "noiseLevel": self.noise_level,
            "lightLevel": self.light_level,
            "motionDetected": self.motion_detected,
            "signalStrength": self.signal_strength,
            "memoryUsage": self.memory_usage,
            "cpuUsage": self.cpu_usage,
            "errorCount": self.error_count,
            "packetsSent": self.packets_sent,
            "packetsReceived": self.packets_received,
            "bytesSent": self.bytes_sent,
            "bytesReceived": self.bytes_received,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "altitude": self.altitude,
            "customerId": self.customer_id.as_ref().map(ShortStr::as_str),
            "siteId": self.site_id.as_ref().map(ShortStr::as_str),
        })
    }
}

/// The contract's `device_type`: the name of a `sensorType` code.
pub fn device_type_name(code: i32) -> &'static str {
    match code {
        1 => "temperature_sensor",
        2 => "humidity_sensor",
        3 => "pressure_sensor",
        4 => "motion_sensor",
        5 => "light_sensor",
        6 => "co2_sensor",
        7 => "noise_sensor",
        8 => "multi_sensor",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_str_inline_and_heap_compare_by_content() {
        let short = ShortStr::new("customer_0042");
        assert!(matches!(short, ShortStr::Inline { .. }));
        assert_eq!(short.as_str(), "customer_0042");
        let long_text = "a-customer-identifier-that-is-longer-than-thirty-bytes";
        let long = ShortStr::new(long_text);
        assert!(matches!(long, ShortStr::Heap(_)));
        assert_eq!(long.as_str(), long_text);
        assert!(ShortStr::new("b") > ShortStr::new("a"));
        assert_eq!(ShortStr::new(""), ShortStr::new(""));
        let exactly = "x".repeat(INLINE_CAPACITY);
        assert_eq!(ShortStr::new(&exactly).as_str(), exactly);
    }

    #[test]
    fn from_utf8_takes_what_str_takes_and_refuses_the_rest() {
        let long_ascii = "y".repeat(INLINE_CAPACITY + 1);
        let exactly = "x".repeat(INLINE_CAPACITY);
        for text in ["", "site-7", "Zürich-Ost", "日本", &exactly, &long_ascii] {
            let s = ShortStr::from_utf8(text.as_bytes()).expect("valid UTF-8");
            assert_eq!(s.as_str(), text);
            assert_eq!(s, ShortStr::new(text));
            assert_eq!(s.heap_bytes(), ShortStr::new(text).heap_bytes());
        }
        for bad in [&b"\xff"[..], b"ab\xc3", b"\xed\xa0\x80", &[0x80; 40]] {
            assert!(ShortStr::from_utf8(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn device_type_names_follow_the_schema_doc() {
        assert_eq!(device_type_name(1), "temperature_sensor");
        assert_eq!(device_type_name(8), "multi_sensor");
        assert_eq!(device_type_name(0), "unknown");
        assert_eq!(device_type_name(9), "unknown");
        assert_eq!(device_type_name(-3), "unknown");
    }
}
