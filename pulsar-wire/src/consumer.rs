//! One consumer on one topic (partition) over a connection of its own.
//!
//! The hot path of Weir's Pulsar source: frames are read into one buffer
//! and handed out as [`Delivery`]s whose payload is a view of that buffer
//! (see the crate docs), with no task, channel or lock between the socket
//! and the reader, and no clock read per message. What is not on the hot
//! path — looking the topic up, moving the subscription, the schema
//! registry, the last message id — stays with the `pulsar` crate's client;
//! this consumer is given the broker to connect to.
//!
//! Cancel safety: [`WireConsumer::next`] may be dropped at any await (the
//! reader polls it with a timeout). Reads go into the read buffer only when
//! they complete, and outgoing frames wait in an output buffer that every
//! call flushes further, so a cancelled call loses nothing and never leaves
//! half a frame on the wire.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{encode_command, EncodeError, FrameDecoder, FrameError, MessageRef, Payload};
use crate::proto::base_command::Type;
use crate::proto::command_ack::AckType;
use crate::proto::command_subscribe::{InitialPosition, SubType};
use crate::proto::{self, BaseCommand, MessageIdData};

/// The protocol version announced in CONNECT (what the `pulsar` crate
/// announces too, and what Weir's test broker is checked with).
const PROTOCOL_VERSION: i32 = 12;
/// The consumer id on its connection (one consumer per connection).
const CONSUMER_ID: u64 = 1;
/// How much the read buffer grows by when it is full.
const READ_CHUNK: usize = 64 * 1024;

/// Where to connect: the address the lookup answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` of the broker, or of the proxy in front of it.
    pub address: String,
    /// `pulsar+ssl://`: TLS.
    pub tls: bool,
    /// Through a proxy: the broker the proxy is to forward to.
    pub proxy_to_broker_url: Option<String>,
}

impl Endpoint {
    /// The endpoint of a `pulsar://host:port` or `pulsar+ssl://host:port`
    /// URL (as the lookup returns them).
    pub fn from_url(url: &str, proxy_to_broker_url: Option<String>) -> Result<Self, ConsumerError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("pulsar+ssl://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("pulsar://") {
            (false, rest)
        } else {
            return Err(ConsumerError::Address(url.to_owned()));
        };
        let address = rest.trim_end_matches('/');
        if address.is_empty() || !address.contains(':') {
            return Err(ConsumerError::Address(url.to_owned()));
        }
        Ok(Endpoint {
            address: address.to_owned(),
            tls,
            proxy_to_broker_url,
        })
    }

    fn host(&self) -> &str {
        match self.address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => &self.address,
        }
    }
}

/// Credentials for CONNECT (and for the broker's AUTH_CHALLENGE).
#[derive(Clone)]
pub struct Auth {
    /// `token`, ...
    pub method: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        write!(f, "Auth {{ method: {:?}, data: <redacted> }}", self.method)
    }
}

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub topic: String,
    pub subscription: String,
    pub consumer_name: String,
    pub sub_type: SubType,
    /// Messages the broker may send ahead (flow permits).
    pub receiver_queue: u32,
    pub auth: Option<Auth>,
    /// For `pulsar+ssl://` endpoints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// For connecting, the handshake and each request.
    pub timeout: Duration,
    pub max_message_size: usize,
}

/// Why the consumer stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("not a Pulsar broker URL: {0:?}")]
    Address(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} asks for TLS but no TLS settings were given")]
    NoTls { address: String },
    #[error("TLS with {address}: {source}")]
    Tls {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} did not answer {what} within {timeout:?}")]
    Timeout {
        address: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("the broker refused {what}: {kind}: {message}")]
    Refused {
        what: &'static str,
        kind: String,
        message: String,
        retryable: bool,
    },
    #[error("the connection to {address} closed")]
    Closed { address: String },
    #[error("the broker closed the consumer (the topic moved or was unloaded)")]
    ClosedByBroker,
    #[error("I/O on the connection to {address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl ConsumerError {
    /// Whether connecting again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConsumerError::Address(_) | ConsumerError::NoTls { .. } | ConsumerError::Encode(_) => {
                false
            }
            ConsumerError::Refused { retryable, .. } => *retryable,
            ConsumerError::Frame(e) => e.is_retryable() || e.is_connection_fatal(),
            _ => true,
        }
    }
}

/// What [`WireConsumer::next`] hands out.
// `Message` is the case of every entry and `Corrupt` a rarity: boxing the
// delivery to even them out would cost an allocation per entry.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// An entry: one message, or a batch of them.
    Message(Delivery),
    /// A frame that failed its checksum or whose payload section is
    /// malformed: its bytes are gone (the caller records it, the broker
    /// does not send it again on its own).
    Corrupt {
        message: MessageRef,
        error: FrameError,
    },
}

/// One entry as the broker sent it.
#[derive(Debug)]
pub struct Delivery {
    pub message_id: MessageIdData,
    pub redelivery_count: u32,
    pub payload: Payload,
}

type Stream = Box<dyn Io>;
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// See the module docs.
pub struct WireConsumer {
    stream: Stream,
    address: String,
    read: BytesMut,
    out: BytesMut,
    decoder: FrameDecoder,
    auth: Option<Auth>,
    next_request: u64,
    receiver_queue: u32,
    /// Messages handed out since permits were last given back.
    consumed: u32,
    /// Messages of the entry handed out last (given back on the next call).
    last_entry: u32,
}

impl WireConsumer {
    /// Connects to `endpoint`, subscribes and asks for the first messages.
    pub async fn subscribe(
        endpoint: &Endpoint,
        options: &ConsumerOptions,
    ) -> Result<WireConsumer, ConsumerError> {
        let stream = connect(endpoint, options).await?;
        let mut c = WireConsumer {
            stream,
            address: endpoint.address.clone(),
            read: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
            decoder: FrameDecoder::for_max_message_size(options.max_message_size),
            auth: options.auth.clone(),
            next_request: 1,
            receiver_queue: options.receiver_queue.max(1),
            consumed: 0,
            last_entry: 0,
        };
        c.handshake(endpoint, options).await?;
        let request_id = c.request_id();
        c.send(&BaseCommand {
            r#type: Type::Subscribe as i32,
            subscribe: Some(proto::CommandSubscribe {
                topic: options.topic.clone(),
                subscription: options.subscription.clone(),
                sub_type: options.sub_type as i32,
                consumer_id: CONSUMER_ID,
                request_id,
                consumer_name: Some(options.consumer_name.clone()),
                durable: Some(true),
                initial_position: Some(InitialPosition::Earliest as i32),
                ..Default::default()
            }),
            ..Default::default()
        })?;
        c.answer(request_id, "SUBSCRIBE", options.timeout).await?;
        c.flow(c.receiver_queue)?;
        c.flush().await?;
        Ok(c)
    }

    /// The next entry. Permits for the entry handed out before are given
    /// back first (every half queue), so the broker sends more only as
    /// fast as the reader takes them.
    pub async fn next(&mut self) -> Result<Event, ConsumerError> {
        if self.last_entry > 0 {
            self.consumed = self.consumed.saturating_add(self.last_entry);
            self.last_entry = 0;
            if self.consumed >= self.receiver_queue / 2 {
                let n = std::mem::take(&mut self.consumed);
                self.flow(n)?;
            }
        }
        loop {
            match self.decoder.decode(&mut self.read) {
                Ok(Some(frame)) => {
                    let command = frame.command;
                    match (Type::try_from(command.r#type), frame.payload) {
                        (Ok(Type::Message), Some(payload)) => {
                            let Some(m) = command.message else { continue };
                            self.last_entry = payload
                                .metadata
                                .num_messages_in_batch
                                .and_then(|n| u32::try_from(n).ok())
                                .unwrap_or(1)
                                .max(1);
                            return Ok(Event::Message(Delivery {
                                message_id: m.message_id,
                                redelivery_count: m.redelivery_count.unwrap_or(0),
                                payload,
                            }));
                        }
                        (Ok(Type::CloseConsumer), _) => return Err(ConsumerError::ClosedByBroker),
                        (Ok(other), _) => self.control(other, command)?,
                        (Err(_), _) => {}
                    }
                }
                Ok(None) => {
                    if !self.out.is_empty() {
                        self.flush().await?;
                    }
                    self.fill().await?;
                }
                Err(e) if e.is_connection_fatal() => return Err(e.into()),
                Err(e) => match e.message() {
                    Some(message) => {
                        // Its permit is spent all the same.
                        self.last_entry = 1;
                        return Ok(Event::Corrupt { message, error: e });
                    }
                    None => return Err(e.into()),
                },
            }
        }
    }

    /// Acknowledges everything up to `id` (the broker acknowledges whole
    /// entries). Not confirmed by the broker: a lost acknowledgment is made
    /// good by a later one.
    pub async fn ack_cumulative(&mut self, id: MessageIdData) -> Result<(), ConsumerError> {
        self.send(&BaseCommand {
            r#type: Type::Ack as i32,
            ack: Some(proto::CommandAck {
                consumer_id: CONSUMER_ID,
                ack_type: AckType::Cumulative as i32,
                message_id: vec![id],
                ..Default::default()
            }),
            ..Default::default()
        })?;
        self.flush().await
    }

    /// Tells the broker the consumer goes (best effort; dropping the
    /// connection says the same, later).
    pub async fn close(mut self) {
        let request_id = self.request_id();
        let closing = self.send(&BaseCommand {
            r#type: Type::CloseConsumer as i32,
            close_consumer: Some(proto::CommandCloseConsumer {
                consumer_id: CONSUMER_ID,
                request_id,
            }),
            ..Default::default()
        });
        if closing.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
        }
        let _ = self.stream.shutdown().await;
    }

    async fn handshake(
        &mut self,
        endpoint: &Endpoint,
        options: &ConsumerOptions,
    ) -> Result<(), ConsumerError> {
        self.send(&BaseCommand {
            r#type: Type::Connect as i32,
            connect: Some(proto::CommandConnect {
                client_version: format!("weir {}", env!("CARGO_PKG_VERSION")),
                auth_method_name: self.auth.as_ref().map(|a| a.method.clone()),
                auth_data: self.auth.as_ref().map(|a| a.data.clone()),
                protocol_version: Some(PROTOCOL_VERSION),
                proxy_to_broker_url: endpoint.proxy_to_broker_url.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })?;
        self.flush().await?;
        let timeout = options.timeout;
        let address = self.address.clone();
        let waiting = async {
            loop {
                let command = self.command().await?;
                match Type::try_from(command.r#type) {
                    Ok(Type::Connected) => return Ok(()),
                    Ok(Type::Error) => return Err(refused("CONNECT", command.error)),
                    Ok(other) => self.control(other, command)?,
                    Err(_) => {}
                }
            }
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .map_err(|_| ConsumerError::Timeout {
                address,
                what: "CONNECT",
                timeout,
            })?
    }

    /// Waits for the answer to request `request_id` (SUCCESS or ERROR).
    async fn answer(
        &mut self,
        request_id: u64,
        what: &'static str,
        timeout: Duration,
    ) -> Result<(), ConsumerError> {
        self.flush().await?;
        let address = self.address.clone();
        let waiting = async {
            loop {
                let command = self.command().await?;
                match Type::try_from(command.r#type) {
                    Ok(Type::Success)
                        if command.success.as_ref().map(|s| s.request_id) == Some(request_id) =>
                    {
                        return Ok(());
                    }
                    Ok(Type::Error)
                        if command.error.as_ref().map(|e| e.request_id) == Some(request_id) =>
                    {
                        return Err(refused(what, command.error));
                    }
                    Ok(Type::CloseConsumer) => return Err(ConsumerError::ClosedByBroker),
                    Ok(other) => self.control(other, command)?,
                    Err(_) => {}
                }
            }
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .map_err(|_| ConsumerError::Timeout {
                address,
                what,
                timeout,
            })?
    }

    /// The next command while no message is expected.
    async fn command(&mut self) -> Result<BaseCommand, ConsumerError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read)? {
                return Ok(frame.command);
            }
            if !self.out.is_empty() {
                self.flush().await?;
            }
            self.fill().await?;
        }
    }

    /// Answers what the broker asks outside the message flow.
    fn control(&mut self, kind: Type, command: BaseCommand) -> Result<(), ConsumerError> {
        match kind {
            Type::Ping => self.send(&BaseCommand {
                r#type: Type::Pong as i32,
                pong: Some(proto::CommandPong {}),
                ..Default::default()
            }),
            Type::AuthChallenge => {
                // Token credentials are static: the same data again.
                let Some(auth) = self.auth.clone() else {
                    return Err(ConsumerError::Refused {
                        what: "CONNECT",
                        kind: "AuthChallenge".into(),
                        message: "the broker asks for credentials and none are configured".into(),
                        retryable: false,
                    });
                };
                self.send(&BaseCommand {
                    r#type: Type::AuthResponse as i32,
                    auth_response: Some(proto::CommandAuthResponse {
                        client_version: Some(format!("weir {}", env!("CARGO_PKG_VERSION"))),
                        response: Some(proto::AuthData {
                            auth_method_name: Some(auth.method),
                            auth_data: Some(auth.data),
                        }),
                        protocol_version: Some(PROTOCOL_VERSION),
                    }),
                    ..Default::default()
                })
            }
            // Failover: which consumer is active changes nothing here (an
            // inactive one simply receives nothing).
            _ => {
                let _ = command;
                Ok(())
            }
        }
    }

    fn flow(&mut self, permits: u32) -> Result<(), ConsumerError> {
        self.send(&BaseCommand {
            r#type: Type::Flow as i32,
            flow: Some(proto::CommandFlow {
                consumer_id: CONSUMER_ID,
                message_permits: permits,
            }),
            ..Default::default()
        })
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        id
    }

    /// Queues a command (sent by the next flush).
    fn send(&mut self, command: &BaseCommand) -> Result<(), ConsumerError> {
        Ok(encode_command(command, &mut self.out)?)
    }

    /// Writes what is queued. Cancel-safe: what was written is gone from
    /// the queue, the rest stays.
    async fn flush(&mut self) -> Result<(), ConsumerError> {
        while !self.out.is_empty() {
            match self.stream.write_buf(&mut self.out).await {
                Ok(0) => {
                    return Err(ConsumerError::Closed {
                        address: self.address.clone(),
                    })
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(ConsumerError::Io {
                        address: self.address.clone(),
                        source,
                    })
                }
            }
        }
        self.stream
            .flush()
            .await
            .map_err(|source| ConsumerError::Io {
                address: self.address.clone(),
                source,
            })
    }

    /// Reads what has arrived into the read buffer.
    async fn fill(&mut self) -> Result<(), ConsumerError> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.read).await {
            Ok(0) => Err(ConsumerError::Closed {
                address: self.address.clone(),
            }),
            Ok(_) => Ok(()),
            Err(source) => Err(ConsumerError::Io {
                address: self.address.clone(),
                source,
            }),
        }
    }
}

/// The connection, TLS included.
async fn connect(endpoint: &Endpoint, options: &ConsumerOptions) -> Result<Stream, ConsumerError> {
    let address = endpoint.address.clone();
    let timeout = options.timeout;
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| ConsumerError::Timeout {
            address: address.clone(),
            what: "the connection",
            timeout,
        })?
        .map_err(|source| ConsumerError::Connect {
            address: address.clone(),
            source,
        })?;
    // Small control frames (flow, acks) go out at once.
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return Ok(Box::new(tcp));
    }
    let Some(config) = options.tls.clone() else {
        return Err(ConsumerError::NoTls { address });
    };
    let name =
        rustls::pki_types::ServerName::try_from(endpoint.host().to_owned()).map_err(|e| {
            ConsumerError::Tls {
                address: address.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            }
        })?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| ConsumerError::Timeout {
        address: address.clone(),
        what: "the TLS handshake",
        timeout,
    })?
    .map_err(|source| ConsumerError::Tls {
        address: address.clone(),
        source,
    })?;
    Ok(Box::new(tls))
}

/// The broker's ERROR as an error; whether trying again can help follows
/// the broker's error kind.
fn refused(what: &'static str, error: Option<proto::CommandError>) -> ConsumerError {
    use proto::ServerError as E;
    let Some(error) = error else {
        return ConsumerError::Refused {
            what,
            kind: "Unknown".into(),
            message: "an error without details".into(),
            retryable: true,
        };
    };
    let kind = E::try_from(error.error).ok();
    let retryable = !matches!(
        kind,
        Some(
            E::AuthenticationError
                | E::AuthorizationError
                | E::InvalidTopicName
                | E::UnsupportedVersionError
                | E::NotAllowedError
                | E::TopicNotFound
                | E::SubscriptionNotFound
                | E::IncompatibleSchema
        )
    );
    ConsumerError::Refused {
        what,
        kind: kind.map_or_else(|| error.error.to_string(), |k| format!("{k:?}")),
        message: error.message,
        retryable,
    }
}
