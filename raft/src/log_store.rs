//! Raft's log, vote and committed log id in RocksDB.
//!
//! Every write raft relies on after a crash — a vote, appended entries, a
//! truncation, a purge — is a synced write (the WAL is on disk when it
//! returns), done on the blocking pool so that raft's task does not stall
//! on the disk. `append` tells raft the entries are durable only after
//! that write.
// openraft's `StorageError` is what its storage traits return, and it is
// large; the helpers here return it too rather than box it only to unbox it.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{synced, NodeId, TypeConfig, WriteError, LOGS, META};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log store (cheap to clone: log readers are clones).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn family(&self, name: &str) -> std::result::Result<&ColumnFamily, StorageIOError<NodeId>> {
        self.db.cf_handle(name).ok_or_else(|| {
            StorageIOError::read(&std::io::Error::other(format!(
                "the raft store has no column family {name}"
            )))
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        let family = self.family(META)?;
        let bytes = self
            .db
            .get_cf(family, key)
            .map_err(|e| StorageIOError::read(&e))?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| StorageIOError::read(&e).into()))
            .transpose()
    }

    /// Writes `batch` with a synced write, off raft's task.
    async fn write(&self, batch: WriteBatch) -> std::result::Result<(), WriteError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.write_opt(batch, &synced())).await {
            Ok(result) => result.map_err(WriteError::from),
            // The blocking pool is gone (the runtime is shutting down).
            Err(e) => Err(WriteError(format!("the write could not run: {e}"))),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        value: &T,
    ) -> std::result::Result<(), StorageIOError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        batch.put_cf(self.family(META)?, key, bytes);
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>> {
        let family = self.family(LOGS)?;
        let Some(item) = self.db.iterator_cf(family, IteratorMode::End).next() else {
            return Ok(None);
        };
        let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
        let entry: Entry<TypeConfig> =
            serde_json::from_slice(&value).map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(Some(entry.log_id))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let family = self.family(LOGS)?;
        let mut entries = Vec::new();
        let from = key(start);
        for item in self
            .db
            .iterator_cf(family, IteratorMode::From(&from, Direction::Forward))
        {
            let (k, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let Some(index) = index_of(&k) else {
                return Err(StorageIOError::read_logs(&std::io::Error::other(
                    "a log key is not 8 bytes long",
                ))
                .into());
            };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_meta(&mut batch, VOTE, vote)?;
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_meta(&mut batch, COMMITTED, &committed)?;
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let family = self.family(LOGS)?;
        for entry in entries {
            let value = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.put_cf(family, key(entry.log_id.index), value);
        }
        match self.write(batch).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.family(LOGS)?, key(log_id.index), key(u64::MAX));
        // The range's end is exclusive: an entry at u64::MAX goes too.
        batch.delete_cf(self.family(LOGS)?, key(u64::MAX));
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_meta(&mut batch, LAST_PURGED, &log_id)?;
        let family = self.family(LOGS)?;
        match log_id.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(family, key(0), key(end)),
            None => {
                batch.delete_range_cf(family, key(0), key(u64::MAX));
                batch.delete_cf(family, key(u64::MAX));
            }
        }
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
