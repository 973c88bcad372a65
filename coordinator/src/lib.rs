//! The coordinator: membership, scheduling, and the admin API.
//!
//! ```text
//!  weir worker ──Control stream──►  ControlService ─┐
//!  weir worker ──Control stream──►  ControlService ─┼─► Actor (membership, job lifecycle, generations)
//!  weir ctl / REST ─► rest::router ─────────────────┤
//!  gRPC Admin ──────► AdminService ─────────────────┘
//! ```
//!
//! With three coordinators (`config.raft`), the actor runs on the raft
//! group's leader only ([`leadership`]); the servers run on every one and
//! reach the actor through a [`gateway`]: locally on the leader, proxied
//! (admin) or redirected (workers) on a follower. The leader records the
//! job's control state in raft ([`raft_link`], `recorder`).
//!
//! - [`actor`]: the one task that owns the state; everything else is a
//!   handle to it.
//! - [`scheduler`]: partitions and key-group ranges over the live workers.
//! - [`checkpoints`]: the checkpoint coordinator's state machine;
//!   [`restore`]: which completed checkpoint a job restores;
//!   [`discovery`]: a Pulsar topic's partitions; [`kubernetes`]: the
//!   workers' StatefulSet (its replicas are the workers the job wants).
//! - [`control`]: the workers' control streams; [`admin`]: the admin API
//!   over gRPC, [`rest`] over REST (with its OpenAPI document); [`auth`]:
//!   its token; [`dashboard`]: the web page at `/`; [`prometheus`]:
//!   `/metrics`, with the histograms [`metrics`] keeps.

pub mod actor;
pub mod admin;
pub mod auth;
pub mod backpressure;
pub mod checkpoints;
pub mod control;
pub mod dashboard;
pub mod discovery;
pub mod gateway;
pub mod kubernetes;
mod leadership;
pub mod metrics;
pub mod prometheus;
pub mod raft_link;
mod recorder;
pub mod rest;
pub mod restore;
pub mod scheduler;
#[cfg(test)]
mod testing;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use weir_common::tasks::TaskGroup;
use weir_proto::admin::admin_server::AdminServer;
use weir_proto::cluster::cluster_server::ClusterServer;

pub use actor::{AdminError, CoordinatorConfig, CoordinatorHandle};
pub use gateway::{Gateway, Route};

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pulsar(#[from] weir_common::pulsar::PulsarError),
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    #[error("the coordinators' raft group: {0}")]
    Raft(String),
}

/// A running coordinator.
pub struct Coordinator {
    /// Where workers and gRPC admin clients connect (and, in a group, the
    /// other coordinators' raft).
    pub grpc_addr: SocketAddr,
    /// Where the REST API and `/metrics` are served, if anywhere.
    pub http_addr: Option<SocketAddr>,
    gateway: Gateway,
    /// The coordinator's tasks: servers, raft, and the job's parts while
    /// it runs the job.
    tasks: TaskGroup,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), CoordinatorError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    Ok((listener, local))
}

/// Opens the job's checkpoint store (`checkpoint.store`, by default
/// `checkpoints` under the state directory; the spec the workers get names
/// it) and finds the newest checkpoint there, so that numbering goes on.
pub(crate) async fn open_checkpoints(
    spec: &mut weir_common::spec::JobSpec,
) -> Result<actor::CheckpointSetup, CoordinatorError> {
    use weir_common::checkpoint::{CheckpointStore, StoreLocation};
    let location = match &spec.checkpoint.store {
        Some(s) => StoreLocation::parse(s)
            .map_err(|e| CoordinatorError::Checkpoint(format!("checkpoint.store: {e}")))?,
        None => {
            let dir = spec.state.dir.join("checkpoints");
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            spec.checkpoint.store = Some(dir.display().to_string());
            StoreLocation::Dir(dir)
        }
    };
    let store = CheckpointStore::open(&location, &spec.name, &spec.checkpoint.store_options())
        .await
        .map_err(|e| CoordinatorError::Checkpoint(e.to_string()))?;
    let state = restore::read_store(
        &store,
        &actor::state_hash(spec),
        spec.checkpoint.restore_from,
    )
    .await
    .map_err(|e| CoordinatorError::Checkpoint(e.to_string()))?;
    let state = if spec.source.start_from == weir_common::spec::StartFrom::Checkpoint {
        state
    } else {
        tracing::info!(
            store = %store.describe(),
            start_from = ?spec.source.start_from,
            ignored = state.restore.as_ref().map(|r| r.id),
            "not restoring the job's checkpoints: the inputs start as --start-from says"
        );
        restore::StoreState {
            restore: None,
            earlier: Vec::new(),
            ..state
        }
    };
    match &state.restore {
        Some(r) => {
            tracing::info!(store = %store.describe(), checkpoint = r.id, "restoring the job from its latest completed checkpoint");
            // The realtime generator replays the stream it checkpointed.
            if let (Some(g), Some(start)) = (
                spec.source.generator.as_mut(),
                r.metadata.generator_start_ms,
            ) {
                g.start_ms = Some(start);
            }
        }
        None => {
            tracing::info!(store = %store.describe(), "no checkpoint to restore; starting from the beginning of the inputs")
        }
    }
    let mut restorable: Vec<_> = state.earlier.into_iter().rev().collect();
    restorable.extend(state.restore);
    Ok(actor::CheckpointSetup {
        store,
        last: state.last,
        restorable,
    })
}

impl Coordinator {
    /// Binds `grpc` (workers, gRPC admin, raft) and `http` (REST, metrics)
    /// and starts serving, as a child of `parent`: the coordinator stops
    /// with it, or on its own when one of its tasks fails
    /// ([`Coordinator::stopped`]). Alone it runs the job at once; in a
    /// raft group (`config.raft`) while it leads.
    pub async fn start(
        mut config: CoordinatorConfig,
        grpc: SocketAddr,
        http: Option<SocketAddr>,
        parent: &TaskGroup,
    ) -> Result<Self, CoordinatorError> {
        let (grpc_listener, grpc_addr) = bind(grpc).await?;
        let http_bound = match http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        config.address = grpc_addr.to_string();
        let (auth, secret) = (config.admin_auth.clone(), config.cluster_secret.clone());
        let tls = config.tls.clone();
        let metrics = config.metrics.clone();
        if let Some(group) = config.raft.as_mut() {
            group.secret = secret.clone();
            group.dial = tls.dial.clone();
        }
        // TLS (when configured) on both ports, with the same certificate.
        let listen = |listener: TcpListener, addr: SocketAddr| {
            weir_proto::tls::listen(listener, tls.server.as_ref())
                .map_err(|source| CoordinatorError::Listen { addr, source })
        };
        let grpc_listener = listen(grpc_listener, grpc_addr)?;
        let http_bound = match http_bound {
            Some((listener, addr)) => Some((listen(listener, addr)?, addr)),
            None => None,
        };
        let tasks = parent.child();
        let shutdown = tasks.token().clone();
        let (gateway, raft_service) = match config.raft.clone() {
            None => {
                let leading = leadership::lead(config, None, &tasks).await?;
                let gateway = Gateway::local(leading.handle.clone());
                tasks.spawn_critical("the job", async move {
                    match leading.tasks.stopped().await {
                        Some(reason) => Err(reason),
                        None => Ok(()),
                    }
                });
                (gateway, None)
            }
            Some(group) => {
                let checks = leadership::Checks {
                    every: group.election / 2,
                    patience: group.election,
                };
                let (node_id, peers) = (group.node_id, group.peers.clone());
                let started = weir_raft::group::Group::start(group)
                    .await
                    .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
                let raft = started.raft.clone();
                let link = raft_link::RaftLink::new(started.raft, started.state, node_id, peers);
                let (route, routes) = tokio::sync::watch::channel(Route::NoLeader);
                let gateway = Gateway::new(routes, Some(link.clone()));
                let follow =
                    leadership::follow_the_group(config, link, route, tasks.clone(), checks);
                tasks.spawn_critical("raft leadership", follow);
                {
                    let (raft, shutdown) = (raft.clone(), shutdown.clone());
                    // Lets go of the store when the coordinator stops.
                    tasks.spawn_critical("raft shutdown", async move {
                        shutdown.cancelled().await;
                        raft.shutdown().await.map_err(|e| e.to_string())
                    });
                }
                (
                    gateway,
                    Some(weir_raft::network::RaftService::new(raft, &secret)),
                )
            }
        };
        let gateway = gateway
            .with_auth(&auth)
            .with_dialer(tls.dial.clone())
            .with_metrics(metrics);
        {
            let (gateway, shutdown, auth) = (gateway.clone(), shutdown.clone(), auth.clone());
            tasks.spawn_critical("the coordinator's gRPC server", async move {
                tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(ClusterServer::with_interceptor(
                        control::ControlService::new(gateway.clone()),
                        secret.require(),
                    ))
                    .add_service(AdminServer::new(admin::AdminService::new(gateway, auth)))
                    .add_optional_service(raft_service)
                    .serve_with_incoming_shutdown(grpc_listener, shutdown.cancelled())
                    .await
            });
        }
        let http_addr = match http_bound {
            Some((listener, addr)) => {
                let router = rest::router(gateway.clone(), auth);
                let shutdown = shutdown.clone();
                tasks.spawn_critical("the coordinator's HTTP server", async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                });
                Some(addr)
            }
            None => None,
        };
        tracing::info!(grpc = %grpc_addr, http = ?http_addr, tls = tls.server.is_some(), "coordinator listening");
        Ok(Coordinator {
            grpc_addr,
            http_addr,
            gateway,
            tasks,
        })
    }

    /// The admin API of this coordinator (which answers from the leader
    /// when it does not lead).
    pub fn handle(&self) -> Gateway {
        self.gateway.clone()
    }

    /// Resolves when the coordinator stops: `Some(reason)` when one of its
    /// tasks failed.
    pub async fn stopped(&self) -> Option<String> {
        self.tasks.stopped().await
    }

    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}
