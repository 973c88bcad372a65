//! Finding a Pulsar topic's partitions, now and as they are added.
//!
//! Partitions of a Pulsar topic can be added while a job runs (never
//! removed). The coordinator looks the topic up at start — an unreachable
//! broker or a refused token fails the job there, with the cause — and then
//! every `discovery_interval`; a longer list makes a new generation that
//! reads the new partitions from their beginning.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_common::pulsar::{partitions, Connection, Pulsar, PulsarError, TokioExecutor};

use crate::actor::{CoordinatorHandle, Msg};

/// Where to look.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub connection: Connection,
    pub topic: String,
    pub interval: Duration,
}

impl Discovery {
    /// Connects and finds the partitions now.
    pub async fn start(&self) -> Result<(Pulsar<TokioExecutor>, Vec<String>), PulsarError> {
        let client = weir_common::pulsar::connect(&self.connection).await?;
        let names = partitions(&client, &self.connection.url, &self.topic).await?;
        Ok((client, names))
    }
}

/// Looks the topic up every interval until shutdown, telling the actor.
pub(crate) async fn run(
    discovery: Discovery,
    client: Pulsar<TokioExecutor>,
    handle: CoordinatorHandle,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(discovery.interval) => {}
        }
        match partitions(&client, &discovery.connection.url, &discovery.topic).await {
            Ok(names) => {
                failures = 0;
                if !handle.send(Msg::Partitions(names)).await {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, failures, "cannot look for new partitions; will try again");
                }
            }
        }
    }
}
