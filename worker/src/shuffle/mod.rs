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
//! Readings travel in a fixed-width layout ([`wire`]), cheap at both ends.

pub mod wire;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use weir_common::avro::primitive::{write_long, Input};
use weir_common::error_chain::error_chain;
use weir_common::position::Position;
use weir_common::reading::Reading;
use weir_proto::auth::{ClusterSecret, SecretChannel};
use weir_proto::convert::position_of;
use weir_proto::shuffle as pb;
use weir_proto::shuffle::shuffle_client::ShuffleClient;
use weir_proto::tls::Dialer;

use crate::envelope::{Envelope, RecordBatch};
use crate::metrics::JobMetrics;

/// Largest frame a sender builds (bytes of readings), and the message size
/// both sides accept.
const FRAME_BYTES: usize = 1 << 20;
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

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

/// A batch that could not be decoded (a peer speaking another version).
#[derive(Debug, thiserror::Error)]
#[error("malformed shuffle frame: {0}")]
pub struct FrameError(String);

/// Encodes an envelope for the wire; `None` for dead letters, which stay
/// in the source's process (see [`Envelope::DeadLetters`]).
pub fn to_proto(envelope: &Envelope) -> Option<pb::Envelope> {
    use pb::envelope::Body;
    let body = match envelope {
        Envelope::Records(batch) => {
            let mut readings = Vec::with_capacity(batch.len() * (wire::FIXED_BYTES + 32));
            let mut positions = Vec::with_capacity(batch.len() * 4);
            for (r, p) in batch.readings.iter().zip(&batch.positions) {
                wire::write(r, &mut readings);
                match *p {
                    Position::Offset(n) => {
                        write_long(&mut positions, 0);
                        write_long(&mut positions, n as i64);
                    }
                    Position::Pulsar {
                        ledger,
                        entry,
                        batch,
                    } => {
                        write_long(&mut positions, 1);
                        write_long(&mut positions, ledger as i64);
                        write_long(&mut positions, entry as i64);
                        write_long(&mut positions, i64::from(batch));
                    }
                }
            }
            Body::Records(pb::RecordBatch {
                input: batch.input,
                count: batch.len() as u32,
                readings,
                positions,
                format: wire::FORMAT,
            })
        }
        Envelope::Watermark { input, watermark } => Body::Watermark(pb::Watermark {
            input: *input,
            watermark: *watermark,
        }),
        Envelope::Idle { input } => Body::Idle(pb::Mark {
            input: *input,
            through: None,
        }),
        Envelope::Closed { input } => Body::Closed(pb::Mark {
            input: *input,
            through: None,
        }),
        Envelope::End { input, through } => Body::End(pb::Mark {
            input: *input,
            through: through.map(Into::into),
        }),
        Envelope::Barrier {
            input,
            checkpoint,
            through,
            watermark,
        } => Body::Barrier(pb::Barrier {
            input: *input,
            checkpoint: *checkpoint,
            through: through.map(Into::into),
            watermark: *watermark,
        }),
        Envelope::DeadLetters { .. } => return None,
    };
    Some(pb::Envelope { body: Some(body) })
}

/// Decodes an envelope from the wire.
pub fn from_proto(envelope: pb::Envelope) -> Result<Envelope, FrameError> {
    use pb::envelope::Body;
    Ok(match envelope.body {
        Some(Body::Records(b)) => {
            if b.format != wire::FORMAT {
                return Err(FrameError(format!(
                    "record batch in format {}, this worker reads format {} (are all workers the same version?)",
                    b.format,
                    wire::FORMAT
                )));
            }
            let n = b.count as usize;
            let mut batch = RecordBatch::with_capacity(b.input, n);
            let mut readings = Input::new(&b.readings);
            let mut positions = Input::new(&b.positions);
            let bad = |what: &str| FrameError(format!("record batch of input {}: {what}", b.input));
            for _ in 0..n {
                // Decode straight into the batch.
                batch.readings.push(Reading::default());
                if let Some(r) = batch.readings.last_mut() {
                    wire::read(&mut readings, r).map_err(|e| bad(&format!("reading: {e:?}")))?;
                }
                let mut long = || {
                    positions
                        .read_long()
                        .map_err(|_| bad("positions end early"))
                };
                let position = match long()? {
                    0 => Position::Offset(long()? as u64),
                    1 => Position::Pulsar {
                        ledger: long()? as u64,
                        entry: long()? as u64,
                        batch: long()? as i32,
                    },
                    k => return Err(bad(&format!("unknown position kind {k}"))),
                };
                batch.positions.push(position);
            }
            if !readings.is_empty() || !positions.is_empty() {
                return Err(bad("bytes left after its records"));
            }
            Envelope::Records(batch)
        }
        Some(Body::Watermark(w)) => Envelope::Watermark {
            input: w.input,
            watermark: w.watermark,
        },
        Some(Body::Idle(m)) => Envelope::Idle { input: m.input },
        Some(Body::Closed(m)) => Envelope::Closed { input: m.input },
        Some(Body::End(m)) => Envelope::End {
            input: m.input,
            through: position_of(&m.through),
        },
        Some(Body::Barrier(b)) => Envelope::Barrier {
            input: b.input,
            checkpoint: b.checkpoint,
            through: position_of(&b.through),
            watermark: b.watermark,
        },
        None => return Err(FrameError("envelope without a body".into())),
    })
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

impl ShuffleService {
    pub fn new(registry: Arc<ShuffleRegistry>) -> Self {
        ShuffleService { registry }
    }

    async fn forward(
        &self,
        frame: pb::ShuffleFrame,
        to: &Registration,
        window: &mpsc::Sender<Envelope>,
    ) -> Result<(), Status> {
        for envelope in frame.envelopes {
            let envelope =
                from_proto(envelope).map_err(|e| Status::invalid_argument(e.to_string()))?;
            if envelope.input() != frame.input {
                return Err(Status::invalid_argument(format!(
                    "an envelope of input {} on the stream of input {}",
                    envelope.input(),
                    frame.input
                )));
            }
            if let Envelope::Records(b) = &envelope {
                to.metrics
                    .shuffle_received
                    .fetch_add(b.len() as u64, Relaxed);
            }
            window.send(envelope).await.map_err(|_| {
                Status::aborted(format!("generation {} ended on this worker", to.generation))
            })?;
        }
        Ok(())
    }
}

type ExchangeResult = Result<Response<pb::ShuffleSummary>, Status>;

#[tonic::async_trait]
impl pb::shuffle_server::Shuffle for ShuffleService {
    async fn exchange(&self, request: Request<Streaming<pb::ShuffleFrame>>) -> ExchangeResult {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Ok(Response::new(pb::ShuffleSummary { frames: 0 }));
        };
        let (generation, input) = (first.generation, first.input);
        let sender = first.sender.clone();
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
    let (frames_tx, frames_rx) = mpsc::channel::<pb::ShuffleFrame>(2);
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
        // Build frames of about FRAME_BYTES, in order.
        let mut frame = new_frame(generation, input, &sender, &mut first);
        let mut bytes = 0;
        for envelope in pending.drain(..) {
            let Some(encoded) = to_proto(&envelope) else {
                call.abort();
                return Err(ShuffleError::Local(peer.clone()));
            };
            if let Some(pb::envelope::Body::Records(b)) = &encoded.body {
                bytes += b.readings.len();
            }
            frame.envelopes.push(encoded);
            if bytes >= FRAME_BYTES {
                let full = std::mem::replace(
                    &mut frame,
                    new_frame(generation, input, &sender, &mut first),
                );
                bytes = 0;
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

fn new_frame(generation: u64, input: u32, sender: &str, first: &mut bool) -> pb::ShuffleFrame {
    let sender = if std::mem::take(first) {
        sender.to_owned()
    } else {
        String::new()
    };
    pb::ShuffleFrame {
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

async fn connect(
    peer: &str,
    link: &PeerLink,
) -> Result<ShuffleClient<SecretChannel>, ShuffleError> {
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
        .initial_connection_window_size(Some(8 << 20));
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut delay = Duration::from_millis(100);
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(ShuffleClient::new(link.secret.channel(channel))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES))
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

    #[test]
    fn envelopes_round_trip() {
        let mut batch = RecordBatch::with_capacity(3, 2);
        batch.push(
            Reading {
                sensor_id: 5,
                timestamp_ms: 1_700_000_000_000,
                temperature: 1.5,
                customer_id: Some(weir_common::reading::ShortStr::new("c")),
                ..Reading::default()
            },
            Position::Offset(42),
        );
        batch.push(
            Reading {
                sensor_id: -1,
                ..Reading::default()
            },
            Position::Pulsar {
                ledger: 7,
                entry: 9,
                batch: -1,
            },
        );
        for envelope in [
            Envelope::Records(batch),
            Envelope::Watermark {
                input: 2,
                watermark: -77,
            },
            Envelope::Watermark {
                input: 2,
                watermark: 5,
            },
            Envelope::Idle { input: 1 },
            Envelope::End {
                input: 0,
                through: Some(Position::Pulsar {
                    ledger: 1,
                    entry: 2,
                    batch: 3,
                }),
            },
            Envelope::Closed { input: 3 },
            Envelope::Barrier {
                input: 4,
                checkpoint: 17,
                through: Some(Position::Offset(99)),
                watermark: 1_700_000_000_000,
            },
        ] {
            let back = from_proto(to_proto(&envelope).expect("encodes")).expect("decodes");
            assert_eq!(back, envelope);
        }
    }

    #[test]
    fn malformed_batches_are_errors() {
        let mut batch = RecordBatch::with_capacity(0, 1);
        batch.push(Reading::default(), Position::Offset(1));
        let mut encoded = to_proto(&Envelope::Records(batch)).expect("encodes");
        if let Some(pb::envelope::Body::Records(b)) = &mut encoded.body {
            b.count = 2;
        }
        assert!(from_proto(encoded.clone()).is_err());
        if let Some(pb::envelope::Body::Records(b)) = &mut encoded.body {
            b.count = 1;
            b.format = 99;
        }
        let err = from_proto(encoded).unwrap_err().to_string();
        assert!(err.contains("format 99"), "{err}");
        assert!(from_proto(pb::Envelope { body: None }).is_err());
    }

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
}
