//! The accumulators of one open window, in memory.

use weir_common::aggregate::Accumulator;
use weir_common::keygroup::key_group_of;
use weir_common::reading::Reading;

use super::index::SlotIndex;
use super::prefetch::prefetch;

/// Accumulators per page of a pane.
const PAGE: usize = 1024;

/// How many readings ahead [`Pane::add_all`] starts loading an index
/// bucket; it starts loading the accumulator half as far ahead.
const AHEAD: usize = 16;

/// Accumulators of one window held in memory: pages of fixed size, found
/// through a small index (sensor → slot). A hash map holding accumulators
/// themselves would, when it grows, allocate room for twice as many 370-byte
/// entries as it holds; pages waste at most one page, and the index's slots
/// are 8 bytes.
#[derive(Default)]
pub(super) struct Pane {
    pub(super) index: SlotIndex,
    pages: Vec<Vec<(i32, Accumulator)>>,
    /// Heap bytes of the accumulators' strings.
    heap: usize,
    /// Part of this window's state is in RocksDB.
    pub(super) spilled: bool,
}

impl Pane {
    /// An empty pane of a window whose state is partly in RocksDB.
    pub(super) fn spilled() -> Self {
        Pane {
            spilled: true,
            ..Pane::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// What the pane occupies: whole pages and the index's table, not
    /// only the used slots, since that is what the process holds.
    pub(super) fn bytes(&self) -> usize {
        self.pages.len() * PAGE * std::mem::size_of::<(i32, Accumulator)>()
            + self.index.bytes()
            + self.heap
    }

    /// Adds `readings[i]` for every `i` in `which`, in that order. The
    /// index bucket of a reading [`AHEAD`] places on, and the accumulator of
    /// one half as far, are loaded while the current one is added: with
    /// more devices than the CPU caches hold, that is the difference
    /// between waiting for memory twice per reading and hardly at all.
    pub(super) fn add_all(&mut self, readings: &[Reading], which: &[u32]) {
        let sensor = |k: usize| {
            which
                .get(k)
                .and_then(|&i| readings.get(i as usize))
                .map(|r| r.sensor_id)
        };
        for (k, &i) in which.iter().enumerate() {
            if let Some(s) = sensor(k + AHEAD) {
                self.index.prefetch(s);
            }
            if let Some(slot) = sensor(k + AHEAD / 2).and_then(|s| self.index.get(s)) {
                if let Some(acc) = self.get(slot) {
                    prefetch(acc);
                }
            }
            if let Some(r) = readings.get(i as usize) {
                self.add(r);
            }
        }
    }

    /// Starts loading the accumulator in `slot`.
    #[inline]
    pub(super) fn prefetch(&self, slot: u32) {
        if let Some(acc) = self.get(slot) {
            prefetch(acc);
        }
    }

    #[inline]
    pub(super) fn add(&mut self, r: &Reading) {
        if let Some(slot) = self.index.get(r.sensor_id) {
            let slot = slot as usize;
            if let Some((_, acc)) = self
                .pages
                .get_mut(slot / PAGE)
                .and_then(|p| p.get_mut(slot % PAGE))
            {
                acc.add(r);
            }
            return;
        }
        let acc = Accumulator::new(r);
        self.heap += acc.heap_bytes();
        let slot = self.index.len();
        if self.pages.last().is_none_or(|p| p.len() == PAGE) {
            self.pages.push(Vec::with_capacity(PAGE));
        }
        if let Some(page) = self.pages.last_mut() {
            page.push((r.sensor_id, acc));
        }
        // Slots stay below 2^32: a window holds at most 2^32 sensor ids.
        self.index.insert(r.sensor_id, slot as u32);
    }

    pub(super) fn get(&self, slot: u32) -> Option<&Accumulator> {
        let slot = slot as usize;
        self.pages
            .get(slot / PAGE)
            .and_then(|p| p.get(slot % PAGE))
            .map(|(_, acc)| acc)
    }

    /// Every slot with its emission key, in key order (key group, sensor):
    /// the order of the state store, in which windows are emitted.
    pub(super) fn sorted(&self, max_parallelism: u16) -> Vec<(u64, u32)> {
        let mut order: Vec<(u64, u32)> = self
            .pages
            .iter()
            .flatten()
            .zip(0u32..)
            .map(|((sensor, _), slot)| {
                (
                    emission_key(key_group_of(*sensor, max_parallelism), *sensor),
                    slot,
                )
            })
            .collect();
        order.sort_unstable_by_key(|&(key, _)| key);
        order
    }
}

/// Orders (key group, sensor) as the state store's keys do.
#[inline]
pub(super) fn emission_key(key_group: u16, sensor: i32) -> u64 {
    (u64::from(key_group) << 32) | u64::from((sensor as u32) ^ (1 << 31))
}

#[inline]
pub(super) fn key_group_of_key(key: u64) -> u16 {
    (key >> 32) as u16
}

#[inline]
pub(super) fn sensor_of(key: u64) -> i32 {
    ((key as u32) ^ (1 << 31)) as i32
}
