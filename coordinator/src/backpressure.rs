//! How much a worker's sources are held back by the stages after them.
//!
//! Workers report only a cumulative count (milliseconds their sources
//! waited on full channels) so that the measurement costs them nothing per
//! record; the coordinator turns its growth over a few seconds into a
//! share of time, the number Flink's web UI calls backpressure.

use std::time::Duration;

use tokio::time::Instant;

/// The shortest span a share is computed over: heartbeats come about once
/// a second, and one of them can carry a long wait that began before it.
const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct BackpressureMeter {
    /// The generation, time and cumulative wait the current span began at.
    baseline: Option<(u64, Instant, u64)>,
    share: f64,
}

impl BackpressureMeter {
    /// Takes in one heartbeat's figures: `waited_ms` since the deployment
    /// of `generation` started, summed over its `sources`.
    pub fn observe(&mut self, now: Instant, generation: u64, waited_ms: u64, sources: u32) {
        let Some((g, since, base)) = self.baseline else {
            self.baseline = Some((generation, now, waited_ms));
            return;
        };
        if g != generation || waited_ms < base {
            // A new deployment counts from zero again.
            self.baseline = Some((generation, now, waited_ms));
            self.share = 0.0;
            return;
        }
        let span = now.duration_since(since);
        if span < WINDOW {
            return;
        }
        let capacity = span.as_secs_f64() * 1000.0 * f64::from(sources.max(1));
        self.share = ((waited_ms - base) as f64 / capacity).clamp(0.0, 1.0);
        self.baseline = Some((generation, now, waited_ms));
    }

    /// The share of time (0 to 1) the sources waited over the latest span.
    pub fn share(&self) -> f64 {
        self.share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_the_wait_over_the_time_of_every_source() {
        let t0 = Instant::now();
        let mut m = BackpressureMeter::default();
        m.observe(t0, 1, 100, 2);
        assert_eq!(m.share(), 0.0);
        // Not five seconds yet: nothing changes.
        m.observe(t0 + Duration::from_secs(2), 1, 4_000, 2);
        assert_eq!(m.share(), 0.0);
        // Two sources for 10 s are 20 s of source time; 5 s of it waiting.
        m.observe(t0 + Duration::from_secs(10), 1, 5_100, 2);
        assert!((m.share() - 0.25).abs() < 1e-9, "{}", m.share());
        // Idle since.
        m.observe(t0 + Duration::from_secs(16), 1, 5_100, 2);
        assert_eq!(m.share(), 0.0);
        // Never above one, whatever a report says.
        m.observe(t0 + Duration::from_secs(21), 1, 60_000, 1);
        assert_eq!(m.share(), 1.0);
    }

    #[test]
    fn a_new_deployment_starts_over() {
        let t0 = Instant::now();
        let mut m = BackpressureMeter::default();
        m.observe(t0, 1, 0, 1);
        m.observe(t0 + Duration::from_secs(5), 1, 2_500, 1);
        assert!((m.share() - 0.5).abs() < 1e-9);
        m.observe(t0 + Duration::from_secs(6), 2, 10, 1);
        assert_eq!(m.share(), 0.0);
        m.observe(t0 + Duration::from_secs(11), 2, 1_010, 1);
        assert!((m.share() - 0.2).abs() < 1e-9);
    }
}
