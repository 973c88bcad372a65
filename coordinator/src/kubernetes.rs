//! The workers' StatefulSet, seen from the coordinator (`--kubernetes`).
//!
//! Users scale Weir by changing the workers' replicas (`kubectl scale`,
//! `helm upgrade`, or `weir ctl rescale`, which patches the same `scale`
//! subresource). The coordinator watches the StatefulSet and tells its actor
//! the replicas it wants ([`Msg::Replicas`]); the actor then rescales from a
//! checkpoint once the new set of workers has registered.
//!
//! The watch is a plain get-then-watch loop rather than kube's `runtime`
//! watcher: one named object, no cache, and errors we want to report
//! ourselves — a watch that fell too far behind (410 Gone) starts again from
//! a fresh get; a refused or failing API is reported in the job status and
//! retried with a capped backoff.

use std::fmt;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::actor::{CoordinatorHandle, Msg};

/// What went wrong talking to the Kubernetes API.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KubeError {
    #[error(
        "the coordinator's service account may not {verb} statefulset {target} ({message}); \
         the chart's Role grants get/watch on it and patch on its scale subresource"
    )]
    Forbidden {
        verb: &'static str,
        target: String,
        message: String,
    },
    #[error("statefulset {target} does not exist ({message}); --worker-statefulset names it")]
    NotFound { target: String, message: String },
    #[error("statefulset {target} changed while it was being scaled ({message})")]
    Conflict { target: String, message: String },
    #[error("the Kubernetes API answered {code} to {verb} statefulset {target}: {message}")]
    Api {
        verb: &'static str,
        target: String,
        code: u16,
        message: String,
    },
    #[error("cannot reach the Kubernetes API to {verb} statefulset {target}: {message}")]
    Unreachable {
        verb: &'static str,
        target: String,
        message: String,
    },
    #[error("cannot configure a Kubernetes client: {0}")]
    Config(String),
}

impl KubeError {
    /// Whether trying again may help (a refusal or a missing object needs
    /// someone to change something first).
    pub fn retryable(&self) -> bool {
        match self {
            KubeError::Forbidden { .. } | KubeError::NotFound { .. } | KubeError::Config(_) => {
                false
            }
            KubeError::Conflict { .. } | KubeError::Unreachable { .. } => true,
            KubeError::Api { code, .. } => *code >= 500 || *code == 429,
        }
    }
}

/// The workers' StatefulSet: `namespace/name` through one client.
#[derive(Clone)]
pub struct WorkerSet {
    api: Api<StatefulSet>,
    namespace: String,
    name: String,
}

impl fmt::Debug for WorkerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerSet({}/{})", self.namespace, self.name)
    }
}

/// How long a failing watch waits before it tries again, at most.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Patches retried on a conflict before the error is reported.
const PATCH_ATTEMPTS: u32 = 3;

impl WorkerSet {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        WorkerSet {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The client the environment gives (in a pod: its service account;
    /// elsewhere: `KUBECONFIG`), in `namespace` or the pod's own.
    pub async fn from_environment(namespace: Option<&str>, name: &str) -> Result<Self, KubeError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?;
        let namespace = namespace
            .map(str::to_owned)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(WorkerSet::new(client, &namespace, name))
    }

    /// `namespace/name`, for messages.
    pub fn target(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn error(&self, verb: &'static str, e: kube::Error) -> KubeError {
        let target = self.target();
        match e {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    403 => KubeError::Forbidden {
                        verb,
                        target,
                        message,
                    },
                    404 => KubeError::NotFound { target, message },
                    409 => KubeError::Conflict { target, message },
                    code => KubeError::Api {
                        verb,
                        target,
                        code,
                        message,
                    },
                }
            }
            other => KubeError::Unreachable {
                verb,
                target,
                message: weir_common::error_chain::error_chain(&other),
            },
        }
    }

    /// The replicas the StatefulSet asks for, and the version to watch from.
    pub async fn replicas(&self) -> Result<(u32, String), KubeError> {
        let set = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| self.error("get", e))?;
        let version = set.metadata.resource_version.clone().unwrap_or_default();
        Ok((replicas_of(&set), version))
    }

    /// Sets the StatefulSet's replicas through its `scale` subresource, as
    /// `kubectl scale` does (a merge patch of `spec.replicas`); a conflict
    /// is tried again.
    pub async fn scale(&self, replicas: u32) -> Result<(), KubeError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        let mut attempt = 1;
        loop {
            let result = self
                .api
                .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| self.error("patch the scale of", e));
            match result {
                Ok(_) => return Ok(()),
                Err(e @ KubeError::Conflict { .. }) if attempt < PATCH_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "scaling the workers again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells the coordinator the replicas the StatefulSet asks for, now and
    /// whenever they change, until `shutdown`; errors are reported to it
    /// and retried.
    pub async fn watch(self, coordinator: CoordinatorHandle, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(500);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.watch_once(&coordinator) => r,
            };
            let error = match result {
                // The watch ended (its timeout, or a 410): start again.
                Ok(()) => {
                    delay = Duration::from_millis(500);
                    continue;
                }
                Err(e) => e,
            };
            tracing::warn!(error = %error, retry_in = ?delay, "watching the workers' StatefulSet");
            if !coordinator
                .send(Msg::Replicas(ReplicasSeen::Trouble(error.to_string())))
                .await
            {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    /// A get, then a watch from its version, until the watch ends: `Ok` when
    /// it ended as watches do (a server timeout, or too old a version).
    async fn watch_once(&self, coordinator: &CoordinatorHandle) -> Result<(), KubeError> {
        let (replicas, mut version) = self.replicas().await?;
        coordinator
            .send(Msg::Replicas(ReplicasSeen::Replicas(replicas)))
            .await;
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(290);
        loop {
            let mut events = self
                .api
                .watch(&params, &version)
                .await
                .map_err(|e| self.error("watch", e))?
                .boxed();
            while let Some(event) = events
                .try_next()
                .await
                .map_err(|e| self.error("watch", e))?
            {
                match event {
                    WatchEvent::Added(set) | WatchEvent::Modified(set) => {
                        if let Some(v) = &set.metadata.resource_version {
                            version.clone_from(v);
                        }
                        coordinator
                            .send(Msg::Replicas(ReplicasSeen::Replicas(replicas_of(&set))))
                            .await;
                    }
                    WatchEvent::Deleted(_) => {
                        return Err(KubeError::NotFound {
                            target: self.target(),
                            message: "it was deleted".into(),
                        })
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Error(status) if status.code == 410 => {
                        // Desync: the version is too old. A fresh get tells
                        // the replicas again.
                        tracing::info!(message = %status.message, "the StatefulSet watch fell behind; reading it again");
                        return Ok(());
                    }
                    WatchEvent::Error(status) => {
                        return Err(self.error("watch", kube::Error::Api(status)));
                    }
                }
            }
            // The server ended the watch (its timeout): go on from the
            // latest version seen.
        }
    }
}

/// What the watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicasSeen {
    Replicas(u32),
    /// The API could not be read (reported in the job status; retried).
    Trouble(String),
}

fn replicas_of(set: &StatefulSet) -> u32 {
    // An unset `spec.replicas` means 1 (the API's default).
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(1, |r| u32::try_from(r).unwrap_or(0))
}

#[cfg(test)]
mod tests;
