//! The job record as raft's state machine.
//!
//! The record is small (a spec, an assignment, a few dozen checkpoint
//! pointers), so it lives in memory and a snapshot is the whole record as
//! JSON. The latest snapshot is kept in the store's database: a restarted
//! coordinator starts from it, and raft re-applies the committed entries
//! after it (the log store keeps the committed log id).
// openraft's `StorageError` is what its storage traits return, and it is
// large; the helpers here return it too rather than box it only to unbox it.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::command::{JobRecord, Response};
use crate::{synced, NodeId, TypeConfig, WriteError, META};

const SNAPSHOT: &[u8] = b"snapshot";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// A snapshot as kept in the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    /// The record, JSON.
    data: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    record: JobRecord,
    /// Snapshots built by this process (for unique snapshot ids).
    built: u64,
    current: Option<StoredSnapshot>,
}

/// The state machine; its snapshot builders share its state.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    inner: Arc<Mutex<Inner>>,
}

impl StateMachine {
    /// The state machine as of the latest snapshot in `db` (empty without
    /// one).
    pub(crate) fn load(db: Arc<DB>) -> std::result::Result<Self, String> {
        let family = db
            .cf_handle(META)
            .ok_or_else(|| format!("no column family {META}"))?;
        let stored = db
            .get_cf(family, SNAPSHOT)
            .map_err(|e| e.to_string())?
            .map(|b| serde_json::from_slice::<StoredSnapshot>(&b))
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut inner = Inner::default();
        if let Some(s) = stored {
            inner.record = serde_json::from_slice(&s.data).map_err(|e| e.to_string())?;
            inner.last_applied = s.meta.last_log_id;
            inner.membership = s.meta.last_membership.clone();
            inner.current = Some(s);
        }
        Ok(StateMachine {
            db,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The job record as applied so far.
    pub fn record(&self) -> JobRecord {
        self.lock().record.clone()
    }

    /// The state is never left half-changed while the lock is held (no
    /// code between lock and unlock can panic halfway), so a poisoned lock
    /// still guards a consistent state.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `snapshot` as the current one, in memory and on disk.
    async fn keep(&self, snapshot: StoredSnapshot) -> Result<()> {
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| StorageIOError::write_snapshot(Some(snapshot.meta.signature()), &e))?;
        let signature = snapshot.meta.signature();
        self.lock().current = Some(snapshot);
        let db = self.db.clone();
        let written = tokio::task::spawn_blocking(move || {
            let family = db
                .cf_handle(META)
                .ok_or_else(|| WriteError(format!("no column family {META}")))?;
            db.put_cf_opt(family, SNAPSHOT, bytes, &synced())
                .map_err(WriteError::from)
        })
        .await
        .unwrap_or_else(|e| Err(WriteError(format!("the write could not run: {e}"))));
        written.map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }
}

fn snapshot_of(stored: StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: stored.meta,
        snapshot: Box::new(Cursor::new(stored.data)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let stored = {
            let mut inner = self.lock();
            let data = serde_json::to_vec(&inner.record)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            inner.built += 1;
            let snapshot_id = match inner.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id, id.index, inner.built),
                None => format!("none-{}", inner.built),
            };
            StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: inner.last_applied,
                    last_membership: inner.membership.clone(),
                    snapshot_id,
                },
                data,
            }
        };
        self.keep(stored.clone()).await?;
        Ok(snapshot_of(stored))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut inner = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response {
                    applied: true,
                    spec_version: inner.record.spec_version,
                },
                EntryPayload::Normal(command) => inner.record.apply(command),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response {
                        applied: true,
                        spec_version: inner.record.spec_version,
                    }
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let record: JobRecord = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        {
            let mut inner = self.lock();
            inner.record = record;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
        }
        self.keep(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        Ok(self.lock().current.clone().map(snapshot_of))
    }
}
