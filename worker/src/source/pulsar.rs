//! A partition of a Pulsar topic as a source partition.
//!
//! Each partition has its own consumer on the job's durable subscription
//! (failover, so that a consumer of an earlier generation still closing does
//! not make the new one fail). A record's position is its message id with
//! its index in its batch. Weir keeps the position itself: a resumed reader
//! seeks the subscription to its recorded point and skips what it has
//! already handled, and it acknowledges the subscription cumulatively only
//! up to what the coordinator has recorded as durable.
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

pub struct PulsarReader {
    client: Pulsar<TokioExecutor>,
    partition: PulsarPartition,
    consumer: Option<Consumer<Vec<u8>, TokioExecutor>>,
    plan: DecodePlan,
    /// The last position handed on (or resumed after).
    last: Option<Position>,
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
    /// Subscribes; with `resume_after`, seeks the subscription there. With
    /// no `plan`, the writer schema comes from the topic's schema registry.
    pub async fn open(
        client: Pulsar<TokioExecutor>,
        partition: PulsarPartition,
        plan: Option<DecodePlan>,
        resume_after: Option<Position>,
    ) -> Result<Self, SourceError> {
        let topic_error = |message: String| SourceError::Topic {
            topic: partition.topic.clone(),
            message,
        };
        let mut consumer = subscribe(&client, &partition)
            .await
            .map_err(|e| topic_error(format!("cannot subscribe: {e}")))?;
        let plan = match plan {
            Some(p) => p,
            None => registry_plan(&mut consumer, &partition.topic)
                .await
                .map_err(topic_error)?,
        };
        if let Some(id) = resume_after.and_then(seek_id_for) {
            consumer
                .seek(None, Some(id), None, client.clone())
                .await
                .map_err(|e| {
                    topic_error(format!(
                        "cannot seek to the recorded position {}: {}",
                        resume_after.map_or_else(String::new, |p| p.to_string()),
                        error_chain(&e)
                    ))
                })?;
            tracing::info!(topic = %partition.topic, after = ?resume_after, "resuming after the recorded position");
        }
        Ok(PulsarReader {
            client,
            partition,
            consumer: Some(consumer),
            plan,
            last: resume_after,
            last_message: Instant::now(),
            retry_at: Instant::now(),
            retry_delay: RETRY_MIN,
            failures: 0,
            redelivered: 0,
            scratch: Reading::default(),
        })
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
        match subscribe(&self.client, &self.partition).await {
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
                out.consumed(position);
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

    fn acknowledges(&self) -> bool {
        true
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

async fn subscribe(
    client: &Pulsar<TokioExecutor>,
    p: &PulsarPartition,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, String> {
    client
        .consumer()
        .with_topic(p.topic.clone())
        .with_subscription(p.subscription.clone())
        .with_subscription_type(SubType::Failover)
        .with_consumer_name(p.consumer_name.clone())
        .with_batch_size(p.receiver_queue)
        .with_options(
            ConsumerOptions::default()
                .durable(true)
                .with_initial_position(InitialPosition::Earliest)
                .with_receiver_queue_size(p.receiver_queue),
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
