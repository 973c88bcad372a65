//! A deterministic source of contract readings, shaped like the real fleet.
//!
//! The same parameters always give the same readings, whatever machine or
//! partitioning reads them, so tests and benchmarks can regenerate their
//! input instead of storing it. Devices are spread over partitions by
//! `sensorId % partitions` (as a keyed producer would), each partition emits
//! its share of the rate, and a reading arrives up to `disorder` after its
//! event time. Device metadata varies the way the contract cares about: some
//! devices have no customer or site, a few report an unknown sensor type, and
//! positions jitter so that "the window's earliest reading" matters.

use crate::reading::{Reading, ShortStr};

/// SplitMix64: tiny, fast, and stable across versions (unlike `rand`'s
/// generators, whose streams are not a compatibility promise).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    #[inline]
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

/// What a generator produces.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorParams {
    pub devices: u32,
    /// Readings per second of event time, over all partitions.
    pub rate: f64,
    pub disorder_ms: u64,
    pub seed: u64,
    /// Total readings over all partitions; unbounded when `None`.
    pub records: Option<u64>,
    pub start_ms: i64,
    pub partitions: u32,
}

/// Static facts about one device.
#[derive(Clone, Debug)]
struct Device {
    sensor_id: i32,
    sensor_type: i32,
    customer_id: Option<ShortStr>,
    site_id: Option<ShortStr>,
    latitude: f64,
    longitude: f64,
    altitude: f64,
    base_temperature: f64,
    base_humidity: f64,
}

impl Device {
    fn new(seed: u64, sensor_id: i32) -> Self {
        let mut rng = Rng::new(seed ^ (sensor_id as u64).wrapping_mul(0xa076_1d64_78bd_642f));
        let sensor_type = if rng.chance(0.02) {
            if rng.chance(0.5) {
                0
            } else {
                9
            }
        } else {
            1 + rng.below(8) as i32
        };
        let customer_id = (!rng.chance(0.1))
            .then(|| ShortStr::new(&format!("customer_{:04}", 1 + sensor_id % 50)));
        let site_id =
            (!rng.chance(0.1)).then(|| ShortStr::new(&format!("site_{:04}", sensor_id % 1000)));
        Device {
            sensor_id,
            sensor_type,
            customer_id,
            site_id,
            latitude: rng.range(-60.0, 70.0),
            longitude: rng.range(-180.0, 180.0),
            altitude: rng.range(0.0, 2500.0),
            base_temperature: rng.range(10.0, 30.0),
            base_humidity: rng.range(30.0, 70.0),
        }
    }
}

/// The readings of one partition, in arrival order.
#[derive(Clone, Debug)]
pub struct PartitionGenerator {
    devices: Vec<Device>,
    rng: Rng,
    start_ms: i64,
    /// Milliseconds of event time between consecutive readings here.
    interval_ms: f64,
    disorder_ms: u64,
    emitted: u64,
    limit: Option<u64>,
}

impl PartitionGenerator {
    /// Partition `partition` of `params.partitions`.
    pub fn new(params: &GeneratorParams, partition: u32) -> Self {
        assert!(params.partitions > 0 && partition < params.partitions);
        assert!(params.devices >= params.partitions && params.rate > 0.0);
        let p = u64::from(params.partitions);
        let devices: Vec<Device> = (1..=params.devices as i32)
            .filter(|id| (*id as u64) % p == u64::from(partition))
            .map(|id| Device::new(params.seed, id))
            .collect();
        let limit = params
            .records
            .map(|n| n / p + u64::from(u64::from(partition) < n % p));
        PartitionGenerator {
            devices,
            rng: Rng::new(
                params
                    .seed
                    .wrapping_add(u64::from(partition).wrapping_mul(0x9e37_79b9)),
            ),
            start_ms: params.start_ms,
            interval_ms: 1000.0 * p as f64 / params.rate,
            disorder_ms: params.disorder_ms,
            emitted: 0,
            limit,
        }
    }

    /// Readings emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Whether every reading has been produced.
    pub fn is_done(&self) -> bool {
        self.limit.is_some_and(|l| self.emitted >= l)
    }

    /// Arrival time (event-time clock) of the next reading: a realtime
    /// source waits until the wall clock reaches it.
    pub fn next_arrival_ms(&self) -> i64 {
        self.start_ms + (self.emitted as f64 * self.interval_ms) as i64
    }

    /// Writes the next reading into `out`; `false` once the partition is done.
    pub fn next_into(&mut self, out: &mut Reading) -> bool {
        if self.is_done() {
            return false;
        }
        let arrival = self.next_arrival_ms();
        self.emitted += 1;
        let rng = &mut self.rng;
        let d = &self.devices[rng.below(self.devices.len() as u64) as usize];
        let delay = if self.disorder_ms == 0 {
            0
        } else {
            rng.below(self.disorder_ms + 1) as i64
        };
        let ts = arrival - delay;
        // A slow daily cycle keeps values moving without making them random noise.
        let phase = (ts as f64 / 86_400_000.0) * std::f64::consts::TAU;
        let packets_sent = 10 + rng.below(90) as i64;
        let packets_received = packets_sent - rng.below(3).min(packets_sent as u64) as i64;
        *out = Reading {
            sensor_id: d.sensor_id,
            sensor_type: d.sensor_type,
            timestamp_ms: ts,
            temperature: d.base_temperature + 5.0 * phase.sin() + rng.range(-1.0, 1.0),
            humidity: d.base_humidity + rng.range(-5.0, 5.0),
            pressure: rng.range(990.0, 1030.0),
            battery_level: rng.range(20.0, 100.0),
            status: if rng.chance(0.9) {
                1
            } else {
                2 + rng.below(3) as i32
            },
            co2_level: rng.range(400.0, 1000.0),
            noise_level: rng.range(30.0, 80.0),
            light_level: rng.range(0.0, 1000.0),
            motion_detected: rng.chance(0.3),
            signal_strength: rng.range(-90.0, -40.0),
            memory_usage: rng.range(20.0, 80.0),
            cpu_usage: rng.range(5.0, 95.0),
            error_count: if rng.chance(0.95) {
                0
            } else {
                1 + rng.below(5) as i32
            },
            packets_sent,
            packets_received,
            bytes_sent: packets_sent * (64 + rng.below(1436) as i64),
            bytes_received: packets_received * (64 + rng.below(1436) as i64),
            latitude: d.latitude + rng.range(-1e-4, 1e-4),
            longitude: d.longitude + rng.range(-1e-4, 1e-4),
            altitude: d.altitude + rng.range(-0.5, 0.5),
            customer_id: d.customer_id.clone(),
            site_id: d.site_id.clone(),
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(partitions: u32, records: Option<u64>) -> GeneratorParams {
        GeneratorParams {
            devices: 50,
            rate: 1000.0,
            disorder_ms: 3000,
            seed: 7,
            records,
            start_ms: 1_000_000,
            partitions,
        }
    }

    fn drain(g: &mut PartitionGenerator) -> Vec<Reading> {
        let mut out = Vec::new();
        let mut r = Reading::default();
        while g.next_into(&mut r) {
            out.push(r.clone());
        }
        out
    }

    #[test]
    fn deterministic_and_split_by_device() {
        let p = params(3, Some(1000));
        let a: Vec<Vec<Reading>> = (0..3)
            .map(|i| drain(&mut PartitionGenerator::new(&p, i)))
            .collect();
        let b: Vec<Vec<Reading>> = (0..3)
            .map(|i| drain(&mut PartitionGenerator::new(&p, i)))
            .collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Vec::len).sum::<usize>(), 1000);
        assert_eq!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![334, 333, 333]
        );
        for (i, part) in a.iter().enumerate() {
            assert!(part.iter().all(|r| r.sensor_id as usize % 3 == i));
        }
    }

    #[test]
    fn disorder_is_bounded_and_rate_is_respected() {
        let p = params(1, Some(5000));
        let readings = drain(&mut PartitionGenerator::new(&p, 0));
        let mut max_seen = i64::MIN;
        let mut max_lag = 0;
        for r in &readings {
            max_seen = max_seen.max(r.timestamp_ms);
            max_lag = max_lag.max(max_seen - r.timestamp_ms);
        }
        assert!(max_lag <= 3000 && max_lag > 2000, "lag {max_lag}");
        // 5000 readings at 1000/s span about five seconds of event time.
        assert!((1_004_000..=1_005_000).contains(&max_seen), "{max_seen}");
    }

    #[test]
    fn metadata_varies_as_the_contract_needs() {
        let p = GeneratorParams {
            devices: 500,
            ..params(1, Some(20_000))
        };
        let readings = drain(&mut PartitionGenerator::new(&p, 0));
        assert!(readings.iter().any(|r| r.customer_id.is_none()));
        assert!(readings.iter().any(|r| r.site_id.is_none()));
        assert!(readings.iter().any(|r| !(1..=8).contains(&r.sensor_type)));
        assert!(readings.iter().any(|r| r.motion_detected));
        assert!(readings.iter().any(|r| r.status != 1));
    }

    #[test]
    fn unbounded_generator_keeps_going() {
        let mut g = PartitionGenerator::new(&params(2, None), 1);
        let mut r = Reading::default();
        for _ in 0..10_000 {
            assert!(g.next_into(&mut r));
        }
        assert!(!g.is_done());
        assert_eq!(g.emitted(), 10_000);
    }
}
