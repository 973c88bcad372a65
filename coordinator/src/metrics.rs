//! Metrics the coordinator accumulates over its life, rather than reads
//! from the job's state at each scrape: what every completed checkpoint
//! took. The actor observes them ([`CoordinatorMetrics::checkpoint_completed`]),
//! `/metrics` exposes them ([`crate::prometheus`]). One set per process,
//! created with the [`CoordinatorConfig`](crate::CoordinatorConfig) and
//! shared by clones (prometheus-client's metrics are `Arc`s): an actor that
//! leads again after an election adds to the same histograms.

use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Upper bounds of the checkpoint duration buckets, in seconds: 50 ms to
/// 5 minutes (the default checkpoint timeout is 10 minutes; slower ones
/// land in `+Inf`).
pub const DURATION_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Checkpoint size buckets: 1 KiB, then times 4 up to 4 GiB.
fn size_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1024.0, 4.0, 12)
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    /// Trigger to completion of each completed checkpoint, in seconds.
    pub checkpoint_duration: Histogram,
    /// Bytes each completed checkpoint uploaded (its incremental size).
    pub checkpoint_size: Histogram,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        CoordinatorMetrics {
            checkpoint_duration: Histogram::new(DURATION_BUCKETS),
            checkpoint_size: Histogram::new(size_buckets()),
        }
    }
}

impl CoordinatorMetrics {
    /// A checkpoint completed, `duration` after its trigger, uploading
    /// `incremental_bytes`. Called once per checkpoint.
    pub fn checkpoint_completed(&self, duration: Duration, incremental_bytes: u64) {
        self.checkpoint_duration.observe(duration.as_secs_f64());
        self.checkpoint_size.observe(incremental_bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_histograms() {
        let m = CoordinatorMetrics::default();
        m.clone()
            .checkpoint_completed(Duration::from_millis(1500), 4096);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("d", "d", m.checkpoint_duration.clone());
        registry.register("s", "s", m.checkpoint_size.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "d_sum 1.5",
            "d_count 1",
            "d_bucket{le=\"1.0\"} 0",
            "d_bucket{le=\"2.5\"} 1",
            "d_bucket{le=\"300.0\"} 1",
            "s_bucket{le=\"1024.0\"} 0",
            "s_bucket{le=\"4096.0\"} 1",
            "s_bucket{le=\"4294967296.0\"} 1",
            "s_bucket{le=\"+Inf\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
