//! The coordinators' replicated control state (coordinator high
//! availability).
//!
//! One or three coordinators form an openraft group. What a new leader
//! needs to carry on — the job spec and its version, the job's lifecycle,
//! the current generation and its assignment, the completed checkpoints
//! (pointers to their metadata in the checkpoint store) and the rescale
//! history — is a [`JobRecord`], changed only by [`Command`]s committed
//! through raft. Nothing that changes per record is in it.
//!
//! - [`log_store`]: raft's log, vote and committed index in RocksDB; a
//!   vote or a log entry is on disk (a synced write) before raft is told
//!   it is, unlike openraft 0.9's RocksDB example (openraft issue #618).
//! - [`state_machine`]: the [`JobRecord`] in memory, its snapshots kept in
//!   the same database so that a restarted coordinator starts from the
//!   latest one and raft re-applies the committed entries after it.
//! - [`command`]: what is replicated.
//! - [`network`]: raft between coordinators over gRPC (`weir.raft.Raft`).
//! - [`group`]: the static peer list and the one safe initialisation.
//!
//! The store is checked against openraft's own storage test suite
//! (`tests/storage_suite.rs`).

pub mod command;
pub mod group;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

pub use command::{CheckpointPointer, Command, JobRecord, Lifecycle, RescaleRecord, Response};
pub use log_store::LogStore;
pub use state_machine::StateMachine;

/// A coordinator's id in the raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The coordinators' raft: job commands, addressed by gRPC address.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the raft store at {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("the raft store at {path} holds a snapshot that cannot be read: {reason}")]
    Snapshot { path: String, reason: String },
}

/// Column family of the log: key = index (8 bytes, big-endian, so that
/// iteration is in log order), value = the entry (JSON).
pub(crate) const LOGS: &str = "raft_logs";
/// Column family of the vote, committed log id, last purged log id and the
/// latest snapshot.
pub(crate) const META: &str = "raft_meta";

/// Opens (or creates) the store under `dir`: the log store and the state
/// machine, which share one RocksDB database.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), OpenError> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = [LOGS, META]
        .into_iter()
        .map(|name| rocksdb::ColumnFamilyDescriptor::new(name, rocksdb::Options::default()));
    let db = rocksdb::DB::open_cf_descriptors(&options, dir, families).map_err(|source| {
        OpenError::Db {
            path: dir.display().to_string(),
            source,
        }
    })?;
    let db = Arc::new(db);
    let state_machine = StateMachine::load(db.clone()).map_err(|reason| OpenError::Snapshot {
        path: dir.display().to_string(),
        reason,
    })?;
    Ok((LogStore::new(db), state_machine))
}

/// A failed write of the store (RocksDB's error, or the write could not
/// run at all).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct WriteError(String);

impl From<rocksdb::Error> for WriteError {
    fn from(e: rocksdb::Error) -> Self {
        WriteError(e.into_string())
    }
}

/// Write options of everything raft must find again after a crash: the
/// write is in the WAL on disk before it returns.
pub(crate) fn synced() -> rocksdb::WriteOptions {
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    options
}
