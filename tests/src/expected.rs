//! An independent computation of the contract's output.
//!
//! Written from `contract/README.md`, not from Weir's code: readings are read
//! with apache-avro's generic reader, every window keeps all of its readings,
//! and each column is computed by the most direct expression of the rule.
//! Lateness follows the contract per partition (highest event time seen
//! before a reading, minus the out-of-orderness); with several partitions the
//! engine may judge lateness against a lower, combined watermark, so
//! expectations over several partitions are only exact when no reading is
//! late, which [`compute`] checks.
//!
//! Ties the contract leaves open are resolved as Weir documents them: the
//! earliest reading is the least by (timestamp, customerId, siteId,
//! sensorType, latitude, longitude, altitude), absent identifiers first.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::types::Value;
use serde_json::{json, Map, Value as Json};

/// One reading, as the contract describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub sensor_id: i32,
    pub sensor_type: i32,
    pub timestamp: i64,
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
    pub customer_id: Option<String>,
    pub site_id: Option<String>,
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

fn as_f64(v: Option<&Value>) -> f64 {
    match v.map(unwrap_union) {
        Some(Value::Double(d)) => *d,
        Some(Value::Float(f)) => f64::from(*f),
        Some(Value::Int(i)) => f64::from(*i),
        Some(Value::Long(l)) => *l as f64,
        _ => 0.0,
    }
}

fn as_i64(v: Option<&Value>) -> i64 {
    match v.map(unwrap_union) {
        Some(Value::Int(i)) => i64::from(*i),
        Some(Value::Long(l)) | Some(Value::TimestampMillis(l)) => *l,
        _ => 0,
    }
}

fn as_string(v: Option<&Value>) -> Option<String> {
    match v.map(unwrap_union) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

impl Reading {
    /// From a record of the contract schema; fields absent from the writer
    /// take the contract's defaults (zero, false, null).
    pub fn from_avro(value: &Value) -> Reading {
        let Value::Record(f) = value else {
            panic!("expected a record, got {value:?}")
        };
        let f = f.as_slice();
        Reading {
            sensor_id: as_i64(field(f, "sensorId")) as i32,
            sensor_type: as_i64(field(f, "sensorType")) as i32,
            timestamp: as_i64(field(f, "timestamp")),
            temperature: as_f64(field(f, "temperature")),
            humidity: as_f64(field(f, "humidity")),
            pressure: as_f64(field(f, "pressure")),
            battery_level: as_f64(field(f, "batteryLevel")),
            status: as_i64(field(f, "status")) as i32,
            co2_level: as_f64(field(f, "co2Level")),
            noise_level: as_f64(field(f, "noiseLevel")),
            light_level: as_f64(field(f, "lightLevel")),
            motion_detected: matches!(field(f, "motionDetected"), Some(Value::Boolean(true))),
            signal_strength: as_f64(field(f, "signalStrength")),
            memory_usage: as_f64(field(f, "memoryUsage")),
            cpu_usage: as_f64(field(f, "cpuUsage")),
            error_count: as_i64(field(f, "errorCount")) as i32,
            packets_sent: as_i64(field(f, "packetsSent")),
            packets_received: as_i64(field(f, "packetsReceived")),
            bytes_sent: as_i64(field(f, "bytesSent")),
            bytes_received: as_i64(field(f, "bytesReceived")),
            latitude: as_f64(field(f, "latitude")),
            longitude: as_f64(field(f, "longitude")),
            altitude: as_f64(field(f, "altitude")),
            customer_id: as_string(field(f, "customerId")),
            site_id: as_string(field(f, "siteId")),
        }
    }
}

/// Reads every record apache-avro can read from a container file, stopping
/// at the first damage. Returns the readings and whether the file was whole.
pub fn read_avro(path: &Path) -> (Vec<Reading>, bool) {
    let file = std::fs::File::open(path).expect("open avro file");
    let reader = apache_avro::Reader::new(std::io::BufReader::new(file)).expect("avro header");
    let mut out = Vec::new();
    for value in reader {
        match value {
            Ok(v) => out.push(Reading::from_avro(&v)),
            Err(_) => return (out, false),
        }
    }
    (out, true)
}

/// Output rows keyed by (device_id, time or window_start), as JSON objects.
pub type Rows = BTreeMap<(String, u64), Map<String, Json>>;

/// A late reading: (source partition name, ordinal in it, device, timestamp).
pub type LateKey = (String, u64, String, i64);

#[derive(Debug, Default)]
pub struct Expected {
    pub sensors_local: Rows,
    pub aggregates: Rows,
    pub late: Vec<LateKey>,
    pub readings: usize,
}

fn device_type(code: i32) -> &'static str {
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

fn earliest_order(a: &Reading, b: &Reading) -> Ordering {
    (a.timestamp, &a.customer_id, &a.site_id, a.sensor_type)
        .cmp(&(b.timestamp, &b.customer_id, &b.site_id, b.sensor_type))
        .then(a.latitude.total_cmp(&b.latitude))
        .then(a.longitude.total_cmp(&b.longitude))
        .then(a.altitude.total_cmp(&b.altitude))
}

/// Reads one measurement of a reading.
type Measure = fn(&Reading) -> f64;

fn mean(rs: &[&Reading], f: impl Fn(&Reading) -> f64) -> f64 {
    rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64
}

fn min(rs: &[&Reading], f: impl Fn(&Reading) -> f64) -> f64 {
    rs.iter().map(|r| f(r)).fold(f64::INFINITY, f64::min)
}

fn max(rs: &[&Reading], f: impl Fn(&Reading) -> f64) -> f64 {
    rs.iter().map(|r| f(r)).fold(f64::NEG_INFINITY, f64::max)
}

/// The contract's rows for `partitions` (name, readings in partition order).
pub fn compute(
    partitions: &[(String, Vec<Reading>)],
    window_ms: i64,
    out_of_orderness_ms: i64,
) -> Expected {
    let mut windows: BTreeMap<(i32, i64), Vec<&Reading>> = BTreeMap::new();
    let mut expected = Expected::default();
    for (name, readings) in partitions {
        let mut max_seen = i64::MIN;
        for (ordinal, r) in readings.iter().enumerate() {
            expected.readings += 1;
            let end = (r.timestamp.div_euclid(window_ms) + 1) * window_ms;
            let watermark = if max_seen == i64::MIN {
                i64::MIN
            } else {
                max_seen - out_of_orderness_ms
            };
            if end <= watermark {
                expected.late.push((
                    name.clone(),
                    ordinal as u64,
                    format!("sensor_{}", r.sensor_id),
                    r.timestamp,
                ));
            } else {
                windows.entry((r.sensor_id, end)).or_default().push(r);
            }
            max_seen = max_seen.max(r.timestamp);
        }
    }
    assert!(
        partitions.len() == 1 || expected.late.is_empty(),
        "with several partitions, only data without late readings has one right answer"
    );
    for ((sensor, end), rs) in &windows {
        let device = format!("sensor_{sensor}");
        let first = rs
            .iter()
            .copied()
            .min_by(|a, b| earliest_order(a, b))
            .expect("non-empty window");
        let last = rs
            .iter()
            .copied()
            .max_by_key(|r| (r.timestamp, r.status))
            .expect("non-empty window");
        let n = rs.len();
        let motion = rs.iter().filter(|r| r.motion_detected).count();
        let sum_i = |f: &dyn Fn(&Reading) -> i64| rs.iter().map(|r| f(r)).sum::<i64>().max(0);
        let time = (end / 1000) as u64;
        let row = json!({
            "device_id": device,
            "device_type": device_type(first.sensor_type),
            "customer_id": first.customer_id.clone().unwrap_or_else(|| "customer_0001".into()),
            "site_id": first.site_id.clone().unwrap_or_else(|| format!("site_{:04}", sensor % 1000)),
            "latitude": first.latitude,
            "longitude": first.longitude,
            "altitude": first.altitude,
            "time": time,
            "temperature": mean(rs, |r| r.temperature),
            "humidity": mean(rs, |r| r.humidity),
            "pressure": mean(rs, |r| r.pressure),
            "co2_level": mean(rs, |r| r.co2_level),
            "noise_level": mean(rs, |r| r.noise_level),
            "light_level": mean(rs, |r| r.light_level),
            "motion_detected": u8::from(motion * 2 > n),
            "battery_level": mean(rs, |r| r.battery_level),
            "signal_strength": mean(rs, |r| r.signal_strength),
            "memory_usage": mean(rs, |r| r.memory_usage),
            "cpu_usage": mean(rs, |r| r.cpu_usage),
            "status": last.status.clamp(0, 255),
            "error_count": sum_i(&|r| i64::from(r.error_count)),
            "packets_sent": sum_i(&|r| r.packets_sent),
            "packets_received": sum_i(&|r| r.packets_received),
            "bytes_sent": sum_i(&|r| r.bytes_sent),
            "bytes_received": sum_i(&|r| r.bytes_received),
        });
        let mut agg = json!({
            "device_id": format!("sensor_{sensor}"),
            "window_start": ((end - window_ms) / 1000) as u64,
            "window_end": time,
            "readings": n as u64,
            "error_count": sum_i(&|r| i64::from(r.error_count)),
            "motion_readings": motion as u64,
            "bytes_sent": sum_i(&|r| r.bytes_sent),
            "bytes_received": sum_i(&|r| r.bytes_received),
        });
        let metrics: [(&str, Measure); 8] = [
            ("temperature", |r| r.temperature),
            ("humidity", |r| r.humidity),
            ("pressure", |r| r.pressure),
            ("battery", |r| r.battery_level),
            ("co2", |r| r.co2_level),
            ("noise", |r| r.noise_level),
            ("light", |r| r.light_level),
            ("signal", |r| r.signal_strength),
        ];
        if let Json::Object(m) = &mut agg {
            for (name, f) in metrics {
                m.insert(format!("{name}_min"), json!(min(rs, f)));
                m.insert(format!("{name}_avg"), json!(mean(rs, f)));
                m.insert(format!("{name}_max"), json!(max(rs, f)));
            }
        }
        let (Json::Object(row), Json::Object(agg)) = (row, agg) else {
            unreachable!("json! of an object literal is an object")
        };
        expected
            .sensors_local
            .insert((format!("sensor_{sensor}"), time), row);
        expected.aggregates.insert(
            (format!("sensor_{sensor}"), (end - window_ms) as u64 / 1000),
            agg,
        );
    }
    expected
}

fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        // ClickHouse quotes 64-bit integers in JSON.
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Checks that `actual` has exactly the rows of `expected`, every column
/// equal (floats within 1e-9 relative). Panics with the first differences.
pub fn assert_rows_match(table: &str, expected: &Rows, actual: &Rows) {
    let mut problems = Vec::new();
    for key in expected.keys().filter(|k| !actual.contains_key(*k)).take(5) {
        problems.push(format!("missing row {key:?}"));
    }
    for key in actual.keys().filter(|k| !expected.contains_key(*k)).take(5) {
        problems.push(format!("unexpected row {key:?}"));
    }
    for (key, want) in expected {
        let Some(got) = actual.get(key) else { continue };
        for (col, w) in want {
            let Some(g) = got.get(col) else {
                problems.push(format!("{key:?}: column {col} missing"));
                continue;
            };
            let same = match (w, g) {
                (Json::String(a), Json::String(b)) if number(w).is_none() => a == b,
                _ => match (number(w), number(g)) {
                    (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                    _ => w == g,
                },
            };
            if !same {
                problems.push(format!("{key:?}: {col} is {g}, expected {w}"));
            }
        }
        if problems.len() > 20 {
            break;
        }
    }
    assert!(
        problems.is_empty(),
        "{table}: {} expected rows, {} actual; differences:\n{}",
        expected.len(),
        actual.len(),
        problems.join("\n")
    );
}

/// The late readings of a JSON-lines late-readings file (the sink's table
/// or `late.path`), as keys, sorted.
pub fn late_keys_from_json_lines(text: &str) -> Vec<LateKey> {
    let mut keys: Vec<LateKey> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["source"].as_str().expect("source").to_owned(),
                v["position"]
                    .as_str()
                    .expect("position")
                    .parse()
                    .expect("ordinal"),
                v["device_id"].as_str().expect("device").to_owned(),
                v["timestamp_ms"].as_i64().expect("ts"),
            )
        })
        .collect();
    keys.sort();
    keys
}

/// Rows from JSON lines (a JSONL output file or ClickHouse JSONEachRow),
/// keyed by `device_id` and the given time column.
pub fn rows_from_json_lines(text: &str, time_column: &str) -> Rows {
    let mut rows = Rows::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Json::Object(m) = serde_json::from_str::<Json>(line).expect("JSON line") else {
            panic!("not an object: {line}")
        };
        let device = m
            .get("device_id")
            .and_then(Json::as_str)
            .expect("device_id")
            .to_owned();
        let time = m.get(time_column).and_then(number).expect("time column") as u64;
        let previous = rows.insert((device.clone(), time), m);
        assert!(previous.is_none(), "duplicate row for ({device}, {time})");
    }
    rows
}
