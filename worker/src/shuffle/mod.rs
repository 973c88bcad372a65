//! The shuffle: records of a key group travel to the worker that owns it.
//!
//! Each source emits into one channel per destination worker. For this
//! worker the channel is the local window task's input for that partition;
//! for every other worker it feeds a [`run_shuffle_out`] task that streams
//! the envelopes, in order, over one gRPC client stream (and connection) per
//! (partition, receiver) pair. On the receiving side [`ShuffleService`]
//! decodes each frame and forwards its envelopes into the window task's
//! channel for that partition. Every step awaits the next bounded channel or
//! HTTP/2 flow-control window, so a slow receiver slows remote senders
//! exactly like a local one does — and a window task that holds back one
//! partition while it aligns a checkpoint holds back nothing else (a stream
//! shared by partitions would stall the barriers it waits for behind the
//! records it holds back; a connection shared by streams would let held-back
//! streams exhaust its flow-control window).
//!
//! Readings travel in a fixed-width layout ([`wire`]), cheap at both ends,
//! written straight into and read straight out of tonic's buffers by the
//! shuffle's own codec ([`codec`], [`rpc`]).

pub mod codec;
pub mod rpc;
pub mod wire;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use weir_common::error_chain::error_chain;
use weir_proto::auth::ClusterSecret;
use weir_proto::shuffle as pb;
use weir_proto::tls::Dialer;

pub use self::codec::{from_proto, to_proto, Frame, FrameError};
pub use self::rpc::{ShuffleClient, ShuffleServer};
use crate::envelope::Envelope;
use crate::metrics::JobMetrics;

/// Frames a sender queues for its stream. A frame ends with a record batch
/// (control envelopes ride along with the next one): a message is no
/// larger than a batch, and the sender never walks the readings to size
/// its frames.
const FRAMES_QUEUED: usize = 8;
/// The message size both sides accept.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The largest HTTP/2 DATA frame each side accepts (the default, 16 KiB,
/// cuts a batch into a dozen frames, each handled on its own at both ends).
pub const MAX_FRAME_SIZE: u32 = 1 << 20;

/// How long a sender keeps trying to reach a peer that is not up yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// How long a receiver waits for its own deployment of a generation that a
/// faster peer already streams.
const DEPLOY_PATIENCE: Duration = Duration::from_secs(15);

/// Why a shuffle stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    #[error("cannot reach worker {peer} for the shuffle: {message}")]
    Connect { peer: String, message: String },
    #[error("shuffle stream to worker {peer} failed: {status}")]
    Stream { peer: String, status: Status },
    /// Dead letters stay in their source's process; one routed to a peer
    /// is a bug, not something to drop.
    #[error("dead letters were routed to worker {0}: they must stay with their source")]
    Local(String),
}

/// Where incoming shuffle streams of the current generation go, and what
/// outgoing ones present to their peers.
#[derive(Default)]
pub struct ShuffleRegistry {
    current: Mutex<Option<Registration>>,
    changed: Notify,
    /// The cluster's secret: sent to peers, required of them.
    secret: ClusterSecret,
    /// How to dial the peers (TLS or plain).
    dialer: Dialer,
}

/// What an outgoing shuffle stream needs to reach its peer: the cluster's
/// secret and how to dial.
#[derive(Clone, Debug, Default)]
pub struct PeerLink {
    pub secret: ClusterSecret,
    pub dialer: Dialer,
}

#[derive(Clone)]
struct Registration {
    generation: u64,
    /// The window task's channel for each input.
    inputs: Arc<[mpsc::Sender<Envelope>]>,
    metrics: Arc<JobMetrics>,
}

impl ShuffleRegistry {
    pub fn new(secret: ClusterSecret) -> Self {
        ShuffleRegistry {
            secret,
            ..Default::default()
        }
    }

    /// The same registry, dialing peers with `dialer`.
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }

    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// How outgoing streams reach their peers.
    pub fn peer_link(&self) -> PeerLink {
        PeerLink {
            secret: self.secret.clone(),
            dialer: self.dialer.clone(),
        }
    }

    /// Makes `generation`'s window task the target of incoming streams;
    /// `inputs` are its channels, by input index.
    pub fn register(
        &self,
        generation: u64,
        inputs: Arc<[mpsc::Sender<Envelope>]>,
        metrics: Arc<JobMetrics>,
    ) {
        if let Ok(mut current) = self.current.lock() {
            *current = Some(Registration {
                generation,
                inputs,
                metrics,
            });
        }
        self.changed.notify_waiters();
    }

    /// Forgets `generation` (if it is still the current one).
    pub fn unregister(&self, generation: u64) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|r| r.generation == generation) {
                *current = None;
            }
        }
        self.changed.notify_waiters();
    }

    /// The metrics of the current deployment, if any (for `/metrics`).
    pub fn current_metrics(&self) -> Option<(u64, Arc<JobMetrics>)> {
        let current = self.current.lock().ok()?;
        current.as_ref().map(|r| (r.generation, r.metrics.clone()))
    }

    fn lookup(&self, generation: u64) -> Lookup {
        match self.current.lock() {
            Ok(current) => match current.as_ref() {
                Some(r) if r.generation == generation => Lookup::Found(r.clone()),
                Some(r) if r.generation > generation => Lookup::Superseded(r.generation),
                _ => Lookup::NotYet,
            },
            Err(_) => Lookup::NotYet,
        }
    }

    /// Waits (a while) until `generation` is deployed here.
    async fn wait_for(&self, generation: u64) -> Result<Registration, Status> {
        let deadline = tokio::time::Instant::now() + DEPLOY_PATIENCE;
        loop {
            let notified = self.changed.notified();
            match self.lookup(generation) {
                Lookup::Found(r) => return Ok(r),
                Lookup::Superseded(current) => {
                    return Err(Status::failed_precondition(format!(
                    "generation {generation} was superseded by generation {current} on this worker"
                )))
                }
                Lookup::NotYet => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Status::unavailable(format!(
                    "generation {generation} is not deployed on this worker"
                )));
            }
        }
    }
}

enum Lookup {
    Found(Registration),
    Superseded(u64),
    NotYet,
}

/// The receiving end of the shuffle (the gRPC service).
pub struct ShuffleService {
    registry: Arc<ShuffleRegistry>,
}

type ExchangeResult = Result<Response<pb::ShuffleSummary>, Status>;

impl ShuffleService {
    pub fn new(registry: Arc<ShuffleRegistry>) -> Self {
        ShuffleService { registry }
    }

    async fn forward(
        &self,
        frame: Frame,
        to: &Registration,
        window: &mpsc::Sender<Envelope>,
    ) -> Result<(), Status> {
        for envelope in frame.envelopes {
            if envelope.input() != frame.input {
                return Err(Status::invalid_argument(format!(
                    "an envelope of input {} on the stream of input {}",
                    envelope.input(),
                    frame.input
                )));
            }
            let readings = match &envelope {
                Envelope::Records(b) => b.len() as u64,
                Envelope::Partials(b) => b.readings(),
                _ => 0,
            };
            if readings > 0 {
                to.metrics.shuffle_received.fetch_add(readings, Relaxed);
            }
            window.send(envelope).await.map_err(|_| {
                Status::aborted(format!("generation {} ended on this worker", to.generation))
            })?;
        }
        Ok(())
    }

    /// Serves one stream: forwards its frames' envelopes to the window
    /// task of its generation and input.
    pub async fn exchange(&self, request: Request<Streaming<Frame>>) -> ExchangeResult {
        let mut stream = request.into_inner();
        let Some(mut first) = stream.message().await? else {
            return Ok(Response::new(pb::ShuffleSummary { frames: 0 }));
        };
        let (generation, input) = (first.generation, first.input);
        let sender = std::mem::take(&mut first.sender);
        let target = self.registry.wait_for(generation).await?;
        let Some(window) = target.inputs.get(input as usize).cloned() else {
            return Err(Status::invalid_argument(format!(
                "generation {generation} has no input {input}"
            )));
        };
        tracing::debug!(%sender, generation, input, "shuffle stream opened");
        self.forward(first, &target, &window).await?;
        let mut frames = 1;
        while let Some(frame) = stream.message().await? {
            if frame.generation != generation || frame.input != input {
                return Err(Status::invalid_argument(
                    "a shuffle stream must not change generation or input",
                ));
            }
            self.forward(frame, &target, &window).await?;
            frames += 1;
        }
        Ok(Response::new(pb::ShuffleSummary { frames }))
    }
}

/// Streams one partition's envelopes for one peer until its source is done
/// (the channel closes) or the deployment is aborted.
pub async fn run_shuffle_out(
    peer: String,
    generation: u64,
    sender: String,
    input: u32,
    mut rx: mpsc::Receiver<Envelope>,
    abort: CancellationToken,
    link: PeerLink,
) -> Result<(), ShuffleError> {
    let mut client = tokio::select! {
        _ = abort.cancelled() => return Ok(()),
        c = connect(&peer, &link) => c?,
    };
    let (frames_tx, frames_rx) = mpsc::channel::<Frame>(FRAMES_QUEUED);
    let call = tokio::spawn(async move { client.exchange(ReceiverStream::new(frames_rx)).await });
    let mut pending = Vec::new();
    let mut first = true;
    loop {
        let got = tokio::select! {
            biased;
            _ = abort.cancelled() => {
                call.abort();
                return Ok(());
            }
            n = rx.recv_many(&mut pending, 64) => n,
        };
        if got == 0 {
            break;
        }
        // Frames of at most one record batch (or batch of accumulators), in
        // order.
        let mut frame = new_frame(generation, input, &sender, &mut first);
        for envelope in pending.drain(..) {
            if let Envelope::DeadLetters { .. } = envelope {
                call.abort();
                return Err(ShuffleError::Local(peer.clone()));
            }
            let ends = matches!(envelope, Envelope::Records(_) | Envelope::Partials(_));
            frame.envelopes.push(envelope);
            if ends {
                let full = std::mem::replace(
                    &mut frame,
                    new_frame(generation, input, &sender, &mut first),
                );
                if frames_tx.send(full).await.is_err() {
                    return Err(finish(call, &peer)
                        .await
                        .err()
                        .unwrap_or_else(|| closed(&peer)));
                }
            }
        }
        if !frame.envelopes.is_empty() && frames_tx.send(frame).await.is_err() {
            return Err(finish(call, &peer)
                .await
                .err()
                .unwrap_or_else(|| closed(&peer)));
        }
    }
    drop(frames_tx);
    finish(call, &peer).await
}

fn closed(peer: &str) -> ShuffleError {
    ShuffleError::Stream {
        peer: peer.to_owned(),
        status: Status::unavailable("the stream closed early"),
    }
}

fn new_frame(generation: u64, input: u32, sender: &str, first: &mut bool) -> Frame {
    let sender = if std::mem::take(first) {
        sender.to_owned()
    } else {
        String::new()
    };
    Frame {
        generation,
        sender,
        envelopes: Vec::new(),
        input,
    }
}

type Call = tokio::task::JoinHandle<Result<Response<pb::ShuffleSummary>, Status>>;

async fn finish(call: Call, peer: &str) -> Result<(), ShuffleError> {
    match call.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(ShuffleError::Stream {
            peer: peer.to_owned(),
            status,
        }),
        Err(e) => Err(ShuffleError::Stream {
            peer: peer.to_owned(),
            status: Status::internal(e.to_string()),
        }),
    }
}

async fn connect(peer: &str, link: &PeerLink) -> Result<ShuffleClient, ShuffleError> {
    let err = |message: String| ShuffleError::Connect {
        peer: peer.to_owned(),
        message,
    };
    let endpoint = link
        .dialer
        .endpoint(peer)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        // Fewer, larger DATA frames for the peer's responses (see the
        // server's setting for the frames it receives).
        .max_frame_size(Some(MAX_FRAME_SIZE));
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut delay = Duration::from_millis(100);
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(ShuffleClient::new(
                    link.secret.channel(channel),
                    MAX_MESSAGE_BYTES,
                ))
            }
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::debug!(%peer, error = %e, "shuffle peer not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(err(error_chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registry_waits_for_a_generation_and_refuses_old_ones() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (tx, _rx) = mpsc::channel(1);
        let waiter = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.wait_for(2).await.map(|r| r.generation) })
        };
        tokio::task::yield_now().await;
        registry.register(2, Arc::new([tx.clone()]), Arc::new(JobMetrics::default()));
        assert_eq!(waiter.await.expect("join").expect("found"), 2);
        let old = registry.wait_for(1).await.err().expect("superseded");
        assert_eq!(old.code(), tonic::Code::FailedPrecondition);
        registry.unregister(2);
        assert!(registry.current_metrics().is_none());
    }

    /// A worker's shuffle server for `registry` on a local port.
    async fn serve(registry: Arc<ShuffleRegistry>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let listener = weir_proto::tls::listen(listener, None).expect("listen");
        let address = listener.local_addr().to_string();
        let server = tonic::transport::Server::builder()
            .add_service(
                ShuffleServer::new(ShuffleService::new(registry))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(listener);
        let server = tokio::spawn(async move { server.await.expect("serves") });
        (address, server)
    }

    /// Batches of `n` records of `input`, and every control envelope.
    fn stream(input: u32, batches: usize, n: usize) -> Vec<Envelope> {
        use weir_common::position::Position;
        use weir_common::reading::{Reading, ShortStr};
        let mut envelopes = Vec::new();
        for b in 0..batches {
            let mut batch = crate::envelope::RecordBatch::with_capacity(input, n);
            for i in 0..n {
                let k = (b * n + i) as i64;
                batch.push(
                    Reading {
                        sensor_id: k as i32,
                        timestamp_ms: 1_700_000_000_000 + k,
                        customer_id: Some(ShortStr::new(&format!("customer_{}", k % 97))),
                        ..Reading::default()
                    },
                    Position::Offset(k as u64),
                );
            }
            envelopes.push(Envelope::Records(batch));
            envelopes.push(Envelope::Watermark {
                input,
                watermark: b as i64,
            });
        }
        envelopes.extend([
            Envelope::Idle { input },
            Envelope::Barrier {
                input,
                checkpoint: 3,
                through: Some(Position::Offset(7)),
                watermark: -1,
            },
            Envelope::End {
                input,
                through: Some(Position::Pulsar {
                    ledger: 1,
                    entry: 2,
                    batch: -1,
                }),
            },
            Envelope::Closed { input },
        ]);
        envelopes
    }

    #[tokio::test]
    async fn envelopes_cross_a_stream_in_order() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (other, _other) = mpsc::channel(1);
        let (window, mut received) = mpsc::channel(1024);
        let metrics = Arc::new(JobMetrics::default());
        registry.register(5, Arc::new([other, window]), metrics.clone());
        let (address, server) = serve(registry.clone()).await;

        let sent = stream(1, 12, 1000);
        let (tx, rx) = mpsc::channel(sent.len());
        for envelope in sent.clone() {
            tx.send(envelope).await.expect("queued");
        }
        drop(tx);
        run_shuffle_out(
            address,
            5,
            "w-0".into(),
            1,
            rx,
            CancellationToken::new(),
            registry.peer_link(),
        )
        .await
        .expect("streamed");
        let mut got = Vec::new();
        while got.len() < sent.len() {
            got.push(received.recv().await.expect("an envelope"));
        }
        assert_eq!(got, sent);
        assert_eq!(metrics.shuffle_received.load(Relaxed), 12_000);
        server.abort();
    }

    #[tokio::test]
    async fn the_generated_client_speaks_the_same_protocol() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (window, mut received) = mpsc::channel(1024);
        registry.register(2, Arc::new([window]), Arc::new(JobMetrics::default()));
        let (address, server) = serve(registry.clone()).await;
        let mut client = pb::shuffle_client::ShuffleClient::connect(format!("http://{address}"))
            .await
            .expect("connects");

        let sent = stream(0, 2, 10);
        let frames: Vec<_> = sent
            .chunks(3)
            .map(|chunk| pb::ShuffleFrame {
                generation: 2,
                sender: "w-9".into(),
                envelopes: chunk.iter().filter_map(to_proto).collect(),
                input: 0,
            })
            .collect();
        let summary = client
            .exchange(futures::stream::iter(frames))
            .await
            .expect("accepted")
            .into_inner();
        assert_eq!(summary.frames, sent.len().div_ceil(3) as u64);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            got.push(received.recv().await.expect("an envelope"));
        }
        assert_eq!(got, sent);

        // A frame of another format is refused, naming the cause.
        let mut bad = to_proto(&sent[0]).expect("records");
        if let Some(pb::envelope::Body::Records(b)) = &mut bad.body {
            b.format = 99;
        }
        let frame = pb::ShuffleFrame {
            generation: 2,
            envelopes: vec![bad],
            ..Default::default()
        };
        let status = client
            .exchange(futures::stream::iter([frame]))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("format 99"), "{status:?}");
        server.abort();
    }

    #[tokio::test]
    async fn dead_letters_stay_local() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (window, _received) = mpsc::channel(16);
        registry.register(1, Arc::new([window]), Arc::new(JobMetrics::default()));
        let (address, server) = serve(registry.clone()).await;
        let (tx, rx) = mpsc::channel(1);
        tx.send(Envelope::DeadLetters {
            input: 0,
            letters: Vec::new(),
        })
        .await
        .expect("queued");
        drop(tx);
        let result = run_shuffle_out(
            address,
            1,
            "w-0".into(),
            0,
            rx,
            CancellationToken::new(),
            registry.peer_link(),
        )
        .await;
        assert!(matches!(result, Err(ShuffleError::Local(_))), "{result:?}");
        server.abort();
    }
}
