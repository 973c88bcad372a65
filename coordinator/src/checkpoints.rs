//! The checkpoint coordinator: when to trigger, what acks complete a
//! checkpoint, and the history the admin API shows.
//!
//! A state machine without I/O (the actor sends the commands and runs the
//! store writes in tasks that answer with a message):
//!
//! ```text
//! Idle { next_at } --due--> Pending --all acks--> Writing --written--> Idle
//!                              |                     |
//!                              +-- declined, timeout, generation replaced,
//!                                  write failed --> Idle (failed)
//! ```
//!
//! At most one checkpoint is in flight. The next is due `interval` after the
//! previous trigger, and at least `min_pause` after the previous one ended;
//! earlier when output waits for one (windows closed: their rows are
//! committed when a checkpoint completes), but not before `min_pause`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use weir_common::time::millis;
use weir_proto::checkpoint as ckpt;
use weir_proto::cluster as pb;

/// Checkpoints the history keeps for the admin API.
const HISTORY: usize = 32;

/// How often and how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub min_pause: Duration,
}

/// Where a checkpoint stands, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    InProgress,
    Completed,
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::InProgress => "IN_PROGRESS",
            Outcome::Completed => "COMPLETED",
            Outcome::Failed => "FAILED",
        }
    }
}

/// One checkpoint, for the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: u64,
    pub generation: u64,
    pub triggered_ms: i64,
    pub duration_ms: u64,
    pub bytes: u64,
    pub incremental_bytes: u64,
    pub alignment_ms: u64,
    pub outcome: Outcome,
    pub failure: String,
    pub savepoint: bool,
}

/// Why a checkpoint failed (the metrics count them by cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    Declined,
    Timeout,
    Replaced,
    Store,
    Inconsistent,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Declined => "declined",
            Cause::Timeout => "timeout",
            Cause::Replaced => "generation_replaced",
            Cause::Store => "store",
            Cause::Inconsistent => "inconsistent",
        }
    }
}

#[derive(Debug)]
enum State {
    Idle {
        next_at: Instant,
        /// Not before this (`min_pause` after the previous one ended),
        /// unless asked for.
        earliest: Instant,
    },
    Pending {
        id: u64,
        generation: u64,
        triggered: Instant,
        waiting: BTreeSet<String>,
        acks: BTreeMap<String, pb::CheckpointAck>,
        savepoint: bool,
    },
    /// Every task acked; the metadata is being written.
    Writing {
        id: u64,
        triggered: Instant,
        savepoint: bool,
    },
}

/// A checkpoint asked for (rather than due).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// Kept by retention until deleted by hand.
    pub savepoint: bool,
    /// The sources stop reading after its barriers (the job is stopping:
    /// nothing after the checkpoint is read, so nothing after it is
    /// written).
    pub stop_sources: bool,
}

/// What the actor must do after a step.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    /// Send `TriggerCheckpoint(id)` to every worker of `generation`.
    Trigger {
        id: u64,
        generation: u64,
        stop_sources: bool,
    },
    /// Write this metadata, then the `latest` pointer (in a task).
    Write(Box<ckpt::CheckpointMetadata>),
    /// Tell the workers the checkpoint was given up.
    Abort {
        id: u64,
        generation: u64,
    },
}

/// See the module docs.
#[derive(Debug)]
pub struct CheckpointCoordinator {
    timing: Timing,
    next_id: u64,
    state: State,
    history: VecDeque<Record>,
    /// A checkpoint was asked for by the admin API.
    requested: Option<Requested>,
    /// Output waits for a checkpoint to be committed.
    output_waiting: bool,
    pub failures: BTreeMap<Cause, u64>,
    pub completed: u64,
    pub last_completed: Option<(u64, Instant)>,
}

impl CheckpointCoordinator {
    /// Starts numbering after `last` (the newest checkpoint in the store).
    pub fn new(timing: Timing, last: u64, now: Instant) -> Self {
        CheckpointCoordinator {
            timing,
            next_id: last.saturating_add(1),
            state: State::Idle {
                next_at: now + timing.interval,
                earliest: now,
            },
            history: VecDeque::new(),
            requested: None,
            output_waiting: false,
            failures: BTreeMap::new(),
            completed: 0,
            last_completed: None,
        }
    }

    /// Numbers the next checkpoint after `n` at least (one that another
    /// leader asked for).
    pub fn number_after(&mut self, n: u64) {
        self.next_id = self.next_id.max(n.saturating_add(1));
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// A new interval takes effect from the next trigger.
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.timing.interval = interval;
        if let State::Idle { next_at, .. } = &mut self.state {
            *next_at = (*next_at).min(now + interval);
        }
    }

    /// Output waits for a checkpoint: the next one is taken as soon as
    /// `min_pause` allows.
    pub fn output_waiting(&mut self) {
        self.output_waiting = true;
    }

    /// Asks for a checkpoint as soon as possible.
    pub fn request(&mut self, r: Requested) {
        let before = self.requested.unwrap_or_default();
        self.requested = Some(Requested {
            savepoint: before.savepoint || r.savepoint,
            stop_sources: before.stop_sources || r.stop_sources,
        });
    }

    /// Whether a checkpoint is asked for or in flight.
    pub fn pending(&self) -> bool {
        self.requested.is_some() || self.in_flight().is_some()
    }

    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.history.iter()
    }

    /// Whether a savepoint is asked for or in flight.
    pub fn savepoint_pending(&self) -> bool {
        self.requested.is_some_and(|r| r.savepoint)
            || matches!(
                self.state,
                State::Pending {
                    savepoint: true,
                    ..
                } | State::Writing {
                    savepoint: true,
                    ..
                }
            )
    }

    pub fn in_flight(&self) -> Option<u64> {
        match &self.state {
            State::Idle { .. } => None,
            State::Pending { id, .. } | State::Writing { id, .. } => Some(*id),
        }
    }

    /// Every tick. `workers`: the workers of the running generation, when
    /// every one of them is running it (`None`: nothing to checkpoint).
    pub fn tick(&mut self, now: Instant, now_ms: i64, running: Option<(u64, &[String])>) -> Action {
        match &self.state {
            State::Idle { next_at, earliest } => {
                let Some((generation, workers)) = running else {
                    return Action::None;
                };
                let due = now >= *next_at
                    || self.requested.is_some()
                    || (self.output_waiting && now >= *earliest);
                if workers.is_empty() || !due {
                    return Action::None;
                }
                self.output_waiting = false;
                let id = self.next_id;
                self.next_id += 1;
                let requested = self.requested.take().unwrap_or_default();
                let savepoint = requested.savepoint;
                self.state = State::Pending {
                    id,
                    generation,
                    triggered: now,
                    waiting: workers.iter().cloned().collect(),
                    acks: BTreeMap::new(),
                    savepoint,
                };
                self.history.push_back(Record {
                    id,
                    generation,
                    triggered_ms: now_ms,
                    duration_ms: 0,
                    bytes: 0,
                    incremental_bytes: 0,
                    alignment_ms: 0,
                    outcome: Outcome::InProgress,
                    failure: String::new(),
                    savepoint,
                });
                while self.history.len() > HISTORY {
                    self.history.pop_front();
                }
                Action::Trigger {
                    id,
                    generation,
                    stop_sources: requested.stop_sources,
                }
            }
            State::Pending {
                id,
                generation,
                triggered,
                ..
            } => {
                let (id, generation, triggered) = (*id, *generation, *triggered);
                if running.map(|(g, _)| g) != Some(generation) {
                    self.fail(
                        id,
                        Cause::Replaced,
                        "the job's generation changed".into(),
                        now,
                    );
                    return Action::None;
                }
                if now.duration_since(triggered) > self.timing.timeout {
                    self.fail(
                        id,
                        Cause::Timeout,
                        format!("not acknowledged within {:?}", self.timing.timeout),
                        now,
                    );
                    return Action::Abort { id, generation };
                }
                Action::None
            }
            State::Writing { .. } => Action::None,
        }
    }

    /// A worker's ack.
    pub fn on_ack(
        &mut self,
        worker: &str,
        ack: pb::CheckpointAck,
        job: &MetadataContext,
        now_ms: i64,
    ) -> Action {
        let State::Pending {
            id,
            generation,
            waiting,
            acks,
            triggered,
            savepoint,
        } = &mut self.state
        else {
            return Action::None;
        };
        if ack.checkpoint != *id || ack.generation != *generation || !waiting.remove(worker) {
            return Action::None;
        }
        acks.insert(worker.to_owned(), ack);
        if !waiting.is_empty() {
            return Action::None;
        }
        let (id, generation, triggered, savepoint) = (*id, *generation, *triggered, *savepoint);
        let acks = std::mem::take(acks);
        // Every task saw the same barriers: their positions must agree.
        let mut positions: Option<&Vec<pb::PartitionPosition>> = None;
        for a in acks.values() {
            match positions {
                None => positions = Some(&a.positions),
                Some(p) if *p == a.positions => {}
                Some(_) => {
                    self.fail(
                        id,
                        Cause::Inconsistent,
                        "workers acknowledged different partition positions".into(),
                        Instant::now(),
                    );
                    return Action::Abort { id, generation };
                }
            }
        }
        let positions = positions.cloned().unwrap_or_default();
        let tasks: Vec<pb::TaskState> = acks.values().filter_map(|a| a.state.clone()).collect();
        if let Some(r) = self.record_mut(id) {
            r.bytes = tasks.iter().map(|t| t.bytes).sum();
            r.incremental_bytes = tasks.iter().map(|t| t.incremental_bytes).sum();
            r.alignment_ms = acks.values().map(|a| a.alignment_ms).max().unwrap_or(0);
        }
        let triggered_ms = self.record_mut(id).map_or(0, |r| r.triggered_ms);
        self.state = State::Writing {
            id,
            triggered,
            savepoint,
        };
        Action::Write(Box::new(ckpt::CheckpointMetadata {
            format: 1,
            job: job.job.clone(),
            checkpoint: id,
            spec_hash: job.spec_hash.clone(),
            generation,
            triggered_ms,
            completed_ms: now_ms,
            max_parallelism: u32::from(job.max_parallelism),
            positions,
            tasks,
            savepoint,
            generator_start_ms: None,
        }))
    }

    /// A worker declined checkpoint `id`.
    pub fn on_declined(&mut self, id: u64, reason: String, now: Instant) -> Action {
        match &self.state {
            State::Pending {
                id: pending,
                generation,
                ..
            } if *pending == id => {
                let generation = *generation;
                self.fail(id, Cause::Declined, reason, now);
                Action::Abort { id, generation }
            }
            _ => Action::None,
        }
    }

    /// The metadata of `id` was written (or not). Returns the checkpoint
    /// when this completed it (once per checkpoint: for the log and the
    /// metrics that count completions).
    pub fn on_written(
        &mut self,
        id: u64,
        result: Result<(), String>,
        now: Instant,
    ) -> Option<Record> {
        let State::Writing {
            id: writing,
            triggered,
            ..
        } = self.state
        else {
            return None;
        };
        if writing != id {
            return None;
        }
        match result {
            Ok(()) => {
                let duration_ms = millis(now.duration_since(triggered));
                let completed = self.record_mut(id).map(|r| {
                    r.outcome = Outcome::Completed;
                    r.duration_ms = duration_ms;
                    r.clone()
                });
                self.completed += 1;
                self.last_completed = Some((id, now));
                self.idle(triggered, now);
                completed
            }
            Err(e) => {
                self.fail(id, Cause::Store, e, now);
                None
            }
        }
    }

    fn fail(&mut self, id: u64, cause: Cause, reason: String, now: Instant) {
        let triggered = match self.state {
            State::Pending { triggered, .. } | State::Writing { triggered, .. } => triggered,
            State::Idle { .. } => now,
        };
        tracing::warn!(checkpoint = id, cause = cause.name(), %reason, "checkpoint failed; the job goes on");
        if let Some(r) = self.record_mut(id) {
            r.outcome = Outcome::Failed;
            r.failure = reason;
            r.duration_ms = millis(now.duration_since(triggered));
        }
        *self.failures.entry(cause).or_default() += 1;
        self.idle(triggered, now);
    }

    fn idle(&mut self, triggered: Instant, now: Instant) {
        let earliest = now + self.timing.min_pause;
        let next_at = (triggered + self.timing.interval).max(earliest);
        self.state = State::Idle { next_at, earliest };
    }

    fn record_mut(&mut self, id: u64) -> Option<&mut Record> {
        self.history.iter_mut().rev().find(|r| r.id == id)
    }
}

/// What the metadata says about the job.
#[derive(Clone, Debug)]
pub struct MetadataContext {
    pub job: String,
    pub spec_hash: String,
    pub max_parallelism: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            interval: 10 * S,
            timeout: 5 * S,
            min_pause: 2 * S,
        }
    }

    fn context() -> MetadataContext {
        MetadataContext {
            job: "j".into(),
            spec_hash: "h".into(),
            max_parallelism: 128,
        }
    }

    fn ack(id: u64, worker: &str, position: u64) -> pb::CheckpointAck {
        pb::CheckpointAck {
            generation: 1,
            checkpoint: id,
            state: Some(pb::TaskState {
                worker_id: worker.into(),
                bytes: 10,
                incremental_bytes: 4,
                ..Default::default()
            }),
            positions: vec![pb::PartitionPosition {
                input: 0,
                name: "p".into(),
                position: Some(weir_common::position::Position::Offset(position).into()),
                watermark: 5,
            }],
            alignment_ms: 3,
            ..Default::default()
        }
    }

    fn workers() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn a_checkpoint_is_triggered_acked_written_and_the_next_one_scheduled() {
        let t0 = Instant::now();
        let mut c = CheckpointCoordinator::new(timing(), 4, t0);
        let w = workers();
        assert_eq!(c.tick(t0, 0, Some((1, &w))), Action::None, "not due yet");
        assert_eq!(
            c.tick(t0 + 10 * S, 0, Some((1, &w))),
            Action::Trigger {
                id: 5,
                generation: 1,
                stop_sources: false
            }
        );
        assert_eq!(c.in_flight(), Some(5));
        assert_eq!(c.on_ack("a", ack(5, "a", 7), &context(), 0), Action::None);
        assert_eq!(
            c.on_ack("a", ack(5, "a", 7), &context(), 0),
            Action::None,
            "twice"
        );
        let Action::Write(meta) = c.on_ack("b", ack(5, "b", 7), &context(), 0) else {
            panic!("complete");
        };
        assert_eq!(meta.checkpoint, 5);
        assert_eq!(meta.tasks.len(), 2);
        assert_eq!(meta.positions.len(), 1);
        assert_eq!(
            c.tick(t0 + 30 * S, 0, Some((1, &w))),
            Action::None,
            "writing"
        );
        let r = c.on_written(5, Ok(()), t0 + 11 * S).expect("completed");
        assert_eq!(
            (r.outcome, r.bytes, r.incremental_bytes, r.duration_ms),
            (Outcome::Completed, 20, 8, 1_000)
        );
        assert_eq!(c.history().last(), Some(&r));
        assert_eq!(c.on_written(5, Ok(()), t0 + 12 * S), None, "completed once");
        assert_eq!(c.last_completed.map(|(id, _)| id), Some(5));
        // Next: 10 s after the trigger (later than the 2 s pause).
        assert_eq!(c.tick(t0 + 19 * S, 0, Some((1, &w))), Action::None);
        assert!(matches!(
            c.tick(t0 + 20 * S, 0, Some((1, &w))),
            Action::Trigger { id: 6, .. }
        ));
    }

    /// Output waiting (closed windows) brings the next checkpoint forward,
    /// but not closer than `min_pause` to the end of the previous one.
    #[test]
    fn waiting_output_is_checkpointed_early_after_the_pause() {
        let t0 = Instant::now();
        let mut c = CheckpointCoordinator::new(timing(), 0, t0);
        let w = workers();
        c.output_waiting();
        assert!(matches!(
            c.tick(t0, 0, Some((1, &w))),
            Action::Trigger { id: 1, .. }
        ));
        c.on_ack("a", ack(1, "a", 1), &context(), 0);
        c.on_ack("b", ack(1, "b", 1), &context(), 0);
        c.on_written(1, Ok(()), t0 + S);
        assert_eq!(c.tick(t0 + 2 * S, 0, Some((1, &w))), Action::None);
        c.output_waiting();
        assert_eq!(
            c.tick(t0 + 2 * S, 0, Some((1, &w))),
            Action::None,
            "within the 2 s pause after the previous one ended"
        );
        assert!(matches!(
            c.tick(t0 + 3 * S, 0, Some((1, &w))),
            Action::Trigger { id: 2, .. }
        ));
    }

    #[test]
    fn a_timeout_fails_the_checkpoint_and_the_job_goes_on() {
        let t0 = Instant::now();
        let mut c = CheckpointCoordinator::new(timing(), 0, t0);
        let w = workers();
        c.request(Requested::default());
        assert!(matches!(
            c.tick(t0, 0, Some((1, &w))),
            Action::Trigger { id: 1, .. }
        ));
        c.on_ack("a", ack(1, "a", 1), &context(), 0);
        assert_eq!(
            c.tick(t0 + 6 * S, 0, Some((1, &w))),
            Action::Abort {
                id: 1,
                generation: 1
            }
        );
        assert_eq!(c.failures.get(&Cause::Timeout), Some(&1));
        assert_eq!(c.history().last().map(|r| r.outcome), Some(Outcome::Failed));
        // A late ack changes nothing; the next one comes after the pause.
        assert_eq!(c.on_ack("b", ack(1, "b", 1), &context(), 0), Action::None);
        assert_eq!(c.tick(t0 + 7 * S, 0, Some((1, &w))), Action::None);
        assert!(matches!(
            c.tick(t0 + 10 * S, 0, Some((1, &w))),
            Action::Trigger { id: 2, .. }
        ));
    }

    #[test]
    fn declines_store_failures_and_new_generations_fail_it() {
        let t0 = Instant::now();
        let mut c = CheckpointCoordinator::new(timing(), 0, t0);
        let w = workers();
        c.request(Requested::default());
        c.tick(t0, 0, Some((1, &w)));
        assert_eq!(
            c.on_declined(1, "disk full".into(), t0),
            Action::Abort {
                id: 1,
                generation: 1
            }
        );
        assert_eq!(
            c.history().last().map(|r| r.failure.as_str()),
            Some("disk full")
        );
        c.request(Requested::default());
        c.tick(t0 + 10 * S, 0, Some((1, &w)));
        // The generation is replaced while it is pending.
        assert_eq!(c.tick(t0 + 11 * S, 0, Some((2, &w))), Action::None);
        assert_eq!(c.failures.get(&Cause::Replaced), Some(&1));
        c.request(Requested::default());
        c.tick(t0 + 21 * S, 0, Some((1, &w)));
        c.on_ack("a", ack(3, "a", 1), &context(), 0);
        assert!(matches!(
            c.on_ack("b", ack(3, "b", 1), &context(), 0),
            Action::Write(_)
        ));
        assert_eq!(
            c.on_written(3, Err("S3 unreachable".into()), t0 + 22 * S),
            None
        );
        assert_eq!(c.failures.get(&Cause::Store), Some(&1));
        assert_eq!(c.completed, 0);
    }

    #[test]
    fn workers_that_disagree_on_positions_fail_it() {
        let t0 = Instant::now();
        let mut c = CheckpointCoordinator::new(timing(), 0, t0);
        let w = workers();
        c.request(Requested {
            savepoint: true,
            stop_sources: true,
        });
        assert!(c.savepoint_pending() && c.pending());
        assert!(matches!(
            c.tick(t0, 0, Some((1, &w))),
            Action::Trigger {
                stop_sources: true,
                ..
            }
        ));
        assert_eq!(c.history().last().map(|r| r.savepoint), Some(true));
        c.on_ack("a", ack(1, "a", 1), &context(), 0);
        assert!(matches!(
            c.on_ack("b", ack(1, "b", 2), &context(), 0),
            Action::Abort { .. }
        ));
        assert_eq!(c.failures.get(&Cause::Inconsistent), Some(&1));
        assert!(!c.pending() && !c.savepoint_pending());
    }

    #[test]
    fn nothing_is_triggered_without_a_running_generation_and_interval_changes_apply() {
        let t0 = Instant::now();
        let mut c = CheckpointCoordinator::new(timing(), 0, t0);
        assert_eq!(c.tick(t0 + 60 * S, 0, None), Action::None);
        let mut c = CheckpointCoordinator::new(timing(), 0, t0);
        c.set_interval(S, t0);
        let w = workers();
        assert!(matches!(
            c.tick(t0 + S, 0, Some((1, &w))),
            Action::Trigger { .. }
        ));
        assert_eq!(c.timing().interval, S);
    }
}
