//! A partition of a Pulsar topic as a source partition.
//!
//! Each partition has its own consumer on the job's durable subscription
//! (failover, so that a consumer of an earlier generation still closing does
//! not make the new one fail). A record's position is its message id with
//! its index in its batch. Weir keeps the position itself, in checkpoints: a
//! restored reader first checks that the checkpointed message can be in the
//! partition (a topic deleted and created again, or another cluster, has
//! other message ids), then seeks the subscription to it; the emitter drops
//! what the checkpoint holds and stops the job if the checkpointed message
//! itself does not come. The subscription is acknowledged cumulatively only
//! up to the positions of completed checkpoints, so it is where a job
//! without a checkpoint starts.
//!
//! Broker connections are the client's to keep: when one drops, the
//! consumer reconnects and the broker sends every unacknowledged message
//! again; the reader drops those it has already handed on (positions only
//! grow within a partition). If the consumer itself gives up, the reader
//! makes a new one, with backoff, for as long as it takes.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use pulsar::consumer::InitialPosition;
use pulsar::proto::command_subscribe::SubType;
use pulsar::{Consumer, ConsumerOptions, Pulsar, TokioExecutor};
use tokio::time::Instant;
use weir_common::avro::DecodePlan;
use weir_common::error_chain::error_chain;
use weir_common::position::Position;
use weir_common::pulsar::{ack_id_for, position_of, seek_id_for};
use weir_common::reading::Reading;
use weir_common::spec::EventTimeFallback;

use super::{PartitionReader, Pulled, SourceError};
use crate::emitter::Emitter;
use pulsar::proto::MessageIdData;

/// How long one pull waits for a message before letting the source task
/// flush and check for idleness.
const POLL: Duration = Duration::from_millis(100);
/// Messages taken in one pull at most (beyond the first, only those that
/// have already arrived).
const DRAIN: usize = 4096;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where and how a partition is read.
#[derive(Clone, Debug)]
pub struct PulsarPartition {
    /// The partition's topic name (`...-partition-<n>`, or the topic).
    pub topic: String,
    pub subscription: String,
    pub consumer_name: String,
    pub receiver_queue: u32,
    pub fallback: EventTimeFallback,
    /// End of input after no message arrived for this long.
    pub until_idle: Option<Duration>,
}

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PulsarStart {
    /// Where the subscription is (its earliest message when it is new).
    Subscription,
    /// The partition's first message (the subscription is reset to it).
    Earliest,
    /// The next message published (the subscription is reset to the end).
    Latest,
    /// From a checkpoint's position: the subscription is reset to its
    /// entry, which comes again.
    Checkpoint(Position),
}

pub struct PulsarReader {
    client: Pulsar<TokioExecutor>,
    partition: PulsarPartition,
    consumer: Option<Consumer<Vec<u8>, TokioExecutor>>,
    plan: DecodePlan,
    start: PulsarStart,
    /// The last position handed on.
    last: Option<Position>,
    /// Whether `last` is the last message of its entry (its batch).
    last_complete: bool,
    /// When a message last arrived (or the reader last connected).
    last_message: Instant,
    /// No consumer: when to try again, and how long to wait after that.
    retry_at: Instant,
    retry_delay: Duration,
    failures: u32,
    /// Messages the broker sent again (after a reconnect) and were dropped.
    redelivered: u64,
    scratch: Reading,
}

impl PulsarReader {
    /// Checks that `start` can be in the partition and reads the writer
    /// schema from the registry when there is no `plan`; then
    /// [`start`](Self::start) moves the subscription and subscribes. Both
    /// questions go through a consumer that never receives a message: the
    /// client's consumer task stops answering requests while its queue of
    /// received messages is full.
    pub async fn open(
        client: Pulsar<TokioExecutor>,
        partition: PulsarPartition,
        plan: Option<DecodePlan>,
        start: PulsarStart,
    ) -> Result<Self, SourceError> {
        let topic_error = |message: String| SourceError::Topic {
            topic: partition.topic.clone(),
            message,
        };
        let plan = match (plan, start) {
            (
                Some(plan),
                PulsarStart::Subscription | PulsarStart::Earliest | PulsarStart::Latest,
            ) => plan,
            (plan, start) => {
                let mut control = control_consumer(&client, &partition).await?;
                let answer = async {
                    if let PulsarStart::Checkpoint(position) = start {
                        last_message_fits(&mut control, &partition.topic, position).await?;
                    }
                    match plan {
                        Some(p) => Ok(p),
                        None => registry_plan(&mut control, &partition.topic)
                            .await
                            .map_err(topic_error),
                    }
                }
                .await;
                if let Err(e) = control.close().await {
                    tracing::debug!(topic = %partition.topic, error = %error_chain(&e), "cannot close the control consumer");
                }
                answer?
            }
        };
        Ok(PulsarReader {
            client,
            partition,
            consumer: None,
            plan,
            start,
            last: None,
            last_complete: false,
            last_message: Instant::now(),
            retry_at: Instant::now(),
            retry_delay: RETRY_MIN,
            failures: 0,
            redelivered: 0,
            scratch: Reading::default(),
        })
    }

    /// Moves the subscription to where the reader starts (after every
    /// partition of the worker is [`open`](Self::open)ed and checked) and
    /// subscribes. The move goes through a consumer that receives nothing
    /// (see [`open`](Self::open)), closed before the reading one subscribes.
    pub async fn start(&mut self) -> Result<(), SourceError> {
        let start = self.start;
        let seek_to = match start {
            PulsarStart::Subscription => None,
            // Pulsar's MessageId.earliest and .latest.
            PulsarStart::Earliest => Some(MessageIdData {
                ledger_id: u64::MAX,
                entry_id: u64::MAX,
                ..Default::default()
            }),
            PulsarStart::Latest => Some(MessageIdData {
                ledger_id: i64::MAX as u64,
                entry_id: i64::MAX as u64,
                ..Default::default()
            }),
            PulsarStart::Checkpoint(position) => seek_id_for(position),
        };
        let topic_error = |message: String| SourceError::Topic {
            topic: self.partition.topic.clone(),
            message,
        };
        if let Some(id) = seek_to {
            let mut mover = subscribe(&self.client, &self.partition, 0)
                .await
                .map_err(|e| topic_error(format!("cannot subscribe: {e}")))?;
            let moved = mover.seek(None, Some(id), None, self.client.clone()).await;
            if let Err(e) = mover.close().await {
                tracing::debug!(topic = %self.partition.topic, error = %error_chain(&e), "cannot close the consumer that moved the subscription");
            }
            moved.map_err(|e| {
                topic_error(format!(
                    "cannot move the subscription to {start:?}: {}",
                    error_chain(&e)
                ))
            })?;
            tracing::info!(topic = %self.partition.topic, ?start, "subscription moved");
        }
        let consumer = subscribe(&self.client, &self.partition, self.partition.receiver_queue)
            .await
            .map_err(|e| topic_error(format!("cannot subscribe: {e}")))?;
        self.consumer = Some(consumer);
        self.last_message = Instant::now();
        Ok(())
    }

    /// The consumer failed: drop it and make a new one later.
    fn lost(&mut self, why: &str) {
        self.consumer = None;
        self.failures += 1;
        if self.failures == 1 || self.failures.is_multiple_of(10) {
            tracing::warn!(topic = %self.partition.topic, error = why, failures = self.failures, retry_in = ?self.retry_delay, "Pulsar consumer lost; reconnecting");
        }
        self.retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
    }

    async fn reconnect(&mut self) {
        match subscribe(&self.client, &self.partition, self.partition.receiver_queue).await {
            Ok(c) => {
                if self.failures > 0 {
                    tracing::info!(topic = %self.partition.topic, after_failures = self.failures, "Pulsar consumer reconnected");
                }
                self.consumer = Some(c);
                self.failures = 0;
                self.retry_delay = RETRY_MIN;
                // Time without a connection is not time without messages.
                self.last_message = Instant::now();
            }
            Err(e) => self.lost(&e),
        }
    }

    /// Handles what the consumer stream gave; `false` if the consumer is gone.
    fn take(
        &mut self,
        item: Option<Result<pulsar::consumer::Message<Vec<u8>>, pulsar::Error>>,
        out: &mut Emitter,
    ) -> bool {
        match item {
            Some(Ok(message)) => {
                self.handle(&message, out);
                true
            }
            Some(Err(e)) => {
                self.lost(&error_chain(&e));
                false
            }
            None => {
                self.lost("the consumer stream ended");
                false
            }
        }
    }

    fn handle(&mut self, message: &pulsar::consumer::Message<Vec<u8>>, out: &mut Emitter) {
        let position = position_of(message.message_id());
        if self.last.is_some_and(|last| position <= last) {
            self.redelivered += 1;
            return;
        }
        self.last = Some(position);
        self.last_complete = match (
            message.message_id().batch_index,
            message.metadata().num_messages_in_batch,
        ) {
            (Some(index), Some(n)) if index >= 0 => index.saturating_add(1) >= n,
            _ => true,
        };
        let data = &message.payload.data;
        match self.plan.decode(data, &mut self.scratch) {
            Ok(()) => {
                if self.scratch.timestamp_ms <= 0 {
                    let meta = message.metadata();
                    let fallback = match self.partition.fallback {
                        EventTimeFallback::None => None,
                        EventTimeFallback::MessageEventTime => meta.event_time.filter(|&t| t > 0),
                        EventTimeFallback::PublishTime => Some(meta.publish_time),
                    };
                    if let Some(t) = fallback {
                        self.scratch.timestamp_ms = i64::try_from(t).unwrap_or(i64::MAX);
                    }
                }
                out.reading(&self.scratch, position);
            }
            Err(e) => {
                if !out.consumed(position) {
                    return; // its dead letter was written before the checkpoint
                }
                out.dead_letter(
                    position.to_string(),
                    1,
                    e.kind_name(),
                    format!("message {position} is not a datum of the writer schema: {e}"),
                    data,
                );
            }
        }
    }

    fn nothing_arrived(&self) -> Pulled {
        match self.partition.until_idle {
            Some(idle) if self.last_message.elapsed() >= idle => {
                tracing::info!(topic = %self.partition.topic, ?idle, redelivered_and_dropped = self.redelivered, "no message for the idle limit: end of this partition");
                Pulled::End
            }
            _ => Pulled::WaitUntil(Instant::now()),
        }
    }
}

impl PartitionReader for PulsarReader {
    async fn pull(&mut self, out: &mut Emitter) -> Result<Pulled, SourceError> {
        if self.consumer.is_none() {
            if Instant::now() < self.retry_at {
                return Ok(Pulled::WaitUntil(self.retry_at));
            }
            self.reconnect().await;
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(Pulled::WaitUntil(self.retry_at));
        };
        let first = match tokio::time::timeout(POLL, consumer.next()).await {
            Ok(item) => item,
            Err(_) => return Ok(self.nothing_arrived()),
        };
        // One clock read per pull, not per message.
        self.last_message = Instant::now();
        if !self.take(first, out) {
            return Ok(Pulled::WaitUntil(self.retry_at));
        }
        for _ in 0..DRAIN {
            let Some(consumer) = self.consumer.as_mut() else {
                break;
            };
            match consumer.next().now_or_never() {
                Some(item) => {
                    if !self.take(item, out) {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(Pulled::Progress)
    }

    fn ack_point(&self, position: Position) -> Position {
        match position {
            // The whole entry was read: acknowledge the entry itself.
            Position::Pulsar { ledger, entry, .. }
                if self.last_complete && self.last == Some(position) =>
            {
                Position::Pulsar {
                    ledger,
                    entry,
                    batch: -1,
                }
            }
            p => p,
        }
    }

    async fn acknowledge(&mut self, position: Position) {
        let (Some(consumer), Some(id)) = (self.consumer.as_mut(), ack_id_for(position)) else {
            return;
        };
        // An acknowledgment that does not arrive is made good by a later
        // one (they are cumulative) or, at worst, by skipping what the
        // broker sends again.
        if let Err(e) = consumer
            .cumulative_ack_with_id(&self.partition.topic, id)
            .await
        {
            tracing::debug!(topic = %self.partition.topic, error = %error_chain(&e), "acknowledgment not sent");
        }
    }
}

/// A consumer on a subscription of its own that is never given flow
/// permits, so it never receives a message and its requests (last message
/// id, schema) are always answered.
async fn control_consumer(
    client: &Pulsar<TokioExecutor>,
    partition: &PulsarPartition,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, SourceError> {
    client
        .consumer()
        .with_topic(partition.topic.as_str())
        .with_subscription(format!(
            "{}-control-{:08x}",
            partition.subscription,
            rand_u32()
        ))
        .with_subscription_type(SubType::Exclusive)
        .with_batch_size(0)
        .with_options(
            ConsumerOptions::default()
                .durable(false)
                .with_initial_position(InitialPosition::Latest)
                .with_receiver_queue_size(1),
        )
        .build()
        .await
        .map_err(|e| SourceError::Topic {
            topic: partition.topic.clone(),
            message: format!("cannot subscribe: {}", error_chain(&e)),
        })
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id()
}

/// Whether a checkpointed position can be in the partition: its message
/// is not past the partition's last one. (A position in a ledger the
/// partition no longer has is found out when reading: the message does not
/// come again.)
async fn last_message_fits(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    topic: &str,
    position: Position,
) -> Result<(), SourceError> {
    let mismatch = |problem: String| SourceError::NotTheCheckpointedInput {
        partition: topic.to_owned(),
        position,
        problem,
    };
    let Position::Pulsar { ledger, entry, .. } = position else {
        return Err(mismatch("it is not a Pulsar message id".into()));
    };
    let last = consumer
        .get_last_message_id()
        .await
        .map_err(|e| SourceError::Topic {
            topic: topic.to_owned(),
            message: format!("cannot read its last message id: {}", error_chain(&e)),
        })?;
    match last.first() {
        // A negative entry id: no message.
        Some(id) if i64::try_from(id.entry_id).is_err() => {
            Err(mismatch("the partition holds no message".into()))
        }
        Some(id) if (id.ledger_id, id.entry_id) < (ledger, entry) => Err(mismatch(format!(
            "the partition's last message is {}:{}",
            id.ledger_id, id.entry_id
        ))),
        _ => Ok(()),
    }
}

/// A consumer on the job's subscription that asks for `permits` messages
/// (none: it only moves the subscription).
async fn subscribe(
    client: &Pulsar<TokioExecutor>,
    p: &PulsarPartition,
    permits: u32,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, String> {
    client
        .consumer()
        .with_topic(p.topic.clone())
        .with_subscription(p.subscription.clone())
        .with_subscription_type(SubType::Failover)
        .with_consumer_name(p.consumer_name.clone())
        .with_batch_size(permits)
        .with_options(
            ConsumerOptions::default()
                .durable(true)
                .with_initial_position(InitialPosition::Earliest)
                .with_receiver_queue_size(p.receiver_queue.max(1)),
        )
        .build()
        .await
        .map_err(|e| error_chain(&e))
}

/// The decode plan for the topic's Avro schema in the schema registry.
async fn registry_plan(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    topic: &str,
) -> Result<DecodePlan, String> {
    let schema = consumer
        .get_schema(topic, None)
        .await
        .map_err(|e| {
            format!(
                "cannot read its schema from the registry: {}",
                error_chain(&e)
            )
        })?
        .ok_or_else(|| {
            "has no schema in the registry (source.pulsar.schema_from_registry is set)".to_owned()
        })?;
    if schema.r#type != pulsar::proto::schema::Type::Avro as i32 {
        return Err(format!(
            "its registry schema is of type {}, not Avro",
            pulsar::proto::schema::Type::try_from(schema.r#type).map_or_else(
                |_| schema.r#type.to_string(),
                |t| t.as_str_name().to_owned()
            )
        ));
    }
    let json = String::from_utf8(schema.schema_data)
        .map_err(|_| "its registry schema is not UTF-8 JSON".to_owned())?;
    DecodePlan::from_json(&json).map_err(|e| format!("its registry schema cannot be read: {e}"))
}
