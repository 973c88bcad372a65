//! A checkpoint store in a local directory: objects written to a temporary
//! file, synced, and renamed into place.

use std::path::{Path, PathBuf};

use super::{StoreError, StoreLocation};

#[derive(Clone, Debug)]
pub(super) struct LocalStore {
    location: String,
    /// The job's directory.
    root: PathBuf,
}

impl LocalStore {
    pub(super) fn new(location: &StoreLocation, root: PathBuf) -> Self {
        LocalStore {
            location: location.to_string(),
            root,
        }
    }

    pub(super) fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io(&self, key: &str, source: std::io::Error) -> StoreError {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing {
                store: self.location.clone(),
                key: key.to_owned(),
            }
        } else {
            StoreError::Io {
                store: self.location.clone(),
                key: key.to_owned(),
                source,
            }
        }
    }

    pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
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

    pub(super) async fn put_file(&self, key: &str, from: &Path) -> Result<u64, StoreError> {
        let path = self.path(key);
        let tmp = temporary(&path);
        let io = |e| self.io(key, e);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        // A hard link when the store is on the same file system: staged
        // output and state files are never changed once put, and copying
        // gigabytes of staged output through the page cache cost more CPU
        // than the job (bench/checkpoints.sh, 50,000 devices).
        let _ = tokio::fs::remove_file(&tmp).await;
        let bytes = match tokio::fs::hard_link(from, &tmp).await {
            Ok(()) => tokio::fs::metadata(&tmp).await.map_err(io)?.len(),
            Err(_) => tokio::fs::copy(from, &tmp).await.map_err(io)?,
        };
        sync_file(&tmp).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        Ok(bytes)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        tokio::fs::read(self.path(key))
            .await
            .map_err(|e| self.io(key, e))
    }

    pub(super) async fn get_file(&self, key: &str, to: &Path) -> Result<u64, StoreError> {
        tokio::fs::copy(self.path(key), to)
            .await
            .map_err(|e| self.io(key, e))
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
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

    /// Deletes `key`, and its directory if that is left empty (a
    /// checkpoint's `chk-<n>/`).
    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
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
