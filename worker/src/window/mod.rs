//! The window operator: per-device tumbling windows over event time.
//!
//! [`WindowOperator`] is synchronous and owns its state, so every rule of
//! the contract can be tested without a runtime; [`run_window_task`]
//! (`task.rs`) is the actor around it. Accumulators of open windows live in
//! memory, one pane (`pane.rs`) per window end, until their footprint
//! exceeds the memory budget: then every pane is spilled to RocksDB as one
//! sorted file and memory starts over (see [`crate::state`]). When the
//! watermark reaches a window's end, the window starts closing
//! (`closing.rs`): its accumulators are merged from memory and — if it was
//! ever spilled — RocksDB in key order (key group, then device), turned into
//! rows and handed to the sink in messages of at most [`EMIT_ROWS`] results,
//! and the window's state is dropped. The task sends each message (waiting
//! for the sink if it must) before it asks for the next, so closing a window
//! of millions of devices never holds more than a message of rows and a
//! chunk read from RocksDB besides the accumulators.

use std::collections::{BTreeMap, VecDeque};

use weir_common::keygroup::KeyGroupRange;
use weir_common::reading::Reading;
use weir_common::rows::LateReadingRow;
use weir_common::sink::OutputBatch;
use weir_common::spec::{Aggregate, LatePolicy};
use weir_common::time::{datetime_seconds, window_end};
use weir_common::watermark::WatermarkCombiner;

pub mod align;
mod closing;
pub(crate) mod index;
pub mod inputs;
mod pane;
mod prefetch;
pub mod snapshot;
mod task;

use closing::Closing;
pub use inputs::Inputs;
use pane::{key_group_of_key, sensor_of, PagePool, Pane};
pub use snapshot::{OperatorSnapshot, RestoredFile, RestoredWindow};
pub use task::{run_window_task, SinkMsg, WindowOutcome};

use crate::envelope::{PartialBatch, RecordBatch};
use crate::state::{StateError, StateStore};

/// Most (device, window) results per message to the sink: each becomes a
/// row in each output table.
pub const EMIT_ROWS: usize = 2048;

/// How many accumulators ahead a walk in key order (spill, emission) starts
/// loading one: key order is random order in memory.
const PREFETCH_AHEAD: usize = 8;

/// What the operator is configured to do.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    pub window_ms: i64,
    pub key_groups: KeyGroupRange,
    pub max_parallelism: u16,
    /// Bytes of in-memory accumulators before spilling to RocksDB.
    pub memory_budget: usize,
    pub late_policy: LatePolicy,
    pub aggregates: Vec<Aggregate>,
    /// Name of every input (partition), by input index.
    pub input_names: Vec<String>,
}

/// What handling one message produced.
#[derive(Default, Debug)]
pub struct Produced {
    pub rows: OutputBatch,
    /// (device, window) results closed.
    pub windows: u64,
    /// Late readings seen.
    pub late: u64,
}

pub struct WindowOperator {
    config: WindowConfig,
    sensors_local: bool,
    aggregates_1m: bool,
    combiner: WatermarkCombiner,
    panes: BTreeMap<i64, Pane>,
    /// Windows the watermark has passed, oldest first, being emitted.
    closing: VecDeque<Closing>,
    state: StateStore,
    spills: u64,
    /// The latest window end fired.
    fired: i64,
    /// Emptied pages of accumulators, for new panes.
    pool: PagePool,
    /// Scratch space of `on_records` (kept to reuse its allocation):
    /// (window end, index in the batch) of the readings in time.
    by_window: Vec<(i64, u32)>,
}

impl WindowOperator {
    pub fn new(config: WindowConfig, state: StateStore) -> Self {
        let memory_budget = config.memory_budget;
        WindowOperator {
            fired: i64::MIN,
            sensors_local: config.aggregates.contains(&Aggregate::SensorsLocal),
            aggregates_1m: config.aggregates.contains(&Aggregate::SensorAggregates1m),
            combiner: WatermarkCombiner::new(config.input_names.len()),
            config,
            panes: BTreeMap::new(),
            closing: VecDeque::new(),
            state,
            spills: 0,
            by_window: Vec::new(),
            pool: PagePool::new(memory_budget),
        }
    }

    /// The operator's watermark (`i64::MAX` once every input ended).
    pub fn watermark(&self) -> i64 {
        self.combiner.current()
    }

    /// Every input ended and every window was emitted.
    pub fn is_finished(&self) -> bool {
        self.combiner.current() == i64::MAX && self.panes.is_empty() && self.closing.is_empty()
    }

    /// Windows not emitted completely yet.
    pub fn open_windows(&self) -> usize {
        self.panes.len() + self.closing.len()
    }

    pub fn accumulators_in_memory(&self) -> usize {
        let open: usize = self.panes.values().map(Pane::len).sum();
        open + self
            .closing
            .iter()
            .map(Closing::remaining_in_memory)
            .sum::<usize>()
    }

    /// Bytes of accumulators held in memory (open windows; closing ones
    /// are emitted before the next input is taken).
    fn memory(&self) -> usize {
        self.panes.values().map(Pane::bytes).sum()
    }

    pub fn spills(&self) -> u64 {
        self.spills
    }

    /// Folds a batch of one input into the open windows.
    pub fn on_records(
        &mut self,
        batch: &RecordBatch,
        out: &mut Produced,
    ) -> Result<(), StateError> {
        let wm = self.combiner.current();
        self.combiner.on_record(batch.input as usize);
        // Which window each reading goes to (or that it is late) depends
        // only on the watermark as the batch arrived: sort the readings out
        // first, then add them window by window, in batch order.
        let mut by_window = std::mem::take(&mut self.by_window);
        by_window.clear();
        for (i, (r, pos)) in batch.readings.iter().zip(&batch.positions).enumerate() {
            let end = window_end(r.timestamp_ms, self.config.window_ms);
            if end <= wm {
                self.late(batch.input, r, &pos.to_string(), end, wm, out);
                continue;
            }
            // A batch holds far fewer than 2^32 readings.
            by_window.push((end, i as u32));
        }
        // Most batches fall in one window; otherwise sort (the pairs are
        // distinct, so a window's readings stay in batch order).
        if by_window.first().map(|f| f.0) != by_window.last().map(|l| l.0) {
            by_window.sort_unstable();
        }
        for run in by_window.chunk_by(|a, b| a.0 == b.0) {
            self.panes
                .entry(run[0].0)
                .or_default()
                .add_all(&batch.readings, run, &mut self.pool);
        }
        self.by_window = by_window;
        if self.memory() > self.config.memory_budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Merges readings another worker aggregated (see [`crate::combine`]).
    /// Their window cannot have closed here; if it has, that is a bug, and
    /// an error rather than a loss: the readings cannot be written to the
    /// late output one by one.
    pub fn on_partials(&mut self, batch: PartialBatch) -> Result<(), StateError> {
        let wm = self.combiner.current();
        self.combiner.on_record(batch.input as usize);
        if batch.partials.is_empty() {
            return Ok(());
        }
        if batch.window_end.rem_euclid(self.config.window_ms) != 0 {
            return Err(StateError::MalformedPartials {
                input: batch.input,
                problem: format!(
                    "{} ms is not the end of a window of {} ms",
                    batch.window_end, self.config.window_ms
                ),
            });
        }
        if batch.window_end <= wm {
            return Err(StateError::LatePartials {
                input: batch.input,
                window_end: batch.window_end,
                watermark: wm,
                readings: batch.readings(),
            });
        }
        let pane = self.panes.entry(batch.window_end).or_default();
        for (sensor, acc) in batch.partials {
            pane.merge(sensor, acc, &mut self.pool);
        }
        if self.memory() > self.config.memory_budget {
            self.spill()?;
        }
        Ok(())
    }

    #[cold]
    fn late(
        &mut self,
        input: u32,
        r: &Reading,
        position: &str,
        end: i64,
        wm: i64,
        out: &mut Produced,
    ) {
        out.late += 1;
        if self.config.late_policy == LatePolicy::Log {
            tracing::debug!(
                sensor = r.sensor_id,
                timestamp_ms = r.timestamp_ms,
                watermark_ms = wm,
                "late reading"
            );
            return;
        }
        let source = self
            .config
            .input_names
            .get(input as usize)
            .cloned()
            .unwrap_or_else(|| format!("input-{input}"));
        out.rows.late.push(LateReadingRow {
            device_id: Reading::device_id(r.sensor_id),
            event_time: datetime_seconds(r.timestamp_ms),
            timestamp_ms: r.timestamp_ms,
            window_end: datetime_seconds(end),
            watermark_ms: wm,
            source,
            position: position.to_owned(),
            reading: r.to_json().to_string(),
        });
    }

    /// An input's watermark; windows it closes are emitted by
    /// [`WindowOperator::emit`].
    pub fn on_watermark(&mut self, input: u32, wm: i64) {
        if let Some(w) = self.combiner.on_watermark(input as usize, wm) {
            self.fire(w);
        }
    }

    pub fn on_idle(&mut self, input: u32) {
        if let Some(w) = self.combiner.on_idle(input as usize) {
            self.fire(w);
        }
    }

    pub fn on_end(&mut self, input: u32) {
        if let Some(w) = self.combiner.on_end(input as usize) {
            self.fire(w);
        }
    }

    /// Starts closing every window whose end the watermark has reached;
    /// [`WindowOperator::emit`] then hands out their rows.
    fn fire(&mut self, wm: i64) {
        let mp = self.config.max_parallelism;
        while let Some(entry) = self.panes.first_entry() {
            if *entry.key() > wm {
                break;
            }
            let (end, pane) = entry.remove_entry();
            self.fired = self.fired.max(end);
            self.closing.push_back(Closing::new(end, pane, mp));
        }
    }

    /// Whether closed windows have rows left to emit.
    pub fn has_output(&self) -> bool {
        !self.closing.is_empty()
    }

    /// Emits the rows of up to `max` (device, window) results of closing
    /// windows into `out`, oldest window first, each window in key order;
    /// deletes a window's state once it is emitted. Whatever is read from
    /// RocksDB at once is at most `max` accumulators.
    pub fn emit(&mut self, max: usize, out: &mut Produced) -> Result<(), StateError> {
        let max = max.max(1);
        let range = self.config.key_groups;
        let (sensors_local, aggregates_1m) = (self.sensors_local, self.aggregates_1m);
        let mut emitted = 0;
        while emitted < max {
            let Some(c) = self.closing.front_mut() else {
                break;
            };
            let end = c.end;
            let start = end - self.config.window_ms;
            let rows = &mut out.rows;
            if sensors_local {
                rows.sensors_local.reserve(max - emitted);
            }
            if aggregates_1m {
                rows.aggregates.reserve(max - emitted);
            }
            let n = c.emit(&self.state, range, max - emitted, |sensor, acc| {
                if sensors_local {
                    rows.sensors_local.push(acc.sensors_local_row(sensor, end));
                }
                if aggregates_1m {
                    rows.aggregates.push(acc.aggregates_row(sensor, start, end));
                }
            })?;
            emitted += n;
            out.windows += n as u64;
            if emitted < max {
                if let Some(done) = self.closing.pop_front() {
                    done.release(&mut self.pool);
                }
                self.state.drop_window(end)?;
            }
        }
        Ok(())
    }

    /// Moves every in-memory accumulator into RocksDB (one sorted file per
    /// window) and frees the memory they held.
    pub fn spill(&mut self) -> Result<(), StateError> {
        let mp = self.config.max_parallelism;
        for (&end, pane) in self.panes.iter_mut() {
            if pane.len() == 0 {
                continue;
            }
            let order = pane.sorted(mp);
            self.state.spill(
                end,
                order.iter().enumerate().filter_map(|(k, &(key, slot))| {
                    // Key order is random in memory: load ahead.
                    if let Some(&(_, ahead)) = order.get(k + PREFETCH_AHEAD) {
                        pane.prefetch(ahead);
                    }
                    pane.get(slot)
                        .map(|acc| (key_group_of_key(key), sensor_of(key), acc))
                }),
            )?;
            std::mem::replace(pane, Pane::spilled()).release(&mut self.pool);
        }
        self.spills += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::position::Position;

    const MIN: i64 = 60_000;
    /// 2025-10-10 00:00:00 UTC, a minute boundary.
    const T0: i64 = 1_760_054_400_000;

    fn operator(
        inputs: usize,
        budget: usize,
        policy: LatePolicy,
    ) -> (WindowOperator, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::open_fresh(&dir.path().join("state")).expect("state");
        let config = WindowConfig {
            window_ms: MIN,
            key_groups: KeyGroupRange::all(128),
            max_parallelism: 128,
            memory_budget: budget,
            late_policy: policy,
            aggregates: vec![Aggregate::SensorsLocal, Aggregate::SensorAggregates1m],
            input_names: (0..inputs).map(|i| format!("p{i}")).collect(),
        };
        (WindowOperator::new(config, state), dir)
    }

    fn reading(sensor: i32, ts: i64, temp: f64) -> Reading {
        Reading {
            sensor_id: sensor,
            sensor_type: 1,
            timestamp_ms: ts,
            temperature: temp,
            status: 1,
            ..Reading::default()
        }
    }

    /// Emits every row of the windows that closed, in small messages.
    fn drain(op: &mut WindowOperator, out: &mut Produced) {
        while op.has_output() {
            let before = out.windows;
            op.emit(7, out).expect("emit");
            assert!(out.windows - before <= 7);
        }
    }

    fn batch(input: u32, readings: Vec<Reading>) -> RecordBatch {
        let positions = (0..readings.len() as u64).map(Position::Offset).collect();
        RecordBatch {
            input,
            readings,
            positions,
        }
    }

    /// (device, window end seconds, readings, average temperature) of the
    /// aggregates rows produced.
    fn summary(p: &Produced) -> Vec<(String, u32, u64, f64)> {
        p.rows
            .aggregates
            .iter()
            .map(|r| {
                (
                    r.device_id.to_string(),
                    r.window_end,
                    r.readings,
                    r.temperature_avg,
                )
            })
            .collect()
    }

    fn secs(ms: i64) -> u32 {
        (ms / 1000) as u32
    }

    /// What a sending worker's pre-aggregation turns `readings` into.
    fn partials(input: u32, readings: &[Reading]) -> Vec<PartialBatch> {
        let mut p = crate::combine::PreAggregator::default();
        for r in readings {
            let end = weir_common::time::window_end(r.timestamp_ms, MIN);
            assert!(p.add(0, end, r));
        }
        let mut out = Vec::new();
        p.take_through(input, i64::MAX, |_, b| out.push(b));
        out
    }

    #[test]
    fn pre_aggregated_readings_give_the_rows_of_the_readings() {
        // Two inputs: input 0 local readings, input 1 from another worker.
        let local: Vec<Reading> = (0..300)
            .map(|i| reading(i % 7, T0 + i64::from(i) * 300, f64::from(i)))
            .collect();
        let remote: Vec<Reading> = (0..300)
            .map(|i| reading(i % 11, T0 + 150 + i64::from(i) * 300, f64::from(i) / 3.0))
            .collect();
        let run = |pre_aggregate: bool, budget: usize| {
            let (mut op, _dir) = operator(2, budget, LatePolicy::Output);
            let mut out = Produced::default();
            for chunk in 0..3 {
                let part = |v: &[Reading]| v[chunk * 100..(chunk + 1) * 100].to_vec();
                op.on_records(&batch(0, part(&local)), &mut out)
                    .expect("records");
                if pre_aggregate {
                    for b in partials(1, &part(&remote)) {
                        op.on_partials(b).expect("partials");
                    }
                } else {
                    op.on_records(&batch(1, part(&remote)), &mut out)
                        .expect("records");
                }
            }
            op.on_end(0);
            op.on_end(1);
            drain(&mut op, &mut out);
            let mut rows = out.rows.aggregates.clone();
            rows.sort_by(|a, b| (&a.device_id, a.window_end).cmp(&(&b.device_id, b.window_end)));
            let mut local_rows = out.rows.sensors_local.clone();
            local_rows.sort_by(|a, b| (&a.device_id, a.time).cmp(&(&b.device_id, b.time)));
            (rows, local_rows)
        };
        let (rows, local_rows) = run(false, 1 << 20);
        assert_eq!(rows.len(), 11 * 2, "11 devices, 2 windows");
        for budget in [1 << 20, 1] {
            let (pre_rows, pre_local) = run(true, budget);
            assert_eq!(pre_rows.len(), rows.len());
            for (a, b) in pre_rows.iter().zip(&rows) {
                assert_eq!(
                    (&a.device_id, a.window_end, a.readings),
                    (&b.device_id, b.window_end, b.readings)
                );
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y.abs().max(1.0);
                assert!(close(a.temperature_avg, b.temperature_avg), "{a:?} {b:?}");
                assert_eq!(
                    (a.temperature_min, a.temperature_max),
                    (b.temperature_min, b.temperature_max)
                );
            }
            assert_eq!(pre_local.len(), local_rows.len());
            for (a, b) in pre_local.iter().zip(&local_rows) {
                assert_eq!(
                    (&a.device_id, a.time, a.status),
                    (&b.device_id, b.time, b.status)
                );
                assert_eq!((&a.customer_id, &a.site_id), (&b.customer_id, &b.site_id));
            }
        }
    }

    #[test]
    fn pre_aggregated_readings_for_a_closed_window_are_an_error_not_a_loss() {
        let (mut op, _dir) = operator(1, 1 << 20, LatePolicy::Output);
        op.on_watermark(0, T0 + MIN);
        let late = partials(0, &[reading(1, T0 + 5, 1.0)]);
        let err = op
            .on_partials(late.into_iter().next().expect("a batch"))
            .expect_err("late");
        assert!(
            matches!(err, StateError::LatePartials { readings: 1, window_end, .. } if window_end == T0 + MIN),
            "{err}"
        );
        // From a peer that is not right: not a window's end.
        let mut odd = partials(0, &[reading(1, T0 + 2 * MIN, 1.0)]);
        odd[0].window_end += 1;
        let err = op.on_partials(odd.remove(0)).expect_err("odd end");
        assert!(matches!(err, StateError::MalformedPartials { .. }), "{err}");
    }

    #[test]
    fn windows_closed_before_a_checkpoint_stay_closed_after_its_restore() {
        // Input 0 went idle, windows up to T0 + 2 min closed without it,
        // then it came back behind them; the checkpoint holds its watermark
        // (T0) and the last window fired.
        let (mut op, _dir) = operator(2, 1 << 20, LatePolicy::Output);
        op.restore(
            &[(T0, false), (T0 + 3 * MIN, false)],
            T0 + 2 * MIN,
            Vec::new(),
        )
        .expect("restore");
        assert_eq!(op.watermark(), T0 + 2 * MIN);
        let mut out = Produced::default();
        op.on_records(
            &batch(
                0,
                vec![
                    reading(1, T0 + MIN + 5, 1.0),
                    reading(1, T0 + 2 * MIN + 5, 2.0),
                ],
            ),
            &mut out,
        )
        .expect("records");
        assert_eq!(out.late, 1, "the window ending at T0 + 2 min was written");
        assert_eq!(out.rows.late.len(), 1);
        // A partition the checkpoint does not know (added since) is held to
        // the same.
        let (mut op, _dir) = operator(3, 1 << 20, LatePolicy::Output);
        op.restore(
            &[(T0 + 3 * MIN, false), (T0 + 3 * MIN, false)],
            T0 + 2 * MIN,
            Vec::new(),
        )
        .expect("restore");
        let mut out = Produced::default();
        op.on_records(&batch(2, vec![reading(1, T0 + 5, 1.0)]), &mut out)
            .expect("records");
        assert_eq!(out.late, 1);
    }

    #[test]
    fn window_boundaries_are_half_open() {
        let (mut op, _dir) = operator(1, 1 << 20, LatePolicy::Output);
        let mut out = Produced::default();
        op.on_records(
            &batch(
                0,
                vec![
                    reading(1, T0, 1.0),
                    reading(1, T0 + MIN - 1, 3.0),
                    reading(1, T0 + MIN, 10.0),
                ],
            ),
            &mut out,
        )
        .expect("records");
        op.on_watermark(0, T0 + MIN - 1);
        drain(&mut op, &mut out);
        assert!(
            summary(&out).is_empty(),
            "watermark before the end closes nothing"
        );
        op.on_watermark(0, T0 + MIN);
        drain(&mut op, &mut out);
        assert_eq!(
            summary(&out),
            vec![("sensor_1".into(), secs(T0 + MIN), 2, 2.0)]
        );
        assert_eq!(out.rows.sensors_local.len(), 1);
        assert_eq!(out.rows.sensors_local[0].time, secs(T0 + MIN));
        assert_eq!(out.rows.aggregates[0].window_start, secs(T0));
        op.on_end(0);
        drain(&mut op, &mut out);
        assert_eq!(
            summary(&out)[1],
            ("sensor_1".into(), secs(T0 + 2 * MIN), 1, 10.0)
        );
        assert!(op.is_finished());
    }

    #[test]
    fn disorder_within_the_bound_is_kept_beyond_it_is_late() {
        let (mut op, _dir) = operator(1, 1 << 20, LatePolicy::Output);
        let mut out = Produced::default();
        // Reading at T0+30s, then the watermark passes the first window.
        op.on_records(&batch(0, vec![reading(7, T0 + 30_000, 1.0)]), &mut out)
            .expect("r");
        op.on_watermark(0, T0 + MIN + 1_000);
        drain(&mut op, &mut out);
        assert_eq!(out.windows, 1);
        // A reading for the second window, 4 s behind the newest: on time.
        // A reading for the first (closed) window: late.
        op.on_records(
            &batch(
                0,
                vec![
                    reading(7, T0 + MIN + 500, 5.0),
                    reading(7, T0 + 59_000, 99.0),
                ],
            ),
            &mut out,
        )
        .expect("r");
        assert_eq!(out.late, 1);
        assert_eq!(out.rows.late.len(), 1);
        let late = &out.rows.late[0];
        assert_eq!(late.device_id, "sensor_7");
        assert_eq!(late.timestamp_ms, T0 + 59_000);
        assert_eq!(late.window_end, secs(T0 + MIN));
        assert_eq!(late.watermark_ms, T0 + MIN + 1_000);
        assert_eq!((late.source.as_str(), late.position.as_str()), ("p0", "1"));
        assert!(late.reading.contains("\"temperature\":99.0"));
        op.on_end(0);
        drain(&mut op, &mut out);
        // The late reading is in no window.
        assert_eq!(
            summary(&out),
            vec![
                ("sensor_7".into(), secs(T0 + MIN), 1, 1.0),
                ("sensor_7".into(), secs(T0 + 2 * MIN), 1, 5.0)
            ]
        );
    }

    #[test]
    fn late_policy_log_counts_without_rows() {
        let (mut op, _dir) = operator(1, 1 << 20, LatePolicy::Log);
        let mut out = Produced::default();
        op.on_watermark(0, T0 + 2 * MIN);
        drain(&mut op, &mut out);
        op.on_records(&batch(0, vec![reading(1, T0, 1.0)]), &mut out)
            .expect("r");
        assert_eq!(out.late, 1);
        assert!(out.rows.late.is_empty());
    }

    #[test]
    fn the_slowest_input_holds_windows_open_until_idle() {
        let (mut op, _dir) = operator(2, 1 << 20, LatePolicy::Output);
        let mut out = Produced::default();
        op.on_records(&batch(0, vec![reading(1, T0 + 1_000, 1.0)]), &mut out)
            .expect("r");
        op.on_watermark(0, T0 + 3 * MIN);
        drain(&mut op, &mut out);
        assert_eq!(out.windows, 0, "input 1 has no watermark yet");
        op.on_watermark(1, T0 + 30_000);
        drain(&mut op, &mut out);
        assert_eq!(out.windows, 0, "input 1 is still inside the first window");
        op.on_idle(1);
        drain(&mut op, &mut out);
        assert_eq!(
            out.windows, 1,
            "an idle input no longer holds the watermark"
        );
        assert_eq!(op.watermark(), T0 + 3 * MIN);
        // Input 1 wakes up with old data: late, since the window closed.
        op.on_records(&batch(1, vec![reading(2, T0 + 40_000, 1.0)]), &mut out)
            .expect("r");
        assert_eq!(out.late, 1);
    }

    #[test]
    fn end_of_input_closes_every_window() {
        let (mut op, _dir) = operator(2, 1 << 20, LatePolicy::Output);
        let mut out = Produced::default();
        let rs: Vec<Reading> = (0..10)
            .map(|i| reading(i, T0 + i64::from(i) * MIN, 1.0))
            .collect();
        op.on_records(&batch(0, rs), &mut out).expect("r");
        op.on_end(0);
        drain(&mut op, &mut out);
        assert_eq!(out.windows, 0, "input 1 has not ended");
        op.on_end(1);
        drain(&mut op, &mut out);
        assert_eq!(out.windows, 10);
        assert!(op.is_finished());
        let ends: Vec<u32> = out.rows.aggregates.iter().map(|r| r.window_end).collect();
        let mut sorted = ends.clone();
        sorted.sort();
        assert_eq!(ends, sorted, "windows close in time order");
    }

    /// With a budget far below the state size, every batch spills; the
    /// results are the same as with all state in memory.
    #[test]
    fn tiny_memory_budget_gives_identical_results() {
        let run = |budget: usize| {
            let (mut op, _dir) = operator(1, budget, LatePolicy::Output);
            let mut out = Produced::default();
            let mut g = weir_common::generator::PartitionGenerator::new(
                &weir_common::generator::GeneratorParams {
                    devices: 300,
                    rate: 200.0,
                    disorder_ms: 2_000,
                    seed: 11,
                    records: Some(40_000),
                    start_ms: T0,
                    partitions: 1,
                },
                0,
            );
            let mut r = Reading::default();
            let mut rs = Vec::new();
            let mut max_ts = i64::MIN;
            while g.next_into(&mut r) {
                max_ts = max_ts.max(r.timestamp_ms);
                rs.push(r.clone());
                if rs.len() == 500 {
                    op.on_records(&batch(0, std::mem::take(&mut rs)), &mut out)
                        .expect("r");
                    op.on_watermark(0, max_ts - 5_000);
                    drain(&mut op, &mut out);
                }
            }
            op.on_records(&batch(0, rs), &mut out).expect("r");
            op.on_end(0);
            drain(&mut op, &mut out);
            (out.rows, op.spills())
        };
        let (big, big_spills) = run(64 << 20);
        let (small, small_spills) = run(4096);
        assert_eq!(big_spills, 0);
        assert!(small_spills > 10, "{small_spills}");
        assert!(big.aggregates.len() > 300 * 3, "{}", big.aggregates.len());
        assert_eq!(big.sensors_local.len(), small.sensors_local.len());
        assert_eq!(big.aggregates.len(), small.aggregates.len());
        for (a, b) in big.aggregates.iter().zip(&small.aggregates) {
            assert_eq!(
                (&a.device_id, a.window_end, a.readings),
                (&b.device_id, b.window_end, b.readings)
            );
            assert!(
                (a.temperature_avg - b.temperature_avg).abs() <= 1e-9 * a.temperature_avg.abs()
            );
            assert_eq!(a.temperature_min, b.temperature_min);
            assert_eq!(a.error_count, b.error_count);
        }
        for (a, b) in big.sensors_local.iter().zip(&small.sensors_local) {
            assert_eq!(
                (&a.customer_id, &a.site_id, a.latitude, a.status),
                (&b.customer_id, &b.site_id, b.latitude, b.status)
            );
        }
    }
}
