//! Pre-aggregation before the shuffle: readings bound for another worker
//! are folded into per-(device, window) accumulators on the sending side,
//! and the accumulators cross the network instead of the readings.
//!
//! An [`Accumulator`] is a commutative monoid (merging accumulators of any
//! split of a window's readings equals adding them one by one), so the
//! owning worker merges what arrives into its pane and emits the same rows.
//! In a two-worker cluster half of all readings cross; with this, what
//! crosses is about one accumulator per device and window instead (Flink's
//! "local-global aggregation").
//!
//! Lateness is why this is safe only under conditions the [`Emitter`]
//! checks: a reading is late if its window closed where it *arrives*, and
//! an accumulator cannot be written to the late-readings output reading by
//! reading. The emitter therefore only pre-aggregates a reading whose
//! window its partition's watermark has not reached, and flushes
//! accumulators before it sends a watermark that reaches their window (and
//! before every barrier, idleness marker and end). The receiving window
//! task's watermark is the minimum over its non-idle inputs, so it cannot
//! pass this partition's last watermark — unless the partition was ever
//! idle there, in which case the emitter does not pre-aggregate at all.
//! Barriers find the pre-aggregator empty: checkpoints need nothing from
//! it.
//!
//! [`Emitter`]: crate::emitter::Emitter

use weir_common::aggregate::Accumulator;
use weir_common::reading::Reading;

use crate::envelope::PartialBatch;
use crate::window::index::SlotIndex;

/// Accumulators held at most (about 6.5 MB): when full, all are sent.
pub const CAPACITY: usize = 16_384;

/// Most accumulators per envelope (a shuffle frame of well under 1 MB).
pub const PER_ENVELOPE: usize = 2_048;

/// When accumulators sent carry fewer readings each than this, pre-
/// aggregation is not paying off (about one reading per device and window,
/// or far more devices than it holds): an accumulator costs about twice the
/// bytes of a reading.
const MIN_READINGS_PER_PARTIAL: u64 = 2;

/// Accumulators taken at once before their readings per accumulator are
/// judged (fewer say little: the last of a window, a barrier's).
const JUDGED_FROM: usize = 1_024;

/// Readings sent as they are after pre-aggregation stopped paying off,
/// before it is tried again (the mix of devices may change).
const PAUSE_READINGS: u64 = 1 << 22;

/// The accumulators of one destination and window.
struct Group {
    dest: usize,
    window_end: i64,
    index: SlotIndex,
    partials: Vec<(i32, Accumulator)>,
    /// Readings folded into `partials`.
    readings: u64,
}

/// One partition's accumulators of readings bound for other workers.
pub struct PreAggregator {
    /// Few: destinations × windows open at the partition's watermark.
    groups: Vec<Group>,
    /// Accumulators held.
    len: usize,
    /// Readings offered so far.
    offered: u64,
    /// Until `offered` reaches this, readings are not taken.
    paused_until: u64,
    capacity: usize,
}

impl Default for PreAggregator {
    fn default() -> Self {
        PreAggregator::with_capacity(CAPACITY)
    }
}

impl PreAggregator {
    pub fn with_capacity(capacity: usize) -> Self {
        PreAggregator {
            groups: Vec::new(),
            len: 0,
            offered: 0,
            paused_until: 0,
            capacity: capacity.max(1),
        }
    }

    /// Accumulators held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Folds `r`, of the window ending at `window_end`, into the
    /// accumulators for `dest`; `false` when pre-aggregation is paused
    /// (the caller sends the reading as it is). After a `true`, the caller
    /// checks [`is_full`](Self::is_full).
    #[inline]
    pub fn add(&mut self, dest: usize, window_end: i64, r: &Reading) -> bool {
        self.offered += 1;
        if self.offered < self.paused_until {
            return false;
        }
        let at = match self
            .groups
            .iter()
            .position(|g| g.dest == dest && g.window_end == window_end)
        {
            Some(at) => at,
            None => {
                self.groups.push(Group {
                    dest,
                    window_end,
                    index: SlotIndex::default(),
                    partials: Vec::new(),
                    readings: 0,
                });
                self.groups.len() - 1
            }
        };
        let Some(g) = self.groups.get_mut(at) else {
            return false;
        };
        match g.index.get(r.sensor_id) {
            Some(slot) => {
                if let Some((_, acc)) = g.partials.get_mut(slot as usize) {
                    acc.add(r);
                }
            }
            None => {
                // Fewer than `capacity` (a `usize`, far below 2^32 here)
                // accumulators per group.
                g.index.insert(r.sensor_id, g.partials.len() as u32);
                g.partials.push((r.sensor_id, Accumulator::new(r)));
                self.len += 1;
            }
        }
        g.readings += 1;
        true
    }

    /// Whether the accumulators reached their capacity (then the caller
    /// takes them all: [`take_through`](Self::take_through) with
    /// `i64::MAX`).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Takes the accumulators of every window ending at or before
    /// `watermark`, as envelopes of at most [`PER_ENVELOPE`] accumulators,
    /// with their destination; oldest window first. Pauses pre-aggregation
    /// if they carry too few readings each.
    pub fn take_through(
        &mut self,
        input: u32,
        watermark: i64,
        mut out: impl FnMut(usize, PartialBatch),
    ) {
        if self.groups.is_empty() {
            return;
        }
        self.groups.sort_by_key(|g| (g.window_end, g.dest));
        let keep = self
            .groups
            .iter()
            .position(|g| g.window_end > watermark)
            .unwrap_or(self.groups.len());
        let (mut readings, mut partials) = (0u64, 0usize);
        for g in self.groups.drain(..keep) {
            self.len -= g.partials.len();
            readings = readings.saturating_add(g.readings);
            partials += g.partials.len();
            let mut rest = g.partials.into_iter();
            loop {
                let chunk: Vec<(i32, Accumulator)> = rest.by_ref().take(PER_ENVELOPE).collect();
                if chunk.is_empty() {
                    break;
                }
                out(
                    g.dest,
                    PartialBatch {
                        input,
                        window_end: g.window_end,
                        partials: chunk,
                    },
                );
            }
        }
        let per_partial = readings / (partials.max(1) as u64);
        if partials >= JUDGED_FROM.min(self.capacity) && per_partial < MIN_READINGS_PER_PARTIAL {
            self.paused_until = self.offered.saturating_add(PAUSE_READINGS);
            tracing::debug!(
                per_partial,
                partials,
                "pre-aggregation paused: too few readings per device and window for it to pay off"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sensor_id: i32, ts: i64, temperature: f64) -> Reading {
        Reading {
            sensor_id,
            timestamp_ms: ts,
            temperature,
            status: (ts % 7) as i32,
            ..Reading::default()
        }
    }

    fn take_all(p: &mut PreAggregator) -> Vec<(usize, PartialBatch)> {
        let mut out = Vec::new();
        p.take_through(2, i64::MAX, |d, b| out.push((d, b)));
        out
    }

    #[test]
    fn accumulators_equal_adding_the_readings_one_by_one() {
        let mut p = PreAggregator::default();
        let readings: Vec<Reading> = (0..1_000)
            .map(|i| reading(i % 13, 1_000 * i64::from(i), f64::from(i) * 0.5))
            .collect();
        for r in &readings {
            let end = weir_common::time::window_end(r.timestamp_ms, 60_000);
            assert!(p.add((r.sensor_id % 2) as usize, end, r));
        }
        let batches = take_all(&mut p);
        assert!(p.is_empty());
        let mut seen = 0;
        for (dest, b) in &batches {
            assert_eq!(b.input, 2);
            for (sensor, acc) in &b.partials {
                assert_eq!((*sensor % 2) as usize, *dest);
                let mut expected: Option<Accumulator> = None;
                for r in readings.iter().filter(|r| {
                    r.sensor_id == *sensor
                        && weir_common::time::window_end(r.timestamp_ms, 60_000) == b.window_end
                }) {
                    match &mut expected {
                        Some(e) => e.add(r),
                        None => expected = Some(Accumulator::new(r)),
                    }
                }
                assert_eq!(Some(acc), expected.as_ref());
                seen += acc.count;
            }
        }
        assert_eq!(seen, 1_000);
        // Windows in order, oldest first.
        let ends: Vec<i64> = batches.iter().map(|(_, b)| b.window_end).collect();
        assert!(ends.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn takes_only_the_windows_a_watermark_reaches() {
        let mut p = PreAggregator::default();
        p.add(1, 60_000, &reading(1, 10, 1.0));
        p.add(1, 120_000, &reading(1, 70_000, 1.0));
        p.add(0, 60_000, &reading(2, 20, 1.0));
        let mut out = Vec::new();
        p.take_through(0, 59_999, |d, b| out.push((d, b.window_end)));
        assert!(out.is_empty());
        p.take_through(0, 60_000, |d, b| out.push((d, b.window_end)));
        assert_eq!(out, vec![(0, 60_000), (1, 60_000)]);
        assert_eq!(p.len(), 1);
        assert!(p.add(1, 120_000, &reading(1, 71_000, 2.0)));
        let rest = take_all(&mut p);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.partials[0].1.count, 2);
    }

    #[test]
    fn large_flushes_are_cut_into_envelopes() {
        let mut p = PreAggregator::with_capacity(100_000);
        for s in 0..(PER_ENVELOPE as i32 * 2 + 5) {
            p.add(0, 60_000, &reading(s, 1, 1.0));
        }
        let sizes: Vec<usize> = take_all(&mut p)
            .iter()
            .map(|(_, b)| b.partials.len())
            .collect();
        assert_eq!(sizes, vec![PER_ENVELOPE, PER_ENVELOPE, 5]);
    }

    #[test]
    fn pauses_when_windows_hold_about_one_reading_per_device() {
        let mut p = PreAggregator::default();
        for s in 0..2_000 {
            assert!(p.add(0, 60_000, &reading(s, 1, 1.0)));
        }
        // The next window's accumulators stay; the judgement is on what
        // was sent.
        for s in 0..10 {
            for _ in 0..50 {
                assert!(p.add(0, 120_000, &reading(s, 60_001, 1.0)));
            }
        }
        p.take_through(0, 60_000, |_, _| {});
        assert_eq!(p.len(), 10);
        assert!(!p.add(0, 120_000, &reading(1, 60_002, 1.0)), "paused");
        // Ten readings per device and window pay off.
        let mut q = PreAggregator::default();
        for i in 0..20_000 {
            assert!(q.add(0, 60_000, &reading(i % 2_000, 1, 1.0)));
        }
        q.take_through(0, 60_000, |_, _| {});
        assert!(q.add(0, 120_000, &reading(1, 60_002, 1.0)), "not paused");
    }

    #[test]
    fn pauses_when_devices_outnumber_its_capacity() {
        let mut p = PreAggregator::with_capacity(16);
        // Every reading a new device: one reading per accumulator.
        let mut taken = 0;
        for s in 0..16 {
            assert!(p.add(0, 60_000, &reading(s, 1, 1.0)));
        }
        assert!(p.is_full());
        p.take_through(0, i64::MAX, |_, b| taken += b.partials.len());
        assert_eq!(taken, 16);
        assert!(!p.add(0, 60_000, &reading(99, 1, 1.0)), "paused");
        // A few devices with many readings each keep it going.
        let mut q = PreAggregator::with_capacity(4);
        for i in 0..64 {
            assert!(q.add(0, 60_000, &reading(i % 4, 1, 1.0)));
        }
        assert!(q.is_full());
        q.take_through(0, i64::MAX, |_, _| {});
        assert!(q.add(0, 60_000, &reading(1, 1, 1.0)), "not paused");
    }
}
