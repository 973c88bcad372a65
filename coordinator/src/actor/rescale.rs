//! Rescaling: a planned change of the job's workers.
//!
//! A change is planned when the running generation is whole: the workers'
//! StatefulSet asks for another number of replicas (`--kubernetes`), a
//! worker registers, or one says it is leaving (SIGTERM). The coordinator
//! then
//!
//! 1. waits until the workers the StatefulSet asks for have registered (and
//!    the ones going away have said so) — at most `rescale_patience`, then
//!    it goes on with the workers it has;
//! 2. takes a checkpoint of the running generation, which keeps running
//!    meanwhile;
//! 3. deploys a generation over the new set of workers that restores that
//!    checkpoint (state by key group, input positions), and releases the
//!    leaving workers — their state is in the checkpoint, so they are not
//!    needed for the restore;
//! 4. counts the rescale done once the new generation runs on every worker.
//!
//! The checkpoint is taken once the new workers are there rather than when
//! the change is first seen: the new generation then replays only what was
//! read while it was being deployed, not the minutes a pod may take to
//! start. A worker lost meanwhile (not leaving: killed, partitioned) makes
//! the change unplanned: the next generation restores the latest completed
//! checkpoint, as after any failure; so does a rescale whose checkpoint
//! fails. Both are recorded in the rescale's outcome.

use super::*;
use crate::kubernetes::KubeError;

/// Rescales kept for the job status.
const HISTORY: usize = 20;

/// Why the workers change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// The StatefulSet's replicas changed.
    Replicas,
    /// A worker registered.
    Joined,
    /// A worker was asked to stop.
    Leaving,
}

impl Cause {
    fn name(self) -> &'static str {
        match self {
            Cause::Replicas => "replicas",
            Cause::Joined => "joined",
            Cause::Leaving => "leaving",
        }
    }
}

/// A rescale under way.
pub(super) struct Rescale {
    from: u32,
    cause: Cause,
    started: Instant,
    started_ms: i64,
    phase: Phase,
    /// What went otherwise than planned, for the outcome.
    note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the workers asked for to register (and leaving ones to
    /// say so).
    Workers,
    /// A checkpoint is asked for; the new generation restores it.
    Checkpoint,
    /// `generation` is deployed, restoring `checkpoint`; done once it runs
    /// on every worker.
    Deploying { generation: u64, checkpoint: u64 },
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Workers => "waiting-for-workers",
            Phase::Checkpoint => "checkpointing",
            Phase::Deploying { .. } => "deploying",
        }
    }
}

impl Actor {
    /// Membership has been quiet for `settle`: a planned change becomes a
    /// rescale from a checkpoint; anything else deploys a new generation
    /// from the latest completed one, as before.
    /// `since`: the first change.
    pub(super) fn membership_settled(&mut self, since: Instant) {
        let planned = matches!(self.job, Job::Running(_)) && !self.generation_broken;
        if !planned {
            if let Some(r) = &self.rescale {
                if !matches!(r.phase, Phase::Deploying { .. }) {
                    let latest = self.restorable.back().map_or(0, |r| r.id);
                    self.end_rescale(format!(
                        "a worker was lost while rescaling; restored the latest completed checkpoint ({latest})"
                    ));
                }
            }
            self.deploy_or_wait();
            return;
        }
        if self.rescale.is_none() {
            if !self.workers_differ() {
                // Joined and left again, or re-registered: nothing to do.
                return;
            }
            self.begin_rescale(self.membership_cause(), since);
        }
        self.advance_rescale();
    }

    /// Why the workers differ from the running generation's: some are
    /// leaving, or (else) some joined.
    fn membership_cause(&self) -> Cause {
        let leaving = self
            .workers
            .values()
            .any(|w| w.presence == Presence::Leaving);
        if leaving {
            Cause::Leaving
        } else {
            Cause::Joined
        }
    }

    /// Whether the workers there are (not leaving) are not the running
    /// generation's.
    fn members_differ(&self) -> bool {
        let Job::Running(g) = &self.job else {
            return false;
        };
        let active: BTreeSet<&str> = self.active_workers().map(|(id, _)| id.as_str()).collect();
        let running: BTreeSet<&str> = g
            .assignment
            .workers
            .iter()
            .map(|s| s.worker_id.as_str())
            .collect();
        active != running
    }

    /// Whether the workers that should run the job (those there are, or
    /// as many as the StatefulSet asks for) are not the running
    /// generation's.
    fn workers_differ(&self) -> bool {
        self.members_differ()
            || match (&self.job, self.desired) {
                (Job::Running(g), Some(d)) => d as usize != g.assignment.workers.len(),
                _ => false,
            }
    }

    /// A rescale, counted from `since` (when the change was first seen).
    fn begin_rescale(&mut self, cause: Cause, since: Instant) {
        let from = self
            .job
            .generation()
            .map_or(0, |g| g.assignment.workers.len() as u32);
        tracing::info!(
            from,
            to = self.rescale_target(),
            cause = cause.name(),
            "rescaling: a checkpoint first, then a generation over the new workers restores it"
        );
        self.rescale = Some(Rescale {
            from,
            cause,
            started: since,
            started_ms: now_ms()
                .saturating_sub(i64::try_from(since.elapsed().as_millis()).unwrap_or(0)),
            phase: Phase::Workers,
            note: None,
        });
    }

    /// The number of workers the job should run on.
    fn rescale_target(&self) -> u32 {
        self.desired
            .unwrap_or_else(|| self.active_workers().count() as u32)
    }

    /// Moves the rescale on (every tick, and when something it waits for
    /// happens).
    pub(super) fn advance_rescale(&mut self) {
        if !matches!(self.job, Job::Running(_)) {
            // Nothing runs that a leaving worker could be needed for.
            self.release_leaving();
        }
        let Some(r) = &self.rescale else {
            // A change that came while another rescale was deploying (a
            // worker leaving, say) is a rescale of its own.
            if matches!(self.job, Job::Running(_))
                && !self.generation_broken
                && self.membership == Membership::Settled
                && self.members_differ()
            {
                self.begin_rescale(self.membership_cause(), Instant::now());
            }
            return;
        };
        match r.phase {
            Phase::Workers => {
                if !matches!(self.job, Job::Running(_)) || self.generation_broken {
                    // A failure (or stop) took over; the restart deploys
                    // over whoever is there.
                    self.end_rescale(format!("the job is {}; not rescaled", self.job.name()));
                    return;
                }
                let active = self.active_workers().count() as u32;
                let target = self.rescale_target();
                let patience = r.started.elapsed() >= self.config.rescale_patience;
                let settled = self.membership == Membership::Settled;
                if !(settled && (active == target || patience)) {
                    return;
                }
                if !self.workers_differ() {
                    self.end_rescale("nothing to change: the job runs on these workers".into());
                    return;
                }
                if !self.members_differ() {
                    // Only the StatefulSet's count differs: its pods did
                    // not come (or go). A redeploy would change nothing.
                    self.end_rescale(format!(
                        "the StatefulSet asks for {target} workers, {active} are registered after {:?}; nothing changed",
                        self.config.rescale_patience
                    ));
                    return;
                }
                if active != target {
                    tracing::warn!(
                        active,
                        target,
                        patience = ?self.config.rescale_patience,
                        "rescaling with the workers there are: the others did not come (or go) in time"
                    );
                }
                self.checkpoints
                    .request(crate::checkpoints::Requested::default());
                if let Some(r) = &mut self.rescale {
                    r.phase = Phase::Checkpoint;
                }
                tracing::info!(active, "rescaling: taking a checkpoint");
            }
            Phase::Checkpoint => {
                if !matches!(self.job, Job::Running(_)) {
                    self.end_rescale(format!("the job is {}; not rescaled", self.job.name()));
                } else if !self.checkpoints.pending() {
                    // It failed (its completion moves on at once).
                    let latest = self.restorable.back().map_or(0, |r| r.id);
                    tracing::warn!(
                        latest,
                        "the rescale's checkpoint failed; rescaling from the latest completed one"
                    );
                    self.deploy_rescaled(
                        latest,
                        Some(format!(
                            "its checkpoint failed; restored the latest completed one ({latest})"
                        )),
                    );
                }
            }
            Phase::Deploying { generation, .. } => match &self.job {
                Job::Running(g) if g.number == generation => {
                    let everywhere = g.assignment.workers.iter().all(|s| {
                        self.workers
                            .get(&s.worker_id)
                            .is_some_and(|w| w.state == pb::DeploymentState::Running)
                    });
                    if everywhere {
                        self.end_rescale("done".into());
                    }
                }
                _ => self.end_rescale(format!(
                    "generation {generation} did not start on every worker (the job is {})",
                    self.job.name()
                )),
            },
        }
    }

    /// A checkpoint completed: a rescale waiting for one deploys.
    pub(super) fn rescale_checkpoint_completed(&mut self, id: u64) {
        if self
            .rescale
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Checkpoint)
        {
            self.deploy_rescaled(id, None);
        }
    }

    fn deploy_rescaled(&mut self, checkpoint: u64, note: Option<String>) {
        self.deploy_or_wait();
        match &self.job {
            Job::Running(g) => {
                let generation = g.number;
                if let Some(r) = &mut self.rescale {
                    r.phase = Phase::Deploying {
                        generation,
                        checkpoint,
                    };
                }
                if let Some(note) = note {
                    self.note_rescale(note);
                }
            }
            _ => self.end_rescale(format!(
                "no workers are left; the job waits (its state is in checkpoint {checkpoint})"
            )),
        }
    }

    /// An outcome other than `done` to keep, once the rescale ends.
    fn note_rescale(&mut self, note: String) {
        tracing::warn!(%note, "rescale");
        if let Some(r) = &mut self.rescale {
            r.note = Some(note);
        }
    }

    fn end_rescale(&mut self, outcome: String) {
        let Some(r) = self.rescale.take() else { return };
        let (generation, checkpoint) = match r.phase {
            Phase::Deploying {
                generation,
                checkpoint,
            } => (generation, checkpoint),
            _ => (0, 0),
        };
        let outcome = match r.note {
            Some(note) if outcome == "done" => note,
            Some(note) => format!("{note}; {outcome}"),
            None => outcome,
        };
        let to = self
            .job
            .generation()
            .filter(|g| g.number == generation)
            .map_or(r.from, |g| g.assignment.workers.len() as u32);
        let duration = r.started.elapsed();
        tracing::info!(
            from = r.from,
            to,
            checkpoint,
            generation,
            duration_ms = weir_common::time::millis(duration),
            %outcome,
            "rescale ended"
        );
        let info = api::RescaleInfo {
            from: r.from,
            to,
            cause: r.cause.name().to_owned(),
            checkpoint,
            generation,
            started_ms: r.started_ms,
            duration_ms: weir_common::time::millis(duration),
            outcome,
        };
        self.record_rescale(&info);
        self.rescales.push_front(info);
        self.rescales.truncate(HISTORY);
    }

    /// The StatefulSet's replicas, or an error reading them.
    pub(super) fn replicas_seen(&mut self, seen: ReplicasSeen) {
        let replicas = match seen {
            ReplicasSeen::Trouble(e) => {
                self.kube_trouble = Some(e);
                return;
            }
            ReplicasSeen::Replicas(n) => n,
        };
        self.kube_trouble = None;
        if self.desired == Some(replicas) {
            return;
        }
        tracing::info!(
            replicas,
            before = ?self.desired,
            "the workers' StatefulSet asks for {replicas} workers"
        );
        self.desired = Some(replicas);
        if matches!(self.job, Job::Running(_))
            && !self.generation_broken
            && self.rescale.is_none()
            && self.workers_differ()
        {
            self.begin_rescale(Cause::Replicas, Instant::now());
        }
        self.advance_rescale();
    }

    /// `weir ctl rescale N`: on Kubernetes the StatefulSet's scale is
    /// patched in a task (answered with [`Msg::Scaled`]); elsewhere the
    /// coordinator cannot start workers, and says so.
    pub(super) fn rescale_requested(
        &mut self,
        workers: u32,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    ) {
        if workers == 0 {
            let _ = reply.send(Err(AdminError::Invalid(
                "a job runs on at least one worker (to pause it, stop it with a checkpoint)".into(),
            )));
            return;
        }
        let Some(set) = self.config.worker_set.clone() else {
            let _ = reply.send(Err(AdminError::Conflict(
                "the coordinator does not run with --kubernetes, so it cannot start or stop \
                 workers: start `weir worker` processes or stop some (SIGTERM); each join or \
                 leave rescales the job from a fresh checkpoint"
                    .into(),
            )));
            return;
        };
        let mailbox = self.mailbox.clone();
        tokio::spawn(async move {
            let result = set.scale(workers).await;
            let _ = mailbox
                .send(Msg::Scaled {
                    workers,
                    result,
                    reply,
                })
                .await;
        });
    }

    pub(super) fn scaled(
        &mut self,
        workers: u32,
        result: Result<(), KubeError>,
    ) -> Result<api::JobStatus, AdminError> {
        match result {
            Ok(()) => {
                tracing::info!(workers, "scaled the workers' StatefulSet");
                // The watch will say so too; the status shows it at once.
                self.replicas_seen(ReplicasSeen::Replicas(workers));
                Ok(self.job_status())
            }
            Err(e) if e.retryable() => Err(AdminError::TryAgain(e.to_string())),
            Err(e) => Err(AdminError::Conflict(e.to_string())),
        }
    }

    /// What the job status shows of rescaling.
    pub(super) fn rescale_status(&self) -> (String, Vec<api::RescaleInfo>) {
        (
            self.rescale
                .as_ref()
                .map_or_else(String::new, |r| r.phase.name().to_owned()),
            self.rescales.iter().cloned().collect(),
        )
    }
}

#[cfg(test)]
mod tests;
