//! The accumulators of one open window, in memory.

use weir_common::aggregate::Accumulator;
use weir_common::keygroup::key_group_of;
use weir_common::reading::Reading;

use super::index::SlotIndex;
use super::prefetch::prefetch;

/// Accumulators per page of a pane: about 25 MB, above the size from which
/// glibc maps allocations directly (`weir` sets it to 16 MiB at start).
/// A page becomes resident as it fills, emptied pages are reused through a
/// [`PagePool`], and a page the pool does not keep goes back to the kernel
/// at once. Pages from the heap (1,024 accumulators) instead stayed with the
/// malloc arena of whichever worker thread the window task happened to run
/// on: with 5,000,000 devices those arenas' high-water marks added up to
/// 470 MB of RSS for a 256 MiB budget.
const PAGE: usize = 1 << 16;

type Page = Vec<(i32, Accumulator)>;

/// Emptied pages, which new panes fill before any new page is mapped: a
/// spill or a closed window hands its pages back, so memory is faulted in
/// once and reused, not mapped afresh for every pane. Holds at most enough
/// pages for the memory budget; more are unmapped.
pub(super) struct PagePool {
    pages: Vec<Page>,
    max: usize,
}

impl PagePool {
    pub(super) fn new(memory_budget: usize) -> Self {
        let page_bytes = PAGE * std::mem::size_of::<(i32, Accumulator)>();
        PagePool {
            pages: Vec::new(),
            max: memory_budget / page_bytes + 1,
        }
    }

    fn take(&mut self) -> Page {
        self.pages.pop().unwrap_or_else(|| Vec::with_capacity(PAGE))
    }

    fn give(&mut self, mut page: Page) {
        if self.pages.len() < self.max {
            page.clear();
            self.pages.push(page);
        }
    }
}

/// How many readings ahead [`Pane::add_all`] starts loading an index
/// bucket; it starts loading the accumulator half as far ahead.
const AHEAD: usize = 16;

/// Below this many accumulators (about 6 MB) a pane stays in the CPU's
/// caches, and loading ahead would only cost instructions.
const PREFETCH_FROM: usize = 16_384;

/// Accumulators of one window held in memory: pages of fixed size, found
/// through a small index (sensor → slot). A hash map holding accumulators
/// themselves would, when it grows, allocate and touch room for twice as
/// many 390-byte entries as it holds; pages are touched only as they fill,
/// and the index's slots are 8 bytes.
#[derive(Default)]
pub(super) struct Pane {
    pub(super) index: SlotIndex,
    pages: Vec<Page>,
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

    /// What the pane occupies: its used slots (a page's untouched rest is
    /// not resident), the index's table and the identifiers on the heap.
    pub(super) fn bytes(&self) -> usize {
        self.index.len() * std::mem::size_of::<(i32, Accumulator)>()
            + self.index.bytes()
            + self.heap
    }

    /// Adds `readings[i]` for every `(_, i)` in `which`, in that order. In
    /// a pane larger than the caches, the index bucket of a reading
    /// [`AHEAD`] places on, and the accumulator of one half as far, are
    /// loaded while the current one is added: with more devices than the
    /// CPU caches hold, that is the difference between waiting for memory
    /// twice per reading and hardly at all.
    pub(super) fn add_all(
        &mut self,
        readings: &[Reading],
        which: &[(i64, u32)],
        pool: &mut PagePool,
    ) {
        if self.len() < PREFETCH_FROM {
            for &(_, i) in which {
                if let Some(r) = readings.get(i as usize) {
                    self.add(r, pool);
                }
            }
            return;
        }
        let reading = |k: usize| which.get(k).and_then(|&(_, i)| readings.get(i as usize));
        for k in 0..which.len() {
            if let Some(r) = reading(k + AHEAD) {
                self.index.prefetch(r.sensor_id);
            }
            if let Some(slot) = reading(k + AHEAD / 2).and_then(|r| self.index.get(r.sensor_id)) {
                self.prefetch(slot);
            }
            if let Some(r) = reading(k) {
                self.add(r, pool);
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

    #[inline(always)]
    pub(super) fn add(&mut self, r: &Reading, pool: &mut PagePool) {
        match self.index.get(r.sensor_id) {
            Some(slot) => {
                if let Some(acc) = self.get_mut(slot) {
                    acc.add(r);
                }
            }
            None => self.add_new(r, pool),
        }
    }

    /// Merges `acc`, the accumulator of readings of `sensor` in this
    /// window that another worker aggregated.
    pub(super) fn merge(&mut self, sensor: i32, acc: Accumulator, pool: &mut PagePool) {
        match self.index.get(sensor) {
            Some(slot) => {
                let mut heap = self.heap;
                if let Some(mine) = self.get_mut(slot) {
                    // The earliest reading may change, and its identifiers
                    // with it.
                    heap = heap.saturating_sub(mine.heap_bytes());
                    mine.merge(&acc);
                    heap += mine.heap_bytes();
                }
                self.heap = heap;
            }
            None => self.push(sensor, acc, pool),
        }
    }

    /// A device's first reading in this window.
    #[inline(never)]
    fn add_new(&mut self, r: &Reading, pool: &mut PagePool) {
        self.push(r.sensor_id, Accumulator::new(r), pool);
    }

    /// Adds the accumulator of a device new to this window.
    fn push(&mut self, sensor: i32, acc: Accumulator, pool: &mut PagePool) {
        self.heap += acc.heap_bytes();
        let slot = self.index.len();
        if self.pages.last().is_none_or(|p| p.len() == PAGE) {
            self.pages.push(pool.take());
        }
        if let Some(page) = self.pages.last_mut() {
            page.push((sensor, acc));
        }
        // Slots stay below 2^32: a window holds at most 2^32 sensor ids.
        self.index.insert(sensor, slot as u32);
    }

    /// Hands the pane's pages back to `pool`, emptied.
    pub(super) fn release(self, pool: &mut PagePool) {
        for page in self.pages {
            pool.give(page);
        }
    }

    #[inline(always)]
    fn get_mut(&mut self, slot: u32) -> Option<&mut Accumulator> {
        let slot = slot as usize;
        self.pages
            .get_mut(slot / PAGE)
            .and_then(|p| p.get_mut(slot % PAGE))
            .map(|(_, acc)| acc)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages must stay above glibc's mmap threshold as `weir` sets it
    /// (`cli/src/main.rs`), or freed panes would linger in malloc arenas.
    #[test]
    fn pages_are_mapped_not_taken_from_the_heap() {
        assert!(PAGE * std::mem::size_of::<(i32, Accumulator)>() > 16 << 20);
    }
}
