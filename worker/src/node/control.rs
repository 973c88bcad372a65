//! The control stream: dialing the coordinators (a raft group's leader
//! among them), registering, heartbeating, and running what the
//! coordinator deploys.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use weir_common::error_chain::error_chain;
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::JobSpec;
use weir_common::spec::StartFrom;
use weir_proto::cluster as pb;
use weir_proto::cluster::cluster_client::ClusterClient;
use weir_proto::cluster::LEADER_KEY;
use weir_proto::convert::position_of;

use super::carried::{Carried, Running};
use super::{metrics_of, normalize_address, Shared, WorkerConfig};
use crate::checkpoint::CheckpointEvent;
use crate::deployment::{
    Deployment, DeploymentMsg, DeploymentOutcome, DeploymentPlan, FailureKind, JobError, Layout,
    RestoreFrom, Slot, Update,
};
use crate::shuffle::ShuffleRegistry;

/// Dials the coordinator until shutdown, serving one connection at a time.
/// With several coordinators (a raft group) it dials the leader a
/// follower names, or else the next one in turn; the backoff grows only
/// after every one was tried.
pub(super) async fn control_loop(
    config: WorkerConfig,
    coordinators: Vec<String>,
    advertise: String,
    registry: Arc<ShuffleRegistry>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    const FIRST: Duration = Duration::from_millis(100);
    let mut delay = FIRST;
    let mut next = 0usize;
    let mut tried = 0usize;
    let mut redirect: Option<String> = None;
    let mut carried = Carried::default();
    while !shutdown.is_cancelled() {
        let session = Session {
            config: &config,
            advertise: &advertise,
            registry: &registry,
            shared: &shared,
            shutdown: &shutdown,
        };
        let coordinator = match redirect.take() {
            Some(leader) => leader,
            None => {
                let c = coordinators[next % coordinators.len()].clone();
                next = next.wrapping_add(1);
                tried += 1;
                c
            }
        };
        let mut refusal = Refusal::None;
        let outcome = session.run(&coordinator, &mut refusal, &mut carried).await;
        if let Refusal::Unauthenticated(why) = refusal {
            // A wrong or missing cluster secret: no retry can help.
            carried
                .abort("refused by the coordinator; aborting the deployment")
                .await;
            return Err(format!(
                "the coordinator at {coordinator} refused this worker: {why}"
            ));
        }
        let named = match refusal {
            Refusal::NotLeader(leader) => Some(leader),
            _ => None,
        };
        let (wait, failure) = match outcome {
            Ok(()) => {
                delay = FIRST;
                tried = 0;
                (FIRST, None)
            }
            Err(e) => {
                if let Some(Ok(leader)) = named
                    .as_deref()
                    .map(|a| normalize_address(a, &config.tls.dial))
                {
                    if leader != coordinator {
                        redirect = Some(leader);
                    }
                }
                let wait = if redirect.is_some() || tried < coordinators.len() {
                    FIRST
                } else {
                    tried = 0;
                    let wait = delay;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    wait
                };
                (wait, Some(e))
            }
        };
        shared.connected.store(false, Relaxed);
        // Shut down, released, or leaving: nothing is kept for a leader.
        let keep = !shutdown.is_cancelled()
            && !shared.leaving.is_cancelled()
            && !shared.released.load(Relaxed);
        carried
            .connection_lost(shared.term.load(Relaxed), &shared.lease, keep)
            .await;
        if shared.leaving.is_cancelled() {
            // Released, or cut off while leaving: no new registration (it
            // would only be a member for a moment).
            shared.left.cancel();
            shutdown.cancelled().await;
            return Ok(());
        }
        // A deployment that a new leader may adopt cannot wait long.
        let wait = if carried.orphaned {
            wait.min(Duration::from_millis(250))
        } else {
            wait
        };
        match (&redirect, failure) {
            (Some(leader), Some(_)) => {
                tracing::info!(coordinator = %coordinator, leader = %leader, "this coordinator does not lead; dialing the leader")
            }
            (None, Some(e)) => {
                tracing::warn!(coordinator = %coordinator, error = %e, retry_in = ?wait, "no connection to the coordinator")
            }
            _ => {}
        }
        if !carried.wait(wait, &shutdown).await {
            break;
        }
    }
    carried
        .abort("shutting down; aborting the deployment")
        .await;
    Ok(())
}

/// Why a coordinator turned the worker away, if it did.
enum Refusal {
    None,
    /// It does not lead; the leader is at this address.
    NotLeader(String),
    /// The worker lacks the cluster's secret.
    Unauthenticated(String),
}

struct Session<'a> {
    config: &'a WorkerConfig,
    advertise: &'a str,
    registry: &'a Arc<ShuffleRegistry>,
    shared: &'a Arc<Shared>,
    shutdown: &'a CancellationToken,
}

impl Session<'_> {
    /// One connection: returns when it ends (error: why). A coordinator
    /// that does not lead its raft group refuses the registration and
    /// names the leader; one that wants another cluster secret refuses it
    /// for good (`refusal` says which).
    async fn run(
        &self,
        coordinator: &str,
        refusal: &mut Refusal,
        carried: &mut Carried,
    ) -> Result<(), String> {
        let (events, rx) = mpsc::channel::<pb::WorkerEvent>(64);
        let (generation, last_checkpoint) = carried.adoptable();
        let register = pb::WorkerEvent {
            event: Some(pb::worker_event::Event::Register(pb::Register {
                worker_id: self.config.id.clone(),
                data_address: self.advertise.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                generation,
                last_checkpoint,
            })),
        };
        // Bounded as a whole: a coordinator that accepts the connection and
        // then says nothing (frozen, or behind a cut link) is left for the
        // next one.
        let dial = async {
            let channel = self
                .config
                .tls
                .dial
                .endpoint(coordinator)
                .map_err(|e| e.to_string())?
                .connect_timeout(DIAL_PATIENCE)
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| error_chain(&e))?;
            let mut client = ClusterClient::new(self.config.secret.channel(channel));
            events.send(register).await.map_err(|e| e.to_string())?;
            client.control(ReceiverStream::new(rx)).await.map_err(|s| {
                let leader = s.metadata().get(LEADER_KEY).and_then(|v| v.to_str().ok());
                *refusal = match (s.code(), leader) {
                    (tonic::Code::Unauthenticated, _) => {
                        Refusal::Unauthenticated(s.message().to_owned())
                    }
                    (_, Some(leader)) => Refusal::NotLeader(leader.to_owned()),
                    (_, None) => Refusal::None,
                };
                s.message().to_owned()
            })
        };
        let mut dial = std::pin::pin!(tokio::time::timeout(DIAL_PATIENCE, dial));
        let mut commands = loop {
            tokio::select! {
                dialed = &mut dial => {
                    break dialed
                        .map_err(|_| format!("no answer within {DIAL_PATIENCE:?}"))??
                        .into_inner();
                }
                _ = carried.tend() => {}
            }
        };
        self.shared.connected.store(true, Relaxed);
        tracing::info!(coordinator, worker = %self.config.id, "connected to the coordinator");
        if !carried.orphaned {
            // This coordinator's lease starts with its first message.
            carried.lease_ends = None;
        }

        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        // The lease from the coordinator: a worker cut off from the
        // coordinator (or frozen, or with a frozen coordinator) stops
        // writing before its work is given to others.
        let mut lease: Option<Duration> = None;
        // When a draining deployment is given up.
        let mut abort_at: Option<tokio::time::Instant> = None;
        let mut announced_leaving = false;
        // A kept deployment that the leader has not adopted yet: its
        // writes wait (the lease stays revoked) until `Adopted` says so.
        let mut awaiting_adoption = false;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = self.shared.leaving.cancelled(), if !announced_leaving => {
                    announced_leaving = true;
                    tracing::info!("leaving: the coordinator takes a checkpoint and runs the job without this worker, then releases it");
                    let event = pb::worker_event::Event::Leaving(pb::Leaving {
                        reason: "asked to stop (SIGTERM)".into(),
                    });
                    if events.send(pb::WorkerEvent { event: Some(event) }).await.is_err() {
                        return Err("the control stream closed".to_string());
                    }
                }
                command = commands.message() => match command {
                    Ok(Some(c)) => {
                        // A message read after the lease ran out (buffered
                        // while the worker was frozen) renews nothing.
                        if carried.lease_ends.is_some_and(|end| end <= tokio::time::Instant::now()) {
                            return Err(format!(
                                "no word from the coordinator within its lease ({:?}): it may have given this worker's work to others",
                                lease.unwrap_or_default()
                            ));
                        }
                        match self.handle(c, &mut carried.current, &events).await {
                            Some(Directive::Refused { term, seen }) => {
                                return Err(format!("the coordinator leads raft term {term}, but this worker has followed a leader of term {seen}: it was deposed"));
                            }
                            Some(Directive::Registered { heartbeat: interval, lease: l, keep }) => {
                                heartbeat = tokio::time::interval(interval);
                                lease = l;
                                awaiting_adoption = self.kept_or_not(keep, carried, &events).await?;
                            }
                            // A kept deployment cannot write what it emitted
                            // (it was never adopted): aborted at once.
                            Some(Directive::AbortAt(at)) => {
                                abort_at = Some(if awaiting_adoption { tokio::time::Instant::now() } else { at });
                            }
                            Some(Directive::Deployed) => {
                                abort_at = None;
                                awaiting_adoption = false;
                            }
                            Some(Directive::Adopted(generation))
                                if awaiting_adoption
                                    && carried.current.as_ref().is_some_and(|r| r.deployment.generation == generation) =>
                            {
                                tracing::info!(generation, "the leader adopted this deployment; writing again");
                                awaiting_adoption = false;
                            }
                            Some(Directive::Adopted(_)) => {}
                            Some(Directive::Released { checkpoint }) => {
                                tracing::info!(checkpoint, "released by the coordinator: the job runs without this worker");
                                self.shared.released.store(true, Relaxed);
                                return Ok(());
                            }
                            None => {}
                        }
                        // Every message from the coordinator renews the lease
                        // (writes wait for the adoption of a kept deployment).
                        carried.lease_ends = lease.map(|l| tokio::time::Instant::now() + l);
                        if !awaiting_adoption {
                            self.shared.lease.renew(lease);
                        }
                    }
                    Ok(None) => return Err("the coordinator closed the control stream".to_string()),
                    Err(status) => return Err(format!("control stream failed: {}", status.message())),
                },
                _ = heartbeat.tick() => {
                    let metrics = carried.current.as_ref().map(|r| metrics_of(r.deployment.generation, &r.deployment.metrics()));
                    let event = pb::worker_event::Event::Heartbeat(pb::Heartbeat { metrics });
                    if events.send(pb::WorkerEvent { event: Some(event) }).await.is_err() {
                        return Err("the control stream closed".to_string());
                    }
                }
                update = next_from_current(&mut carried.current) => {
                    let Some(r) = &carried.current else { continue };
                    let generation = r.deployment.generation;
                    let event = match update {
                        Update::Ended(outcome) => {
                            abort_at = None;
                            let Some(r) = carried.current.take() else { continue };
                            log_end(generation, &outcome);
                            pb::worker_event::Event::Report(end_report(&r.deployment, &outcome))
                        }
                        Update::WindowsClosed(through) => {
                            pb::worker_event::Event::WindowsClosed(pb::WindowsClosed {
                                generation,
                                through,
                            })
                        }
                        Update::Checkpoint(event) => checkpoint_event(generation, event),
                    };
                    if events.send(pb::WorkerEvent { event: Some(event) }).await.is_err() {
                        return Err("the control stream closed".to_string());
                    }
                }
                _ = sleep_until_opt(carried.lease_ends) => {
                    return Err(format!(
                        "no word from the coordinator within its lease ({:?}): it may have given this worker's work to others",
                        lease.unwrap_or_default()
                    ));
                }
                _ = sleep_until_opt(abort_at) => {
                    abort_at = None;
                    if let Some(r) = &carried.current {
                        tracing::warn!(generation = r.deployment.generation, limit = ?DRAIN_LIMIT, "draining took too long; aborting");
                        r.deployment.send(DeploymentMsg::Abort).await;
                    }
                }
            }
        }
    }

    /// The coordinator said which generation this worker keeps (see
    /// `Registered.keep`): an orphaned deployment of it goes on (writing
    /// nothing until it is adopted: returns whether it waits for that),
    /// and what it reported meanwhile is sent; any other is aborted.
    async fn kept_or_not(
        &self,
        keep: u64,
        carried: &mut Carried,
        events: &mpsc::Sender<pb::WorkerEvent>,
    ) -> Result<bool, String> {
        let kept = carried
            .current
            .as_ref()
            .is_some_and(|r| keep != 0 && r.deployment.generation == keep && carried.orphaned);
        if !kept {
            carried
                .abort("the coordinator does not adopt this deployment; aborting it")
                .await;
            if keep != 0 {
                // It ended (or ran out of lease) while this worker dialed,
                // after its registration named it: the leader must not
                // adopt what is gone.
                let gone = pb::DeploymentReport {
                    generation: keep,
                    state: pb::DeploymentState::Failed as i32,
                    error: "the deployment ended before a leader adopted it".into(),
                    metrics: None,
                    unrestorable_checkpoint: 0,
                    failure: pb::FailureKind::PeerLost as i32,
                };
                let event = pb::worker_event::Event::Report(gone);
                if events
                    .send(pb::WorkerEvent { event: Some(event) })
                    .await
                    .is_err()
                {
                    return Err("the control stream closed".to_string());
                }
            }
            return Ok(false);
        }
        tracing::info!(
            generation = keep,
            events = carried.offline.len(),
            "the leader may adopt this worker's deployment; it writes nothing until it does"
        );
        carried.orphaned = false;
        for event in std::mem::take(&mut carried.offline) {
            if events
                .send(pb::WorkerEvent { event: Some(event) })
                .await
                .is_err()
            {
                return Err("the control stream closed".to_string());
            }
        }
        Ok(true)
    }

    /// Handles one command; returns what the control loop must change.
    async fn handle(
        &self,
        command: pb::CoordinatorCommand,
        current: &mut Option<Running>,
        events: &mpsc::Sender<pb::WorkerEvent>,
    ) -> Option<Directive> {
        use pb::coordinator_command::Command;
        match command.command? {
            Command::Registered(r) => {
                // Fenced as generations are: a coordinator of an older
                // term was deposed, whatever it believes.
                let seen = self.shared.term.fetch_max(r.term, Relaxed);
                if r.term < seen {
                    return Some(Directive::Refused { term: r.term, seen });
                }
                Some(Directive::Registered {
                    heartbeat: Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(50))),
                    lease: (r.lease_ms > 0).then(|| Duration::from_millis(u64::from(r.lease_ms))),
                    keep: r.keep,
                })
            }
            // Renews the lease, as every command does.
            Command::Keepalive(_) => None,
            Command::Adopted(a) => Some(Directive::Adopted(a.generation)),
            // What it ran after the checkpoint is not committed; the
            // deployment is aborted as the session ends.
            Command::Release(r) => Some(Directive::Released {
                checkpoint: r.checkpoint,
            }),
            Command::Deploy(deploy) => {
                if let Some(old) = current.take() {
                    tracing::info!(
                        old = old.deployment.generation,
                        new = deploy.generation,
                        "replacing the deployment"
                    );
                    old.deployment.send(DeploymentMsg::Abort).await;
                    let _ = old.deployment.wait().await;
                }
                let generation = deploy.generation;
                match self.start(deploy).await {
                    Ok(d) => {
                        tracing::info!(generation, "deployment running");
                        send_report(events, generation, pb::DeploymentState::Running, None, None)
                            .await;
                        *current = Some(Running {
                            deployment: d,
                            last_checkpoint: 0,
                            adoptable: true,
                        });
                    }
                    Err(e) => {
                        tracing::error!(generation, error = %e, "cannot start the deployment");
                        send_report(
                            events,
                            generation,
                            pb::DeploymentState::Failed,
                            Some(&e),
                            None,
                        )
                        .await;
                    }
                }
                Some(Directive::Deployed)
            }
            Command::TriggerCheckpoint(t) => {
                if let Some(r) = current
                    .as_mut()
                    .filter(|r| r.deployment.generation == t.generation)
                {
                    r.last_checkpoint = r.last_checkpoint.max(t.checkpoint);
                    // Its sources stop for good: a stop or a rescale, which
                    // a new leader could not carry on.
                    r.adoptable &= !t.stop_sources;
                    r.deployment
                        .send(DeploymentMsg::Trigger {
                            checkpoint: t.checkpoint,
                            stop_sources: t.stop_sources,
                        })
                        .await;
                }
                None
            }
            Command::CheckpointCompleted(c) => {
                if let Some(r) = current
                    .as_ref()
                    .filter(|r| r.deployment.generation == c.generation)
                {
                    r.deployment
                        .send(DeploymentMsg::Completed(c.checkpoint))
                        .await;
                }
                None
            }
            Command::CheckpointAborted(a) => {
                tracing::debug!(checkpoint = a.checkpoint, "checkpoint aborted");
                None
            }
            Command::Cancel(cancel) => {
                if let Some(r) = current
                    .as_mut()
                    .filter(|r| r.deployment.generation == cancel.generation)
                {
                    r.adoptable = false;
                    let d = &r.deployment;
                    // Drain in the background of the control loop (which keeps
                    // heartbeating); the end is reported when it comes.
                    tracing::info!(
                        generation = d.generation,
                        "cancelled by the coordinator; writing what was emitted"
                    );
                    d.send(DeploymentMsg::Stop).await;
                    return Some(Directive::AbortAt(
                        tokio::time::Instant::now() + DRAIN_LIMIT,
                    ));
                }
                None
            }
        }
    }

    async fn start(&self, deploy: pb::Deploy) -> Result<Deployment, JobError> {
        let mut spec = JobSpec::from_yaml(&deploy.spec_yaml, "the coordinator's job spec")?;
        if let Some(dir) = &self.config.data_dir {
            spec.state.dir = dir.clone();
        }
        let assignment = deploy
            .assignment
            .ok_or_else(|| JobError::Assignment("the deployment has no assignment".into()))?;
        let slots: Vec<Slot> = assignment
            .workers
            .iter()
            .map(|w| Slot {
                worker_id: w.worker_id.clone(),
                data_address: w.data_address.clone(),
                key_groups: KeyGroupRange {
                    start: w.key_group_start as u16,
                    end: w.key_group_end as u16,
                },
            })
            .collect();
        let me = slots
            .iter()
            .position(|s| s.worker_id == self.config.id)
            .ok_or_else(|| {
                JobError::Assignment(format!(
                    "worker {} is not in the assignment",
                    self.config.id
                ))
            })?;
        let partition_names = match spec.partition_names()? {
            Some(names) if assignment.partition_names.is_empty() => names,
            _ => assignment.partition_names.clone(),
        };
        let inputs = partition_names.len();
        let mut resume = vec![None; inputs];
        for point in &assignment.resume {
            let (Some(slot), Some(position)) = (
                resume.get_mut(point.input as usize),
                position_of(&point.position),
            ) else {
                return Err(JobError::Assignment(format!(
                    "resume point of input {} of {inputs}",
                    point.input
                )));
            };
            *slot = Some((position, point.watermark));
        }
        let plan = DeploymentPlan {
            lease: self.shared.lease.clone(),
            generation: deploy.generation,
            spec,
            slots,
            me,
            partition_owner: assignment
                .partition_owner
                .iter()
                .map(|&o| o as usize)
                .collect(),
            partition_names,
            resume,
            start_from: match pb::StartFrom::try_from(assignment.start_from) {
                Ok(pb::StartFrom::Default) => StartFrom::Checkpoint,
                Ok(pb::StartFrom::Earliest) => StartFrom::Earliest,
                Ok(pb::StartFrom::Latest) => StartFrom::Latest,
                Err(_) => {
                    return Err(JobError::Assignment(format!(
                        "unknown start_from {}",
                        assignment.start_from
                    )))
                }
            },
            restore: (assignment.restore_checkpoint != 0).then(|| RestoreFrom {
                checkpoint: assignment.restore_checkpoint,
                metadata: assignment.restore_metadata.clone(),
            }),
        };
        let own = self
            .config
            .own_subdirectories
            .then_some(self.config.id.as_str());
        let layout = Layout::of(&plan.spec, own, plan.generation);
        Deployment::start(plan, layout, self.registry.clone()).await
    }
}

/// What a command changes in the control loop.
enum Directive {
    /// The coordinator's raft term is older than one this worker followed.
    Refused { term: u64, seen: u64 },
    /// Heartbeat at this interval; hold a lease of this length (renewed by
    /// every command); keep running generation `keep` (0: none).
    Registered {
        heartbeat: Duration,
        lease: Option<Duration>,
        keep: u64,
    },
    /// Abort the (stopping) deployment at this instant.
    AbortAt(tokio::time::Instant),
    /// A new deployment replaced the previous one.
    Deployed,
    /// The leader adopted this generation (the one kept).
    Adopted(u64),
    /// The coordinator released this leaving worker.
    Released { checkpoint: u64 },
}

/// How long dialling a coordinator and registering may take.
const DIAL_PATIENCE: Duration = Duration::from_secs(5);

/// How long a cancelled deployment may take to write what it emitted.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

pub(super) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the current deployment has to report (pending without one).
pub(super) async fn next_from_current(current: &mut Option<Running>) -> Update {
    match current {
        Some(r) => r.deployment.next().await,
        None => std::future::pending().await,
    }
}

pub(super) fn log_end(generation: u64, outcome: &Result<DeploymentOutcome, JobError>) {
    match outcome {
        Ok(o) => tracing::info!(generation, outcome = ?o, "deployment ended"),
        Err(e) => tracing::error!(generation, error = %e, "deployment failed"),
    }
}

/// How a deployment ended, for the coordinator.
fn end_report(
    d: &Deployment,
    outcome: &Result<DeploymentOutcome, JobError>,
) -> pb::DeploymentReport {
    let (state, error) = match outcome {
        Ok(DeploymentOutcome::Finished) => (pb::DeploymentState::Finished, String::new()),
        Ok(other) => (pb::DeploymentState::Cancelled, format!("{other:?}")),
        Err(e) => (pb::DeploymentState::Failed, e.to_string()),
    };
    let unrestorable = match outcome {
        Err(JobError::Restore { checkpoint, .. }) => *checkpoint,
        _ => 0,
    };
    let failure = match outcome {
        Err(e) => failure_of(e),
        Ok(_) => pb::FailureKind::Transient,
    };
    pb::DeploymentReport {
        generation: d.generation,
        state: state as i32,
        error,
        metrics: Some(metrics_of(d.generation, &d.metrics())),
        unrestorable_checkpoint: unrestorable,
        failure: failure as i32,
    }
}

/// A checkpoint event's wire form.
pub(super) fn checkpoint_event(generation: u64, event: CheckpointEvent) -> pb::worker_event::Event {
    match event {
        CheckpointEvent::Ack(a) => pb::worker_event::Event::CheckpointAck(a),
        CheckpointEvent::Declined(d) => pb::worker_event::Event::CheckpointDeclined(d),
        CheckpointEvent::InputEnded(input) => {
            pb::worker_event::Event::InputEnded(pb::InputEnded { generation, input })
        }
    }
}

/// The wire form of a failure's kind.
fn failure_of(e: &JobError) -> pb::FailureKind {
    match e.failure_kind() {
        FailureKind::Transient => pb::FailureKind::Transient,
        FailureKind::Deterministic => pb::FailureKind::Deterministic,
        FailureKind::PeerLost => pb::FailureKind::PeerLost,
    }
}

async fn send_report(
    events: &mpsc::Sender<pb::WorkerEvent>,
    generation: u64,
    state: pb::DeploymentState,
    error: Option<&JobError>,
    metrics: Option<pb::WorkerMetrics>,
) {
    let report = pb::DeploymentReport {
        generation,
        state: state as i32,
        error: error.map(ToString::to_string).unwrap_or_default(),
        metrics,
        unrestorable_checkpoint: 0,
        failure: error.map_or(pb::FailureKind::Transient, failure_of) as i32,
    };
    let event = pb::worker_event::Event::Report(report);
    let _ = events.send(pb::WorkerEvent { event: Some(event) }).await;
}
