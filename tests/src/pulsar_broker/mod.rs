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
//! [`TestBroker::start`] runs it on its own thread (port 0 for a free
//! port); the `pulsar-test-broker` binary runs it on its own.

pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use pulsar::message::proto;
use pulsar::message::{Codec, Message};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
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
}

enum Outgoing {
    Frame(Box<Message>),
    Close,
}

type Connections =
    Arc<Mutex<HashMap<u64, (mpsc::UnboundedSender<Outgoing>, tokio::task::AbortHandle)>>>;

/// A running test broker. Dropping it stops it.
pub struct TestBroker {
    pub addr: SocketAddr,
    state: Arc<Mutex<Broker>>,
    connections: Connections,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    /// Starts a broker on 127.0.0.1 on its own thread.
    pub fn start(config: BrokerConfig) -> std::io::Result<TestBroker> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Broker::new(
            format!("pulsar://{addr}"),
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
                            _ = accept_loop(listener, state, connections) => {}
                            _ = shutdown_rx => {}
                        }
                    });
                })?
        };
        Ok(TestBroker {
            addr,
            state,
            connections,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// `pulsar://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("pulsar://{}", self.addr)
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

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<Broker>>, connections: Connections) {
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
        let task = tokio::spawn(async move {
            serve(id, Framed::new(stream, Codec), rx, &state2, &connections2).await;
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
