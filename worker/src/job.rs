//! Running a whole job in this process: the dataflow of one worker that
//! owns every partition and every key group.
//!
//! [`LocalJob::start`] checks everything that can be checked up front (the
//! spec, every input file's header and schema, the state and output
//! directories) so that a wrong setup fails at once with a clear error. The
//! rest runs in a supervisor task: it waits for the sink to be ready
//! (ClickHouse may be down at start: the job waits and retries), then starts
//! the dead-letter, sink, window and source tasks and watches them. A failing
//! task stops all others; its error is the job's.
//!
//! Stopping is two-staged: [`LocalJob::stop`] stops the sources and lets the
//! rest drain (every closed window is written, open windows are not
//! emitted); [`LocalJob::abort`] also gives up on unwritten output.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::generator::{GeneratorParams, PartitionGenerator};
use weir_common::keygroup::KeyGroupRange;
use weir_common::rows::Table;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::sink::jsonl::{JsonlFile, JsonlWriter};
use weir_common::sink::SinkError;
use weir_common::spec::{JobSpec, LatePolicy, SinkKind, SourceKind, SpecError, GENERATOR_EPOCH_MS};

use crate::emitter::{Emitter, EmitterConfig, Routing};
use crate::envelope::Envelope;
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::sink::{tables_for, SinkConfig, SinkOutcome, SinkTask, SinkWriter, TableWriter};
use crate::source::{
    FileReader, GeneratorReader, SourceError, SourceLimits, SourceOutcome, SourceTask,
};
use crate::state::{StateError, StateStore};
use crate::window::{run_window_task, WindowConfig, WindowOperator, WindowOutcome};

/// Capacity of each channel, in messages (a message is at most one batch).
const CHANNEL_CAPACITY: usize = 8;

/// Why a job could not run or stopped with an error.
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
}

/// The partitions a spec reads, in input order.
pub fn partitions_of(spec: &JobSpec) -> Result<Vec<Partition>, SpecError> {
    Ok(match spec.source.kind()? {
        SourceKind::AvroFiles(f) => f
            .paths
            .iter()
            .map(|p| Partition {
                name: p.display().to_string(),
                source: PartitionSource::File(p.clone()),
            })
            .collect(),
        SourceKind::Generator(g) => {
            let start_ms = g.start_ms.unwrap_or(if g.realtime {
                crate::emitter::now_ms()
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
            (0..g.partitions)
                .map(|p| Partition {
                    name: format!("generator-{p}"),
                    source: PartitionSource::Generator {
                        params: params.clone(),
                        partition: p,
                        realtime: g.realtime,
                    },
                })
                .collect()
        }
    })
}

/// Where the job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the sink (ClickHouse) to be reachable and ready.
    WaitingForSink = 0,
    Running = 1,
    /// Sources stopped; closed windows are being written.
    Draining = 2,
    Done = 3,
}

/// How the job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every input was read and every window written.
    Finished,
    /// Stopped on request; closed windows were written, these were open.
    Stopped { open_windows: usize },
    /// Aborted; this many rows were not written.
    Aborted { unwritten_rows: usize },
}

/// What a finished job reports.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub outcome: JobOutcome,
    pub metrics: MetricsSnapshot,
    pub dead_letters: u64,
    pub elapsed: Duration,
}

/// A job running in this process.
pub struct LocalJob {
    metrics: Arc<JobMetrics>,
    phase: Arc<AtomicU8>,
    stop: CancellationToken,
    abort: CancellationToken,
    supervisor: tokio::task::JoinHandle<Result<JobReport, JobError>>,
    outputs: Vec<String>,
}

/// Everything prepared before the supervisor starts.
struct Prepared {
    spec: JobSpec,
    partitions: Vec<Partition>,
    files: Vec<Option<FileReader>>,
    main: TableWriter,
    late_file: Option<JsonlFile>,
    dead_letter_file: JsonlFile,
    state: StateStore,
}

impl LocalJob {
    /// Validates the spec, opens inputs and outputs, and starts the job.
    pub async fn start(spec: JobSpec) -> Result<Self, JobError> {
        spec.validate()?;
        let partitions = partitions_of(&spec)?;
        let mut files = Vec::with_capacity(partitions.len());
        for p in &partitions {
            files.push(match &p.source {
                PartitionSource::File(path) => Some(FileReader::open(path).await?),
                PartitionSource::Generator { .. } => None,
            });
        }
        let late_to_main = spec.late.policy == LatePolicy::Output;
        let tables = tables_for(&spec.aggregates, late_to_main);
        let mut outputs = Vec::new();
        let main = match spec.sink.kind()? {
            SinkKind::Jsonl(j) => {
                let w = JsonlWriter::create(&j.dir, &tables)?;
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
        let late_file = match (&spec.late.policy, &spec.late.path) {
            (LatePolicy::File, Some(path)) => {
                outputs.push(path.display().to_string());
                Some(JsonlFile::create(path)?)
            }
            _ => None,
        };
        let dead_letter_path = spec.dead_letter_path();
        let dead_letter_file =
            JsonlFile::create(&dead_letter_path).map_err(JobError::DeadLetters)?;
        let state = StateStore::open_fresh(&spec.state.dir.join("state"))?;

        let metrics = Arc::new(JobMetrics::default());
        let phase = Arc::new(AtomicU8::new(Phase::WaitingForSink as u8));
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let prepared = Prepared {
            spec,
            partitions,
            files,
            main,
            late_file,
            dead_letter_file,
            state,
        };
        let supervisor = tokio::spawn(supervise(
            prepared,
            metrics.clone(),
            phase.clone(),
            stop.clone(),
            abort.clone(),
        ));
        Ok(LocalJob {
            metrics,
            phase,
            stop,
            abort,
            supervisor,
            outputs,
        })
    }

    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            0 => Phase::WaitingForSink,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Done,
        }
    }

    /// Where results are written, for the user.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Stops reading; everything already read is processed and written.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Gives up at once, even on output not yet written.
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    pub fn is_done(&self) -> bool {
        self.supervisor.is_finished()
    }

    pub async fn wait(self) -> Result<JobReport, JobError> {
        match self.supervisor.await {
            Ok(result) => result,
            Err(e) => Err(JobError::Task("supervisor", e.to_string())),
        }
    }
}

/// Result of one task, for the supervisor.
enum Done {
    Source(Result<SourceOutcome, SourceError>),
    Window(Result<WindowOutcome, StateError>),
    Sink(Result<SinkOutcome, SinkError>),
    DeadLetters(Result<u64, SinkError>),
}

async fn supervise(
    prepared: Prepared,
    metrics: Arc<JobMetrics>,
    phase: Arc<AtomicU8>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<JobReport, JobError> {
    let started = Instant::now();
    let spec = prepared.spec;
    let main = prepared.main;
    if let TableWriter::ClickHouse(w) = &main {
        let tables = tables_for(&spec.aggregates, spec.late.policy == LatePolicy::Output);
        let create = matches!(spec.sink.kind()?, SinkKind::ClickHouse(c) if c.create_tables);
        let ready = tokio::select! {
            _ = stop.cancelled() => None,
            r = wait_for_clickhouse(w, &tables, create, &spec) => Some(r),
        };
        match ready {
            Some(r) => r?,
            None => {
                phase.store(Phase::Done as u8, Relaxed);
                return Ok(JobReport {
                    outcome: JobOutcome::Stopped { open_windows: 0 },
                    metrics: metrics.snapshot(),
                    dead_letters: 0,
                    elapsed: started.elapsed(),
                });
            }
        }
    }
    phase.store(Phase::Running as u8, Relaxed);

    let mut tasks = JoinSet::new();
    let (dead_tx, dead_rx) = mpsc::channel(1024);
    tasks.spawn(run_dead_letters_task(
        dead_rx,
        prepared.dead_letter_file,
        abort.clone(),
    ));

    let (sink_tx, sink_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let sink_config = match spec.sink.kind()? {
        SinkKind::ClickHouse(c) => SinkConfig {
            batch_rows: c.batch_rows,
            batch_interval: c.batch_interval.std(),
            retry_initial: c.retry_initial.std(),
            retry_max: c.retry_max.std(),
        },
        SinkKind::Jsonl(_) => SinkConfig {
            batch_rows: 1,
            batch_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        },
    };
    let sink = SinkTask {
        writer: SinkWriter {
            main,
            late_file: prepared.late_file,
        },
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
            key_groups: KeyGroupRange::all(max_parallelism),
            max_parallelism,
            memory_budget: usize::try_from(spec.state.memory_budget.0).unwrap_or(usize::MAX),
            late_policy: spec.late.policy,
            aggregates: spec.aggregates.clone(),
            input_names: prepared.partitions.iter().map(|p| p.name.clone()).collect(),
        },
        prepared.state,
    );
    {
        let metrics = metrics.clone();
        let abort = abort.clone();
        tasks.spawn(async move {
            Done::Window(run_window_task(op, win_rx, sink_tx, metrics, abort).await)
        });
    }

    let limits = SourceLimits {
        rate_limit: spec.source.rate_limit,
        idle_timeout: spec.event_time.idle_timeout.std(),
    };
    let origin = Instant::now();
    for (input, (partition, file)) in prepared
        .partitions
        .into_iter()
        .zip(prepared.files)
        .enumerate()
    {
        let emitter = Emitter::new(
            EmitterConfig {
                input: input as u32,
                source_name: partition.name.clone(),
                batch_size: spec.source.batch_size,
                out_of_orderness_ms: spec.event_time.out_of_orderness.as_millis() as i64,
                window_ms,
                max_dead_letter_payload: usize::try_from(spec.dead_letter.max_payload.0)
                    .unwrap_or(usize::MAX),
            },
            Routing::single(max_parallelism),
        );
        let destinations = vec![win_tx.clone()];
        let (dead_letters, metrics, limits, stop) = (
            dead_tx.clone(),
            metrics.clone(),
            limits.clone(),
            stop.clone(),
        );
        match (partition.source, file) {
            (PartitionSource::File(_), Some(reader)) => {
                let task = SourceTask {
                    reader,
                    emitter,
                    destinations,
                    dead_letters,
                    metrics,
                    limits,
                    stop,
                };
                tasks.spawn(async move { Done::Source(task.run().await) });
            }
            (
                PartitionSource::Generator {
                    params,
                    partition,
                    realtime,
                },
                _,
            ) => {
                let generator = PartitionGenerator::new(&params, partition);
                let pace = realtime.then_some((origin, params.start_ms));
                let reader = GeneratorReader::new(generator, pace, spec.source.batch_size);
                let task = SourceTask {
                    reader,
                    emitter,
                    destinations,
                    dead_letters,
                    metrics,
                    limits,
                    stop,
                };
                tasks.spawn(async move { Done::Source(task.run().await) });
            }
            (PartitionSource::File(path), None) => {
                return Err(JobError::Task(
                    "source",
                    format!("{} was not opened", path.display()),
                ));
            }
        }
    }
    drop(win_tx);
    drop(dead_tx);

    let mut first_error: Option<JobError> = None;
    let mut window_outcome = None;
    let mut sink_outcome = None;
    let mut dead_letters = 0;
    {
        let stop = stop.clone();
        let phase = phase.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            let _ = phase.compare_exchange(
                Phase::Running as u8,
                Phase::Draining as u8,
                Relaxed,
                Relaxed,
            );
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let error = match joined {
            Ok(Done::Source(Ok(_))) => None,
            Ok(Done::Source(Err(e))) => Some(JobError::Source(e)),
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
            Ok(Done::DeadLetters(Ok(n))) => {
                dead_letters = n;
                None
            }
            Ok(Done::DeadLetters(Err(e))) => Some(JobError::DeadLetters(e)),
            Err(e) => Some(JobError::Task("job task", e.to_string())),
        };
        if let Some(e) = error {
            tracing::error!(error = %e, "job task failed; stopping the job");
            stop.cancel();
            abort.cancel();
            first_error.get_or_insert(e);
        }
    }
    phase.store(Phase::Done as u8, Relaxed);
    if let Some(e) = first_error {
        return Err(e);
    }
    let outcome = match (window_outcome, sink_outcome) {
        (_, Some(SinkOutcome::Aborted { unwritten })) => JobOutcome::Aborted {
            unwritten_rows: unwritten,
        },
        (Some(WindowOutcome::Finished), Some(SinkOutcome::Finished)) => JobOutcome::Finished,
        (Some(WindowOutcome::Stopped { open_windows }), _) => JobOutcome::Stopped { open_windows },
        _ => JobOutcome::Stopped { open_windows: 0 },
    };
    Ok(JobReport {
        outcome,
        metrics: metrics.snapshot(),
        dead_letters,
        elapsed: started.elapsed(),
    })
}

async fn run_dead_letters_task(
    rx: mpsc::Receiver<weir_common::dead_letter::DeadLetter>,
    file: JsonlFile,
    abort: CancellationToken,
) -> Done {
    Done::DeadLetters(crate::dead_letters::run_dead_letters(rx, file, abort).await)
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
            let version = w.ping().await?;
            if create {
                w.create_tables().await?;
            }
            w.check_tables(tables).await?;
            Ok::<_, SinkError>(version)
        }
        .await;
        match result {
            Ok(version) => {
                tracing::info!(url = w.url(), version = %version, "ClickHouse is ready");
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
