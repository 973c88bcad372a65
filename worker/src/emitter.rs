//! The synchronous half of a source: routing, batching and watermarks.
//!
//! A partition reader hands every decoded reading to an [`Emitter`], which
//! picks the destination window task by key group, appends the reading to
//! that destination's batch, and advances the partition watermark. Nothing
//! here awaits: envelopes are queued in an outbox, in the order they must be
//! delivered, and the source task sends them afterwards. When the watermark
//! crosses a window boundary, every pending batch is queued before the new
//! watermark (see `weir_common::watermark` for why this makes lateness exact).
//!
//! Every watermark, idle and end envelope also marks how far the partition
//! has been read, and the emitter remembers those marks until they are
//! durable (see [`crate::resume`]): a mark is durable once every window task
//! has processed through it and written every window its records can be in.

use std::collections::VecDeque;
use std::sync::Arc;

use weir_common::dead_letter::DeadLetter;
use weir_common::keygroup::key_group_of;
use weir_common::position::Position;
use weir_common::reading::Reading;
use weir_common::time::{in_datetime_range, window_end};
use weir_common::watermark::WatermarkGenerator;

use crate::envelope::{Envelope, RecordBatch};
use crate::resume::ResumeFilter;

/// Where a queued envelope goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// One destination window task, by index.
    To(usize),
    /// Every destination (watermarks, idleness, end of input).
    All,
}

/// How a source's output is laid out: which destination owns each key group.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Destination index of every key group.
    owners: Arc<[u16]>,
    destinations: usize,
    /// The destination in this process (the others are across the network).
    local: Option<usize>,
}

impl Routing {
    /// `owners[kg]` is the destination of key group `kg`; `local` is the
    /// destination in this process, if any.
    pub fn new(owners: Vec<u16>, destinations: usize, local: Option<usize>) -> Self {
        debug_assert!(owners.iter().all(|&d| usize::from(d) < destinations));
        Routing {
            owners: owners.into(),
            destinations,
            local,
        }
    }

    /// Everything to one destination, in this process.
    pub fn single(max_parallelism: u16) -> Self {
        Routing::new(vec![0; usize::from(max_parallelism)], 1, Some(0))
    }

    pub fn max_parallelism(&self) -> u16 {
        self.owners.len() as u16
    }

    pub fn destinations(&self) -> usize {
        self.destinations
    }
}

/// Settings of one source partition.
#[derive(Clone, Debug)]
pub struct EmitterConfig {
    pub input: u32,
    /// Names the partition in dead letters and late rows.
    pub source_name: String,
    pub batch_size: usize,
    pub out_of_orderness_ms: i64,
    pub window_ms: i64,
    pub max_dead_letter_payload: usize,
}

/// A point the partition was read to, as sent in an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub position: Position,
    /// The latest window end of any record up to `position`.
    pub max_window_end: i64,
    /// The partition's watermark at `position`.
    pub watermark: i64,
}

pub struct Emitter {
    config: EmitterConfig,
    routing: Routing,
    pending: Vec<RecordBatch>,
    outbox: Vec<(Route, Envelope)>,
    watermark: WatermarkGenerator,
    /// Watermark last queued for sending.
    sent_watermark: i64,
    emitted: u64,
    bad: u64,
    dead_letters: Vec<DeadLetter>,
    /// Records routed to other processes, by key group, since last taken.
    remote_by_key_group: Vec<u64>,
    /// Position of the last record read (emitted, skipped or dead).
    last_position: Option<Position>,
    /// Position in the last envelope sent.
    marked: Option<Position>,
    /// Marks sent and not yet durable, oldest first.
    marks: VecDeque<Mark>,
    /// Skips records whose output is already written (after a restart).
    resume: Option<ResumeFilter>,
    /// Records skipped by `resume`.
    skipped: u64,
    /// Records up to here are in the restored checkpoint.
    skip_through: Option<Position>,
    /// The last record dropped for being in it.
    skipped_to: Option<Position>,
}

impl Emitter {
    pub fn new(config: EmitterConfig, routing: Routing) -> Self {
        let pending = (0..routing.destinations)
            .map(|_| RecordBatch::with_capacity(config.input, config.batch_size))
            .collect();
        Emitter {
            remote_by_key_group: vec![0; usize::from(routing.max_parallelism())],
            watermark: WatermarkGenerator::new(config.out_of_orderness_ms, config.window_ms),
            config,
            routing,
            pending,
            outbox: Vec::new(),
            sent_watermark: i64::MIN,
            emitted: 0,
            bad: 0,
            dead_letters: Vec::new(),
            last_position: None,
            marked: None,
            marks: VecDeque::new(),
            resume: None,
            skipped: 0,
            skip_through: None,
            skipped_to: None,
        }
    }

    /// Skips the records `filter` says are written.
    pub fn with_resume(mut self, filter: Option<ResumeFilter>) -> Self {
        self.resume = filter;
        self
    }

    /// The partition restarts from a checkpoint taken after `position`,
    /// where its watermark was `watermark`: records up to `position` that
    /// the reader reads again are dropped.
    pub fn restore_after(&mut self, position: Position, watermark: i64) {
        self.resume_after(position, watermark);
        self.skip_through = Some(position);
    }

    /// At the end of the input: the checkpointed position it never reached,
    /// if the input ended before it (it is not the input the checkpoint was
    /// taken of).
    pub fn restore_point_missed(&self) -> Option<Position> {
        match (self.skip_through, self.skipped_to) {
            (Some(through), seen) if seen != Some(through) => Some(through),
            _ => None,
        }
    }

    /// The reader starts after `position`, where the partition's watermark
    /// was `watermark` (it resumes there instead of reading from the start).
    pub fn resume_after(&mut self, position: Position, watermark: i64) {
        self.watermark.resume_from(watermark);
        self.sent_watermark = self.sent_watermark.max(watermark);
        self.last_position = Some(position);
        self.marked = Some(position);
    }

    /// Position of the last record read.
    pub fn last_position(&self) -> Option<Position> {
        self.last_position
    }

    /// Records skipped because their output was already written.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn source_name(&self) -> &str {
        &self.config.source_name
    }

    /// Readings accepted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Records known to be lost to dead letters so far.
    pub fn bad(&self) -> u64 {
        self.bad
    }

    pub fn watermark(&self) -> i64 {
        self.watermark.current()
    }

    /// Takes one decoded reading (copied once, into its batch).
    #[inline]
    pub fn reading(&mut self, r: &Reading, position: Position) {
        if self.skip_through.is_some() && self.restored(position) {
            return;
        }
        self.last_position = Some(position);
        if !in_datetime_range(r.timestamp_ms, self.config.window_ms) {
            self.out_of_range(r, position);
            return;
        }
        let kg = key_group_of(r.sensor_id, self.routing.max_parallelism());
        if self.resume.is_some() && self.already_written(r, position, kg) {
            return;
        }
        let dest = usize::from(self.routing.owners[usize::from(kg)]);
        if Some(dest) != self.routing.local {
            self.remote_by_key_group[usize::from(kg)] += 1;
        }
        let crossed = self.watermark.observe(r.timestamp_ms);
        let batch = &mut self.pending[dest];
        batch.push(r.clone(), position);
        self.emitted += 1;
        if batch.len() >= self.config.batch_size {
            self.queue_batch(dest);
        }
        if crossed {
            self.flush();
        }
    }

    /// Whether the record at `position` is in the checkpoint the job was
    /// restored from (sources that cannot seek read up to it again).
    #[inline(never)]
    fn restored(&mut self, position: Position) -> bool {
        match self.skip_through {
            Some(through) if position <= through => {
                self.skipped_to = Some(position);
                true
            }
            _ => {
                self.skip_through = None;
                false
            }
        }
    }

    /// Whether the reading's output is already written (it then only moves
    /// the watermark, as it did when it was first read).
    #[inline(never)]
    fn already_written(&mut self, r: &Reading, position: Position, kg: u16) -> bool {
        let Some(filter) = &self.resume else {
            return false;
        };
        if position > filter.until() {
            self.resume = None;
            return false;
        }
        let end = window_end(r.timestamp_ms, self.config.window_ms);
        if !filter.written(kg, position, end) {
            return false;
        }
        self.skipped += 1;
        if self.watermark.observe(r.timestamp_ms) {
            self.flush();
        }
        true
    }

    /// A record was read that will not reach [`reading`](Self::reading)
    /// (it became a dead letter).
    pub fn consumed(&mut self, position: Position) {
        self.last_position = Some(position);
    }

    #[cold]
    fn out_of_range(&mut self, r: &Reading, position: Position) {
        let json = r.to_json().to_string();
        self.dead_letter(
            position.to_string(),
            1,
            "event-time-out-of-range",
            format!(
                "event time {} ms is outside what the output tables can store (1970 to 2106)",
                r.timestamp_ms
            ),
            json.as_bytes(),
        );
    }

    /// Records undecodable input. `records` is how many records the bytes
    /// held, when the input's framing says (0 when unknown, such as a
    /// damaged region of a file).
    pub fn dead_letter(
        &mut self,
        position: String,
        records: u64,
        kind: &str,
        error: String,
        payload: &[u8],
    ) {
        self.bad += records;
        self.dead_letters.push(DeadLetter::new(
            now_ms(),
            &self.config.source_name,
            position,
            records,
            kind,
            error,
            payload,
            self.config.max_dead_letter_payload,
        ));
    }

    fn queue_batch(&mut self, dest: usize) {
        let fresh = RecordBatch::with_capacity(self.config.input, self.config.batch_size);
        let batch = std::mem::replace(&mut self.pending[dest], fresh);
        self.outbox
            .push((Route::To(dest), Envelope::Records(batch)));
    }

    /// Queues every pending batch, then the watermark if it moved or the
    /// partition was read further since the last envelope.
    pub fn flush(&mut self) {
        for dest in 0..self.pending.len() {
            if !self.pending[dest].is_empty() {
                self.queue_batch(dest);
            }
        }
        let wm = self.watermark.mark_sent();
        let advanced = self.last_position != self.marked;
        if wm > self.sent_watermark || advanced {
            self.sent_watermark = self.sent_watermark.max(wm);
            self.outbox.push((
                Route::All,
                Envelope::Watermark {
                    input: self.config.input,
                    watermark: wm,
                    through: self.last_position,
                },
            ));
        }
        if let (true, Some(position)) = (advanced, self.last_position) {
            self.marked = Some(position);
            let max_ts = self.watermark.max_event_time();
            self.marks.push_back(Mark {
                position,
                max_window_end: if max_ts == i64::MIN {
                    i64::MIN
                } else {
                    window_end(max_ts, self.config.window_ms)
                },
                watermark: wm,
            });
        }
    }

    /// The latest mark that is durable given that every window task has
    /// processed through `processed` and written every window ending at or
    /// before `written_watermark`; earlier marks are forgotten.
    pub fn durable_within(&mut self, processed: Position, written_watermark: i64) -> Option<Mark> {
        let mut durable = None;
        while let Some(m) = self.marks.front() {
            if m.position > processed || m.max_window_end > written_watermark {
                break;
            }
            durable = self.marks.pop_front();
        }
        durable
    }

    /// Whether anything waits in a batch that has not been queued.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|b| !b.is_empty())
    }

    /// The partition has had no data for the idle timeout.
    pub fn idle(&mut self) {
        self.flush();
        self.outbox.push((
            Route::All,
            Envelope::Idle {
                input: self.config.input,
                through: self.last_position,
            },
        ));
    }

    /// Checkpoint `checkpoint` was triggered: everything read so far goes
    /// out before its barrier, which goes to every destination (and carries
    /// where the partition would resume from this checkpoint).
    pub fn barrier(&mut self, checkpoint: u64) {
        self.flush();
        self.outbox.push((
            Route::All,
            Envelope::Barrier {
                input: self.config.input,
                checkpoint,
                through: self.last_position,
                watermark: self.sent_watermark,
            },
        ));
    }

    /// The partition is exhausted.
    pub fn end(&mut self) {
        self.flush();
        self.outbox.push((
            Route::All,
            Envelope::End {
                input: self.config.input,
                through: self.last_position,
            },
        ));
    }

    /// Envelopes to deliver, in order.
    pub fn take_outbox(&mut self) -> std::vec::Drain<'_, (Route, Envelope)> {
        self.outbox.drain(..)
    }

    /// Records routed across the network since the last call, by key group
    /// (zeroed by the call).
    pub fn take_remote_counts(&mut self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.remote_by_key_group
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(kg, n)| (kg, std::mem::take(n)))
    }

    pub fn take_dead_letters(&mut self) -> std::vec::Drain<'_, DeadLetter> {
        self.dead_letters.drain(..)
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(batch_size: usize) -> EmitterConfig {
        EmitterConfig {
            input: 3,
            source_name: "test".into(),
            batch_size,
            out_of_orderness_ms: 5_000,
            window_ms: 60_000,
            max_dead_letter_payload: 1024,
        }
    }

    fn r(sensor_id: i32, ts: i64) -> Reading {
        Reading {
            sensor_id,
            timestamp_ms: ts,
            ..Reading::default()
        }
    }

    fn describe(e: &mut Emitter) -> Vec<String> {
        e.take_outbox()
            .map(|(route, env)| match env {
                Envelope::Records(b) => format!(
                    "{route:?} records {:?}",
                    b.readings
                        .iter()
                        .map(|r| r.timestamp_ms)
                        .collect::<Vec<_>>()
                ),
                Envelope::Watermark { watermark, .. } => format!("{route:?} wm {watermark}"),
                Envelope::Idle { .. } => format!("{route:?} idle"),
                Envelope::End { .. } => format!("{route:?} end"),
                Envelope::Barrier {
                    checkpoint,
                    through,
                    watermark,
                    ..
                } => format!("{route:?} barrier {checkpoint} at {through:?} wm {watermark}"),
            })
            .collect()
    }

    #[test]
    fn batches_are_cut_at_window_crossings_and_size() {
        let mut e = Emitter::new(config(3), Routing::single(128));
        let base = 1_000_000_040_000; // 20 s into a minute
        for ts in [base, base + 1_000, base + 2_000, base + 3_000] {
            e.reading(&r(1, ts), Position::Offset(0));
        }
        // The first record starts the watermark (crossing from nothing);
        // the third fills the batch.
        assert_eq!(
            describe(&mut e),
            vec![
                format!("To(0) records [{base}]"),
                format!("All wm {}", base - 5_000),
                format!(
                    "To(0) records [{}, {}, {}]",
                    base + 1_000,
                    base + 2_000,
                    base + 3_000
                ),
            ]
        );
        // Crossing the next minute boundary (watermark >= 1_000_000_080_000).
        e.reading(&r(1, base + 40_000), Position::Offset(0));
        assert!(describe(&mut e).is_empty());
        e.reading(&r(1, base + 65_000), Position::Offset(0));
        assert_eq!(
            describe(&mut e),
            vec![
                format!("To(0) records [{}, {}]", base + 40_000, base + 65_000),
                format!("All wm {}", base + 60_000),
            ]
        );
        e.end();
        assert_eq!(describe(&mut e), vec!["All end".to_string()]);
    }

    #[test]
    fn routes_by_key_group() {
        // Key groups below 64 to destination 0, the rest to 1.
        let owners = (0..128u16).map(|kg| u16::from(kg >= 64)).collect();
        let mut e = Emitter::new(config(1000), Routing::new(owners, 2, Some(0)));
        for id in 0..200 {
            e.reading(&r(id, 1_000_000_000_000), Position::Offset(id as u64));
        }
        e.flush();
        let mut seen = [0usize; 2];
        for (route, env) in e.take_outbox() {
            if let (Route::To(d), Envelope::Records(b)) = (route, env) {
                for reading in &b.readings {
                    let kg = key_group_of(reading.sensor_id, 128);
                    assert_eq!(usize::from(kg >= 64), d);
                }
                seen[d] += b.len();
            }
        }
        assert_eq!(seen[0] + seen[1], 200);
        assert!(seen[0] > 50 && seen[1] > 50);
        // Destination 1 is across the network: its records are counted.
        let remote: Vec<(usize, u64)> = e.take_remote_counts().collect();
        assert!(remote.iter().all(|(kg, _)| *kg >= 64));
        assert_eq!(remote.iter().map(|(_, n)| n).sum::<u64>(), seen[1] as u64);
        assert_eq!(e.take_remote_counts().count(), 0);
    }

    #[test]
    fn marks_say_how_far_the_partition_was_read_and_become_durable() {
        let mut e = Emitter::new(config(100), Routing::single(128));
        let t0 = 1_000_000_040_000; // 20 s into a minute
        e.reading(&r(1, t0), Position::Offset(0));
        e.reading(&r(1, t0 + 1_000), Position::Offset(1));
        e.flush(); // the source waits for input
        let through: Vec<Option<Position>> = e
            .take_outbox()
            .filter_map(|(_, env)| match env {
                Envelope::Watermark { through, .. } => Some(through),
                _ => None,
            })
            .collect();
        assert_eq!(through.last(), Some(&Some(Position::Offset(1))));
        // Nothing new read: no new mark.
        e.flush();
        assert_eq!(e.take_outbox().count(), 0);
        e.consumed(Position::Offset(2)); // a dead letter
        e.flush();
        let envelopes: Vec<Envelope> = e.take_outbox().map(|(_, env)| env).collect();
        assert!(matches!(
            envelopes.as_slice(),
            [Envelope::Watermark {
                through: Some(Position::Offset(2)),
                ..
            }]
        ));
        let end = 1_000_000_080_000; // the window of t0
        assert_eq!(
            e.durable_within(Position::Offset(5), end - 1),
            None,
            "window not written"
        );
        let m = e.durable_within(Position::Offset(1), end).expect("durable");
        assert_eq!(m.position, Position::Offset(1));
        assert_eq!(m.max_window_end, end);
        assert_eq!(m.watermark, t0 + 1_000 - 5_000);
        let m = e.durable_within(Position::Offset(9), end).expect("durable");
        assert_eq!(m.position, Position::Offset(2));
        assert_eq!(
            e.durable_within(Position::Offset(9), end),
            None,
            "forgotten"
        );
    }

    #[test]
    fn written_records_are_skipped_but_move_the_watermark() {
        use crate::resume::{ResumeFilter, ResumeTable};
        use weir_common::keygroup::KeyGroupRange;
        let t0 = 1_000_000_020_000; // a minute boundary
        let mut table = ResumeTable::empty(128, 1);
        table
            .set(
                KeyGroupRange::all(128),
                t0 + 60_000,
                &[(0, Position::Offset(1))],
            )
            .expect("set");
        let filter = ResumeFilter::new(std::sync::Arc::new(table), 0);
        let mut e = Emitter::new(config(100), Routing::single(128)).with_resume(filter);
        e.reading(&r(1, t0 + 1_000), Position::Offset(0)); // written
        e.reading(&r(2, t0 + 70_000), Position::Offset(1)); // window still open
        e.reading(&r(3, t0 + 2_000), Position::Offset(2)); // after `processed`
        e.flush();
        assert_eq!(e.skipped(), 1);
        assert_eq!(e.emitted(), 2);
        assert_eq!(e.watermark(), t0 + 70_000 - 5_000);
    }

    #[test]
    fn a_barrier_follows_everything_read_before_it_on_every_route() {
        let mut e = Emitter::new(config(100), Routing::new(vec![0, 1], 2, Some(0)));
        let t0 = 1_000_000_020_000;
        e.reading(&r(0, t0), Position::Offset(4)); // key group of sensor 0
        e.barrier(3);
        let out = describe(&mut e);
        let last = out.last().expect("barrier");
        assert!(
            last.starts_with("All barrier 3 at Some(Offset(4)) wm"),
            "{out:?}"
        );
        assert!(
            out[..out.len() - 1].iter().any(|d| d.contains("records")),
            "{out:?}"
        );
        // Nothing read since: the next barrier has the same position.
        e.barrier(4);
        let out = describe(&mut e);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with("All barrier 4 at Some(Offset(4))"));
    }

    #[test]
    fn records_up_to_a_restored_checkpoint_are_dropped_and_a_missed_one_is_told() {
        let t0 = 1_000_000_020_000;
        let mut e = Emitter::new(config(100), Routing::single(128));
        e.restore_after(Position::Offset(2), t0);
        for i in 0..4 {
            e.reading(&r(1, t0 + i), Position::Offset(i as u64));
        }
        assert_eq!(e.emitted(), 1, "only the record after the checkpoint");
        assert_eq!(e.restore_point_missed(), None);
        // An input that ends before the checkpointed position.
        let mut e = Emitter::new(config(100), Routing::single(128));
        e.restore_after(Position::Offset(9), t0);
        e.reading(&r(1, t0), Position::Offset(0));
        assert_eq!(e.restore_point_missed(), Some(Position::Offset(9)));
    }

    #[test]
    fn out_of_range_event_times_are_dead_letters() {
        let mut e = Emitter::new(config(10), Routing::single(128));
        e.reading(&r(1, -5), Position::Offset(7));
        e.reading(&r(1, 5_000_000_000_000), Position::Offset(8));
        assert_eq!(e.emitted(), 0);
        assert_eq!(e.bad(), 2);
        let dl: Vec<DeadLetter> = e.take_dead_letters().collect();
        assert_eq!(dl[0].position, "7");
        assert_eq!(dl[0].kind, "event-time-out-of-range");
        assert!(!e.has_pending());
    }
}
