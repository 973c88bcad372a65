//! The actor's checkpoint work: triggering, acks, and completing through
//! the store. The state machine is [`crate::checkpoints`]; store writes run
//! in tasks that answer with [`Msg::CheckpointWritten`].

use std::collections::BTreeSet;

use prost::Message;
use tokio::time::Instant;
use weir_common::checkpoint::{metadata_key, CheckpointStore, LATEST};
use weir_proto::admin as api;
use weir_proto::checkpoint as ckpt;
use weir_proto::cluster as pb;

use super::{now_ms, Actor, AdminError, Job, Msg, StopAfter, FINAL_CHECKPOINT_PATIENCE};
use crate::checkpoints::{Action, Requested};
use crate::restore::RestorePoint;

impl Actor {
    /// Every tick: a checkpoint that is due, or one that timed out.
    pub(super) fn tick_checkpoints(&mut self, now: Instant) {
        let running: Option<(u64, Vec<String>)> = match &self.job {
            Job::Running(g) => {
                let ids: Vec<String> = g
                    .assignment
                    .workers
                    .iter()
                    .map(|w| w.worker_id.clone())
                    .collect();
                let all_running = ids.iter().all(|id| {
                    self.workers
                        .get(id)
                        .is_some_and(|w| w.state == pb::DeploymentState::Running)
                });
                all_running.then_some((g.number, ids))
            }
            _ => None,
        };
        let action = self.checkpoints.tick(
            now,
            now_ms(),
            running.as_ref().map(|(g, ids)| (*g, ids.as_slice())),
        );
        self.act(action);
        let waited_too_long = self
            .stop_after
            .is_some_and(|(_, since)| now.duration_since(since) > FINAL_CHECKPOINT_PATIENCE);
        if self.stop_after.is_some() && (!self.checkpoints.pending() || waited_too_long) {
            // The final checkpoint failed or takes too long (its completion
            // stops the job at once). Its sources have stopped reading: the
            // job stops without it.
            self.stop_after = None;
            tracing::warn!("the final checkpoint failed or takes too long (see the checkpoint list); stopping without it");
            if let Err(e) = self.stop() {
                tracing::warn!(error = %e, "cannot stop the job");
            }
        }
    }

    /// Stops the job after a final checkpoint or savepoint whose barriers
    /// stop the sources: nothing after it is read or written, so a job
    /// restored from it goes on exactly where this one stopped. A job that
    /// is not running just stops.
    pub(super) fn stop_after_checkpoint(
        &mut self,
        savepoint: bool,
    ) -> Result<api::JobStatus, AdminError> {
        if !matches!(self.job, Job::Running(_)) {
            if savepoint {
                return Err(AdminError::Conflict(format!(
                    "the job is {}: only a running job takes a savepoint",
                    self.job.name()
                )));
            }
            return self.stop();
        }
        self.checkpoints.request(Requested {
            savepoint,
            stop_sources: true,
        });
        let kind = if savepoint {
            StopAfter::Savepoint
        } else {
            StopAfter::Checkpoint
        };
        self.stop_after = Some((kind, Instant::now()));
        tracing::info!(savepoint, "stopping the job after a final checkpoint");
        Ok(self.job_status())
    }

    /// A source of the current generation read its partition to the end.
    /// Once every partition has, a checkpoint is taken at once: when it
    /// completes, the sources acknowledge their input and close, and the
    /// job finishes. (Checkpoints due meanwhile have the same effect.)
    pub(super) fn input_ended(&mut self, input: u32) {
        // While adopting: what the workers told while no leader was there.
        let g = match &mut self.job {
            Job::Running(g) => g,
            Job::Adopting(a) => &mut a.generation,
            _ => return,
        };
        let partitions = g.assignment.partition_owner.len();
        if (input as usize) >= partitions || !g.ended_inputs.insert(input) {
            return;
        }
        if g.ended_inputs.len() == partitions {
            tracing::info!(
                generation = g.number,
                "every input ended; taking the final checkpoint"
            );
            self.checkpoints.request(Requested::default());
        }
    }

    /// A worker closed windows: once every worker of the generation has
    /// closed a window no checkpoint was asked for yet, one is asked for
    /// (taken as soon as `min_pause` allows), so that the windows' rows —
    /// committed only when a checkpoint completes — appear seconds after
    /// the watermark passed them rather than up to an interval later.
    pub(super) fn windows_closed(&mut self, worker: &str, through: i64) {
        if !self.config.spec.checkpoint.on_window_close {
            return;
        }
        let g = match &mut self.job {
            Job::Running(g) => g,
            Job::Adopting(a) => &mut a.generation,
            _ => return,
        };
        let slot = g
            .closed_through
            .entry(worker.to_owned())
            .or_insert(i64::MIN);
        *slot = (*slot).max(through);
        let everywhere = g
            .assignment
            .workers
            .iter()
            .map(|w| g.closed_through.get(&w.worker_id).copied())
            .min()
            .flatten();
        if let Some(through) = everywhere.filter(|t| *t > g.closed_covered) {
            g.closed_covered = through;
            tracing::debug!(
                through,
                "windows closed on every worker; a checkpoint commits them"
            );
            self.checkpoints.output_waiting();
        }
    }

    pub(super) fn checkpoint_ack(&mut self, worker: &str, ack: pb::CheckpointAck) {
        let action = self
            .checkpoints
            .on_ack(worker, ack, &self.metadata_context, now_ms());
        self.act(action);
    }

    pub(super) fn checkpoint_declined(&mut self, worker: &str, d: pb::CheckpointDeclined) {
        tracing::warn!(%worker, checkpoint = d.checkpoint, reason = %d.reason, "checkpoint declined");
        let action = self.checkpoints.on_declined(
            d.checkpoint,
            format!("{worker}: {}", d.reason),
            Instant::now(),
        );
        self.act(action);
    }

    pub(super) fn checkpoint_written(
        &mut self,
        generation: u64,
        result: Result<Box<ckpt::CheckpointMetadata>, (u64, String)>,
    ) {
        match result {
            Ok(metadata) => {
                let id = metadata.checkpoint;
                if let Some(r) = self.checkpoints.on_written(id, Ok(()), Instant::now()) {
                    self.config.metrics.checkpoint_completed(
                        std::time::Duration::from_millis(r.duration_ms),
                        r.incremental_bytes,
                    );
                    tracing::info!(
                        checkpoint = id,
                        duration_ms = r.duration_ms,
                        bytes = r.bytes,
                        incremental_bytes = r.incremental_bytes,
                        alignment_ms = r.alignment_ms,
                        savepoint = r.savepoint,
                        store = %self.store.describe(),
                        "checkpoint completed"
                    );
                }
                let savepoint = metadata.savepoint;
                self.restorable.push_back(RestorePoint {
                    id,
                    key: metadata_key(id),
                    metadata: *metadata,
                });
                let keep = (self.config.spec.checkpoint.retention as usize).max(1);
                while self.restorable.len() > keep {
                    self.restorable.pop_front();
                }
                self.broadcast(
                    generation,
                    |checkpoint| {
                        pb::coordinator_command::Command::CheckpointCompleted(
                            pb::CheckpointCompleted {
                                generation,
                                checkpoint,
                            },
                        )
                    },
                    id,
                );
                self.rescale_checkpoint_completed(id);
                let last = match self.stop_after {
                    Some((StopAfter::Savepoint, _)) => savepoint,
                    Some((StopAfter::Checkpoint, _)) => !self.checkpoints.pending(),
                    None => false,
                };
                if last {
                    self.stop_after = None;
                    tracing::info!(
                        checkpoint = id,
                        "final checkpoint completed; stopping the job"
                    );
                    if let Err(e) = self.stop() {
                        tracing::warn!(error = %e, "cannot stop the job after its checkpoint");
                    }
                }
            }
            Err((id, e)) => {
                self.checkpoints.on_written(id, Err(e), Instant::now());
                self.act(Action::Abort { id, generation });
            }
        }
    }

    /// The job ran to its end: a new run starts from the beginning of its
    /// inputs rather than from the latest checkpoint (written in a task).
    pub(super) fn mark_finished(&self) {
        let Some(r) = self.restorable.back() else {
            return;
        };
        let (store, pointer) = (self.store.clone(), finished_pointer(r));
        tokio::spawn(async move {
            if let Err(e) = store.put(LATEST, pointer.encode_to_vec()).await {
                tracing::warn!(error = %e, "cannot mark the job finished in the checkpoint store");
            }
        });
    }

    /// [`mark_finished`](Self::mark_finished), waited for (when the
    /// coordinator shuts down).
    pub(super) async fn mark_finished_now(&self) {
        if let (Job::Finished(_), Some(r)) = (&self.job, self.restorable.back()) {
            if let Err(e) = self
                .store
                .put(LATEST, finished_pointer(r).encode_to_vec())
                .await
            {
                tracing::warn!(error = %e, "cannot mark the job finished in the checkpoint store");
            }
        }
    }

    /// A worker could not restore checkpoint `id` (an object is missing or
    /// corrupt): the next generation restores the one before, if any.
    pub(super) fn unrestorable(&mut self, id: u64, worker: &str, error: &str) {
        if self.restorable.back().map(|r| r.id) != Some(id) {
            return;
        }
        self.restorable.pop_back();
        match self.restorable.back() {
            Some(previous) => tracing::warn!(
                checkpoint = id,
                %worker,
                %error,
                fallback = previous.id,
                "a checkpoint cannot be restored; falling back to the one before"
            ),
            None => tracing::warn!(
                checkpoint = id,
                %worker,
                %error,
                "a checkpoint cannot be restored and none is left; starting from the beginning of the inputs"
            ),
        }
    }

    /// `POST /api/v1/checkpoints`: a checkpoint now (or as soon as the one
    /// in flight ends).
    pub(super) fn request_checkpoint(&mut self, savepoint: bool) -> Result<(), AdminError> {
        if !matches!(self.job, Job::Running(_)) {
            return Err(AdminError::Conflict(format!(
                "the job is {}: only a running job takes checkpoints",
                self.job.name()
            )));
        }
        self.checkpoints.request(Requested {
            savepoint,
            stop_sources: false,
        });
        Ok(())
    }

    /// A new checkpoint interval, from the next trigger on.
    pub(super) fn set_checkpoint_interval(
        &mut self,
        interval: std::time::Duration,
    ) -> Result<api::CheckpointList, AdminError> {
        let day = std::time::Duration::from_secs(86_400);
        if interval < std::time::Duration::from_millis(100) || interval > 365 * day {
            return Err(AdminError::Invalid(
                "the checkpoint interval must be between 100 ms and 365 days".into(),
            ));
        }
        self.checkpoints.set_interval(interval, Instant::now());
        self.config.spec.checkpoint.interval = weir_common::spec::Duration(interval);
        tracing::info!(?interval, "checkpoint interval changed");
        Ok(self.checkpoint_list())
    }

    pub(super) fn checkpoint_list(&self) -> api::CheckpointList {
        let checkpoints = self
            .checkpoints
            .history()
            .rev()
            .map(|r| api::CheckpointInfo {
                id: r.id,
                state: r.outcome.name().to_owned(),
                generation: r.generation,
                triggered_ms: r.triggered_ms,
                duration_ms: r.duration_ms,
                bytes: r.bytes,
                incremental_bytes: r.incremental_bytes,
                alignment_ms: r.alignment_ms,
                failure: r.failure.clone(),
                savepoint: r.savepoint,
            })
            .collect();
        let timing = self.checkpoints.timing();
        api::CheckpointList {
            checkpoints,
            store: self.store.describe(),
            interval_ms: weir_common::time::millis(timing.interval),
            completed: self.checkpoints.completed,
            failed: self.checkpoints.failures.values().sum(),
            failed_by_cause: self
                .checkpoints
                .failures
                .iter()
                .map(|(cause, n)| (cause.name().to_owned(), *n))
                .collect(),
            since_last_completed_ms: self
                .checkpoints
                .last_completed
                .map(|(_, at)| weir_common::time::millis(at.elapsed())),
            stopping_after_savepoint: matches!(self.stop_after, Some((StopAfter::Savepoint, _))),
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::None => {}
            Action::Trigger {
                id,
                generation,
                stop_sources,
            } => {
                tracing::debug!(
                    checkpoint = id,
                    generation,
                    stop_sources,
                    "triggering a checkpoint"
                );
                self.broadcast(
                    generation,
                    |checkpoint| {
                        pb::coordinator_command::Command::TriggerCheckpoint(pb::TriggerCheckpoint {
                            generation,
                            checkpoint,
                            stop_sources,
                        })
                    },
                    id,
                );
            }
            Action::Abort { id, generation } => {
                self.broadcast(
                    generation,
                    |checkpoint| {
                        pb::coordinator_command::Command::CheckpointAborted(pb::CheckpointAborted {
                            generation,
                            checkpoint,
                        })
                    },
                    id,
                );
            }
            Action::Write(mut metadata) => {
                let (store, tx) = (self.store.clone(), self.mailbox.clone());
                let retention = self.config.spec.checkpoint.retention;
                metadata.generator_start_ms = self
                    .config
                    .spec
                    .source
                    .generator
                    .as_ref()
                    .and_then(|g| g.start_ms);
                let (id, generation) = (metadata.checkpoint, metadata.generation);
                let recorder = self.recorder.clone();
                tokio::spawn(async move {
                    // In the raft group first: a leader deposed meanwhile
                    // cannot record it, and so never completes it.
                    if let Some(recorder) = recorder {
                        let pointer = weir_raft::CheckpointPointer {
                            checkpoint: id,
                            generation,
                            metadata: metadata_key(id),
                            savepoint: metadata.savepoint,
                            completed_ms: super::now_ms(),
                        };
                        let asked = std::time::Instant::now();
                        let recorded = recorder
                            .record_and_wait(weir_raft::Command::CheckpointCompleted(pointer))
                            .await;
                        tracing::info!(
                            checkpoint = id,
                            raft_ms = asked.elapsed().as_secs_f64() * 1000.0,
                            ok = recorded.is_ok(),
                            "checkpoint recorded in the raft group"
                        );
                        if let Err(e) = recorded {
                            let error =
                                format!("cannot record the checkpoint in the raft group: {e}");
                            let _ = tx
                                .send(Msg::CheckpointWritten {
                                    generation,
                                    result: Err((id, error)),
                                })
                                .await;
                            return;
                        }
                    }
                    let result = complete(&store, &metadata, retention)
                        .await
                        .map(|()| metadata)
                        .map_err(|e| (id, e));
                    let _ = tx.send(Msg::CheckpointWritten { generation, result }).await;
                });
            }
        }
    }

    /// Sends a command about checkpoint `id` to every worker of `generation`.
    fn broadcast(
        &self,
        generation: u64,
        make: impl Fn(u64) -> pb::coordinator_command::Command,
        id: u64,
    ) {
        let Some(g) = self.job.generation().filter(|g| g.number == generation) else {
            return;
        };
        for slot in &g.assignment.workers {
            if let Some(w) = self.workers.get(&slot.worker_id) {
                let command = pb::CoordinatorCommand {
                    command: Some(make(id)),
                };
                if w.commands.try_send(Ok(command)).is_err() {
                    tracing::warn!(worker = %slot.worker_id, checkpoint = id, "cannot reach a worker's control stream");
                }
            }
        }
    }
}

fn finished_pointer(r: &RestorePoint) -> ckpt::LatestPointer {
    ckpt::LatestPointer {
        checkpoint: r.id,
        metadata: r.key.clone(),
        finished: true,
    }
}

/// Completes a checkpoint in the store: its metadata, then the `latest`
/// pointer (the moment it counts as completed), then retention.
async fn complete(
    store: &CheckpointStore,
    metadata: &ckpt::CheckpointMetadata,
    retention: u32,
) -> Result<(), String> {
    let key = metadata_key(metadata.checkpoint);
    store
        .put(&key, metadata.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let pointer = ckpt::LatestPointer {
        checkpoint: metadata.checkpoint,
        metadata: key,
        finished: false,
    };
    store
        .put(LATEST, pointer.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = retain(store, metadata.checkpoint, retention).await {
        // The checkpoint is complete; what retention could not delete now
        // it deletes next time.
        tracing::warn!(error = %e, "checkpoint retention failed");
    }
    Ok(())
}

/// Keeps the newest `retention` completed checkpoints (savepoints are kept
/// until deleted by hand) and deletes the shared files none of the kept
/// ones references. Runs between a checkpoint's completion and the next
/// trigger, when no upload that a kept checkpoint needs can be running.
pub(crate) async fn retain(
    store: &CheckpointStore,
    newest: u64,
    retention: u32,
) -> Result<(), String> {
    let keys = store.list("").await.map_err(|e| e.to_string())?;
    let mut ids: Vec<u64> = keys
        .iter()
        .filter_map(|k| checkpoint_of_metadata_key(k))
        .filter(|id| *id <= newest)
        .collect();
    ids.sort_unstable();
    let keep_from = ids.len().saturating_sub(retention as usize);
    let mut referenced = BTreeSet::new();
    let mut doomed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let key = metadata_key(*id);
        let metadata = match store.get(&key).await {
            Ok(bytes) => ckpt::CheckpointMetadata::decode(bytes.as_slice()).ok(),
            Err(_) => None,
        };
        let keep = i >= keep_from || metadata.as_ref().is_some_and(|m| m.savepoint);
        match (keep, metadata) {
            (true, Some(m)) => {
                for t in &m.tasks {
                    for w in &t.windows {
                        referenced.extend(w.files.iter().map(|f| f.key.clone()));
                    }
                    for e in &t.sink_epochs {
                        referenced.extend(e.outputs.iter().map(|o| o.key.clone()));
                    }
                }
            }
            (true, None) => {
                // An unreadable checkpoint that is kept: nothing may be
                // deleted on its account that it might need.
                return Err(format!("{key} cannot be read; no files deleted"));
            }
            (false, _) => doomed.push(key),
        }
    }
    for key in doomed {
        store.delete(&key).await.map_err(|e| e.to_string())?;
    }
    for key in keys.iter().filter(|k| k.starts_with("shared/")) {
        if !referenced.contains(key.as_str()) {
            store.delete(key).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `chk-<n>/_metadata` → `n`.
pub(crate) fn checkpoint_of_metadata_key(key: &str) -> Option<u64> {
    key.strip_prefix("chk-")?
        .strip_suffix("/_metadata")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state_file: &str, staged: Option<&str>) -> pb::TaskState {
        pb::TaskState {
            worker_id: "w".into(),
            windows: vec![pb::WindowState {
                end: 60_000,
                files: vec![pb::StateFile {
                    key: state_file.into(),
                    ..Default::default()
                }],
            }],
            sink_epochs: staged
                .map(|key| pb::SinkEpoch {
                    epoch: 3,
                    outputs: vec![pb::StagedOutput {
                        output: "sensors_local".into(),
                        key: key.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// Retention keeps what the kept checkpoints reference — state files
    /// and the staged output of their uncommitted epochs — and deletes the
    /// rest.
    #[tokio::test]
    async fn retention_keeps_the_staged_output_kept_checkpoints_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::local(dir.path(), "job");
        let tasks = [
            task("shared/a.sst", None),
            task("shared/b.sst", Some("shared/i-e2-sensors_local")),
            task("shared/c.sst", Some("shared/i-e3-sensors_local")),
            task("shared/c.sst", Some("shared/i-e3-sensors_local")),
        ];
        for (i, t) in tasks.iter().enumerate() {
            let n = i as u64 + 1;
            let metadata = ckpt::CheckpointMetadata {
                checkpoint: n,
                tasks: vec![t.clone()],
                ..Default::default()
            };
            store
                .put(&metadata_key(n), metadata.encode_to_vec())
                .await
                .expect("put");
        }
        for key in [
            "shared/a.sst",
            "shared/b.sst",
            "shared/c.sst",
            "shared/i-e2-sensors_local",
            "shared/i-e3-sensors_local",
        ] {
            store.put(key, b"x".to_vec()).await.expect("put");
        }
        retain(&store, 4, 2).await.expect("retain");
        let left = store.list("").await.expect("list");
        assert_eq!(
            left,
            [
                "chk-3/_metadata",
                "chk-4/_metadata",
                "shared/c.sst",
                "shared/i-e3-sensors_local"
            ]
        );
    }
}
