//! The checkpoint store: where completed checkpoints live.
//!
//! A store holds one directory per job, addressed by keys relative to it:
//! `shared/<file>` (state files, each written once and referenced by every
//! checkpoint that includes it), `chk-<n>/_metadata` (what checkpoint `n`
//! consists of) and `latest` (the newest completed checkpoint). Objects are
//! written whole or not at all (a temporary file renamed into place), so a
//! reader never sees half an object, and `latest` moves atomically.
//!
//! The backend is a local directory (the embedded default, and every
//! process of a cluster on one machine). S3 is the production backend and
//! comes next (see `docs/architecture.md`).

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
    #[error("checkpoint store {0}: S3 stores are not supported by this version yet")]
    Unsupported(String),
}

impl StoreError {
    /// Whether trying again may help (an unreachable or failing store, as
    /// opposed to a missing object).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io { .. })
    }
}

/// One job's directory in a checkpoint store.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    location: StoreLocation,
    /// The job's directory (local backend).
    root: PathBuf,
}

impl CheckpointStore {
    /// The store of job `job` at `location`.
    pub fn open(location: &StoreLocation, job: &str) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Dir(dir) => Ok(CheckpointStore {
                location: location.clone(),
                root: dir.join(job),
            }),
            StoreLocation::S3 { .. } => Err(StoreError::Unsupported(location.to_string())),
        }
    }

    /// Where the job's checkpoints are, for the user.
    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io(&self, key: &str, source: std::io::Error) -> StoreError {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing {
                store: self.location.to_string(),
                key: key.to_owned(),
            }
        } else {
            StoreError::Io {
                store: self.location.to_string(),
                key: key.to_owned(),
                source,
            }
        }
    }

    /// Writes `bytes` as `key`, replacing it atomically.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key);
        let tmp = temporary(&path);
        let io = |e| self.io(key, e);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        tokio::fs::write(&tmp, bytes).await.map_err(io)?;
        sync_file(&tmp).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }

    /// Copies the local file `from` into the store as `key`.
    pub async fn put_file(&self, key: &str, from: &Path) -> Result<u64, StoreError> {
        let path = self.path(key);
        let tmp = temporary(&path);
        let io = |e| self.io(key, e);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        let bytes = tokio::fs::copy(from, &tmp).await.map_err(io)?;
        sync_file(&tmp).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        Ok(bytes)
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        tokio::fs::read(self.path(key))
            .await
            .map_err(|e| self.io(key, e))
    }

    /// Copies `key` from the store to the local file `to`.
    pub async fn get_file(&self, key: &str, to: &Path) -> Result<u64, StoreError> {
        tokio::fs::copy(self.path(key), to)
            .await
            .map_err(|e| self.io(key, e))
    }

    /// Keys under `prefix` (a directory such as `shared/`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.path(prefix);
        let mut keys = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(self.io(prefix, e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(|e| self.io(prefix, e))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                continue;
            }
            let key = format!("{}/{name}", prefix.trim_end_matches('/'));
            let key = key.trim_start_matches('/').to_owned();
            if entry
                .file_type()
                .await
                .map_err(|e| self.io(&key, e))?
                .is_dir()
            {
                keys.extend(Box::pin(self.list(&key)).await?);
            } else {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Deletes `key` (absent already is fine), and its directory if that
    /// is left empty (a checkpoint's `chk-<n>/`).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(key, e)),
        }
        if key.starts_with("chk-") {
            if let Some(dir) = path.parent() {
                // Fails while other objects are in it, which is fine.
                let _ = tokio::fs::remove_dir(dir).await;
            }
        }
        Ok(())
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

async fn sync_file(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await
}

/// The metadata key of checkpoint `n`.
pub fn metadata_key(n: u64) -> String {
    format!("chk-{n}/_metadata")
}

/// The key of the pointer to the newest completed checkpoint.
pub const LATEST: &str = "latest";

#[cfg(test)]
mod tests {
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
        let store =
            CheckpointStore::open(&StoreLocation::Dir(dir.path().into()), "job").expect("open");
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
