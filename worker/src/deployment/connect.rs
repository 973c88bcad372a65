//! Connecting to the outside before the tasks start: Pulsar readers for the
//! partitions this worker reads, and ClickHouse until it is ready.

use weir_common::avro::DecodePlan;
use weir_common::rows::Table;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::spec::{JobSpec, PulsarSourceSpec, SinkKind, SourceKind, StartFrom};

use crate::source::pulsar::{PulsarPartition, PulsarStart};
use crate::source::{PulsarReader, SourceError};

use super::plan::{DeploymentPlan, Partition, PartitionSource};
use super::JobError;

/// Opens a reader for each Pulsar partition this worker reads, by input
/// index, on one client (one connection per broker).
pub(super) async fn open_pulsar(
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
    let connection = weir_common::pulsar::Connection::from(spec);
    let wire = weir_common::pulsar::wire_settings(&connection).map_err(SourceError::from)?;
    let client = weir_common::pulsar::connect(&connection)
        .await
        .map_err(SourceError::from)?;
    for input in mine {
        let PartitionSource::Pulsar(topic) = &partitions[input].source else {
            continue;
        };
        let start = match (plan.resume[input], plan.start_from) {
            (Some((position, _)), _) => PulsarStart::Checkpoint(position),
            (None, StartFrom::Checkpoint) => PulsarStart::Subscription,
            (None, StartFrom::Earliest) => PulsarStart::Earliest,
            (None, StartFrom::Latest) => PulsarStart::Latest,
        };
        let reader = PulsarReader::open(
            client.clone(),
            wire.clone(),
            pulsar_partition(plan, spec, topic),
            message_plan.clone(),
            start,
        )
        .await?;
        readers[input] = Some(reader);
    }
    // Every partition checked before any subscription moves.
    for reader in readers.iter_mut().flatten() {
        reader.start().await?;
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
pub(super) async fn wait_for_clickhouse(
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
            w.check_tables(tables).await?;
            w.kill_older_generations().await
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
