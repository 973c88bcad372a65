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
//! Two ways to end early: [`Deployment::stop`] stops the sources and the
//! window task and lets the sink write what was already emitted;
//! [`Deployment::abort`] also gives up on unwritten output (the next
//! generation recomputes it, and the sink never writes a row twice).
//!
//! A deployment that resumes what earlier generations wrote (see
//! [`crate::resume`]) appends to its output files instead of starting them
//! anew, and its Pulsar readers seek to their recorded positions.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::avro::DecodePlan;
use weir_common::generator::{GeneratorParams, PartitionGenerator};
use weir_common::keygroup::KeyGroupRange;
use weir_common::position::Position;
use weir_common::rows::Table;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::sink::jsonl::{JsonlFile, JsonlWriter, Start};
use weir_common::sink::SinkError;
use weir_common::spec::{
    JobSpec, LatePolicy, PulsarSourceSpec, SinkKind, SourceKind, SpecError, GENERATOR_EPOCH_MS,
};

use crate::emitter::{now_ms, Emitter, EmitterConfig, Routing};
use crate::envelope::Envelope;
use crate::metrics::{JobMetrics, Phase};
use crate::resume::{ResumeFilter, ResumeTable};
use crate::shuffle::{run_shuffle_out, ShuffleError, ShuffleRegistry};
use crate::sink::{tables_for, SinkConfig, SinkOutcome, SinkTask, SinkWriter, TableWriter};
use crate::source::pulsar::PulsarPartition;
use crate::source::{
    FileReader, GeneratorReader, PulsarReader, SourceError, SourceLimits, SourceProgress,
    SourceWiring,
};
use crate::state::{StateError, StateStore};
use crate::window::{run_window_task, WindowConfig, WindowOperator, WindowOutcome};

/// Capacity of each channel, in messages (a message is at most one batch).
const CHANNEL_CAPACITY: usize = 8;
/// Rows per append to a JSON-lines file.
const JSONL_APPEND_ROWS: usize = 4_096;

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
    #[error("job task `{0}` failed unexpectedly: {1}")]
    Task(&'static str, String),
}

/// One partition of the job's input; its index in the job is its input index.
#[derive(Clone, Debug)]
pub struct Partition {
    pub name: String,
    pub source: PartitionSource,
}

#[derive(Clone, Debug)]
pub enum PartitionSource {
    File(PathBuf),
    Generator {
        params: GeneratorParams,
        partition: u32,
        realtime: bool,
    },
    /// A partition (or the whole) of a Pulsar topic, by its topic name.
    Pulsar(String),
}

/// The partitions a spec reads, in input order; `names` are the names the
/// coordinator assigned (for Pulsar, the topic's partitions). A realtime
/// generator without a start time starts now; the coordinator fixes that
/// in the spec it sends, so that every worker agrees.
pub fn partitions_of(spec: &JobSpec, names: &[String]) -> Result<Vec<Partition>, SpecError> {
    if let Some(fixed) = spec.partition_names()? {
        if fixed != names {
            return Err(SpecError::Invalid {
                origin: "the assignment".into(),
                key: "source".into(),
                message: format!(
                    "names {} partitions, the job spec {}",
                    names.len(),
                    fixed.len()
                ),
            });
        }
    }
    let names = names.to_vec();
    Ok(match spec.source.kind()? {
        SourceKind::Pulsar(_) => names
            .into_iter()
            .map(|name| Partition {
                source: PartitionSource::Pulsar(name.clone()),
                name,
            })
            .collect(),
        SourceKind::AvroFiles(f) => f
            .paths
            .iter()
            .zip(names)
            .map(|(p, name)| Partition {
                name,
                source: PartitionSource::File(p.clone()),
            })
            .collect(),
        SourceKind::Generator(g) => {
            let start_ms = g.start_ms.unwrap_or(if g.realtime {
                now_ms()
            } else {
                GENERATOR_EPOCH_MS
            });
            let params = GeneratorParams {
                devices: g.devices,
                rate: g.rate,
                disorder_ms: g.disorder.as_millis(),
                seed: g.seed,
                records: g.records,
                start_ms,
                partitions: g.partitions,
            };
            names
                .into_iter()
                .enumerate()
                .map(|(p, name)| Partition {
                    name,
                    source: PartitionSource::Generator {
                        params: params.clone(),
                        partition: p as u32,
                        realtime: g.realtime,
                    },
                })
                .collect()
        }
    })
}

/// A worker's window slot in an assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub worker_id: String,
    /// Where its shuffle service listens (host:port).
    pub data_address: String,
    pub key_groups: KeyGroupRange,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct DeploymentPlan {
    pub generation: u64,
    pub spec: JobSpec,
    /// Every worker of the generation, in slot order.
    pub slots: Vec<Slot>,
    /// This worker's slot.
    pub me: usize,
    /// Slot index of the worker reading each partition, by input index.
    pub partition_owner: Vec<usize>,
    /// Name of each partition, by input index.
    pub partition_names: Vec<String>,
    /// Where each partition resumes (position, partition watermark there),
    /// by input index; `None`: from its beginning.
    pub resume: Vec<Option<(Position, i64)>>,
    /// What earlier generations wrote; `None` when nothing.
    pub written: Option<Arc<ResumeTable>>,
}

impl DeploymentPlan {
    /// Whether this generation continues the output of earlier ones.
    pub fn resumes(&self) -> bool {
        self.written.is_some() || self.resume.iter().any(Option::is_some)
    }
}

/// Where this worker's files go.
#[derive(Clone, Debug)]
pub struct Layout {
    /// JSONL output directory (JSONL sink only).
    pub jsonl_dir: Option<PathBuf>,
    pub dead_letters: PathBuf,
    pub late_file: Option<PathBuf>,
    /// RocksDB directory of this deployment.
    pub state: PathBuf,
}

impl Layout {
    /// Where files go on a worker. Several workers may share directories
    /// (one machine, one volume), so a cluster worker puts its files in a
    /// subdirectory named after it; a single-process job (`weir local`)
    /// writes directly where the spec says. Every generation gets its own
    /// state directory, since the previous one may still be closing.
    pub fn of(spec: &JobSpec, worker_id: Option<&str>, generation: u64) -> Self {
        let own = |p: &Path| match worker_id {
            Some(id) => p.join(id),
            None => p.to_owned(),
        };
        let own_file = |p: &Path| match (worker_id, p.parent(), p.file_name()) {
            (Some(id), Some(dir), Some(name)) => dir.join(id).join(name),
            _ => p.to_owned(),
        };
        let jsonl_dir = spec.sink.jsonl.as_ref().map(|j| own(&j.dir));
        let dead_letters = match (&spec.dead_letter.path, &jsonl_dir) {
            (Some(p), _) => own_file(p),
            (None, Some(dir)) => dir.join("dead_letters.jsonl"),
            (None, None) => own(&spec.state.dir).join("dead_letters.jsonl"),
        };
        let late_file = match (spec.late.policy, &spec.late.path) {
            (LatePolicy::File, Some(p)) => Some(own_file(p)),
            _ => None,
        };
        let state = match worker_id {
            Some(id) => spec
                .state
                .dir
                .join(id)
                .join(format!("state-gen-{generation}")),
            None => spec.state.dir.join("state"),
        };
        Layout {
            jsonl_dir,
            dead_letters,
            late_file,
            state,
        }
    }
}

/// How a deployment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentOutcome {
    /// Every input was read and every window of this worker written.
    Finished,
    /// Stopped on request; what was emitted was written; these were open.
    Stopped { open_windows: usize },
    /// Aborted; this many emitted rows were not written.
    Aborted { unwritten_rows: usize },
}

/// A running deployment.
pub struct Deployment {
    pub generation: u64,
    metrics: Arc<JobMetrics>,
    stop: CancellationToken,
    abort: CancellationToken,
    supervisor: tokio::task::JoinHandle<Result<DeploymentOutcome, JobError>>,
    outputs: Vec<String>,
    progress: watch::Sender<Arc<SourceProgress>>,
}

/// Everything prepared before the supervisor starts.
struct Prepared {
    plan: DeploymentPlan,
    partitions: Vec<Partition>,
    files: Vec<Option<FileReader>>,
    /// The writer schema of datums without a header (Pulsar messages);
    /// `None`: from the topic's schema registry.
    message_plan: Option<DecodePlan>,
    main: TableWriter,
    late_file: Option<JsonlFile>,
    dead_letter_file: JsonlFile,
    state: StateStore,
    state_dir: PathBuf,
    progress: watch::Receiver<Arc<SourceProgress>>,
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
        let start = if plan.resumes() {
            Start::Append
        } else {
            Start::Empty
        };
        let mut files = Vec::with_capacity(partitions.len());
        for (input, p) in partitions.iter().enumerate() {
            files.push(match &p.source {
                PartitionSource::File(path) if plan.partition_owner[input] == plan.me => {
                    Some(FileReader::open(path).await?)
                }
                _ => None,
            });
        }
        let late_to_main = spec.late.policy == LatePolicy::Output;
        let tables = tables_for(&spec.aggregates, late_to_main);
        let mut outputs = Vec::new();
        let main = match spec.sink.kind()? {
            SinkKind::Jsonl(_) => {
                let dir = layout
                    .jsonl_dir
                    .as_deref()
                    .unwrap_or(Path::new("weir-output"));
                let w = JsonlWriter::open(dir, &tables, start)?;
                outputs.extend(w.paths().map(|p| p.display().to_string()));
                TableWriter::Jsonl(w)
            }
            SinkKind::ClickHouse(c) => {
                let password = std::env::var(&c.password_env)
                    .ok()
                    .filter(|p| !p.is_empty());
                let w = ClickHouseWriter::new(c, password);
                outputs.extend(
                    tables
                        .iter()
                        .map(|t| format!("{} at {}", w.table_name(*t), w.url())),
                );
                TableWriter::ClickHouse(Box::new(w))
            }
        };
        let late_file = match &layout.late_file {
            Some(path) => {
                outputs.push(path.display().to_string());
                Some(JsonlFile::open(path, start)?)
            }
            None => None,
        };
        let dead_letter_file =
            JsonlFile::open(&layout.dead_letters, start).map_err(JobError::DeadLetters)?;
        for output in &outputs {
            tracing::info!(generation = plan.generation, %output, "writing");
        }
        let state = StateStore::open_fresh(&layout.state)?;

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
        let (progress, progress_rx) = watch::channel(Arc::new(SourceProgress::default()));
        let prepared = Prepared {
            plan,
            partitions,
            files,
            message_plan,
            main,
            late_file,
            dead_letter_file,
            state,
            state_dir: layout.state,
            progress: progress_rx,
        };
        let supervisor = tokio::spawn(supervise(
            prepared,
            metrics.clone(),
            registry,
            stop.clone(),
            abort.clone(),
        ));
        Ok(Deployment {
            generation,
            metrics,
            stop,
            abort,
            supervisor,
            outputs,
            progress,
        })
    }

    /// What the coordinator knows is durable, for the sources.
    pub fn progress(&self, update: SourceProgress) {
        self.progress.send_replace(Arc::new(update));
    }

    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// Where results are written, for the user.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Stops reading and windowing; what was emitted is still written.
    pub fn stop(&self) {
        self.metrics.start_draining();
        self.stop.cancel();
    }

    /// Gives up at once, even on output not yet written.
    pub fn abort(&self) {
        self.stop();
        self.abort.cancel();
    }

    pub fn is_done(&self) -> bool {
        self.supervisor.is_finished()
    }

    pub async fn wait(mut self) -> Result<DeploymentOutcome, JobError> {
        self.join().await
    }

    /// Waits for the end (usable in `select!` through `&mut`).
    pub async fn join(&mut self) -> Result<DeploymentOutcome, JobError> {
        match (&mut self.supervisor).await {
            Ok(result) => result,
            Err(e) => Err(JobError::Task("supervisor", e.to_string())),
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

fn check_plan(plan: &DeploymentPlan, partitions: usize) -> Result<(), JobError> {
    let bad = |m: String| Err(JobError::Assignment(m));
    if plan.me >= plan.slots.len() {
        return bad(format!("slot {} of {}", plan.me, plan.slots.len()));
    }
    if plan.partition_owner.len() != partitions || plan.resume.len() != partitions {
        return bad(format!(
            "{} partition owners and {} resume points for {partitions} partitions",
            plan.partition_owner.len(),
            plan.resume.len()
        ));
    }
    if plan.partition_owner.iter().any(|&o| o >= plan.slots.len()) {
        return bad("a partition is assigned to a worker that is not in the assignment".into());
    }
    let max = plan.spec.state.max_parallelism;
    let mut next = 0;
    for slot in &plan.slots {
        if slot.key_groups.start != next || slot.key_groups.end < slot.key_groups.start {
            return bad(format!(
                "key groups {} do not follow {next}",
                slot.key_groups
            ));
        }
        next = slot.key_groups.end;
    }
    if next != max {
        return bad(format!(
            "key groups end at {next}, not at max_parallelism {max}"
        ));
    }
    Ok(())
}

/// Result of one task, for the supervisor.
enum Done {
    Source(Result<crate::source::SourceOutcome, SourceError>),
    Window(Result<WindowOutcome, StateError>),
    Sink(Result<SinkOutcome, SinkError>),
    DeadLetters(Result<u64, SinkError>),
    Shuffle(Result<(), ShuffleError>),
}

async fn supervise(
    prepared: Prepared,
    metrics: Arc<JobMetrics>,
    registry: Arc<ShuffleRegistry>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<DeploymentOutcome, JobError> {
    let generation = prepared.plan.generation;
    let state_dir = prepared.state_dir.clone();
    let result = run(prepared, metrics.clone(), registry.clone(), stop, abort).await;
    registry.unregister(generation);
    metrics.set_phase(Phase::Done);
    // Every task has ended, so RocksDB is closed. The state cannot be used
    // again (recovery comes from checkpoints), so it does not stay on disk.
    if let Err(e) = std::fs::remove_dir_all(&state_dir) {
        tracing::debug!(dir = %state_dir.display(), error = %e, "cannot remove the state directory");
    }
    result
}

async fn run(
    prepared: Prepared,
    metrics: Arc<JobMetrics>,
    registry: Arc<ShuffleRegistry>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<DeploymentOutcome, JobError> {
    let Prepared {
        plan,
        partitions,
        files,
        message_plan,
        main,
        late_file,
        dead_letter_file,
        state,
        state_dir: _,
        progress,
    } = prepared;
    let spec = &plan.spec;

    // Pulsar first: a broker that refuses us fails the deployment at once.
    let mut pulsar_readers = tokio::select! {
        _ = stop.cancelled() => return Ok(DeploymentOutcome::Stopped { open_windows: 0 }),
        r = open_pulsar(&plan, &partitions, message_plan) => r?,
    };

    if let TableWriter::ClickHouse(w) = &main {
        let tables = tables_for(&spec.aggregates, spec.late.policy == LatePolicy::Output);
        let create = matches!(spec.sink.kind()?, SinkKind::ClickHouse(c) if c.create_tables);
        tokio::select! {
            _ = stop.cancelled() => return Ok(DeploymentOutcome::Stopped { open_windows: 0 }),
            r = wait_for_clickhouse(w, &tables, create, spec) => r?,
        }
    }
    metrics.set_phase(Phase::Running);

    let mut tasks = JoinSet::new();
    let (dead_tx, dead_rx) = mpsc::channel(1024);
    {
        let (file, metrics, abort) = (dead_letter_file, metrics.clone(), abort.clone());
        tasks.spawn(async move {
            Done::DeadLetters(
                crate::dead_letters::run_dead_letters(dead_rx, file, metrics, abort).await,
            )
        });
    }

    let (sink_tx, sink_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let sink_config = match spec.sink.kind()? {
        SinkKind::ClickHouse(c) => SinkConfig {
            flush_rows: c.batch_rows,
            insert_rows: c.batch_rows,
            batch_interval: c.batch_interval.std(),
            retry_initial: c.retry_initial.std(),
            retry_max: c.retry_max.std(),
        },
        // Appends are cheap: whatever arrives is written at once.
        SinkKind::Jsonl(_) => SinkConfig {
            flush_rows: 1,
            insert_rows: JSONL_APPEND_ROWS,
            batch_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        },
    };
    let sink = SinkTask {
        writer: SinkWriter { main, late_file },
        config: sink_config,
        metrics: metrics.clone(),
        abort: abort.clone(),
    };
    tasks.spawn(async move { Done::Sink(sink.run(sink_rx).await) });

    let window_ms = spec.window.size_ms();
    let max_parallelism = spec.state.max_parallelism;
    let (win_tx, win_rx) = mpsc::channel::<Envelope>(CHANNEL_CAPACITY);
    let op = WindowOperator::new(
        WindowConfig {
            window_ms,
            key_groups: plan.slots[plan.me].key_groups,
            max_parallelism,
            memory_budget: usize::try_from(spec.state.memory_budget.0).unwrap_or(usize::MAX),
            late_policy: spec.late.policy,
            aggregates: spec.aggregates.clone(),
            input_names: partitions.iter().map(|p| p.name.clone()).collect(),
            resume: plan.written.clone(),
        },
        state,
    );
    {
        // The window task stops on `stop` (not only `abort`): after a stop
        // request nothing more is windowed, what was emitted is written.
        let (metrics, stop) = (metrics.clone(), stop.clone());
        tasks.spawn(async move {
            Done::Window(run_window_task(op, win_rx, sink_tx, metrics, stop).await)
        });
    }
    registry.register(plan.generation, win_tx.clone(), metrics.clone());

    // Destinations by slot: the local window task, or a stream to the peer.
    let me = &plan.slots[plan.me];
    let has_sources = plan.partition_owner.contains(&plan.me);
    let mut destinations = Vec::with_capacity(plan.slots.len());
    for (i, slot) in plan.slots.iter().enumerate() {
        if i == plan.me {
            destinations.push(win_tx.clone());
        } else {
            let (tx, rx) = mpsc::channel::<Envelope>(CHANNEL_CAPACITY);
            destinations.push(tx);
            if has_sources {
                let (peer, worker, abort) = (
                    slot.data_address.clone(),
                    me.worker_id.clone(),
                    abort.clone(),
                );
                let generation = plan.generation;
                tasks.spawn(async move {
                    Done::Shuffle(run_shuffle_out(peer, generation, worker, rx, abort).await)
                });
            }
        }
    }
    drop(win_tx);
    let owners: Vec<u16> = (0..max_parallelism)
        .map(|kg| {
            plan.slots
                .iter()
                .position(|s| s.key_groups.contains(kg))
                .unwrap_or(plan.me) as u16
        })
        .collect();
    let routing = Routing::new(owners, plan.slots.len(), Some(plan.me));

    let limits = SourceLimits {
        rate_limit: spec.source.rate_limit,
        idle_timeout: spec.event_time.idle_timeout.std(),
    };
    let origin = Instant::now();
    for (input, (partition, file)) in partitions.into_iter().zip(files).enumerate() {
        if plan.partition_owner[input] != plan.me {
            continue;
        }
        let input = input as u32;
        let resume_filter = plan
            .written
            .as_ref()
            .and_then(|t| ResumeFilter::new(t.clone(), input));
        let mut emitter = Emitter::new(
            EmitterConfig {
                input,
                source_name: partition.name.clone(),
                batch_size: spec.source.batch_size,
                out_of_orderness_ms: spec.event_time.out_of_orderness.as_millis() as i64,
                window_ms,
                max_dead_letter_payload: usize::try_from(spec.dead_letter.max_payload.0)
                    .unwrap_or(usize::MAX),
            },
            routing.clone(),
        )
        .with_resume(resume_filter);
        let pulsar_reader = pulsar_readers
            .get_mut(input as usize)
            .and_then(Option::take);
        if pulsar_reader.is_some() {
            // The reader seeks past the resume point instead of reading
            // from the beginning.
            if let Some((position, watermark)) = plan.resume[input as usize] {
                emitter.resume_after(position, watermark);
            }
        }
        let wiring = SourceWiring {
            input,
            emitter,
            destinations: destinations.clone(),
            dead_letters: dead_tx.clone(),
            metrics: metrics.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            progress: progress.clone(),
        };
        match (partition.source, file, pulsar_reader) {
            (PartitionSource::File(_), Some(reader), _) => {
                let task = wiring.with_reader(reader);
                tasks.spawn(async move { Done::Source(task.run().await) });
            }
            (PartitionSource::Pulsar(_), _, Some(reader)) => {
                let task = wiring.with_reader(reader);
                tasks.spawn(async move { Done::Source(task.run().await) });
            }
            (
                PartitionSource::Generator {
                    params,
                    partition,
                    realtime,
                },
                _,
                _,
            ) => {
                let generator = PartitionGenerator::new(&params, partition);
                // Event time `start_ms` arrived at the wall-clock instant
                // `start_ms` (a later generation catches up at once).
                let behind = u64::try_from(now_ms().saturating_sub(params.start_ms)).unwrap_or(0);
                let origin = origin
                    .checked_sub(Duration::from_millis(behind))
                    .unwrap_or(origin);
                let pace = realtime.then_some((origin, params.start_ms));
                let task = wiring.with_reader(GeneratorReader::new(
                    generator,
                    pace,
                    spec.source.batch_size,
                ));
                tasks.spawn(async move { Done::Source(task.run().await) });
            }
            (PartitionSource::File(path), None, _) => {
                return Err(JobError::Task(
                    "source",
                    format!("{} was not opened", path.display()),
                ));
            }
            (PartitionSource::Pulsar(topic), _, None) => {
                return Err(JobError::Task("source", format!("{topic} was not opened")));
            }
        }
    }
    drop(destinations);
    drop(dead_tx);

    let mut first_error: Option<JobError> = None;
    let mut window_outcome = None;
    let mut sink_outcome = None;
    while let Some(joined) = tasks.join_next().await {
        let error = match joined {
            Ok(Done::Source(Ok(_))) | Ok(Done::Shuffle(Ok(()))) | Ok(Done::DeadLetters(Ok(_))) => {
                None
            }
            Ok(Done::Source(Err(e))) => Some(JobError::Source(e)),
            Ok(Done::Shuffle(Err(e))) => Some(JobError::Shuffle(e)),
            Ok(Done::Window(Ok(o))) => {
                window_outcome = Some(o);
                None
            }
            Ok(Done::Window(Err(e))) => Some(JobError::State(e)),
            Ok(Done::Sink(Ok(o))) => {
                sink_outcome = Some(o);
                None
            }
            Ok(Done::Sink(Err(e))) => Some(JobError::Sink(e)),
            Ok(Done::DeadLetters(Err(e))) => Some(JobError::DeadLetters(e)),
            Err(e) => Some(JobError::Task("job task", e.to_string())),
        };
        if let Some(e) = error {
            if first_error.is_none() && !abort.is_cancelled() {
                tracing::error!(error = %e, generation = plan.generation, "job task failed; stopping the deployment");
            }
            stop.cancel();
            abort.cancel();
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(match (window_outcome, sink_outcome) {
        (_, Some(SinkOutcome::Aborted { unwritten })) => DeploymentOutcome::Aborted {
            unwritten_rows: unwritten,
        },
        (Some(WindowOutcome::Finished), Some(SinkOutcome::Finished)) => DeploymentOutcome::Finished,
        (Some(WindowOutcome::Stopped { open_windows }), _) => {
            DeploymentOutcome::Stopped { open_windows }
        }
        _ => DeploymentOutcome::Stopped { open_windows: 0 },
    })
}

/// Opens a reader for each Pulsar partition this worker reads, by input
/// index, on one client (one connection per broker).
async fn open_pulsar(
    plan: &DeploymentPlan,
    partitions: &[Partition],
    message_plan: Option<DecodePlan>,
) -> Result<Vec<Option<PulsarReader>>, JobError> {
    let mut readers: Vec<Option<PulsarReader>> = partitions.iter().map(|_| None).collect();
    let SourceKind::Pulsar(spec) = plan.spec.source.kind()? else {
        return Ok(readers);
    };
    let mine: Vec<usize> = (0..partitions.len())
        .filter(|&i| plan.partition_owner[i] == plan.me)
        .collect();
    if mine.is_empty() {
        return Ok(readers);
    }
    let client = weir_common::pulsar::connect(&weir_common::pulsar::Connection::from(spec))
        .await
        .map_err(SourceError::from)?;
    for input in mine {
        let PartitionSource::Pulsar(topic) = &partitions[input].source else {
            continue;
        };
        let reader = PulsarReader::open(
            client.clone(),
            pulsar_partition(plan, spec, topic),
            message_plan.clone(),
            plan.resume[input].map(|(p, _)| p),
        )
        .await?;
        readers[input] = Some(reader);
    }
    Ok(readers)
}

fn pulsar_partition(
    plan: &DeploymentPlan,
    spec: &PulsarSourceSpec,
    topic: &str,
) -> PulsarPartition {
    PulsarPartition {
        topic: topic.to_owned(),
        subscription: spec.subscription_for(&plan.spec.name),
        consumer_name: format!(
            "weir-{}-gen-{}",
            plan.slots[plan.me].worker_id, plan.generation
        ),
        receiver_queue: spec.receiver_queue,
        fallback: plan.spec.event_time.fallback,
        until_idle: spec.until_idle.map(|d| d.std()),
    }
}

/// Waits until ClickHouse answers, then creates (if asked) and checks the
/// tables. Unreachable or overloaded servers are retried; anything else is
/// an error at once.
async fn wait_for_clickhouse(
    w: &ClickHouseWriter,
    tables: &[Table],
    create: bool,
    spec: &JobSpec,
) -> Result<(), JobError> {
    let (initial, max) = match spec.sink.kind()? {
        SinkKind::ClickHouse(c) => (c.retry_initial.std(), c.retry_max.std()),
        SinkKind::Jsonl(_) => return Ok(()),
    };
    let mut delay = initial;
    let mut attempts = 0u32;
    loop {
        let result = async {
            if create {
                w.create_tables().await?;
            }
            w.check_tables(tables).await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(url = w.url(), "ClickHouse is ready");
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(10) {
                    tracing::warn!(error = %e, retry_in = ?delay, "waiting for ClickHouse");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
            }
            Err(e) => return Err(JobError::Sink(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(owners: Vec<usize>, ranges: &[(u16, u16)]) -> DeploymentPlan {
        let mut spec = JobSpec::default();
        spec.source
            .generator
            .as_mut()
            .expect("generator")
            .partitions = owners.len() as u32;
        DeploymentPlan {
            generation: 1,
            spec,
            slots: ranges
                .iter()
                .enumerate()
                .map(|(i, &(start, end))| Slot {
                    worker_id: format!("w{i}"),
                    data_address: String::new(),
                    key_groups: KeyGroupRange { start, end },
                })
                .collect(),
            me: 0,
            resume: vec![None; owners.len()],
            partition_names: (0..owners.len())
                .map(|p| format!("generator-{p}"))
                .collect(),
            partition_owner: owners,
            written: None,
        }
    }

    #[test]
    fn inconsistent_assignments_are_rejected() {
        assert!(check_plan(&plan(vec![0, 1], &[(0, 64), (64, 128)]), 2).is_ok());
        assert!(
            check_plan(&plan(vec![0, 2], &[(0, 64), (64, 128)]), 2).is_err(),
            "unknown owner"
        );
        assert!(
            check_plan(&plan(vec![0, 1], &[(0, 60), (64, 128)]), 2).is_err(),
            "gap"
        );
        assert!(
            check_plan(&plan(vec![0, 1], &[(0, 64), (64, 100)]), 2).is_err(),
            "short"
        );
        assert!(
            check_plan(&plan(vec![0], &[(0, 128)]), 2).is_err(),
            "owners"
        );
    }

    #[test]
    fn cluster_workers_get_their_own_files() {
        let mut spec = JobSpec::default();
        spec.sink.jsonl = Some(weir_common::spec::JsonlSinkSpec { dir: "/out".into() });
        let local = Layout::of(&spec, None, 3);
        assert_eq!(local.jsonl_dir, Some(PathBuf::from("/out")));
        assert_eq!(local.dead_letters, PathBuf::from("/out/dead_letters.jsonl"));
        assert_eq!(local.state, PathBuf::from("weir-data/state"));
        let w = Layout::of(&spec, Some("w-1"), 3);
        assert_eq!(w.jsonl_dir, Some(PathBuf::from("/out/w-1")));
        assert_eq!(w.dead_letters, PathBuf::from("/out/w-1/dead_letters.jsonl"));
        assert_eq!(w.state, PathBuf::from("weir-data/w-1/state-gen-3"));
        spec.dead_letter.path = Some("/dl/bad.jsonl".into());
        assert_eq!(
            Layout::of(&spec, Some("w-1"), 1).dead_letters,
            PathBuf::from("/dl/w-1/bad.jsonl")
        );
    }
}
