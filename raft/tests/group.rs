//! Three coordinators' rafts over real gRPC on loopback: a leader is
//! elected, a write reaches every state machine, and when the leader stops
//! the other two elect a new one that has every committed write and takes
//! new ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use weir_raft::network::{Network, RaftService};
use weir_raft::{open, CheckpointPointer, Command, NodeId, StateMachine, TypeConfig};

struct Node {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    stop: CancellationToken,
    _dir: TempDir,
}

async fn node(id: NodeId, listener: TcpListener) -> Node {
    let dir = TempDir::new().expect("a temporary directory");
    let (log, sm) = open(dir.path()).expect("open the store");
    let config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Default::default()
    }
    .validate()
    .expect("a valid config");
    let raft = Raft::new(id, Arc::new(config), Network, log, sm.clone())
        .await
        .expect("raft starts");
    let stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(RaftService::new(raft.clone()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    Node {
        raft,
        sm,
        stop,
        _dir: dir,
    }
}

/// The leader every node in `nodes` names (other than `gone`, whom they
/// name until they notice it is gone).
async fn leader_among(nodes: &[&Node], gone: Option<NodeId>) -> NodeId {
    for _ in 0..100 {
        let leaders: Vec<Option<NodeId>> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        if let Some(Some(l)) = leaders.first() {
            if Some(*l) != gone && leaders.iter().all(|x| *x == Some(*l)) {
                return *l;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader agreed on");
}

async fn everywhere(nodes: &[&Node], checkpoints: usize) {
    for _ in 0..100 {
        if nodes
            .iter()
            .all(|n| n.sm.record().checkpoints.len() == checkpoints)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not every state machine applied {checkpoints} checkpoints");
}

fn completed(checkpoint: u64) -> Command {
    Command::CheckpointCompleted(CheckpointPointer {
        checkpoint,
        generation: 1,
        metadata: format!("chk-{checkpoint}/_metadata"),
        savepoint: false,
        completed_ms: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_elect_replicate_and_survive_the_leader() {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 0..3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("address").to_string();
        members.insert(id, BasicNode::new(addr));
        listeners.push(l);
    }
    let mut nodes = Vec::new();
    for (id, l) in listeners.into_iter().enumerate() {
        nodes.push(node(id as u64, l).await);
    }
    nodes[0]
        .raft
        .initialize(members)
        .await
        .expect("initialised");
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all, None).await;
    // A follower refuses writes and names the leader.
    let follower = (leader + 1) % 3;
    match nodes[follower as usize]
        .raft
        .client_write(completed(1))
        .await
    {
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(f),
        )) => assert_eq!(f.leader_id, Some(leader)),
        other => panic!("a follower forwards to the leader, not {other:?}"),
    }
    nodes[leader as usize]
        .raft
        .client_write(completed(1))
        .await
        .expect("the leader writes");
    everywhere(&all, 1).await;

    // The leader stops (its server too): the others elect one of them.
    let gone = nodes.remove(leader as usize);
    gone.stop.cancel();
    gone.raft.shutdown().await.expect("shut down");
    let rest: Vec<&Node> = nodes.iter().collect();
    let new_leader = leader_among(&rest, Some(leader)).await;
    assert_ne!(new_leader, leader);
    let at = nodes
        .iter()
        .position(|n| n.raft.metrics().borrow().id == new_leader)
        .expect("the new leader is one of them");
    nodes[at]
        .raft
        .client_write(completed(2))
        .await
        .expect("the new leader writes with two of three");
    let rest: Vec<&Node> = nodes.iter().collect();
    everywhere(&rest, 2).await;
    for n in &nodes {
        n.stop.cancel();
        n.raft.shutdown().await.expect("shut down");
    }
}
