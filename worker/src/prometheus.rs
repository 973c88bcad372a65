//! A worker's `/metrics` in the OpenMetrics text format
//! (prometheus-client): whether it is connected, and the counters of the
//! deployment it runs, every series labelled `worker`.
//!
//! A scrape fills one [`Registry`] ([`registry`], then [`register_node`]
//! and [`register_deployment`]) and [`encode`]s it once: one exposition,
//! one `# EOF`. Counters are registered without their `_total`, which the
//! encoder appends; help texts without their final full stop, which it
//! adds. [`EXPOSED`] names every family as PromQL reads it: a test below
//! holds it to the output, and the chart's tests hold the Grafana dashboard
//! and the alerts to it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use weir_common::exposition::{counter, signed, unsigned};

use crate::metrics::JobMetrics;

pub use weir_common::exposition::{encode, CONTENT_TYPE};

/// Every metric family a worker exposes, by the name queries use (a
/// counter's with `_total`), and its type.
pub const EXPOSED: &[(&str, &str)] = &[
    ("weir_worker_connected", "gauge"),
    ("weir_generation", "gauge"),
    ("weir_restored_checkpoint", "gauge"),
    ("weir_restored_key_groups", "gauge"),
    ("weir_restored_bytes", "gauge"),
    ("weir_records_in_total", "counter"),
    ("weir_bad_records_total", "counter"),
    ("weir_dead_letters_total", "counter"),
    ("weir_dead_letters_by_kind_total", "counter"),
    ("weir_late_records_total", "counter"),
    ("weir_windows_closed_total", "counter"),
    ("weir_open_windows", "gauge"),
    ("weir_rows_written_total", "counter"),
    ("weir_sink_retries_total", "counter"),
    ("weir_sink_lookups_total", "counter"),
    ("weir_state_spills_total", "counter"),
    ("weir_open_accumulators", "gauge"),
    ("weir_watermark_milliseconds", "gauge"),
    ("weir_shuffle_records_sent_total", "counter"),
    ("weir_shuffle_records_received_total", "counter"),
    ("weir_shuffle_accumulators_sent_total", "counter"),
    ("weir_resident_memory_bytes", "gauge"),
    ("weir_sources", "gauge"),
    ("weir_source_wait_seconds_total", "counter"),
    ("weir_partition_records_total", "counter"),
    ("weir_partition_watermark_milliseconds", "gauge"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputLabel {
    input: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// An empty registry whose every series is labelled `worker="<worker>"`.
pub fn registry(worker: &str) -> Registry {
    Registry::with_labels(std::iter::once((
        Cow::Borrowed("worker"),
        Cow::Owned(worker.to_owned()),
    )))
}

/// Whether the control stream to the coordinator is up.
pub fn register_node(registry: &mut Registry, connected: bool) {
    registry.register(
        "weir_worker_connected",
        "Whether the control stream to the coordinator is up",
        unsigned(u64::from(connected)),
    );
}

/// The metrics of the deployment of `generation` running here.
pub fn register_deployment(registry: &mut Registry, generation: u64, m: &JobMetrics) {
    let s = m.snapshot();
    let r = registry;
    r.register(
        "weir_generation",
        "Generation of the running deployment",
        unsigned(generation),
    );
    r.register(
        "weir_restored_checkpoint",
        "The checkpoint this deployment restored its state from (0: none)",
        unsigned(m.restored_checkpoint.load(Relaxed)),
    );
    r.register(
        "weir_restored_key_groups",
        "Key groups whose state this deployment restored from a checkpoint",
        unsigned(m.restored_key_groups.load(Relaxed)),
    );
    r.register(
        "weir_restored_bytes",
        "Bytes of state this deployment fetched from the checkpoint store",
        unsigned(m.restored_bytes.load(Relaxed)),
    );
    r.register(
        "weir_records_in",
        "Readings read by this worker's sources",
        counter(s.records_in),
    );
    r.register(
        "weir_bad_records",
        "Records lost to dead letters",
        counter(s.bad_records),
    );
    r.register(
        "weir_dead_letters",
        "Dead-letter entries written",
        counter(s.dead_letters),
    );
    let by_kind = Family::<KindLabel, Counter>::default();
    for (kind, n) in m.dead_letters_by_kind() {
        by_kind.get_or_create(&KindLabel { kind }).inc_by(n);
    }
    r.register(
        "weir_dead_letters_by_kind",
        "Dead-letter entries written, by why the input could not be read",
        by_kind,
    );
    r.register(
        "weir_late_records",
        "Readings for windows already closed",
        counter(s.late_records),
    );
    r.register(
        "weir_windows_closed",
        "(device, window) results emitted",
        counter(s.windows_closed),
    );
    r.register(
        "weir_open_windows",
        "Windows open in the window task",
        unsigned(s.open_windows),
    );
    r.register(
        "weir_rows_written",
        "Rows written by the sink",
        counter(s.rows_written),
    );
    r.register(
        "weir_sink_retries",
        "Sink writes that failed and were retried",
        counter(s.sink_retries),
    );
    r.register(
        "weir_sink_lookups",
        "Lookups the sink made for rows already written (ClickHouse)",
        counter(s.sink_lookups),
    );
    r.register(
        "weir_state_spills",
        "Spills of window state to RocksDB",
        counter(s.state_spills),
    );
    r.register(
        "weir_open_accumulators",
        "Window accumulators held in memory",
        unsigned(s.open_accumulators),
    );
    r.register(
        "weir_watermark_milliseconds",
        "The window task's watermark (epoch ms)",
        signed(s.watermark),
    );
    r.register(
        "weir_shuffle_records_sent",
        "Records sent to other workers",
        counter(s.shuffle_sent),
    );
    r.register(
        "weir_shuffle_records_received",
        "Records received from other workers",
        counter(s.shuffle_received),
    );
    r.register(
        "weir_shuffle_accumulators_sent",
        "Per-device window accumulators sent to other workers in place of the records they aggregate",
        counter(s.shuffle_accumulators_sent),
    );
    r.register(
        "weir_resident_memory_bytes",
        "Resident set size of the process",
        unsigned(crate::node::resident_bytes()),
    );
    r.register(
        "weir_sources",
        "Sources reading here (one per partition)",
        unsigned(m.local_sources() as u64),
    );
    let waited = Counter::<f64, AtomicU64>::default();
    waited.inc_by(m.source_wait_micros.load(Relaxed) as f64 / 1e6);
    r.register(
        "weir_source_wait_seconds",
        "Time this worker's sources waited on full channels, summed over sources (its rate over weir_sources is the share of time they are held back)",
        waited,
    );
    let records = Family::<InputLabel, Counter>::default();
    let watermarks = Family::<InputLabel, Gauge>::default();
    for (input, p) in m.partitions.iter().enumerate() {
        if !p.local.load(Relaxed) {
            continue;
        }
        let label = InputLabel { input };
        records
            .get_or_create(&label)
            .inc_by(p.records.load(Relaxed));
        watermarks
            .get_or_create(&label)
            .set(p.watermark.load(Relaxed));
    }
    r.register(
        "weir_partition_records",
        "Readings read, per partition read here",
        records,
    );
    r.register(
        "weir_partition_watermark_milliseconds",
        "Watermark per partition read here",
        watermarks,
    );
}

#[cfg(test)]
mod tests {

    use weir_common::dead_letter::DeadLetter;

    use super::*;

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }

    fn deployment() -> JobMetrics {
        let m = JobMetrics::new(3, 8);
        m.records_in.store(1200, Relaxed);
        m.dead_letters.store(3, Relaxed);
        m.watermark.store(-5, Relaxed);
        m.source_wait_micros.store(2_500_000, Relaxed);
        for (input, records) in [(0, 700), (2, 500)] {
            m.partitions[input].local.store(true, Relaxed);
            m.partitions[input].records.store(records, Relaxed);
        }
        m.partitions[2].watermark.store(1_000, Relaxed);
        let letter = |kind: &str| {
            DeadLetter::new(1, "p-0", "offset 1".into(), 1, kind, "bad".into(), b"x", 1)
        };
        m.note_dead_letters(&[
            letter("truncated"),
            letter("truncated"),
            letter("bad \"union\"\nindex"),
        ]);
        m
    }

    #[test]
    fn a_worker_exposes_every_family_it_lists_once_in_one_exposition() {
        let mut registry = registry("w-0");
        register_node(&mut registry, true);
        register_deployment(&mut registry, 4, &deployment());
        let text = encode(&registry);
        weir_common::exposition::assert_exposes_each_once(&text, EXPOSED);
        for line in [
            "weir_worker_connected{worker=\"w-0\"} 1",
            "weir_generation{worker=\"w-0\"} 4",
            "weir_records_in_total{worker=\"w-0\"} 1200",
            "weir_dead_letters_total{worker=\"w-0\"} 3",
            "weir_dead_letters_by_kind_total{worker=\"w-0\",kind=\"truncated\"} 2",
            "weir_dead_letters_by_kind_total{worker=\"w-0\",kind=\"bad \\\"union\\\"\\nindex\"} 1",
            "weir_watermark_milliseconds{worker=\"w-0\"} -5",
            "weir_sources{worker=\"w-0\"} 2",
            "weir_source_wait_seconds_total{worker=\"w-0\"} 2.5",
            "weir_partition_records_total{worker=\"w-0\",input=\"0\"} 700",
            "weir_partition_records_total{worker=\"w-0\",input=\"2\"} 500",
            "weir_partition_watermark_milliseconds{worker=\"w-0\",input=\"2\"} 1000",
            "# HELP weir_records_in Readings read by this worker's sources.",
            "# TYPE weir_records_in counter",
        ] {
            has(&text, line);
        }
        assert!(!text.contains("input=\"1\""), "not read here:\n{text}");
    }

    #[test]
    fn an_idle_worker_shows_only_whether_it_is_connected() {
        let mut registry = registry("w \"1\"");
        register_node(&mut registry, false);
        assert_eq!(
            encode(&registry),
            "# HELP weir_worker_connected Whether the control stream to the coordinator is up.\n\
             # TYPE weir_worker_connected gauge\n\
             weir_worker_connected{worker=\"w \\\"1\\\"\"} 0\n\
             # EOF\n"
        );
    }

    #[test]
    fn no_dead_letters_no_kinds() {
        let mut registry = registry("w-0");
        register_deployment(&mut registry, 1, &JobMetrics::new(1, 1));
        let text = encode(&registry);
        has(&text, "weir_dead_letters_total{worker=\"w-0\"} 0");
        assert!(!text.contains("weir_dead_letters_by_kind"), "{text}");
    }
}
