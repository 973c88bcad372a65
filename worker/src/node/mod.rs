//! A worker process: its server and its link to the coordinator.
//!
//! [`WorkerNode::start`] binds one port that serves the shuffle (gRPC) and
//! `/healthz`, `/readyz`, `/metrics` (HTTP/1.1), then dials the coordinator
//! and keeps one control stream open: register, heartbeat with metrics,
//! run the deployment the coordinator sends (replacing the previous one),
//! report how it ends. If the stream breaks, the worker aborts what it runs
//! — the coordinator will have given its work to others — and dials again;
//! if it was a raft group's leader's, it keeps the deployment running,
//! writing nothing, for the next leader to adopt (`control.rs`).
//!
//! A worker asked to stop ([`WorkerNode::leave`], on SIGTERM) says so and
//! goes on with its part of the running generation until the coordinator
//! has checkpointed its state and runs the job without it (`Release`); it
//! does not dial again after that.

mod carried;
mod control;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use weir_common::tasks::TaskGroup;
use weir_proto::auth::ClusterSecret;
use weir_proto::cluster as pb;
use weir_proto::tls::Dialer;

use crate::metrics::JobMetrics;
use crate::shuffle::{
    ShuffleRegistry, ShuffleServer, ShuffleService, MAX_FRAME_SIZE, MAX_MESSAGE_BYTES,
};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Stable identity (the pod name on Kubernetes).
    pub id: String,
    /// The coordinator's gRPC address (`host:port` or `http://host:port`),
    /// or a raft group's coordinators' addresses, comma-separated.
    pub coordinator: String,
    /// Where to listen for peers and HTTP.
    pub listen: SocketAddr,
    /// Address peers use to reach this worker (default: the bound address).
    pub advertise: Option<String>,
    /// Overrides the spec's `state.dir` on this worker.
    pub data_dir: Option<PathBuf>,
    /// Put this worker's files in subdirectories named after it (cluster
    /// workers share volumes; `weir local` does not need it).
    pub own_subdirectories: bool,
    /// The cluster's shared secret: presented to the coordinator and the
    /// peers, required of the peers.
    pub secret: ClusterSecret,
    /// TLS on the worker's port (shuffle and HTTP), and how it dials the
    /// coordinator and its peers.
    pub tls: weir_proto::tls::Tls,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("coordinator address `{0}` is not valid")]
    CoordinatorAddress(String),
}

/// What a running worker shares with its HTTP endpoints.
#[derive(Default)]
struct Shared {
    connected: std::sync::atomic::AtomicBool,
    /// The lease from the coordinator, renewed by the control loop and
    /// checked by every deployment's sink.
    lease: Arc<crate::lease::Lease>,
    /// Cancelled when the worker is asked to leave.
    leaving: CancellationToken,
    /// Cancelled when a leaving worker has nothing more to do: the
    /// coordinator released it, or the control stream is gone.
    left: CancellationToken,
    /// Whether the coordinator released it (its state is in a checkpoint).
    released: std::sync::atomic::AtomicBool,
    /// The latest raft term of a coordinator it registered with.
    term: std::sync::atomic::AtomicU64,
}

/// A running worker.
pub struct WorkerNode {
    pub local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// The node's tasks: its server and its control loop.
    tasks: TaskGroup,
}

impl WorkerNode {
    /// Starts serving and connecting to the coordinator, as a child of
    /// `parent`: the node stops with it, or on its own when one of its tasks
    /// fails ([`WorkerNode::stopped`]).
    pub async fn start(config: WorkerConfig, parent: &TaskGroup) -> Result<Self, WorkerError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| WorkerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| WorkerError::Listen {
                addr: config.listen,
                source,
            })?;
        let coordinators = config
            .coordinator
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| normalize_address(a, &config.tls.dial))
            .collect::<Result<Vec<_>, _>>()?;
        if coordinators.is_empty() {
            return Err(WorkerError::CoordinatorAddress(config.coordinator.clone()));
        }
        let registry = Arc::new(
            ShuffleRegistry::new(config.secret.clone()).with_dialer(config.tls.dial.clone()),
        );
        // TLS (when configured) for the shuffle and HTTP alike.
        let listener =
            weir_proto::tls::listen(listener, config.tls.server.as_ref()).map_err(|source| {
                WorkerError::Listen {
                    addr: config.listen,
                    source,
                }
            })?;
        let shared = Arc::new(Shared::default());
        let tasks = parent.child();
        let shutdown = tasks.token().clone();

        let http = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state((registry.clone(), shared.clone(), config.id.clone()));
        let routes = tonic::service::Routes::from(http).add_service(InterceptedService::new(
            ShuffleServer::new(ShuffleService::new(registry.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            config.secret.require(),
        ));
        {
            let shutdown = shutdown.clone();
            tasks.spawn_critical("the worker's server", async move {
                tonic::transport::Server::builder()
                    .accept_http1(true)
                    .tcp_nodelay(true)
                    .initial_stream_window_size(Some(4 << 20))
                    .initial_connection_window_size(Some(8 << 20))
                    .max_frame_size(Some(MAX_FRAME_SIZE))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(listener, shutdown.cancelled())
                    .await
            });
        }
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let control = control::control_loop(
            config,
            coordinators,
            advertise,
            registry,
            shared.clone(),
            shutdown,
        );
        tasks.spawn_critical("the control loop", control);
        Ok(WorkerNode {
            local_addr,
            shared,
            tasks,
        })
    }

    /// Leaves the cluster cleanly: tells the coordinator, keeps running its
    /// part of the job until the coordinator has taken a checkpoint and
    /// deployed a generation without it, then stops dialing. Returns whether
    /// the coordinator released it within `patience` (false: not connected,
    /// or too slow — its work then moves on as for a lost worker).
    pub async fn leave(&self, patience: Duration) -> bool {
        self.shared.leaving.cancel();
        if !self.shared.connected.load(Relaxed) {
            return false;
        }
        tokio::select! {
            _ = self.shared.left.cancelled() => {}
            _ = tokio::time::sleep(patience) => {
                tracing::warn!(?patience, "the coordinator did not release this worker in time; leaving anyway");
            }
            _ = self.tasks.stopped() => {}
        }
        self.shared.released.load(Relaxed)
    }

    /// Resolves when the node stops: `Some(reason)` when one of its tasks
    /// failed.
    pub async fn stopped(&self) -> Option<String> {
        self.tasks.stopped().await
    }

    /// Aborts the running deployment and stops serving.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

/// A coordinator's address as a URL: `https://` for a bare `host:port`
/// when the worker dials TLS.
fn normalize_address(addr: &str, dialer: &Dialer) -> Result<String, WorkerError> {
    dialer
        .endpoint(addr)
        .map(|_| dialer.url(addr))
        .map_err(|_| WorkerError::CoordinatorAddress(addr.to_owned()))
}

async fn readyz(State((registry, shared, _)): State<HttpState>) -> impl IntoResponse {
    if !shared.connected.load(Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the coordinator\n".to_string(),
        );
    }
    match registry.current_metrics() {
        Some((generation, _)) => (StatusCode::OK, format!("running generation {generation}\n")),
        None => (StatusCode::OK, "connected, idle\n".to_string()),
    }
}

type HttpState = (Arc<ShuffleRegistry>, Arc<Shared>, String);

/// `/metrics`: one registry, one exposition (see [`crate::prometheus`]).
async fn metrics(State((registry, shared, id)): State<HttpState>) -> impl IntoResponse {
    let mut metrics = crate::prometheus::registry(&id);
    crate::prometheus::register_node(&mut metrics, shared.connected.load(Relaxed));
    if let Some((generation, m)) = registry.current_metrics() {
        crate::prometheus::register_deployment(&mut metrics, generation, &m);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::prometheus::CONTENT_TYPE,
        )],
        crate::prometheus::encode(&metrics),
    )
}

/// The heartbeat form of a deployment's metrics.
pub fn metrics_of(generation: u64, m: &JobMetrics) -> pb::WorkerMetrics {
    let s = m.snapshot();
    pb::WorkerMetrics {
        generation,
        records_in: s.records_in,
        bad_records: s.bad_records,
        late_records: s.late_records,
        windows_closed: s.windows_closed,
        rows_written: s.rows_written,
        sink_retries: s.sink_retries,
        sink_lookups: s.sink_lookups,
        dead_letters: s.dead_letters,
        watermark: s.watermark,
        partitions: m
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.local.load(Relaxed))
            .map(|(input, p)| pb::PartitionProgress {
                input: input as u32,
                name: String::new(),
                records: p.records.load(Relaxed),
                watermark: p.watermark.load(Relaxed),
                finished: p.finished.load(Relaxed),
            })
            .collect(),
        shuffle_records_sent: s.shuffle_sent,
        shuffle_records_received: s.shuffle_received,
        shuffle_accumulators_sent: s.shuffle_accumulators_sent,
        open_accumulators: s.open_accumulators,
        resident_bytes: resident_bytes(),
        open_windows: s.open_windows,
        state_spills: s.state_spills,
        phase: m.phase() as u32,
        remote_by_key_group: m
            .remote_by_key_group
            .iter()
            .map(|c| c.load(Relaxed))
            .collect(),
        restored_checkpoint: m.restored_checkpoint.load(Relaxed),
        restored_key_groups: u32::try_from(m.restored_key_groups.load(Relaxed)).unwrap_or(u32::MAX),
        restored_bytes: m.restored_bytes.load(Relaxed),
        source_wait_ms: m.source_wait_micros.load(Relaxed) / 1000,
        sources: u32::try_from(m.local_sources()).unwrap_or(u32::MAX),
        recent_dead_letters: m
            .recent_dead_letters()
            .into_iter()
            .map(|l| pb::DeadLetterNote {
                at_ms: l.at_ms,
                source: l.source,
                position: l.position,
                records: l.records,
                kind: l.kind,
                error: l.error,
                payload_len: l.payload_len,
            })
            .collect(),
    }
}

/// This process's resident set size (Linux), for memory monitoring.
pub fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
