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
//! The reading consumer is Weir's own ([`weir_pulsar_wire::WireConsumer`]:
//! one connection per partition, entries handed out as views of the read
//! buffer, batches split without copying, a hardware CRC-32C); the
//! `pulsar` crate's client does the rest (lookups and redirects, moving the
//! subscription, the schema registry, the last message id). When the
//! connection drops the reader looks the partition up and subscribes again,
//! with backoff, for as long as it takes; the broker sends every
//! unacknowledged message again and the reader drops those it has already
//! handed on (positions only grow within a partition).

use std::time::Duration;

use futures::FutureExt;
use pulsar::consumer::InitialPosition;
use pulsar::proto::command_subscribe::SubType;
use pulsar::{Consumer, ConsumerOptions, Pulsar, TokioExecutor};
use tokio::time::Instant;
use weir_common::avro::DecodePlan;
use weir_common::error_chain::error_chain;
use weir_common::position::Position;
use weir_common::pulsar::WireSettings;
use weir_common::pulsar::{ack_id_for, seek_id_for};
use weir_common::reading::Reading;
use weir_common::spec::EventTimeFallback;
use weir_pulsar_wire::{
    messages, Decompressor, Delivery, Endpoint, Event, WireConsumer, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_UNCOMPRESSED_SIZE,
};

use super::{PartitionReader, Pulled, SourceError};
use crate::emitter::Emitter;
use pulsar::proto::MessageIdData;

/// How long one pull waits for a message before letting the source task
/// flush and check for idleness.
const POLL: Duration = Duration::from_millis(100);
/// Messages taken in one pull at most (beyond the first entry, only
/// entries that have already arrived). Small enough that the source's rate
/// limit, applied between pulls, stays fine-grained with entries of up to a
/// thousand messages; large enough that a pull's fixed cost (a timer) is
/// nothing per message.
const DRAIN: usize = 1024;
/// How long connecting, the handshake and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// Credentials and TLS for the reading consumer's connections.
    wire: WireSettings,
    partition: PulsarPartition,
    consumer: Option<WireConsumer>,
    /// Decompresses entries (one buffer, reused).
    decompressor: Decompressor,
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
        wire: WireSettings,
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
            wire,
            partition,
            consumer: None,
            decompressor: Decompressor::new(DEFAULT_MAX_UNCOMPRESSED_SIZE),
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
        let consumer = self
            .subscribe()
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

    /// Looks the partition up (following redirects) and subscribes on a
    /// connection of the reader's own.
    async fn subscribe(&self) -> Result<WireConsumer, String> {
        let broker = self
            .client
            .lookup_topic(self.partition.topic.clone())
            .await
            .map_err(|e| format!("lookup: {}", error_chain(&e)))?;
        let endpoint = Endpoint::from_url(
            broker.url.as_str(),
            broker.proxy.then(|| broker.broker_url.clone()),
        )
        .map_err(|e| e.to_string())?;
        let options = weir_pulsar_wire::ConsumerOptions {
            topic: self.partition.topic.clone(),
            subscription: self.partition.subscription.clone(),
            consumer_name: self.partition.consumer_name.clone(),
            sub_type: SubType::Failover,
            receiver_queue: self.partition.receiver_queue.max(1),
            auth: self.wire.auth.clone(),
            tls: Some(self.wire.tls.clone()),
            timeout: CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        };
        WireConsumer::subscribe(&endpoint, &options)
            .await
            .map_err(|e| error_chain(&e))
    }

    async fn reconnect(&mut self) {
        match self.subscribe().await {
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

    /// Handles what the consumer gave: the messages handed on, or `None`
    /// if the consumer is gone.
    fn take(
        &mut self,
        item: Result<Event, weir_pulsar_wire::ConsumerError>,
        out: &mut Emitter,
    ) -> Option<usize> {
        match item {
            Ok(Event::Message(delivery)) => Some(self.handle(&delivery, out)),
            Ok(Event::Corrupt { message, error }) => {
                // The frame's bytes are gone: what can be said of it is kept.
                let position = Position::Pulsar {
                    ledger: message.ledger_id,
                    entry: message.entry_id,
                    batch: -1,
                };
                if self.last.is_some_and(|last| position <= last) {
                    return Some(0);
                }
                self.last = Some(position);
                self.last_complete = true;
                if out.consumed(position) {
                    out.dead_letter(
                        position.to_string(),
                        0,
                        "corrupt-frame",
                        format!("entry {position} arrived damaged: {error}"),
                        &[],
                    );
                }
                Some(0)
            }
            Err(e) => {
                self.lost(&error_chain(&e));
                None
            }
        }
    }

    /// Hands on the messages of one entry (skipping those handed on
    /// before); returns how many it held.
    fn handle(&mut self, delivery: &Delivery, out: &mut Emitter) -> usize {
        let PulsarReader {
            decompressor,
            plan,
            scratch,
            last,
            last_complete,
            redelivered,
            partition,
            ..
        } = self;
        let id = &delivery.message_id;
        let (ledger, entry) = (id.ledger_id, id.entry_id);
        let meta = &delivery.payload.metadata;
        let count = meta.num_messages_in_batch;
        let whole = Position::Pulsar {
            ledger,
            entry,
            batch: -1,
        };
        // The whole entry is lost to a dead letter: its bytes (compressed,
        // or the batch as it came) are what can be kept.
        let mut entry_letter = |kind: &str, error: String, out: &mut Emitter| {
            if last.is_some_and(|l| whole <= l) {
                return;
            }
            *last = Some(whole);
            *last_complete = true;
            if out.consumed(whole) {
                let records = count.and_then(|n| u64::try_from(n).ok()).unwrap_or(1);
                out.dead_letter(
                    whole.to_string(),
                    records,
                    kind,
                    error,
                    &delivery.payload.data,
                );
            }
        };
        let data = match decompressor.decompress(meta, &delivery.payload.data) {
            Ok(data) => data,
            Err(e) => {
                entry_letter(
                    "bad-compression",
                    format!("entry {whole} cannot be decompressed: {e}"),
                    out,
                );
                return count.and_then(|n| usize::try_from(n).ok()).unwrap_or(1);
            }
        };
        let entries = match messages(meta, data) {
            Ok(entries) => entries,
            Err(e) => {
                entry_letter(
                    "corrupt-batch",
                    format!("entry {whole} is not a batch: {e}"),
                    out,
                );
                return 0;
            }
        };
        let mut handed = 0;
        for item in entries {
            let (index, fields, bytes) = match item {
                Ok(m) => m,
                Err(e) => {
                    // The rest of the batch cannot be found.
                    let from = e.index().unwrap_or(0);
                    let position = Position::Pulsar {
                        ledger,
                        entry,
                        batch: from,
                    };
                    if last.is_some_and(|l| position <= l) {
                        break;
                    }
                    *last = Some(position);
                    *last_complete = true;
                    if out.consumed(position) {
                        let rest = count.map_or(1, |n| n.saturating_sub(from).max(1));
                        out.dead_letter(
                            position.to_string(),
                            u64::try_from(rest).unwrap_or(1),
                            "corrupt-batch",
                            format!("entry {whole}: message {from} and those after it cannot be read: {e}"),
                            &[],
                        );
                    }
                    break;
                }
            };
            handed += 1;
            let position = Position::Pulsar {
                ledger,
                entry,
                batch: index.unwrap_or(-1),
            };
            if last.is_some_and(|l| position <= l) {
                *redelivered += 1;
                continue;
            }
            *last = Some(position);
            *last_complete = match (index, count) {
                (Some(i), Some(n)) => i.saturating_add(1) >= n,
                _ => true,
            };
            if fields.compacted_out {
                continue;
            }
            match plan.decode(bytes, scratch) {
                Ok(()) => {
                    if scratch.timestamp_ms <= 0 {
                        let fallback = match partition.fallback {
                            EventTimeFallback::None => None,
                            EventTimeFallback::MessageEventTime => {
                                fields.event_time.or(meta.event_time.filter(|&t| t > 0))
                            }
                            EventTimeFallback::PublishTime => Some(meta.publish_time),
                        };
                        if let Some(t) = fallback {
                            scratch.timestamp_ms = i64::try_from(t).unwrap_or(i64::MAX);
                        }
                    }
                    out.reading(scratch, position);
                }
                Err(e) => {
                    if !out.consumed(position) {
                        continue; // its dead letter was written before the checkpoint
                    }
                    out.dead_letter(
                        position.to_string(),
                        1,
                        e.kind_name(),
                        format!("message {position} is not a datum of the writer schema: {e}"),
                        bytes,
                    );
                }
            }
        }
        handed
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
        let Some(mut taken) = self.take(first, out) else {
            return Ok(Pulled::WaitUntil(self.retry_at));
        };
        while taken < DRAIN {
            let Some(consumer) = self.consumer.as_mut() else {
                break;
            };
            match consumer.next().now_or_never() {
                Some(item) => match self.take(item, out) {
                    Some(n) => taken += n.max(1),
                    None => break,
                },
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
        if let Err(e) = consumer.ack_cumulative(id).await {
            tracing::debug!(topic = %self.partition.topic, error = %error_chain(&e), "acknowledgment not sent");
            self.lost(&error_chain(&e));
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
