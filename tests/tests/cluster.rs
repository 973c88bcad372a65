//! A real cluster — `weir coordinator` and several `weir worker` processes
//! on loopback — writing to a real ClickHouse 18.16: results against the
//! independent computation, backpressure, a killed worker, the admin API.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weir_tests::clickhouse::ClickHouse;
use weir_tests::cluster::Cluster;
use weir_tests::expected::compute;
use weir_tests::{args, generate, http, input_args, read_partitions, wait_for, weir};

const MINUTE: i64 = 60_000;
const OOO: i64 = 5_000;

/// Coordinator arguments: inputs, ClickHouse, and extras.
fn coordinator_args(
    files: &[PathBuf],
    ch: &ClickHouse,
    database: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a = args(&[
        "--clickhouse",
        &ch.url(),
        "--database",
        database,
        "--data-dir",
        "data",
    ]);
    a.extend(args(extra));
    a.extend(input_args(files));
    a
}

#[test]
fn three_workers_over_four_partitions_match_the_contract() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_cluster");
    // Four partitions that each carry every device (like producers without
    // message keys), so that every key group is fed from every partition and
    // so also from partitions that other workers read. 2,000 devices leave
    // no key group without devices.
    let files: Vec<PathBuf> = (0..4)
        .flat_map(|i| {
            generate(
                dir,
                &format!("in-{i}.avro"),
                &[
                    "--records",
                    "30000",
                    "--devices",
                    "2000",
                    "--rate",
                    "150",
                    "--disorder-ms",
                    "3000",
                    "--seed",
                    &(31 + i).to_string(),
                ],
            )
        })
        .collect();
    let cluster = Cluster::start(
        dir,
        &coordinator_args(&files, &ch, "t_cluster", &["--min-workers", "3"]),
        3,
    );
    let job = cluster.wait_state("finished", Duration::from_secs(180));
    assert_eq!(job["workers"], 3);
    assert_eq!(job["generation"], 1, "no redeployment was needed");

    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_cluster", &expected);

    // Every key group received records over the network.
    let shuffled: Vec<u64> = job["shuffled_by_key_group"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_u64().expect("count"))
        .collect();
    assert_eq!(shuffled.len(), 128);
    let idle: Vec<usize> = (0..128).filter(|&kg| shuffled[kg] == 0).collect();
    assert!(
        idle.is_empty(),
        "key groups without network traffic: {idle:?}"
    );
    assert!(
        job["shuffle_records"].as_u64().expect("n") > 60_000,
        "{job}"
    );
    // Most of them crossed pre-aggregated (about 4.5 readings per device,
    // window and partition), and the tables above match all the same.
    let accumulators = job["shuffle_accumulators"].as_u64().unwrap_or(0);
    assert!(
        accumulators > 0 && accumulators * 2 < job["shuffle_records"].as_u64().expect("n"),
        "{job}"
    );

    // The partitions were spread: every worker read some.
    let workers = cluster.cluster()["workers"]
        .as_array()
        .expect("workers")
        .clone();
    assert_eq!(workers.len(), 3);
    for w in &workers {
        assert!(
            !w["partitions"].as_array().expect("partitions").is_empty(),
            "{w}"
        );
        assert_eq!(w["state"], "finished", "{w}");
    }
    // `weir ctl status` shows FINISHED, as a table and as JSON.
    let ctl = |extra: &[&str]| {
        let mut a = args(&["ctl", "--coordinator"]);
        a.push(format!("http://127.0.0.1:{}", cluster.http_port));
        a.extend(args(extra));
        let mut p = weir(dir, "ctl", &a);
        p.wait_success(Duration::from_secs(30));
        p.stdout()
    };
    let table = ctl(&["status"]);
    assert!(table.contains("state       finished"), "{table}");
    assert!(table.contains("generation  1"), "{table}");
    let json: Value = serde_json::from_str(&ctl(&["status", "--json"])).expect("json");
    assert_eq!(json["state"], "finished");
    let workers_table = ctl(&["workers"]);
    for id in ["w-0", "w-1", "w-2"] {
        assert!(workers_table.contains(id), "{workers_table}");
    }
}

/// ClickHouse frozen (SIGSTOP) mid-run: the sinks stop, the window tasks
/// stop, the shuffle stops, the sources stop reading; memory stays bounded.
/// After SIGCONT every row arrives, exactly once.
#[test]
fn paused_clickhouse_holds_the_sources_back_with_bounded_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_pressure");
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "600000",
            "--devices",
            "300",
            "--rate",
            "600",
            "--disorder-ms",
            "3000",
            "--partitions",
            "2",
            "--seed",
            "32",
        ],
    );
    let spec = dir.join("job.yaml");
    std::fs::write(
        &spec,
        "sink:\n  clickhouse:\n    request_timeout: 3s\n    retry_max: 2s\n    batch_rows: 200\n",
    )
    .expect("spec");
    let mut extra = vec!["--spec".to_string(), spec.display().to_string()];
    extra.extend(coordinator_args(
        &files,
        &ch,
        "t_pressure",
        &["--min-workers", "2", "--rate-limit", "15000"],
    ));
    let cluster = Cluster::start(dir, &extra, 2);
    wait_for("rows to arrive", Duration::from_secs(120), || {
        ch.count("t_pressure.sensors_local") > 0
    });
    ch.pause();
    // Reading stops once every bounded buffer on the way is full.
    let records = || cluster.job()["records_in"].as_u64().expect("records_in");
    let mut previous = records();
    wait_for(
        "the sources to stop reading",
        Duration::from_secs(90),
        || {
            std::thread::sleep(Duration::from_secs(3));
            let now = records();
            let stopped = now == previous;
            previous = now;
            stopped
        },
    );
    let total: u64 = 600_000;
    assert!(
        previous < total,
        "the job must still have input left ({previous} of {total} read)"
    );
    assert_eq!(cluster.job()["state"], "running");
    let rss: Vec<u64> = ["w-0", "w-1"]
        .iter()
        .map(|w| cluster.worker_rss_bytes(w))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    for (i, w) in ["w-0", "w-1"].iter().enumerate() {
        let now = cluster.worker_rss_bytes(w);
        assert!(now < 300 << 20, "{w} uses {} MB while held back", now >> 20);
        assert!(
            now < rss[i] + (16 << 20),
            "{w} grows while held back: {} → {} MB",
            rss[i] >> 20,
            now >> 20
        );
    }
    assert_eq!(records(), previous, "still no reading");
    // Held back, the sources wait on full channels all the time; the API
    // and the dashboard say so (the share over the latest seconds).
    wait_for("backpressure to show", Duration::from_secs(30), || {
        let workers = cluster.cluster()["workers"].clone();
        let shares: Vec<f64> = workers
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["backpressure"].as_f64().unwrap_or(0.0))
            .collect();
        shares.len() == 2 && shares.iter().all(|&s| s > 0.8)
    });
    for w in ["w-0", "w-1"] {
        let port = cluster.worker_port(w);
        let (_, text) = http::request(port, "GET", "/metrics", "").expect("worker metrics");
        let waited = text
            .lines()
            .find(|l| l.starts_with("weir_source_wait_seconds_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{w} reports the wait:\n{text}"));
        assert!(waited > 3.0, "{w} waited {waited} s");
    }
    ch.resume();
    cluster.wait_state("finished", Duration::from_secs(240));
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_pressure", &expected);
}

/// A worker SIGKILLed mid-run is detected, the coordinator deploys a new
/// generation on the survivors, and the output is still exactly the
/// contract's (the new generation recomputes; no row is written twice).
#[test]
fn a_killed_worker_is_replaced_by_a_new_generation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_failover");
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "240000",
            "--devices",
            "300",
            "--rate",
            "600",
            "--disorder-ms",
            "3000",
            "--partitions",
            "3",
            "--seed",
            "33",
        ],
    );
    let extra = coordinator_args(
        &files,
        &ch,
        "t_failover",
        &[
            "--min-workers",
            "3",
            "--heartbeat-timeout",
            "2s",
            "--settle",
            "500ms",
            "--rate-limit",
            "8000",
        ],
    );
    let mut cluster = Cluster::start(dir, &extra, 3);
    wait_for(
        "generation 1 to make progress",
        Duration::from_secs(120),
        || {
            let job = cluster.job();
            job["generation"] == 1 && job["records_in"].as_u64().unwrap_or(0) > 20_000
        },
    );
    assert!(
        ch.count("t_failover.sensors_local") > 0
            || cluster.job()["windows_closed"].as_u64() > Some(0)
    );
    cluster.kill_worker("w-1");
    let killed_at = std::time::Instant::now();
    wait_for(
        "a new generation on the survivors",
        Duration::from_secs(30),
        || {
            let job = cluster.job();
            job["generation"] == 2 && job["workers"] == 2 && job["state"] == "running"
        },
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "detected within the heartbeat timeout"
    );
    let workers: Vec<String> = cluster.cluster()["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["worker_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(workers, ["w-0", "w-2"]);
    assert!(
        cluster.coordinator_stderr().contains("worker lost"),
        "{}",
        cluster.coordinator_stderr()
    );
    cluster.wait_state("finished", Duration::from_secs(300));
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_failover", &expected);
}

/// Every REST endpoint and gRPC method, and what bad requests get.
#[test]
fn admin_api_answers_every_endpoint_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "200000",
            "--devices",
            "100",
            "--rate",
            "500",
            "--seed",
            "34",
        ],
    );
    let mut a = args(&[
        "--output",
        "out",
        "--data-dir",
        "data",
        "--rate-limit",
        "20000",
    ]);
    a.extend(input_args(&files));
    let cluster = Cluster::start(dir, &a, 1);
    cluster.wait_state("running", Duration::from_secs(60));
    wait_for(
        "the worker to make progress",
        Duration::from_secs(60),
        || cluster.job()["records_in"].as_u64().unwrap_or(0) > 0,
    );

    let (status, c) = cluster.rest("GET", "/api/v1/cluster");
    assert_eq!(status, 200);
    assert_eq!(c["workers"][0]["worker_id"], "w-0");
    assert_eq!(c["workers"][0]["key_group_end"], 128);
    assert!(
        c["workers"][0]["last_heartbeat_ms_ago"]
            .as_u64()
            .expect("ms")
            < 5_000
    );
    let (status, j) = cluster.rest("GET", "/api/v1/job");
    assert_eq!(status, 200);
    assert_eq!(j["partitions"][0]["worker_id"], "w-0");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(cluster.rest("GET", path).0, 200, "{path}");
    }
    let (status, metrics) = cluster.rest("GET", "/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("weir_job_generation 1")
            && metrics.contains("weir_job_state{state=\"running\"} 1"),
        "{metrics}"
    );

    // The worker's own endpoints.
    let worker = cluster.worker_port("w-0");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = http::request(worker, "GET", path, "").expect("worker http");
        assert_eq!(status, 200, "{path}: {body}");
        if path == "/metrics" {
            assert!(
                body.contains("weir_records_in_total{worker=\"w-0\"}"),
                "{body}"
            );
        }
    }

    // Bad requests: 4xx with a message, never a crash.
    let (status, body) = cluster.rest("GET", "/api/v1/nope");
    assert_eq!(status, 404);
    assert!(body["error"]
        .as_str()
        .expect("message")
        .contains("/api/v1/nope"));
    let (status, body) = cluster.rest("GET", "/api/v1/job/stop");
    assert_eq!(status, 405);
    assert!(
        body["error"].as_str().expect("message").contains("POST"),
        "{body}"
    );
    for bad in [r#"{"interval_ms": 0}"#, r#"{"interval_ms": "soon"}"#, "{"] {
        let (status, body) = weir_tests::http::request(
            cluster.http_port,
            "PUT",
            "/api/v1/checkpoints/interval",
            bad,
        )
        .expect("request");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    // Rescaling: without --kubernetes the coordinator cannot start workers
    // and says how to rescale; 0 workers is a bad request; the job status
    // shows the workers wanted and the (empty) history.
    for (request, want) in [
        (r#"{"workers": 3}"#, 409),
        (r#"{"workers": 0}"#, 400),
        ("{", 400),
    ] {
        let (status, body) =
            weir_tests::http::request(cluster.http_port, "POST", "/api/v1/job/rescale", request)
                .expect("request");
        assert_eq!(status, want, "{request}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    let mut ctl = weir(
        dir,
        "ctl-rescale",
        &args(&[
            "ctl",
            "--coordinator",
            &format!("http://127.0.0.1:{}", cluster.http_port),
            "rescale",
            "3",
        ]),
    );
    let status = ctl.wait(Duration::from_secs(30));
    assert!(!status.success(), "refused outside Kubernetes");
    assert!(ctl.stderr().contains("--kubernetes"), "{}", ctl.stderr());
    let job = cluster.job();
    assert_eq!(job["desired_workers"], 1, "{job}");
    assert_eq!(job["rescaling"], "", "{job}");
    assert_eq!(job["kubernetes"], "", "{job}");
    let (status, body) = cluster.rest("POST", "/api/v1/job/resume");
    assert_eq!(status, 409, "resume while running");
    assert!(
        body["error"].as_str().expect("message").contains("running"),
        "{body}"
    );

    // Stop, stop again (idempotent), resume: a new generation.
    let (status, body) = cluster.rest("POST", "/api/v1/job/stop");
    assert_eq!((status, body["state"].as_str()), (200, Some("stopped")));
    assert_eq!(cluster.rest("POST", "/api/v1/job/stop").0, 200);
    let (status, body) = cluster.rest("POST", "/api/v1/job/resume");
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    assert_eq!(body["generation"], 2);

    // The gRPC face of the same API.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use weir_proto::admin::admin_client::AdminClient;
        use weir_proto::admin::*;
        let mut client = AdminClient::connect(format!("http://127.0.0.1:{}", cluster.grpc_port))
            .await
            .expect("grpc connect");
        let c = client
            .get_cluster(GetClusterRequest {})
            .await
            .expect("GetCluster")
            .into_inner();
        assert_eq!(c.workers.len(), 1);
        let j = client
            .get_job(GetJobRequest {})
            .await
            .expect("GetJob")
            .into_inner();
        assert_eq!(j.generation, 2);
        let refused = client
            .resume_job(ResumeJobRequest::default())
            .await
            .expect_err("resume while running");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        let stopped = client
            .stop_job(StopJobRequest::default())
            .await
            .expect("StopJob")
            .into_inner();
        assert_eq!(stopped.state, "stopped");
        let refused = client
            .resume_job(ResumeJobRequest {
                from: "not-a-checkpoint".into(),
            })
            .await
            .expect_err("resume from nonsense");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
        let resumed = client
            .resume_job(ResumeJobRequest::default())
            .await
            .expect("ResumeJob")
            .into_inner();
        assert_eq!((resumed.state.as_str(), resumed.generation), ("running", 3));
    });

    cluster.wait_state("finished", Duration::from_secs(120));
    let (status, body) = cluster.rest("POST", "/api/v1/job/stop");
    assert_eq!(status, 409, "nothing to stop: {body}");
    let (status, _) = cluster.rest("POST", "/api/v1/job/resume");
    assert_eq!(status, 409);
}

#[test]
fn a_table_that_does_not_match_fails_the_job_at_once_with_its_cause() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_wrong");
    ch.query("DROP TABLE t_wrong.sensors_local");
    ch.query("CREATE TABLE t_wrong.sensors_local (device_id String, time DateTime, temperature String) ENGINE = MergeTree ORDER BY device_id");
    let files: Vec<PathBuf> = (0..2)
        .flat_map(|i| {
            generate(
                dir,
                &format!("in-{i}.avro"),
                &[
                    "--records",
                    "2000",
                    "--devices",
                    "50",
                    "--seed",
                    &i.to_string(),
                ],
            )
        })
        .collect();
    let cluster = Cluster::start(
        dir,
        &coordinator_args(&files, &ch, "t_wrong", &["--min-workers", "2"]),
        2,
    );
    // A retry cannot cure it: the first generation's failure fails the job
    // (no restarts with growing delays), and the status says why.
    let job = cluster.wait_state("failed", Duration::from_secs(60));
    assert_eq!(job["generation"], 1, "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("t_wrong.sensors_local") && error.contains("does not match"),
        "{job}"
    );
    assert!(
        cluster
            .logs()
            .contains("an error that a retry cannot cure; the job fails"),
        "{}",
        cluster.logs()
    );
}
