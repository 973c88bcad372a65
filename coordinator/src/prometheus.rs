//! The coordinator's `/metrics` in the OpenMetrics text format
//! (prometheus-client): the job, its checkpoints and workers as the admin
//! API's snapshots show them, the checkpoint histograms the coordinator
//! keeps ([`CoordinatorMetrics`]), and its raft group.
//!
//! A scrape fills one [`Registry`] — [`register_job`] on the coordinator
//! that runs the job, [`register_leadership`] on every one — and
//! [`encode`]s it once: one exposition, one `# EOF`. Counters are
//! registered without their `_total`, which the encoder appends; help texts
//! without their final full stop, which it adds. [`EXPOSED`] names every
//! family as PromQL reads it: a test below holds it to the output, and the
//! chart's tests hold the Grafana dashboard and the alerts to it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use weir_common::exposition::{counter, float, signed, unsigned, FloatGauge};
use weir_proto::admin as api;

use crate::metrics::CoordinatorMetrics;

pub use weir_common::exposition::{encode, CONTENT_TYPE};

/// Every metric family the coordinator exposes, by the name queries use (a
/// counter's with `_total`, a histogram's without `_bucket`), and its type.
pub const EXPOSED: &[(&str, &str)] = &[
    ("weir_job_generation", "gauge"),
    ("weir_job_workers", "gauge"),
    ("weir_cluster_workers", "gauge"),
    ("weir_job_records_in_total", "counter"),
    ("weir_job_rows_written_total", "counter"),
    ("weir_job_late_records_total", "counter"),
    ("weir_job_bad_records_total", "counter"),
    ("weir_job_windows_closed_total", "counter"),
    ("weir_job_records_in_per_second", "gauge"),
    ("weir_job_watermark_milliseconds", "gauge"),
    ("weir_job_state", "gauge"),
    ("weir_checkpoints_completed_total", "counter"),
    ("weir_checkpoints_failed_total", "counter"),
    ("weir_checkpoint_interval_seconds", "gauge"),
    ("weir_checkpoint_since_last_completed_seconds", "gauge"),
    ("weir_checkpoint_last_duration_seconds", "gauge"),
    ("weir_checkpoint_last_size_bytes", "gauge"),
    ("weir_checkpoint_last_incremental_size_bytes", "gauge"),
    ("weir_checkpoint_last_alignment_seconds", "gauge"),
    ("weir_checkpoint_duration_seconds", "histogram"),
    ("weir_checkpoint_size_bytes", "histogram"),
    ("weir_partition_watermark_milliseconds", "gauge"),
    ("weir_partition_watermark_lag_seconds", "gauge"),
    ("weir_worker_backpressure_ratio", "gauge"),
    ("weir_worker_heartbeat_age_seconds", "gauge"),
    ("weir_coordinator_leader", "gauge"),
    ("weir_raft_term", "gauge"),
    ("weir_raft_last_log_index", "gauge"),
    ("weir_raft_last_applied_index", "gauge"),
];

/// The job's states, each a `weir_job_state` series (1 for the current).
const STATES: [&str; 7] = [
    "waiting",
    "adopting",
    "running",
    "restarting",
    "finished",
    "stopped",
    "failed",
];

/// Every cause of `weir_checkpoints_failed_total`, 0 until one happens.
const CAUSES: [&str; 5] = [
    "declined",
    "timeout",
    "generation_replaced",
    "store",
    "inconsistent",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputLabel {
    input: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    input: u32,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The job's metrics, as the coordinator that runs it sees them at
/// `now_ms` (epoch ms, for the watermark lag).
pub fn register_job(
    registry: &mut Registry,
    job: &api::JobStatus,
    cluster: &api::ClusterStatus,
    checkpoints: &api::CheckpointList,
    metrics: &CoordinatorMetrics,
    now_ms: i64,
) {
    let r = registry;
    r.register(
        "weir_job_generation",
        "Current generation of the job",
        unsigned(job.generation),
    );
    r.register(
        "weir_job_workers",
        "Workers in the current generation",
        unsigned(u64::from(job.workers)),
    );
    r.register(
        "weir_cluster_workers",
        "Registered workers",
        unsigned(cluster.workers.len() as u64),
    );
    r.register(
        "weir_job_records_in",
        "Readings read in the current generation",
        counter(job.records_in),
    );
    r.register(
        "weir_job_rows_written",
        "Rows written in the current generation",
        counter(job.rows_written),
    );
    r.register(
        "weir_job_late_records",
        "Late readings in the current generation",
        counter(job.late_records),
    );
    r.register(
        "weir_job_bad_records",
        "Records lost to dead letters",
        counter(job.bad_records),
    );
    r.register(
        "weir_job_windows_closed",
        "(device, window) results emitted",
        counter(job.windows_closed),
    );
    r.register(
        "weir_job_records_in_per_second",
        "Readings read per second",
        float(job.records_in_per_second),
    );
    r.register(
        "weir_job_watermark_milliseconds",
        "The job's watermark (epoch ms)",
        signed(job.watermark),
    );
    let states = Family::<StateLabel, Gauge>::default();
    for state in STATES {
        states
            .get_or_create(&StateLabel { state })
            .set(i64::from(job.state == state));
    }
    r.register(
        "weir_job_state",
        "The job's state (1 for the current one)",
        states,
    );
    register_checkpoints(r, checkpoints, metrics);
    let watermarks = Family::<InputLabel, Gauge>::default();
    let lags = Family::<PartitionLabels, FloatGauge>::default();
    for p in &job.partitions {
        watermarks
            .get_or_create(&InputLabel { input: p.input })
            .set(p.watermark);
        if p.watermark != i64::MIN && !p.finished {
            let lag = PartitionLabels {
                input: p.input,
                partition: p.name.clone(),
            };
            lags.get_or_create(&lag)
                .set(now_ms.saturating_sub(p.watermark) as f64 / 1000.0);
        }
    }
    r.register(
        "weir_partition_watermark_milliseconds",
        "Watermark per input partition",
        watermarks,
    );
    r.register(
        "weir_partition_watermark_lag_seconds",
        "How far each partition's watermark is behind the coordinator's clock (partitions with a watermark that are not finished)",
        lags,
    );
    let backpressure = Family::<WorkerLabel, FloatGauge>::default();
    let heartbeat_age = Family::<WorkerLabel, FloatGauge>::default();
    for w in &cluster.workers {
        let worker = WorkerLabel {
            worker: w.worker_id.clone(),
        };
        backpressure.get_or_create(&worker).set(w.backpressure);
        heartbeat_age
            .get_or_create(&worker)
            .set(seconds(w.last_heartbeat_ms_ago));
    }
    r.register(
        "weir_worker_backpressure_ratio",
        "Share of the last seconds (0 to 1) the worker's sources waited on full channels",
        backpressure,
    );
    r.register(
        "weir_worker_heartbeat_age_seconds",
        "Time since the worker's latest heartbeat",
        heartbeat_age,
    );
}

fn register_checkpoints(r: &mut Registry, c: &api::CheckpointList, metrics: &CoordinatorMetrics) {
    r.register(
        "weir_checkpoints_completed",
        "Checkpoints completed since the coordinator started",
        counter(c.completed),
    );
    r.register(
        "weir_checkpoint_interval_seconds",
        "Time between checkpoint triggers",
        float(seconds(c.interval_ms)),
    );
    if let Some(ms) = c.since_last_completed_ms {
        r.register(
            "weir_checkpoint_since_last_completed_seconds",
            "Time since the latest checkpoint completed",
            float(seconds(ms)),
        );
    }
    if let Some(last) = c.checkpoints.iter().find(|k| k.state == "COMPLETED") {
        r.register(
            "weir_checkpoint_last_duration_seconds",
            "Trigger to completion of the latest completed checkpoint",
            float(seconds(last.duration_ms)),
        );
        r.register(
            "weir_checkpoint_last_size_bytes",
            "State the latest completed checkpoint references",
            unsigned(last.bytes),
        );
        r.register(
            "weir_checkpoint_last_incremental_size_bytes",
            "State uploaded for the latest completed checkpoint",
            unsigned(last.incremental_bytes),
        );
        r.register(
            "weir_checkpoint_last_alignment_seconds",
            "The longest barrier alignment of the latest completed checkpoint",
            float(seconds(last.alignment_ms)),
        );
    }
    r.register(
        "weir_checkpoint_duration_seconds",
        "Trigger to completion of the checkpoints completed since the coordinator started",
        metrics.checkpoint_duration.clone(),
    );
    r.register(
        "weir_checkpoint_size_bytes",
        "State uploaded by each checkpoint completed since the coordinator started (its incremental size)",
        metrics.checkpoint_size.clone(),
    );
    let failed = Family::<CauseLabel, Counter>::default();
    for cause in CAUSES {
        let n = c.failed_by_cause.get(cause).copied().unwrap_or(0);
        failed.get_or_create(&CauseLabel { cause }).inc_by(n);
    }
    r.register(
        "weir_checkpoints_failed",
        "Checkpoints that failed, by cause",
        failed,
    );
}

/// Whether this coordinator runs the job, and its raft group as it sees
/// it (a follower shows only this: the job's numbers are the leader's, and
/// would be counted twice).
pub fn register_leadership(registry: &mut Registry, leads: bool, raft: Option<&api::RaftStatus>) {
    registry.register(
        "weir_coordinator_leader",
        "1 on the coordinator that runs the job (the raft group's leader), else 0",
        unsigned(u64::from(leads)),
    );
    let Some(raft) = raft else {
        return;
    };
    registry.register(
        "weir_raft_term",
        "The raft term this coordinator is in",
        unsigned(raft.term),
    );
    registry.register(
        "weir_raft_last_log_index",
        "The last entry of this coordinator's raft log",
        unsigned(raft.last_log_index),
    );
    registry.register(
        "weir_raft_last_applied_index",
        "The last raft entry applied to this coordinator's job record",
        unsigned(raft.last_applied),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn job() -> api::JobStatus {
        api::JobStatus {
            state: "running".into(),
            generation: 3,
            workers: 2,
            records_in: 1200,
            records_in_per_second: 12.5,
            watermark: 1_000_000,
            partitions: vec![
                api::PartitionStatus {
                    input: 0,
                    name: "persistent://public/default/readings-partition-0".into(),
                    watermark: 1_000_000,
                    ..Default::default()
                },
                api::PartitionStatus {
                    input: 1,
                    name: "quoted \"name\"\\".into(),
                    watermark: i64::MIN,
                    ..Default::default()
                },
                api::PartitionStatus {
                    input: 2,
                    name: "done".into(),
                    watermark: 900_000,
                    finished: true,
                    ..Default::default()
                },
            ],
            raft: Some(api::RaftStatus {
                term: 4,
                last_log_index: 17,
                last_applied: 16,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster() -> api::ClusterStatus {
        api::ClusterStatus {
            workers: vec![
                api::WorkerStatus {
                    worker_id: "w-0".into(),
                    backpressure: 0.25,
                    last_heartbeat_ms_ago: 1500,
                    ..Default::default()
                },
                api::WorkerStatus {
                    worker_id: "w-1".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn checkpoints() -> api::CheckpointList {
        api::CheckpointList {
            completed: 7,
            interval_ms: 60_000,
            since_last_completed_ms: Some(2_500),
            failed_by_cause: BTreeMap::from([("timeout".to_owned(), 2)])
                .into_iter()
                .collect(),
            checkpoints: vec![
                api::CheckpointInfo {
                    id: 9,
                    state: "IN_PROGRESS".into(),
                    ..Default::default()
                },
                api::CheckpointInfo {
                    id: 8,
                    state: "COMPLETED".into(),
                    duration_ms: 1_250,
                    bytes: 20_000,
                    incremental_bytes: 3_000,
                    alignment_ms: 40,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    /// What a leader's scrape shows, with `metrics` observed.
    fn leader_scrape(metrics: &CoordinatorMetrics) -> String {
        let job = job();
        let mut registry = Registry::default();
        register_job(
            &mut registry,
            &job,
            &cluster(),
            &checkpoints(),
            metrics,
            1_030_000,
        );
        register_leadership(&mut registry, true, job.raft.as_ref());
        encode(&registry)
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }

    #[test]
    fn a_leader_exposes_every_family_it_lists_once_in_one_exposition() {
        let metrics = CoordinatorMetrics::default();
        metrics.checkpoint_completed(Duration::from_millis(1_250), 3_000);
        let text = leader_scrape(&metrics);
        weir_common::exposition::assert_exposes_each_once(&text, EXPOSED);
        for line in [
            "weir_job_generation 3",
            "weir_job_workers 2",
            "weir_cluster_workers 2",
            "weir_job_records_in_total 1200",
            "weir_job_records_in_per_second 12.5",
            "weir_job_state{state=\"running\"} 1",
            "weir_job_state{state=\"failed\"} 0",
            "weir_checkpoints_completed_total 7",
            "weir_checkpoints_failed_total{cause=\"timeout\"} 2",
            "weir_checkpoints_failed_total{cause=\"store\"} 0",
            "weir_checkpoint_interval_seconds 60.0",
            "weir_checkpoint_since_last_completed_seconds 2.5",
            "weir_checkpoint_last_duration_seconds 1.25",
            "weir_checkpoint_last_size_bytes 20000",
            "weir_checkpoint_last_incremental_size_bytes 3000",
            "weir_checkpoint_last_alignment_seconds 0.04",
            "weir_partition_watermark_milliseconds{input=\"0\"} 1000000",
            "weir_partition_watermark_milliseconds{input=\"1\"} -9223372036854775808",
            "weir_partition_watermark_lag_seconds{input=\"0\",partition=\"persistent://public/default/readings-partition-0\"} 30.0",
            "weir_worker_backpressure_ratio{worker=\"w-0\"} 0.25",
            "weir_worker_backpressure_ratio{worker=\"w-1\"} 0.0",
            "weir_worker_heartbeat_age_seconds{worker=\"w-0\"} 1.5",
            "weir_coordinator_leader 1",
            "weir_raft_term 4",
            "weir_raft_last_log_index 17",
            "weir_raft_last_applied_index 16",
            "# HELP weir_job_generation Current generation of the job.",
            "# TYPE weir_job_records_in counter",
            "# HELP weir_checkpoints_failed Checkpoints that failed, by cause.",
        ] {
            has(&text, line);
        }
        // Lag only for partitions with a watermark that go on.
        let lags = text
            .lines()
            .filter(|l| l.starts_with("weir_partition_watermark_lag_seconds{"))
            .count();
        assert_eq!(lags, 1, "{text}");
    }

    #[test]
    fn the_checkpoint_histograms_count_every_completed_checkpoint() {
        let metrics = CoordinatorMetrics::default();
        let text = leader_scrape(&metrics);
        has(&text, "weir_checkpoint_duration_seconds_count 0");
        has(&text, "weir_checkpoint_size_bytes_count 0");
        // Observed by the actor (a clone of the same metrics), and kept
        // whatever the bounded history shows.
        let observer = metrics.clone();
        observer.checkpoint_completed(Duration::from_millis(800), 3_000);
        observer.checkpoint_completed(Duration::from_secs(400), 5_000_000);
        let text = leader_scrape(&metrics);
        for line in [
            "# TYPE weir_checkpoint_duration_seconds histogram",
            "weir_checkpoint_duration_seconds_count 2",
            "weir_checkpoint_duration_seconds_sum 400.8",
            "weir_checkpoint_duration_seconds_bucket{le=\"0.5\"} 0",
            "weir_checkpoint_duration_seconds_bucket{le=\"1.0\"} 1",
            "weir_checkpoint_duration_seconds_bucket{le=\"300.0\"} 1",
            "weir_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 2",
            "# TYPE weir_checkpoint_size_bytes histogram",
            "weir_checkpoint_size_bytes_count 2",
            "weir_checkpoint_size_bytes_sum 5003000.0",
            "weir_checkpoint_size_bytes_bucket{le=\"1024.0\"} 0",
            "weir_checkpoint_size_bytes_bucket{le=\"4096.0\"} 1",
            "weir_checkpoint_size_bytes_bucket{le=\"4194304.0\"} 1",
            "weir_checkpoint_size_bytes_bucket{le=\"16777216.0\"} 2",
        ] {
            has(&text, line);
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut job = job();
        job.partitions[1].watermark = 1_000_000;
        let mut registry = Registry::default();
        register_job(
            &mut registry,
            &job,
            &cluster(),
            &checkpoints(),
            &CoordinatorMetrics::default(),
            1_000_000,
        );
        let text = encode(&registry);
        has(
            &text,
            r#"weir_partition_watermark_lag_seconds{input="1",partition="quoted \"name\"\\"} 0.0"#,
        );
    }

    #[test]
    fn a_follower_shows_only_that_it_does_not_lead() {
        let raft = api::RaftStatus {
            term: 2,
            ..Default::default()
        };
        let mut registry = Registry::default();
        register_leadership(&mut registry, false, Some(&raft));
        let text = encode(&registry);
        has(&text, "weir_coordinator_leader 0");
        has(&text, "weir_raft_term 2");
        assert!(!text.contains("weir_job"), "{text}");
        let mut registry = Registry::default();
        register_leadership(&mut registry, false, None);
        assert_eq!(
            encode(&registry),
            "# HELP weir_coordinator_leader 1 on the coordinator that runs the job (the raft group's leader), else 0.\n\
             # TYPE weir_coordinator_leader gauge\n\
             weir_coordinator_leader 0\n\
             # EOF\n"
        );
    }
}
