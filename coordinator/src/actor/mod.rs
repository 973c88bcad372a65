//! The coordinator's state, owned by one actor.
//!
//! Every change — a worker registering, a heartbeat, a report, an admin
//! request, a tick of the clock — is a message to this task, which owns the
//! membership and the job's lifecycle; the gRPC and REST handlers only
//! validate and forward ([`CoordinatorHandle`]).
//!
//! The job's lifecycle is a typed state ([`Job`]): `Waiting` for workers,
//! `Running` a generation, `Restarting` after a failed one (a backoff),
//! `Finished`, `Stopped` or `Failed`. A membership change while waiting,
//! running or restarting (a worker lost by heartbeat timeout or a closed
//! stream, or a new one registering) deploys a new generation over the live
//! workers once membership has settled ([`Membership`]). A new generation
//! restores the latest completed checkpoint (state and input positions);
//! with none, it starts from the inputs' beginning (Pulsar: the
//! subscription's position). The sink never writes a row twice, so what the
//! previous generation wrote after the checkpoint is not written again.
//!
//! The actor's work is split by concern, each an `impl Actor` block:
//! `membership.rs` (workers and their events), `lifecycle.rs` (generations,
//! stop, resume), `checkpointing.rs` (triggers, acks, completion, the final
//! checkpoint after the end of the inputs) and `status.rs` (what the admin
//! API shows), `rescale.rs` (planned changes of the workers, carried out
//! from a fresh checkpoint).

mod adopt;
mod checkpointing;
pub(crate) use checkpointing::checkpoint_of_metadata_key;
mod lifecycle;
mod membership;
mod record;
mod rescale;
mod status;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use weir_common::spec::JobSpec;
use weir_proto::admin as api;
use weir_proto::cluster as pb;
use weir_proto::convert::position_of;

use weir_common::checkpoint::CheckpointStore;

use crate::backpressure::BackpressureMeter;
use crate::checkpoints::{CheckpointCoordinator, MetadataContext, Timing};
use crate::kubernetes::{KubeError, ReplicasSeen, WorkerSet};
use crate::raft_link::RaftLink;
use crate::recorder::Recorder;
use crate::restore::RestorePoint;
use crate::scheduler::{assign, Member};
use weir_raft::Lifecycle;

/// How the coordinator runs the job.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// The job (validated; paths absolute).
    pub spec: JobSpec,
    /// Names of the input partitions, by input index.
    pub partitions: Vec<String>,
    pub heartbeat_interval: Duration,
    /// A worker silent this long is lost.
    pub heartbeat_timeout: Duration,
    /// Workers needed before the first deployment.
    pub min_workers: usize,
    /// Quiet time after a membership change before deploying.
    pub settle: Duration,
    /// The coordinator's gRPC address, for status displays.
    pub address: String,
    /// How to find the topic's partitions again (Pulsar jobs).
    pub discovery: Option<crate::discovery::Discovery>,
    /// The workers' StatefulSet (`--kubernetes`): its replicas are the
    /// workers the job should run on, and a rescale patches them.
    pub worker_set: Option<WorkerSet>,
    /// How long a rescale waits for the workers it asked for to register
    /// (or for leaving ones to announce it) before it goes on with the
    /// workers it has.
    pub rescale_patience: Duration,
    /// The coordinators' raft group (`--peers`); none: this coordinator
    /// alone runs the job.
    pub raft: Option<weir_raft::group::GroupConfig>,
    /// Who may use the admin API.
    pub admin_auth: crate::auth::AdminAuth,
    /// What workers (and the other coordinators) must present.
    pub cluster_secret: weir_proto::auth::ClusterSecret,
    /// TLS on the coordinator's ports, and how it dials the other
    /// coordinators (raft, proxied admin requests).
    pub tls: weir_proto::tls::Tls,
    /// Histograms kept over the coordinator's life (shared with
    /// `/metrics`; every actor it runs observes the same).
    pub metrics: crate::metrics::CoordinatorMetrics,
}

impl CoordinatorConfig {
    /// A coordinator for `spec` reading `partitions`, with default timings.
    pub fn new(spec: JobSpec, partitions: Vec<String>) -> Self {
        CoordinatorConfig {
            spec,
            partitions,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(10),
            min_workers: 1,
            settle: Duration::from_secs(1),
            address: String::new(),
            discovery: None,
            worker_set: None,
            rescale_patience: Duration::from_secs(180),
            raft: None,
            admin_auth: crate::auth::AdminAuth::open(),
            cluster_secret: weir_proto::auth::ClusterSecret::none(),
            tls: weir_proto::tls::Tls::none(),
            metrics: crate::metrics::CoordinatorMetrics::default(),
        }
    }

    /// A worker's lease (see `Registered.lease_ms`): three quarters of the
    /// heartbeat timeout, so that a worker that stopped hearing from the
    /// coordinator has stopped writing before the coordinator counts it
    /// lost and deploys its work elsewhere (after `settle` more).
    pub fn lease(&self) -> Duration {
        self.heartbeat_timeout * 3 / 4
    }
}

/// Why an admin request was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the coordinator is shutting down")]
    Unavailable,
    /// Could not be done now; the same request may succeed later.
    #[error("{0}")]
    TryAgain(String),
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        match e {
            AdminError::Conflict(m) => Status::failed_precondition(m),
            AdminError::Invalid(m) => Status::invalid_argument(m),
            AdminError::Unavailable => Status::unavailable(e.to_string()),
            AdminError::TryAgain(m) => Status::unavailable(m),
        }
    }
}

type Commands = mpsc::Sender<Result<pb::CoordinatorCommand, Status>>;

pub(crate) enum Msg {
    Connected {
        register: pb::Register,
        conn: u64,
        commands: Commands,
    },
    Event {
        id: String,
        conn: u64,
        /// Boxed: metrics make it the largest message by far.
        event: Box<pb::worker_event::Event>,
    },
    Disconnected {
        id: String,
        conn: u64,
    },
    Cluster(oneshot::Sender<api::ClusterStatus>),
    Job(oneshot::Sender<api::JobStatus>),
    Stop(oneshot::Sender<Result<api::JobStatus, AdminError>>),
    Resume {
        /// A checkpoint named by number or path (see [`CheckpointRef`]).
        from: Option<String>,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    },
    /// The checkpoint a resume named was read from the store (or not).
    ResumeFromRead {
        result: Result<RestorePoint, String>,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    },
    /// The input's partitions, as found now.
    Partitions(Vec<String>),
    Checkpoints(oneshot::Sender<api::CheckpointList>),
    TriggerCheckpoint {
        savepoint: bool,
        reply: oneshot::Sender<Result<api::CheckpointList, AdminError>>,
    },
    SetCheckpointInterval {
        interval: Duration,
        reply: oneshot::Sender<Result<api::CheckpointList, AdminError>>,
    },
    /// Stops after a final checkpoint (`savepoint`: a savepoint).
    StopAfterCheckpoint {
        savepoint: bool,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    },
    /// What the coordinator sees of the workers' StatefulSet.
    Replicas(ReplicasSeen),
    /// `weir ctl rescale N`.
    Rescale {
        workers: u32,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    },
    /// The StatefulSet's scale was patched (or not).
    Scaled {
        workers: u32,
        result: Result<(), KubeError>,
        reply: oneshot::Sender<Result<api::JobStatus, AdminError>>,
    },
    /// A checkpoint's metadata was written to the store (or not).
    CheckpointWritten {
        generation: u64,
        result: Result<Box<weir_proto::checkpoint::CheckpointMetadata>, (u64, String)>,
    },
}

/// A cheap handle to the coordinator actor.
#[derive(Clone)]
pub struct CoordinatorHandle {
    tx: mpsc::Sender<Msg>,
}

impl CoordinatorHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, AdminError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| AdminError::Unavailable)?;
        rx.await.map_err(|_| AdminError::Unavailable)
    }

    pub async fn cluster(&self) -> Result<api::ClusterStatus, AdminError> {
        self.ask(Msg::Cluster).await
    }

    pub async fn job(&self) -> Result<api::JobStatus, AdminError> {
        self.ask(Msg::Job).await
    }

    pub async fn stop(&self) -> Result<api::JobStatus, AdminError> {
        self.ask(Msg::Stop).await?
    }

    /// Resumes a stopped or failed job from its latest completed
    /// checkpoint, or from the one `from` names (a number or a path in the
    /// job's store).
    pub async fn resume(&self, from: Option<String>) -> Result<api::JobStatus, AdminError> {
        self.ask(|reply| Msg::Resume { from, reply }).await?
    }

    pub async fn checkpoints(&self) -> Result<api::CheckpointList, AdminError> {
        self.ask(Msg::Checkpoints).await
    }

    pub async fn trigger_checkpoint(
        &self,
        savepoint: bool,
    ) -> Result<api::CheckpointList, AdminError> {
        self.ask(|reply| Msg::TriggerCheckpoint { savepoint, reply })
            .await?
    }

    pub async fn set_checkpoint_interval(
        &self,
        interval: Duration,
    ) -> Result<api::CheckpointList, AdminError> {
        self.ask(|reply| Msg::SetCheckpointInterval { interval, reply })
            .await?
    }

    /// Takes a savepoint, then stops the job (see `StopJobRequest`).
    pub async fn stop_with_savepoint(&self) -> Result<api::JobStatus, AdminError> {
        self.ask(|reply| Msg::StopAfterCheckpoint {
            savepoint: true,
            reply,
        })
        .await?
    }

    /// Stops the job after a final checkpoint (a plain stop when the job is
    /// not running), so that a restart restores exactly where it stopped.
    pub async fn stop_with_checkpoint(&self) -> Result<api::JobStatus, AdminError> {
        self.ask(|reply| Msg::StopAfterCheckpoint {
            savepoint: false,
            reply,
        })
        .await?
    }

    /// Runs the job on `workers` workers: on Kubernetes, patches the
    /// workers' StatefulSet's scale (the watch then rescales the job from a
    /// checkpoint, as after `kubectl scale`).
    pub async fn rescale(&self, workers: u32) -> Result<api::JobStatus, AdminError> {
        self.ask(|reply| Msg::Rescale { workers, reply }).await?
    }

    #[cfg(test)]
    pub(crate) fn for_test(tx: mpsc::Sender<Msg>) -> Self {
        CoordinatorHandle { tx }
    }

    pub(crate) async fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).await.is_ok()
    }
}

/// A registered worker.
struct Worker {
    data_address: String,
    conn: u64,
    commands: Commands,
    last_seen: Instant,
    /// Latest metrics of the current generation.
    metrics: Option<pb::WorkerMetrics>,
    /// State of its deployment of the current generation.
    state: pb::DeploymentState,
    presence: Presence,
    /// The share of time its sources wait on full channels.
    backpressure: BackpressureMeter,
}

/// Whether a worker stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Active,
    /// It was asked to stop (SIGTERM) and said so: it goes on with the
    /// running generation until a checkpoint holds its state and a
    /// generation without it runs; then it is released.
    Leaving,
}

/// The job's lifecycle.
enum Job {
    /// No deployment (not enough workers yet).
    Waiting,
    /// A new raft leader waits for the workers of the generation its
    /// predecessor ran, to adopt it (`adopt.rs`).
    Adopting(adopt::Adoption),
    Running(Generation),
    /// A generation failed; the next is deployed at `at`, after a backoff
    /// (or sooner, if membership changes meanwhile).
    Restarting {
        failed: Generation,
        at: Instant,
    },
    Finished(Generation),
    Stopped(Generation),
    Failed {
        generation: Generation,
        error: String,
    },
}

/// One deployed generation.
#[derive(Clone)]
struct Generation {
    number: u64,
    assignment: pb::Assignment,
    started: Instant,
    /// Final metrics of workers whose deployment ended.
    final_metrics: BTreeMap<String, pb::WorkerMetrics>,
    /// Partitions (by input index) read to their end.
    ended_inputs: BTreeSet<u32>,
    /// By worker: every window ending at or before this is closed there.
    closed_through: BTreeMap<String, i64>,
    /// Windows ending at or before this have a checkpoint asked for them.
    closed_covered: i64,
}

impl Generation {
    fn new(number: u64, assignment: pb::Assignment) -> Self {
        Generation {
            number,
            assignment,
            started: Instant::now(),
            final_metrics: BTreeMap::new(),
            ended_inputs: BTreeSet::new(),
            closed_through: BTreeMap::new(),
            closed_covered: i64::MIN,
        }
    }
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Waiting => "waiting",
            Job::Adopting(_) => "adopting",
            Job::Running(_) => "running",
            Job::Restarting { .. } => "restarting",
            Job::Finished(_) => "finished",
            Job::Stopped(_) => "stopped",
            Job::Failed { .. } => "failed",
        }
    }

    fn generation(&self) -> Option<&Generation> {
        match self {
            Job::Waiting => None,
            Job::Adopting(a) => Some(&a.generation),
            Job::Running(g) | Job::Finished(g) | Job::Stopped(g) => Some(g),
            Job::Restarting { failed, .. } => Some(failed),
            Job::Failed { generation, .. } => Some(generation),
        }
    }

    /// Whether a membership change leads to a new generation.
    fn deploys_on_change(&self) -> bool {
        matches!(
            self,
            Job::Waiting | Job::Running(_) | Job::Restarting { .. }
        )
    }
}

/// Whether workers came or went since the last deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    Settled,
    /// Changed, first and last at these instants: a new generation is
    /// deployed once it has been quiet for `settle`.
    Changing {
        first: Instant,
        last: Instant,
    },
}

pub(crate) struct Actor {
    config: CoordinatorConfig,
    workers: BTreeMap<String, Worker>,
    job: Job,
    last_generation: u64,
    membership: Membership,
    consecutive_failures: u32,
    started: Instant,
    /// (time, records in, rows written) samples for rates.
    samples: Vec<(Instant, u64, u64)>,
    checkpoints: CheckpointCoordinator,
    store: CheckpointStore,
    metadata_context: MetadataContext,
    /// The actor's own mailbox, for tasks that answer with a message.
    mailbox: mpsc::Sender<Msg>,
    /// Completed checkpoints a new generation may restore, newest last: it
    /// restores the newest; one that cannot be restored is dropped, and the
    /// one before is used.
    restorable: VecDeque<RestorePoint>,
    /// Stop the job once the requested final checkpoint completes (or
    /// fails).
    stop_after: Option<(StopAfter, Instant)>,
    /// A worker of the running generation was lost (or re-registered, which
    /// aborted its deployment) since it was deployed: the next generation
    /// restores the latest completed checkpoint, as no new one can be
    /// taken.
    generation_broken: bool,
    /// The workers' StatefulSet's replicas (`--kubernetes`), once seen.
    desired: Option<u32>,
    /// The latest error watching the StatefulSet, until it is read again.
    kube_trouble: Option<String>,
    rescale: Option<rescale::Rescale>,
    /// Rescales, newest first.
    rescales: VecDeque<api::RescaleInfo>,
    /// The raft group this coordinator leads (absent with a single
    /// coordinator).
    raft: Option<RaftLink>,
    /// Writes the job's control state to `raft`, in order.
    recorder: Option<Recorder>,
    /// The raft term this coordinator leads in (0 alone): workers refuse
    /// a coordinator of an older term.
    term: u64,
    /// The lifecycle last sent to the recorder.
    recorded_lifecycle: Option<(Lifecycle, String)>,
}

/// How long a stop waits for its final checkpoint before it stops
/// without one.
const FINAL_CHECKPOINT_PATIENCE: Duration = Duration::from_secs(60);

/// What the job stops after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopAfter {
    Savepoint,
    Checkpoint,
}

/// Where the job's checkpoints are, the newest number there, and what to
/// restore.
pub struct CheckpointSetup {
    pub store: CheckpointStore,
    pub last: u64,
    /// Newest last.
    pub restorable: Vec<RestorePoint>,
}

/// Starts the actor; it ends when `shutdown` is cancelled. With `raft`,
/// it carries on from the group's record and records its changes through
/// `recorder`.
pub fn spawn(
    config: CoordinatorConfig,
    checkpoints: CheckpointSetup,
    shutdown: CancellationToken,
    raft: Option<RaftLink>,
    recorder: Option<Recorder>,
) -> (CoordinatorHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let mut actor = Actor::new(config, checkpoints, tx.clone());
    if let Some(link) = raft {
        actor.carry_on(link, recorder);
    }
    let task = tokio::spawn(actor.run(rx, shutdown));
    (CoordinatorHandle { tx }, task)
}

impl Actor {
    fn new(config: CoordinatorConfig, setup: CheckpointSetup, mailbox: mpsc::Sender<Msg>) -> Self {
        let c = &config.spec.checkpoint;
        let timing = Timing {
            interval: c.interval.std(),
            timeout: c.timeout.std(),
            min_pause: c.min_pause.std(),
        };
        let metadata_context = MetadataContext {
            job: config.spec.name.clone(),
            spec_hash: state_hash(&config.spec),
            max_parallelism: config.spec.state.max_parallelism,
        };
        Actor {
            checkpoints: CheckpointCoordinator::new(timing, setup.last, Instant::now()),
            store: setup.store,
            restorable: setup.restorable.into(),
            stop_after: None,
            generation_broken: false,
            desired: None,
            kube_trouble: None,
            rescale: None,
            rescales: VecDeque::new(),
            raft: None,
            recorder: None,
            term: 0,
            recorded_lifecycle: None,
            metadata_context,
            mailbox,
            config,
            workers: BTreeMap::new(),
            job: Job::Waiting,
            last_generation: 0,
            membership: Membership::Settled,
            consecutive_failures: 0,
            started: Instant::now(),
            samples: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = tick.tick() => self.tick(),
            }
            self.record_lifecycle();
        }
        self.mark_finished_now().await;
    }

    /// Every 100 ms: lost workers, deployments whose time has come,
    /// checkpoints to trigger or give up, throughput samples.
    fn tick(&mut self) {
        let now = Instant::now();
        let timeout = self.config.heartbeat_timeout;
        let lost: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            tracing::warn!(worker = %id, ?timeout, "worker lost: no heartbeat");
            self.remove(&id);
        }
        self.tick_adoption(now);
        if let Membership::Changing { first, last } = self.membership {
            if matches!(self.job, Job::Adopting(_)) {
                // Settled once the generation is adopted (a rescale if the
                // workers differ from its) or replaced.
            } else if !self.job.deploys_on_change() {
                self.membership = Membership::Settled;
            } else if now.duration_since(last) >= self.config.settle {
                self.membership = Membership::Settled;
                self.membership_settled(first);
            }
        }
        self.advance_rescale();
        if let Job::Restarting { at, .. } = self.job {
            if now >= at {
                self.deploy_or_wait();
            }
        }
        self.tick_checkpoints(now);
        self.sample(now);
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connected {
                register,
                conn,
                commands,
            } => self.connected(register, conn, commands),
            Msg::Event { id, conn, event } => self.event(&id, conn, *event),
            Msg::Disconnected { id, conn } => {
                if self.workers.get(&id).is_some_and(|w| w.conn == conn) {
                    tracing::warn!(worker = %id, "worker lost: its control stream closed");
                    self.remove(&id);
                }
            }
            Msg::Cluster(reply) => {
                let _ = reply.send(self.cluster_status());
            }
            Msg::Job(reply) => {
                let _ = reply.send(self.job_status());
            }
            Msg::Stop(reply) => {
                let _ = reply.send(self.stop());
            }
            Msg::Resume { from: None, reply } => {
                let _ = reply.send(self.resume());
            }
            Msg::Resume {
                from: Some(from),
                reply,
            } => self.resume_from(&from, reply),
            Msg::ResumeFromRead { result, reply } => {
                let _ = reply.send(self.resume_from_read(result));
            }
            Msg::Partitions(names) => self.partitions_found(names),
            Msg::Checkpoints(reply) => {
                let _ = reply.send(self.checkpoint_list());
            }
            Msg::TriggerCheckpoint { savepoint, reply } => {
                let result = self
                    .request_checkpoint(savepoint)
                    .map(|()| self.checkpoint_list());
                let _ = reply.send(result);
            }
            Msg::SetCheckpointInterval { interval, reply } => {
                let _ = reply.send(self.set_checkpoint_interval(interval));
            }
            Msg::StopAfterCheckpoint { savepoint, reply } => {
                let _ = reply.send(self.stop_after_checkpoint(savepoint));
            }
            Msg::Replicas(seen) => self.replicas_seen(seen),
            Msg::Rescale { workers, reply } => self.rescale_requested(workers, reply),
            Msg::Scaled {
                workers,
                result,
                reply,
            } => {
                let _ = reply.send(self.scaled(workers, result));
            }
            Msg::CheckpointWritten { generation, result } => {
                self.checkpoint_written(generation, result)
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A hash of what a checkpoint's state depends on in the spec (how readings
/// are keyed, windowed and aggregated, and the key groups): a checkpoint of
/// a job that differs there cannot be restored into this one.
pub(crate) fn state_hash(spec: &JobSpec) -> String {
    let relevant = format!(
        "{:?}|{}|{:?}|{:?}|{}",
        spec.key,
        spec.window.size_ms(),
        spec.aggregates,
        spec.late.policy,
        spec.state.max_parallelism
    );
    // FNV-1a: stable across versions and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in relevant.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
