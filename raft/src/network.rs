//! Raft between coordinators over gRPC (`weir.raft.Raft`, on each
//! coordinator's gRPC port).
//!
//! [`Network`] gives openraft a [`Peer`] per member, which connects lazily
//! and again after a failure; [`RaftService`] serves a coordinator's raft to
//! its peers. A peer that cannot be reached is `Unreachable` to openraft
//! (it backs off), a refusal by the peer's raft comes back as openraft's
//! remote error.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use weir_proto::auth::Require;
use weir_proto::auth::{ClusterSecret, SecretChannel};
use weir_proto::raft::raft_client::RaftClient;
use weir_proto::raft::raft_server;
use weir_proto::raft::RaftMessage;
use weir_proto::tls::Dialer;

use crate::{NodeId, TypeConfig};

/// How long a peer may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens connections to the other coordinators.
///
/// At the addresses this coordinator was given (`--peers`), not those in
/// the group's membership (the first coordinator's list, when it
/// initialised the group): each may reach the others its own way (a
/// different DNS name, a proxy), and a list corrected on restart takes
/// effect at once. A member missing from the list is dialled at its
/// membership address.
#[derive(Clone, Default)]
pub struct Network {
    peers: std::sync::Arc<std::collections::BTreeMap<NodeId, String>>,
    /// Sent with every call (the peers refuse calls without it).
    secret: ClusterSecret,
    /// TLS or plain.
    dial: Dialer,
}

impl Network {
    pub fn new(
        peers: std::collections::BTreeMap<NodeId, String>,
        secret: ClusterSecret,
        dial: Dialer,
    ) -> Self {
        Network {
            peers: std::sync::Arc::new(peers),
            secret,
            dial,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: self
                .peers
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            secret: self.secret.clone(),
            dial: self.dial.clone(),
            client: None,
        }
    }
}

/// One other coordinator.
pub struct Peer {
    target: NodeId,
    addr: String,
    secret: ClusterSecret,
    dial: Dialer,
    client: Option<RaftClient<SecretChannel>>,
}

/// Why a call to a peer failed, before openraft's error types.
enum CallError<E> {
    /// Not reached (connecting, or the connection broke).
    Unreachable(String),
    /// Reached, but the exchange failed (a bad answer, a gRPC error).
    Network(String),
    /// The peer's raft refused.
    Remote(E),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl<E: std::error::Error> CallError<E> {
    fn into_rpc<NE: std::error::Error>(
        self,
        target: NodeId,
        node: &BasicNode,
        remote: impl FnOnce(E) -> NE,
    ) -> RPCError<NodeId, BasicNode, NE> {
        match self {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&Failure(m))),
            CallError::Network(m) => RPCError::Network(NetworkError::new(&Failure(m))),
            CallError::Remote(e) => {
                RPCError::RemoteError(RemoteError::new_with_node(target, node.clone(), remote(e)))
            }
        }
    }
}

impl Peer {
    fn client(&mut self) -> Result<&mut RaftClient<SecretChannel>, String> {
        if self.client.is_none() {
            let endpoint = self
                .dial
                .endpoint(&self.addr)
                .map_err(|e| format!("peer address: {e}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            self.client = Some(RaftClient::new(
                self.secret.channel(endpoint.connect_lazy()),
            ));
        }
        self.client.as_mut().ok_or_else(|| "no client".to_string())
    }

    /// One call: `request` as JSON, the peer's `Result<Resp, E>` back.
    async fn call<Req, Resp, E>(
        &mut self,
        request: &Req,
        timeout: Duration,
        method: Method,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let json = serde_json::to_vec(request).map_err(|e| CallError::Network(e.to_string()))?;
        let client = self.client().map_err(CallError::Unreachable)?;
        let mut request = tonic::Request::new(RaftMessage { json });
        request.set_timeout(timeout);
        let answer = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        let answer = match answer {
            Ok(a) => a.into_inner(),
            Err(status) => {
                let message = format!("{} ({})", status.message(), self.addr);
                return Err(match status.code() {
                    // Not reached, or no answer in time (tonic reports a
                    // broken connection as `Unknown`, its own timeout as
                    // `Cancelled`): openraft backs off instead of retrying
                    // at once (and logging each failure).
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled => {
                        // Connect again next time.
                        self.client = None;
                        CallError::Unreachable(message)
                    }
                    _ => CallError::Network(message),
                });
            }
        };
        let result: Result<Resp, E> = serde_json::from_slice(&answer.json)
            .map_err(|e| CallError::Network(format!("a bad answer from {}: {e}", self.addr)))?;
        result.map_err(CallError::Remote)
    }

    fn node(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

type RaftRpcError<E = openraft::error::Infallible> =
    RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftRpcError> {
        let node = self.node();
        self.call::<_, _, RaftError<NodeId>>(&rpc, option.hard_ttl(), Method::AppendEntries)
            .await
            .map_err(|e| e.into_rpc(self.target, &node, |e| e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftRpcError<InstallSnapshotError>> {
        let node = self.node();
        self.call::<_, _, RaftError<NodeId, InstallSnapshotError>>(
            &rpc,
            option.hard_ttl(),
            Method::InstallSnapshot,
        )
        .await
        .map_err(|e| e.into_rpc(self.target, &node, |e| e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RaftRpcError> {
        let node = self.node();
        self.call::<_, _, RaftError<NodeId>>(&rpc, option.hard_ttl(), Method::Vote)
            .await
            .map_err(|e| e.into_rpc(self.target, &node, |e| e))
    }
}

/// Serves a coordinator's raft to its peers.
pub struct RaftService {
    raft: openraft::Raft<TypeConfig>,
}

/// The raft server, refusing calls without the cluster's secret.
pub type RaftServer = InterceptedService<raft_server::RaftServer<RaftService>, Require>;

impl RaftService {
    pub fn new(raft: openraft::Raft<TypeConfig>, secret: &ClusterSecret) -> RaftServer {
        InterceptedService::new(
            raft_server::RaftServer::new(RaftService { raft }),
            secret.require(),
        )
    }
}

fn decode<T: DeserializeOwned>(m: RaftMessage) -> Result<T, tonic::Status> {
    serde_json::from_slice(&m.json)
        .map_err(|e| tonic::Status::invalid_argument(format!("not a raft message: {e}")))
}

fn encode<T: Serialize>(t: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    serde_json::to_vec(t)
        .map(|json| tonic::Response::new(RaftMessage { json }))
        .map_err(|e| tonic::Status::internal(format!("cannot encode the answer: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = decode(request.into_inner())?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
