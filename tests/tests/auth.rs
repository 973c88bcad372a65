//! The admin API's token and the cluster's shared secret, on real
//! processes: changes without the token are refused (REST 401, gRPC
//! UNAUTHENTICATED), a worker without the secret cannot join, and neither
//! secret shows in logs, metrics, API answers or `weir spec`.

use std::time::Duration;

use serde_json::Value;
use weir_tests::cluster::Cluster;
use weir_tests::process::Proc;
use weir_tests::{file_job, wait_for, weir_bin};

const TOKEN: &str = "adm1n-t0ken-5f2c9e";
const SECRET: &str = "clu5ter-s3cret-8a1d4b";

fn env() -> Vec<(String, String)> {
    vec![
        ("WEIR_ADMIN_TOKEN".into(), TOKEN.into()),
        ("WEIR_CLUSTER_SECRET".into(), SECRET.into()),
    ]
}

/// `(status, body)` of a REST call with `headers`.
fn call(
    cluster: &Cluster,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    cluster
        .request(cluster.http_port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", cluster.logs()))
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [TOKEN, SECRET] {
        assert!(!text.contains(s), "{what} shows a secret:\n{text}");
    }
}

/// A job that runs for a while on two workers (so that the shuffle between
/// them carries the secret too).
fn start(dir: &std::path::Path, extra: &[&str]) -> Cluster {
    let mut flags = vec!["--rate-limit", "5000", "--min-workers", "2"];
    flags.extend_from_slice(extra);
    let a = file_job(
        dir,
        &["--records", "300000", "--devices", "200", "--seed", "7"],
        &flags,
    );
    Cluster::start_with_env(dir, &a, 2, &env())
}

fn grpc<T>(cluster: &Cluster, call: impl AsyncFnOnce(String) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(call(format!("http://127.0.0.1:{}", cluster.grpc_port)))
}

#[test]
fn changes_need_the_admin_token_and_workers_the_cluster_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let cluster = start(dir, &[]);
    let job = cluster.wait_state("running", Duration::from_secs(90));
    assert_eq!(
        job["workers"], 2,
        "both workers joined with the secret: {job}"
    );
    wait_for("records to flow", Duration::from_secs(60), || {
        cluster.job()["records_in"].as_u64().unwrap_or(0) > 0
    });

    // Reads stay open; changes need the token.
    assert_eq!(call(&cluster, "GET", "/api/v1/job", &[], "").0, 200);
    for headers in [
        &[][..],
        &["Authorization: Bearer wrong-token"][..],
        &["Authorization: Basic YWRtaW46YWRtaW4="][..],
        &[&format!("Authorization: {TOKEN}") as &str][..],
    ] {
        let (status, body) = call(&cluster, "POST", "/api/v1/job/stop", headers, "");
        assert_eq!(status, 401, "{headers:?}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(
            error["error"].as_str().is_some_and(|m| m.contains("token")),
            "{body}"
        );
        assert_no_secret("a 401", &body);
    }
    for (method, path) in [
        ("POST", "/api/v1/job/resume"),
        ("POST", "/api/v1/job/rescale"),
        ("POST", "/api/v1/checkpoints"),
        ("PUT", "/api/v1/checkpoints/interval"),
        ("DELETE", "/api/v1/job"),
    ] {
        assert_eq!(
            call(&cluster, method, path, &[], "").0,
            401,
            "{method} {path}"
        );
    }
    assert_eq!(cluster.job()["state"], "running", "nothing was stopped");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, body) = call(&cluster, "POST", "/api/v1/checkpoints", &[&bearer], "");
    assert_eq!(status, 200, "{body}");

    // gRPC: the same rules.
    use weir_proto::admin::admin_client::AdminClient;
    use weir_proto::admin::{GetJobRequest, StopJobRequest, TriggerCheckpointRequest};
    grpc(&cluster, async |address| {
        let mut client = AdminClient::connect(address).await.expect("connect");
        client
            .get_job(GetJobRequest {})
            .await
            .expect("reads are open");
        let refused = client
            .stop_job(StopJobRequest::default())
            .await
            .expect_err("no token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut wrong = tonic::Request::new(StopJobRequest::default());
        wrong
            .metadata_mut()
            .insert("authorization", "Bearer nope".parse().expect("ascii"));
        let refused = client.stop_job(wrong).await.expect_err("wrong token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut right = tonic::Request::new(TriggerCheckpointRequest { savepoint: false });
        right.metadata_mut().insert(
            "authorization",
            format!("Bearer {TOKEN}").parse().expect("ascii"),
        );
        client
            .trigger_checkpoint(right)
            .await
            .expect("with the token");
    });

    // `weir ctl` sends the token from the environment.
    let ctl = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.args(["ctl", "--coordinator"])
            .arg(format!("http://127.0.0.1:{}", cluster.http_port))
            .arg("checkpoint")
            .env_remove("WEIR_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("WEIR_ADMIN_TOKEN", t);
        }
        cmd.output().expect("run weir ctl")
    };
    let refused = ctl(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("admin token"),
        "{stderr}"
    );
    let done = ctl(Some(TOKEN));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    // A worker without the secret, or with another one, is refused and
    // says why; the job goes on on its two workers.
    for (name, secret) in [("stray", None), ("impostor", Some("not-the-secret"))] {
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.arg("worker")
            .args(["--coordinator", &format!("127.0.0.1:{}", cluster.grpc_port)])
            .args(["--listen", "127.0.0.1:0", "--id", name])
            .current_dir(dir)
            .env_remove("WEIR_CLUSTER_SECRET")
            .env("NO_COLOR", "1");
        if let Some(s) = secret {
            cmd.env("WEIR_CLUSTER_SECRET", s);
        }
        let mut worker = Proc::spawn(name, cmd, dir);
        let status = worker.wait(Duration::from_secs(60));
        assert!(!status.success(), "{name} must not run");
        let stderr = worker.stderr();
        assert!(
            stderr.contains("refused this worker") && stderr.contains("secret"),
            "{name}: {stderr}"
        );
    }
    let workers = cluster.cluster();
    let ids: Vec<&str> = workers["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["worker_id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "only the two workers with the secret: {workers}"
    );

    // No secret anywhere it could leak.
    let (_, metrics) = call(&cluster, "GET", "/metrics", &[], "");
    assert_no_secret("/metrics", &metrics);
    assert_no_secret("the job", &cluster.job().to_string());
    assert_no_secret("the cluster", &workers.to_string());
    let spec = std::process::Command::new(weir_bin())
        .args(["spec"])
        .envs(env())
        .output()
        .expect("weir spec");
    assert!(spec.status.success());
    assert_no_secret("weir spec", &String::from_utf8_lossy(&spec.stdout));

    let (status, body) = call(&cluster, "POST", "/api/v1/job/stop", &[&bearer], "");
    assert_eq!(status, 200, "{body}");
    cluster.wait_state("stopped", Duration::from_secs(60));
    assert_no_secret("the logs", &cluster.logs());
}

#[test]
fn reads_can_need_the_token_too_but_probes_never_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let cluster = start(dir, &["--admin-token-for-reads"]);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    for path in [
        "/api/v1/job",
        "/api/v1/cluster",
        "/api/v1/checkpoints",
        "/metrics",
    ] {
        assert_eq!(call(&cluster, "GET", path, &[], "").0, 401, "{path}");
        let (status, body) = call(&cluster, "GET", path, &[&bearer], "");
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(call(&cluster, "GET", path, &[], "").0, 200, "{path}");
    }
    use weir_proto::admin::admin_client::AdminClient;
    use weir_proto::admin::GetJobRequest;
    grpc(&cluster, async |address| {
        let mut client = AdminClient::connect(address).await.expect("connect");
        let refused = client
            .get_job(GetJobRequest {})
            .await
            .expect_err("no token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    });
}
