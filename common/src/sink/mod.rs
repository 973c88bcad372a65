//! Writing results: ClickHouse, JSON-lines files, and the DDL for both.
//!
//! Writers here do one attempt at a time and report whether a retry can
//! help ([`SinkError::is_retryable`]); the sink actor in the worker owns the
//! retry loop, backoff, logging and backpressure. A writer never leaves a
//! half-written batch behind that a retry would duplicate: the JSONL writer
//! rolls a failed append back, and the ClickHouse writer can find out which
//! rows of a batch already reached the server before retrying.

pub mod append;
pub mod clickhouse;
pub mod ddl;
pub mod json;
pub mod jsonl;
pub mod parts;
pub mod stage;

use std::path::PathBuf;

use crate::dead_letter::DeadLetter;
use crate::rows::{LateReadingRow, SensorAggregatesRow, SensorsLocalRow, Table};

/// Rows a window task hands to its sink, per table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputBatch {
    pub sensors_local: Vec<SensorsLocalRow>,
    pub aggregates: Vec<SensorAggregatesRow>,
    pub late: Vec<LateReadingRow>,
    /// Undecodable input of the task's sources (see [`crate::dead_letter`]).
    pub dead_letters: Vec<DeadLetter>,
}

impl OutputBatch {
    pub fn len(&self) -> usize {
        self.sensors_local.len() + self.aggregates.len() + self.late.len() + self.dead_letters.len()
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
}

/// Rows of one table, borrowed from wherever they wait: what one insert or
/// one append writes. Writers take slices so that a sink can write the front
/// of its pending rows without moving the rest.
#[derive(Clone, Copy, Debug)]
pub enum TableRows<'a> {
    SensorsLocal(&'a [SensorsLocalRow]),
    SensorAggregates(&'a [SensorAggregatesRow]),
    LateReadings(&'a [LateReadingRow]),
}

impl TableRows<'_> {
    pub fn table(&self) -> Table {
        match self {
            TableRows::SensorsLocal(_) => Table::SensorsLocal,
            TableRows::SensorAggregates(_) => Table::SensorAggregates,
            TableRows::LateReadings(_) => Table::LateReadings,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TableRows::SensorsLocal(r) => r.len(),
            TableRows::SensorAggregates(r) => r.len(),
            TableRows::LateReadings(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest window among the rows, as epoch seconds (the key column
    /// [`clickhouse::ClickHouseWriter::newest_window`] reads); `None` for
    /// late readings, which are not ordered by window.
    pub fn newest_window(&self) -> Option<u32> {
        match self {
            TableRows::SensorsLocal(r) => r.iter().map(|r| r.time).max(),
            TableRows::SensorAggregates(r) => r.iter().map(|r| r.window_start).max(),
            TableRows::LateReadings(_) => None,
        }
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
    /// Staged output could not be kept or fetched (the checkpoint store),
    /// or output was left that no checkpoint covers.
    #[error("staged output: {message}")]
    Staged { message: String, retryable: bool },
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
            SinkError::Staged { retryable, .. } => *retryable,
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
            SinkError::Staged { .. } => "staged",
            SinkError::Io { .. } => "io",
        }
    }
}
