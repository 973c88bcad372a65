//! Wiring and supervising a deployment's tasks: sources, shuffle, window
//! and sink, connected by bounded channels. A failing task stops the
//! others; its error is the deployment's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::generator::PartitionGenerator;
use weir_common::sink::SinkError;
use weir_common::spec::SinkKind;

use crate::checkpoint::Uploader;
use crate::emitter::{now_ms, Emitter, EmitterConfig, Routing};
use crate::envelope::Envelope;
use crate::metrics::{JobMetrics, Phase};
use crate::shuffle::{run_shuffle_out, ShuffleError, ShuffleRegistry};
use crate::sink::{
    late_to_main, tables_for, Committer, SealedEpoch, SinkConfig, SinkOutcome, SinkTask, Stager,
};
use crate::source::{GeneratorReader, SourceError, SourceLimits, SourceWiring};
use crate::state::StateError;
use crate::window::{run_window_task, Inputs, WindowConfig, WindowOperator, WindowOutcome};

use super::connect::{open_pulsar, wait_for_clickhouse};
use super::plan::PartitionSource;
use super::{DeploymentOutcome, JobError, Prepared};

/// Capacity of each channel, in messages (a message is at most one batch).
const CHANNEL_CAPACITY: usize = 8;

/// Result of one task, for the supervisor.
enum Done {
    Source(Result<crate::source::SourceOutcome, SourceError>),
    Window(Result<WindowOutcome, StateError>),
    Sink(Result<SinkOutcome, SinkError>),
    Shuffle(Result<(), ShuffleError>),
}

pub(super) async fn supervise(
    prepared: Prepared,
    metrics: Arc<JobMetrics>,
    registry: Arc<ShuffleRegistry>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<DeploymentOutcome, JobError> {
    let generation = prepared.plan.generation;

    let state_dir = prepared.state_dir.clone();
    let staging_dir = prepared.staging_dir.clone();
    let result = run(prepared, metrics.clone(), registry.clone(), stop, abort).await;
    registry.unregister(generation);
    metrics.set_phase(Phase::Done);
    // Every task has ended, so RocksDB is closed. The state cannot be used
    // again (recovery comes from checkpoints), so it does not stay on disk.
    for dir in [&state_dir, &staging_dir] {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot remove a deployment's directory");
        }
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
        destinations,
        state,
        state_dir: _,
        staging_dir,
        mut source_commands,
        store,
        instance,
        events,
        uploader: (uploader_tx, uploader_rx),
        completed,
        closed,
    } = prepared;
    let spec = &plan.spec;

    // Pulsar first: a broker that refuses us fails the deployment at once.
    let mut pulsar_readers = tokio::select! {
        _ = stop.cancelled() => return Ok(DeploymentOutcome::Stopped { open_windows: 0 }),
        r = open_pulsar(&plan, &partitions, message_plan) => r?,
    };

    if let Some(w) = &destinations.clickhouse {
        let tables = tables_for(&spec.aggregates, late_to_main(spec.late.policy));
        let create = matches!(spec.sink.kind()?, SinkKind::ClickHouse(c) if c.create_tables);
        tokio::select! {
            _ = stop.cancelled() => return Ok(DeploymentOutcome::Stopped { open_windows: 0 }),
            r = wait_for_clickhouse(w, &tables, create, spec) => r?,
        }
    }
    // This worker's part of the checkpoint the generation restores.
    let restored = match &plan.restore {
        Some(from) => {
            let dir = staging_dir.join("download");
            let fetch = super::restore::fetch(
                &store,
                from,
                plan.slots[plan.me].key_groups,
                partitions.len(),
                &dir,
            );
            let r = tokio::select! {
                _ = stop.cancelled() => return Ok(DeploymentOutcome::Stopped { open_windows: 0 }),
                r = fetch => r?,
            };
            tracing::info!(
                checkpoint = from.checkpoint,
                files = r.files,
                bytes = r.bytes,
                windows = r.windows.len(),
                "restoring state from a checkpoint"
            );
            metrics
                .restored_checkpoint
                .store(from.checkpoint, std::sync::atomic::Ordering::Relaxed);
            let range = plan.slots[plan.me].key_groups;
            metrics.restored_key_groups.store(
                u64::from(range.end.saturating_sub(range.start)),
                std::sync::atomic::Ordering::Relaxed,
            );
            metrics
                .restored_bytes
                .store(r.bytes, std::sync::atomic::Ordering::Relaxed);
            Some(r)
        }
        None => None,
    };
    metrics.set_phase(Phase::Running);

    let mut tasks = JoinSet::new();
    let (sink_tx, sink_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let sink_config = match spec.sink.kind()? {
        SinkKind::ClickHouse(c) => SinkConfig {
            insert_rows: c.batch_rows,
            retry_initial: c.retry_initial.std(),
            retry_max: c.retry_max.std(),
        },
        SinkKind::Jsonl(_) => SinkConfig {
            insert_rows: usize::MAX,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        },
    };
    let mine = plan.slots[plan.me].key_groups;
    let mut restored_epochs = Vec::new();
    if let Some(r) = &restored {
        for e in &r.sink_epochs {
            let epoch =
                SealedEpoch::restored(e, &staging_dir, &destinations, plan.generation, mine)
                    .map_err(|message| JobError::Restore {
                        checkpoint: plan.restore.as_ref().map_or(0, |f| f.checkpoint),
                        message,
                    })?;
            restored_epochs.push(epoch);
        }
        restored_epochs.sort_by_key(|e| e.epoch);
    }
    let sink = SinkTask {
        stager: Stager::new(
            staging_dir.clone(),
            destinations.clone(),
            plan.generation,
            mine,
        ),
        committer: Committer::new(
            destinations,
            store.clone(),
            sink_config,
            metrics.clone(),
            abort.clone(),
            plan.lease.clone(),
        ),
        instance: instance.clone(),
        checkpoints: Some(uploader_tx.clone()),
        completed,
        restored: restored_epochs,
    };
    tasks.spawn(async move { Done::Sink(sink.run(sink_rx).await) });

    let window_ms = spec.window.size_ms();
    let max_parallelism = spec.state.max_parallelism;
    // One channel per input (partition) into the window task, so that it
    // can hold back one input while it aligns a checkpoint.
    let (input_txs, input_rxs): (Vec<_>, Vec<_>) = (0..partitions.len())
        .map(|_| mpsc::channel::<Envelope>(CHANNEL_CAPACITY))
        .unzip();
    let mut op = WindowOperator::new(
        WindowConfig {
            window_ms,
            key_groups: plan.slots[plan.me].key_groups,
            max_parallelism,
            memory_budget: usize::try_from(spec.state.memory_budget.0).unwrap_or(usize::MAX),
            late_policy: spec.late.policy,
            aggregates: spec.aggregates.clone(),
            input_names: partitions.iter().map(|p| p.name.clone()).collect(),
        },
        state,
    );
    let mut uploaded = HashMap::new();
    let behind_somewhere = restored
        .as_ref()
        .map(|r| r.behind_somewhere.clone())
        .unwrap_or_default();
    if let Some(r) = restored {
        for (name, key, bytes) in op.restore(&r.inputs, r.fired, r.windows)? {
            uploaded.insert(name, (key, bytes));
        }
    }
    {
        // The window task stops on `stop` (not only `abort`): after a stop
        // request nothing more is windowed, what was emitted is written.
        let (metrics, stop) = (metrics.clone(), stop.clone());
        let inputs = Inputs::new(input_rxs);
        tasks.spawn(async move {
            Done::Window(
                run_window_task(op, inputs, sink_tx, uploader_tx, closed, metrics, stop).await,
            )
        });
    }
    {
        let uploader = Uploader {
            store,
            generation: plan.generation,
            worker_id: plan.slots[plan.me].worker_id.clone(),
            instance,
            partition_names: partitions.iter().map(|p| p.name.clone()).collect(),
            uploaded,
            tentative: BTreeMap::new(),
            events: events.clone(),
        };
        let abort = abort.clone();
        // Not a task the deployment waits for: it ends with its inbox (the
        // window task and the sink) or on abort.
        tokio::spawn(uploader.run(uploader_rx, abort));
    }
    let input_txs: Arc<[mpsc::Sender<Envelope>]> = input_txs.into();
    registry.register(plan.generation, input_txs.clone(), metrics.clone());

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
        let mut emitter = Emitter::new(
            EmitterConfig {
                input,
                source_name: partition.name.clone(),
                batch_size: spec.source.batch_size,
                out_of_orderness_ms: spec.event_time.out_of_orderness.as_millis() as i64,
                window_ms,
                max_dead_letter_payload: usize::try_from(spec.dead_letter.max_payload.0)
                    .unwrap_or(usize::MAX),
                pre_aggregate: !behind_somewhere
                    .get(input as usize)
                    .copied()
                    .unwrap_or(false),
            },
            routing.clone(),
        );
        let pulsar_reader = pulsar_readers
            .get_mut(input as usize)
            .and_then(Option::take);
        if let Some((position, watermark)) = plan.resume[input as usize] {
            // From the checkpoint: the reader reads up to the position again
            // (a Pulsar reader from its entry) and the emitter drops that.
            emitter.restore_after(position, watermark);
        }
        // Destinations by slot: the local window task's channel for this
        // input, or a stream of this input to the peer.
        let mut destinations = Vec::with_capacity(plan.slots.len());
        for (i, slot) in plan.slots.iter().enumerate() {
            if i == plan.me {
                destinations.push(input_txs[input as usize].clone());
                continue;
            }
            let (tx, rx) = mpsc::channel::<Envelope>(CHANNEL_CAPACITY);
            destinations.push(tx);
            let (peer, worker, abort) = (
                slot.data_address.clone(),
                plan.slots[plan.me].worker_id.clone(),
                abort.clone(),
            );
            let (generation, link) = (plan.generation, registry.peer_link());
            tasks.spawn(async move {
                let out = run_shuffle_out(peer, generation, worker, input, rx, abort, link);
                Done::Shuffle(out.await)
            });
        }
        let wiring = SourceWiring {
            input,
            emitter,
            destinations,
            metrics: metrics.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            events: events.clone(),
            commands: source_commands
                .get_mut(input as usize)
                .and_then(Option::take)
                .unwrap_or_else(|| mpsc::channel(1).1),
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
    drop(input_txs);

    let mut first_error: Option<JobError> = None;
    let mut window_outcome = None;
    let mut sink_outcome = None;
    while let Some(joined) = tasks.join_next().await {
        let error = match joined {
            Ok(Done::Source(Ok(_))) | Ok(Done::Shuffle(Ok(()))) => None,
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
        (_, Some(SinkOutcome::Aborted { uncommitted })) => DeploymentOutcome::Aborted {
            uncommitted_rows: uncommitted,
        },
        (Some(WindowOutcome::Finished), Some(SinkOutcome::Finished)) => DeploymentOutcome::Finished,
        (Some(WindowOutcome::Stopped { open_windows }), _) => {
            DeploymentOutcome::Stopped { open_windows }
        }
        _ => DeploymentOutcome::Stopped { open_windows: 0 },
    })
}
