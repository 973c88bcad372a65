//! The job's lifecycle: deploying generations over the live workers,
//! their failures and end, and stop and resume.

use super::*;
use weir_common::checkpoint::CheckpointRef;
use weir_common::spec::StartFrom;

impl Actor {
    pub(super) fn partitions_found(&mut self, names: Vec<String>) {
        if names == self.config.partitions {
            return;
        }
        if names.len() < self.config.partitions.len()
            || names[..self.config.partitions.len()] != self.config.partitions[..]
        {
            tracing::warn!(
                before = self.config.partitions.len(),
                now = names.len(),
                "the input's partitions changed other than by new ones being added; keeping the old ones"
            );
            return;
        }
        tracing::info!(
            before = self.config.partitions.len(),
            now = names.len(),
            "new input partitions; redeploying to read them"
        );
        self.config.partitions = names;
        match self.job {
            Job::Running(_) => self.deploy_or_wait(),
            // The recorded generation does not read them: not adopted.
            Job::Adopting(_) => {
                self.job = Job::Waiting;
                self.deploy_or_wait();
            }
            _ => {}
        }
    }

    pub(super) fn generation_mut(&mut self) -> Option<&mut Generation> {
        match &mut self.job {
            Job::Waiting => None,
            Job::Adopting(a) => Some(&mut a.generation),
            Job::Running(g) | Job::Finished(g) | Job::Stopped(g) => Some(g),
            Job::Restarting { failed, .. } => Some(failed),
            Job::Failed { generation, .. } => Some(generation),
        }
    }

    pub(super) fn maybe_finished(&mut self) {
        let Job::Running(g) = &self.job else { return };
        let all = g.assignment.workers.iter().all(|slot| {
            self.workers
                .get(&slot.worker_id)
                .is_some_and(|w| w.state == pb::DeploymentState::Finished)
        });
        if all {
            tracing::info!(
                generation = g.number,
                "job finished: every input read, every window written"
            );
            let g = g.clone();
            self.job = Job::Finished(g);
            self.mark_finished();
            self.consecutive_failures = 0;
        }
    }

    /// A worker reported its deployment of the running generation failed:
    /// the job fails at once on a deterministic error, redeploys without
    /// counting when the worker lost a peer, and otherwise follows the
    /// restart strategy (`restart` in the spec). Later reports of the same
    /// generation change nothing.
    pub(super) fn generation_failed(&mut self, worker: &str, error: String, kind: pb::FailureKind) {
        let Job::Running(g) = &self.job else { return };
        let restart = &self.config.spec.restart;
        let give_up = match kind {
            pb::FailureKind::Deterministic => {
                tracing::error!(generation = g.number, %worker, %error, "generation failed on an error that a retry cannot cure; the job fails");
                true
            }
            pb::FailureKind::PeerLost => {
                tracing::warn!(generation = g.number, %worker, %error, "a worker lost a peer; redeploying (not a failure of the job)");
                false
            }
            pb::FailureKind::Transient => {
                if g.started.elapsed() >= restart.reset_after.std() {
                    self.consecutive_failures = 0;
                }
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                tracing::error!(generation = g.number, %worker, %error, failures = self.consecutive_failures, "generation failed");
                restart.gives_up_after(self.consecutive_failures)
            }
        };
        if give_up {
            let generation = g.clone();
            self.cancel_generation(generation.number, &generation.assignment);
            self.job = Job::Failed {
                generation,
                error: format!("worker {worker}: {error}"),
            };
            return;
        }
        let backoff = match kind {
            pb::FailureKind::PeerLost => restart.initial_backoff.std(),
            _ => restart.backoff(self.consecutive_failures),
        };
        self.job = Job::Restarting {
            failed: g.clone(),
            at: Instant::now() + backoff,
        };
    }

    /// Deploys a new generation over the live workers, or waits for enough.
    /// `min_workers` only holds back the first deployment; after that the
    /// job runs on whatever workers are live (at least one).
    pub(super) fn deploy_or_wait(&mut self) {
        let needed = if self.last_generation == 0 {
            self.config.min_workers.max(1)
        } else {
            1
        };
        let active = self.active_workers().count();
        if active < needed {
            if let Job::Running(g) | Job::Restarting { failed: g, .. } = &self.job {
                let g = g.clone();
                self.cancel_generation(g.number, &g.assignment);
                tracing::warn!(live = active, needed, "too few workers; waiting");
            }
            self.job = Job::Waiting;
            self.release_leaving();
            return;
        }
        let members: Vec<Member> = self
            .active_workers()
            .map(|(id, w)| Member {
                id: id.clone(),
                data_address: w.data_address.clone(),
            })
            .collect();
        let mut assignment = assign(
            &members,
            self.config.partitions.len(),
            self.config.spec.state.max_parallelism,
        );
        assignment.partition_names = self.config.partitions.clone();
        match self.restorable.back() {
            // State and positions from the latest completed checkpoint.
            Some(r) => {
                // By name: partitions found since (Pulsar) start as
                // without a checkpoint.
                assignment.resume = self
                    .config
                    .partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(input, name)| {
                        let p = r.metadata.positions.iter().find(|p| &p.name == name)?;
                        p.position.map(|position| pb::PartitionPoint {
                            input: input as u32,
                            position: Some(position),
                            watermark: p.watermark,
                        })
                    })
                    .collect();
                assignment.restore_checkpoint = r.id;
                assignment.restore_metadata = r.key.clone();
                tracing::info!(
                    checkpoint = r.id,
                    "the new generation restores a checkpoint"
                );
            }
            // The first generation of a run told where to start; later
            // ones without a checkpoint start where the subscription is
            // (Pulsar) or from the beginning.
            None if self.last_generation == 0 => {
                assignment.start_from = match self.config.spec.source.start_from {
                    StartFrom::Checkpoint => pb::StartFrom::Default,
                    StartFrom::Earliest => pb::StartFrom::Earliest,
                    StartFrom::Latest => pb::StartFrom::Latest,
                } as i32;
            }
            None => {}
        }
        if self.last_generation == 0 {
            self.fix_generator_start();
        }
        self.last_generation += 1;
        let number = self.last_generation;
        let spec_yaml = match self.spec_for_generation() {
            Ok(y) => y,
            Err(e) => {
                self.job = Job::Failed {
                    generation: Generation::new(number, assignment),
                    error: format!("cannot serialize the job spec: {e}"),
                };
                return;
            }
        };
        tracing::info!(
            generation = number,
            workers = assignment.workers.len(),
            partitions = assignment.partition_owner.len(),
            "deploying"
        );
        let deploy = pb::Deploy {
            generation: number,
            spec_yaml,
            assignment: Some(assignment.clone()),
        };
        let mut unreachable = Vec::new();
        for (id, w) in self
            .workers
            .iter_mut()
            .filter(|(_, w)| w.presence == Presence::Active)
        {
            w.state = pb::DeploymentState::Unspecified;
            w.metrics = None;
            let command = pb::CoordinatorCommand {
                command: Some(pb::coordinator_command::Command::Deploy(deploy.clone())),
            };
            if w.commands.try_send(Ok(command)).is_err() {
                unreachable.push(id.clone());
            }
        }
        self.record_deployed(number, &assignment);
        self.job = Job::Running(Generation::new(number, assignment));
        self.generation_broken = false;
        self.release_leaving();
        for id in unreachable {
            tracing::warn!(worker = %id, "worker lost: cannot send it the deployment");
            self.remove(&id);
        }
    }

    /// Releases the leaving workers: the running generation (if any) does
    /// without them, and what they held is in the checkpoint it restored.
    pub(super) fn release_leaving(&mut self) {
        let restored = match &self.job {
            Job::Running(g) => g.assignment.restore_checkpoint,
            _ => 0,
        };
        let leaving: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.presence == Presence::Leaving)
            .map(|(id, _)| id.clone())
            .collect();
        for id in leaving {
            self.release(&id, restored);
        }
    }

    /// A realtime generator without a fixed start starts now, at the first
    /// deployment, and every later generation replays the same stream.
    pub(super) fn fix_generator_start(&mut self) {
        if let Some(g) = self.config.spec.source.generator.as_mut() {
            if g.realtime && g.start_ms.is_none() {
                g.start_ms = Some(now_ms());
            }
        }
    }

    /// The spec as sent to workers.
    pub(super) fn spec_for_generation(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(&self.config.spec)
    }

    pub(super) fn cancel_generation(&mut self, generation: u64, assignment: &pb::Assignment) {
        for slot in &assignment.workers {
            if let Some(w) = self.workers.get(&slot.worker_id) {
                let command = pb::CoordinatorCommand {
                    command: Some(pb::coordinator_command::Command::Cancel(pb::Cancel {
                        generation,
                    })),
                };
                let _ = w.commands.try_send(Ok(command));
            }
        }
    }

    pub(super) fn stop(&mut self) -> Result<api::JobStatus, AdminError> {
        match &self.job {
            Job::Running(g) | Job::Restarting { failed: g, .. } => {
                let g = g.clone();
                tracing::info!(generation = g.number, "stopping the job");
                self.cancel_generation(g.number, &g.assignment);
                self.job = Job::Stopped(g);
            }
            Job::Adopting(a) => {
                let g = a.generation.clone();
                tracing::info!(
                    generation = g.number,
                    "stopping the job before adopting its generation"
                );
                self.cancel_generation(g.number, &g.assignment);
                self.job = Job::Stopped(g);
            }
            Job::Waiting => {
                self.job = Job::Stopped(Generation::new(
                    self.last_generation,
                    pb::Assignment::default(),
                ))
            }
            Job::Stopped(_) => {}
            Job::Finished(_) => {
                return Err(AdminError::Conflict(
                    "the job has finished; there is nothing to stop".into(),
                ))
            }
            Job::Failed { .. } => {
                return Err(AdminError::Conflict(
                    "the job has failed; there is nothing to stop".into(),
                ))
            }
        }
        Ok(self.job_status())
    }

    /// Whether the job can be resumed now.
    fn resumable(&self) -> Result<(), AdminError> {
        match &self.job {
            Job::Stopped(_) | Job::Failed { .. } => Ok(()),
            Job::Running(_) | Job::Restarting { .. } | Job::Waiting | Job::Adopting(_) => Err(
                AdminError::Conflict("the job is running; stop it before resuming".into()),
            ),
            Job::Finished(_) => Err(AdminError::Conflict(
                "the job has finished; there is nothing to resume".into(),
            )),
        }
    }

    /// Resumes from the checkpoint `from` names: its metadata is read from
    /// the store in a task, which answers with
    /// [`Msg::ResumeFromRead`]; the job resumes then.
    pub(super) fn resume_from(
        &mut self,
        from: &str,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    ) {
        let named = self
            .resumable()
            .and_then(|()| {
                CheckpointRef::parse(from, &self.config.spec.name).map_err(AdminError::Invalid)
            })
            .and_then(|named| match &named.store {
                Some(store) if !store.same_as(self.store.location()) => {
                    Err(AdminError::Invalid(format!(
                        "`{from}` is in the store {store}, but the job's checkpoint store is {}: \
                         a job restores from its own store",
                        self.store.location()
                    )))
                }
                _ => Ok(named),
            });
        let named = match named {
            Ok(named) => named,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let (store, tx) = (self.store.clone(), self.mailbox.clone());
        let spec_hash = self.metadata_context.spec_hash.clone();
        tokio::spawn(async move {
            let result = crate::restore::read_store(&store, &spec_hash, Some(named.id))
                .await
                .map_err(|e| e.to_string())
                .and_then(|state| {
                    state
                        .restore
                        .ok_or_else(|| format!("checkpoint {} is not in the store", named.id))
                });
            let _ = tx.send(Msg::ResumeFromRead { result, reply }).await;
        });
    }

    /// The checkpoint a resume named was read: the job resumes from it
    /// alone (no falling back to others: the user named this one).
    pub(super) fn resume_from_read(
        &mut self,
        result: Result<RestorePoint, String>,
    ) -> Result<api::JobStatus, AdminError> {
        self.resumable()?;
        let point = result.map_err(AdminError::Invalid)?;
        tracing::info!(
            checkpoint = point.id,
            "resuming the job from the checkpoint it was given"
        );
        self.restorable = VecDeque::from([point]);
        self.resume()
    }

    pub(super) fn resume(&mut self) -> Result<api::JobStatus, AdminError> {
        match &self.job {
            Job::Stopped(_) | Job::Failed { .. } => {
                tracing::info!(
                    "resuming the job from its latest completed checkpoint (what was written is not written again)"
                );
                self.consecutive_failures = 0;
                self.job = Job::Waiting;
                self.deploy_or_wait();
                Ok(self.job_status())
            }
            Job::Running(_) | Job::Restarting { .. } | Job::Waiting | Job::Adopting(_) => Err(
                AdminError::Conflict("the job is running; stop it before resuming".into()),
            ),
            Job::Finished(_) => Err(AdminError::Conflict(
                "the job has finished; there is nothing to resume".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor with workers registered, and what each is sent.
    fn actor(
        workers: &[&str],
    ) -> (
        Actor,
        Vec<mpsc::Receiver<Result<pb::CoordinatorCommand, Status>>>,
    ) {
        let spec = JobSpec::default();
        let store = weir_common::checkpoint::CheckpointStore::local(
            &std::env::temp_dir().join("weir-unused"),
            "job",
        );
        let mut actor = Actor::new(
            CoordinatorConfig::new(spec, vec!["generator-0".into()]),
            super::super::CheckpointSetup {
                store,
                last: 0,
                restorable: Vec::new(),
            },
            mpsc::channel(1).0,
        );
        let mut inboxes = Vec::new();
        for (conn, id) in workers.iter().enumerate() {
            let (tx, rx) = mpsc::channel(64);
            actor.connected(
                pb::Register {
                    worker_id: (*id).into(),
                    data_address: format!("127.0.0.1:{}", 1000 + conn),
                    ..Default::default()
                },
                conn as u64,
                tx,
            );
            inboxes.push(rx);
        }
        (actor, inboxes)
    }

    fn cancels(inbox: &mut mpsc::Receiver<Result<pb::CoordinatorCommand, Status>>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(Ok(c)) = inbox.try_recv() {
            if let Some(pb::coordinator_command::Command::Cancel(c)) = c.command {
                out.push(c.generation);
            }
        }
        out
    }

    #[test]
    fn a_failed_generation_restarts_after_a_backoff_and_counts_once() {
        let (mut a, mut inboxes) = actor(&["w1", "w2"]);
        a.deploy_or_wait();
        assert!(matches!(&a.job, Job::Running(g) if g.number == 1));
        a.generation_failed("w1", "disk full".into(), pb::FailureKind::Transient);
        let Job::Restarting { failed, at } = &a.job else {
            panic!("restarting, not {}", a.job.name());
        };
        assert_eq!(failed.number, 1);
        assert!(*at > Instant::now());
        assert_eq!(a.job.name(), "restarting");
        // The other worker of the same generation fails too: one failure.
        a.generation_failed("w2", "peer gone".into(), pb::FailureKind::PeerLost);
        assert_eq!(a.consecutive_failures, 1);
        // Stopping while restarting cancels the failed generation.
        a.stop().expect("stops");
        assert!(matches!(&a.job, Job::Stopped(g) if g.number == 1));
        assert_eq!(cancels(&mut inboxes[0]), vec![1]);
        // Resuming deploys generation 2.
        a.resume().expect("resumes");
        assert!(matches!(&a.job, Job::Running(g) if g.number == 2));
    }

    #[test]
    fn infrastructure_failures_never_fail_the_job_by_default_with_a_capped_delay() {
        let (mut a, _inboxes) = actor(&["w1"]);
        for n in 1..=20u64 {
            a.deploy_or_wait();
            assert!(matches!(&a.job, Job::Running(g) if g.number == n));
            a.generation_failed("w1", format!("failure {n}"), pb::FailureKind::Transient);
            let Job::Restarting { at, .. } = &a.job else {
                panic!("restarting, not {}", a.job.name());
            };
            assert!(*at <= Instant::now() + Duration::from_secs(60));
        }
        assert_eq!(a.consecutive_failures, 20);
    }

    #[test]
    fn failures_beyond_max_attempts_fail_the_job() {
        let (mut a, _inboxes) = actor(&["w1"]);
        a.config.spec.restart.max_attempts = Some(4);
        for n in 1..=5u64 {
            a.deploy_or_wait();
            assert!(matches!(&a.job, Job::Running(g) if g.number == n));
            a.generation_failed("w1", format!("failure {n}"), pb::FailureKind::Transient);
        }
        let Job::Failed { error, .. } = &a.job else {
            panic!("failed, not {}", a.job.name());
        };
        assert!(error.contains("failure 5"), "{error}");
        assert!(a.stop().is_err(), "nothing to stop");
    }

    #[test]
    fn a_deterministic_error_fails_the_job_at_once_and_a_lost_peer_never() {
        let (mut a, mut inboxes) = actor(&["w1", "w2"]);
        for n in 1..=10u64 {
            a.deploy_or_wait();
            assert!(matches!(&a.job, Job::Running(g) if g.number == n));
            a.generation_failed("w2", "cannot reach w1".into(), pb::FailureKind::PeerLost);
            assert_eq!(a.job.name(), "restarting");
        }
        assert_eq!(a.consecutive_failures, 0, "a lost peer is not counted");
        a.deploy_or_wait();
        a.generation_failed(
            "w1",
            "table does not match".into(),
            pb::FailureKind::Deterministic,
        );
        let Job::Failed { error, generation } = &a.job else {
            panic!("failed, not {}", a.job.name());
        };
        assert!(error.contains("w1: table does not match"), "{error}");
        assert_eq!(generation.number, 11);
        assert!(
            cancels(&mut inboxes[1]).contains(&11),
            "the generation is cancelled"
        );
    }

    #[test]
    fn membership_changes_redeploy_once_settled() {
        let (mut a, _inboxes) = actor(&["w1"]);
        a.deploy_or_wait();
        a.membership = Membership::Settled;
        a.remove("w1");
        assert!(matches!(a.membership, Membership::Changing { .. }));
        // Not settled yet: nothing happens.
        a.tick();
        assert!(matches!(&a.job, Job::Running(g) if g.number == 1));
        // Settled: no worker left, the job waits.
        a.membership = Membership::Changing {
            first: Instant::now() - a.config.settle,
            last: Instant::now() - a.config.settle,
        };
        a.tick();
        assert!(matches!(a.job, Job::Waiting));
        assert_eq!(a.membership, Membership::Settled);
    }
}
