//! Source tasks: one per partition, reading, decoding, and sending on.
//!
//! A [`PartitionReader`] knows one kind of input (a file, the generator, a
//! Pulsar partition) and hands decoded readings to an [`Emitter`]; the
//! [`SourceTask`] around it is the same for every kind. It delivers the
//! emitter's envelopes in order (waiting on full channels, which is how a
//! slow sink slows the sources down), flushes before it waits for input,
//! enforces the rate limit, reports idleness, emits checkpoint barriers
//! when triggered ([`SourceCommand`]), and stops when told to. It
//! also finds the partition's durable point when the coordinator reports
//! what is written, and lets the reader acknowledge what the coordinator has
//! recorded (see [`crate::resume`]).

pub mod file;
pub mod generator;
pub mod pulsar;

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::dead_letter::DeadLetter;
use weir_common::position::Position;

use crate::emitter::{Emitter, Route};
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
        "partition {partition}: the restored checkpoint resumes after position {position}, but the \
         input ends before it: it is not the input the checkpoint was taken of (point \
         --checkpoint-store elsewhere, or delete the job's checkpoints, to start from the beginning)"
    )]
    PastTheEnd {
        partition: String,
        position: Position,
    },
}

/// What the coordinator knows about durability, for the sources, by input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceProgress {
    /// Every window task has processed the input through this position and
    /// written every window ending at or before this watermark.
    pub bounds: Vec<Option<(Position, i64)>>,
    /// The durable point the coordinator has recorded.
    pub recorded: Vec<Option<Position>>,
}

/// What a source task is told by its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCommand {
    /// Emit checkpoint `checkpoint`'s barrier after what was read so far;
    /// with `then_halt`, read nothing more (the job stops after it).
    Trigger { checkpoint: u64, then_halt: bool },
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

    /// Whether the input system keeps a position of its own that should
    /// follow what Weir has made durable (a Pulsar subscription). The source
    /// task then waits at the end of the input until its last position is
    /// recorded, and acknowledges it.
    fn acknowledges(&self) -> bool {
        false
    }

    /// Tells the input system that everything up to `position` is durable.
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
    pub dead_letters: mpsc::Sender<DeadLetter>,
    pub metrics: Arc<JobMetrics>,
    pub limits: SourceLimits,
    pub stop: CancellationToken,
    pub progress: watch::Receiver<Arc<SourceProgress>>,
    pub commands: mpsc::Receiver<SourceCommand>,
}

impl SourceWiring {
    pub fn with_reader<R: PartitionReader>(self, reader: R) -> SourceTask<R> {
        SourceTask {
            input: self.input,
            reader,
            emitter: self.emitter,
            destinations: self.destinations,
            dead_letters: self.dead_letters,
            metrics: self.metrics,
            limits: self.limits,
            stop: self.stop,
            progress: self.progress,
            commands: self.commands,
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
    pub dead_letters: mpsc::Sender<DeadLetter>,
    pub metrics: Arc<JobMetrics>,
    pub limits: SourceLimits,
    /// Cancelled to stop reading (the rest of the job drains normally).
    pub stop: CancellationToken,
    pub progress: watch::Receiver<Arc<SourceProgress>>,
    pub commands: mpsc::Receiver<SourceCommand>,
    /// The last position acknowledged to the input system.
    pub acknowledged: Option<Position>,
}

impl<R: PartitionReader> SourceTask<R> {
    pub async fn run(mut self) -> Result<SourceOutcome, SourceError> {
        // On a stop request, readings not yet delivered are dropped with the
        // rest of the unread input: nothing acknowledged them, so a restart
        // from the last durable position reads them again.
        let stop = self.stop.clone();
        let started = Instant::now();
        let mut last_data = started;
        let mut idle = false;
        let mut counted = (0u64, 0u64, 0u64);
        loop {
            if self.progress.has_changed().unwrap_or(false) {
                self.on_progress().await;
            }
            while let Ok(command) = self.commands.try_recv() {
                if self.on_command(command) {
                    return Ok(self.halt(&stop, &mut counted).await);
                }
            }
            let before = self.emitter.emitted();
            let pulled = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(SourceOutcome::Stopped),
                pulled = self.reader.pull(&mut self.emitter) => pulled?,
            };
            let now = Instant::now();
            if self.emitter.emitted() > before {
                last_data = now;
                idle = false;
            }
            let mut wait_until = match pulled {
                Pulled::Progress => None,
                Pulled::WaitUntil(t) => Some(t),
                Pulled::End => {
                    if let Some(position) = self.emitter.restore_point_missed() {
                        return Err(SourceError::PastTheEnd {
                            partition: self.emitter.source_name().to_owned(),
                            position,
                        });
                    }
                    self.emitter.end();
                    return Ok(match self.deliver_or_stop(&stop, &mut counted).await {
                        Some(true) => {
                            if let Some(p) = self.metrics.partitions.get(self.input as usize) {
                                p.finished.store(true, Relaxed);
                            }
                            if self.reader.acknowledges() && !self.until_acknowledged(&stop).await {
                                return Ok(SourceOutcome::Stopped);
                            }
                            SourceOutcome::Finished
                        }
                        Some(false) => SourceOutcome::Disconnected,
                        None => SourceOutcome::Stopped,
                    });
                }
            };
            if let Some(rate) = self.limits.rate_limit {
                let due = started + Duration::from_secs_f64(self.emitter.emitted() as f64 / rate);
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
                    // A trigger does not wait for input: the loop takes it.
                    Some(command) = self.commands.recv() => {
                        if self.on_command(command) {
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

    /// Takes a command; `true` when the source must read no more.
    fn on_command(&mut self, command: SourceCommand) -> bool {
        match command {
            SourceCommand::Trigger {
                checkpoint,
                then_halt,
            } => {
                self.emitter.barrier(checkpoint);
                then_halt
            }
        }
    }

    /// After a final checkpoint's barrier: delivers what is queued (the
    /// barrier last) and waits, reading nothing, until the job stops.
    async fn halt(
        &mut self,
        stop: &CancellationToken,
        counted: &mut (u64, u64, u64),
    ) -> SourceOutcome {
        match self.deliver_or_stop(stop, counted).await {
            Some(true) => {
                stop.cancelled().await;
                SourceOutcome::Stopped
            }
            Some(false) => SourceOutcome::Disconnected,
            None => SourceOutcome::Stopped,
        }
    }

    /// Finds the durable point within the coordinator's bounds, and
    /// acknowledges what it recorded.
    async fn on_progress(&mut self) {
        let update = self.progress.borrow_and_update().clone();
        let input = self.input as usize;
        if let Some(&Some((processed, watermark))) = update.bounds.get(input) {
            if let Some(mark) = self.emitter.durable_within(processed, watermark) {
                if let Some(p) = self.metrics.partitions.get(input) {
                    p.set_durable(mark);
                }
            }
        }
        if let Some(&Some(recorded)) = update.recorded.get(input) {
            if self.acknowledged < Some(recorded) {
                self.reader.acknowledge(recorded).await;
                self.acknowledged = Some(recorded);
            }
        }
    }

    /// After the end of the input: waits until the last position read is
    /// recorded as durable and acknowledged; `false` if stopped first.
    async fn until_acknowledged(&mut self, stop: &CancellationToken) -> bool {
        let Some(last) = self.emitter.last_position() else {
            return true;
        };
        while self.acknowledged < Some(last) {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        return true; // the deployment is going away
                    }
                    self.on_progress().await;
                }
            }
        }
        true
    }

    /// [`deliver`](Self::deliver), unless a stop request comes first (`None`).
    async fn deliver_or_stop(
        &mut self,
        stop: &CancellationToken,
        counted: &mut (u64, u64, u64),
    ) -> Option<bool> {
        tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            ok = self.deliver(counted) => Some(ok),
        }
    }

    /// Sends queued envelopes and dead letters; `false` if a receiver is gone.
    async fn deliver(&mut self, counted: &mut (u64, u64, u64)) -> bool {
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
        JobMetrics::add(&m.already_written, self.emitter.skipped() - counted.2);
        counted.2 = self.emitter.skipped();
        for letter in self.emitter.take_dead_letters().collect::<Vec<_>>() {
            if self.dead_letters.send(letter).await.is_err() {
                return false;
            }
        }
        let outbox: Vec<(Route, Envelope)> = self.emitter.take_outbox().collect();
        for (route, envelope) in outbox {
            let sent = match route {
                Route::To(d) => match self.destinations.get(d) {
                    Some(tx) => tx.send(envelope).await.is_ok(),
                    None => false,
                },
                Route::All => {
                    let mut ok = true;
                    for tx in &self.destinations {
                        ok &= tx.send(envelope.clone()).await.is_ok();
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
