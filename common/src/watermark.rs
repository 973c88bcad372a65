//! Event-time progress: watermarks made at sources, combined at windows.
//!
//! A partition's watermark is the highest event time it has produced minus
//! the allowed out-of-orderness. A window task's watermark is the minimum
//! over the partitions it reads, ignoring partitions that are idle, and it
//! never goes back. A window closes when that watermark reaches its end; a
//! reading for a closed window is late.
//!
//! Sources send records in batches, and the window task applies a watermark
//! only between batches. To make lateness exact per record (not dependent on
//! where a batch happened to be cut), a source cuts its batch whenever its
//! watermark crosses a window boundary: which windows are closed only changes
//! at those points, so every record is judged against the same set of closed
//! windows it would be judged against with per-record watermarks.

/// Watermark of one partition, kept by its source.
#[derive(Clone, Debug)]
pub struct WatermarkGenerator {
    max_ts: i64,
    out_of_orderness_ms: i64,
    window_ms: i64,
    /// Window index (`watermark / window_ms`) of the last watermark sent.
    sent_bucket: i64,
}

impl WatermarkGenerator {
    pub fn new(out_of_orderness_ms: i64, window_ms: i64) -> Self {
        debug_assert!(window_ms > 0 && out_of_orderness_ms >= 0);
        WatermarkGenerator {
            max_ts: i64::MIN,
            out_of_orderness_ms,
            window_ms,
            sent_bucket: i64::MIN,
        }
    }

    /// Resumes from a known watermark (after a restart from a position).
    pub fn resume_from(&mut self, watermark: i64) {
        if watermark != i64::MIN {
            self.max_ts = watermark.saturating_add(self.out_of_orderness_ms);
            self.sent_bucket = watermark.div_euclid(self.window_ms);
        }
    }

    /// Notes a record's event time. Returns `true` when the watermark has
    /// moved into a later window than the last one sent: the caller must
    /// send the records so far, then this watermark.
    #[inline]
    pub fn observe(&mut self, ts: i64) -> bool {
        if ts <= self.max_ts {
            return false;
        }
        self.max_ts = ts;
        self.current().div_euclid(self.window_ms) > self.sent_bucket
    }

    /// The partition's watermark (`i64::MIN` before any record).
    pub fn current(&self) -> i64 {
        if self.max_ts == i64::MIN {
            i64::MIN
        } else {
            self.max_ts.saturating_sub(self.out_of_orderness_ms)
        }
    }

    /// The highest event time seen (`i64::MIN` before any record).
    pub fn max_event_time(&self) -> i64 {
        self.max_ts
    }

    /// Records that the current watermark was sent; returns it.
    pub fn mark_sent(&mut self) -> i64 {
        let wm = self.current();
        if wm != i64::MIN {
            self.sent_bucket = wm.div_euclid(self.window_ms);
        }
        wm
    }
}

/// State of one input of a window task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InputState {
    watermark: i64,
    idle: bool,
}

/// The watermark of a window task: the minimum over its inputs.
#[derive(Clone, Debug)]
pub struct WatermarkCombiner {
    inputs: Vec<InputState>,
    current: i64,
}

impl WatermarkCombiner {
    pub fn new(inputs: usize) -> Self {
        WatermarkCombiner {
            inputs: vec![
                InputState {
                    watermark: i64::MIN,
                    idle: false,
                };
                inputs
            ],
            current: i64::MIN,
        }
    }

    /// The combined watermark; `i64::MAX` once every input has ended.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Watermark of one input (for status displays).
    pub fn input(&self, i: usize) -> Option<(i64, bool)> {
        self.inputs.get(i).map(|s| (s.watermark, s.idle))
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// A record arrived from input `i`: it is no longer idle.
    #[inline]
    pub fn on_record(&mut self, i: usize) {
        if let Some(s) = self.inputs.get_mut(i) {
            s.idle = false;
        }
    }

    /// Input `i` reports watermark `wm`. Returns the new combined watermark
    /// if it advanced.
    pub fn on_watermark(&mut self, i: usize, wm: i64) -> Option<i64> {
        let s = self.inputs.get_mut(i)?;
        s.idle = false;
        s.watermark = s.watermark.max(wm);
        self.recompute()
    }

    /// Input `i` has had no data for the idle timeout.
    pub fn on_idle(&mut self, i: usize) -> Option<i64> {
        self.inputs.get_mut(i)?.idle = true;
        self.recompute()
    }

    /// Input `i` ended: it will never hold the watermark back again.
    pub fn on_end(&mut self, i: usize) -> Option<i64> {
        self.on_watermark(i, i64::MAX)
    }

    /// Every input's (watermark, idle), for a checkpoint (an input that
    /// ended has watermark `i64::MAX`).
    pub fn snapshot(&self) -> Vec<(i64, bool)> {
        self.inputs.iter().map(|s| (s.watermark, s.idle)).collect()
    }

    /// Restores what [`snapshot`](Self::snapshot) returned; inputs it does
    /// not list (a job with more partitions now) start anew.
    pub fn restore(&mut self, inputs: &[(i64, bool)]) {
        for (s, &(watermark, idle)) in self.inputs.iter_mut().zip(inputs) {
            *s = InputState { watermark, idle };
        }
        self.current = i64::MIN;
        self.recompute();
    }

    /// Never below `wm` from here on: after a restore, windows up to `wm`
    /// were closed (and written) before the checkpoint, even if an input
    /// that came back from idleness holds the recomputed minimum lower.
    pub fn raise_to(&mut self, wm: i64) {
        self.current = self.current.max(wm);
    }

    fn recompute(&mut self) -> Option<i64> {
        let min = self
            .inputs
            .iter()
            .filter(|s| !s.idle)
            .map(|s| s.watermark)
            .min()?;
        (min > self.current).then(|| {
            self.current = min;
            min
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combiner_state_is_restored() {
        let mut c = WatermarkCombiner::new(3);
        c.on_watermark(0, 50);
        c.on_idle(1);
        c.on_end(2);
        assert_eq!(c.current(), 50);
        let mut back = WatermarkCombiner::new(3);
        back.restore(&c.snapshot());
        assert_eq!(back.current(), 50);
        assert_eq!(back.snapshot(), c.snapshot());
        assert_eq!(back.input(2), Some((i64::MAX, false)));
    }

    #[test]
    fn generator_asks_for_a_cut_only_at_window_boundaries() {
        let mut g = WatermarkGenerator::new(5_000, 60_000);
        assert_eq!(g.current(), i64::MIN);
        // The first record moves the watermark from nothing into window 0.
        assert!(g.observe(10_000));
        assert_eq!(g.mark_sent(), 5_000);
        assert!(!g.observe(30_000));
        assert!(!g.observe(20_000), "older records never move the watermark");
        assert!(!g.observe(64_999), "watermark 59_999 is still in window 0");
        assert!(
            g.observe(65_000),
            "watermark 60_000 reaches the end of window 0"
        );
        assert_eq!(g.mark_sent(), 60_000);
        assert!(!g.observe(65_001));
    }

    #[test]
    fn generator_resumes() {
        let mut g = WatermarkGenerator::new(5_000, 60_000);
        g.resume_from(120_000);
        assert_eq!(g.current(), 120_000);
        assert!(!g.observe(125_000));
        assert!(g.observe(185_000));
    }

    #[test]
    fn combined_is_the_minimum_and_monotonic() {
        let mut c = WatermarkCombiner::new(2);
        assert_eq!(c.on_watermark(0, 100), None, "input 1 has not reported");
        assert_eq!(c.on_watermark(1, 50), Some(50));
        assert_eq!(c.on_watermark(1, 200), Some(100));
        assert_eq!(
            c.on_watermark(0, 90),
            None,
            "an input's watermark never regresses"
        );
        assert_eq!(c.current(), 100);
        assert_eq!(c.on_watermark(9, 1_000), None, "unknown input is ignored");
    }

    #[test]
    fn idle_inputs_stop_holding_back_until_they_return() {
        let mut c = WatermarkCombiner::new(3);
        c.on_watermark(0, 1_000);
        c.on_watermark(1, 2_000);
        assert_eq!(c.current(), i64::MIN, "input 2 never reported");
        assert_eq!(c.on_idle(2), Some(1_000));
        assert_eq!(c.on_watermark(0, 3_000), Some(2_000));
        // Input 2 comes back far behind: the combined watermark stays.
        assert_eq!(c.on_watermark(2, 10), None);
        assert_eq!(c.current(), 2_000);
        assert_eq!(
            c.on_watermark(1, 5_000),
            None,
            "input 2 holds it back again"
        );
        c.on_record(2);
        assert_eq!(c.on_watermark(2, 4_000), Some(3_000));
    }

    #[test]
    fn all_idle_holds_and_end_of_input_is_infinity() {
        let mut c = WatermarkCombiner::new(2);
        c.on_watermark(0, 10);
        c.on_watermark(1, 20);
        assert_eq!(c.on_idle(0), Some(20));
        assert_eq!(c.on_idle(1), None, "all idle: no progress");
        assert_eq!(c.current(), 20);
        // An ended input never holds back, and idle ones do not either.
        assert_eq!(c.on_end(0), Some(i64::MAX));
        assert_eq!(c.on_end(1), None);
    }
}
