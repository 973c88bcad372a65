//! A deployment kept through the loss of a raft group's leader: it runs
//! on with its writes fenced (the lease revoked) while the worker looks
//! for the next leader, which may adopt it; it is aborted when its lease
//! would have run out.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_proto::cluster as pb;

use super::control::{checkpoint_event, log_end, next_from_current, sleep_until_opt};
use crate::deployment::{Deployment, DeploymentMsg, Update};

/// The deployment this worker runs, and what the control loop knows of it.
pub(super) struct Running {
    pub(super) deployment: Deployment,
    /// The newest checkpoint it was asked for.
    pub(super) last_checkpoint: u64,
    /// Whether a new leader may adopt it: not once it was told to stop
    /// its sources (a stop or a rescale was under way) or was cancelled.
    pub(super) adoptable: bool,
}

/// What outlives one connection to a coordinator.
#[derive(Default)]
pub(super) struct Carried {
    pub(super) current: Option<Running>,
    /// When the lease from the coordinator ends (`None`: no lease).
    pub(super) lease_ends: Option<tokio::time::Instant>,
    /// `current` runs with no coordinator: its raft group's leader was
    /// lost while the lease held, and the next leader may adopt it. Its
    /// writes wait (the lease is revoked) until one does, and it is
    /// aborted when the lease would have run out.
    pub(super) orphaned: bool,
    /// What the orphaned deployment had to say meanwhile, for the leader
    /// that adopts it.
    pub(super) offline: Vec<pb::worker_event::Event>,
}

/// Events kept for an adopting leader at most (acks of checkpoints the
/// old leader asked for, windows closed, inputs ended).
const OFFLINE_EVENTS: usize = 256;

impl Carried {
    /// The generation a leader may adopt (0: none).
    pub(super) fn adoptable(&self) -> (u64, u64) {
        match &self.current {
            Some(r) if self.orphaned && r.adoptable => (r.deployment.generation, r.last_checkpoint),
            _ => (0, 0),
        }
    }

    /// The connection to the coordinator ended: the deployment is kept,
    /// orphaned, when a new raft leader may adopt it (the lease still
    /// holds and it was a leader's: `term` is not 0); else aborted.
    pub(super) async fn connection_lost(
        &mut self,
        term: u64,
        lease: &crate::lease::Lease,
        keep: bool,
    ) {
        let Some(r) = &self.current else { return };
        let holds = self
            .lease_ends
            .is_some_and(|end| end > tokio::time::Instant::now());
        if keep && term != 0 && holds && r.adoptable {
            // Nothing is written until a coordinator renews the lease.
            lease.revoke();
            if !self.orphaned {
                tracing::warn!(
                    generation = r.deployment.generation,
                    "lost the coordinator; the deployment goes on without writing until a new leader adopts it (or its lease runs out)"
                );
            }
            self.orphaned = true;
            return;
        }
        self.abort("lost the coordinator; aborting the deployment")
            .await;
    }

    pub(super) async fn abort(&mut self, why: &str) {
        self.orphaned = false;
        self.offline.clear();
        if let Some(r) = self.current.take() {
            tracing::warn!(generation = r.deployment.generation, "{why}");
            r.deployment.send(DeploymentMsg::Abort).await;
            let _ = r.deployment.wait().await;
        }
    }

    /// Looks after an orphaned deployment while no coordinator is
    /// connected: keeps what it reports, aborts it when its lease would
    /// have run out. Returns after one such step (pending without one).
    pub(super) async fn tend(&mut self) {
        if !self.orphaned {
            return std::future::pending().await;
        }
        tokio::select! {
            update = next_from_current(&mut self.current) => {
                let event = match update {
                    Update::Ended(outcome) => {
                        let Some(r) = self.current.take() else { return };
                        self.orphaned = false;
                        self.offline.clear();
                        log_end(r.deployment.generation, &outcome);
                        return;
                    }
                    Update::WindowsClosed(through) => {
                        let Some(r) = &self.current else { return };
                        self.offline.retain(|e| !matches!(e, pb::worker_event::Event::WindowsClosed(_)));
                        pb::worker_event::Event::WindowsClosed(pb::WindowsClosed {
                            generation: r.deployment.generation,
                            through,
                        })
                    }
                    Update::Checkpoint(event) => {
                        let Some(r) = &self.current else { return };
                        checkpoint_event(r.deployment.generation, event)
                    }
                };
                if self.offline.len() >= OFFLINE_EVENTS {
                    self.offline.remove(0);
                }
                self.offline.push(event);
            }
            _ = sleep_until_opt(self.lease_ends) => {
                self.abort("no leader adopted the deployment within its lease; aborting it").await;
            }
        }
    }

    /// Waits `wait`, tending an orphaned deployment meanwhile; `false`:
    /// shut down first.
    pub(super) async fn wait(&mut self, wait: Duration, shutdown: &CancellationToken) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => return true,
                _ = self.tend() => {}
            }
        }
    }
}
