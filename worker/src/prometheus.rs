//! A deployment's metrics in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::JobMetrics;

/// Appends the metrics of `generation` on worker `worker` to `out`.
pub fn render(out: &mut String, worker: &str, generation: u64, m: &JobMetrics) {
    let s = m.snapshot();
    let labels = format!("worker=\"{worker}\"");
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    };
    metric(
        "weir_generation",
        "gauge",
        "Generation of the running deployment.",
        generation.to_string(),
    );
    metric(
        "weir_restored_checkpoint",
        "gauge",
        "The checkpoint this deployment restored its state from (0: none).",
        m.restored_checkpoint.load(Relaxed).to_string(),
    );
    metric(
        "weir_restored_key_groups",
        "gauge",
        "Key groups whose state this deployment restored from a checkpoint.",
        m.restored_key_groups.load(Relaxed).to_string(),
    );
    metric(
        "weir_restored_bytes",
        "gauge",
        "Bytes of state this deployment fetched from the checkpoint store.",
        m.restored_bytes.load(Relaxed).to_string(),
    );
    metric(
        "weir_records_in_total",
        "counter",
        "Readings read by this worker's sources.",
        s.records_in.to_string(),
    );
    metric(
        "weir_bad_records_total",
        "counter",
        "Records lost to dead letters.",
        s.bad_records.to_string(),
    );
    metric(
        "weir_dead_letters_total",
        "counter",
        "Dead-letter entries written.",
        s.dead_letters.to_string(),
    );
    metric(
        "weir_late_records_total",
        "counter",
        "Readings for windows already closed.",
        s.late_records.to_string(),
    );
    metric(
        "weir_windows_closed_total",
        "counter",
        "(device, window) results emitted.",
        s.windows_closed.to_string(),
    );
    metric(
        "weir_open_windows",
        "gauge",
        "Windows open in the window task.",
        s.open_windows.to_string(),
    );
    metric(
        "weir_rows_written_total",
        "counter",
        "Rows written by the sink.",
        s.rows_written.to_string(),
    );
    metric(
        "weir_sink_retries_total",
        "counter",
        "Sink writes that failed and were retried.",
        s.sink_retries.to_string(),
    );
    metric(
        "weir_sink_lookups_total",
        "counter",
        "Lookups the sink made for rows already written (ClickHouse).",
        s.sink_lookups.to_string(),
    );
    metric(
        "weir_state_spills_total",
        "counter",
        "Spills of window state to RocksDB.",
        s.state_spills.to_string(),
    );
    metric(
        "weir_open_accumulators",
        "gauge",
        "Window accumulators held in memory.",
        s.open_accumulators.to_string(),
    );
    metric(
        "weir_watermark_milliseconds",
        "gauge",
        "The window task's watermark (epoch ms).",
        s.watermark.to_string(),
    );
    metric(
        "weir_shuffle_records_sent_total",
        "counter",
        "Records sent to other workers.",
        s.shuffle_sent.to_string(),
    );
    metric(
        "weir_shuffle_records_received_total",
        "counter",
        "Records received from other workers.",
        s.shuffle_received.to_string(),
    );
    metric(
        "weir_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
        crate::node::resident_bytes().to_string(),
    );
    let local: Vec<_> = m
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.local.load(Relaxed))
        .collect();
    let per_partition: [(&str, &str, &str, PartitionValue); 2] = [
        (
            "weir_partition_records_total",
            "counter",
            "Readings read, per partition read here.",
            |p| p.records.load(Relaxed) as i64,
        ),
        (
            "weir_partition_watermark_milliseconds",
            "gauge",
            "Watermark per partition read here.",
            |p| p.watermark.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in per_partition {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (input, p) in &local {
            let _ = writeln!(out, "{name}{{{labels},input=\"{input}\"}} {}", value(p));
        }
    }
}

/// Reads one per-partition value.
type PartitionValue = fn(&crate::metrics::PartitionMetrics) -> i64;
