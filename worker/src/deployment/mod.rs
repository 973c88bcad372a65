//! A deployment: this worker's part of one generation of the job.
//!
//! The coordinator assigns every input partition to one worker (which runs
//! its source task) and every key group to one worker (whose window task owns
//! it). [`Deployment::start`] checks what can be checked up front (its input
//! files, output and state directories), then a supervisor task waits for
//! the sink to be ready (ClickHouse may be down at start: it waits and
//! retries) and starts the dead-letter, sink, window, shuffle and source
//! tasks. A failing task stops all others and its error is the deployment's.
//!
//! A deployment is an actor: its handle ([`Deployment`]) sends typed
//! messages ([`DeploymentMsg`]) to a bounded mailbox. Two ways to end early:
//! [`DeploymentMsg::Stop`] stops the sources and the window task and lets
//! the sink write what was already emitted; [`DeploymentMsg::Abort`] also
//! gives up on unwritten output (the next generation recomputes it, and the
//! sink never writes a row twice).
//!
//! A deployment that restores a checkpoint appends to its output files
//! instead of starting them anew, and its Pulsar readers seek to the
//! checkpointed positions.
//!
//! `plan.rs` says what runs here (partitions, slots, files), `connect.rs`
//! reaches Pulsar and ClickHouse before the tasks start, `graph.rs` wires
//! the tasks and supervises them.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_common::avro::DecodePlan;
use weir_common::checkpoint::{CheckpointStore, StoreLocation};
use weir_common::sink::SinkError;
use weir_common::spec::{JobSpec, SourceKind, SpecError};

use crate::checkpoint::{CheckpointEvent, UploaderMsg};
use crate::metrics::JobMetrics;
use crate::shuffle::{ShuffleError, ShuffleRegistry};
use crate::source::{FileReader, SourceCommand, SourceError};
use crate::state::{StateError, StateStore};

mod connect;
mod graph;
mod outputs;
mod plan;
mod restore;

pub use plan::{
    partitions_of, DeploymentPlan, Layout, Partition, PartitionSource, RestoreFrom, Slot,
};

use graph::supervise;
use plan::check_plan;

/// Why a deployment could not run or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("dead-letter output: {0}")]
    DeadLetters(#[source] SinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Shuffle(#[from] ShuffleError),
    #[error("the assignment is inconsistent: {0}")]
    Assignment(String),
    #[error("writer schema {path}: {message}")]
    Schema { path: String, message: String },
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    #[error("cannot restore checkpoint {checkpoint}: {message}")]
    Restore { checkpoint: u64, message: String },
    #[error("job task `{0}` failed unexpectedly: {1}")]
    Task(&'static str, String),
}

/// What kind of failure a [`JobError`] is, for the coordinator's restart
/// strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// An infrastructure fault: a later try may succeed.
    Transient,
    /// The same deployment fails the same way again.
    Deterministic,
    /// A peer worker is unreachable or its stream broke.
    PeerLost,
}

impl JobError {
    pub fn failure_kind(&self) -> FailureKind {
        use FailureKind::*;
        match self {
            JobError::Spec(_) | JobError::Schema { .. } | JobError::Assignment(_) => Deterministic,
            JobError::Source(e) => match e {
                SourceError::Input(e) => match e {
                    weir_common::input::InputError::Io { .. } => Transient,
                    _ => Deterministic,
                },
                SourceError::NotTheCheckpointedInput { .. } => Deterministic,
                SourceError::Io { .. } | SourceError::Pulsar(_) | SourceError::Topic { .. } => {
                    Transient
                }
            },
            JobError::Sink(e) | JobError::DeadLetters(e) => {
                if e.is_retryable() {
                    Transient
                } else {
                    Deterministic
                }
            }
            JobError::Shuffle(crate::shuffle::ShuffleError::Local(_)) => Deterministic,
            JobError::Shuffle(_) => PeerLost,
            JobError::State(_)
            | JobError::Checkpoint(_)
            | JobError::Restore { .. }
            | JobError::Task(..) => Transient,
        }
    }
}

/// How a deployment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentOutcome {
    /// Every input was read and every window of this worker written.
    Finished,
    /// Stopped on request: the output of completed checkpoints is
    /// committed; these windows were open.
    Stopped { open_windows: usize },
    /// Aborted; this many staged rows were not committed (the checkpoints
    /// that hold them commit them when restored).
    Aborted { uncommitted_rows: u64 },
}

/// What a deployment can be told, through its mailbox.
#[derive(Debug)]
pub enum DeploymentMsg {
    /// Stop reading and windowing; what was emitted is still written.
    Stop,
    /// Give up at once, even on output not yet written.
    Abort,
    /// A checkpoint was triggered: the sources emit its barriers (and with
    /// `stop_sources` read nothing more: the job stops after it).
    Trigger { checkpoint: u64, stop_sources: bool },
    /// Checkpoint `n` is complete (sources acknowledge their input up to
    /// its positions).
    Completed(u64),
}

/// What a running deployment has to report.
#[derive(Debug)]
pub enum Update {
    Checkpoint(CheckpointEvent),
    /// Every window ending at or before this (epoch ms) is closed.
    WindowsClosed(i64),
    Ended(Result<DeploymentOutcome, JobError>),
}

/// The handle of a running deployment: a bounded mailbox to its actor.
/// Dropping it aborts the deployment.
pub struct Deployment {
    pub generation: u64,
    metrics: Arc<JobMetrics>,
    mailbox: mpsc::Sender<DeploymentMsg>,
    actor: tokio::task::JoinHandle<Result<DeploymentOutcome, JobError>>,
    outputs: Vec<String>,
    events: mpsc::Receiver<CheckpointEvent>,
    /// Every window ending at or before this is closed here.
    closed: tokio::sync::watch::Receiver<i64>,
}

/// Everything prepared before the supervisor starts.
struct Prepared {
    plan: DeploymentPlan,
    partitions: Vec<Partition>,
    files: Vec<Option<FileReader>>,
    /// The writer schema of datums without a header (Pulsar messages);
    /// `None`: from the topic's schema registry.
    message_plan: Option<DecodePlan>,
    destinations: crate::sink::Destinations,
    state: StateStore,
    state_dir: PathBuf,
    /// Where the sink stages rows for ClickHouse.
    staging_dir: PathBuf,
    /// By input: the command channel of its source (if it runs here).
    source_commands: Vec<Option<mpsc::Receiver<SourceCommand>>>,
    store: CheckpointStore,
    /// Names this deployment's state files in the store.
    instance: String,
    events: mpsc::Sender<CheckpointEvent>,
    /// The checkpoint uploader's mailbox (the deployment's actor, window
    /// task and sink write to it).
    uploader: (mpsc::Sender<UploaderMsg>, mpsc::Receiver<UploaderMsg>),
    /// The newest checkpoint completed (the sink commits up to it).
    completed: tokio::sync::watch::Receiver<u64>,
    /// Where the window task tells which windows it has closed.
    closed: tokio::sync::watch::Sender<i64>,
}

impl Deployment {
    /// Checks the plan, opens this worker's inputs and outputs, and starts.
    pub async fn start(
        plan: DeploymentPlan,
        layout: Layout,
        registry: Arc<ShuffleRegistry>,
    ) -> Result<Self, JobError> {
        let spec = &plan.spec;
        spec.validate()?;
        let partitions = partitions_of(spec, &plan.partition_names)?;
        check_plan(&plan, partitions.len())?;
        let message_plan = message_plan(spec)?;
        let mut files = Vec::with_capacity(partitions.len());
        for (input, p) in partitions.iter().enumerate() {
            files.push(match &p.source {
                PartitionSource::File(path) if plan.partition_owner[input] == plan.me => {
                    Some(FileReader::open(path).await?)
                }
                _ => None,
            });
        }
        let (destinations, outputs) = outputs::open_outputs(&plan, &layout)?;
        for output in &outputs {
            tracing::info!(generation = plan.generation, %output, "writing");
        }
        let state = StateStore::open_fresh(&layout.state)?;
        let location = match &spec.checkpoint.store {
            Some(s) => StoreLocation::parse(s)
                .map_err(|e| JobError::Checkpoint(format!("checkpoint.store: {e}")))?,
            None => StoreLocation::Dir(spec.state.dir.join("checkpoints")),
        };
        let store = CheckpointStore::open(&location, &spec.name, &spec.checkpoint.store_options())
            .await
            .map_err(|e| JobError::Checkpoint(e.to_string()))?;

        let metrics = Arc::new(JobMetrics::new(
            partitions.len(),
            spec.state.max_parallelism,
        ));
        for (input, owner) in plan.partition_owner.iter().enumerate() {
            metrics.partitions[input]
                .local
                .store(*owner == plan.me, Relaxed);
        }
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let generation = plan.generation;
        let (mut sources, mut source_commands) = (Vec::new(), Vec::new());
        for owner in &plan.partition_owner {
            if *owner == plan.me {
                let (tx, rx) = mpsc::channel(SOURCE_MAILBOX);
                sources.push(tx);
                source_commands.push(Some(rx));
            } else {
                source_commands.push(None);
            }
        }
        let (events_tx, events) = mpsc::channel(MAILBOX);
        let (uploader_tx, uploader_rx) = mpsc::channel(MAILBOX);
        let (completed_tx, completed) = tokio::sync::watch::channel(0u64);
        let (closed_tx, closed) = tokio::sync::watch::channel(i64::MIN);
        let instance = format!(
            "{}-g{generation}-{:016x}",
            plan.slots[plan.me].worker_id,
            random_u64()
        );
        let prepared = Prepared {
            plan,
            partitions,
            files,
            message_plan,
            destinations,
            state,
            state_dir: layout.state,
            staging_dir: layout.staging,
            source_commands,
            store,
            instance,
            events: events_tx,
            uploader: (uploader_tx.clone(), uploader_rx),
            completed,
            closed: closed_tx,
        };
        let supervisor = tokio::spawn(supervise(
            prepared,
            metrics.clone(),
            registry,
            stop.clone(),
            abort.clone(),
        ));
        let (mailbox, inbox) = mpsc::channel(MAILBOX);
        let actor = tokio::spawn(run_actor(
            inbox,
            Controls {
                stop,
                abort,
                metrics: metrics.clone(),
                sources,
                uploader: uploader_tx,
                completed: completed_tx,
            },
            supervisor,
        ));
        Ok(Deployment {
            generation,
            metrics,
            mailbox,
            actor,
            outputs,
            events,
            closed,
        })
    }

    /// Tells the deployment something (a deployment that has ended takes
    /// nothing more).
    pub async fn send(&self, msg: DeploymentMsg) {
        let _ = self.mailbox.send(msg).await;
    }

    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// The next checkpoint event to report, or the end of the deployment
    /// (usable in `select!` through `&mut`; events come first).
    pub async fn next(&mut self) -> Update {
        tokio::select! {
            biased;
            Some(e) = self.events.recv() => Update::Checkpoint(e),
            Ok(()) = self.closed.changed() => Update::WindowsClosed(*self.closed.borrow_and_update()),
            ended = &mut self.actor => {
                Update::Ended(ended.unwrap_or_else(|e| Err(JobError::Task("deployment", e.to_string()))))
            }
        }
    }

    /// Where results are written, for the user.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    pub fn is_done(&self) -> bool {
        self.actor.is_finished()
    }

    pub async fn wait(mut self) -> Result<DeploymentOutcome, JobError> {
        self.join().await
    }

    /// Waits for the end (usable in `select!` through `&mut`).
    pub async fn join(&mut self) -> Result<DeploymentOutcome, JobError> {
        match (&mut self.actor).await {
            Ok(result) => result,
            Err(e) => Err(JobError::Task("deployment", e.to_string())),
        }
    }
}

/// Messages a deployment's mailbox holds before a sender waits.
const MAILBOX: usize = 16;
/// Commands a source's mailbox holds; a source takes them between reads.
const SOURCE_MAILBOX: usize = 4;

/// What the actor acts on.
struct Controls {
    stop: CancellationToken,
    abort: CancellationToken,
    metrics: Arc<JobMetrics>,
    /// The command channels of the sources running here.
    sources: Vec<mpsc::Sender<SourceCommand>>,
    uploader: mpsc::Sender<UploaderMsg>,
    /// Tells the sink which checkpoints completed (never full: the newest
    /// completion is all it needs).
    completed: tokio::sync::watch::Sender<u64>,
}

/// The deployment's actor: turns messages into what its tasks watch (the
/// stop and abort tokens, the sources' and uploader's mailboxes) until the
/// supervisor ends.
/// A handle that is dropped aborts the deployment.
async fn run_actor(
    mut inbox: mpsc::Receiver<DeploymentMsg>,
    controls: Controls,
    mut supervisor: tokio::task::JoinHandle<Result<DeploymentOutcome, JobError>>,
) -> Result<DeploymentOutcome, JobError> {
    let mut open = true;
    loop {
        tokio::select! {
            ended = &mut supervisor => {
                return ended.unwrap_or_else(|e| Err(JobError::Task("supervisor", e.to_string())));
            }
            msg = inbox.recv(), if open => match msg {
                Some(DeploymentMsg::Stop) => {
                    controls.metrics.start_draining();
                    controls.stop.cancel();
                }
                Some(DeploymentMsg::Abort) | None => {
                    open = msg.is_some();
                    controls.metrics.start_draining();
                    controls.stop.cancel();
                    controls.abort.cancel();
                }
                Some(DeploymentMsg::Completed(n)) => {
                    controls.completed.send_if_modified(|c| {
                        let newer = n > *c;
                        *c = (*c).max(n);
                        newer
                    });
                    // The uploader ends only with the deployment.
                    let _ = controls.uploader.try_send(UploaderMsg::Completed(n));
                    for source in &controls.sources {
                        // A later completion acknowledges as much: one that
                        // finds a full mailbox (or a finished source) is
                        // not needed.
                        let _ = source.try_send(SourceCommand::Completed(n));
                    }
                }
                Some(DeploymentMsg::Trigger { checkpoint, stop_sources }) => {
                    let command = SourceCommand::Trigger { checkpoint, then_halt: stop_sources };
                    for source in &controls.sources {
                        // A source whose mailbox is full is far behind (or
                        // finished): the checkpoint times out rather than
                        // the deployment waiting on it.
                        if let Err(mpsc::error::TrySendError::Full(_)) = source.try_send(command) {
                            tracing::warn!(checkpoint, "a source cannot take the trigger");
                        }
                    }
                }
            },
        }
    }
}

/// The writer schema of Pulsar messages: the spec's `.avsc`, the contract
/// schema, or `None` (the topic's registry, read when subscribing).
fn message_plan(spec: &JobSpec) -> Result<Option<DecodePlan>, JobError> {
    if matches!(spec.source.kind()?, SourceKind::Pulsar(p) if p.schema_from_registry) {
        return Ok(None);
    }
    let Some(path) = &spec.schema else {
        return Ok(Some(DecodePlan::contract()));
    };
    let schema_error = |message: String| JobError::Schema {
        path: path.display().to_string(),
        message,
    };
    let json = std::fs::read_to_string(path).map_err(|e| schema_error(e.to_string()))?;
    DecodePlan::from_json(&json)
        .map(Some)
        .map_err(|e| schema_error(e.to_string()))
}

/// A random number (for names that must not collide across processes).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}
