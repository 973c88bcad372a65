//! The per-(device, window) accumulator and the rows it becomes.
//!
//! An [`Accumulator`] is a commutative monoid: `merge` is associative and
//! commutative, and adding readings one by one equals merging accumulators of
//! any split of them (up to floating-point summation order). That is what lets
//! the window operator keep partial accumulators in memory, spill them into
//! RocksDB as merge operands at any moment, and combine them when the window
//! closes, without ever reading state back per record.
//!
//! "Earliest" and "latest" reading fields are chosen by comparing the
//! readings themselves, never by arrival order, so the result does not depend
//! on how records were interleaved across partitions or spills.

use std::cmp::Ordering;

use crate::reading::{device_type_name, Reading, ShortStr};
use crate::rows::{SensorAggregatesRow, SensorsLocalRow};
use crate::time::datetime_seconds;

/// Running sum, minimum and maximum of one measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    fn of(v: f64) -> Self {
        Stat {
            sum: v,
            min: v,
            max: v,
        }
    }

    #[inline]
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn merge(&mut self, o: &Stat) {
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// Metadata of the window's earliest reading (device type, customer, site,
/// position), which the `sensors_local` row reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Earliest {
    pub timestamp_ms: i64,
    pub sensor_type: i32,
    pub customer_id: Option<ShortStr>,
    pub site_id: Option<ShortStr>,
    pub latitude: f64,
    pub longitude: f64,
    pub altitude: f64,
}

impl Earliest {
    fn of(r: &Reading) -> Self {
        Earliest {
            timestamp_ms: r.timestamp_ms,
            sensor_type: r.sensor_type,
            customer_id: r.customer_id.clone(),
            site_id: r.site_id.clone(),
            latitude: r.latitude,
            longitude: r.longitude,
            altitude: r.altitude,
        }
    }

    fn key(&self) -> EarliestKey<'_> {
        EarliestKey {
            timestamp_ms: self.timestamp_ms,
            customer_id: self.customer_id.as_ref().map(ShortStr::as_str),
            site_id: self.site_id.as_ref().map(ShortStr::as_str),
            sensor_type: self.sensor_type,
            latitude: self.latitude,
            longitude: self.longitude,
            altitude: self.altitude,
        }
    }

    #[inline]
    fn consider_reading(&mut self, r: &Reading) {
        // The common case (a later reading) is decided on the timestamp alone.
        if r.timestamp_ms > self.timestamp_ms {
            return;
        }
        if EarliestKey::of(r).cmp(&self.key()) == Ordering::Less {
            *self = Earliest::of(r);
        }
    }

    fn merge(&mut self, o: &Earliest) {
        if o.key().cmp(&self.key()) == Ordering::Less {
            *self = o.clone();
        }
    }
}

/// What decides which reading is the earliest: the timestamp, and for equal
/// timestamps (which the contract leaves open) the metadata itself, so that
/// the choice never depends on arrival order: smallest customer, site, type,
/// latitude, longitude, altitude (an absent identifier sorts first).
struct EarliestKey<'a> {
    timestamp_ms: i64,
    customer_id: Option<&'a str>,
    site_id: Option<&'a str>,
    sensor_type: i32,
    latitude: f64,
    longitude: f64,
    altitude: f64,
}

impl<'a> EarliestKey<'a> {
    fn of(r: &'a Reading) -> Self {
        EarliestKey {
            timestamp_ms: r.timestamp_ms,
            customer_id: r.customer_id.as_ref().map(|s| s.as_str()),
            site_id: r.site_id.as_ref().map(|s| s.as_str()),
            sensor_type: r.sensor_type,
            latitude: r.latitude,
            longitude: r.longitude,
            altitude: r.altitude,
        }
    }

    fn cmp(&self, o: &EarliestKey<'_>) -> Ordering {
        self.timestamp_ms
            .cmp(&o.timestamp_ms)
            .then_with(|| self.customer_id.cmp(&o.customer_id))
            .then_with(|| self.site_id.cmp(&o.site_id))
            .then_with(|| self.sensor_type.cmp(&o.sensor_type))
            .then_with(|| self.latitude.total_cmp(&o.latitude))
            .then_with(|| self.longitude.total_cmp(&o.longitude))
            .then_with(|| self.altitude.total_cmp(&o.altitude))
    }
}

/// Everything needed to produce both output rows of one (device, window).
#[derive(Clone, Debug, PartialEq)]
pub struct Accumulator {
    pub count: u64,
    pub temperature: Stat,
    pub humidity: Stat,
    pub pressure: Stat,
    pub battery: Stat,
    pub co2: Stat,
    pub noise: Stat,
    pub light: Stat,
    pub signal: Stat,
    pub memory_sum: f64,
    pub cpu_sum: f64,
    pub motion_count: u64,
    pub error_sum: i64,
    pub packets_sent_sum: i64,
    pub packets_received_sum: i64,
    pub bytes_sent_sum: i64,
    pub bytes_received_sum: i64,
    pub earliest: Earliest,
    /// Timestamp and status of the latest reading (ties: greatest status).
    pub latest_ms: i64,
    pub latest_status: i32,
}

impl Accumulator {
    pub fn new(r: &Reading) -> Self {
        Accumulator {
            count: 1,
            temperature: Stat::of(r.temperature),
            humidity: Stat::of(r.humidity),
            pressure: Stat::of(r.pressure),
            battery: Stat::of(r.battery_level),
            co2: Stat::of(r.co2_level),
            noise: Stat::of(r.noise_level),
            light: Stat::of(r.light_level),
            signal: Stat::of(r.signal_strength),
            memory_sum: r.memory_usage,
            cpu_sum: r.cpu_usage,
            motion_count: u64::from(r.motion_detected),
            error_sum: i64::from(r.error_count),
            packets_sent_sum: r.packets_sent,
            packets_received_sum: r.packets_received,
            bytes_sent_sum: r.bytes_sent,
            bytes_received_sum: r.bytes_received,
            earliest: Earliest::of(r),
            latest_ms: r.timestamp_ms,
            latest_status: r.status,
        }
    }

    /// Folds one reading in. Allocation-free unless the reading becomes the
    /// new earliest one and carries identifiers.
    #[inline]
    pub fn add(&mut self, r: &Reading) {
        self.count += 1;
        self.temperature.add(r.temperature);
        self.humidity.add(r.humidity);
        self.pressure.add(r.pressure);
        self.battery.add(r.battery_level);
        self.co2.add(r.co2_level);
        self.noise.add(r.noise_level);
        self.light.add(r.light_level);
        self.signal.add(r.signal_strength);
        self.memory_sum += r.memory_usage;
        self.cpu_sum += r.cpu_usage;
        self.motion_count += u64::from(r.motion_detected);
        self.error_sum = self.error_sum.wrapping_add(i64::from(r.error_count));
        self.packets_sent_sum = self.packets_sent_sum.wrapping_add(r.packets_sent);
        self.packets_received_sum = self.packets_received_sum.wrapping_add(r.packets_received);
        self.bytes_sent_sum = self.bytes_sent_sum.wrapping_add(r.bytes_sent);
        self.bytes_received_sum = self.bytes_received_sum.wrapping_add(r.bytes_received);
        self.earliest.consider_reading(r);
        self.consider_latest(r.timestamp_ms, r.status);
    }

    #[inline]
    fn consider_latest(&mut self, ts: i64, status: i32) {
        if (ts, status) > (self.latest_ms, self.latest_status) {
            self.latest_ms = ts;
            self.latest_status = status;
        }
    }

    pub fn merge(&mut self, o: &Accumulator) {
        self.count += o.count;
        self.temperature.merge(&o.temperature);
        self.humidity.merge(&o.humidity);
        self.pressure.merge(&o.pressure);
        self.battery.merge(&o.battery);
        self.co2.merge(&o.co2);
        self.noise.merge(&o.noise);
        self.light.merge(&o.light);
        self.signal.merge(&o.signal);
        self.memory_sum += o.memory_sum;
        self.cpu_sum += o.cpu_sum;
        self.motion_count += o.motion_count;
        self.error_sum = self.error_sum.wrapping_add(o.error_sum);
        self.packets_sent_sum = self.packets_sent_sum.wrapping_add(o.packets_sent_sum);
        self.packets_received_sum = self
            .packets_received_sum
            .wrapping_add(o.packets_received_sum);
        self.bytes_sent_sum = self.bytes_sent_sum.wrapping_add(o.bytes_sent_sum);
        self.bytes_received_sum = self.bytes_received_sum.wrapping_add(o.bytes_received_sum);
        self.earliest.merge(&o.earliest);
        self.consider_latest(o.latest_ms, o.latest_status);
    }

    /// Heap bytes of identifiers too long to be kept inline, for the state
    /// memory budget; everything else of an accumulator is inline.
    pub fn heap_bytes(&self) -> usize {
        let e = &self.earliest;
        [&e.customer_id, &e.site_id]
            .into_iter()
            .flatten()
            .map(ShortStr::heap_bytes)
            .sum()
    }

    fn avg(&self, sum: f64) -> f64 {
        sum / self.count as f64
    }

    /// The `benchmark.sensors_local` row of this window.
    pub fn sensors_local_row(&self, sensor_id: i32, window_end_ms: i64) -> SensorsLocalRow {
        let e = &self.earliest;
        SensorsLocalRow {
            device_id: Reading::device_id(sensor_id),
            device_type: ShortStr::new(device_type_name(e.sensor_type)),
            customer_id: e
                .customer_id
                .clone()
                .unwrap_or_else(|| ShortStr::new("customer_0001")),
            site_id: e.site_id.clone().unwrap_or_else(|| site_of(sensor_id)),
            latitude: e.latitude,
            longitude: e.longitude,
            altitude: e.altitude,
            time: datetime_seconds(window_end_ms),
            temperature: self.avg(self.temperature.sum),
            humidity: self.avg(self.humidity.sum),
            pressure: self.avg(self.pressure.sum),
            co2_level: self.avg(self.co2.sum),
            noise_level: self.avg(self.noise.sum),
            light_level: self.avg(self.light.sum),
            motion_detected: u8::from(self.motion_count * 2 > self.count),
            battery_level: self.avg(self.battery.sum),
            signal_strength: self.avg(self.signal.sum),
            memory_usage: self.avg(self.memory_sum),
            cpu_usage: self.avg(self.cpu_sum),
            status: self.latest_status.clamp(0, i32::from(u8::MAX)) as u8,
            error_count: self.error_sum.clamp(0, i64::from(u32::MAX)) as u32,
            packets_sent: clamp_u64(self.packets_sent_sum),
            packets_received: clamp_u64(self.packets_received_sum),
            bytes_sent: clamp_u64(self.bytes_sent_sum),
            bytes_received: clamp_u64(self.bytes_received_sum),
        }
    }

    /// The `benchmark.sensor_aggregates_1m` row of this window.
    pub fn aggregates_row(
        &self,
        sensor_id: i32,
        window_start_ms: i64,
        window_end_ms: i64,
    ) -> SensorAggregatesRow {
        let s = |st: &Stat| (st.min, self.avg(st.sum), st.max);
        let (temperature_min, temperature_avg, temperature_max) = s(&self.temperature);
        let (humidity_min, humidity_avg, humidity_max) = s(&self.humidity);
        let (pressure_min, pressure_avg, pressure_max) = s(&self.pressure);
        let (battery_min, battery_avg, battery_max) = s(&self.battery);
        let (co2_min, co2_avg, co2_max) = s(&self.co2);
        let (noise_min, noise_avg, noise_max) = s(&self.noise);
        let (light_min, light_avg, light_max) = s(&self.light);
        let (signal_min, signal_avg, signal_max) = s(&self.signal);
        SensorAggregatesRow {
            device_id: Reading::device_id(sensor_id),
            window_start: datetime_seconds(window_start_ms),
            window_end: datetime_seconds(window_end_ms),
            readings: self.count,
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
            error_count: clamp_u64(self.error_sum),
            motion_readings: self.motion_count,
            bytes_sent: clamp_u64(self.bytes_sent_sum),
            bytes_received: clamp_u64(self.bytes_received_sum),
        }
    }
}

/// The contract's site of a reading without one: `"site_"` and the sensor
/// id modulo 1000 as `{:04}` formats it, without touching the heap.
fn site_of(sensor_id: i32) -> ShortStr {
    let n = sensor_id % 1000; // in -999..=999
    let mut buf = [0u8; 10];
    buf[..5].copy_from_slice(b"site_");
    let mut len = 5;
    // Four characters, the sign included.
    let width = if n < 0 {
        buf[len] = b'-';
        len += 1;
        3
    } else {
        4
    };
    let m = n.unsigned_abs();
    for place in (0..width).rev() {
        buf[len] = b'0' + (m / 10u32.pow(place) % 10) as u8;
        len += 1;
    }
    ShortStr::new(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

/// Counters are sums of signed Avro fields; a negative sum (only possible
/// with nonsensical input) is stored as 0 in the unsigned columns.
fn clamp_u64(v: i64) -> u64 {
    v.max(0) as u64
}

pub mod codec;

#[cfg(test)]
mod tests {
    #[test]
    fn default_sites_are_formatted_as_the_contract_says() {
        for id in [
            0,
            5,
            42,
            999,
            1000,
            1234,
            987_654,
            i32::MAX,
            -1,
            -5,
            -42,
            -999,
            -1000,
            -1234,
            i32::MIN,
        ] {
            assert_eq!(
                super::site_of(id).as_str(),
                format!("site_{:04}", id % 1000),
                "{id}"
            );
        }
    }

    use super::*;
    use crate::reading::ShortStr;

    fn reading(ts: i64, temp: f64) -> Reading {
        Reading {
            sensor_id: 42,
            sensor_type: 1,
            timestamp_ms: ts,
            temperature: temp,
            humidity: temp / 2.0,
            pressure: 1000.0 + temp,
            battery_level: 90.0 - temp,
            status: 1,
            co2_level: 400.0,
            noise_level: 30.0,
            light_level: temp * 10.0,
            motion_detected: temp > 20.0,
            signal_strength: -60.0,
            memory_usage: 50.0,
            cpu_usage: 10.0,
            error_count: 1,
            packets_sent: 10,
            packets_received: 9,
            bytes_sent: 1000,
            bytes_received: 900,
            latitude: 1.0,
            longitude: 2.0,
            altitude: 3.0,
            customer_id: Some(ShortStr::new("customer_0042")),
            site_id: None,
        }
    }

    fn fold(rs: &[Reading]) -> Accumulator {
        let mut acc = Accumulator::new(&rs[0]);
        for r in &rs[1..] {
            acc.add(r);
        }
        acc
    }

    #[test]
    fn averages_sums_and_extremes() {
        let rs = [
            reading(1_000, 10.0),
            reading(2_000, 20.0),
            reading(3_000, 30.0),
        ];
        let acc = fold(&rs);
        let row = acc.sensors_local_row(42, 60_000);
        assert_eq!(row.temperature, 20.0);
        assert_eq!(row.humidity, 10.0);
        assert_eq!(row.error_count, 3);
        assert_eq!(row.packets_sent, 30);
        assert_eq!(row.bytes_received, 2700);
        assert_eq!(row.time, 60);
        assert_eq!(row.device_id, "sensor_42");
        assert_eq!(row.device_type, "temperature_sensor");
        assert_eq!(row.customer_id, "customer_0042");
        assert_eq!(row.site_id, "site_0042");
        // Only 1 of 3 readings has motion (temp > 20): not more than half.
        assert_eq!(row.motion_detected, 0);
        let agg = acc.aggregates_row(42, 0, 60_000);
        assert_eq!(agg.readings, 3);
        assert_eq!(
            (
                agg.temperature_min,
                agg.temperature_avg,
                agg.temperature_max
            ),
            (10.0, 20.0, 30.0)
        );
        assert_eq!((agg.light_min, agg.light_max), (100.0, 300.0));
        assert_eq!(agg.motion_readings, 1);
        assert_eq!(agg.error_count, 3);
        assert_eq!((agg.window_start, agg.window_end), (0, 60));
    }

    #[test]
    fn motion_needs_strictly_more_than_half() {
        let two = fold(&[reading(1, 25.0), reading(2, 10.0)]);
        assert_eq!(two.sensors_local_row(1, 60_000).motion_detected, 0);
        let three = fold(&[reading(1, 25.0), reading(2, 10.0), reading(3, 26.0)]);
        assert_eq!(three.sensors_local_row(1, 60_000).motion_detected, 1);
    }

    #[test]
    fn earliest_metadata_and_latest_status_ignore_arrival_order() {
        let mut late_first = reading(5_000, 1.0);
        late_first.customer_id = Some(ShortStr::new("late"));
        late_first.latitude = 50.0;
        late_first.status = 3;
        let mut early = reading(1_000, 1.0);
        early.customer_id = None;
        early.sensor_type = 99;
        early.site_id = Some(ShortStr::new("site_x"));
        early.status = 4;
        let mut tie_latest = reading(5_000, 1.0);
        tie_latest.status = 2;
        let a = fold(&[late_first.clone(), early.clone(), tie_latest.clone()]);
        let b = fold(&[early, tie_latest, late_first]);
        for acc in [&a, &b] {
            let row = acc.sensors_local_row(1234, 60_000);
            assert_eq!(
                row.customer_id, "customer_0001",
                "null customer of the earliest"
            );
            assert_eq!(row.site_id, "site_x");
            assert_eq!(row.device_type, "unknown");
            assert_eq!(row.latitude, 1.0);
            assert_eq!(row.status, 3, "latest timestamp, ties to greatest status");
        }
    }

    #[test]
    fn earliest_ties_break_on_content() {
        let mut x = reading(1_000, 1.0);
        x.customer_id = Some(ShortStr::new("b"));
        let mut y = reading(1_000, 1.0);
        y.customer_id = Some(ShortStr::new("a"));
        assert_eq!(
            fold(&[x.clone(), y.clone()]).earliest,
            fold(&[y, x]).earliest
        );
    }

    #[test]
    fn merge_equals_sequential_add() {
        let rs: Vec<Reading> = (0..50)
            .map(|i| reading(((i * 7919) % 50) * 1000, f64::from(i as i32) * 0.5))
            .collect();
        let whole = fold(&rs);
        for split in [1, 17, 49] {
            let mut left = fold(&rs[..split]);
            let right = fold(&rs[split..]);
            left.merge(&right);
            assert_eq!(left.count, whole.count);
            assert_eq!(left.earliest, whole.earliest);
            assert_eq!(left.latest_ms, whole.latest_ms);
            assert_eq!(left.temperature.min, whole.temperature.min);
            assert!((left.temperature.sum - whole.temperature.sum).abs() < 1e-9);
            assert_eq!(left.packets_sent_sum, whole.packets_sent_sum);
        }
    }

    #[test]
    fn negative_counters_clamp_to_zero() {
        let mut r = reading(1, 1.0);
        r.error_count = -5;
        r.packets_sent = -1;
        r.status = 300;
        let row = Accumulator::new(&r).sensors_local_row(1, 60_000);
        assert_eq!(row.error_count, 0);
        assert_eq!(row.packets_sent, 0);
        assert_eq!(row.status, 255);
    }

    #[test]
    fn codec_round_trips_and_rejects_garbage() {
        let mut acc = fold(&[reading(1, 1.0), reading(2, 2.0)]);
        acc.earliest.site_id = Some("site_ü".into());
        let mut buf = Vec::new();
        codec::encode(&acc, &mut buf);
        assert_eq!(codec::decode(&buf), Ok(acc));
        assert_eq!(
            codec::decode(&buf[..buf.len() - 1]),
            Err(codec::CorruptState::Truncated)
        );
        let mut extra = buf.clone();
        extra.push(0);
        assert_eq!(codec::decode(&extra), Err(codec::CorruptState::Trailing(1)));
        buf[0] = 9;
        assert_eq!(codec::decode(&buf), Err(codec::CorruptState::Version(9)));
    }

    /// Accumulators of one reading take the shorter form and come back bit
    /// for bit (NaN and -0.0 included); anything else takes the full form.
    #[test]
    fn single_readings_round_trip_in_the_short_form() {
        let encode = |acc: &Accumulator| {
            let mut buf = Vec::new();
            codec::encode(acc, &mut buf);
            buf
        };
        let mut odd = reading(7, f64::NAN);
        odd.humidity = -0.0;
        odd.pressure = f64::NEG_INFINITY;
        odd.customer_id = Some("a customer id longer than thirty bytes".into());
        odd.site_id = None;
        odd.motion_detected = true;
        odd.error_count = -4;
        odd.status = -1;
        for r in [reading(1, 21.5), odd] {
            let one = Accumulator::new(&r);
            let buf = encode(&one);
            let back = codec::decode(&buf).expect("decodes");
            assert_eq!(encode(&back), buf, "bit for bit");
            assert_eq!(back.count, 1);
            assert_eq!(back.latest_ms, r.timestamp_ms);
            let two = fold(&[r.clone(), r.clone()]);
            let full = encode(&two);
            assert!(
                buf.len() + 100 < full.len(),
                "{} vs {}",
                buf.len(),
                full.len()
            );
            assert_eq!(encode(&codec::decode(&full).expect("decodes")), full);
            assert!(codec::decode(&buf[..buf.len() - 1]).is_err());
        }
    }
}
