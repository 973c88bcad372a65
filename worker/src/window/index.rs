//! The index of a pane: sensor id → slot of its accumulator.
//!
//! Open addressing with linear probing over `(sensor, slot + 1)` pairs, at
//! most half full, in a table whose size is a power of two. Written here
//! rather than taken from a hash-map crate for one reason: the window
//! operator must be able to prefetch the bucket of a sensor it will look up
//! a few readings later ([`SlotIndex::prefetch`]). With half a million
//! devices the index and the accumulators are far bigger than the CPU's
//! caches, and waiting for memory twice per reading was a quarter of the
//! job's time.

use super::prefetch::prefetch;

/// Sensor ids → slots.
#[derive(Default)]
pub(crate) struct SlotIndex {
    /// `(sensor, slot + 1)`; a zero in the second field is an empty bucket.
    table: Vec<(i32, u32)>,
    len: usize,
}

impl SlotIndex {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub(super) fn bytes(&self) -> usize {
        self.table.capacity() * std::mem::size_of::<(i32, u32)>()
    }

    /// Fibonacci hashing: consecutive sensor ids (the usual fleet) spread
    /// evenly over the table.
    #[inline(always)]
    fn bucket(&self, sensor: i32) -> usize {
        let h = u64::from(sensor as u32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The table's length is a power of two (or zero: then any index is
        // out of range and lookups find nothing).
        (h >> 32) as usize & self.table.len().wrapping_sub(1)
    }

    #[inline(always)]
    pub(crate) fn get(&self, sensor: i32) -> Option<u32> {
        let mask = self.table.len().wrapping_sub(1);
        let mut i = self.bucket(sensor);
        // An empty table has no bucket: `get` finds nothing.
        while let Some(&(key, slot)) = self.table.get(i) {
            if slot == 0 {
                return None;
            }
            if key == sensor {
                return Some(slot - 1);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Starts loading the bucket where `sensor`'s lookup begins.
    #[inline]
    pub(super) fn prefetch(&self, sensor: i32) {
        if let Some(bucket) = self.table.get(self.bucket(sensor)) {
            prefetch(bucket);
        }
    }

    /// Adds `sensor`, which is not in the index, at `slot` (below
    /// `u32::MAX`: a pane holds fewer accumulators than that).
    pub(crate) fn insert(&mut self, sensor: i32, slot: u32) {
        if (self.len + 1) * 2 > self.table.len() {
            self.grow();
        }
        let mask = self.table.len() - 1;
        let mut i = self.bucket(sensor);
        while self.table[i].1 != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = (sensor, slot.saturating_add(1));
        self.len += 1;
    }

    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.table, vec![(0, 0); size]);
        let mask = size - 1;
        for (sensor, slot) in old.into_iter().filter(|&(_, slot)| slot != 0) {
            let mut i = self.bucket(sensor);
            while self.table[i].1 != 0 {
                i = (i + 1) & mask;
            }
            self.table[i] = (sensor, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut index = SlotIndex::default();
        assert_eq!(index.get(5), None);
        index.prefetch(5);
        let sensors: Vec<i32> = (0..5_000)
            .map(|i| i * 7 - 10_000)
            .chain([i32::MIN, i32::MAX, 0x4000_0000])
            .collect();
        for (slot, &s) in sensors.iter().enumerate() {
            index.insert(s, slot as u32);
            assert_eq!(index.get(s), Some(slot as u32));
        }
        assert_eq!(index.len(), sensors.len());
        for (slot, &s) in sensors.iter().enumerate() {
            assert_eq!(index.get(s), Some(slot as u32), "{s}");
        }
        // The sensors above are all 3 modulo 7.
        for absent in [1, 2, 4, -10_001, 34_999, 24_994] {
            assert_eq!(index.get(absent), None, "{absent}");
        }
        assert!(index.bytes() >= 2 * sensors.len() * 8);
    }
}
