//! Writing results: ClickHouse, JSON-lines files, and the DDL for both.
//!
//! Writers here do one attempt at a time and report whether a retry can
//! help ([`SinkError::is_retryable`]); the sink actor in the worker owns the
//! retry loop, backoff, logging and backpressure. A writer never leaves a
//! half-written batch behind that a retry would duplicate: the JSONL writer
//! rolls a failed append back, and the ClickHouse writer can find out which
//! rows of a batch already reached the server before retrying.

pub mod clickhouse;
pub mod ddl;
pub mod jsonl;

use std::path::PathBuf;

use crate::rows::{LateReadingRow, SensorAggregatesRow, SensorsLocalRow, Table};

/// Rows waiting to be written, per table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputBatch {
    pub sensors_local: Vec<SensorsLocalRow>,
    pub aggregates: Vec<SensorAggregatesRow>,
    pub late: Vec<LateReadingRow>,
}

impl OutputBatch {
    pub fn len(&self) -> usize {
        self.sensors_local.len() + self.aggregates.len() + self.late.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rows_of(&self, table: Table) -> usize {
        match table {
            Table::SensorsLocal => self.sensors_local.len(),
            Table::SensorAggregates => self.aggregates.len(),
            Table::LateReadings => self.late.len(),
        }
    }

    /// Splits off up to `n` rows (tables in write order) into a new batch.
    pub fn take_front(&mut self, n: usize) -> OutputBatch {
        fn take<T>(v: &mut Vec<T>, n: &mut usize) -> Vec<T> {
            let k = (*n).min(v.len());
            *n -= k;
            let rest = v.split_off(k);
            std::mem::replace(v, rest)
        }
        let mut n = n;
        OutputBatch {
            sensors_local: take(&mut self.sensors_local, &mut n),
            aggregates: take(&mut self.aggregates, &mut n),
            late: take(&mut self.late, &mut n),
        }
    }

    /// Appends all rows of `other`.
    pub fn append(&mut self, mut other: OutputBatch) {
        self.sensors_local.append(&mut other.sensors_local);
        self.aggregates.append(&mut other.aggregates);
        self.late.append(&mut other.late);
    }

    pub fn clear(&mut self) {
        self.sensors_local.clear();
        self.aggregates.clear();
        self.late.clear();
    }
}

/// Why a write failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("ClickHouse at {url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("ClickHouse rejected {what}: {message}")]
    Rejected {
        what: String,
        code: Option<u32>,
        message: String,
        retryable: bool,
    },
    #[error("ClickHouse table {table} does not match what Weir writes: {problem}")]
    Schema { table: String, problem: String },
    #[error("ClickHouse answered something Weir cannot read: {0}")]
    Protocol(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// Whether the same write may succeed later (server down, disk full,
    /// overload) as opposed to never (bad credentials, wrong schema).
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Unreachable { .. } => true,
            SinkError::Rejected { retryable, .. } => *retryable,
            SinkError::Schema { .. } | SinkError::Protocol(_) => false,
            SinkError::Io { source, .. } => jsonl::io_error_is_transient(source),
        }
    }

    /// A short label for metrics and for logging each kind once.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Unreachable { .. } => "unreachable",
            SinkError::Rejected { .. } => "rejected",
            SinkError::Schema { .. } => "schema",
            SinkError::Protocol(_) => "protocol",
            SinkError::Io { .. } => "io",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Accumulator;
    use crate::reading::Reading;

    #[test]
    fn take_front_splits_in_table_order() {
        let acc = Accumulator::new(&Reading::default());
        let mut b = OutputBatch {
            sensors_local: (0..3).map(|i| acc.sensors_local_row(i, 60_000)).collect(),
            aggregates: (0..3).map(|i| acc.aggregates_row(i, 0, 60_000)).collect(),
            late: Vec::new(),
        };
        let front = b.take_front(4);
        assert_eq!((front.sensors_local.len(), front.aggregates.len()), (3, 1));
        assert_eq!(front.aggregates[0].device_id, "sensor_0");
        assert_eq!((b.sensors_local.len(), b.aggregates.len()), (0, 2));
        assert_eq!(b.aggregates[0].device_id, "sensor_1");
        let rest = b.take_front(10);
        assert_eq!(rest.len(), 2);
        assert!(b.is_empty());
    }
}
