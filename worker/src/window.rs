//! The window operator: per-device tumbling windows over event time.
//!
//! [`WindowOperator`] is synchronous and owns its state, so every rule of
//! the contract can be tested without a runtime; [`run_window_task`] is the
//! actor around it. Accumulators of open windows live in memory, one pane
//! per window end, until their total footprint exceeds the memory budget:
//! then all of them are written to RocksDB as merge operands and memory
//! starts over (see [`crate::state`]). When the watermark reaches a window's
//! end, the window's accumulators are gathered from memory and — if it was
//! ever spilled — RocksDB, turned into rows, and the window's state deleted.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_common::aggregate::Accumulator;
use weir_common::keygroup::{key_group_of, KeyGroupRange};
use weir_common::reading::Reading;
use weir_common::rows::LateReadingRow;
use weir_common::sink::OutputBatch;
use weir_common::spec::{Aggregate, LatePolicy};
use weir_common::time::{datetime_seconds, window_end};
use weir_common::watermark::WatermarkCombiner;

use weir_common::position::Position;

use crate::envelope::{Envelope, RecordBatch};
use crate::metrics::JobMetrics;
use crate::resume::{ResumeTable, Written};
use crate::state::{state_key, StateError, StateStore};

/// Hash-map overhead per accumulator, on top of its own footprint.
const ENTRY_OVERHEAD: usize = 16;

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
    /// What earlier generations wrote (windows they wrote stay closed).
    pub resume: Option<Arc<ResumeTable>>,
}

/// Accumulators of one window held in memory.
#[derive(Default)]
struct Pane {
    accs: FxHashMap<i32, Accumulator>,
    bytes: usize,
    /// Part of this window's state is in RocksDB.
    spilled: bool,
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
    memory: usize,
    state: StateStore,
    spills: u64,
    /// The latest window end any key group of this task had written
    /// before this generation (`i64::MIN`: none).
    resume_closed: i64,
    /// The latest window end fired.
    fired: i64,
    /// The watermark before it became +∞ (the end of every input).
    finite_watermark: i64,
}

impl WindowOperator {
    pub fn new(config: WindowConfig, state: StateStore) -> Self {
        let resume_closed = config
            .resume
            .as_ref()
            .map_or(i64::MIN, |t| t.max_closed(config.key_groups));
        WindowOperator {
            resume_closed,
            fired: i64::MIN,
            finite_watermark: i64::MIN,
            sensors_local: config.aggregates.contains(&Aggregate::SensorsLocal),
            aggregates_1m: config.aggregates.contains(&Aggregate::SensorAggregates1m),
            combiner: WatermarkCombiner::new(config.input_names.len()),
            config,
            panes: BTreeMap::new(),
            memory: 0,
            state,
            spills: 0,
        }
    }

    /// The operator's watermark (`i64::MAX` once every input ended).
    pub fn watermark(&self) -> i64 {
        self.combiner.current()
    }

    /// Every window ending at or before this has been emitted. After the end
    /// of every input that is the last window fired, not +∞: input that
    /// appears later (a new run on a longer topic) opens later windows.
    pub fn written_watermark(&self) -> i64 {
        match self.combiner.current() {
            i64::MAX => self.finite_watermark.max(self.fired),
            w => w,
        }
    }

    /// Every input ended and every window was emitted.
    pub fn is_finished(&self) -> bool {
        self.combiner.current() == i64::MAX && self.panes.is_empty()
    }

    pub fn open_windows(&self) -> usize {
        self.panes.len()
    }

    pub fn accumulators_in_memory(&self) -> usize {
        self.panes.values().map(|p| p.accs.len()).sum()
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
        for (r, pos) in batch.readings.iter().zip(&batch.positions) {
            let end = window_end(r.timestamp_ms, self.config.window_ms);
            if end <= wm {
                self.late(batch.input, r, &pos.to_string(), end, wm, out);
                continue;
            }
            if end <= self.resume_closed {
                if let Some(closed) = self.closed_on_resume(r.sensor_id, end) {
                    self.late(batch.input, r, &pos.to_string(), end, closed, out);
                    continue;
                }
            }
            let pane = self.panes.entry(end).or_default();
            match pane.accs.get_mut(&r.sensor_id) {
                Some(acc) => acc.add(r),
                None => {
                    let acc = Accumulator::new(r);
                    let size = acc.footprint() + ENTRY_OVERHEAD;
                    pane.bytes += size;
                    self.memory += size;
                    pane.accs.insert(r.sensor_id, acc);
                }
            }
        }
        if self.memory > self.config.memory_budget {
            self.spill()?;
        }
        Ok(())
    }

    /// The written watermark of the reading's key group, if its window was
    /// written by an earlier generation.
    #[cold]
    fn closed_on_resume(&self, sensor: i32, end: i64) -> Option<i64> {
        let table = self.config.resume.as_ref()?;
        let closed = table.closed(key_group_of(sensor, self.config.max_parallelism));
        (end <= closed).then_some(closed)
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

    pub fn on_watermark(
        &mut self,
        input: u32,
        wm: i64,
        out: &mut Produced,
    ) -> Result<(), StateError> {
        match self.combiner.on_watermark(input as usize, wm) {
            Some(w) => self.fire(w, out),
            None => Ok(()),
        }
    }

    pub fn on_idle(&mut self, input: u32, out: &mut Produced) -> Result<(), StateError> {
        match self.combiner.on_idle(input as usize) {
            Some(w) => self.fire(w, out),
            None => Ok(()),
        }
    }

    pub fn on_end(&mut self, input: u32, out: &mut Produced) -> Result<(), StateError> {
        match self.combiner.on_end(input as usize) {
            Some(w) => self.fire(w, out),
            None => Ok(()),
        }
    }

    /// Closes every window whose end the watermark has reached.
    fn fire(&mut self, wm: i64, out: &mut Produced) -> Result<(), StateError> {
        if wm != i64::MAX {
            self.finite_watermark = wm;
        }
        while let Some(entry) = self.panes.first_entry() {
            if *entry.key() > wm {
                break;
            }
            let (end, pane) = entry.remove_entry();
            self.fired = self.fired.max(end);
            self.close(end, pane, out)?;
        }
        Ok(())
    }

    fn close(&mut self, end: i64, pane: Pane, out: &mut Produced) -> Result<(), StateError> {
        self.memory -= pane.bytes;
        let mut results: Vec<(i32, Accumulator)> = Vec::with_capacity(pane.accs.len());
        if pane.spilled {
            let mut in_memory = pane.accs;
            self.state
                .take_window(self.config.key_groups, end, |sensor, mut acc| {
                    if let Some(recent) = in_memory.remove(&sensor) {
                        acc.merge(&recent);
                    }
                    results.push((sensor, acc));
                })?;
            results.extend(in_memory);
        } else {
            results.extend(pane.accs);
        }
        // Deterministic output order: by device.
        results.sort_unstable_by_key(|(sensor, _)| *sensor);
        let start = end - self.config.window_ms;
        for (sensor, acc) in &results {
            if self.sensors_local {
                out.rows
                    .sensors_local
                    .push(acc.sensors_local_row(*sensor, end));
            }
            if self.aggregates_1m {
                out.rows
                    .aggregates
                    .push(acc.aggregates_row(*sensor, start, end));
            }
        }
        out.windows += results.len() as u64;
        Ok(())
    }

    /// Moves every in-memory accumulator into RocksDB (as merge operands).
    pub fn spill(&mut self) -> Result<(), StateError> {
        let mp = self.config.max_parallelism;
        for (&end, pane) in self.panes.iter_mut() {
            if pane.accs.is_empty() {
                continue;
            }
            self.state.merge_all(
                pane.accs
                    .iter()
                    .map(|(&sensor, acc)| (state_key(key_group_of(sensor, mp), end, sensor), acc)),
            )?;
            pane.accs.clear();
            pane.bytes = 0;
            pane.spilled = true;
        }
        self.memory = 0;
        self.spills += 1;
        Ok(())
    }
}

/// Messages from a window task to its sink.
#[derive(Debug)]
pub enum SinkMsg {
    Rows(OutputBatch),
    /// What the rows sent so far add up to: written once they are.
    Progress(Written),
    /// Every window has been emitted: flush and finish.
    End,
}

/// How a window task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutcome {
    /// All inputs ended and every window was emitted.
    Finished,
    /// Its inputs went away first (the job was stopped); open windows were
    /// not emitted.
    Stopped { open_windows: usize },
}

/// The window task: feeds envelopes to the operator and rows to the sink,
/// until every input ended or `stop` is cancelled.
pub async fn run_window_task(
    mut op: WindowOperator,
    mut inputs: mpsc::Receiver<Envelope>,
    sink: mpsc::Sender<SinkMsg>,
    metrics: Arc<JobMetrics>,
    stop: CancellationToken,
) -> Result<WindowOutcome, StateError> {
    let mut produced = Produced::default();
    // By input: the last position received (see `Envelope`).
    let mut processed: Vec<Option<Position>> = vec![None; op.config.input_names.len()];
    let mut reported: Option<Written> = None;
    loop {
        let envelope = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            e = inputs.recv() => e,
        };
        let Some(envelope) = envelope else {
            return Ok(WindowOutcome::Stopped {
                open_windows: op.open_windows(),
            });
        };
        let mut note = |input: u32, through: Option<Position>| {
            if let (Some(p), Some(slot)) = (through, processed.get_mut(input as usize)) {
                *slot = Some(p);
            }
        };
        let marked = match envelope {
            Envelope::Records(batch) => {
                note(batch.input, batch.positions.last().copied());
                op.on_records(&batch, &mut produced)?;
                false
            }
            Envelope::Watermark {
                input,
                watermark,
                through,
            } => {
                note(input, through);
                op.on_watermark(input, watermark, &mut produced)?;
                true
            }
            Envelope::Idle { input, through } => {
                note(input, through);
                op.on_idle(input, &mut produced)?;
                true
            }
            Envelope::End { input, through } => {
                note(input, through);
                op.on_end(input, &mut produced)?;
                true
            }
        };
        JobMetrics::add(&metrics.late_records, std::mem::take(&mut produced.late));
        JobMetrics::add(
            &metrics.windows_closed,
            std::mem::take(&mut produced.windows),
        );
        metrics.watermark.store(op.watermark(), Relaxed);
        metrics.state_spills.store(op.spills(), Relaxed);
        metrics
            .open_accumulators
            .store(op.accumulators_in_memory() as u64, Relaxed);
        metrics
            .open_windows
            .store(op.open_windows() as u64, Relaxed);
        if !produced.rows.is_empty() {
            let rows = std::mem::take(&mut produced.rows);
            // Rows of closed windows go to the sink even when stopping: a
            // stop writes what was emitted.
            let sent = sink.send(SinkMsg::Rows(rows)).await.is_ok();
            if !sent {
                return Ok(WindowOutcome::Stopped {
                    open_windows: op.open_windows(),
                });
            }
        }
        if marked {
            let written = Written {
                watermark: op.written_watermark(),
                processed: processed.clone(),
            };
            if reported.as_ref() != Some(&written) {
                if sink.send(SinkMsg::Progress(written.clone())).await.is_err() {
                    return Ok(WindowOutcome::Stopped {
                        open_windows: op.open_windows(),
                    });
                }
                reported = Some(written);
            }
        }
        if op.is_finished() {
            // If the sink is gone the job is failing anyway; its error wins.
            let _ = sink.send(SinkMsg::End).await;
            return Ok(WindowOutcome::Finished);
        }
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
            resume: None,
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
                    r.device_id.clone(),
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
        op.on_watermark(0, T0 + MIN - 1, &mut out).expect("wm");
        assert!(
            summary(&out).is_empty(),
            "watermark before the end closes nothing"
        );
        op.on_watermark(0, T0 + MIN, &mut out).expect("wm");
        assert_eq!(
            summary(&out),
            vec![("sensor_1".into(), secs(T0 + MIN), 2, 2.0)]
        );
        assert_eq!(out.rows.sensors_local.len(), 1);
        assert_eq!(out.rows.sensors_local[0].time, secs(T0 + MIN));
        assert_eq!(out.rows.aggregates[0].window_start, secs(T0));
        op.on_end(0, &mut out).expect("end");
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
        op.on_watermark(0, T0 + MIN + 1_000, &mut out).expect("wm");
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
        op.on_end(0, &mut out).expect("end");
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
        op.on_watermark(0, T0 + 2 * MIN, &mut out).expect("wm");
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
        op.on_watermark(0, T0 + 3 * MIN, &mut out).expect("wm");
        assert_eq!(out.windows, 0, "input 1 has no watermark yet");
        op.on_watermark(1, T0 + 30_000, &mut out).expect("wm");
        assert_eq!(out.windows, 0, "input 1 is still inside the first window");
        op.on_idle(1, &mut out).expect("idle");
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
        op.on_end(0, &mut out).expect("end");
        assert_eq!(out.windows, 0, "input 1 has not ended");
        op.on_end(1, &mut out).expect("end");
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
                    op.on_watermark(0, max_ts - 5_000, &mut out).expect("wm");
                }
            }
            op.on_records(&batch(0, rs), &mut out).expect("r");
            op.on_end(0, &mut out).expect("end");
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

    #[test]
    fn windows_written_by_an_earlier_generation_stay_closed() {
        let (op, dir) = operator(1, 1 << 20, LatePolicy::Output);
        drop(op);
        let mut table = ResumeTable::empty(128, 1);
        table
            .set(
                KeyGroupRange::all(128),
                T0 + MIN,
                &[(0, Position::Offset(10))],
            )
            .expect("set");
        let config = WindowConfig {
            window_ms: MIN,
            key_groups: KeyGroupRange::all(128),
            max_parallelism: 128,
            memory_budget: 1 << 20,
            late_policy: LatePolicy::Output,
            aggregates: vec![Aggregate::SensorAggregates1m],
            input_names: vec!["p0".into()],
            resume: Some(Arc::new(table)),
        };
        let state = StateStore::open_fresh(&dir.path().join("state2")).expect("state");
        let mut op = WindowOperator::new(config, state);
        let mut out = Produced::default();
        op.on_records(
            &batch(
                0,
                vec![reading(1, T0 + 5, 1.0), reading(1, T0 + MIN + 5, 2.0)],
            ),
            &mut out,
        )
        .expect("records");
        assert_eq!(out.late, 1, "the first minute was written before");
        assert_eq!(out.rows.late[0].watermark_ms, T0 + MIN);
        op.on_end(0, &mut out).expect("end");
        assert_eq!(
            summary(&out),
            vec![("sensor_1".into(), secs(T0 + 2 * MIN), 1, 2.0)]
        );
        // After the end of input, what is written is up to the last window.
        assert_eq!(op.watermark(), i64::MAX);
        assert_eq!(op.written_watermark(), T0 + 2 * MIN);
    }
}
