//! Resuming without writing anything twice.
//!
//! Until checkpoints snapshot window state, a new generation (or a new run
//! of a Pulsar job) rebuilds open windows by reading input again. What it
//! must not do is write again what was written, or write a window that was
//! written as a second, partial row. The window tasks report what their sink
//! has written as a [`Written`]: every window ending at or before
//! `watermark`, and everything made of each input's records up to
//! `processed[input]`. The coordinator keeps the latest report per key group
//! and hands them to the next generation as a [`ResumeTable`], with which:
//!
//! - a source skips a record whose key group `k` has it processed
//!   (`position <= processed[k][input]`) and whose window ends at or before
//!   `watermark[k]`: it is in a written window, or was written as late;
//! - a window task treats a window ending at or before `watermark[k]` as
//!   closed for key group `k`: a record for it that was not skipped came
//!   after the key group's output was written, and was late then too.
//!
//! Records that are neither rebuild the open windows exactly. A partition
//! resumes (seeks) after its *durable* point: the latest position up to which
//! every record is skipped by the first rule in every key group.

use std::sync::Arc;

use weir_common::keygroup::KeyGroupRange;
use weir_common::position::Position;

/// What one window task's sink has written (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub watermark: i64,
    /// By input index.
    pub processed: Vec<Option<Position>>,
}

/// What was written for one key group.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyGroupWritten {
    watermark: i64,
    processed: Vec<Option<Position>>,
}

/// What earlier generations wrote, by key group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeTable {
    by_key_group: Vec<KeyGroupWritten>,
    /// Per input: the greatest position any key group has processed;
    /// records after it are never skipped.
    until: Vec<Option<Position>>,
}

impl ResumeTable {
    /// Nothing written yet.
    pub fn empty(max_parallelism: u16, inputs: usize) -> Self {
        ResumeTable {
            by_key_group: vec![
                KeyGroupWritten {
                    watermark: i64::MIN,
                    processed: vec![None; inputs],
                };
                usize::from(max_parallelism)
            ],
            until: vec![None; inputs],
        }
    }

    /// Records what was written for a range of key groups; `processed` by
    /// input index. Ranges beyond `max_parallelism` and inputs beyond
    /// `inputs` are errors.
    pub fn set(
        &mut self,
        range: KeyGroupRange,
        watermark: i64,
        processed: &[(u32, Position)],
    ) -> Result<(), String> {
        if usize::from(range.end) > self.by_key_group.len() {
            return Err(format!(
                "written key groups {range} beyond max parallelism {}",
                self.by_key_group.len()
            ));
        }
        let inputs = self.until.len();
        let mut row = vec![None; inputs];
        for &(input, position) in processed {
            let slot = row
                .get_mut(input as usize)
                .ok_or_else(|| format!("written input {input} of {inputs}"))?;
            *slot = Some(position);
            let until = &mut self.until[input as usize];
            *until = (*until).max(Some(position));
        }
        for kg in range.start..range.end {
            self.by_key_group[usize::from(kg)] = KeyGroupWritten {
                watermark,
                processed: row.clone(),
            };
        }
        Ok(())
    }

    /// Whether nothing is known to be written.
    pub fn is_empty(&self) -> bool {
        self.until.iter().all(Option::is_none)
            && self.by_key_group.iter().all(|k| k.watermark == i64::MIN)
    }

    /// The last position of `input` that some key group has processed.
    pub fn until(&self, input: u32) -> Option<Position> {
        self.until.get(input as usize).copied().flatten()
    }

    /// Whether the output of a record (of key group `kg`, from `input` at
    /// `position`, for the window ending at `window_end`) is written.
    #[inline]
    pub fn written(&self, kg: u16, input: u32, position: Position, window_end: i64) -> bool {
        self.by_key_group.get(usize::from(kg)).is_some_and(|k| {
            window_end <= k.watermark
                && k.processed
                    .get(input as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|p| position <= p)
        })
    }

    /// Windows ending at or before this are closed for key group `kg`.
    pub fn closed(&self, kg: u16) -> i64 {
        self.by_key_group
            .get(usize::from(kg))
            .map_or(i64::MIN, |k| k.watermark)
    }

    /// The greatest [`closed`](Self::closed) over a range of key groups.
    pub fn max_closed(&self, range: KeyGroupRange) -> i64 {
        (range.start..range.end)
            .map(|kg| self.closed(kg))
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// A source's view of the table: skips the records whose output is written.
#[derive(Clone, Debug)]
pub struct ResumeFilter {
    table: Arc<ResumeTable>,
    input: u32,
    until: Position,
}

impl ResumeFilter {
    /// `None` when nothing of `input` can be skipped.
    pub fn new(table: Arc<ResumeTable>, input: u32) -> Option<Self> {
        let until = table.until(input)?;
        Some(ResumeFilter {
            table,
            input,
            until,
        })
    }

    /// Records after this position are never skipped.
    pub fn until(&self) -> Position {
        self.until
    }

    #[inline]
    pub fn written(&self, kg: u16, position: Position, window_end: i64) -> bool {
        self.table.written(kg, self.input, position, window_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64) -> Position {
        Position::Offset(n)
    }

    #[test]
    fn a_record_is_written_when_processed_and_its_window_closed() {
        let mut t = ResumeTable::empty(4, 2);
        assert!(t.is_empty());
        t.set(KeyGroupRange { start: 0, end: 2 }, 120, &[(0, at(10))])
            .expect("set");
        t.set(
            KeyGroupRange { start: 2, end: 4 },
            60,
            &[(0, at(20)), (1, at(5))],
        )
        .expect("set");
        assert!(!t.is_empty());
        assert!(t.written(0, 0, at(10), 120));
        assert!(!t.written(0, 0, at(11), 120), "not processed");
        assert!(!t.written(0, 0, at(3), 180), "window still open");
        assert!(!t.written(1, 1, at(0), 60), "input 1 not processed there");
        assert!(t.written(3, 1, at(5), 60));
        assert_eq!(t.until(0), Some(at(20)));
        assert_eq!(t.until(1), Some(at(5)));
        assert_eq!(t.closed(1), 120);
        assert_eq!(t.max_closed(KeyGroupRange { start: 1, end: 4 }), 120);
        let f = ResumeFilter::new(Arc::new(t.clone()), 1).expect("something to skip");
        assert_eq!(f.until(), at(5));
        assert!(f.written(2, at(4), 0));
        assert!(ResumeFilter::new(Arc::new(ResumeTable::empty(4, 2)), 0).is_none());
    }

    #[test]
    fn out_of_range_reports_are_errors() {
        let mut t = ResumeTable::empty(4, 1);
        assert!(t.set(KeyGroupRange { start: 0, end: 5 }, 0, &[]).is_err());
        assert!(t
            .set(KeyGroupRange { start: 0, end: 1 }, 0, &[(1, at(0))])
            .is_err());
    }
}
