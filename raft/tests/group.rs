//! Three coordinators' rafts over real gRPC on loopback: a leader is
//! elected, a write reaches every state machine, and when the leader stops
//! the other two elect a new one that has every committed write and takes
//! new ones.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::Raft;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use weir_proto::auth::{ClusterSecret, Secret};
use weir_raft::group::{Group, GroupConfig};
use weir_raft::network::RaftService;
use weir_raft::{CheckpointPointer, Command, NodeId, StateMachine, TypeConfig};

/// The group's shared secret: every call between the nodes carries it.
fn secret() -> ClusterSecret {
    ClusterSecret::new(Some(Secret::new("raft-test-secret").expect("secret")))
}

struct Node {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    stop: CancellationToken,
    initialised: bool,
}

/// Starts coordinator `id` of `peers` on `listener`, its store in `dir`.
async fn node(
    id: NodeId,
    peers: &BTreeMap<NodeId, String>,
    dir: &std::path::Path,
    listener: TcpListener,
) -> Node {
    let config = GroupConfig {
        node_id: id,
        peers: peers.clone(),
        dir: dir.to_owned(),
        heartbeat: Duration::from_millis(100),
        election: Duration::from_millis(400),
        secret: secret(),
        dial: weir_proto::tls::Dialer::plain(),
    };
    // In one process a store is free again only once the stopped raft's
    // tasks have dropped it (a restarted coordinator is a new process).
    let mut attempts = 0;
    let group = loop {
        match Group::start(config.clone()).await {
            Ok(group) => break group,
            Err(e) if attempts < 100 && e.to_string().contains("lock") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("raft does not start: {e}"),
        }
    };
    let stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(RaftService::new(group.raft.clone(), &secret()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    Node {
        raft: group.raft,
        sm: group.state,
        stop,
        initialised: group.initialised,
    }
}

async fn stop(node: Node) {
    node.stop.cancel();
    node.raft.shutdown().await.expect("shut down");
}

/// Three listeners on free loopback ports, and the peer list naming them.
async fn bind_three() -> (Vec<TcpListener>, BTreeMap<NodeId, String>) {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 0..3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        peers.insert(id, l.local_addr().expect("address").to_string());
        listeners.push(l);
    }
    (listeners, peers)
}

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
    let (listeners, peers) = bind_three().await;
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
    let mut nodes = Vec::new();
    for (id, l) in listeners.into_iter().enumerate() {
        nodes.push(node(id as u64, &peers, dirs[id].path(), l).await);
    }
    let initialised: Vec<bool> = nodes.iter().map(|n| n.initialised).collect();
    assert_eq!(
        initialised,
        [true, false, false],
        "only the lowest id initialises"
    );
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
    stop(nodes.remove(leader as usize)).await;
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
    for n in nodes {
        stop(n).await;
    }
}

/// All three stop and start again on their stores: nobody initialises
/// again, a leader is elected, and the record is what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_restarted_resume_from_their_stores() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
    let (listeners, peers) = bind_three().await;
    let mut nodes = Vec::new();
    for (id, l) in listeners.into_iter().enumerate() {
        nodes.push(node(id as u64, &peers, dirs[id].path(), l).await);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all, None).await;
    for checkpoint in 1..=3 {
        nodes[leader as usize]
            .raft
            .client_write(completed(checkpoint))
            .await
            .expect("written");
    }
    everywhere(&all, 3).await;
    for n in nodes {
        stop(n).await;
    }

    // Again, on the same addresses (a StatefulSet's stable names).
    let mut listeners = Vec::new();
    for addr in peers.values() {
        let mut bound = None;
        for _ in 0..50 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        listeners.push(bound.expect("the address is free again"));
    }
    let mut nodes = Vec::new();
    for (id, l) in listeners.into_iter().enumerate() {
        nodes.push(node(id as u64, &peers, dirs[id].path(), l).await);
    }
    assert!(
        nodes.iter().all(|n| !n.initialised),
        "nobody initialises twice"
    );
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all, None).await;
    nodes[leader as usize]
        .raft
        .client_write(completed(4))
        .await
        .expect("the group takes writes again");
    everywhere(&all, 4).await;
    let record = nodes[0].sm.record();
    let ids: Vec<u64> = record.checkpoints.iter().map(|p| p.checkpoint).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    for n in nodes {
        stop(n).await;
    }
}

/// A process without the group's secret gets no say: its raft calls are
/// refused before they reach raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_is_refused() {
    let (mut listeners, peers) = bind_three().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = listeners.remove(0);
    let node0 = node(0, &peers, &dir.path().join("0"), listener).await;
    let address = format!("http://{}", peers[&0]);
    let channel = tonic::transport::Endpoint::from_shared(address)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let vote = weir_proto::raft::RaftMessage {
        json: b"{}".to_vec(),
    };
    let mut stranger = weir_proto::raft::raft_client::RaftClient::new(channel.clone());
    let refused = stranger
        .vote(vote.clone())
        .await
        .expect_err("a call without the secret is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let wrong = ClusterSecret::new(Some(Secret::new("not-the-secret").expect("secret")));
    let mut impostor =
        weir_proto::raft::raft_client::RaftClient::new(wrong.channel(channel.clone()));
    let refused = impostor.vote(vote.clone()).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // With the secret the call reaches raft, which refuses the message.
    let mut member = weir_proto::raft::raft_client::RaftClient::new(secret().channel(channel));
    let answer = member.vote(vote).await.expect_err("not a vote");
    assert_eq!(answer.code(), tonic::Code::InvalidArgument);
    stop(node0).await;
}
