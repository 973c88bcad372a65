//! A Pulsar broker for tests: the real binary protocol, in memory.
//!
//! No Pulsar broker can be installed on these machines, so the tests speak
//! to this one. It is built from the `pulsar` crate's own protocol types
//! (`pulsar::proto`) and frame codec (`pulsar::message::Codec`), with no copy
//! of `PulsarApi.proto`, and implements what Weir and standard clients use:
//! connect (with token authentication), partitioned-metadata and topic
//! lookup, producers (batched or not), exclusive and failover subscriptions,
//! readers from an exact message id, seek, flow permits, individual and
//! cumulative acknowledgments, redelivery of unacknowledged messages when a
//! consumer goes away, ping/pong, close, and schema lookup. Messages stay in
//! memory per partition with ledger and entry ids. Tests can drop every
//! connection at once (clients must reconnect) and inject raw messages.
//!
//! With [`BrokerTls`] it serves TLS only (rustls on ring): every accepted
//! connection does a TLS handshake before speaking the protocol, its URL
//! is `pulsar+ssl://`, and lookups answer with that URL only (as a broker
//! without a plain port would).
//!
//! [`TestBroker::start`] runs it on its own thread (port 0 for a free
//! port); the `pulsar-test-broker` binary runs it on its own.

pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use pulsar::message::proto;
use pulsar::message::{Codec, Message};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

pub use state::{full_name, Broker};

/// How a test broker runs.
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    /// 0 for a free port.
    pub port: u16,
    /// Partitions of topics created on first use (0: not partitioned).
    pub partitions: u32,
    /// A token clients must present (`token` authentication), if any.
    pub token: Option<String>,
    /// Serve TLS (`pulsar+ssl://`) instead of plain TCP.
    pub tls: Option<BrokerTls>,
}

/// The broker's TLS identity: a certificate chain and its private key.
#[derive(Clone)]
pub struct BrokerTls {
    /// PEM, the broker's own certificate first.
    pub certificate_chain_pem: String,
    /// PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never printed.
        f.debug_struct("BrokerTls")
            .field("certificate_chain_pem", &self.certificate_chain_pem)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

impl BrokerTls {
    /// Reads the certificate chain and the key from PEM files.
    pub fn from_files(certificate_chain: &Path, private_key: &Path) -> std::io::Result<BrokerTls> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
            })
        };
        Ok(BrokerTls {
            certificate_chain_pem: read(certificate_chain)?,
            private_key_pem: read(private_key)?,
        })
    }

    /// The rustls server side of this identity.
    fn acceptor(&self) -> std::io::Result<TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("test broker TLS: {what}: {e}"),
            )
        };
        let chain = CertificateDer::pem_slice_iter(self.certificate_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("the certificate chain", &e))?;
        if chain.is_empty() {
            return Err(invalid(
                "the certificate chain",
                &"no certificate in the PEM",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(self.private_key_pem.as_bytes())
            .map_err(|e| invalid("the private key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("protocol versions", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid("the certificate and key", &e))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

enum Outgoing {
    Frame(Box<Message>),
    Close,
}

type Connections =
    Arc<Mutex<HashMap<u64, (mpsc::UnboundedSender<Outgoing>, tokio::task::AbortHandle)>>>;

/// A running test broker. Dropping it stops it.
pub struct TestBroker {
    pub addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<Broker>>,
    connections: Connections,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    /// Starts a broker on 127.0.0.1 on its own thread.
    pub fn start(config: BrokerConfig) -> std::io::Result<TestBroker> {
        let acceptor = config.tls.as_ref().map(BrokerTls::acceptor).transpose()?;
        let tls = acceptor.is_some();
        let listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Broker::new(
            url_of(addr, tls),
            config.partitions,
            config.token.clone(),
        )));
        let connections: Connections = Arc::default();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let thread = {
            let (state, connections) = (state.clone(), connections.clone());
            std::thread::Builder::new()
                .name("pulsar-test-broker".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            eprintln!("test broker: cannot start a runtime: {e}");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                eprintln!("test broker: {e}");
                                return;
                            }
                        };
                        tokio::select! {
                            _ = accept_loop(listener, acceptor, state, connections) => {}
                            _ = shutdown_rx => {}
                        }
                    });
                })?
        };
        Ok(TestBroker {
            addr,
            tls,
            state,
            connections,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// `pulsar://127.0.0.1:PORT`, or `pulsar+ssl://127.0.0.1:PORT` with TLS.
    pub fn url(&self) -> String {
        url_of(self.addr, self.tls)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Broker) -> T) -> T {
        let mut broker = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut broker)
    }

    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.with(|b| b.create_topic(topic, partitions));
    }

    /// Deletes a topic with its messages and subscriptions (no client may
    /// be using it).
    pub fn delete_topic(&self, topic: &str) {
        self.with(|b| b.delete_topic(topic));
    }

    /// Grows a partitioned topic to `partitions`.
    pub fn add_partitions(&self, topic: &str, partitions: u32) {
        self.with(|b| b.add_partitions(topic, partitions));
    }

    /// Registers an Avro schema for a topic (as a producer with a schema would).
    pub fn set_avro_schema(&self, topic: &str, schema_json: &str) {
        self.with(|b| {
            b.topics.entry(full_name(topic)).or_default().schema = Some(proto::Schema {
                name: "schema".into(),
                schema_data: schema_json.as_bytes().to_vec(),
                r#type: proto::schema::Type::Avro as i32,
                properties: Vec::new(),
            });
        });
    }

    /// Messages (entries) stored in a partition (or a plain topic).
    pub fn entries(&self, partition: &str) -> usize {
        self.with(|b| {
            b.logs
                .get(&full_name(partition))
                .map_or(0, |l| l.entries.len())
        })
    }

    /// Entries of a partition by compression codec (`NONE`, `LZ4`, ...).
    pub fn entries_by_codec(&self, partition: &str) -> std::collections::BTreeMap<String, usize> {
        self.with(|b| {
            let mut by = std::collections::BTreeMap::new();
            if let Some(log) = b.logs.get(&full_name(partition)) {
                for e in &log.entries {
                    let codec =
                        proto::CompressionType::try_from(e.metadata.compression.unwrap_or(0))
                            .map_or_else(|_| "unknown".to_owned(), |c| c.as_str_name().to_owned());
                    *by.entry(codec).or_insert(0) += 1;
                }
            }
            by
        })
    }

    /// Appends one raw, unbatched message to a partition, as if a producer
    /// had sent it; returns its (ledger, entry) id.
    pub fn inject(&self, partition: &str, key: Option<&str>, data: &[u8]) -> (u64, u64) {
        self.with(|b| {
            let name = full_name(partition);
            b.create_topic_partition(&name);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let log = b.logs.get_mut(&name).expect("created above");
            let entry = log.entries.len() as u64;
            log.entries.push(state::Entry {
                metadata: proto::MessageMetadata {
                    producer_name: "test-inject".into(),
                    sequence_id: entry,
                    publish_time: now,
                    partition_key: key.map(str::to_owned),
                    ..Default::default()
                },
                data: data.to_vec(),
                messages: 1,
            });
            (log.ledger_id, entry)
        })
    }

    /// Closes every client connection (the clients must reconnect).
    pub fn drop_connections(&self) {
        let conns: Vec<_> = {
            let mut c = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            c.drain().collect()
        };
        for (id, (_, abort)) in conns {
            abort.abort();
            self.with(|b| b.disconnected(id));
        }
    }

    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.drop_connections();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Broker {
    /// Makes sure a partition (or plain topic) log exists.
    pub fn create_topic_partition(&mut self, name: &str) {
        if let Some(i) = name.rfind("-partition-") {
            let base = &name[..i];
            let p: u32 = name[i + 11..].parse().unwrap_or(0);
            let partitions = self.topics.get(base).map_or(0, |t| t.partitions);
            self.add_partitions(base, partitions.max(p + 1));
        } else if !self.topics.contains_key(name) {
            self.create_topic(name, 0);
        }
    }
}

fn url_of(addr: SocketAddr, tls: bool) -> String {
    if tls {
        format!("pulsar+ssl://{addr}")
    } else {
        format!("pulsar://{addr}")
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    state: Arc<Mutex<Broker>>,
    connections: Connections,
) {
    let mut next = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        next += 1;
        let id = next;
        let (tx, rx) = mpsc::unbounded_channel();
        let (state2, connections2) = (state.clone(), connections.clone());
        let acceptor = acceptor.clone();
        // The handshake runs in the connection's task, so a slow client
        // holds up no other; a failed one closes only its connection.
        let task = tokio::spawn(async move {
            match acceptor {
                None => serve(id, Framed::new(stream, Codec), rx, &state2, &connections2).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve(id, Framed::new(tls, Codec), rx, &state2, &connections2).await
                        }
                        Ok(Err(e)) => state::tracing_log(&format!(
                            "test broker: TLS handshake of connection {id} failed: {e}"
                        )),
                        Err(_) => state::tracing_log(&format!(
                            "test broker: no TLS handshake on connection {id} within {HANDSHAKE_TIMEOUT:?}"
                        )),
                    }
                }
            }
            let out = state2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .disconnected(id);
            connections2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            deliver(out, &connections2);
        });
        connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (tx, task.abort_handle()));
    }
}

async fn serve<S>(
    id: u64,
    framed: Framed<S, Codec>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    state: &Arc<Mutex<Broker>>,
    connections: &Connections,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = framed.split();
    let mut authenticated = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let msg = match frame {
                    Some(Ok(m)) => m,
                    _ => return,
                };
                let out = state.lock().unwrap_or_else(|e| e.into_inner()).handle(id, msg, &mut authenticated);
                deliver(out, connections);
            }
            outgoing = rx.recv() => match outgoing {
                Some(Outgoing::Frame(m)) => {
                    if sink.send(*m).await.is_err() {
                        return;
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = sink.flush().await;
                    return;
                }
            }
        }
    }
}

fn deliver(out: state::Output, connections: &Connections) {
    let conns = connections.lock().unwrap_or_else(|e| e.into_inner());
    for (conn, frame) in out.frames {
        if let Some((tx, _)) = conns.get(&conn) {
            let _ = tx.send(Outgoing::Frame(Box::new(frame)));
        }
    }
    for conn in out.close {
        if let Some((tx, _)) = conns.get(&conn) {
            let _ = tx.send(Outgoing::Close);
        }
    }
}
