//! Where the admin API and the workers' control streams are served from:
//! this coordinator's actor, or — on a follower of the raft group — the
//! leader.
//!
//! A coordinator runs its actor only while it leads ([`crate::leadership`]);
//! its servers keep answering whatever its role. Admin requests on a
//! follower are proxied to the leader over gRPC (REST clients and `weir
//! ctl` see one API on every coordinator); a worker's registration on a
//! follower is refused with the leader's address (`weir-leader` in the
//! status's metadata), and the worker dials the leader. A proxied request
//! carries `weir-proxied`, and is never proxied again: two coordinators
//! that each believe the other leads (for a moment, during an election)
//! answer "try again" instead of passing the request back and forth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;
use weir_proto::admin as api;
use weir_proto::admin::admin_client::AdminClient;
use weir_proto::tls::Dialer;

use crate::actor::{AdminError, CoordinatorHandle};
use crate::metrics::CoordinatorMetrics;
use crate::raft_link::RaftLink;

pub use weir_proto::cluster::LEADER_KEY;
/// The metadata key that marks a request proxied by a follower.
pub const PROXIED_KEY: &str = "weir-proxied";

/// Where requests go now.
#[derive(Clone)]
pub enum Route {
    /// This coordinator leads (or is the only one): its actor.
    Local(CoordinatorHandle),
    /// Another coordinator leads, at this gRPC address.
    Leader { id: u64, address: String },
    /// No leader is known (an election is under way, or this coordinator
    /// leads but has not confirmed it with a majority yet).
    NoLeader,
}

/// The servers' handle: the local actor or the leader, as the route says.
#[derive(Clone)]
pub struct Gateway {
    route: watch::Receiver<Route>,
    /// Whether requests may be proxied to the leader (not when they were
    /// proxied here).
    proxy: bool,
    /// The leader's channel, by address (connected lazily, kept while the
    /// leader stays).
    channel: Arc<Mutex<Option<(String, Channel)>>>,
    /// The raft group, when there is one.
    raft: Option<RaftLink>,
    /// What a proxied request carries: the mark, and the admin token (the
    /// follower authorized the caller; the leader checks again).
    proxy_headers: ProxyHeaders,
    /// How to dial the leader (TLS or plain).
    dialer: Dialer,
    /// What this coordinator observes over its life (for `/metrics`).
    metrics: CoordinatorMetrics,
}

/// Marks a request as proxied, and carries the admin token.
#[derive(Clone, Debug)]
struct ProxyHeaders {
    bearer: Option<tonic::metadata::AsciiMetadataValue>,
}

impl tonic::service::Interceptor for ProxyHeaders {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert(
            PROXIED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        if let Some(bearer) = &self.bearer {
            metadata.insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// The leader's admin service, as a follower calls it.
type LeaderClient = AdminClient<InterceptedService<Channel, ProxyHeaders>>;

impl Gateway {
    pub fn new(route: watch::Receiver<Route>, raft: Option<RaftLink>) -> Self {
        Gateway {
            route,
            proxy: true,
            channel: Arc::new(Mutex::new(None)),
            raft,
            proxy_headers: ProxyHeaders { bearer: None },
            dialer: Dialer::plain(),
            metrics: CoordinatorMetrics::default(),
        }
    }

    /// The same gateway, showing `metrics` (those the actor observes).
    pub fn with_metrics(mut self, metrics: CoordinatorMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// What this coordinator observes over its life.
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.metrics
    }

    /// The same gateway, dialing the leader with `dialer`.
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }

    /// The same gateway, sending `auth`'s token with the requests it
    /// proxies to the leader.
    pub fn with_auth(mut self, auth: &crate::auth::AdminAuth) -> Self {
        self.proxy_headers.bearer = auth.bearer();
        self
    }

    /// A gateway that always answers from the local actor.
    pub fn local(handle: CoordinatorHandle) -> Self {
        let (_, route) = watch::channel(Route::Local(handle));
        Gateway::new(route, None)
    }

    /// The raft group as this coordinator sees it (none alone).
    pub fn raft_status(&self) -> Option<api::RaftStatus> {
        self.raft.as_ref().map(RaftLink::status)
    }

    /// Resolves when the route changes (or can no longer change).
    pub async fn route_changed(&mut self) -> bool {
        self.route.changed().await.is_ok()
    }

    /// The same gateway, for a request a follower proxied here.
    pub fn unproxied(&self) -> Self {
        Gateway {
            proxy: false,
            ..self.clone()
        }
    }

    pub fn route(&self) -> Route {
        self.route.borrow().clone()
    }

    /// The local actor, when this coordinator leads.
    pub fn local_handle(&self) -> Option<CoordinatorHandle> {
        match &*self.route.borrow() {
            Route::Local(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// Why a worker (or a proxied request) is turned away: a status naming
    /// the leader, if one is known.
    pub fn not_leader(&self) -> Status {
        match self.route() {
            Route::Leader { id, address } => {
                let mut status = Status::unavailable(format!(
                    "this coordinator does not lead the group; coordinator {id} at {address} does"
                ));
                if let Ok(value) = address.parse() {
                    status.metadata_mut().insert(LEADER_KEY, value);
                }
                status
            }
            _ => Status::unavailable(
                "no coordinator leads the group at the moment (an election is under way); try again",
            ),
        }
    }

    fn client(&self, address: &str) -> Result<LeaderClient, AdminError> {
        let headers = self.proxy_headers.clone();
        let mut cached = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, channel)) = cached.as_ref() {
            if a == address {
                return Ok(AdminClient::with_interceptor(channel.clone(), headers));
            }
        }
        let channel = self
            .dialer
            .endpoint(address)
            .map_err(|e| AdminError::TryAgain(format!("the leader's address: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_lazy();
        *cached = Some((address.to_owned(), channel.clone()));
        Ok(AdminClient::with_interceptor(channel, headers))
    }

    /// Runs `local` on this coordinator's actor, or `remote` on the
    /// leader's admin service.
    async fn dispatch<T, L, LF, R, F>(&self, local: L, remote: R) -> Result<T, AdminError>
    where
        L: FnOnce(CoordinatorHandle) -> LF,
        LF: std::future::Future<Output = Result<T, AdminError>>,
        R: FnOnce(LeaderClient) -> F,
        F: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match self.route() {
            Route::Local(h) => local(h).await,
            Route::Leader { id, address } if self.proxy => {
                let client = self.client(&address)?;
                remote(client)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| from_status(id, &address, s))
            }
            Route::Leader { .. } | Route::NoLeader => {
                Err(AdminError::TryAgain(self.not_leader().message().to_owned()))
            }
        }
    }

    pub async fn cluster(&self) -> Result<api::ClusterStatus, AdminError> {
        self.dispatch(
            |h| async move { h.cluster().await },
            |mut c| async move { c.get_cluster(api::GetClusterRequest {}).await },
        )
        .await
    }

    pub async fn job(&self) -> Result<api::JobStatus, AdminError> {
        self.dispatch(
            |h| async move { h.job().await },
            |mut c| async move { c.get_job(api::GetJobRequest {}).await },
        )
        .await
    }

    pub async fn stop_with_checkpoint(&self) -> Result<api::JobStatus, AdminError> {
        self.stop_request(api::StopJobRequest {
            after_checkpoint: true,
            ..Default::default()
        })
        .await
    }

    /// A stop as the request asks: after a savepoint, after a final
    /// checkpoint, or at once.
    pub async fn stop_request(
        &self,
        request: api::StopJobRequest,
    ) -> Result<api::JobStatus, AdminError> {
        let r = request;
        self.dispatch(
            |h| async move {
                if r.savepoint {
                    h.stop_with_savepoint().await
                } else if r.after_checkpoint {
                    h.stop_with_checkpoint().await
                } else {
                    h.stop().await
                }
            },
            |mut c| async move { c.stop_job(request).await },
        )
        .await
    }

    pub async fn resume(&self, from: Option<String>) -> Result<api::JobStatus, AdminError> {
        let request = api::ResumeJobRequest {
            from: from.clone().unwrap_or_default(),
        };
        self.dispatch(
            |h| async move { h.resume(from).await },
            |mut c| async move { c.resume_job(request).await },
        )
        .await
    }

    pub async fn rescale(&self, workers: u32) -> Result<api::JobStatus, AdminError> {
        self.dispatch(
            |h| async move { h.rescale(workers).await },
            |mut c| async move { c.rescale(api::RescaleRequest { workers }).await },
        )
        .await
    }

    pub async fn checkpoints(&self) -> Result<api::CheckpointList, AdminError> {
        self.dispatch(
            |h| async move { h.checkpoints().await },
            |mut c| async move { c.list_checkpoints(api::ListCheckpointsRequest {}).await },
        )
        .await
    }

    pub async fn trigger_checkpoint(
        &self,
        savepoint: bool,
    ) -> Result<api::CheckpointList, AdminError> {
        self.dispatch(
            |h| async move { h.trigger_checkpoint(savepoint).await },
            |mut c| async move {
                c.trigger_checkpoint(api::TriggerCheckpointRequest { savepoint })
                    .await
            },
        )
        .await
    }

    pub async fn set_checkpoint_interval(
        &self,
        interval: Duration,
    ) -> Result<api::CheckpointList, AdminError> {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.dispatch(
            |h| async move { h.set_checkpoint_interval(interval).await },
            |mut c| async move {
                c.set_checkpoint_interval(api::SetCheckpointIntervalRequest { interval_ms })
                    .await
            },
        )
        .await
    }
}

/// The leader's answer as the local actor would have given it.
fn from_status(id: u64, address: &str, status: Status) -> AdminError {
    use tonic::Code;
    let message = status.message().to_owned();
    match status.code() {
        Code::FailedPrecondition => AdminError::Conflict(message),
        Code::InvalidArgument => AdminError::Invalid(message),
        _ => AdminError::TryAgain(format!(
            "the leader (coordinator {id} at {address}) did not answer: {message}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(route: Route) -> (watch::Sender<Route>, Gateway) {
        let (tx, rx) = watch::channel(route);
        (tx, Gateway::new(rx, None))
    }

    #[test]
    fn a_follower_names_the_leader_in_its_refusal() {
        let (_tx, g) = gateway(Route::Leader {
            id: 2,
            address: "127.0.0.1:7070".into(),
        });
        let status = g.not_leader();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(LEADER_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("127.0.0.1:7070")
        );
        let (_tx, g) = gateway(Route::NoLeader);
        let status = g.not_leader();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.metadata().get(LEADER_KEY).is_none());
        assert!(g.local_handle().is_none());
    }

    #[tokio::test]
    async fn a_proxied_request_is_not_proxied_again() {
        // Two coordinators that each believe the other leads (for a moment,
        // in an election) answer "try again" instead of passing the request
        // back and forth.
        let (_tx, g) = gateway(Route::Leader {
            id: 1,
            address: "127.0.0.1:1".into(),
        });
        match g.unproxied().job().await {
            Err(AdminError::TryAgain(m)) => assert!(m.contains("coordinator 1"), "{m}"),
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
        let (_tx, g) = gateway(Route::NoLeader);
        assert!(matches!(g.cluster().await, Err(AdminError::TryAgain(_))));
    }

    #[tokio::test]
    async fn the_route_follows_the_leadership() {
        let (tx, g) = gateway(Route::NoLeader);
        let mut watching = g.clone();
        tx.send_replace(Route::Leader {
            id: 0,
            address: "127.0.0.1:2".into(),
        });
        assert!(watching.route_changed().await);
        assert!(matches!(watching.route(), Route::Leader { id: 0, .. }));
        assert!(matches!(g.route(), Route::Leader { id: 0, .. }));
    }
}
