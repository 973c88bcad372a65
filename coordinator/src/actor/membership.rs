//! Membership: workers registering, their events, and the ones lost to a
//! closed stream or a missed heartbeat.

use super::*;

impl Actor {
    pub(super) fn connected(&mut self, register: pb::Register, conn: u64, commands: Commands) {
        if self.workers.contains_key(&register.worker_id) {
            // Registered again: its deployment ended with its old stream.
            self.lost_from_generation(&register.worker_id);
        }
        let keep = self.keeps(&register);
        let registered = pb::CoordinatorCommand {
            command: Some(pb::coordinator_command::Command::Registered(
                pb::Registered {
                    heartbeat_interval_ms: u32::try_from(
                        self.config.heartbeat_interval.as_millis(),
                    )
                    .unwrap_or(u32::MAX),
                    lease_ms: u32::try_from(self.config.lease().as_millis()).unwrap_or(u32::MAX),
                    term: self.term,
                    keep,
                },
            )),
        };
        if commands.try_send(Ok(registered)).is_err() {
            return;
        }
        tracing::info!(worker = %register.worker_id, address = %register.data_address, version = %register.version, keeps = keep, "worker registered");
        self.workers.insert(
            register.worker_id,
            Worker {
                data_address: register.data_address,
                conn,
                commands,
                last_seen: Instant::now(),
                metrics: None,
                state: pb::DeploymentState::Unspecified,
                presence: Presence::Active,
                backpressure: BackpressureMeter::default(),
            },
        );
        self.membership_changed();
    }

    pub(super) fn remove(&mut self, id: &str) {
        if self.workers.remove(id).is_some() {
            self.lost_from_generation(id);
            self.membership_changed();
        }
    }

    /// Workers came or went: a new generation once it has been quiet for
    /// `settle` (the first change is kept, for how long a rescale took).
    pub(super) fn membership_changed(&mut self) {
        let now = Instant::now();
        let first = match self.membership {
            Membership::Changing { first, .. } => first,
            Membership::Settled => now,
        };
        self.membership = Membership::Changing { first, last: now };
    }

    /// A worker of the running generation is gone: the generation cannot
    /// take another checkpoint.
    fn lost_from_generation(&mut self, id: &str) {
        match &mut self.job {
            Job::Running(g) if g.assignment.workers.iter().any(|s| s.worker_id == id) => {
                self.generation_broken = true;
            }
            Job::Adopting(a) => a.lost(id),
            _ => {}
        }
    }

    /// Workers that stay (not leaving).
    pub(super) fn active_workers(&self) -> impl Iterator<Item = (&String, &Worker)> {
        self.workers
            .iter()
            .filter(|(_, w)| w.presence == Presence::Active)
    }

    /// A worker was asked to stop: it leaves once a checkpoint holds its
    /// state and a generation without it runs (at once when no
    /// generation runs).
    fn leaving(&mut self, id: &str, reason: &str) {
        let Some(worker) = self.workers.get_mut(id) else {
            return;
        };
        if worker.presence == Presence::Leaving {
            return;
        }
        worker.presence = Presence::Leaving;
        if let Job::Adopting(a) = &mut self.job {
            // It will not come back with the generation.
            a.lost(id);
        }
        let running = matches!(&self.job, Job::Running(g) if g.assignment.workers.iter().any(|s| s.worker_id == id));
        if !running {
            tracing::info!(worker = %id, %reason, "worker leaving; it runs nothing, so it goes at once");
            self.release(id, 0);
            return;
        }
        tracing::info!(worker = %id, %reason, "worker leaving: it goes once a checkpoint holds its state and the job runs without it");
        self.membership_changed();
    }

    /// Lets a leaving worker go; it is no longer a member.
    pub(super) fn release(&mut self, id: &str, checkpoint: u64) {
        if let Some(w) = self.workers.remove(id) {
            let release = pb::CoordinatorCommand {
                command: Some(pb::coordinator_command::Command::Release(pb::Release {
                    checkpoint,
                })),
            };
            let _ = w.commands.try_send(Ok(release));
            tracing::info!(worker = %id, checkpoint, "released a leaving worker");
        }
    }

    pub(super) fn event(&mut self, id: &str, conn: u64, event: pb::worker_event::Event) {
        let current = self.job.generation().map(|g| g.number);
        let Some(worker) = self.workers.get_mut(id).filter(|w| w.conn == conn) else {
            return;
        };
        worker.last_seen = Instant::now();
        match event {
            pb::worker_event::Event::Register(_) => {}
            pb::worker_event::Event::Heartbeat(h) => {
                if let Some(m) = h.metrics.filter(|m| Some(m.generation) == current) {
                    let now = worker.last_seen;
                    worker
                        .backpressure
                        .observe(now, m.generation, m.source_wait_ms, m.sources);
                    worker.metrics = Some(m);
                }
                // The lease goes on. A full mailbox holds other commands,
                // which renew it as well.
                let keepalive = pb::CoordinatorCommand {
                    command: Some(pb::coordinator_command::Command::Keepalive(
                        pb::Keepalive {},
                    )),
                };
                let _ = worker.commands.try_send(Ok(keepalive));
            }
            pb::worker_event::Event::InputEnded(e) => {
                if Some(e.generation) == current {
                    self.input_ended(e.input);
                }
            }
            pb::worker_event::Event::WindowsClosed(e) => {
                if Some(e.generation) == current {
                    self.windows_closed(id, e.through);
                }
            }
            pb::worker_event::Event::Leaving(l) => self.leaving(id, &l.reason),
            pb::worker_event::Event::CheckpointAck(a) => self.checkpoint_ack(id, a),
            pb::worker_event::Event::CheckpointDeclined(d) => self.checkpoint_declined(id, d),
            pb::worker_event::Event::Report(r) => {
                if Some(r.generation) != current {
                    return;
                }
                let state = pb::DeploymentState::try_from(r.state)
                    .unwrap_or(pb::DeploymentState::Unspecified);
                if let Job::Adopting(a) = &mut self.job {
                    // It ended while no leader was there: deployed anew.
                    if state != pb::DeploymentState::Running {
                        a.lost(id);
                    }
                    return;
                }
                worker.state = state;
                if let Some(m) = &r.metrics {
                    worker.metrics = Some(m.clone());
                }
                if let (Some(m), true) = (r.metrics, state != pb::DeploymentState::Running) {
                    if let Some(g) = self.generation_mut() {
                        g.final_metrics.insert(id.to_owned(), m);
                    }
                }
                match state {
                    pb::DeploymentState::Running => self.advance_rescale(),
                    pb::DeploymentState::Finished => self.maybe_finished(),
                    pb::DeploymentState::Failed => {
                        if r.unrestorable_checkpoint != 0 {
                            self.unrestorable(r.unrestorable_checkpoint, id, &r.error);
                        }
                        let kind = pb::FailureKind::try_from(r.failure)
                            .unwrap_or(pb::FailureKind::Transient);
                        self.generation_failed(id, r.error, kind)
                    }
                    _ => {}
                }
            }
        }
    }
}
