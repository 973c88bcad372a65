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
//! A partition restored from a checkpoint is read again from where its
//! reader can start (a file from its beginning, a Pulsar partition from the
//! checkpointed message, which the broker sends again): records up to the
//! checkpointed position are dropped, and the position itself must be
//! among them, or the input is not the one the checkpoint was taken of.

use std::sync::Arc;

use weir_common::dead_letter::DeadLetter;
use weir_common::keygroup::key_group_of;
use weir_common::position::Position;
use weir_common::reading::Reading;
use weir_common::time::{in_datetime_range, window_end};
use weir_common::watermark::WatermarkGenerator;

use crate::combine::PreAggregator;
use crate::envelope::{Envelope, RecordBatch};

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
    /// Whether readings bound for other workers may be pre-aggregated
    /// (see [`crate::combine`]): not when a window task may restore a
    /// watermark ahead of the partition's (see
    /// `deployment::restore::behind_somewhere`).
    pub pre_aggregate: bool,
}

/// How a restored partition's input compares with its checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreCheck {
    /// Nothing restored, or the checkpointed position was read again.
    Fits,
    /// The input ended before the checkpointed position.
    EndedBefore(Position),
    /// A record after the checkpointed position came without the position
    /// itself (`found`): the input is another one (a recreated topic, another
    /// file).
    Missing { position: Position, found: Position },
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
    /// Records routed to other processes, by key group, since last taken.
    remote_by_key_group: Vec<u64>,
    /// Position of the last record read (emitted, dropped or dead).
    last_position: Option<Position>,
    /// Records up to here are in the restored checkpoint.
    skip_through: Option<Position>,
    /// The last record dropped for being in it.
    skipped_to: Option<Position>,
    /// Set when the restored position turned out not to be in the input.
    mismatch: Option<Position>,
    /// Readings for other workers, aggregated before they are sent.
    combined: PreAggregator,
    /// Pre-aggregation is allowed (it stops for good once the partition
    /// was idle: see [`crate::combine`]).
    pre_aggregate: bool,
}

impl Emitter {
    pub fn new(config: EmitterConfig, routing: Routing) -> Self {
        let pending = (0..routing.destinations)
            .map(|_| RecordBatch::with_capacity(config.input, config.batch_size))
            .collect();
        Emitter {
            remote_by_key_group: vec![0; usize::from(routing.max_parallelism())],
            watermark: WatermarkGenerator::new(config.out_of_orderness_ms, config.window_ms),
            routing,
            pending,
            outbox: Vec::new(),
            sent_watermark: i64::MIN,
            emitted: 0,
            bad: 0,
            last_position: None,
            skip_through: None,
            skipped_to: None,
            mismatch: None,
            combined: PreAggregator::default(),
            pre_aggregate: config.pre_aggregate,
            config,
        }
    }

    /// The partition restarts from a checkpoint taken after `position`,
    /// where its watermark was `watermark`: records up to `position` that
    /// the reader reads again are dropped.
    pub fn restore_after(&mut self, position: Position, watermark: i64) {
        self.watermark.resume_from(watermark);
        self.sent_watermark = self.sent_watermark.max(watermark);
        self.last_position = Some(position);
        self.skip_through = Some(position);
    }

    /// Whether the input still fits the restored checkpoint; call at the end
    /// of the input with `ended`.
    pub fn restore_check(&self, ended: bool) -> RestoreCheck {
        if let (Some(position), Some(found)) = (self.skip_through, self.mismatch) {
            return RestoreCheck::Missing { position, found };
        }
        match (self.skip_through, self.skipped_to) {
            (Some(through), seen) if ended && seen != Some(through) => {
                RestoreCheck::EndedBefore(through)
            }
            _ => RestoreCheck::Fits,
        }
    }

    /// Position of the last record read.
    pub fn last_position(&self) -> Option<Position> {
        self.last_position
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
        let dest = usize::from(self.routing.owners[usize::from(kg)]);
        self.emitted += 1;
        if Some(dest) != self.routing.local {
            self.remote_by_key_group[usize::from(kg)] += 1;
            // A reading whose window this partition's watermark has not
            // reached cannot be late where it goes (see `crate::combine`).
            if self.pre_aggregate {
                let end = window_end(r.timestamp_ms, self.config.window_ms);
                if end > self.sent_watermark && self.combined.add(dest, end, r) {
                    if self.combined.is_full() {
                        self.queue_partials(i64::MAX);
                    }
                    if self.watermark.observe(r.timestamp_ms) {
                        self.flush();
                    }
                    return;
                }
            }
        }
        let crossed = self.watermark.observe(r.timestamp_ms);
        let batch = &mut self.pending[dest];
        batch.push(r.clone(), position);
        if batch.len() >= self.config.batch_size {
            self.queue_batch(dest);
        }
        if crossed {
            self.flush();
        }
    }

    /// Queues the pre-aggregated accumulators of every window ending at or
    /// before `through`.
    fn queue_partials(&mut self, through: i64) {
        if self.combined.is_empty() {
            return;
        }
        let (outbox, input) = (&mut self.outbox, self.config.input);
        self.combined.take_through(input, through, |dest, batch| {
            outbox.push((Route::To(dest), Envelope::Partials(batch)))
        });
    }

    /// Whether the record at `position` is in the checkpoint the job was
    /// restored from (sources read up to it again). The first record after
    /// it ends the check: the checkpointed position must have been seen.
    #[inline(never)]
    fn restored(&mut self, position: Position) -> bool {
        match self.skip_through {
            Some(through) if position <= through => {
                self.skipped_to = Some(position);
                true
            }
            Some(through) => {
                if self.skipped_to != Some(through) {
                    self.mismatch = Some(position);
                    // Nothing after it may be taken for the checkpoint's
                    // continuation: the source stops on the mismatch.
                    return true;
                }
                self.skip_through = None;
                false
            }
            None => false,
        }
    }

    /// A record was read that will not reach [`reading`](Self::reading)
    /// (it is a dead letter); `false` when it is in the restored checkpoint
    /// (its dead letter was written before).
    pub fn consumed(&mut self, position: Position) -> bool {
        if self.skip_through.is_some() && self.restored(position) {
            return false;
        }
        self.last_position = Some(position);
        true
    }

    /// Whether undecodable bytes of unknown record count, found before the
    /// record at `next`, are in the restored checkpoint: a record after
    /// them is (their dead letter was written before).
    pub fn region_restored(&self, next: Position) -> bool {
        self.skip_through.is_some_and(|through| through >= next)
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
        let letter = DeadLetter::new(
            now_ms(),
            &self.config.source_name,
            position,
            records,
            kind,
            error,
            payload,
            self.config.max_dead_letter_payload,
        );
        // To the window task in this process, in order with the barriers
        // (see `Envelope::DeadLetters`); consecutive ones in one envelope.
        let local = self.routing.local.unwrap_or(0);
        match self.outbox.last_mut() {
            Some((Route::To(d), Envelope::DeadLetters { letters, .. })) if *d == local => {
                letters.push(letter);
            }
            _ => self.outbox.push((
                Route::To(local),
                Envelope::DeadLetters {
                    input: self.config.input,
                    letters: vec![letter],
                },
            )),
        }
    }

    fn queue_batch(&mut self, dest: usize) {
        let fresh = RecordBatch::with_capacity(self.config.input, self.config.batch_size);
        let batch = std::mem::replace(&mut self.pending[dest], fresh);
        self.outbox
            .push((Route::To(dest), Envelope::Records(batch)));
    }

    /// Queues every pending batch, then the watermark if it moved (after
    /// the accumulators of the windows it reaches).
    pub fn flush(&mut self) {
        for dest in 0..self.pending.len() {
            if !self.pending[dest].is_empty() {
                self.queue_batch(dest);
            }
        }
        let wm = self.watermark.mark_sent();
        if wm > self.sent_watermark {
            self.queue_partials(wm);
            self.sent_watermark = wm;
            self.outbox.push((
                Route::All,
                Envelope::Watermark {
                    input: self.config.input,
                    watermark: wm,
                },
            ));
        }
    }

    /// Whether anything waits in a batch that has not been queued.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|b| !b.is_empty())
    }

    /// Accumulators of readings for other workers held (they go out before
    /// the next watermark that closes their window, barrier or end).
    #[cfg(test)]
    fn partials_held(&self) -> usize {
        self.combined.len()
    }

    /// The partition has had no data for the idle timeout. Window tasks
    /// then stop waiting for its watermark, and may close windows it still
    /// has readings for: from here on nothing is pre-aggregated.
    pub fn idle(&mut self) {
        self.flush();
        self.queue_partials(i64::MAX);
        self.pre_aggregate = false;
        self.outbox.push((
            Route::All,
            Envelope::Idle {
                input: self.config.input,
            },
        ));
    }

    /// Checkpoint `checkpoint` was triggered: everything read so far goes
    /// out before its barrier, which goes to every destination (and carries
    /// where the partition would resume from this checkpoint).
    pub fn barrier(&mut self, checkpoint: u64) {
        self.flush();
        self.queue_partials(i64::MAX);
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

    /// The partition is exhausted: its watermark is +∞ from here on (also
    /// in the barriers that follow, so that a checkpoint taken after the end
    /// restores the partition as ended).
    pub fn end(&mut self) {
        self.flush();
        self.queue_partials(i64::MAX);
        self.sent_watermark = i64::MAX;
        self.outbox.push((
            Route::All,
            Envelope::End {
                input: self.config.input,
                through: self.last_position,
            },
        ));
    }

    /// Whether the partition was restored from a checkpoint taken after its
    /// end (it has nothing more to read).
    pub fn restored_ended(&self) -> bool {
        self.skip_through.is_some() && self.sent_watermark == i64::MAX
    }

    /// The source sends nothing more (after its end and a checkpoint that
    /// covers it).
    pub fn close(&mut self) {
        self.outbox.push((
            Route::All,
            Envelope::Closed {
                input: self.config.input,
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

    /// Takes the dead letters out of the outbox (for tests).
    #[cfg(test)]
    pub fn take_dead_letters(&mut self) -> std::vec::IntoIter<DeadLetter> {
        let mut taken = Vec::new();
        self.outbox.retain_mut(|(_, e)| match e {
            Envelope::DeadLetters { letters, .. } => {
                taken.append(letters);
                false
            }
            _ => true,
        });
        taken.into_iter()
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
            pre_aggregate: true,
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
                Envelope::Partials(b) => format!(
                    "{route:?} partials {} {:?}",
                    b.window_end,
                    b.partials
                        .iter()
                        .map(|(s, acc)| (*s, acc.count))
                        .collect::<Vec<_>>()
                ),
                Envelope::Watermark { watermark, .. } => format!("{route:?} wm {watermark}"),
                Envelope::Idle { .. } => format!("{route:?} idle"),
                Envelope::End { .. } => format!("{route:?} end"),
                Envelope::Closed { .. } => format!("{route:?} closed"),
                Envelope::DeadLetters { letters, .. } => {
                    format!("{route:?} dead letters {}", letters.len())
                }
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
        let raw = EmitterConfig {
            pre_aggregate: false,
            ..config(1000)
        };
        let mut e = Emitter::new(raw, Routing::new(owners, 2, Some(0)));
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

    /// Everything to destination 1, across the network.
    fn remote() -> Routing {
        Routing::new(vec![1; 128], 2, Some(0))
    }

    #[test]
    fn readings_for_other_workers_go_as_accumulators_before_the_watermark_that_closes_their_window()
    {
        let mut e = Emitter::new(config(2), remote());
        let w0 = 1_000_000_040_000; // 20 s into the window ending at ..080_000
        e.reading(&r(1, w0), Position::Offset(0));
        e.reading(&r(2, w0 + 1), Position::Offset(1));
        e.reading(&r(1, w0 + 2), Position::Offset(2));
        e.reading(&r(1, w0 + 3), Position::Offset(3));
        assert_eq!(e.partials_held(), 2);
        // Only the first watermark went out: no batch is full, nothing
        // waits in one.
        assert_eq!(describe(&mut e), vec![format!("All wm {}", w0 - 5_000)]);
        assert!(!e.has_pending());
        // Into the next window; the watermark reaches the first one's end
        // (1_000_000_080_000) only with a reading at 085_000.
        e.reading(&r(2, w0 + 44_000), Position::Offset(4));
        e.reading(&r(3, w0 + 45_000), Position::Offset(5));
        assert_eq!(
            describe(&mut e),
            vec![
                "To(1) partials 1000000080000 [(1, 3), (2, 1)]".to_string(),
                "All wm 1000000080000".to_string(),
            ]
        );
        // A reading of a window this partition's watermark has reached may
        // be late where it goes: it is sent as it is.
        e.reading(&r(1, w0 + 10), Position::Offset(6));
        assert_eq!(e.partials_held(), 2);
        e.flush();
        assert_eq!(
            describe(&mut e),
            vec![format!("To(1) records [{}]", w0 + 10)]
        );
        // A barrier takes every accumulator with it.
        e.barrier(1);
        let out = describe(&mut e);
        assert_eq!(
            out[0], "To(1) partials 1000000140000 [(2, 1), (3, 1)]",
            "{out:?}"
        );
        assert!(
            out[1].starts_with("All barrier 1 at Some(Offset(6))"),
            "{out:?}"
        );
        assert_eq!(e.partials_held(), 0);
        // And so does the end.
        e.reading(&r(3, w0 + 46_000), Position::Offset(7));
        e.end();
        assert_eq!(
            describe(&mut e),
            vec![
                "All wm 1000000081000".to_string(),
                "To(1) partials 1000000140000 [(3, 1)]".to_string(),
                "All end".to_string()
            ]
        );
    }

    #[test]
    fn an_idle_partition_stops_pre_aggregating() {
        let mut e = Emitter::new(config(100), remote());
        let w0 = 1_000_000_040_000;
        e.reading(&r(1, w0), Position::Offset(0));
        e.idle();
        assert_eq!(
            describe(&mut e),
            vec![
                format!("All wm {}", w0 - 5_000),
                "To(1) partials 1000000080000 [(1, 1)]".to_string(),
                "All idle".to_string(),
            ]
        );
        // Window tasks may have closed windows without this partition:
        // what it reads now must be judged reading by reading.
        e.reading(&r(1, w0 + 1), Position::Offset(1));
        assert_eq!(e.partials_held(), 0);
        e.flush();
        assert_eq!(
            describe(&mut e),
            vec![
                format!("To(1) records [{}]", w0 + 1),
                format!("All wm {}", w0 - 4_999)
            ]
        );
        // A partition restored as idle somewhere never starts.
        let config = EmitterConfig {
            pre_aggregate: false,
            ..config(100)
        };
        let mut e = Emitter::new(config, remote());
        e.reading(&r(1, w0), Position::Offset(0));
        assert_eq!(e.partials_held(), 0);
        assert_eq!(describe(&mut e)[0], format!("To(1) records [{w0}]"));
    }

    #[test]
    fn the_local_window_task_gets_readings_as_they_are() {
        let mut e = Emitter::new(config(100), Routing::new(vec![0; 128], 2, Some(0)));
        e.reading(&r(1, 1_000_000_020_000), Position::Offset(0));
        assert_eq!(e.partials_held(), 0);
        assert_eq!(describe(&mut e)[0], "To(0) records [1000000020000]");
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
            out[..out.len() - 1]
                .iter()
                .any(|d| d.contains("records") || d.contains("partials")),
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
        assert_eq!(e.restore_check(true), RestoreCheck::Fits);
        // An input that ends before the checkpointed position.
        let mut e = Emitter::new(config(100), Routing::single(128));
        e.restore_after(Position::Offset(9), t0);
        e.reading(&r(1, t0), Position::Offset(0));
        assert_eq!(e.restore_check(false), RestoreCheck::Fits, "not yet");
        assert_eq!(
            e.restore_check(true),
            RestoreCheck::EndedBefore(Position::Offset(9))
        );
        // An input that skips the checkpointed position: nothing after it
        // is taken.
        let mut e = Emitter::new(config(100), Routing::single(128));
        e.restore_after(Position::Offset(5), t0);
        e.reading(&r(1, t0), Position::Offset(4));
        e.reading(&r(1, t0 + 1), Position::Offset(6));
        assert_eq!(e.emitted(), 0);
        assert_eq!(
            e.restore_check(false),
            RestoreCheck::Missing {
                position: Position::Offset(5),
                found: Position::Offset(6)
            }
        );
        // A dead letter in the checkpoint is not written again, but counts
        // as read.
        let mut e = Emitter::new(config(100), Routing::single(128));
        e.restore_after(Position::Offset(1), t0);
        assert!(!e.consumed(Position::Offset(1)));
        e.reading(&r(1, t0), Position::Offset(2));
        assert_eq!(e.emitted(), 1);
        assert_eq!(e.restore_check(true), RestoreCheck::Fits);
    }

    #[test]
    fn after_the_end_barriers_carry_an_infinite_watermark() {
        let mut e = Emitter::new(config(100), Routing::single(128));
        e.reading(&r(1, 1_000_000_020_000), Position::Offset(0));
        e.end();
        e.barrier(7);
        e.close();
        let out = describe(&mut e);
        assert_eq!(
            out[out.len() - 3..],
            [
                "All end".to_string(),
                format!("All barrier 7 at Some(Offset(0)) wm {}", i64::MAX),
                "All closed".to_string()
            ]
        );
        let mut restored = Emitter::new(config(100), Routing::single(128));
        restored.restore_after(Position::Offset(0), i64::MAX);
        assert!(restored.restored_ended());
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

    /// Dead letters go to the local window task in order with the
    /// barriers (their epoch is the barrier's that follows them), one
    /// envelope for consecutive ones.
    #[test]
    fn dead_letters_keep_their_place_before_and_after_a_barrier() {
        let routing = Routing::new(vec![0; 128], 2, Some(1));
        let mut e = Emitter::new(config(10), routing);
        e.dead_letter("1".into(), 1, "truncated", "x".into(), b"a");
        e.dead_letter("2".into(), 1, "truncated", "x".into(), b"b");
        e.barrier(4);
        e.dead_letter("3".into(), 1, "truncated", "x".into(), b"c");
        let out = describe(&mut e);
        assert_eq!(out[0], "To(1) dead letters 2");
        assert!(out[1].contains("barrier 4"), "{out:?}");
        assert_eq!(out.last().map(String::as_str), Some("To(1) dead letters 1"));
        assert_eq!(e.bad(), 3);
    }
}
