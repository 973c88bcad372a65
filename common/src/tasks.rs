//! One cancellation tree per process.
//!
//! A [`TaskGroup`] is a cancellation token and the tasks spawned under it.
//! Groups nest ([`TaskGroup::child`]): the process has a root, each part of
//! it (the coordinator, a worker node) a child, and cancelling a group
//! cancels everything below it. A *critical* task is one the group cannot
//! do without — a server, an actor, a control loop: when it fails, or ends
//! at all before the group was told to stop, the group stops, siblings
//! included, and says why ([`TaskGroup::stopped`]). A failed server thus
//! stops its process instead of leaving it running deaf.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cancellation token and the tasks under it.
#[derive(Clone)]
pub struct TaskGroup {
    token: CancellationToken,
    tracker: TaskTracker,
    /// Why the group stopped, if a critical task ended it.
    failure: Arc<Mutex<Option<String>>>,
}

impl Default for TaskGroup {
    fn default() -> Self {
        TaskGroup::root()
    }
}

impl TaskGroup {
    /// The root of a process.
    pub fn root() -> Self {
        TaskGroup {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// A group that stops when this one does (but not the other way round:
    /// a failure below is reported through [`TaskGroup::stopped`] of the
    /// child, and it is for whoever waits on it to stop the parent).
    pub fn child(&self) -> Self {
        TaskGroup {
            token: self.token.child_token(),
            tracker: TaskTracker::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The group's token, for tasks that watch it themselves.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs `task`, which the group cannot do without: when it fails, or
    /// ends before the group was told to stop, the group stops.
    pub fn spawn_critical<E: Display>(
        &self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let group = self.clone();
        self.tracker.spawn(async move {
            let result = task.await;
            if group.token.is_cancelled() {
                if let Err(e) = result {
                    tracing::debug!(task = name, error = %e, "task failed while stopping");
                }
                return;
            }
            let reason = match result {
                Ok(()) => format!("{name} ended unexpectedly"),
                Err(e) => format!("{name} failed: {e}"),
            };
            tracing::error!(task = name, %reason, "stopping");
            group.fail(reason);
        });
    }

    /// Stops the group for `reason` (the first reason given is kept).
    pub fn fail(&self, reason: String) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.token.cancel();
    }

    /// Resolves when the group stops: `Some(reason)` when a critical task
    /// ended it, `None` when it was told to.
    pub async fn stopped(&self) -> Option<String> {
        self.token.cancelled().await;
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the group and waits for its tasks to end.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_critical_task_stops_its_siblings_and_says_why() {
        let root = TaskGroup::root();
        let node = root.child();
        let sibling = node.token().clone();
        node.spawn_critical("server", async { Err::<(), _>("address in use") });
        assert_eq!(
            node.stopped().await.as_deref(),
            Some("server failed: address in use")
        );
        assert!(sibling.is_cancelled());
        assert!(!root.is_stopping(), "the parent decides for itself");
        node.shutdown().await;
    }

    #[tokio::test]
    async fn stopping_the_parent_stops_children_without_a_failure() {
        let root = TaskGroup::root();
        let node = root.child();
        let token = node.token().clone();
        node.spawn_critical("loop", async move {
            token.cancelled().await;
            Ok::<(), String>(())
        });
        root.shutdown().await;
        assert_eq!(node.stopped().await, None);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_critical_task_that_just_ends_stops_the_group() {
        let group = TaskGroup::root();
        group.spawn_critical("actor", async { Ok::<(), String>(()) });
        assert_eq!(
            group.stopped().await.as_deref(),
            Some("actor ended unexpectedly")
        );
        group.shutdown().await;
    }
}
