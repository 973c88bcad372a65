//! The coordinator's state, owned by one actor.
//!
//! Every change — a worker registering, a heartbeat, a report, an admin
//! request, a tick of the clock — is a message to this task, which owns the
//! membership and the job's lifecycle; the gRPC and REST handlers only
//! validate and forward ([`CoordinatorHandle`]).
//!
//! The job's lifecycle is a typed state ([`Job`]): `Waiting` for workers,
//! `Running` a generation, `Finished`, `Stopped` or `Failed`. A membership
//! change while waiting or running (a worker lost by heartbeat timeout or a
//! closed stream, or a new one registering) deploys a new generation over the
//! live workers once membership has settled. Until checkpoints exist, a new
//! generation rebuilds open windows by reading input again from each
//! partition's durable point, skipping what earlier generations wrote (see
//! [`crate::progress`]); the sink also never writes a row twice, so the
//! output stays exactly the contract's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use weir_common::keygroup::KeyGroupRange;
use weir_common::position::Position;
use weir_common::spec::JobSpec;
use weir_proto::admin as api;
use weir_proto::cluster as pb;
use weir_proto::convert::position_of;

use crate::progress::{Durable, JobProgress, ProgressFile};
use crate::scheduler::{assign, Member};

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
    /// Consecutive generations that may fail before the job is `Failed`.
    pub max_failed_generations: u32,
    /// The coordinator's gRPC address, for status displays.
    pub address: String,
    /// Where the job's progress is kept between runs (Pulsar jobs).
    pub progress_file: Option<ProgressFile>,
    /// How to find the topic's partitions again (Pulsar jobs).
    pub discovery: Option<crate::discovery::Discovery>,
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
            max_failed_generations: 5,
            address: String::new(),
            progress_file: None,
            discovery: None,
        }
    }

    /// Where a Pulsar job's progress file goes by default: in its state
    /// directory, named after the job.
    pub fn default_progress_path(spec: &JobSpec) -> PathBuf {
        let name: String = spec
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        spec.state.dir.join(format!("{name}.positions.json"))
    }
}

/// Why an admin request was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("{0}")]
    Conflict(String),
    #[error("the coordinator is shutting down")]
    Unavailable,
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        match e {
            AdminError::Conflict(m) => Status::failed_precondition(m),
            AdminError::Unavailable => Status::unavailable(e.to_string()),
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
    Resume(oneshot::Sender<Result<api::JobStatus, AdminError>>),
    /// The input's partitions, as found now.
    Partitions(Vec<String>),
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

    pub async fn resume(&self) -> Result<api::JobStatus, AdminError> {
        self.ask(Msg::Resume).await?
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
}

/// The job's lifecycle.
enum Job {
    /// No deployment (not enough workers yet).
    Waiting,
    Running(Generation),
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
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Waiting => "waiting",
            Job::Running(_) => "running",
            Job::Finished(_) => "finished",
            Job::Stopped(_) => "stopped",
            Job::Failed { .. } => "failed",
        }
    }

    fn generation(&self) -> Option<&Generation> {
        match self {
            Job::Waiting => None,
            Job::Running(g) | Job::Finished(g) | Job::Stopped(g) => Some(g),
            Job::Failed { generation, .. } => Some(generation),
        }
    }
}

pub(crate) struct Actor {
    config: CoordinatorConfig,
    workers: BTreeMap<String, Worker>,
    job: Job,
    last_generation: u64,
    /// A membership change waiting to be acted on.
    membership_changed: Option<Instant>,
    consecutive_failures: u32,
    redeploy_at: Option<Instant>,
    started: Instant,
    /// (time, records in, rows written) samples for rates.
    samples: Vec<(Instant, u64, u64)>,
    /// What the output holds and where inputs resume.
    progress: JobProgress,
    /// `progress` changed since it was last saved and sent to sources.
    progress_dirty: bool,
    /// The durable points as last saved (or known, without a file): what
    /// sources may acknowledge.
    recorded: JobProgress,
}

/// Starts the actor with the job's recorded progress; it ends when
/// `shutdown` is cancelled.
pub fn spawn(
    config: CoordinatorConfig,
    progress: JobProgress,
    shutdown: CancellationToken,
) -> (CoordinatorHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let actor = Actor {
        config,
        workers: BTreeMap::new(),
        job: Job::Waiting,
        last_generation: 0,
        membership_changed: None,
        consecutive_failures: 0,
        redeploy_at: None,
        started: Instant::now(),
        samples: Vec::new(),
        recorded: progress.clone(),
        progress,
        progress_dirty: false,
    };
    let task = tokio::spawn(actor.run(rx, shutdown));
    (CoordinatorHandle { tx }, task)
}

impl Actor {
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
        }
        self.save_progress();
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
            Msg::Resume(reply) => {
                let _ = reply.send(self.resume());
            }
            Msg::Partitions(names) => self.partitions_found(names),
        }
    }

    fn partitions_found(&mut self, names: Vec<String>) {
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
        if matches!(self.job, Job::Running(_)) {
            self.deploy_or_wait();
        }
    }

    fn connected(&mut self, register: pb::Register, conn: u64, commands: Commands) {
        let registered = pb::CoordinatorCommand {
            command: Some(pb::coordinator_command::Command::Registered(
                pb::Registered {
                    heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
                },
            )),
        };
        if commands.try_send(Ok(registered)).is_err() {
            return;
        }
        tracing::info!(worker = %register.worker_id, address = %register.data_address, version = %register.version, "worker registered");
        self.workers.insert(
            register.worker_id,
            Worker {
                data_address: register.data_address,
                conn,
                commands,
                last_seen: Instant::now(),
                metrics: None,
                state: pb::DeploymentState::Unspecified,
            },
        );
        self.membership_changed = Some(Instant::now());
    }

    fn remove(&mut self, id: &str) {
        if self.workers.remove(id).is_some() {
            self.membership_changed = Some(Instant::now());
        }
    }

    fn event(&mut self, id: &str, conn: u64, event: pb::worker_event::Event) {
        let current = self.job.generation().map(|g| g.number);
        let Some(worker) = self.workers.get_mut(id).filter(|w| w.conn == conn) else {
            return;
        };
        worker.last_seen = Instant::now();
        match event {
            pb::worker_event::Event::Register(_) => {}
            pb::worker_event::Event::Heartbeat(h) => {
                if let Some(m) = h.metrics.filter(|m| Some(m.generation) == current) {
                    self.note_progress(id, &m);
                    if let Some(w) = self.workers.get_mut(id) {
                        w.metrics = Some(m);
                    }
                }
            }
            pb::worker_event::Event::Report(r) => {
                if Some(r.generation) != current {
                    return;
                }
                let state = pb::DeploymentState::try_from(r.state)
                    .unwrap_or(pb::DeploymentState::Unspecified);
                worker.state = state;
                if let Some(m) = &r.metrics {
                    worker.metrics = Some(m.clone());
                    self.note_progress(id, m);
                }
                if let (Some(m), true) = (r.metrics, state != pb::DeploymentState::Running) {
                    if let Some(g) = self.generation_mut() {
                        g.final_metrics.insert(id.to_owned(), m);
                    }
                }
                match state {
                    pb::DeploymentState::Finished => self.maybe_finished(),
                    pb::DeploymentState::Failed => self.generation_failed(id, r.error),
                    _ => {}
                }
            }
        }
    }

    /// Records what a worker of the current generation reports as written
    /// and durable.
    fn note_progress(&mut self, id: &str, m: &pb::WorkerMetrics) {
        let Some(g) = self.job.generation() else {
            return;
        };
        let Some(slot_index) = g.assignment.workers.iter().position(|s| s.worker_id == id) else {
            return;
        };
        let slot = &g.assignment.workers[slot_index];
        let names = &g.assignment.partition_names;
        let mut changed = false;
        if let Some(w) = &m.written {
            let processed: BTreeMap<String, Position> = w
                .processed
                .iter()
                .filter_map(|ip| {
                    Some((
                        names.get(ip.input as usize)?.clone(),
                        position_of(&ip.position)?,
                    ))
                })
                .collect();
            let range = KeyGroupRange {
                start: u16::try_from(slot.key_group_start).unwrap_or(u16::MAX),
                end: u16::try_from(slot.key_group_end).unwrap_or(u16::MAX),
            };
            changed |= self.progress.merge_written(range, w.watermark, processed);
        }
        for p in &m.partitions {
            let owner = g.assignment.partition_owner.get(p.input as usize).copied();
            let (Some(name), Some(point), true) = (
                names.get(p.input as usize),
                p.durable.as_ref(),
                owner == Some(slot_index as u32),
            ) else {
                continue;
            };
            if let Some(position) = position_of(&point.position) {
                changed |= self.progress.record_durable(
                    name,
                    Durable {
                        position,
                        watermark: point.watermark,
                    },
                );
            }
        }
        self.progress_dirty |= changed;
    }

    /// Saves changed progress and tells the sources about it.
    fn save_progress(&mut self) -> bool {
        if !self.progress_dirty {
            return false;
        }
        if let Some(file) = &self.config.progress_file {
            if let Err(e) = file.save(&self.progress) {
                // Sources acknowledge only what is saved; keep trying.
                tracing::error!(error = %e, "cannot save the job's positions; retrying");
                return false;
            }
        }
        self.recorded = self.progress.clone();
        self.progress_dirty = false;
        true
    }

    fn send_progress(&self) {
        let Job::Running(g) = &self.job else {
            return;
        };
        let names = &g.assignment.partition_names;
        for (slot_index, slot) in g.assignment.workers.iter().enumerate() {
            let Some(w) = self.workers.get(&slot.worker_id) else {
                continue;
            };
            let mine = g
                .assignment
                .partition_owner
                .iter()
                .enumerate()
                .filter(|(_, &o)| o as usize == slot_index)
                .filter_map(|(input, _)| names.get(input).map(|n| (input as u32, n)));
            let mut progress = pb::Progress {
                generation: g.number,
                ..Default::default()
            };
            for (input, name) in mine {
                if let Some((position, watermark)) = self.progress.bounds(name) {
                    progress
                        .bounds
                        .push(pb::PartitionPoint::new(input, position, watermark));
                }
                if let Some(d) = self.recorded.durable(name) {
                    progress
                        .recorded
                        .push(pb::PartitionPoint::new(input, d.position, d.watermark));
                }
            }
            if progress.bounds.is_empty() && progress.recorded.is_empty() {
                continue;
            }
            let command = pb::CoordinatorCommand {
                command: Some(pb::coordinator_command::Command::Progress(progress)),
            };
            let _ = w.commands.try_send(Ok(command));
        }
    }

    fn generation_mut(&mut self) -> Option<&mut Generation> {
        match &mut self.job {
            Job::Waiting => None,
            Job::Running(g) | Job::Finished(g) | Job::Stopped(g) => Some(g),
            Job::Failed { generation, .. } => Some(generation),
        }
    }

    fn maybe_finished(&mut self) {
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
            self.consecutive_failures = 0;
        }
    }

    fn generation_failed(&mut self, worker: &str, error: String) {
        let Job::Running(g) = &self.job else { return };
        if g.started.elapsed() > Duration::from_secs(60) {
            self.consecutive_failures = 0;
        }
        self.consecutive_failures += 1;
        tracing::error!(generation = g.number, %worker, %error, failures = self.consecutive_failures, "generation failed");
        if self.consecutive_failures >= self.config.max_failed_generations {
            let generation = g.clone();
            self.cancel_generation(generation.number, &generation.assignment);
            self.job = Job::Failed {
                generation,
                error: format!("worker {worker}: {error}"),
            };
            return;
        }
        let backoff = Duration::from_millis(500) * 2u32.pow(self.consecutive_failures.min(6));
        self.redeploy_at = Some(Instant::now() + backoff);
    }

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
        let deployable = matches!(self.job, Job::Waiting | Job::Running(_));
        if let Some(changed) = self.membership_changed {
            if deployable && now.duration_since(changed) >= self.config.settle {
                self.membership_changed = None;
                self.deploy_or_wait();
            } else if !deployable {
                self.membership_changed = None;
            }
        }
        if let Some(at) = self.redeploy_at {
            if now >= at {
                self.redeploy_at = None;
                if matches!(self.job, Job::Running(_)) {
                    self.deploy_or_wait();
                }
            }
        }
        if self.save_progress() {
            self.send_progress();
        }
        self.sample(now);
    }

    /// Deploys a new generation over the live workers, or waits for enough.
    /// `min_workers` only holds back the first deployment; after that the
    /// job runs on whatever workers are live (at least one).
    fn deploy_or_wait(&mut self) {
        let needed = if self.last_generation == 0 {
            self.config.min_workers.max(1)
        } else {
            1
        };
        if self.workers.len() < needed {
            if let Job::Running(g) = &self.job {
                let g = g.clone();
                self.cancel_generation(g.number, &g.assignment);
                tracing::warn!(
                    live = self.workers.len(),
                    needed,
                    "too few workers; waiting"
                );
            }
            self.job = Job::Waiting;
            return;
        }
        let members: Vec<Member> = self
            .workers
            .iter()
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
        // Resume from what is saved (reports not yet saved describe output
        // that exists too, but a crash now would lose them: stay on the
        // side a restart would take).
        self.save_progress();
        assignment.resume = self.recorded.resume_points(&self.config.partitions);
        assignment.written = self.progress.written(&self.config.partitions);
        if self.last_generation == 0 {
            self.fix_generator_start();
        }
        self.last_generation += 1;
        let number = self.last_generation;
        let spec_yaml = match self.spec_for_generation() {
            Ok(y) => y,
            Err(e) => {
                self.job = Job::Failed {
                    generation: Generation {
                        number,
                        assignment,
                        started: Instant::now(),
                        final_metrics: BTreeMap::new(),
                    },
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
        for (id, w) in self.workers.iter_mut() {
            w.state = pb::DeploymentState::Unspecified;
            w.metrics = None;
            let command = pb::CoordinatorCommand {
                command: Some(pb::coordinator_command::Command::Deploy(deploy.clone())),
            };
            if w.commands.try_send(Ok(command)).is_err() {
                unreachable.push(id.clone());
            }
        }
        self.job = Job::Running(Generation {
            number,
            assignment,
            started: Instant::now(),
            final_metrics: BTreeMap::new(),
        });
        for id in unreachable {
            tracing::warn!(worker = %id, "worker lost: cannot send it the deployment");
            self.remove(&id);
        }
        // The new generation's sources learn at once what is already
        // recorded: one that resumes with nothing left to read must still
        // see its resume point acknowledged to finish.
        self.send_progress();
    }

    /// A realtime generator without a fixed start starts now, at the first
    /// deployment, and every later generation replays the same stream.
    fn fix_generator_start(&mut self) {
        if let Some(g) = self.config.spec.source.generator.as_mut() {
            if g.realtime && g.start_ms.is_none() {
                g.start_ms = Some(now_ms());
            }
        }
    }

    /// The spec as sent to workers.
    fn spec_for_generation(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(&self.config.spec)
    }

    fn cancel_generation(&mut self, generation: u64, assignment: &pb::Assignment) {
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

    fn stop(&mut self) -> Result<api::JobStatus, AdminError> {
        match &self.job {
            Job::Running(g) => {
                let g = g.clone();
                tracing::info!(generation = g.number, "stopping the job");
                self.cancel_generation(g.number, &g.assignment);
                self.job = Job::Stopped(g);
            }
            Job::Waiting => {
                self.job = Job::Stopped(Generation {
                    number: self.last_generation,
                    assignment: pb::Assignment::default(),
                    started: Instant::now(),
                    final_metrics: BTreeMap::new(),
                })
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
        self.redeploy_at = None;
        Ok(self.job_status())
    }

    fn resume(&mut self) -> Result<api::JobStatus, AdminError> {
        match &self.job {
            Job::Stopped(_) | Job::Failed { .. } => {
                tracing::info!(
                    "resuming the job from its partitions' durable points (what was written is not written again)"
                );
                self.consecutive_failures = 0;
                self.job = Job::Waiting;
                self.deploy_or_wait();
                Ok(self.job_status())
            }
            Job::Running(_) | Job::Waiting => Err(AdminError::Conflict(
                "the job is running; stop it before resuming".into(),
            )),
            Job::Finished(_) => Err(AdminError::Conflict(
                "the job has finished; there is nothing to resume".into(),
            )),
        }
    }

    fn sample(&mut self, now: Instant) {
        if self
            .samples
            .last()
            .is_some_and(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(1))
        {
            return;
        }
        let (records, rows) = self.totals();
        self.samples.push((now, records, rows));
        if self.samples.len() > 6 {
            self.samples.remove(0);
        }
    }

    /// Metrics of the current generation, one per worker of it.
    fn current_metrics(&self) -> Vec<(&str, &pb::WorkerMetrics)> {
        let Some(g) = self.job.generation() else {
            return Vec::new();
        };
        g.assignment
            .workers
            .iter()
            .filter_map(|slot| {
                let id = slot.worker_id.as_str();
                let live = self.workers.get(id).and_then(|w| w.metrics.as_ref());
                live.or_else(|| g.final_metrics.get(id))
                    .filter(|m| m.generation == g.number)
                    .map(|m| (id, m))
            })
            .collect()
    }

    fn totals(&self) -> (u64, u64) {
        self.current_metrics()
            .iter()
            .fold((0, 0), |(r, w), (_, m)| {
                (r + m.records_in, w + m.rows_written)
            })
    }

    fn job_status(&self) -> api::JobStatus {
        let metrics = self.current_metrics();
        let sum = |f: fn(&pb::WorkerMetrics) -> u64| metrics.iter().map(|(_, m)| f(m)).sum::<u64>();
        let rate = |f: fn(&(Instant, u64, u64)) -> u64| match (
            self.samples.first(),
            self.samples.last(),
        ) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (f(b).saturating_sub(f(a))) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        };
        let generation = self.job.generation();
        let watermark = if matches!(self.job, Job::Finished(_)) {
            i64::MAX
        } else {
            metrics
                .iter()
                .map(|(_, m)| m.watermark)
                .min()
                .unwrap_or(i64::MIN)
        };
        let mut shuffled = vec![0u64; usize::from(self.config.spec.state.max_parallelism)];
        for (_, m) in &metrics {
            for (kg, n) in m.remote_by_key_group.iter().enumerate() {
                if let Some(s) = shuffled.get_mut(kg) {
                    *s += n;
                }
            }
        }
        let partitions = self
            .config
            .partitions
            .iter()
            .enumerate()
            .map(|(input, name)| {
                let owner = generation
                    .and_then(|g| g.assignment.partition_owner.get(input))
                    .and_then(|&o| generation.and_then(|g| g.assignment.workers.get(o as usize)))
                    .map(|s| s.worker_id.clone())
                    .unwrap_or_default();
                let progress = metrics
                    .iter()
                    .filter(|(id, _)| *id == owner)
                    .flat_map(|(_, m)| m.partitions.iter())
                    .find(|p| p.input as usize == input);
                api::PartitionStatus {
                    input: input as u32,
                    name: name.clone(),
                    worker_id: owner,
                    records: progress.map_or(0, |p| p.records),
                    watermark: progress.map_or(i64::MIN, |p| p.watermark),
                    finished: progress.is_some_and(|p| p.finished),
                    durable: self
                        .recorded
                        .durable(name)
                        .map_or_else(String::new, |d| d.position.to_string()),
                }
            })
            .collect();
        let phase = match metrics.iter().map(|(_, m)| m.phase).min() {
            Some(0) => "waiting-for-sink",
            Some(1) => "running",
            Some(2) => "draining",
            Some(_) => "done",
            None => "",
        };
        api::JobStatus {
            name: self.config.spec.name.clone(),
            state: self.job.name().to_owned(),
            generation: generation.map_or(0, |g| g.number),
            records_in_per_second: rate(|s| s.1),
            rows_out_per_second: rate(|s| s.2),
            records_in: sum(|m| m.records_in),
            rows_written: sum(|m| m.rows_written),
            late_records: sum(|m| m.late_records),
            bad_records: sum(|m| m.bad_records),
            windows_closed: sum(|m| m.windows_closed),
            watermark,
            partitions,
            error: match &self.job {
                Job::Failed { error, .. } => error.clone(),
                _ => String::new(),
            },
            workers: generation.map_or(0, |g| g.assignment.workers.len() as u32),
            shuffle_records: sum(|m| m.shuffle_records_sent),
            sink_retries: sum(|m| m.sink_retries),
            sink_lookups: sum(|m| m.sink_lookups),
            state_spills: sum(|m| m.state_spills),
            dead_letters: sum(|m| m.dead_letters),
            open_windows: sum(|m| m.open_windows),
            shuffled_by_key_group: shuffled,
            phase: phase.to_owned(),
        }
    }

    fn cluster_status(&self) -> api::ClusterStatus {
        let now = Instant::now();
        let generation = self.job.generation();
        let workers = self
            .workers
            .iter()
            .map(|(id, w)| {
                let slot_index = generation
                    .and_then(|g| g.assignment.workers.iter().position(|s| &s.worker_id == id));
                let slot = slot_index.and_then(|i| generation.map(|g| &g.assignment.workers[i]));
                let partitions = match (generation, slot_index) {
                    (Some(g), Some(i)) => g
                        .assignment
                        .partition_owner
                        .iter()
                        .enumerate()
                        .filter(|(_, &o)| o as usize == i)
                        .map(|(p, _)| p as u32)
                        .collect(),
                    _ => Vec::new(),
                };
                let state = match w.state {
                    pb::DeploymentState::Unspecified if slot.is_some() => "deploying",
                    pb::DeploymentState::Unspecified => "registered",
                    pb::DeploymentState::Running => "running",
                    pb::DeploymentState::Finished => "finished",
                    pb::DeploymentState::Failed => "failed",
                    pb::DeploymentState::Cancelled => "cancelled",
                };
                api::WorkerStatus {
                    worker_id: id.clone(),
                    data_address: w.data_address.clone(),
                    state: state.to_owned(),
                    last_heartbeat_ms_ago: now.duration_since(w.last_seen).as_millis() as u64,
                    partitions,
                    key_group_start: slot.map_or(0, |s| s.key_group_start),
                    key_group_end: slot.map_or(0, |s| s.key_group_end),
                    records_in: w.metrics.as_ref().map_or(0, |m| m.records_in),
                    resident_bytes: w.metrics.as_ref().map_or(0, |m| m.resident_bytes),
                }
            })
            .collect();
        api::ClusterStatus {
            coordinator_address: self.config.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            workers,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
