//! Counters of a running job, shared by its tasks.
//!
//! Tasks add to these once per batch, not per record; readers (the progress
//! display, `/metrics`) only load. Relaxed atomics are enough: every value is
//! an independent counter or gauge.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
pub struct JobMetrics {
    /// Readings decoded and sent on by sources.
    pub records_in: AtomicU64,
    /// Records that could not be decoded (dead-lettered).
    pub bad_records: AtomicU64,
    /// Readings that arrived after their window closed.
    pub late_records: AtomicU64,
    /// (device, window) results produced.
    pub windows_closed: AtomicU64,
    /// Rows the sink has written (all tables).
    pub rows_written: AtomicU64,
    /// Failed sink writes that were retried.
    pub sink_retries: AtomicU64,
    /// Times the window state was spilled to RocksDB for lack of memory.
    pub state_spills: AtomicU64,
    /// Accumulators currently held in memory.
    pub open_accumulators: AtomicU64,
    /// The window task's watermark (`i64::MIN` before the first).
    pub watermark: AtomicI64,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics {
            records_in: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            windows_closed: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            sink_retries: AtomicU64::new(0),
            state_spills: AtomicU64::new(0),
            open_accumulators: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub bad_records: u64,
    pub late_records: u64,
    pub windows_closed: u64,
    pub rows_written: u64,
    pub sink_retries: u64,
    pub state_spills: u64,
    pub open_accumulators: u64,
    pub watermark: i64,
}

impl JobMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Relaxed),
            bad_records: self.bad_records.load(Relaxed),
            late_records: self.late_records.load(Relaxed),
            windows_closed: self.windows_closed.load(Relaxed),
            rows_written: self.rows_written.load(Relaxed),
            sink_retries: self.sink_retries.load(Relaxed),
            state_spills: self.state_spills.load(Relaxed),
            open_accumulators: self.open_accumulators.load(Relaxed),
            watermark: self.watermark.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}
