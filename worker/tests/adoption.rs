//! A worker that loses its raft group's leader keeps its deployment for
//! the next leader to adopt, against a scripted coordinator that plays
//! one leader after another: the deployment goes on (the same generation,
//! its records counting on) when the next leader keeps it, and is aborted
//! when the next leader does not.

use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::JobSpec;
use weir_common::tasks::TaskGroup;
use weir_proto::cluster as pb;
use weir_proto::cluster::cluster_server::{Cluster, ClusterServer};
use weir_worker::node::{WorkerConfig, WorkerNode};

type Commands = mpsc::Sender<Result<pb::CoordinatorCommand, Status>>;

/// One registration, handed to the test, which plays the coordinator.
struct Session {
    register: pb::Register,
    events: Streaming<pb::WorkerEvent>,
    commands: Commands,
}

struct Handoff(mpsc::UnboundedSender<Session>);

#[tonic::async_trait]
impl Cluster for Handoff {
    type ControlStream = ReceiverStream<Result<pb::CoordinatorCommand, Status>>;

    async fn control(
        &self,
        request: Request<Streaming<pb::WorkerEvent>>,
    ) -> Result<Response<Self::ControlStream>, Status> {
        let mut events = request.into_inner();
        let Some(pb::worker_event::Event::Register(register)) =
            events.message().await?.and_then(|m| m.event)
        else {
            return Err(Status::invalid_argument("the worker registers first"));
        };
        let (commands, rx) = mpsc::channel(16);
        let _ = self.0.send(Session {
            register,
            events,
            commands,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn send(commands: &Commands, command: pb::coordinator_command::Command) {
    commands
        .send(Ok(pb::CoordinatorCommand {
            command: Some(command),
        }))
        .await
        .expect("the worker's stream is open");
}

fn registered(term: u64, keep: u64) -> pb::coordinator_command::Command {
    pb::coordinator_command::Command::Registered(pb::Registered {
        heartbeat_interval_ms: 100,
        lease_ms: 4_000,
        term,
        keep,
    })
}

/// The default job (a realtime generator) on this worker alone, writing
/// under `dir`.
fn deploy(dir: &Path, worker: &str, address: String) -> pb::coordinator_command::Command {
    let mut spec = JobSpec::default();
    spec.resolve_paths(dir);
    spec.checkpoint.store = Some(dir.join("checkpoints").display().to_string());
    let partitions = spec
        .partition_names()
        .expect("generator partitions")
        .expect("named by the spec");
    let max = spec.state.max_parallelism;
    let range = KeyGroupRange::for_operator(max, 1, 0);
    pb::coordinator_command::Command::Deploy(pb::Deploy {
        generation: 1,
        spec_yaml: serde_yaml::to_string(&spec).expect("spec"),
        assignment: Some(pb::Assignment {
            max_parallelism: u32::from(max),
            workers: vec![pb::WorkerSlot {
                worker_id: worker.into(),
                data_address: address,
                key_group_start: u32::from(range.start),
                key_group_end: u32::from(range.end),
            }],
            partition_owner: vec![0; partitions.len()],
            partition_names: partitions,
            ..Default::default()
        }),
    })
}

/// Reads events until a heartbeat whose metrics pass `want` (returns them;
/// `None` metrics are passed as such), answering each with a keepalive as
/// a coordinator does.
async fn heartbeat_where(
    session: &mut Session,
    what: &str,
    want: impl Fn(Option<&pb::WorkerMetrics>) -> bool,
) -> Option<pb::WorkerMetrics> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, session.events.message())
            .await
            .unwrap_or_else(|_| panic!("no heartbeat where {what} within 30 s"))
            .expect("the stream works")
            .expect("the stream is open");
        if let Some(pb::worker_event::Event::Heartbeat(h)) = message.event {
            let keepalive = pb::coordinator_command::Command::Keepalive(pb::Keepalive {});
            send(&session.commands, keepalive).await;
            if want(h.metrics.as_ref()) {
                return h.metrics;
            }
        }
    }
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    tokio::time::timeout(Duration::from_secs(20), sessions.recv())
        .await
        .expect("the worker registered again in time")
        .expect("the coordinator runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_adopts_what_a_worker_kept_running_or_has_it_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = TaskGroup::root();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let coordinator = listener.local_addr().expect("addr");
    let (handoff, mut sessions) = mpsc::unbounded_channel();
    {
        let shutdown = group.token().clone();
        group.spawn_critical("a scripted coordinator", async move {
            tonic::transport::Server::builder()
                .add_service(ClusterServer::new(Handoff(handoff)))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    shutdown.cancelled(),
                )
                .await
        });
    }
    let node = WorkerNode::start(
        WorkerConfig {
            id: "w-0".into(),
            coordinator: coordinator.to_string(),
            listen: "127.0.0.1:0".parse().expect("address"),
            advertise: None,
            data_dir: Some(dir.path().join("data")),
            own_subdirectories: true,
            secret: Default::default(),
            tls: Default::default(),
        },
        &group,
    )
    .await
    .expect("the worker starts");

    // The leader of term 1 deploys generation 1 and asks for checkpoint 5.
    let mut first = next_session(&mut sessions).await;
    assert_eq!(first.register.generation, 0, "nothing runs yet");
    send(&first.commands, registered(1, 0)).await;
    let address = node.local_addr.to_string();
    send(&first.commands, deploy(dir.path(), "w-0", address)).await;
    heartbeat_where(&mut first, "records are read", |m| {
        m.is_some_and(|m| m.generation == 1 && m.records_in > 0)
    })
    .await;
    send(
        &first.commands,
        pb::coordinator_command::Command::TriggerCheckpoint(pb::TriggerCheckpoint {
            generation: 1,
            checkpoint: 5,
            stop_sources: false,
        }),
    )
    .await;
    heartbeat_where(&mut first, "a heartbeat follows", |_| true).await;
    // The leader is gone.
    drop(first);

    // The next leader (term 2) hears of generation 1 and checkpoint 5, and
    // keeps it: no deployment is sent, yet it runs on.
    let mut second = next_session(&mut sessions).await;
    assert_eq!(second.register.generation, 1, "kept for a new leader");
    assert_eq!(second.register.last_checkpoint, 5);
    send(&second.commands, registered(2, 1)).await;
    send(
        &second.commands,
        pb::coordinator_command::Command::Adopted(pb::Adopted { generation: 1 }),
    )
    .await;
    let before = heartbeat_where(&mut second, "generation 1 runs", |m| {
        m.is_some_and(|m| m.generation == 1)
    })
    .await
    .map_or(0, |m| m.records_in);
    heartbeat_where(&mut second, "it reads on", |m| {
        m.is_some_and(|m| m.generation == 1 && m.records_in > before)
    })
    .await;
    drop(second);

    // A leader that does not keep it (term 3): the worker aborts it.
    let mut third = next_session(&mut sessions).await;
    assert_eq!(third.register.generation, 1);
    send(&third.commands, registered(3, 0)).await;
    heartbeat_where(&mut third, "nothing runs", |m| m.is_none()).await;
    drop(third);

    // Nothing is kept for the next one.
    let fourth = next_session(&mut sessions).await;
    assert_eq!(fourth.register.generation, 0);
    drop(fourth);
    node.shutdown().await;
    group.shutdown().await;
}
