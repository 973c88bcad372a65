//! Source tasks: one per partition, reading, decoding, and sending on.
//!
//! A [`PartitionReader`] knows one kind of input (a file, the generator, a
//! Pulsar partition) and hands decoded readings to an [`Emitter`]; the
//! [`SourceTask`] around it is the same for every kind. It delivers the
//! emitter's envelopes in order (waiting on full channels, which is how a
//! slow sink slows the sources down), flushes before it waits for input,
//! enforces the rate limit, reports idleness, emits checkpoint barriers
//! when triggered ([`SourceCommand`]), lets the reader acknowledge the input
//! up to the positions of completed checkpoints, and stops when told to.
//!
//! At the end of its input a source sends end-of-input, tells the
//! coordinator, and stays: it still emits the barriers of checkpoints
//! triggered after its end. When one of those completes, everything it read
//! is in the output and in a completed checkpoint (which restores the
//! partition as ended): it acknowledges its last position, closes its
//! output, and finishes. (Flink does the same since FLIP-147: a final
//! checkpoint after the end of bounded inputs.)

pub mod file;
pub mod generator;
pub mod pulsar;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::position::Position;

use crate::checkpoint::CheckpointEvent;
use crate::emitter::{Emitter, RestoreCheck, Route};
use crate::envelope::Envelope;
use crate::metrics::JobMetrics;

pub use file::FileReader;
pub use generator::GeneratorReader;
pub use pulsar::PulsarReader;

/// Why a source cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Input(#[from] weir_common::input::InputError),
    #[error("input {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pulsar(#[from] weir_common::pulsar::PulsarError),
    #[error("Pulsar topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error(
        "partition {partition}: the restored checkpoint resumes after position {position}, but \
         {problem}: it is not the input the checkpoint was taken of (a topic deleted and created \
         again, another cluster or file). Start with --start-from earliest or --start-from latest \
         to ignore the checkpoints, or point --checkpoint-store elsewhere"
    )]
    NotTheCheckpointedInput {
        partition: String,
        position: Position,
        problem: String,
    },
}

/// What a source task is told by its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCommand {
    /// Emit checkpoint `checkpoint`'s barrier after what was read so far;
    /// with `then_halt`, read nothing more (the job stops after it).
    Trigger { checkpoint: u64, then_halt: bool },
    /// Checkpoint `n` completed: what was read before its barrier is in the
    /// output and need never be read again.
    Completed(u64),
}

/// What one [`PartitionReader::pull`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Pulled {
    /// Read something (possibly only dead letters); call again.
    Progress,
    /// Nothing to read before this instant; call again then.
    WaitUntil(Instant),
    /// The partition is exhausted.
    End,
}

/// One kind of input partition.
pub trait PartitionReader: Send {
    /// Reads the next piece of input (a container block, a chunk of
    /// generated readings) into `out`.
    fn pull(
        &mut self,
        out: &mut Emitter,
    ) -> impl Future<Output = Result<Pulled, SourceError>> + Send;

    /// What to acknowledge, once a checkpoint taken at `position` (the last
    /// position read) completes: the position, or how the reader knows its
    /// input system wants it said (a Pulsar entry read whole).
    fn ack_point(&self, position: Position) -> Position {
        position
    }

    /// Tells the input system (a Pulsar subscription) that everything up to
    /// `position` is in a completed checkpoint.
    fn acknowledge(&mut self, _position: Position) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// How a source task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceOutcome {
    /// Read to the end and sent end-of-input.
    Finished,
    /// Stopped on request before the end.
    Stopped,
    /// A destination went away (the job is shutting down).
    Disconnected,
}

/// Flow-control settings of a source task.
#[derive(Clone, Debug)]
pub struct SourceLimits {
    /// Records per second, at most.
    pub rate_limit: Option<f64>,
    pub idle_timeout: Duration,
}

/// Everything a source task needs besides its reader.
pub struct SourceWiring {
    pub input: u32,
    pub emitter: Emitter,
    pub destinations: Vec<mpsc::Sender<Envelope>>,
    pub metrics: Arc<JobMetrics>,
    pub limits: SourceLimits,
    pub stop: CancellationToken,
    pub commands: mpsc::Receiver<SourceCommand>,
    /// Where the source tells that its input ended.
    pub events: mpsc::Sender<CheckpointEvent>,
}

impl SourceWiring {
    pub fn with_reader<R: PartitionReader>(self, reader: R) -> SourceTask<R> {
        SourceTask {
            input: self.input,
            reader,
            emitter: self.emitter,
            destinations: self.destinations,
            metrics: self.metrics,
            limits: self.limits,
            stop: self.stop,
            commands: self.commands,
            events: self.events,
            barriers: VecDeque::new(),
            acknowledged: None,
        }
    }
}

pub struct SourceTask<R> {
    /// The partition's input index.
    pub input: u32,
    pub reader: R,
    pub emitter: Emitter,
    pub destinations: Vec<mpsc::Sender<Envelope>>,
    pub metrics: Arc<JobMetrics>,
    pub limits: SourceLimits,
    /// Cancelled to stop reading (the rest of the job drains normally).
    pub stop: CancellationToken,
    pub commands: mpsc::Receiver<SourceCommand>,
    pub events: mpsc::Sender<CheckpointEvent>,
    /// The barriers emitted and not completed yet: (checkpoint, position).
    barriers: VecDeque<(u64, Option<Position>)>,
    /// The last position acknowledged to the input system.
    acknowledged: Option<Position>,
}

/// Barriers remembered for acknowledgment at most (older ones are dropped:
/// a later completion acknowledges further anyway).
const BARRIERS_KEPT: usize = 64;

/// What a command means for the reading loop.
enum Next {
    Read,
    /// A final checkpoint's barrier was emitted: read nothing more.
    Halt,
}

impl<R: PartitionReader> SourceTask<R> {
    pub async fn run(mut self) -> Result<SourceOutcome, SourceError> {
        // On a stop request, readings not yet delivered are dropped with the
        // rest of the unread input: nothing acknowledged them, so a restart
        // from the last completed checkpoint reads them again.
        let stop = self.stop.clone();
        let started = Instant::now();
        let mut last_data = started;
        let mut idle = false;
        let mut counted = (0u64, 0u64);
        // The restored checkpoint is complete: acknowledge its position.
        if let Some(restored) = self.emitter.last_position() {
            self.acknowledge(restored).await;
        }
        if self.emitter.restored_ended() {
            // Ended before the checkpoint: nothing to read.
            return self.ended(&stop, &mut counted).await;
        }
        loop {
            while let Ok(command) = self.commands.try_recv() {
                if let Next::Halt = self.on_command(command).await {
                    return Ok(self.halt(&stop, &mut counted).await);
                }
            }
            let before = self.emitter.emitted();
            let pulled = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(SourceOutcome::Stopped),
                pulled = self.reader.pull(&mut self.emitter) => pulled?,
            };
            self.check_restored(matches!(pulled, Pulled::End))?;
            let now = Instant::now();
            if self.emitter.emitted() > before {
                last_data = now;
                idle = false;
            }
            let mut wait_until = match pulled {
                Pulled::Progress => None,
                Pulled::WaitUntil(t) => Some(t),
                Pulled::End => return self.ended(&stop, &mut counted).await,
            };
            if let Some(rate) = self.limits.rate_limit {
                let due = started + weir_common::time::pace(self.emitter.emitted(), rate);
                if due > now {
                    wait_until = Some(wait_until.map_or(due, |t| t.max(due)));
                }
            }
            if let Some(t) = wait_until {
                // About to wait: everything read so far goes out first.
                self.emitter.flush();
                let idle_at = last_data + self.limits.idle_timeout;
                if !idle && now >= idle_at {
                    idle = true;
                    self.emitter.idle();
                }
                match self.deliver_or_stop(&stop, &mut counted).await {
                    Some(true) => {}
                    Some(false) => return Ok(SourceOutcome::Disconnected),
                    None => return Ok(SourceOutcome::Stopped),
                }
                let until = if idle { t } else { t.min(idle_at) };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(SourceOutcome::Stopped),
                    // A command does not wait for input: the loop takes it.
                    Some(command) = self.commands.recv() => {
                        if let Next::Halt = self.on_command(command).await {
                            return Ok(self.halt(&stop, &mut counted).await);
                        }
                    }
                    _ = tokio::time::sleep_until(until) => {}
                }
            } else {
                match self.deliver_or_stop(&stop, &mut counted).await {
                    Some(true) => {}
                    Some(false) => return Ok(SourceOutcome::Disconnected),
                    None => return Ok(SourceOutcome::Stopped),
                }
            }
        }
    }

    /// Fails when the input turned out not to be the one the restored
    /// checkpoint was taken of.
    fn check_restored(&self, ended: bool) -> Result<(), SourceError> {
        let (position, problem) = match self.emitter.restore_check(ended) {
            RestoreCheck::Fits => return Ok(()),
            RestoreCheck::EndedBefore(position) => (position, "the input ends before it".into()),
            RestoreCheck::Missing { position, found } => (
                position,
                format!("the input has {found} after it and not the position itself"),
            ),
        };
        Err(SourceError::NotTheCheckpointedInput {
            partition: self.emitter.source_name().to_owned(),
            position,
            problem,
        })
    }

    /// Takes a command.
    async fn on_command(&mut self, command: SourceCommand) -> Next {
        match command {
            SourceCommand::Trigger {
                checkpoint,
                then_halt,
            } => {
                self.emitter.barrier(checkpoint);
                if self.barriers.len() == BARRIERS_KEPT {
                    self.barriers.pop_front();
                }
                let at = self
                    .emitter
                    .last_position()
                    .map(|p| self.reader.ack_point(p));
                self.barriers.push_back((checkpoint, at));
                if then_halt {
                    Next::Halt
                } else {
                    Next::Read
                }
            }
            SourceCommand::Completed(n) => {
                let mut done = None;
                while let Some(&(checkpoint, position)) = self.barriers.front() {
                    if checkpoint > n {
                        break;
                    }
                    self.barriers.pop_front();
                    done = Some(position);
                }
                if let Some(Some(position)) = done {
                    self.acknowledge(position).await;
                }
                Next::Read
            }
        }
    }

    async fn acknowledge(&mut self, position: Position) {
        // Not by order: an entry read whole is acknowledged as the entry,
        // which sorts before its messages.
        if self.acknowledged != Some(position) {
            self.reader.acknowledge(position).await;
            self.acknowledged = Some(position);
        }
    }

    /// After a final checkpoint's barrier: delivers what is queued (the
    /// barrier last) and waits, reading nothing, until the job stops
    /// (acknowledging the input when the checkpoint completes).
    async fn halt(&mut self, stop: &CancellationToken, counted: &mut (u64, u64)) -> SourceOutcome {
        match self.deliver_or_stop(stop, counted).await {
            Some(true) => {}
            Some(false) => return SourceOutcome::Disconnected,
            None => return SourceOutcome::Stopped,
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return SourceOutcome::Stopped,
                Some(command) = self.commands.recv() => {
                    if let SourceCommand::Completed(_) = command {
                        self.on_command(command).await;
                    }
                }
            }
        }
    }

    /// At the end of the input: sends end-of-input, tells the coordinator,
    /// and takes part in checkpoints until one triggered after the end
    /// completes; then acknowledges the input, closes and finishes.
    async fn ended(
        &mut self,
        stop: &CancellationToken,
        counted: &mut (u64, u64),
    ) -> Result<SourceOutcome, SourceError> {
        self.emitter.end();
        match self.deliver_or_stop(stop, counted).await {
            Some(true) => {}
            Some(false) => return Ok(SourceOutcome::Disconnected),
            None => return Ok(SourceOutcome::Stopped),
        }
        if let Some(p) = self.metrics.partitions.get(self.input as usize) {
            p.finished.store(true, Relaxed);
        }
        // Barriers emitted before the end do not cover it.
        self.barriers.clear();
        let _ = self
            .events
            .send(CheckpointEvent::InputEnded(self.input))
            .await;
        loop {
            let command = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(SourceOutcome::Stopped),
                c = self.commands.recv() => c,
            };
            let Some(command) = command else {
                // The deployment is going away.
                return Ok(SourceOutcome::Stopped);
            };
            let final_checkpoint = match command {
                SourceCommand::Completed(n) => self.barriers.front().is_some_and(|b| b.0 <= n),
                SourceCommand::Trigger { .. } => false,
            };
            // A halting trigger changes nothing here: nothing is read.
            self.on_command(command).await;
            match self.deliver_or_stop(stop, counted).await {
                Some(true) => {}
                Some(false) => return Ok(SourceOutcome::Disconnected),
                None => return Ok(SourceOutcome::Stopped),
            }
            if final_checkpoint {
                self.emitter.close();
                return Ok(match self.deliver_or_stop(stop, counted).await {
                    Some(true) => SourceOutcome::Finished,
                    Some(false) => SourceOutcome::Disconnected,
                    None => SourceOutcome::Stopped,
                });
            }
        }
    }

    /// [`deliver`](Self::deliver), unless a stop request comes first (`None`).
    async fn deliver_or_stop(
        &mut self,
        stop: &CancellationToken,
        counted: &mut (u64, u64),
    ) -> Option<bool> {
        tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            ok = self.deliver(counted) => Some(ok),
        }
    }

    /// Sends queued envelopes (dead letters among them); `false` if a
    /// receiver is gone.
    async fn deliver(&mut self, counted: &mut (u64, u64)) -> bool {
        let m = &self.metrics;
        JobMetrics::add(&m.records_in, self.emitter.emitted() - counted.0);
        JobMetrics::add(&m.bad_records, self.emitter.bad() - counted.1);
        (counted.0, counted.1) = (self.emitter.emitted(), self.emitter.bad());
        for (kg, n) in self.emitter.take_remote_counts() {
            if let Some(c) = m.remote_by_key_group.get(kg) {
                c.fetch_add(n, Relaxed);
            }
            m.shuffle_sent.fetch_add(n, Relaxed);
        }
        if let Some(p) = m.partitions.get(self.input as usize) {
            p.records.store(self.emitter.emitted(), Relaxed);
            p.watermark.store(self.emitter.watermark(), Relaxed);
        }
        let outbox: Vec<(Route, Envelope)> = self.emitter.take_outbox().collect();
        for (route, envelope) in outbox {
            match &envelope {
                Envelope::DeadLetters { letters, .. } => m.note_dead_letters(letters),
                Envelope::Partials(b) => {
                    JobMetrics::add(&m.shuffle_accumulators_sent, b.partials.len() as u64)
                }
                _ => {}
            }
            let sent = match route {
                Route::To(d) => match self.destinations.get(d) {
                    Some(tx) => send_timed(tx, envelope, &m.source_wait_micros).await,
                    None => false,
                },
                Route::All => {
                    let mut ok = true;
                    for tx in &self.destinations {
                        ok &= send_timed(tx, envelope.clone(), &m.source_wait_micros).await;
                    }
                    ok
                }
            };
            if !sent {
                return false;
            }
        }
        true
    }
}

/// Sends `envelope`, adding the time spent waiting for room to `waited`
/// (microseconds): the clock is read only when the channel is full, so an
/// unhindered source pays nothing for the measurement, and a long wait is
/// counted as it goes (every [`WAIT_TICK`]), not only once it ends, so that
/// a source held back for minutes shows it meanwhile. `false` if the
/// receiver is gone.
async fn send_timed(tx: &mpsc::Sender<Envelope>, envelope: Envelope, waited: &AtomicU64) -> bool {
    let envelope = match tx.try_send(envelope) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(envelope)) => envelope,
    };
    let count = |since: std::time::Instant| {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        waited.fetch_add(micros, Relaxed);
    };
    let mut since = std::time::Instant::now();
    let room = tx.reserve();
    tokio::pin!(room);
    loop {
        tokio::select! {
            permit = &mut room => {
                count(since);
                return match permit {
                    Ok(permit) => {
                        permit.send(envelope);
                        true
                    }
                    Err(_) => false,
                };
            }
            _ = tokio::time::sleep(WAIT_TICK) => {
                count(since);
                since = std::time::Instant::now();
            }
        }
    }
}

/// How often a long wait for room is added to the source's wait time.
const WAIT_TICK: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Envelope {
        Envelope::Idle { input: 0 }
    }

    #[tokio::test]
    async fn waiting_for_room_is_counted_while_it_lasts() {
        let (tx, mut rx) = mpsc::channel(1);
        let waited = Arc::new(AtomicU64::new(0));
        assert!(send_timed(&tx, idle(), &waited).await);
        assert_eq!(waited.load(Relaxed), 0, "room at once: no wait");

        let (w, sender) = (waited.clone(), tx.clone());
        let blocked = tokio::spawn(async move { send_timed(&sender, idle(), &w).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let meanwhile = waited.load(Relaxed);
        assert!(!blocked.is_finished(), "the channel is still full");
        assert!(
            meanwhile >= 400_000,
            "counted while waiting: {meanwhile} µs"
        );

        assert!(rx.recv().await.is_some());
        assert!(blocked.await.expect("the sender"));
        let total = waited.load(Relaxed);
        assert!(total >= 650_000, "the whole wait: {total} µs");
        assert!(rx.recv().await.is_some(), "the waiting envelope arrived");

        drop(rx);
        assert!(!send_timed(&tx, idle(), &waited).await, "receiver gone");
    }
}
