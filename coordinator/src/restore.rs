//! Which checkpoint a job restores from: the newest completed one that can
//! be read, falling back to older retained ones (saying so) when the newest
//! is missing or corrupt.

use prost::Message;
use weir_common::checkpoint::{metadata_key, CheckpointStore, StoreError, LATEST};
use weir_proto::checkpoint::{CheckpointMetadata, LatestPointer};

/// A completed checkpoint to restore.
#[derive(Clone, Debug, PartialEq)]
pub struct RestorePoint {
    pub id: u64,
    /// Its metadata's key in the store.
    pub key: String,
    pub metadata: CheckpointMetadata,
}

/// What the store holds for a job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreState {
    /// The highest checkpoint number in the store (numbering goes on
    /// after it).
    pub last: u64,
    /// Where to restore from (`None`: nothing completed, or the job ran to
    /// its end after its latest checkpoint).
    pub restore: Option<RestorePoint>,
    /// Earlier readable completed checkpoints, newest first: where to fall
    /// back to if `restore` turns out not to be restorable.
    pub earlier: Vec<RestorePoint>,
}

/// How many earlier checkpoints [`read_store`] keeps to fall back to.
const FALLBACKS: usize = 4;

/// Why a store's checkpoints cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint {id} in {store} cannot be restored: {cause}")]
    Unreadable {
        id: u64,
        store: String,
        cause: String,
    },
    #[error(
        "checkpoint {id} in {store} is of a job whose state differs (window, key, aggregates, \
         late policy or max parallelism changed): start from another store, or delete it to start \
         from the beginning of the inputs"
    )]
    OtherJob { id: u64, store: String },
}

/// Reads the store (see the module docs). `spec_hash` is the hash of the
/// job that will restore; `wanted`, a checkpoint asked for by number (it
/// must be readable: no fallback).
pub async fn read_store(
    store: &CheckpointStore,
    spec_hash: &str,
    wanted: Option<u64>,
) -> Result<StoreState, RestoreError> {
    let keys = store.list("").await?;
    let mut ids: Vec<u64> = keys
        .iter()
        .filter_map(|k| crate::actor::checkpoint_of_metadata_key(k))
        .collect();
    ids.sort_unstable();
    let last = ids.last().copied().unwrap_or(0);
    if let Some(id) = wanted {
        let key = metadata_key(id);
        let unreadable = |cause: String| RestoreError::Unreadable {
            id,
            store: store.describe(),
            cause,
        };
        let bytes = store
            .get(&key)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let metadata = CheckpointMetadata::decode(bytes.as_slice())
            .map_err(|e| unreadable(format!("{key}: {e}")))?;
        if metadata.spec_hash != spec_hash {
            return Err(RestoreError::OtherJob {
                id,
                store: store.describe(),
            });
        }
        return Ok(StoreState {
            last,
            restore: Some(RestorePoint { id, key, metadata }),
            earlier: Vec::new(),
        });
    }
    let pointer = match store.get(LATEST).await {
        Ok(bytes) => match LatestPointer::decode(bytes.as_slice()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(store = %store.describe(), error = %e, "the `latest` pointer is corrupt; using the newest readable checkpoint");
                None
            }
        },
        Err(StoreError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if pointer.as_ref().is_some_and(|p| p.finished) {
        tracing::info!(store = %store.describe(), "the job ran to its end after its latest checkpoint; starting from the beginning");
        return Ok(StoreState {
            last,
            ..StoreState::default()
        });
    }
    // Only completed checkpoints count: those up to the pointer (all, when
    // the pointer is lost).
    let newest = pointer.as_ref().map_or(u64::MAX, |p| p.checkpoint);
    let mut found: Vec<RestorePoint> = Vec::new();
    for &id in ids.iter().rev().filter(|&&id| id <= newest) {
        if found.len() > FALLBACKS {
            break;
        }
        let key = metadata_key(id);
        let metadata = match store.get(&key).await {
            Ok(bytes) => CheckpointMetadata::decode(bytes.as_slice()).map_err(|e| e.to_string()),
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => Err(e.to_string()),
        };
        match metadata {
            Ok(m) if m.checkpoint == id => {
                if m.spec_hash != spec_hash {
                    if found.is_empty() {
                        return Err(RestoreError::OtherJob {
                            id,
                            store: store.describe(),
                        });
                    }
                    break;
                }
                if found.is_empty() && id < newest && newest != u64::MAX {
                    tracing::warn!(
                        checkpoint = id,
                        latest = newest,
                        "the latest checkpoint cannot be read; falling back to an earlier one"
                    );
                }
                found.push(RestorePoint {
                    id,
                    key,
                    metadata: m,
                });
            }
            Ok(m) => {
                tracing::warn!(
                    key,
                    found = m.checkpoint,
                    "checkpoint metadata names another checkpoint; skipped"
                );
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "checkpoint cannot be read; trying an earlier one");
            }
        }
    }
    if found.is_empty() && pointer.is_some() {
        tracing::warn!(store = %store.describe(), "no completed checkpoint can be read; starting from the beginning");
    }
    let mut found = found.into_iter();
    Ok(StoreState {
        last,
        restore: found.next(),
        earlier: found.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn put(store: &CheckpointStore, id: u64, hash: &str) {
        let m = CheckpointMetadata {
            checkpoint: id,
            spec_hash: hash.into(),
            ..Default::default()
        };
        store
            .put(&metadata_key(id), m.encode_to_vec())
            .await
            .expect("put");
    }

    /// The checkpoint a job would restore.
    async fn restored(store: &CheckpointStore, wanted: Option<u64>) -> Option<u64> {
        read_store(store, "h", wanted)
            .await
            .expect("read")
            .restore
            .map(|r| r.id)
    }

    async fn point(store: &CheckpointStore, id: u64, finished: bool) {
        let p = LatestPointer {
            checkpoint: id,
            metadata: metadata_key(id),
            finished,
        };
        store.put(LATEST, p.encode_to_vec()).await.expect("put");
    }

    #[tokio::test]
    async fn the_newest_readable_completed_checkpoint_is_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::local(dir.path(), "j");
        assert_eq!(
            read_store(&store, "h", None).await.expect("read"),
            StoreState::default()
        );
        put(&store, 3, "h").await;
        put(&store, 4, "h").await;
        put(&store, 5, "h").await; // written, never completed
        point(&store, 4, false).await;
        let s = read_store(&store, "h", None).await.expect("read");
        assert_eq!((s.last, s.restore.map(|r| r.id)), (5, Some(4)));
        assert_eq!(s.earlier.iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
        // The latest is corrupt: the one before.
        store
            .put(&metadata_key(4), b"\xff\xff garbage".to_vec())
            .await
            .expect("put");
        let s = read_store(&store, "h", None).await.expect("read");
        assert_eq!(s.restore.map(|r| r.id), Some(3));
        // Missing: the same.
        store.delete(&metadata_key(4)).await.expect("delete");
        assert_eq!(restored(&store, None).await, Some(3));
        // A lost pointer: the newest readable one.
        store.delete(LATEST).await.expect("delete");
        assert_eq!(restored(&store, None).await, Some(5));
        // One asked for by number, even an older one; none that is gone.
        assert_eq!(restored(&store, Some(3)).await, Some(3));
        let err = read_store(&store, "h", Some(4))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoint 4"), "{err}");
        // A finished job starts anew.
        point(&store, 5, true).await;
        let s = read_store(&store, "h", None).await.expect("read");
        assert_eq!((s.last, s.restore, s.earlier.len()), (5, None, 0));
    }

    #[tokio::test]
    async fn a_checkpoint_of_another_job_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::local(dir.path(), "j");
        put(&store, 1, "other").await;
        point(&store, 1, false).await;
        let err = read_store(&store, "h", None).await.unwrap_err().to_string();
        assert!(err.contains("checkpoint 1"), "{err}");
    }
}
