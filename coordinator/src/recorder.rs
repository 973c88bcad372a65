//! The leader's writes to the raft group, one at a time and in the order
//! the actor made them (a lifecycle change recorded out of order would
//! leave the wrong state for the next leader).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weir_raft::{Command, Response};

use crate::raft_link::{RaftLink, RecordError};

/// How long one write may wait for a majority.
pub const RECORD_PATIENCE: Duration = Duration::from_secs(10);

type Reply = oneshot::Sender<Result<Response, RecordError>>;

/// The recorder's handle.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(Command, Option<Reply>)>,
}

impl Recorder {
    /// Starts the recorder; it ends with `shutdown`.
    pub fn spawn(
        link: RaftLink,
        shutdown: CancellationToken,
    ) -> (Recorder, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<(Command, Option<Reply>)>(256);
        let run = async move {
            loop {
                let (command, reply) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = rx.recv() => match next {
                        Some(next) => next,
                        None => return,
                    },
                };
                let what = command_name(&command);
                // A leader that steps down stops at once: a write in
                // flight has no majority anyway (its waiter hears "stopped").
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = link.write(command, RECORD_PATIENCE) => result,
                };
                match (&result, reply) {
                    (_, Some(reply)) => {
                        let _ = reply.send(result);
                    }
                    (Err(e), None) => {
                        tracing::warn!(command = what, error = %e, "cannot record the job's state in raft")
                    }
                    (Ok(_), None) => {}
                }
            }
        };
        (Recorder { tx }, run)
    }

    /// Records `command` after those before it; a failure is logged.
    pub fn record(&self, command: Command) {
        let what = command_name(&command);
        if self.tx.try_send((command, None)).is_err() {
            tracing::warn!(
                command = what,
                "cannot record the job's state in raft: the recorder is behind or gone"
            );
        }
    }

    /// Records `command` after those before it and waits for the majority.
    pub async fn record_and_wait(&self, command: Command) -> Result<Response, RecordError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((command, Some(reply)))
            .await
            .map_err(|_| RecordError::Raft("the recorder stopped".into()))?;
        answer
            .await
            .map_err(|_| RecordError::Raft("the recorder stopped".into()))?
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::SetSpec { .. } => "spec",
        Command::SetLifecycle { .. } => "lifecycle",
        Command::Deployed { .. } => "deployed",
        Command::CheckpointCompleted(_) => "checkpoint-completed",
        Command::Rescaled(_) => "rescaled",
    }
}
