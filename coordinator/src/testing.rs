//! Test helpers: a real coordinator actor driven by fake workers, which
//! send what `weir worker` sends over its control stream and see what the
//! coordinator answers.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use weir_common::checkpoint::CheckpointStore;
use weir_common::spec::JobSpec;
use weir_proto::cluster as pb;
use weir_proto::cluster::coordinator_command::Command;
use weir_proto::cluster::worker_event::Event;

use crate::actor::{self, CheckpointSetup, CoordinatorConfig, CoordinatorHandle, Msg};

/// A coordinator actor over a checkpoint store in a temporary directory.
pub(crate) struct TestCoordinator {
    pub handle: CoordinatorHandle,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestCoordinator {
    /// `adjust` changes the configuration (quick settle and long heartbeat
    /// timeout already set).
    pub fn start(adjust: impl FnOnce(&mut CoordinatorConfig)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = CoordinatorConfig::new(JobSpec::default(), vec!["generator-0".into()]);
        config.settle = Duration::from_millis(50);
        config.heartbeat_timeout = Duration::from_secs(600);
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let setup = CheckpointSetup {
            store: CheckpointStore::local(dir.path(), "job"),
            last: 0,
            restorable: Vec::new(),
        };
        let (handle, _task) = actor::spawn(config, setup, shutdown.clone(), None, None);
        TestCoordinator {
            handle,
            shutdown,
            _dir: dir,
        }
    }

    pub async fn job(&self) -> weir_proto::admin::JobStatus {
        self.handle.job().await.expect("the actor answers")
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One fake worker's control stream.
pub(crate) struct FakeWorker {
    pub id: String,
    conn: u64,
    handle: CoordinatorHandle,
    inbox: mpsc::Receiver<Result<pb::CoordinatorCommand, Status>>,
}

impl FakeWorker {
    /// Registers `id` (its `conn` must be new).
    pub async fn connect(c: &TestCoordinator, id: &str, conn: u64) -> Self {
        let (tx, inbox) = mpsc::channel(256);
        let register = pb::Register {
            worker_id: id.into(),
            data_address: format!("127.0.0.1:{}", 20_000 + conn),
            version: "test".into(),
            ..Default::default()
        };
        assert!(
            c.handle
                .send(Msg::Connected {
                    register,
                    conn,
                    commands: tx,
                })
                .await
        );
        let mut w = FakeWorker {
            id: id.into(),
            conn,
            handle: c.handle.clone(),
            inbox,
        };
        w.expect(|c| matches!(c, Command::Registered(_)).then_some(()))
            .await;
        w
    }

    pub async fn send(&self, event: Event) {
        assert!(
            self.handle
                .send(Msg::Event {
                    id: self.id.clone(),
                    conn: self.conn,
                    event: Box::new(event),
                })
                .await
        );
    }

    /// The next command `pick` takes, skipping others (within 10 s).
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(Command) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, self.inbox.recv()).await;
            match next {
                Ok(Some(Ok(pb::CoordinatorCommand {
                    command: Some(command),
                }))) => {
                    if let Some(t) = pick(command) {
                        return t;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("{}: the coordinator closed the stream", self.id),
                Err(_) => panic!("{}: not sent the command expected", self.id),
            }
        }
    }

    /// Waits for a deployment, and reports it running.
    pub async fn deployed(&mut self) -> pb::Deploy {
        let deploy = self
            .expect(|c| match c {
                Command::Deploy(d) => Some(d),
                _ => None,
            })
            .await;
        self.send(Event::Report(pb::DeploymentReport {
            generation: deploy.generation,
            state: pb::DeploymentState::Running as i32,
            ..Default::default()
        }))
        .await;
        deploy
    }

    /// Waits for a checkpoint's trigger and acknowledges it.
    pub async fn checkpoint(&mut self) -> pb::TriggerCheckpoint {
        let trigger = self
            .expect(|c| match c {
                Command::TriggerCheckpoint(t) => Some(t),
                _ => None,
            })
            .await;
        self.send(Event::CheckpointAck(pb::CheckpointAck {
            generation: trigger.generation,
            checkpoint: trigger.checkpoint,
            ..Default::default()
        }))
        .await;
        trigger
    }

    /// Whether the coordinator sent nothing but keepalives for `wait`.
    pub async fn quiet(&mut self, wait: Duration) -> Option<Command> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(Ok(pb::CoordinatorCommand {
                    command: Some(Command::Keepalive(_)),
                }))) => {}
                Ok(Some(Ok(pb::CoordinatorCommand { command: Some(c) }))) => return Some(c),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}
