//! The broker's state and the protocol commands that change it.
//!
//! Synchronous and free of I/O: [`Broker::handle`] takes one command from
//! one connection and returns the frames to send, to that connection and to
//! others (a `SEND` may dispatch messages to consumers anywhere). The server
//! module owns the sockets.
//!
//! What is kept, per partition, is an append-only log of entries (a
//! message, or a batch of messages exactly as the producer sent it), each
//! with a ledger/entry id. A subscription is a cursor over that log with a
//! mark-delete position (everything up to it is acknowledged), the entries
//! acknowledged individually beyond it, and its consumers; exclusive and
//! failover subscriptions dispatch to one active consumer, within its flow
//! permits. When a consumer goes away, what it had not acknowledged is
//! dispatched again.

use std::collections::{BTreeSet, HashMap};

use pulsar::message::proto::{self, base_command::Type, BaseCommand, MessageIdData};
use pulsar::message::Message;
use pulsar::Payload;

pub type ConnId = u64;

/// An entry of a partition's log.
#[derive(Clone, Debug)]
pub struct Entry {
    pub metadata: proto::MessageMetadata,
    pub data: Vec<u8>,
    /// Messages in the entry (1, or the batch size).
    pub messages: u32,
}

#[derive(Debug, Default)]
pub struct Log {
    pub ledger_id: u64,
    pub entries: Vec<Entry>,
}

/// A topic as the clients see it: partitioned or not, with a schema or not.
#[derive(Clone, Debug, Default)]
pub struct Topic {
    pub partitions: u32,
    pub schema: Option<proto::Schema>,
}

#[derive(Debug)]
struct Subscription {
    /// Every entry before this index is acknowledged.
    mark_delete: u64,
    /// Entries acknowledged beyond `mark_delete`.
    acked: BTreeSet<u64>,
    /// For batched entries: batch indexes acknowledged so far.
    acked_in_batch: HashMap<u64, BTreeSet<i32>>,
    /// Next entry to dispatch.
    cursor: u64,
    consumers: Vec<(ConnId, u64)>,
    durable: bool,
}

#[derive(Debug)]
struct Consumer {
    topic: String,
    subscription: String,
    permits: i64,
}

/// The whole broker.
#[derive(Debug, Default)]
pub struct Broker {
    /// Topics by full name (`persistent://tenant/ns/name`).
    pub topics: HashMap<String, Topic>,
    /// Logs by partition name (or the topic name when not partitioned).
    pub logs: HashMap<String, Log>,
    subscriptions: HashMap<(String, String), Subscription>,
    consumers: HashMap<(ConnId, u64), Consumer>,
    producers: HashMap<(ConnId, u64), String>,
    /// Partitions given to topics created on first use.
    pub default_partitions: u32,
    /// Token a client must present, if any.
    pub token: Option<String>,
    /// URL clients are sent to by lookups: `pulsar+ssl://` for a broker
    /// serving TLS, which has no plain port.
    pub service_url: String,
    next_ledger: u64,
    next_producer_name: u64,
}

/// Frames to send: (connection, frame). Close requests are separate.
#[derive(Debug, Default)]
pub struct Output {
    pub frames: Vec<(ConnId, Message)>,
    /// Connections to close after sending their frames.
    pub close: Vec<ConnId>,
}

impl Output {
    fn to(&mut self, conn: ConnId, command: BaseCommand) {
        self.frames.push((
            conn,
            Message {
                command,
                payload: None,
            },
        ));
    }
}

/// Full topic name: `persistent://public/default/name` for a short name.
pub fn full_name(topic: &str) -> String {
    if topic.contains("://") {
        topic.to_owned()
    } else if topic.matches('/').count() == 2 {
        format!("persistent://{topic}")
    } else {
        format!("persistent://public/default/{topic}")
    }
}

/// The base topic and partition index of a partition name.
fn split_partition(name: &str) -> (String, Option<u32>) {
    if let Some(i) = name.rfind("-partition-") {
        if let Ok(p) = name[i + 11..].parse() {
            return (name[..i].to_owned(), Some(p));
        }
    }
    (name.to_owned(), None)
}

fn command(t: Type) -> BaseCommand {
    BaseCommand {
        r#type: t as i32,
        ..Default::default()
    }
}

fn success(request_id: u64) -> BaseCommand {
    BaseCommand {
        success: Some(proto::CommandSuccess {
            request_id,
            schema: None,
        }),
        ..command(Type::Success)
    }
}

fn error(request_id: u64, error: proto::ServerError, message: &str) -> BaseCommand {
    BaseCommand {
        error: Some(proto::CommandError {
            request_id,
            error: error as i32,
            message: message.to_owned(),
        }),
        ..command(Type::Error)
    }
}

impl Broker {
    pub fn new(service_url: String, default_partitions: u32, token: Option<String>) -> Self {
        Broker {
            default_partitions,
            token,
            service_url,
            next_ledger: 100,
            ..Default::default()
        }
    }

    /// Creates a topic (idempotent for the same partition count).
    pub fn create_topic(&mut self, topic: &str, partitions: u32) {
        let name = full_name(topic);
        self.topics.entry(name.clone()).or_insert(Topic {
            partitions,
            schema: None,
        });
        if partitions == 0 {
            self.log(&name);
        } else {
            for p in 0..partitions {
                self.log(&format!("{name}-partition-{p}"));
            }
        }
    }

    /// Deletes a topic, its partitions, their messages and subscriptions
    /// (`pulsar-admin topics delete-partitioned-topic --force`). A topic
    /// created again with the name gets new ledgers.
    pub fn delete_topic(&mut self, topic: &str) {
        let name = full_name(topic);
        self.topics.remove(&name);
        let prefix = format!("{name}-partition-");
        let gone = |t: &str| t == name || t.starts_with(&prefix);
        self.logs.retain(|t, _| !gone(t));
        self.subscriptions.retain(|(t, _), _| !gone(t));
    }

    /// Grows a partitioned topic (Pulsar only allows growing).
    pub fn add_partitions(&mut self, topic: &str, partitions: u32) {
        let name = full_name(topic);
        let old = self.topics.get(&name).map_or(0, |t| t.partitions);
        self.topics.entry(name.clone()).or_default().partitions = partitions.max(old);
        for p in old..partitions {
            self.log(&format!("{name}-partition-{p}"));
        }
    }

    fn log(&mut self, partition: &str) -> &mut Log {
        if !self.logs.contains_key(partition) {
            self.next_ledger += 1;
            let ledger_id = self.next_ledger;
            self.logs.insert(
                partition.to_owned(),
                Log {
                    ledger_id,
                    entries: Vec::new(),
                },
            );
        }
        self.logs.get_mut(partition).expect("inserted above")
    }

    /// A topic is created on first use, partitioned by default.
    fn ensure_topic(&mut self, name: &str) {
        let (base, partition) = split_partition(name);
        if partition.is_some() {
            if !self.topics.contains_key(&base) {
                self.create_topic(&base, self.default_partitions.max(1));
            }
            self.log(name);
        } else if !self.topics.contains_key(name) {
            self.create_topic(name, self.default_partitions);
        }
    }

    /// Handles one command from `conn`. `payload` is the message payload of
    /// a `SEND`.
    pub fn handle(&mut self, conn: ConnId, msg: Message, authenticated: &mut bool) -> Output {
        let mut out = Output::default();
        let cmd = msg.command;
        let t = Type::try_from(cmd.r#type).unwrap_or(Type::Ping);
        if !*authenticated && t != Type::Connect {
            out.to(
                conn,
                error(0, proto::ServerError::AuthenticationError, "connect first"),
            );
            out.close.push(conn);
            return out;
        }
        match t {
            Type::Connect => {
                let c = cmd.connect.unwrap_or_default();
                if let Some(expected) = &self.token {
                    let given = c
                        .auth_data
                        .as_deref()
                        .map(|d| String::from_utf8_lossy(d).into_owned())
                        .unwrap_or_default();
                    if c.auth_method_name.as_deref() != Some("token") || &given != expected {
                        out.to(
                            conn,
                            error(
                                0,
                                proto::ServerError::AuthenticationError,
                                "authentication failed: bad token",
                            ),
                        );
                        out.close.push(conn);
                        return out;
                    }
                }
                *authenticated = true;
                out.to(
                    conn,
                    BaseCommand {
                        connected: Some(proto::CommandConnected {
                            server_version: "weir-pulsar-test-broker".into(),
                            protocol_version: Some(c.protocol_version.unwrap_or(0).min(19)),
                            max_message_size: Some(5 << 20),
                        }),
                        ..command(Type::Connected)
                    },
                );
            }
            Type::Ping => out.to(
                conn,
                BaseCommand {
                    pong: Some(proto::CommandPong {}),
                    ..command(Type::Pong)
                },
            ),
            Type::Pong => {}
            Type::PartitionedMetadata => {
                let c = cmd.partition_metadata.unwrap_or_default();
                let name = full_name(&c.topic);
                self.ensure_topic(&name);
                let partitions = self.topics.get(&name).map_or(0, |t| t.partitions);
                out.to(
                    conn,
                    BaseCommand {
                        partition_metadata_response: Some(proto::CommandPartitionedTopicMetadataResponse {
                            partitions: Some(partitions),
                            request_id: c.request_id,
                            response: Some(proto::command_partitioned_topic_metadata_response::LookupType::Success as i32),
                            ..Default::default()
                        }),
                        ..command(Type::PartitionedMetadataResponse)
                    },
                );
            }
            Type::Lookup => {
                let c = cmd.lookup_topic.unwrap_or_default();
                self.ensure_topic(&full_name(&c.topic));
                // A client looking up through `pulsar+ssl://` takes the TLS
                // URL; a TLS broker has no plain one to give.
                let tls = self.service_url.starts_with("pulsar+ssl://");
                out.to(
                    conn,
                    BaseCommand {
                        lookup_topic_response: Some(proto::CommandLookupTopicResponse {
                            broker_service_url: (!tls).then(|| self.service_url.clone()),
                            broker_service_url_tls: Some(self.service_url.clone()),
                            response: Some(
                                proto::command_lookup_topic_response::LookupType::Connect as i32,
                            ),
                            request_id: c.request_id,
                            authoritative: Some(true),
                            proxy_through_service_url: Some(false),
                            ..Default::default()
                        }),
                        ..command(Type::LookupResponse)
                    },
                );
            }
            Type::Producer => {
                let c = cmd.producer.unwrap_or_default();
                let name = full_name(&c.topic);
                self.ensure_topic(&name);
                let (base, _) = split_partition(&name);
                if let Some(schema) = c.schema.clone() {
                    self.topics
                        .entry(base)
                        .or_default()
                        .schema
                        .get_or_insert(schema);
                }
                self.producers.insert((conn, c.producer_id), name);
                self.next_producer_name += 1;
                let producer_name = c
                    .producer_name
                    .clone()
                    .unwrap_or_else(|| format!("test-broker-{}", self.next_producer_name));
                out.to(
                    conn,
                    BaseCommand {
                        producer_success: Some(proto::CommandProducerSuccess {
                            request_id: c.request_id,
                            producer_name,
                            last_sequence_id: Some(-1),
                            schema_version: c.schema.as_ref().map(|_| vec![0; 8]),
                            topic_epoch: None,
                            producer_ready: Some(true),
                        }),
                        ..command(Type::ProducerSuccess)
                    },
                );
            }
            Type::Send => {
                let c = cmd.send.unwrap_or_default();
                let Some(topic) = self.producers.get(&(conn, c.producer_id)).cloned() else {
                    return out;
                };
                let Some(payload) = msg.payload else {
                    return out;
                };
                let messages = payload
                    .metadata
                    .num_messages_in_batch
                    .map_or(1, |n| n.max(1) as u32);
                let log = self.log(&topic);
                let entry_id = log.entries.len() as u64;
                let ledger_id = log.ledger_id;
                log.entries.push(Entry {
                    metadata: payload.metadata,
                    data: payload.data,
                    messages,
                });
                let (_, partition) = split_partition(&topic);
                out.to(
                    conn,
                    BaseCommand {
                        send_receipt: Some(proto::CommandSendReceipt {
                            producer_id: c.producer_id,
                            sequence_id: c.sequence_id,
                            message_id: Some(MessageIdData {
                                ledger_id,
                                entry_id,
                                partition: partition.map(|p| p as i32),
                                ..Default::default()
                            }),
                            highest_sequence_id: c.highest_sequence_id,
                        }),
                        ..command(Type::SendReceipt)
                    },
                );
                self.dispatch_topic(&topic, &mut out);
            }
            Type::Subscribe => {
                let c = cmd.subscribe.unwrap_or_default();
                let name = full_name(&c.topic);
                self.ensure_topic(&name);
                let durable = c.durable.unwrap_or(true);
                let len = self.log(&name).entries.len() as u64;
                let key = (name.clone(), c.subscription.clone());
                let earliest = c.initial_position
                    == Some(proto::command_subscribe::InitialPosition::Earliest as i32);
                let start = match (&c.start_message_id, durable) {
                    (Some(id), false) => start_of(id, len),
                    _ if earliest => 0,
                    _ => len,
                };
                let sub = self.subscriptions.entry(key).or_insert(Subscription {
                    mark_delete: start,
                    acked: BTreeSet::new(),
                    acked_in_batch: HashMap::new(),
                    cursor: start,
                    consumers: Vec::new(),
                    durable,
                });
                let exclusive = c.sub_type == proto::command_subscribe::SubType::Exclusive as i32;
                if exclusive && !sub.consumers.is_empty() {
                    out.to(
                        conn,
                        error(
                            c.request_id,
                            proto::ServerError::ConsumerBusy,
                            "exclusive subscription already has a consumer",
                        ),
                    );
                    return out;
                }
                sub.consumers.push((conn, c.consumer_id));
                self.consumers.insert(
                    (conn, c.consumer_id),
                    Consumer {
                        topic: name.clone(),
                        subscription: c.subscription.clone(),
                        permits: 0,
                    },
                );
                out.to(conn, success(c.request_id));
            }
            Type::Flow => {
                let c = cmd.flow.unwrap_or_default();
                if let Some(consumer) = self.consumers.get_mut(&(conn, c.consumer_id)) {
                    consumer.permits += i64::from(c.message_permits);
                    let key = (consumer.topic.clone(), consumer.subscription.clone());
                    self.dispatch(&key, &mut out);
                }
            }
            Type::Ack => {
                let c = cmd.ack.unwrap_or_default();
                if let Some(consumer) = self.consumers.get(&(conn, c.consumer_id)) {
                    let key = (consumer.topic.clone(), consumer.subscription.clone());
                    let cumulative = c.ack_type == proto::command_ack::AckType::Cumulative as i32;
                    let sizes: Vec<u32> = self
                        .logs
                        .get(&key.0)
                        .map(|l| l.entries.iter().map(|e| e.messages).collect())
                        .unwrap_or_default();
                    if let Some(sub) = self.subscriptions.get_mut(&key) {
                        for id in &c.message_id {
                            ack(sub, id, cumulative, &sizes);
                        }
                    }
                }
                if let Some(request_id) = c.request_id {
                    out.to(
                        conn,
                        BaseCommand {
                            ack_response: Some(proto::CommandAckResponse {
                                consumer_id: c.consumer_id,
                                request_id: Some(request_id),
                                ..Default::default()
                            }),
                            ..command(Type::AckResponse)
                        },
                    );
                }
            }
            Type::RedeliverUnacknowledgedMessages => {
                let c = cmd.redeliver_unacknowledged_messages.unwrap_or_default();
                if let Some(consumer) = self.consumers.get(&(conn, c.consumer_id)) {
                    let key = (consumer.topic.clone(), consumer.subscription.clone());
                    if let Some(sub) = self.subscriptions.get_mut(&key) {
                        sub.cursor = sub.mark_delete;
                    }
                    self.dispatch(&key, &mut out);
                }
            }
            Type::Seek => {
                let c = cmd.seek.unwrap_or_default();
                let Some(consumer) = self.consumers.get(&(conn, c.consumer_id)) else {
                    out.to(
                        conn,
                        error(
                            c.request_id,
                            proto::ServerError::MetadataError,
                            "no such consumer",
                        ),
                    );
                    return out;
                };
                let key = (consumer.topic.clone(), consumer.subscription.clone());
                let (ledger, len) = self
                    .logs
                    .get(&key.0)
                    .map_or((0, 0), |l| (l.ledger_id, l.entries.len() as u64));
                // Like a managed ledger: a position in a ledger that no
                // longer exists (an older one) moves to the first entry
                // there is, one in a later ledger to the end.
                let target = match &c.message_id {
                    Some(id) if id.ledger_id == u64::MAX || id.entry_id == u64::MAX => 0,
                    Some(id) if id.ledger_id >= i64::MAX as u64 => len,
                    Some(id) if id.ledger_id < ledger => 0,
                    Some(id) if id.ledger_id > ledger => len,
                    Some(id) => id.entry_id.min(len),
                    None => 0,
                };
                if let Some(sub) = self.subscriptions.get_mut(&key) {
                    sub.mark_delete = target;
                    sub.cursor = target;
                    sub.acked.clear();
                    sub.acked_in_batch.clear();
                }
                out.to(conn, success(c.request_id));
                // Like Pulsar, disconnect the subscription's consumers: they
                // reconnect and read from the new position.
                let consumers = self
                    .subscriptions
                    .get(&key)
                    .map(|s| s.consumers.clone())
                    .unwrap_or_default();
                for (cc, cid) in consumers {
                    out.to(
                        cc,
                        BaseCommand {
                            close_consumer: Some(proto::CommandCloseConsumer {
                                consumer_id: cid,
                                request_id: 0,
                            }),
                            ..command(Type::CloseConsumer)
                        },
                    );
                    self.remove_consumer(cc, cid, &mut Output::default());
                }
            }
            Type::GetLastMessageId => {
                let c = cmd.get_last_message_id.unwrap_or_default();
                let (topic, mark) = match self.consumers.get(&(conn, c.consumer_id)) {
                    Some(con) => {
                        let key = (con.topic.clone(), con.subscription.clone());
                        (
                            con.topic.clone(),
                            self.subscriptions.get(&key).map(|s| s.mark_delete),
                        )
                    }
                    None => (String::new(), None),
                };
                let log = self.logs.get(&topic);
                let (ledger, last) =
                    log.map_or((0, None), |l| (l.ledger_id, l.entries.len().checked_sub(1)));
                let (_, partition) = split_partition(&topic);
                let id = |entry: i64| MessageIdData {
                    ledger_id: if entry < 0 { u64::MAX } else { ledger },
                    entry_id: if entry < 0 { u64::MAX } else { entry as u64 },
                    partition: partition.map(|p| p as i32),
                    ..Default::default()
                };
                out.to(
                    conn,
                    BaseCommand {
                        get_last_message_id_response: Some(
                            proto::CommandGetLastMessageIdResponse {
                                last_message_id: id(last.map_or(-1, |l| l as i64)),
                                request_id: c.request_id,
                                consumer_mark_delete_position: mark.map(|m| id(m as i64 - 1)),
                            },
                        ),
                        ..command(Type::GetLastMessageIdResponse)
                    },
                );
            }
            Type::GetSchema => {
                let c = cmd.get_schema.unwrap_or_default();
                let (base, _) = split_partition(&full_name(&c.topic));
                let schema = self.topics.get(&base).and_then(|t| t.schema.clone());
                let response = match schema {
                    Some(schema) => proto::CommandGetSchemaResponse {
                        request_id: c.request_id,
                        schema: Some(schema),
                        schema_version: Some(vec![0; 8]),
                        ..Default::default()
                    },
                    None => proto::CommandGetSchemaResponse {
                        request_id: c.request_id,
                        error_code: Some(proto::ServerError::TopicNotFound as i32),
                        error_message: Some("Topic does not have schema".into()),
                        ..Default::default()
                    },
                };
                out.to(
                    conn,
                    BaseCommand {
                        get_schema_response: Some(response),
                        ..command(Type::GetSchemaResponse)
                    },
                );
            }
            Type::GetOrCreateSchema => {
                let c = cmd.get_or_create_schema.unwrap_or_default();
                let (base, _) = split_partition(&full_name(&c.topic));
                self.topics
                    .entry(base)
                    .or_default()
                    .schema
                    .get_or_insert(c.schema);
                out.to(
                    conn,
                    BaseCommand {
                        get_or_create_schema_response: Some(
                            proto::CommandGetOrCreateSchemaResponse {
                                request_id: c.request_id,
                                schema_version: Some(vec![0; 8]),
                                ..Default::default()
                            },
                        ),
                        ..command(Type::GetOrCreateSchemaResponse)
                    },
                );
            }
            Type::CloseProducer => {
                let c = cmd.close_producer.unwrap_or_default();
                self.producers.remove(&(conn, c.producer_id));
                out.to(conn, success(c.request_id));
            }
            Type::CloseConsumer => {
                let c = cmd.close_consumer.unwrap_or_default();
                self.remove_consumer(conn, c.consumer_id, &mut out);
                out.to(conn, success(c.request_id));
            }
            Type::Unsubscribe => {
                let c = cmd.unsubscribe.unwrap_or_default();
                if let Some(consumer) = self.consumers.remove(&(conn, c.consumer_id)) {
                    self.subscriptions
                        .remove(&(consumer.topic, consumer.subscription));
                }
                out.to(conn, success(c.request_id));
            }
            other => {
                tracing_log(&format!("test broker: ignoring {other:?}"));
            }
        }
        out
    }

    /// A connection went away: its producers and consumers with it.
    pub fn disconnected(&mut self, conn: ConnId) -> Output {
        let mut out = Output::default();
        self.producers.retain(|(c, _), _| *c != conn);
        let ids: Vec<u64> = self
            .consumers
            .keys()
            .filter(|(c, _)| *c == conn)
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            self.remove_consumer(conn, id, &mut out);
        }
        out
    }

    fn remove_consumer(&mut self, conn: ConnId, id: u64, out: &mut Output) {
        let Some(consumer) = self.consumers.remove(&(conn, id)) else {
            return;
        };
        let key = (consumer.topic, consumer.subscription);
        let remove = match self.subscriptions.get_mut(&key) {
            Some(sub) => {
                sub.consumers.retain(|c| *c != (conn, id));
                // What was dispatched and not acknowledged goes out again.
                sub.cursor = sub.mark_delete;
                !sub.durable && sub.consumers.is_empty()
            }
            None => false,
        };
        if remove {
            self.subscriptions.remove(&key);
        } else {
            self.dispatch(&key, out);
        }
    }

    fn dispatch_topic(&mut self, topic: &str, out: &mut Output) {
        let keys: Vec<(String, String)> = self
            .subscriptions
            .keys()
            .filter(|(t, _)| t == topic)
            .cloned()
            .collect();
        for key in keys {
            self.dispatch(&key, out);
        }
    }

    /// Sends the subscription's next entries to its active consumer, as
    /// far as that consumer's permits go.
    fn dispatch(&mut self, key: &(String, String), out: &mut Output) {
        let Some(sub) = self.subscriptions.get_mut(key) else {
            return;
        };
        let Some(&(conn, consumer_id)) = sub.consumers.first() else {
            return;
        };
        let Some(consumer) = self.consumers.get_mut(&(conn, consumer_id)) else {
            return;
        };
        let Some(log) = self.logs.get(&key.0) else {
            return;
        };
        let (_, partition) = split_partition(&key.0);
        while consumer.permits > 0 && (sub.cursor as usize) < log.entries.len() {
            let index = sub.cursor;
            sub.cursor += 1;
            if index < sub.mark_delete || sub.acked.contains(&index) {
                continue;
            }
            let entry = &log.entries[index as usize];
            consumer.permits -= i64::from(entry.messages);
            let command = BaseCommand {
                message: Some(proto::CommandMessage {
                    consumer_id,
                    message_id: MessageIdData {
                        ledger_id: log.ledger_id,
                        entry_id: index,
                        partition: partition.map(|p| p as i32),
                        batch_size: (entry.messages > 1).then_some(entry.messages as i32),
                        ..Default::default()
                    },
                    redelivery_count: Some(0),
                    ..Default::default()
                }),
                ..command(Type::Message)
            };
            out.frames.push((
                conn,
                Message {
                    command,
                    payload: Some(Payload {
                        metadata: entry.metadata.clone(),
                        data: entry.data.clone(),
                    }),
                },
            ));
        }
    }
}

/// Where a non-durable subscription (a reader) starts: after the given
/// message, or at its entry when it is inside a batch (the client skips
/// the batch's earlier messages).
fn start_of(id: &MessageIdData, len: u64) -> u64 {
    if id.ledger_id == u64::MAX || id.entry_id == u64::MAX {
        return 0;
    }
    if id.ledger_id >= i64::MAX as u64 || id.entry_id >= i64::MAX as u64 {
        return len;
    }
    match id.batch_index {
        Some(b) if b >= 0 => id.entry_id.min(len),
        _ => (id.entry_id + 1).min(len),
    }
}

fn ack(sub: &mut Subscription, id: &MessageIdData, cumulative: bool, sizes: &[u32]) {
    let entry = id.entry_id;
    let size = sizes.get(entry as usize).copied().unwrap_or(1);
    let batch = id.batch_index.filter(|b| *b >= 0 && size > 1);
    // Whether the acknowledgment covers the whole entry.
    let whole = match batch {
        None => true,
        Some(b) if cumulative => b as u32 + 1 >= size,
        Some(b) => {
            let acked = sub.acked_in_batch.entry(entry).or_default();
            acked.insert(b);
            acked.len() as u32 >= size
        }
    };
    if cumulative {
        let through = if whole { entry + 1 } else { entry };
        sub.mark_delete = sub.mark_delete.max(through);
    } else if whole {
        sub.acked.insert(entry);
    }
    while sub.acked.remove(&sub.mark_delete) {
        sub.mark_delete += 1;
    }
    let mark = sub.mark_delete;
    sub.acked.retain(|e| *e >= mark);
    sub.acked_in_batch.retain(|e, _| *e >= mark);
}

pub(crate) fn tracing_log(message: &str) {
    if std::env::var_os("WEIR_TEST_BROKER_DEBUG").is_some() {
        eprintln!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription {
            mark_delete: 0,
            acked: BTreeSet::new(),
            acked_in_batch: HashMap::new(),
            cursor: 0,
            consumers: Vec::new(),
            durable: true,
        }
    }

    fn id(entry: u64, batch: Option<i32>) -> MessageIdData {
        MessageIdData {
            ledger_id: 1,
            entry_id: entry,
            batch_index: batch,
            ..Default::default()
        }
    }

    #[test]
    fn acknowledgments_move_the_mark_delete_position() {
        let sizes = [1, 1, 3, 1, 1];
        let mut s = sub();
        ack(&mut s, &id(1, None), false, &sizes);
        assert_eq!(s.mark_delete, 0, "entry 0 is not acknowledged");
        ack(&mut s, &id(0, None), false, &sizes);
        assert_eq!(s.mark_delete, 2);
        ack(&mut s, &id(2, Some(0)), true, &sizes);
        assert_eq!(
            s.mark_delete, 2,
            "a batch is acknowledged when all of it is"
        );
        ack(&mut s, &id(2, Some(2)), true, &sizes);
        assert_eq!(s.mark_delete, 3);
        ack(&mut s, &id(4, None), true, &sizes);
        assert_eq!(s.mark_delete, 5);
    }

    #[test]
    fn names_and_partitions() {
        assert_eq!(full_name("t"), "persistent://public/default/t");
        assert_eq!(full_name("a/b/t"), "persistent://a/b/t");
        assert_eq!(
            split_partition("persistent://public/default/t-partition-3"),
            ("persistent://public/default/t".into(), Some(3))
        );
        assert_eq!(
            split_partition("persistent://public/default/t"),
            ("persistent://public/default/t".into(), None)
        );
    }

    #[test]
    fn readers_start_after_their_message() {
        assert_eq!(start_of(&id(3, None), 10), 4);
        assert_eq!(start_of(&id(3, Some(1)), 10), 3);
        assert_eq!(
            start_of(
                &MessageIdData {
                    ledger_id: u64::MAX,
                    entry_id: u64::MAX,
                    ..Default::default()
                },
                10
            ),
            0
        );
        assert_eq!(
            start_of(
                &MessageIdData {
                    ledger_id: i64::MAX as u64,
                    entry_id: i64::MAX as u64,
                    ..Default::default()
                },
                10
            ),
            10
        );
    }
}
