//! The checkpoint store: where completed checkpoints live.
//!
//! A store holds one directory per job, addressed by keys relative to it:
//! `shared/<file>` (state files, each written once and referenced by every
//! checkpoint that includes it), `chk-<n>/_metadata` (what checkpoint `n`
//! consists of) and `latest` (the newest completed checkpoint). Objects are
//! written whole or not at all (a temporary file renamed into place), so a
//! reader never sees half an object, and `latest` moves atomically.
//!
//! Backends: a local directory (the embedded default; every process of a
//! cluster must see the same one) and S3 or any S3-compatible server
//! ([`s3`]).

mod local;
mod s3;

use std::path::{Path, PathBuf};

/// Where a store is, as the user wrote it (`s3://BUCKET/PREFIX` or a path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl StoreLocation {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must be a directory or s3://BUCKET/PREFIX".into());
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("`{s}` has no bucket (s3://BUCKET/PREFIX)"));
            }
            return Ok(StoreLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if s.contains("://") {
            return Err(format!(
                "`{s}` is neither a directory nor an s3:// location"
            ));
        }
        Ok(StoreLocation::Dir(PathBuf::from(s)))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Dir(p) => write!(f, "{}", p.display()),
            StoreLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl StoreLocation {
    /// Whether `other` is the same store (directories compared as
    /// absolute paths).
    pub fn same_as(&self, other: &StoreLocation) -> bool {
        match (self, other) {
            (StoreLocation::Dir(a), StoreLocation::Dir(b)) => {
                std::path::absolute(a).ok() == std::path::absolute(b).ok()
            }
            (a, b) => a == b,
        }
    }
}

/// A checkpoint named by a user (`--restore-from`, resume from): its
/// number in the job's store, or its path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRef {
    pub id: u64,
    /// The store a path names (`None` for a number).
    pub store: Option<StoreLocation>,
}

impl CheckpointRef {
    /// Parses `N` or `STORE/JOB/chk-N` (optionally with `/_metadata`), the
    /// path of a checkpoint of job `job`.
    pub fn parse(from: &str, job: &str) -> Result<Self, String> {
        let from = from.trim();
        if let Ok(id) = from.parse::<u64>() {
            return Ok(CheckpointRef { id, store: None });
        }
        let expected =
            || format!("`{from}`: expected a checkpoint number or a path STORE/JOB/chk-N");
        let trimmed = from.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/_metadata").unwrap_or(trimmed);
        let (parent, last) = trimmed.rsplit_once('/').ok_or_else(expected)?;
        let id = last
            .strip_prefix("chk-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(expected)?;
        let (store, of) = parent.rsplit_once('/').ok_or_else(expected)?;
        if of != job {
            return Err(format!(
                "`{from}` is a checkpoint of job `{of}`, this job is `{job}` (set `name` in the spec)"
            ));
        }
        let store = StoreLocation::parse(store).map_err(|e| format!("`{from}`: {e}"))?;
        Ok(CheckpointRef {
            id,
            store: Some(store),
        })
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint store {store}: {key}: {source}")]
    Io {
        store: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint store {store}: {key} does not exist")]
    Missing { store: String, key: String },
    #[error("checkpoint store {store}: {key}: {message}")]
    S3 {
        store: String,
        key: String,
        message: String,
        retryable: bool,
    },
}

impl StoreError {
    /// Whether trying again may help (an unreachable or failing store, as
    /// opposed to a missing object).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Io { .. } => true,
            StoreError::S3 { retryable, .. } => *retryable,
            StoreError::Missing { .. } => false,
        }
    }
}

/// How to reach a store beyond its location.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Address S3 buckets as `endpoint/bucket/key` rather than
    /// `bucket.endpoint/key` (most S3-compatible servers want this).
    pub s3_path_style: bool,
}

/// One job's directory in a checkpoint store.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    location: StoreLocation,
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

impl CheckpointStore {
    /// The store of job `job` at `location`. For S3 the endpoint, region
    /// and credentials come from the standard AWS environment
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ..., web
    /// identity for IRSA).
    pub async fn open(
        location: &StoreLocation,
        job: &str,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let backend = match location {
            StoreLocation::Dir(dir) => {
                Backend::Local(local::LocalStore::new(location, dir.join(job)))
            }
            StoreLocation::S3 { bucket, prefix } => {
                Backend::S3(s3::S3Store::new(location, bucket, prefix, job, options).await)
            }
        };
        Ok(CheckpointStore {
            location: location.clone(),
            backend,
        })
    }

    /// A store in a local directory (no I/O until used).
    pub fn local(dir: &Path, job: &str) -> Self {
        let location = StoreLocation::Dir(dir.to_owned());
        CheckpointStore {
            backend: Backend::Local(local::LocalStore::new(&location, dir.join(job))),
            location,
        }
    }

    /// Where the job's checkpoints are, for the user (never credentials).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(l) => l.describe(),
            Backend::S3(s) => s.describe(),
        }
    }

    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Writes `bytes` as `key`, replacing it atomically.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local(l) => l.put(key, bytes).await,
            Backend::S3(s) => s.put(key, bytes).await,
        }
    }

    /// Copies the local file `from` into the store as `key`; returns its
    /// size. `from` must not change afterwards: a store in a directory on
    /// the same file system links it instead of copying it.
    pub async fn put_file(&self, key: &str, from: &Path) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.put_file(key, from).await,
            Backend::S3(s) => s.put_file(key, from).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.get(key).await,
            Backend::S3(s) => s.get(key).await,
        }
    }

    /// Copies `key` from the store to the local file `to`; returns its
    /// size.
    pub async fn get_file(&self, key: &str, to: &Path) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.get_file(key, to).await,
            Backend::S3(s) => s.get_file(key, to).await,
        }
    }

    /// Keys under `prefix` (a directory such as `shared/`, or `""`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.list(prefix).await,
            Backend::S3(s) => s.list(prefix).await,
        }
    }

    /// Deletes `key` (absent already is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local(l) => l.delete(key).await,
            Backend::S3(s) => s.delete(key).await,
        }
    }
}

/// The metadata key of checkpoint `n`.
pub fn metadata_key(n: u64) -> String {
    format!("chk-{n}/_metadata")
}

/// The key of the pointer to the newest completed checkpoint.
pub const LATEST: &str = "latest";

#[cfg(test)]
mod tests {
    #[test]
    fn a_checkpoint_is_named_by_number_or_path() {
        let job = "iot";
        assert_eq!(
            super::CheckpointRef::parse(" 17 ", job),
            Ok(super::CheckpointRef {
                id: 17,
                store: None
            })
        );
        let r = super::CheckpointRef::parse("/d/store/iot/chk-12/_metadata", job).expect("path");
        assert_eq!(r.id, 12);
        assert_eq!(r.store, Some(super::StoreLocation::Dir("/d/store".into())));
        let r = super::CheckpointRef::parse("s3://b/p/iot/chk-3/", job).expect("s3");
        assert_eq!(
            r.store,
            Some(super::StoreLocation::S3 {
                bucket: "b".into(),
                prefix: "p".into()
            })
        );
        for bad in ["chk-1", "/d/iot/chk-x", "/d/iot/cp-1", "/d/other/chk-1", ""] {
            assert!(super::CheckpointRef::parse(bad, job).is_err(), "{bad}");
        }
        let a = super::StoreLocation::Dir("store".into());
        let b = super::StoreLocation::Dir(std::env::current_dir().expect("cwd").join("store"));
        assert!(a.same_as(&b));
        assert!(!a.same_as(&super::StoreLocation::Dir("other".into())));
    }

    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            StoreLocation::parse("s3://b/some/prefix/"),
            Ok(StoreLocation::S3 {
                bucket: "b".into(),
                prefix: "some/prefix".into()
            })
        );
        assert_eq!(
            StoreLocation::parse("/tmp/x"),
            Ok(StoreLocation::Dir("/tmp/x".into()))
        );
        assert!(StoreLocation::parse("s3:///x").is_err());
        assert!(StoreLocation::parse("gs://b/x").is_err());
        assert!(StoreLocation::parse(" ").is_err());
    }

    #[tokio::test]
    async fn objects_are_put_listed_read_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::local(dir.path(), "job");
        store
            .put("chk-1/_metadata", b"m1".to_vec())
            .await
            .expect("put");
        let local = dir.path().join("f");
        std::fs::write(&local, b"state").expect("write");
        assert_eq!(
            store.put_file("shared/a.sst", &local).await.expect("put"),
            5
        );
        store.put(LATEST, b"p".to_vec()).await.expect("put");
        assert_eq!(
            store.list("").await.expect("list"),
            ["chk-1/_metadata", "latest", "shared/a.sst"]
        );
        assert_eq!(store.get("shared/a.sst").await.expect("get"), b"state");
        let err = store.get("chk-2/_metadata").await.unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        assert!(!err.is_retryable());
        store.delete("shared/a.sst").await.expect("delete");
        store
            .delete("shared/a.sst")
            .await
            .expect("deleting again is fine");
        assert_eq!(
            store.list("shared").await.expect("list"),
            Vec::<String>::new()
        );
    }
}
