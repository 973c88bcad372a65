//! A checkpoint store in S3 (or any S3-compatible server), through
//! `aws-sdk-s3`. Endpoint, region and credentials come from the standard
//! AWS environment, so that IRSA's web identity works on EKS; nothing here
//! logs or shows a credential. A single PUT replaces an object atomically,
//! which is what `latest` needs.

use std::path::Path;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::{StoreError, StoreLocation, StoreOptions};

#[derive(Clone, Debug)]
pub(super) struct S3Store {
    client: Client,
    location: String,
    bucket: String,
    /// `prefix/job/` (or `job/`): every key is under it.
    root: String,
}

impl S3Store {
    pub(super) async fn new(
        location: &StoreLocation,
        bucket: &str,
        prefix: &str,
        job: &str,
        options: &StoreOptions,
    ) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        // A server that stops answering fails an attempt instead of
        // holding a checkpoint upload forever (the checkpoint times out
        // and the next one tries again).
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .operation_attempt_timeout(Duration::from_secs(300))
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .load()
            .await;
        let mut config =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(options.s3_path_style);
        if sdk.region().is_none() {
            // S3-compatible servers need some region to sign with.
            config = config.region(aws_sdk_s3::config::Region::from_static("us-east-1"));
        }
        let config = config.build();
        let root = if prefix.is_empty() {
            format!("{job}/")
        } else {
            format!("{prefix}/{job}/")
        };
        S3Store {
            client: Client::from_conf(config),
            location: location.to_string(),
            bucket: bucket.to_owned(),
            root,
        }
    }

    pub(super) fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.root.trim_end_matches('/'))
    }

    fn object(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn error<E>(&self, key: &str, e: &SdkError<E, HttpResponse>, missing: bool) -> StoreError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        if missing {
            return StoreError::Missing {
                store: self.location.clone(),
                key: key.to_owned(),
            };
        }
        // Refusals (bad credentials, no such bucket) stay refused; a
        // server that is down, slow or failing may come back.
        let retryable = match e {
            SdkError::ServiceError(s) => {
                let status = s.raw().status().as_u16();
                status >= 500 || status == 429
            }
            SdkError::ConstructionFailure(_) => false,
            _ => true,
        };
        let message = match e {
            SdkError::ServiceError(s) => {
                let meta = s.err().meta();
                format!(
                    "{} ({}, HTTP {})",
                    meta.message().unwrap_or("no message"),
                    meta.code().unwrap_or("no code"),
                    s.raw().status().as_u16()
                )
            }
            other => DisplayErrorContext(other).to_string(),
        };
        StoreError::S3 {
            store: self.location.clone(),
            key: if key.is_empty() {
                "(listing)".into()
            } else {
                key.to_owned()
            },
            message,
            retryable,
        }
    }

    pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, &e, false))
    }

    pub(super) async fn put_file(&self, key: &str, from: &Path) -> Result<u64, StoreError> {
        let io = |source| StoreError::Io {
            store: self.location.clone(),
            key: key.to_owned(),
            source,
        };
        let size = tokio::fs::metadata(from).await.map_err(io)?.len();
        let body = ByteStream::from_path(from).await.map_err(|e| {
            io(std::io::Error::other(format!(
                "{}: {}",
                from.display(),
                DisplayErrorContext(&e)
            )))
        })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .body(body)
            .send()
            .await
            .map_err(|e| self.error(key, &e, false))?;
        Ok(size)
    }

    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map_err(|e| {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key());
                self.error(key, &e, missing)
            })
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = self.get_object(key).await?;
        let bytes = out.body.collect().await.map_err(|e| StoreError::S3 {
            store: self.location.clone(),
            key: key.to_owned(),
            message: e.to_string(),
            retryable: true,
        })?;
        Ok(bytes.into_bytes().to_vec())
    }

    pub(super) async fn get_file(&self, key: &str, to: &Path) -> Result<u64, StoreError> {
        let out = self.get_object(key).await?;
        let io = |source| StoreError::Io {
            store: self.location.clone(),
            key: key.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(to).await.map_err(io)?;
        let mut body = out.body.into_async_read();
        let n = tokio::io::copy(&mut body, &mut file).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        Ok(n)
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(prefix, &e, false))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.root)) {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, &e, false))
    }
}
