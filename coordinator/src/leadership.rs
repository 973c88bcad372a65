//! Which coordinator runs the job, and starting the parts only the one
//! running it has.
//!
//! The job's actor, the partition discovery and the StatefulSet watch run
//! on one coordinator at a time ([`lead`], a task group of their own): the
//! only one with a single coordinator, the raft group's leader with three
//! ([`follow_the_group`]). A coordinator that becomes leader first makes
//! sure a majority follows it, then starts them from the raft record (the
//! generation, the lifecycle, the rescales) and the checkpoint store (what
//! to restore, checkpoint numbers); one that stops leading — a new leader
//! was elected, or it cannot reach a majority (a partition), checked every
//! heartbeat round — stops them at once, which closes its workers' control
//! streams: they dial the others and find the new leader. A deposed leader
//! that has not noticed yet cannot complete a checkpoint (that is recorded
//! in raft first), and workers that registered with a later term refuse
//! it.

use std::time::Duration;

use tokio::sync::watch;
use weir_common::tasks::TaskGroup;
use weir_raft::Command;

use crate::actor::{self, CoordinatorConfig, CoordinatorHandle};
use crate::gateway::Route;
use crate::raft_link::RaftLink;
use crate::recorder::Recorder;
use crate::{discovery, open_checkpoints, CoordinatorError};

/// The parts of a coordinator that runs the job.
pub(crate) struct Leading {
    pub handle: CoordinatorHandle,
    pub tasks: TaskGroup,
}

/// Starts running the job under `parent`: the topic's partitions first (a
/// broker that cannot be reached, or refuses us, fails here with the
/// cause), the checkpoint store, then the actor.
pub(crate) async fn lead(
    mut config: CoordinatorConfig,
    raft: Option<RaftLink>,
    parent: &TaskGroup,
) -> Result<Leading, CoordinatorError> {
    let discovered = match &config.discovery {
        Some(d) => {
            let (client, names) = d.start().await?;
            tracing::info!(topic = %d.topic, partitions = names.len(), "found the input topic");
            config.partitions = names;
            Some((d.clone(), client))
        }
        None => None,
    };
    let mut checkpoints = open_checkpoints(&mut config.spec).await?;
    let tasks = parent.child();
    let shutdown = tasks.token().clone();
    let recorder = match &raft {
        Some(link) => {
            let record = link.record();
            // Numbering goes on after every checkpoint the group recorded,
            // even one whose metadata never reached the store.
            if let Some(last) = record.checkpoints.back() {
                checkpoints.last = checkpoints.last.max(last.checkpoint);
            }
            let (recorder, run) = Recorder::spawn(link.clone(), shutdown.clone());
            tasks.spawn_critical("the raft recorder", async move {
                run.await;
                Ok::<(), std::convert::Infallible>(())
            });
            let yaml = serde_yaml::to_string(&config.spec)
                .map_err(|e| CoordinatorError::Checkpoint(format!("the job spec: {e}")))?;
            if record.spec_yaml != yaml {
                if record.spec_version > 0 {
                    tracing::info!(
                        version = record.spec_version + 1,
                        "the job spec changed since the last leader recorded it"
                    );
                }
                recorder.record(Command::SetSpec { yaml });
            }
            Some(recorder)
        }
        None => None,
    };
    let worker_set = config.worker_set.clone();
    let (handle, actor) = actor::spawn(config, checkpoints, shutdown.clone(), raft, recorder);
    tasks.spawn_critical("the coordinator actor", async move {
        actor.await.map_err(|e| e.to_string())
    });
    if let Some(set) = worker_set {
        let watch = set.watch(handle.clone(), shutdown.clone());
        tasks.spawn_critical("the StatefulSet watch", async move {
            watch.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }
    if let Some((discovery, client)) = discovered {
        let run = discovery::run(discovery, client, handle.clone(), shutdown.clone());
        tasks.spawn_critical("partition discovery", async move {
            run.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }
    Ok(Leading { handle, tasks })
}

/// How often a leader checks that a majority still follows it, and how
/// long it waits for their answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checks {
    pub every: Duration,
    pub patience: Duration,
}

/// Why a term of leading ended.
enum Ended {
    /// Another coordinator leads, or none can be confirmed: follow.
    Deposed,
    /// A part of the job failed: the coordinator stops (as a single one
    /// does), and another takes over.
    Failed(String),
    Stopping,
}

/// Follows the raft group until `parent` stops: runs the job while this
/// coordinator leads, and keeps `route` saying where the leader is.
pub(crate) async fn follow_the_group(
    config: CoordinatorConfig,
    link: RaftLink,
    route: watch::Sender<Route>,
    parent: TaskGroup,
    checks: Checks,
) -> Result<(), String> {
    let me = link.node_id();
    let mut metrics = link.raft().metrics();
    loop {
        if parent.is_stopping() {
            return Ok(());
        }
        let leader = metrics.borrow_and_update().current_leader;
        if leader != Some(me) {
            let next = match leader.and_then(|id| Some((id, link.address(id)?.to_owned()))) {
                Some((id, address)) => Route::Leader { id, address },
                None => Route::NoLeader,
            };
            route.send_replace(next);
            tokio::select! {
                _ = parent.token().cancelled() => return Ok(()),
                changed = metrics.changed() => if changed.is_err() {
                    return Err("raft stopped".into());
                },
            }
            continue;
        }
        route.send_replace(Route::NoLeader);
        if !link.confirm_leadership(checks.patience).await {
            tracing::warn!("elected, but no majority confirms this coordinator as leader yet");
            tokio::time::sleep(checks.every).await;
            continue;
        }
        tracing::info!(
            node = me,
            term = link.term(),
            "this coordinator leads the group: running the job"
        );
        let leading = match lead(config.clone(), Some(link.clone()), &parent).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot run the job on this coordinator; trying again");
                tokio::select! {
                    _ = parent.token().cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {},
                }
                continue;
            }
        };
        route.send_replace(Route::Local(leading.handle.clone()));
        let ended = hold(&link, &mut metrics, &leading, &parent, checks).await;
        route.send_replace(Route::NoLeader);
        leading.tasks.shutdown().await;
        match ended {
            Ended::Deposed => {
                tracing::warn!(
                    node = me,
                    "this coordinator no longer leads: the job's parts here stopped"
                );
            }
            Ended::Failed(reason) => return Err(reason),
            Ended::Stopping => return Ok(()),
        }
    }
}

/// Leads until another coordinator does, a majority stops answering, or
/// a part of the job fails.
async fn hold(
    link: &RaftLink,
    metrics: &mut watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>>,
    leading: &Leading,
    parent: &TaskGroup,
    checks: Checks,
) -> Ended {
    let me = link.node_id();
    // One clock for the checks: the metrics change with every heartbeat,
    // and a sleep started anew each time they do would never end.
    let mut check = tokio::time::interval(checks.every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        tokio::select! {
            _ = parent.token().cancelled() => return Ended::Stopping,
            reason = leading.tasks.stopped() => {
                return match reason {
                    Some(reason) => Ended::Failed(reason),
                    None => Ended::Stopping,
                };
            }
            changed = metrics.changed() => {
                if changed.is_err() {
                    return Ended::Failed("raft stopped".into());
                }
                if metrics.borrow_and_update().current_leader != Some(me) {
                    return Ended::Deposed;
                }
            }
            _ = check.tick() => {
                if !link.confirm_leadership(checks.patience).await {
                    tracing::warn!(patience = ?checks.patience, "no majority of the coordinators answers: stepping down");
                    return Ended::Deposed;
                }
            }
        }
    }
}
