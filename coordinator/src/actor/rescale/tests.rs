//! Rescales driven through a real coordinator actor by fake workers.

use std::time::Duration;

use weir_proto::cluster::coordinator_command::Command;
use weir_proto::cluster::worker_event::Event;

use super::super::AdminError;
use crate::kubernetes::ReplicasSeen;
use crate::testing::{FakeWorker, TestCoordinator};
use weir_proto::cluster as pb;

/// A coordinator running generation 1 on `ids`.
async fn running(ids: &[&str]) -> (TestCoordinator, Vec<FakeWorker>) {
    let c = TestCoordinator::start(|config| config.min_workers = ids.len());
    let mut workers = Vec::new();
    for (conn, id) in ids.iter().enumerate() {
        workers.push(FakeWorker::connect(&c, id, conn as u64).await);
    }
    for w in &mut workers {
        assert_eq!(w.deployed().await.generation, 1);
    }
    (c, workers)
}

fn ids(deploy: &pb::Deploy) -> Vec<String> {
    deploy
        .assignment
        .as_ref()
        .map(|a| a.workers.iter().map(|w| w.worker_id.clone()).collect())
        .unwrap_or_default()
}

/// Waits until the job status shows a finished rescale.
async fn rescaled(c: &TestCoordinator) -> weir_proto::admin::RescaleInfo {
    for _ in 0..100 {
        let job = c.job().await;
        if let Some(r) = job.rescales.first() {
            assert!(job.rescaling.is_empty());
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no rescale ended: {:?}", c.job().await);
}

#[tokio::test]
async fn a_worker_joining_rescales_from_a_fresh_checkpoint() {
    let (c, mut workers) = running(&["w1", "w2"]).await;
    let mut w3 = FakeWorker::connect(&c, "w3", 3).await;
    // The running generation is checkpointed first.
    let mut checkpoint = 0;
    for w in &mut workers {
        let t = w.checkpoint().await;
        assert_eq!(t.generation, 1);
        checkpoint = t.checkpoint;
    }
    workers.push(w3);
    for w in &mut workers {
        let deploy = w.deployed().await;
        assert_eq!(deploy.generation, 2);
        assert_eq!(ids(&deploy), ["w1", "w2", "w3"]);
        let assignment = deploy.assignment.expect("an assignment");
        assert_eq!(
            assignment.restore_checkpoint, checkpoint,
            "restores the rescale's checkpoint"
        );
    }
    let r = rescaled(&c).await;
    assert_eq!((r.from, r.to, r.cause.as_str()), (2, 3, "joined"));
    assert_eq!((r.checkpoint, r.generation), (checkpoint, 2));
    assert_eq!(r.outcome, "done");
    w3 = workers.pop().expect("w3");
    assert_eq!(w3.quiet(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn a_leaving_worker_works_until_the_checkpoint_then_is_released() {
    let (c, mut workers) = running(&["w1", "w2", "w3"]).await;
    workers[2]
        .send(Event::Leaving(pb::Leaving {
            reason: "SIGTERM".into(),
        }))
        .await;
    let mut checkpoint = 0;
    for w in &mut workers {
        // Every worker, the leaving one too, takes its part.
        checkpoint = w.checkpoint().await.checkpoint;
    }
    let mut w3 = workers.pop().expect("w3");
    let released = w3
        .expect(|c| match c {
            Command::Release(r) => Some(r),
            Command::Deploy(d) => panic!("a leaving worker was deployed: {d:?}"),
            _ => None,
        })
        .await;
    assert_eq!(released.checkpoint, checkpoint);
    for w in &mut workers {
        let deploy = w.deployed().await;
        assert_eq!(ids(&deploy), ["w1", "w2"]);
        assert_eq!(
            deploy.assignment.map(|a| a.restore_checkpoint),
            Some(checkpoint)
        );
    }
    let r = rescaled(&c).await;
    assert_eq!(
        (r.from, r.to, r.cause.as_str(), r.outcome.as_str()),
        (3, 2, "leaving", "done")
    );
    assert_eq!(c.job().await.desired_workers, 2);
}

#[tokio::test]
async fn a_worker_lost_while_rescaling_restores_the_latest_checkpoint() {
    let (c, mut workers) = running(&["w1", "w2", "w3"]).await;
    workers[2]
        .send(Event::Leaving(pb::Leaving::default()))
        .await;
    workers[0]
        .expect(|c| matches!(c, Command::TriggerCheckpoint(_)).then_some(()))
        .await;
    // w1's stream breaks before the checkpoint completes.
    assert!(
        c.handle
            .send(super::super::Msg::Disconnected {
                id: "w1".into(),
                conn: 0,
            })
            .await
    );
    let deploy = workers[1].deployed().await;
    assert_eq!(ids(&deploy), ["w2"]);
    assert_eq!(
        deploy.assignment.map(|a| a.restore_checkpoint),
        Some(0),
        "nothing completed yet"
    );
    workers[2]
        .expect(|c| matches!(c, Command::Release(_)).then_some(()))
        .await;
    let r = rescaled(&c).await;
    assert!(r.outcome.contains("a worker was lost"), "{r:?}");
    assert_eq!(r.cause, "leaving");
}

#[tokio::test]
async fn a_declined_rescale_checkpoint_falls_back_to_the_latest_completed() {
    let (c, mut workers) = running(&["w1"]).await;
    let _w2 = FakeWorker::connect(&c, "w2", 2).await;
    let t = workers[0]
        .expect(|c| match c {
            Command::TriggerCheckpoint(t) => Some(t),
            _ => None,
        })
        .await;
    workers[0]
        .send(Event::CheckpointDeclined(pb::CheckpointDeclined {
            generation: t.generation,
            checkpoint: t.checkpoint,
            reason: "disk full".into(),
        }))
        .await;
    let deploy = workers[0].deployed().await;
    assert_eq!(ids(&deploy), ["w1", "w2"]);
    let job = c.job().await;
    assert_eq!(job.rescaling, "deploying");
    assert!(c.job().await.rescales.is_empty());
}

#[tokio::test]
async fn a_worker_leaving_while_a_rescale_deploys_gets_a_rescale_of_its_own() {
    let (c, mut workers) = running(&["w1", "w2"]).await;
    workers.push(FakeWorker::connect(&c, "w3", 3).await);
    for w in &mut workers[..2] {
        w.checkpoint().await;
    }
    // Generation 2 is sent; w2 is asked to stop before it runs.
    let mut deploys = Vec::new();
    for w in &mut workers {
        deploys.push(
            w.expect(|c| match c {
                Command::Deploy(d) => Some(d),
                _ => None,
            })
            .await,
        );
    }
    workers[1]
        .send(Event::Leaving(pb::Leaving::default()))
        .await;
    for (w, d) in workers.iter().zip(&deploys) {
        w.send(Event::Report(pb::DeploymentReport {
            generation: d.generation,
            state: pb::DeploymentState::Running as i32,
            ..Default::default()
        }))
        .await;
    }
    // Then a checkpoint of generation 2 on all three, and generation 3
    // without w2, which is released.
    let mut checkpoint = 0;
    for w in &mut workers {
        let t = w.checkpoint().await;
        assert_eq!(t.generation, 2);
        checkpoint = t.checkpoint;
    }
    for i in [0, 2] {
        let deploy = workers[i].deployed().await;
        assert_eq!(deploy.generation, 3);
        assert_eq!(ids(&deploy), ["w1", "w3"]);
        assert_eq!(
            deploy.assignment.map(|a| a.restore_checkpoint),
            Some(checkpoint)
        );
    }
    let released = workers[1]
        .expect(|c| match c {
            Command::Release(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(released.checkpoint, checkpoint);
    for _ in 0..100 {
        if c.job().await.rescales.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let causes: Vec<String> = c
        .job()
        .await
        .rescales
        .iter()
        .map(|r| format!("{} {}->{} {}", r.cause, r.from, r.to, r.outcome))
        .collect();
    assert_eq!(causes, ["leaving 3->2 done", "joined 2->3 done"]);
}

#[tokio::test]
async fn replicas_that_never_register_change_nothing_after_the_patience() {
    let c = TestCoordinator::start(|config| {
        config.rescale_patience = Duration::from_millis(300);
    });
    let mut w1 = FakeWorker::connect(&c, "w1", 0).await;
    w1.deployed().await;
    assert!(
        c.handle
            .send(super::super::Msg::Replicas(ReplicasSeen::Replicas(3)))
            .await
    );
    let r = rescaled(&c).await;
    assert_eq!(
        (r.from, r.to, r.cause.as_str(), r.checkpoint),
        (1, 1, "replicas", 0)
    );
    assert!(
        r.outcome.contains("asks for 3 workers, 1 are registered"),
        "{r:?}"
    );
    // No checkpoint, no redeploy: the job runs on as it was.
    assert_eq!(w1.quiet(Duration::from_millis(300)).await, None);
    assert_eq!(c.job().await.generation, 1);
}

#[tokio::test]
async fn rescale_outside_kubernetes_says_how_to_rescale() {
    let (c, _workers) = running(&["w1"]).await;
    match c.handle.rescale(3).await {
        Err(AdminError::Conflict(m)) => {
            assert!(
                m.contains("--kubernetes") && m.contains("weir worker"),
                "{m}"
            )
        }
        other => panic!("refused, not {other:?}"),
    }
    assert!(matches!(
        c.handle.rescale(0).await,
        Err(AdminError::Invalid(_))
    ));
}
