//! The coordinator's view of the job in the Prometheus text format.

use std::fmt::Write;

use weir_proto::admin as api;

pub fn render(
    job: &api::JobStatus,
    cluster: &api::ClusterStatus,
    checkpoints: &api::CheckpointList,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        write_metric(&mut out, name, kind, help, &value)
    };
    metric(
        "weir_job_generation",
        "gauge",
        "Current generation of the job.",
        job.generation.to_string(),
    );
    metric(
        "weir_job_workers",
        "gauge",
        "Workers in the current generation.",
        job.workers.to_string(),
    );
    metric(
        "weir_cluster_workers",
        "gauge",
        "Registered workers.",
        cluster.workers.len().to_string(),
    );
    metric(
        "weir_job_records_in_total",
        "counter",
        "Readings read in the current generation.",
        job.records_in.to_string(),
    );
    metric(
        "weir_job_rows_written_total",
        "counter",
        "Rows written in the current generation.",
        job.rows_written.to_string(),
    );
    metric(
        "weir_job_late_records_total",
        "counter",
        "Late readings in the current generation.",
        job.late_records.to_string(),
    );
    metric(
        "weir_job_bad_records_total",
        "counter",
        "Records lost to dead letters.",
        job.bad_records.to_string(),
    );
    metric(
        "weir_job_windows_closed_total",
        "counter",
        "(device, window) results emitted.",
        job.windows_closed.to_string(),
    );
    metric(
        "weir_job_records_in_per_second",
        "gauge",
        "Readings read per second.",
        format!("{:.1}", job.records_in_per_second),
    );
    metric(
        "weir_job_watermark_milliseconds",
        "gauge",
        "The job's watermark (epoch ms).",
        job.watermark.to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP weir_job_state The job's state (1 for the current one)."
    );
    let _ = writeln!(out, "# TYPE weir_job_state gauge");
    for state in [
        "waiting",
        "adopting",
        "running",
        "restarting",
        "finished",
        "stopped",
        "failed",
    ] {
        let _ = writeln!(
            out,
            "weir_job_state{{state=\"{state}\"}} {}",
            u8::from(job.state == state)
        );
    }
    checkpoint_metrics(&mut out, checkpoints);
    let _ = writeln!(
        out,
        "# HELP weir_partition_watermark_milliseconds Watermark per input partition."
    );
    let _ = writeln!(out, "# TYPE weir_partition_watermark_milliseconds gauge");
    for p in &job.partitions {
        let _ = writeln!(
            out,
            "weir_partition_watermark_milliseconds{{input=\"{}\"}} {}",
            p.input, p.watermark
        );
    }
    out
}

/// One metric without labels, with its help and type lines.
fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

fn checkpoint_metrics(out: &mut String, c: &api::CheckpointList) {
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        write_metric(out, name, kind, help, &value)
    };
    metric(
        "weir_checkpoints_completed_total",
        "counter",
        "Checkpoints completed since the coordinator started.",
        c.completed.to_string(),
    );
    metric(
        "weir_checkpoint_interval_seconds",
        "gauge",
        "Time between checkpoint triggers.",
        format!("{:.3}", c.interval_ms as f64 / 1000.0),
    );
    if let Some(ms) = c.since_last_completed_ms {
        metric(
            "weir_checkpoint_since_last_completed_seconds",
            "gauge",
            "Time since the latest checkpoint completed.",
            format!("{:.3}", ms as f64 / 1000.0),
        );
    }
    if let Some(last) = c.checkpoints.iter().find(|k| k.state == "COMPLETED") {
        metric(
            "weir_checkpoint_last_duration_seconds",
            "gauge",
            "Trigger to completion of the latest completed checkpoint.",
            format!("{:.3}", last.duration_ms as f64 / 1000.0),
        );
        metric(
            "weir_checkpoint_last_size_bytes",
            "gauge",
            "State the latest completed checkpoint references.",
            last.bytes.to_string(),
        );
        metric(
            "weir_checkpoint_last_incremental_size_bytes",
            "gauge",
            "State uploaded for the latest completed checkpoint.",
            last.incremental_bytes.to_string(),
        );
        metric(
            "weir_checkpoint_last_alignment_seconds",
            "gauge",
            "The longest barrier alignment of the latest completed checkpoint.",
            format!("{:.3}", last.alignment_ms as f64 / 1000.0),
        );
    }
    let _ = writeln!(
        out,
        "# HELP weir_checkpoints_failed_total Checkpoints that failed, by cause."
    );
    let _ = writeln!(out, "# TYPE weir_checkpoints_failed_total counter");
    for cause in [
        "declined",
        "timeout",
        "generation_replaced",
        "store",
        "inconsistent",
    ] {
        let n = c.failed_by_cause.get(cause).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "weir_checkpoints_failed_total{{cause=\"{cause}\"}} {n}"
        );
    }
}

/// Whether this coordinator runs the job, and its raft group as it sees
/// it (a follower shows only this: the job's numbers are the leader's, and
/// would be counted twice).
pub fn render_leadership(leads: bool, raft: Option<&api::RaftStatus>) -> String {
    let mut out = String::new();
    write_metric(
        &mut out,
        "weir_coordinator_leader",
        "gauge",
        "1 on the coordinator that runs the job (the raft group's leader), else 0.",
        if leads { "1" } else { "0" },
    );
    if let Some(r) = raft {
        write_metric(
            &mut out,
            "weir_raft_term",
            "gauge",
            "The raft term this coordinator is in.",
            &r.term.to_string(),
        );
        write_metric(
            &mut out,
            "weir_raft_last_log_index",
            "gauge",
            "The last entry of this coordinator's raft log.",
            &r.last_log_index.to_string(),
        );
        write_metric(
            &mut out,
            "weir_raft_last_applied_index",
            "gauge",
            "The last raft entry applied to this coordinator's job record.",
            &r.last_applied.to_string(),
        );
    }
    out
}
