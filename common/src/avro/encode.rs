//! Encoding readings as contract datums (for `weir gen`, the producer and
//! tests). Writes the full contract schema, field for field.

use super::primitive::{write_bytes, write_double, write_long};
use crate::reading::{Reading, ShortStr};

/// Appends the binary Avro datum of `r` in the contract schema to `out`.
pub fn encode_reading(r: &Reading, out: &mut Vec<u8>) {
    write_long(out, i64::from(r.sensor_id));
    write_long(out, i64::from(r.sensor_type));
    write_long(out, r.timestamp_ms);
    write_double(out, r.temperature);
    write_double(out, r.humidity);
    write_double(out, r.pressure);
    write_double(out, r.battery_level);
    write_long(out, i64::from(r.status));
    write_double(out, r.co2_level);
    write_double(out, r.noise_level);
    write_double(out, r.light_level);
    out.push(u8::from(r.motion_detected));
    write_double(out, r.signal_strength);
    write_double(out, r.memory_usage);
    write_double(out, r.cpu_usage);
    write_long(out, i64::from(r.error_count));
    write_long(out, r.packets_sent);
    write_long(out, r.packets_received);
    write_long(out, r.bytes_sent);
    write_long(out, r.bytes_received);
    write_double(out, r.latitude);
    write_double(out, r.longitude);
    write_double(out, r.altitude);
    write_nullable_string(out, r.customer_id.as_ref());
    write_nullable_string(out, r.site_id.as_ref());
}

fn write_nullable_string(out: &mut Vec<u8>, s: Option<&ShortStr>) {
    match s {
        None => write_long(out, 0),
        Some(s) => {
            write_long(out, 1);
            write_bytes(out, s.as_str().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{DecodePlan, CONTRACT_SCHEMA};
    use apache_avro::types::Value;

    #[test]
    fn apache_avro_reads_what_weir_encodes() {
        let r = Reading {
            sensor_id: -9,
            sensor_type: 4,
            timestamp_ms: 1_700_000_000_001,
            temperature: -3.25,
            motion_detected: true,
            bytes_sent: 77,
            customer_id: Some(ShortStr::new("customer_9")),
            site_id: None,
            ..Reading::default()
        };
        let mut buf = Vec::new();
        encode_reading(&r, &mut buf);
        let schema = apache_avro::Schema::parse_str(CONTRACT_SCHEMA).expect("parses");
        let value = crate::avro::test_support::from_datum(&schema, &buf);
        let Value::Record(fields) = value else {
            panic!("record expected")
        };
        assert_eq!(fields[0].1, Value::Int(-9));
        assert_eq!(fields[2].1, Value::TimestampMillis(1_700_000_000_001));
        assert_eq!(fields[3].1, Value::Double(-3.25));
        assert_eq!(fields[11].1, Value::Boolean(true));
        assert_eq!(fields[18].1, Value::Long(77));
        assert_eq!(
            fields[23].1,
            Value::Union(1, Box::new(Value::String("customer_9".into())))
        );
        assert_eq!(fields[24].1, Value::Union(0, Box::new(Value::Null)));
        let mut back = Reading::default();
        DecodePlan::contract()
            .decode(&buf, &mut back)
            .expect("decodes");
        assert_eq!(back, r);
    }
}
