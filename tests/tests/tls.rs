//! TLS everywhere, on real processes: a coordinator and two workers serving
//! TLS on every port (REST, gRPC, the workers' shuffle and HTTP) run a job
//! to its end (the workers register over TLS and shuffle to each other
//! over TLS), `weir ctl --tls-ca` reads the job over https://, and plain
//! HTTP and plain gRPC to the TLS ports get no answer. Three coordinators
//! speak raft over TLS and fail over.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use weir_tests::cluster::{Cluster, TlsFiles};
use weir_tests::expected::{assert_rows_match, compute, rows_from_json_lines};
use weir_tests::ha::Group;
use weir_tests::{args, generate, http, input_args, jsonl, read_partitions, wait_for, weir_bin};

/// A CA and a certificate for 127.0.0.1 signed by it, under `dir/tls`.
fn certificates(dir: &Path) -> TlsFiles {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params")
        .signed_by(&key, &*ca)
        .expect("certificate");
    let files = TlsFiles {
        cert: tls.join("tls.crt"),
        key: tls.join("tls.key"),
        ca: tls.join("ca.crt"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    std::fs::write(&files.ca, ca.pem()).expect("write");
    files
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_tls_cluster_runs_its_job_and_refuses_plain_connections() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let tls = certificates(dir);
    let files = generate(
        dir,
        "in.avro",
        &["--records", "20000", "--devices", "500", "--seed", "11"],
    );
    let mut a = args(&[
        "--output",
        "out",
        "--data-dir",
        "data",
        "--min-workers",
        "2",
    ]);
    a.extend(input_args(&files));
    let cluster = Cluster::start_tls(dir, &a, 2, &[], &tls);

    let job = cluster.wait_state("finished", Duration::from_secs(120));
    assert_eq!(job["workers"], 2, "both workers joined over TLS: {job}");
    assert!(
        job["shuffle_records"].as_u64().unwrap_or(0) > 0,
        "records crossed between the workers over TLS: {job}"
    );
    assert!(
        !jsonl(&dir.join("out"), "sensors_local.jsonl").is_empty(),
        "the job wrote its output"
    );

    // `weir ctl` over https://, trusting the CA.
    let coordinator = format!("https://127.0.0.1:{}", cluster.http_port);
    let ctl = std::process::Command::new(weir_bin())
        .args(["ctl", "--coordinator", &coordinator, "--json"])
        .arg("--tls-ca")
        .arg(&tls.ca)
        .arg("status")
        .env_remove("WEIR_TLS_CA")
        .output()
        .expect("weir ctl");
    let stdout = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        ctl.status.success(),
        "weir ctl: {}\n{stdout}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(status["state"], "finished", "{stdout}");

    // ... and without the CA it does not trust the coordinator.
    let untrusted = std::process::Command::new(weir_bin())
        .args(["ctl", "--coordinator", &coordinator, "status"])
        .env_remove("WEIR_TLS_CA")
        .output()
        .expect("weir ctl");
    assert!(!untrusted.status.success(), "trusted without the CA");

    // The worker's port serves its HTTP over TLS too.
    let worker = cluster.worker_port("w-0");
    let (status, body) = cluster
        .request(worker, "GET", "/metrics", &[], "")
        .expect("the worker's /metrics over TLS");
    assert_eq!(status, 200, "{body}");

    // Plain HTTP to every TLS port: no answer.
    for port in [cluster.http_port, cluster.grpc_port, worker] {
        let plain = http::request(port, "GET", "/healthz", "");
        assert!(
            plain.is_err(),
            "plain HTTP to port {port} answered: {plain:?}"
        );
    }

    // Plain gRPC to the coordinator's gRPC port and a worker's port: refused.
    use weir_proto::admin::admin_client::AdminClient;
    use weir_proto::admin::GetJobRequest;
    use weir_proto::shuffle::shuffle_client::ShuffleClient;
    use weir_proto::shuffle::ShuffleFrame;
    runtime().block_on(async {
        let address = format!("http://127.0.0.1:{}", cluster.grpc_port);
        let answer = match AdminClient::connect(address).await {
            Ok(mut client) => client.get_job(GetJobRequest {}).await.map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        assert!(answer.is_err(), "plain gRPC to the coordinator answered");

        let address = format!("http://127.0.0.1:{worker}");
        let answer = match ShuffleClient::connect(address).await {
            Ok(mut client) => client
                .exchange(futures::stream::iter(Vec::<ShuffleFrame>::new()))
                .await
                .map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        assert!(answer.is_err(), "plain gRPC to a worker answered");
    });
}

/// Three coordinators with TLS on every port — raft between them, the
/// workers' control streams, the shuffle, REST — and the cluster secret:
/// they elect a leader, the job runs, the leader is SIGKILLed, another
/// takes over, and the output is still exactly the independent
/// computation's.
#[test]
fn three_tls_coordinators_fail_over_and_the_output_is_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let tls = certificates(dir);
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "200000",
            "--devices",
            "500",
            "--partitions",
            "2",
            "--seed",
            "13",
        ],
    );
    let mut a = args(&[
        "--output",
        "out",
        "--data-dir",
        "data",
        "--min-workers",
        "2",
        "--rate-limit",
        "8000",
        "--checkpoint-interval",
        "2s",
        // Leases that outlast an election: the new leader adopts the
        // running generation.
        "--heartbeat-timeout",
        "8s",
    ]);
    a.extend(input_args(&files));
    let env = [(
        "WEIR_CLUSTER_SECRET".to_string(),
        "raft-over-tls-s3cret".to_string(),
    )];
    let mut group = Group::start_tls(dir, 3, &a, &env, &tls);
    group.start_worker("w-0");
    group.start_worker("w-1");
    wait_for("the job to run", Duration::from_secs(120), || {
        let job = group.job();
        job["state"] == "running" && job["records_in"].as_u64().unwrap_or(0) > 0
    });
    wait_for("a checkpoint", Duration::from_secs(60), || {
        group.latest_checkpoint() > 0
    });
    let (leader, _) = group.wait_leader(None, Duration::from_secs(30));
    let job = group.job();
    assert_eq!(
        job["raft"]["members"].as_array().map(Vec::len),
        Some(3),
        "{job}"
    );
    group.kill_coordinator(leader);
    let (next, took) = group.wait_leader(Some(leader), Duration::from_secs(60));
    assert_ne!(next, leader);
    eprintln!("coordinator {next} leads {took:?} after {leader} was killed");
    wait_for("the job to finish", Duration::from_secs(240), || {
        group.job()["state"] == "finished"
    });
    let expected = compute(&read_partitions(&files), 60_000, 5_000);
    let out = dir.join("out");
    assert_rows_match(
        "sensors_local",
        &expected.sensors_local,
        &rows_from_json_lines(&jsonl(&out, "sensors_local.jsonl"), "time"),
    );
    assert_rows_match(
        "sensor_aggregates_1m",
        &expected.aggregates,
        &rows_from_json_lines(&jsonl(&out, "sensor_aggregates_1m.jsonl"), "window_start"),
    );
}
