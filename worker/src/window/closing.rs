//! A window the watermark has passed, emitted in bounded pieces.

use std::borrow::Cow;
use std::collections::VecDeque;

use weir_common::aggregate::Accumulator;
use weir_common::keygroup::KeyGroupRange;

use super::pane::{emission_key, sensor_of, PagePool, Pane};
use super::PREFETCH_AHEAD;
use crate::state::{StateError, StateStore};

/// A window the watermark has passed, on its way out.
pub(super) struct Closing {
    pub(super) end: i64,
    /// Its in-memory accumulators...
    pane: Pane,
    /// ...by emission key and slot, in emission order.
    order: Vec<(u64, u32)>,
    next: usize,
    /// Its part in RocksDB, if it was ever spilled.
    stored: Option<Stored>,
}

/// Reading a spilled window back, a chunk at a time.
#[derive(Default)]
struct Stored {
    /// Read and not yet emitted, in key order.
    buffer: VecDeque<(u64, Accumulator)>,
    read: ReadState,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum ReadState {
    #[default]
    Start,
    After(u16, i32),
    Done,
}

impl Closing {
    /// Starts closing window `end` with what `pane` holds in memory.
    pub(super) fn new(end: i64, mut pane: Pane, max_parallelism: u16) -> Self {
        let order = pane.sorted(max_parallelism);
        // Emission goes by slot: the index is no longer needed.
        pane.index = Default::default();
        let stored = pane.spilled.then(Stored::default);
        Closing {
            end,
            pane,
            order,
            next: 0,
            stored,
        }
    }

    /// Hands the pages of its accumulators back to `pool`.
    pub(super) fn release(self, pool: &mut PagePool) {
        self.pane.release(pool);
    }

    /// Accumulators in memory not emitted yet.
    pub(super) fn remaining_in_memory(&self) -> usize {
        self.order.len() - self.next
    }

    /// Hands the next (sensor, accumulator) results, in key order, to `f`,
    /// at most `max`; reads from `state` (at most `max` devices at a time)
    /// if the window was spilled. Returns how many it handed out: fewer than
    /// `max` when the window is done.
    pub(super) fn emit(
        &mut self,
        state: &StateStore,
        range: KeyGroupRange,
        max: usize,
        mut f: impl FnMut(i32, &Accumulator),
    ) -> Result<usize, StateError> {
        let mut emitted = 0;
        while emitted < max {
            // Key order is random order in memory: load ahead.
            if let Some(&(_, ahead)) = self.order.get(self.next + PREFETCH_AHEAD) {
                self.pane.prefetch(ahead);
            }
            if let Some(st) = &mut self.stored {
                if st.buffer.is_empty() && st.read != ReadState::Done {
                    let after = match st.read {
                        ReadState::After(kg, sensor) => Some((kg, sensor)),
                        ReadState::Start | ReadState::Done => None,
                    };
                    let buffer = &mut st.buffer;
                    let next =
                        state.read_window(range, self.end, after, max, |kg, sensor, acc| {
                            buffer.push_back((emission_key(kg, sensor), acc));
                        })?;
                    st.read = match next {
                        Some((kg, sensor)) => ReadState::After(kg, sensor),
                        None => ReadState::Done,
                    };
                }
            }
            let in_memory = self.order.get(self.next).map(|&(key, _)| key);
            let stored = self
                .stored
                .as_ref()
                .and_then(|st| st.buffer.front().map(|(k, _)| *k));
            let (sensor, acc) = match (in_memory, stored) {
                (None, None) => break,
                (Some(m), s) if s.is_none_or(|s| m < s) => {
                    let slot = self.order[self.next].1;
                    self.next += 1;
                    match self.pane.get(slot) {
                        Some(acc) => (sensor_of(m), Cow::Borrowed(acc)),
                        None => continue, // unreachable: `order` lists the pane's slots
                    }
                }
                (m, _) => {
                    let Some((s, mut acc)) =
                        self.stored.as_mut().and_then(|st| st.buffer.pop_front())
                    else {
                        continue;
                    };
                    if m == Some(s) {
                        let slot = self.order[self.next].1;
                        self.next += 1;
                        if let Some(recent) = self.pane.get(slot) {
                            acc.merge(recent);
                        }
                    }
                    (sensor_of(s), Cow::Owned(acc))
                }
            };
            f(sensor, &acc);
            emitted += 1;
        }
        Ok(emitted)
    }
}
