//! Counters of a running deployment, shared by its tasks.
//!
//! Tasks add to these once per batch, not per record; readers (heartbeats,
//! the progress display, `/metrics`) only load. Relaxed atomics are enough:
//! every value is an independent counter or gauge.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use weir_common::dead_letter::DeadLetter;

/// Progress of one input partition (moves only on the worker reading it).
#[derive(Debug)]
pub struct PartitionMetrics {
    pub records: AtomicU64,
    pub watermark: AtomicI64,
    pub finished: AtomicBool,
    /// Read by this worker.
    pub local: AtomicBool,
}

impl Default for PartitionMetrics {
    fn default() -> Self {
        PartitionMetrics {
            records: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            finished: AtomicBool::new(false),
            local: AtomicBool::new(false),
        }
    }
}

/// Where a deployment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the sink (ClickHouse) to be reachable and ready.
    WaitingForSink = 0,
    Running = 1,
    /// Sources stopped; what was emitted is being written.
    Draining = 2,
    Done = 3,
}

#[derive(Debug)]
pub struct JobMetrics {
    /// Readings decoded and sent on by this worker's sources.
    pub records_in: AtomicU64,
    /// Records lost to dead letters (when their count is known).
    pub bad_records: AtomicU64,
    /// Dead-letter entries written.
    pub dead_letters: AtomicU64,
    /// Readings that arrived after their window closed.
    pub late_records: AtomicU64,
    /// (device, window) results produced.
    pub windows_closed: AtomicU64,
    /// Windows open in the window task.
    pub open_windows: AtomicU64,
    /// Rows the sink has written (all tables).
    pub rows_written: AtomicU64,
    /// Failed sink writes that were retried.
    pub sink_retries: AtomicU64,
    /// Lookups for rows already written (ClickHouse): the newest window of
    /// a table once per deployment, then the keys of inserts that need it.
    pub sink_lookups: AtomicU64,
    /// Times the window state was spilled to RocksDB for lack of memory.
    pub state_spills: AtomicU64,
    /// Accumulators currently held in memory.
    pub open_accumulators: AtomicU64,
    /// The window task's watermark (`i64::MIN` before the first).
    pub watermark: AtomicI64,
    /// Records sent to / received from other workers.
    pub shuffle_sent: AtomicU64,
    pub shuffle_received: AtomicU64,
    /// Accumulators sent to other workers in their place (pre-aggregated
    /// records: see `crate::combine`).
    pub shuffle_accumulators_sent: AtomicU64,
    /// Records sent to other workers, by key group.
    pub remote_by_key_group: Vec<AtomicU64>,
    /// Every input partition of the job, by input index.
    pub partitions: Vec<PartitionMetrics>,
    /// The checkpoint this deployment restored its state from (0: none).
    pub restored_checkpoint: AtomicU64,
    /// Key groups (and bytes) restored from it.
    pub restored_key_groups: AtomicU64,
    pub restored_bytes: AtomicU64,
    /// Microseconds sources spent waiting on full channels (summed over
    /// sources): how much the stages after them hold them back.
    pub source_wait_micros: AtomicU64,
    /// The latest dead letters and counts by kind. Behind a lock because
    /// dead letters are rare; the per-record path never touches it.
    dead_letter_log: Mutex<DeadLetterLog>,
    phase: AtomicU8,
}

/// How many dead letters a worker remembers for the dashboard and API.
pub const RECENT_DEAD_LETTERS: usize = 10;

/// A dead letter without its bytes (those are in the dead-letter output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterNote {
    pub at_ms: i64,
    pub source: String,
    pub position: String,
    pub records: u64,
    pub kind: String,
    pub error: String,
    pub payload_len: u64,
}

#[derive(Debug, Default)]
struct DeadLetterLog {
    recent: VecDeque<DeadLetterNote>,
    by_kind: BTreeMap<String, u64>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics::new(0, 0)
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub bad_records: u64,
    pub dead_letters: u64,
    pub late_records: u64,
    pub windows_closed: u64,
    pub open_windows: u64,
    pub rows_written: u64,
    pub sink_retries: u64,
    pub sink_lookups: u64,
    pub state_spills: u64,
    pub open_accumulators: u64,
    pub watermark: i64,
    pub shuffle_sent: u64,
    pub shuffle_received: u64,
    pub shuffle_accumulators_sent: u64,
}

impl JobMetrics {
    pub fn new(partitions: usize, max_parallelism: u16) -> Self {
        JobMetrics {
            records_in: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            windows_closed: AtomicU64::new(0),
            open_windows: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            sink_retries: AtomicU64::new(0),
            sink_lookups: AtomicU64::new(0),
            state_spills: AtomicU64::new(0),
            open_accumulators: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            shuffle_sent: AtomicU64::new(0),
            shuffle_received: AtomicU64::new(0),
            shuffle_accumulators_sent: AtomicU64::new(0),
            remote_by_key_group: (0..max_parallelism).map(|_| AtomicU64::new(0)).collect(),
            partitions: (0..partitions)
                .map(|_| PartitionMetrics::default())
                .collect(),
            restored_checkpoint: AtomicU64::new(0),
            restored_key_groups: AtomicU64::new(0),
            restored_bytes: AtomicU64::new(0),
            source_wait_micros: AtomicU64::new(0),
            dead_letter_log: Mutex::new(DeadLetterLog::default()),
            phase: AtomicU8::new(Phase::WaitingForSink as u8),
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Relaxed),
            bad_records: self.bad_records.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            late_records: self.late_records.load(Relaxed),
            windows_closed: self.windows_closed.load(Relaxed),
            open_windows: self.open_windows.load(Relaxed),
            rows_written: self.rows_written.load(Relaxed),
            sink_retries: self.sink_retries.load(Relaxed),
            sink_lookups: self.sink_lookups.load(Relaxed),
            state_spills: self.state_spills.load(Relaxed),
            open_accumulators: self.open_accumulators.load(Relaxed),
            watermark: self.watermark.load(Relaxed),
            shuffle_sent: self.shuffle_sent.load(Relaxed),
            shuffle_received: self.shuffle_received.load(Relaxed),
            shuffle_accumulators_sent: self.shuffle_accumulators_sent.load(Relaxed),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            0 => Phase::WaitingForSink,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Done,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    /// Moves from `Running` to `Draining` (and from nothing else).
    pub fn start_draining(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Running as u8,
            Phase::Draining as u8,
            Relaxed,
            Relaxed,
        );
    }

    /// Remembers dead letters a source produced (newest last).
    pub fn note_dead_letters<'a>(&self, letters: impl IntoIterator<Item = &'a DeadLetter>) {
        // A panic elsewhere while holding the lock leaves a consistent log.
        let mut log = self
            .dead_letter_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for l in letters {
            *log.by_kind.entry(l.kind.clone()).or_insert(0) += 1;
            if log.recent.len() == RECENT_DEAD_LETTERS {
                log.recent.pop_front();
            }
            log.recent.push_back(DeadLetterNote {
                at_ms: l.at_ms,
                source: l.source.clone(),
                position: l.position.clone(),
                records: l.records,
                kind: l.kind.clone(),
                error: l.error.clone(),
                payload_len: l.payload_len as u64,
            });
        }
    }

    /// The latest dead letters, oldest first.
    pub fn recent_dead_letters(&self) -> Vec<DeadLetterNote> {
        let log = self
            .dead_letter_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.recent.iter().cloned().collect()
    }

    /// Dead letters seen, by failure kind.
    pub fn dead_letters_by_kind(&self) -> Vec<(String, u64)> {
        let log = self
            .dead_letter_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.by_kind.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// Sources reading here.
    pub fn local_sources(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.local.load(Relaxed))
            .count()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: i64, kind: &str) -> DeadLetter {
        DeadLetter::new(
            n,
            "p-0",
            format!("offset {n}"),
            1,
            kind,
            "bad".into(),
            b"xyz",
            2,
        )
    }

    #[test]
    fn the_dead_letter_log_keeps_the_latest_and_counts_every_kind() {
        let m = JobMetrics::new(1, 1);
        let letters: Vec<_> = (0..25)
            .map(|n| {
                letter(
                    n,
                    if n % 5 == 0 {
                        "truncated"
                    } else {
                        "bad-union-index"
                    },
                )
            })
            .collect();
        m.note_dead_letters(&letters[..20]);
        m.note_dead_letters(&letters[20..]);
        let recent = m.recent_dead_letters();
        assert_eq!(recent.len(), RECENT_DEAD_LETTERS);
        assert_eq!(recent.first().map(|l| l.at_ms), Some(15));
        assert_eq!(recent.last().map(|l| l.at_ms), Some(24));
        assert_eq!(recent[0].payload_len, 3);
        assert_eq!(recent[0].position, "offset 15");
        assert_eq!(
            m.dead_letters_by_kind(),
            vec![
                ("bad-union-index".to_owned(), 20),
                ("truncated".to_owned(), 5)
            ]
        );
    }
}
