//! The actor's side of the raft group: carrying on from the group's record
//! when this coordinator becomes leader, and recording what changes in it
//! (lifecycle, generations, rescales; checkpoints are recorded as they
//! complete, in `checkpointing.rs`).
//!
//! Records other than a checkpoint's are sent without waiting (the actor
//! never waits on I/O): the recorder writes them in order, and one that
//! cannot be written is logged. What a new leader misses that way is
//! history, not a guarantee: the job's output depends only on the
//! completed checkpoints, which are recorded before the workers hear of
//! them.

use prost::Message as _;
use weir_proto::admin as api;
use weir_proto::cluster as pb;
use weir_raft::{Command, JobRecord, Lifecycle, RescaleRecord};

use super::{Actor, Generation, Job};
use crate::raft_link::RaftLink;
use crate::recorder::Recorder;

impl Actor {
    /// Takes over from the group's record: generations go on after the
    /// last one recorded, the rescale history is kept, and a job that was
    /// stopped, failed or finished stays so; a running one is adopted if
    /// its workers come back with it, and else deployed again from the
    /// latest checkpoint (`adopt.rs`).
    pub(super) fn carry_on(&mut self, link: RaftLink, recorder: Option<Recorder>) {
        let record = link.record();
        self.term = link.term();
        // One number is left out after a generation that may run: its
        // leader may have deployed the next one and died before recording
        // it (workers that register say so, but not all may).
        self.last_generation = match record.lifecycle {
            Lifecycle::Running | Lifecycle::Restarting => record.generation.saturating_add(1),
            _ => record.generation,
        };
        self.rescales = record.rescales.iter().rev().map(rescale_info).collect();
        self.job = job_of(&record, self.config.lease());
        self.recorded_lifecycle = Some((record.lifecycle, record.error.clone()));
        tracing::info!(
            term = self.term,
            generation = record.generation,
            lifecycle = ?record.lifecycle,
            checkpoints = record.checkpoints.len(),
            "carrying on from the raft group's record"
        );
        self.raft = Some(link);
        self.recorder = recorder;
    }

    /// Records the job's lifecycle when it changed since it was last
    /// recorded (after every message and tick).
    pub(super) fn record_lifecycle(&mut self) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let now = lifecycle_of(&self.job);
        if self.recorded_lifecycle.as_ref() != Some(&now) {
            recorder.record(Command::SetLifecycle {
                state: now.0,
                error: now.1.clone(),
            });
            self.recorded_lifecycle = Some(now);
        }
    }

    pub(super) fn record_deployed(&self, generation: u64, assignment: &pb::Assignment) {
        if let Some(recorder) = &self.recorder {
            recorder.record(Command::Deployed {
                generation,
                assignment: assignment.encode_to_vec(),
            });
        }
    }

    pub(super) fn record_rescale(&self, r: &api::RescaleInfo) {
        if let Some(recorder) = &self.recorder {
            recorder.record(Command::Rescaled(RescaleRecord {
                from: r.from,
                to: r.to,
                cause: r.cause.clone(),
                checkpoint: r.checkpoint,
                generation: r.generation,
                started_ms: r.started_ms,
                duration_ms: r.duration_ms,
                outcome: r.outcome.clone(),
            }));
        }
    }

    /// The raft group as the admin API shows it.
    pub(super) fn raft_status(&self) -> Option<api::RaftStatus> {
        self.raft.as_ref().map(RaftLink::status)
    }
}

fn lifecycle_of(job: &Job) -> (Lifecycle, String) {
    match job {
        Job::Waiting => (Lifecycle::Waiting, String::new()),
        // As recorded: it runs, unless it is replaced.
        Job::Adopting(_) => (Lifecycle::Running, String::new()),
        Job::Running(_) => (Lifecycle::Running, String::new()),
        Job::Restarting { .. } => (Lifecycle::Restarting, String::new()),
        Job::Finished(_) => (Lifecycle::Finished, String::new()),
        Job::Stopped(_) => (Lifecycle::Stopped, String::new()),
        Job::Failed { error, .. } => (Lifecycle::Failed, error.clone()),
    }
}

/// The job as the record leaves it: ended states stay; a running
/// generation waits to be adopted (for at most `lease`, after which its
/// workers have aborted it); anything else is deployed again.
fn job_of(record: &JobRecord, lease: std::time::Duration) -> Job {
    let generation = || {
        let assignment = pb::Assignment::decode(record.assignment.as_slice()).unwrap_or_default();
        Generation::new(record.generation, assignment)
    };
    match record.lifecycle {
        Lifecycle::Finished => Job::Finished(generation()),
        Lifecycle::Stopped => Job::Stopped(generation()),
        Lifecycle::Failed => Job::Failed {
            generation: generation(),
            error: record.error.clone(),
        },
        Lifecycle::Running if record.generation != 0 => {
            let g = generation();
            if g.assignment.workers.is_empty() {
                Job::Waiting
            } else {
                Job::Adopting(super::adopt::Adoption::new(g, lease))
            }
        }
        Lifecycle::Waiting | Lifecycle::Running | Lifecycle::Restarting => Job::Waiting,
    }
}

fn rescale_info(r: &RescaleRecord) -> api::RescaleInfo {
    api::RescaleInfo {
        from: r.from,
        to: r.to,
        cause: r.cause.clone(),
        checkpoint: r.checkpoint,
        generation: r.generation,
        started_ms: r.started_ms,
        duration_ms: r.duration_ms,
        outcome: r.outcome.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_jobs_stay_ended_and_others_are_deployed_again() {
        let mut record = JobRecord {
            generation: 7,
            assignment: pb::Assignment {
                partition_names: vec!["p0".into()],
                ..Default::default()
            }
            .encode_to_vec(),
            ..Default::default()
        };
        for (lifecycle, expect) in [
            (Lifecycle::Running, "waiting"),
            (Lifecycle::Restarting, "waiting"),
            (Lifecycle::Waiting, "waiting"),
            (Lifecycle::Stopped, "stopped"),
            (Lifecycle::Finished, "finished"),
            (Lifecycle::Failed, "failed"),
        ] {
            record.lifecycle = lifecycle;
            record.error = "boom".into();
            let job = job_of(&record, std::time::Duration::from_secs(5));
            assert_eq!(job.name(), expect, "{lifecycle:?}");
            if let Some(g) = job.generation() {
                assert_eq!(g.number, 7);
                assert_eq!(g.assignment.partition_names, vec!["p0".to_owned()]);
            }
            if let Job::Failed { error, .. } = &job {
                assert_eq!(error, "boom");
            }
            let (back, _) = lifecycle_of(&job);
            if expect != "waiting" {
                assert_eq!(back, lifecycle);
            }
        }
    }

    #[test]
    fn a_running_generation_with_workers_waits_to_be_adopted() {
        let assignment = pb::Assignment {
            workers: vec![pb::WorkerSlot {
                worker_id: "w1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut record = JobRecord {
            generation: 3,
            assignment: assignment.encode_to_vec(),
            lifecycle: Lifecycle::Running,
            ..Default::default()
        };
        let job = job_of(&record, std::time::Duration::from_secs(5));
        assert_eq!(job.name(), "adopting");
        assert_eq!(job.generation().map(|g| g.number), Some(3));
        assert_eq!(
            lifecycle_of(&job).0,
            Lifecycle::Running,
            "recorded as it was"
        );
        record.lifecycle = Lifecycle::Restarting;
        assert_eq!(
            job_of(&record, std::time::Duration::from_secs(5)).name(),
            "waiting"
        );
    }
}
