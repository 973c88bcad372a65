//! The coordinator's Kubernetes calls against a mocked API server
//! (`tower_test::mock`, as kube-rs/controller-rs's `fixtures.rs`): every
//! request is checked as it arrives and answered by the scenario.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::actor::{CoordinatorHandle, Msg};

type ApiServer = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn worker_set() -> (WorkerSet, ApiServer) {
    let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "stream");
    (WorkerSet::new(client, "stream", "weir-worker"), server)
}

const PATH: &str = "/apis/apps/v1/namespaces/stream/statefulsets/weir-worker";

fn statefulset(replicas: i32, version: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "weir-worker", "namespace": "stream", "resourceVersion": version},
        "spec": {
            "replicas": replicas,
            "serviceName": "weir-worker-headless",
            "selector": {"matchLabels": {"app": "weir-worker"}},
            "template": {"metadata": {"labels": {"app": "weir-worker"}}, "spec": {"containers": []}}
        }
    })
}

fn scale(replicas: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "weir-worker", "namespace": "stream", "resourceVersion": "8"},
        "spec": {"replicas": replicas},
        "status": {"replicas": 2}
    })
}

fn status(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn json(code: u16, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

/// A watch answer: one JSON event per line.
fn events(events: &[serde_json::Value]) -> Response<Body> {
    let mut body = Vec::new();
    for e in events {
        body.extend(serde_json::to_vec(e).expect("json"));
        body.push(b'\n');
    }
    Response::builder()
        .status(200)
        .body(Body::from(body))
        .expect("response")
}

/// The next request, which must come within a few seconds.
async fn next(
    server: &mut ApiServer,
) -> (
    Request<Body>,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    tokio::time::timeout(Duration::from_secs(5), server.next_request())
        .await
        .expect("a request to the API server")
        .expect("the client is alive")
}

async fn expect_get(server: &mut ApiServer, respond: Response<Body>) {
    let (request, send) = next(server).await;
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(request.uri().path(), PATH);
    assert!(
        request.uri().query().is_none(),
        "a plain get: {}",
        request.uri()
    );
    send.send_response(respond);
}

/// Expects a watch from `version`; answers with `respond`.
async fn expect_watch(server: &mut ApiServer, version: &str, respond: Response<Body>) {
    let (request, send) = next(server).await;
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(
        request.uri().path(),
        "/apis/apps/v1/namespaces/stream/statefulsets"
    );
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert!(query.contains("watch=true"), "{query}");
    assert!(
        query.contains("fieldSelector=metadata.name%3Dweir-worker"),
        "{query}"
    );
    assert!(
        query.contains(&format!("resourceVersion={version}")),
        "{query}"
    );
    send.send_response(respond);
}

fn coordinator() -> (CoordinatorHandle, mpsc::Receiver<Msg>) {
    let (tx, rx) = mpsc::channel(16);
    (CoordinatorHandle::for_test(tx), rx)
}

async fn seen(rx: &mut mpsc::Receiver<Msg>) -> ReplicasSeen {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(Msg::Replicas(seen))) => seen,
        Ok(Some(_)) => panic!("another message than the replicas"),
        Ok(None) | Err(_) => panic!("the watch told the coordinator nothing"),
    }
}

#[tokio::test]
async fn the_watch_tells_the_replicas_and_each_change() {
    let (set, mut server) = worker_set();
    let (handle, mut rx) = coordinator();
    let shutdown = CancellationToken::new();
    let watch = tokio::spawn(set.watch(handle, shutdown.clone()));
    expect_get(&mut server, json(200, &statefulset(2, "10"))).await;
    assert_eq!(seen(&mut rx).await, ReplicasSeen::Replicas(2));
    expect_watch(
        &mut server,
        "10",
        events(&[
            serde_json::json!({"type": "MODIFIED", "object": statefulset(4, "11")}),
            serde_json::json!({"type": "BOOKMARK", "object": {"kind": "StatefulSet", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "12"}}}),
        ]),
    )
    .await;
    assert_eq!(seen(&mut rx).await, ReplicasSeen::Replicas(4));
    // The server ended that watch: the next goes on from the bookmark.
    expect_watch(
        &mut server,
        "12",
        events(&[serde_json::json!({"type": "MODIFIED", "object": statefulset(3, "13")})]),
    )
    .await;
    assert_eq!(seen(&mut rx).await, ReplicasSeen::Replicas(3));
    shutdown.cancel();
    watch.await.expect("the watch ends on shutdown");
}

#[tokio::test]
async fn a_watch_that_fell_behind_reads_the_statefulset_again() {
    let (set, mut server) = worker_set();
    let (handle, mut rx) = coordinator();
    let shutdown = CancellationToken::new();
    let watch = tokio::spawn(set.watch(handle, shutdown.clone()));
    expect_get(&mut server, json(200, &statefulset(2, "10"))).await;
    assert_eq!(seen(&mut rx).await, ReplicasSeen::Replicas(2));
    expect_watch(
        &mut server,
        "10",
        events(&[serde_json::json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 10 (90)")})]),
    )
    .await;
    // Desync: a fresh get (the replicas changed meanwhile), then a watch
    // from its version.
    expect_get(&mut server, json(200, &statefulset(5, "95"))).await;
    assert_eq!(seen(&mut rx).await, ReplicasSeen::Replicas(5));
    expect_watch(&mut server, "95", events(&[])).await;
    shutdown.cancel();
    watch.await.expect("the watch ends on shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_refused_watch_is_reported_and_tried_again() {
    let (set, mut server) = worker_set();
    let (handle, mut rx) = coordinator();
    let shutdown = CancellationToken::new();
    let watch = tokio::spawn(set.watch(handle, shutdown.clone()));
    expect_get(
        &mut server,
        json(403, &status(403, "Forbidden", "statefulsets.apps \"weir-worker\" is forbidden: User \"system:serviceaccount:stream:weir\" cannot get resource")),
    )
    .await;
    let ReplicasSeen::Trouble(message) = seen(&mut rx).await else {
        panic!("a refusal is reported");
    };
    assert!(
        message.contains("may not get statefulset stream/weir-worker"),
        "{message}"
    );
    assert!(message.contains("Role"), "{message}");
    // Deleted under us: reported too, and read again.
    expect_get(
        &mut server,
        json(
            404,
            &status(
                404,
                "NotFound",
                "statefulsets.apps \"weir-worker\" not found",
            ),
        ),
    )
    .await;
    let ReplicasSeen::Trouble(message) = seen(&mut rx).await else {
        panic!("a missing StatefulSet is reported");
    };
    assert!(message.contains("does not exist"), "{message}");
    expect_get(&mut server, json(200, &statefulset(3, "20"))).await;
    assert_eq!(seen(&mut rx).await, ReplicasSeen::Replicas(3));
    shutdown.cancel();
    watch.await.expect("the watch ends on shutdown");
}

/// Checks that the request is exactly the scale patch `kubectl scale` sends.
async fn expect_scale_patch(server: &mut ApiServer, replicas: u32, respond: Response<Body>) {
    let (request, send) = next(server).await;
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(request.uri().path(), format!("{PATH}/scale"));
    assert_eq!(
        request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/merge-patch+json")
    );
    let body = request.into_body().collect_bytes().await.expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON patch");
    assert_eq!(body, serde_json::json!({"spec": {"replicas": replicas}}));
    send.send_response(respond);
}

#[tokio::test]
async fn rescale_patches_the_scale_subresource() {
    let (set, mut server) = worker_set();
    let call = tokio::spawn(async move { set.scale(3).await });
    expect_scale_patch(&mut server, 3, json(200, &scale(3))).await;
    call.await.expect("joins").expect("scaled");
}

#[tokio::test]
async fn a_conflict_is_tried_again_and_then_reported() {
    let (set, mut server) = worker_set();
    let conflict = || {
        json(
            409,
            &status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            ),
        )
    };
    let call = tokio::spawn({
        let set = set.clone();
        async move { set.scale(4).await }
    });
    expect_scale_patch(&mut server, 4, conflict()).await;
    expect_scale_patch(&mut server, 4, json(200, &scale(4))).await;
    call.await
        .expect("joins")
        .expect("scaled on the second attempt");

    let call = tokio::spawn(async move { set.scale(4).await });
    for _ in 0..PATCH_ATTEMPTS {
        expect_scale_patch(&mut server, 4, conflict()).await;
    }
    let error = call
        .await
        .expect("joins")
        .expect_err("a conflict every time");
    assert!(matches!(error, KubeError::Conflict { .. }), "{error:?}");
    assert!(error.retryable());
}

#[tokio::test]
async fn a_forbidden_or_missing_statefulset_is_reported_not_retried() {
    let (set, mut server) = worker_set();
    let call = tokio::spawn({
        let set = set.clone();
        async move { set.scale(2).await }
    });
    expect_scale_patch(
        &mut server,
        2,
        json(
            403,
            &status(
                403,
                "Forbidden",
                "cannot patch resource \"statefulsets/scale\"",
            ),
        ),
    )
    .await;
    let error = call.await.expect("joins").expect_err("forbidden");
    assert!(!error.retryable());
    let message = error.to_string();
    assert!(
        message.contains("may not patch the scale of statefulset stream/weir-worker"),
        "{message}"
    );
    assert!(message.contains("cannot patch resource"), "{message}");

    let call = tokio::spawn(async move { set.scale(2).await });
    expect_scale_patch(
        &mut server,
        2,
        json(
            404,
            &status(
                404,
                "NotFound",
                "statefulsets.apps \"weir-worker\" not found",
            ),
        ),
    )
    .await;
    let error = call.await.expect("joins").expect_err("missing");
    assert!(matches!(error, KubeError::NotFound { .. }), "{error:?}");
    assert!(
        error.to_string().contains("--worker-statefulset"),
        "{error}"
    );
}

/// The whole path: the watch sees the replicas go from 2 to 3, the
/// coordinator waits for the third worker, checkpoints the running
/// generation, and deploys one over three workers that restores it.
#[tokio::test]
async fn a_replicas_change_leads_to_a_checkpoint_and_a_redeploy() {
    use crate::testing::{FakeWorker, TestCoordinator};
    let (set, mut server) = worker_set();
    let c = TestCoordinator::start(|config| {
        config.min_workers = 2;
        config.worker_set = Some(set.clone());
    });
    let watch = tokio::spawn(set.watch(c.handle.clone(), c.shutdown.clone()));
    expect_get(&mut server, json(200, &statefulset(2, "10"))).await;
    let mut w1 = FakeWorker::connect(&c, "weir-worker-0", 0).await;
    let mut w2 = FakeWorker::connect(&c, "weir-worker-1", 1).await;
    assert_eq!(w1.deployed().await.generation, 1);
    assert_eq!(w2.deployed().await.generation, 1);
    assert!(c
        .job()
        .await
        .kubernetes
        .contains("stream/weir-worker: 2 replicas"));

    // kubectl scale --replicas=3: no checkpoint until the pod registered.
    expect_watch(
        &mut server,
        "10",
        events(&[serde_json::json!({"type": "MODIFIED", "object": statefulset(3, "11")})]),
    )
    .await;
    assert_eq!(w1.quiet(Duration::from_millis(500)).await, None);
    let job = c.job().await;
    assert_eq!(
        (job.desired_workers, job.rescaling.as_str()),
        (3, "waiting-for-workers")
    );

    let mut w3 = FakeWorker::connect(&c, "weir-worker-2", 2).await;
    let checkpoint = w1.checkpoint().await.checkpoint;
    assert_eq!(w2.checkpoint().await.checkpoint, checkpoint);
    for w in [&mut w1, &mut w2, &mut w3] {
        let deploy = w.deployed().await;
        assert_eq!(deploy.generation, 2);
        let assignment = deploy.assignment.expect("an assignment");
        assert_eq!(assignment.workers.len(), 3);
        assert_eq!(assignment.restore_checkpoint, checkpoint);
    }
    let mut history = Vec::new();
    for _ in 0..100 {
        history = c.job().await.rescales;
        if !history.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = history.first().expect("the rescale is in the job status");
    assert_eq!(
        (
            r.from,
            r.to,
            r.cause.as_str(),
            r.checkpoint,
            r.outcome.as_str()
        ),
        (2, 3, "replicas", checkpoint, "done")
    );
    c.shutdown.cancel();
    watch.await.expect("the watch ends");
}

/// `weir ctl rescale` goes through the API server: the scale patch, then
/// the status shows the replicas asked for; a refusal comes back as the
/// admin API's error with its cause.
#[tokio::test]
async fn the_admin_rescale_patches_the_statefulset_and_reports_refusals() {
    use crate::actor::AdminError;
    use crate::testing::{FakeWorker, TestCoordinator};
    let (set, mut server) = worker_set();
    let c = TestCoordinator::start(|config| config.worker_set = Some(set));
    let mut w1 = FakeWorker::connect(&c, "weir-worker-0", 0).await;
    w1.deployed().await;
    let handle = c.handle.clone();
    let call = tokio::spawn(async move { handle.rescale(4).await });
    expect_scale_patch(&mut server, 4, json(200, &scale(4))).await;
    let job = call.await.expect("joins").expect("rescaled");
    assert_eq!(job.desired_workers, 4);
    assert_eq!(job.rescaling, "waiting-for-workers");

    let handle = c.handle.clone();
    let call = tokio::spawn(async move { handle.rescale(2).await });
    expect_scale_patch(&mut server, 2, json(403, &status(403, "Forbidden", "no"))).await;
    match call.await.expect("joins") {
        Err(AdminError::Conflict(m)) => assert!(m.contains("may not patch"), "{m}"),
        other => panic!("refused, not {other:?}"),
    }
    let handle = c.handle.clone();
    let call = tokio::spawn(async move { handle.rescale(2).await });
    expect_scale_patch(
        &mut server,
        2,
        json(503, &status(503, "ServiceUnavailable", "etcd is down")),
    )
    .await;
    match call.await.expect("joins") {
        Err(AdminError::TryAgain(m)) => {
            assert!(m.contains("503") && m.contains("etcd is down"), "{m}")
        }
        other => panic!("try again, not {other:?}"),
    }
}
