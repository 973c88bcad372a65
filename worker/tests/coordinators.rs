//! A worker among several coordinators (a raft group), against scripted
//! coordinators: it follows a follower's redirect to the leader, and it
//! refuses a coordinator of an older raft term than one it followed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use weir_common::tasks::TaskGroup;
use weir_proto::cluster as pb;
use weir_proto::cluster::cluster_server::{Cluster, ClusterServer};
use weir_worker::node::{WorkerConfig, WorkerNode};

/// What a scripted coordinator does with a registration.
#[derive(Clone)]
enum Answer {
    /// Refuse it, naming the leader (as a follower does).
    Redirect(String),
    /// Accept it as the leader of this raft term.
    Lead { term: u64 },
}

/// How a session with the worker went, as the scripted coordinator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Redirected,
    /// Accepted with this term; `heartbeats` arrived before the worker
    /// closed its stream (or the session was ended by the script).
    Session {
        term: u64,
        heartbeats: usize,
    },
}

struct Scripted {
    answers: Mutex<Vec<Answer>>,
    seen: mpsc::UnboundedSender<Seen>,
}

#[tonic::async_trait]
impl Cluster for Scripted {
    type ControlStream = ReceiverStream<Result<pb::CoordinatorCommand, Status>>;

    async fn control(
        &self,
        request: Request<Streaming<pb::WorkerEvent>>,
    ) -> Result<Response<Self::ControlStream>, Status> {
        let mut events = request.into_inner();
        let first = events.message().await?.and_then(|m| m.event);
        assert!(
            matches!(first, Some(pb::worker_event::Event::Register(_))),
            "the worker registers first"
        );
        let answer = {
            let mut answers = self.answers.lock().await;
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        };
        let term = match answer {
            Answer::Redirect(leader) => {
                let _ = self.seen.send(Seen::Redirected);
                let mut status = Status::unavailable("not the leader");
                status.metadata_mut().insert(
                    pb::LEADER_KEY,
                    leader.parse().expect("an address is valid metadata"),
                );
                return Err(status);
            }
            Answer::Lead { term } => term,
        };
        let (tx, rx) = mpsc::channel(8);
        let registered = pb::CoordinatorCommand {
            command: Some(pb::coordinator_command::Command::Registered(
                pb::Registered {
                    heartbeat_interval_ms: 50,
                    lease_ms: 0,
                    term,
                    keep: 0,
                },
            )),
        };
        tx.send(Ok(registered)).await.expect("send");
        let seen = self.seen.clone();
        tokio::spawn(async move {
            // A session lasts until the worker closes it, or for 3
            // heartbeats (then the script moves on).
            let mut heartbeats = 0;
            while let Ok(Ok(Some(m))) =
                tokio::time::timeout(Duration::from_secs(5), events.message()).await
            {
                if matches!(m.event, Some(pb::worker_event::Event::Heartbeat(_))) {
                    heartbeats += 1;
                    if heartbeats == 3 {
                        break;
                    }
                }
            }
            drop(tx);
            let _ = seen.send(Seen::Session { term, heartbeats });
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn scripted(
    answers: Vec<Answer>,
    group: &TaskGroup,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, rx) = mpsc::unbounded_channel();
    let service = Scripted {
        answers: Mutex::new(answers),
        seen,
    };
    let shutdown = group.token().clone();
    group.spawn_critical("a scripted coordinator", async move {
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
            .await
    });
    (addr, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the worker came by in time")
        .expect("the coordinator runs")
}

async fn worker(coordinators: String, group: &TaskGroup) -> WorkerNode {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    WorkerNode::start(
        WorkerConfig {
            id: "w-0".into(),
            coordinator: coordinators,
            listen: "127.0.0.1:0".parse().expect("address"),
            advertise: None,
            data_dir: Some(dir),
            own_subdirectories: true,
            secret: Default::default(),
            tls: Default::default(),
        },
        group,
    )
    .await
    .expect("the worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sends_the_worker_to_the_leader() {
    let group = TaskGroup::root();
    let (leader, mut at_leader) = scripted(vec![Answer::Lead { term: 2 }], &group).await;
    let (follower, mut at_follower) =
        scripted(vec![Answer::Redirect(leader.to_string())], &group).await;
    // Only the follower is given: the worker finds the leader through it.
    let node = worker(follower.to_string(), &group).await;
    assert_eq!(next(&mut at_follower).await, Seen::Redirected);
    assert_eq!(
        next(&mut at_leader).await,
        Seen::Session {
            term: 2,
            heartbeats: 3
        }
    );
    node.shutdown().await;
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_coordinator_of_an_older_term() {
    let group = TaskGroup::root();
    // Term 5, then a deposed leader of term 3 (refused: no heartbeat),
    // then term 5 again (accepted).
    let (c, mut seen) = scripted(
        vec![
            Answer::Lead { term: 5 },
            Answer::Lead { term: 3 },
            Answer::Lead { term: 5 },
        ],
        &group,
    )
    .await;
    let node = worker(c.to_string(), &group).await;
    assert_eq!(
        next(&mut seen).await,
        Seen::Session {
            term: 5,
            heartbeats: 3
        }
    );
    // Refused as soon as it registers (a heartbeat may have left first:
    // the worker's first tick is immediate).
    match next(&mut seen).await {
        Seen::Session {
            term: 3,
            heartbeats,
        } => assert!(
            heartbeats <= 1,
            "the worker went on with a coordinator of an older term ({heartbeats} heartbeats)"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        next(&mut seen).await,
        Seen::Session {
            term: 5,
            heartbeats: 3
        }
    );
    node.shutdown().await;
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_never_answers_is_left_for_the_next() {
    let group = TaskGroup::root();
    // Accepts connections and says nothing, as a frozen coordinator, or
    // one behind a cut link, does.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let (leader, mut at_leader) = scripted(vec![Answer::Lead { term: 1 }], &group).await;
    let node = worker(format!("{silent_addr},{leader}"), &group).await;
    assert_eq!(
        next(&mut at_leader).await,
        Seen::Session {
            term: 1,
            heartbeats: 3
        }
    );
    node.shutdown().await;
    group.shutdown().await;
}
