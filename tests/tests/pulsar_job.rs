//! The job reading a Pulsar topic from the test broker: `weir produce` and
//! the official Python client publish, `weir local --pulsar` aggregates, and
//! every output row is compared with the independent computation — through
//! broker disconnects, a stop and a restore of its checkpoint, a topic that
//! is not the checkpoint's, `--start-from`, bad
//! messages on the topic and partitions added while the job runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apache_avro::types::Value;
use weir_tests::clickhouse::ClickHouse;
use weir_tests::cluster::Cluster;
use weir_tests::expected::{assert_rows_match, compute, rows_from_json_lines, Expected};
use weir_tests::process::Proc;
use weir_tests::pulsar_broker::{BrokerConfig, BrokerTls, TestBroker};
use weir_tests::{
    args, generate, jsonl, read_partitions, summary_number, wait_for, weir, weir_bin,
};

const MINUTE: i64 = 60_000;
const OOO: i64 = 5_000;
const TOPIC: &str = "persistent://public/default/iot-sensor-data";

/// A generated stream of readings: `weir gen` writes it to a file (from
/// which the expected rows are computed), `weir produce` publishes the very
/// same stream.
struct Stream {
    records: u64,
    devices: u32,
    rate: u32,
    disorder_ms: u64,
    seed: u64,
    start_ms: Option<i64>,
}

impl Stream {
    /// In order (no disorder), from the generator's default start.
    fn new(records: u64, devices: u32, rate: u32, seed: u64) -> Stream {
        Stream {
            records,
            devices,
            rate,
            disorder_ms: 0,
            seed,
            start_ms: None,
        }
    }

    fn common_args(&self) -> Vec<String> {
        let mut a = args(&[
            "--records",
            &self.records.to_string(),
            "--devices",
            &self.devices.to_string(),
            "--disorder-ms",
            &self.disorder_ms.to_string(),
            "--seed",
            &self.seed.to_string(),
        ]);
        if let Some(s) = self.start_ms {
            a.extend(args(&["--start-ms", &s.to_string()]));
        }
        a
    }

    /// The stream as one Avro file (one partition, in generation order).
    fn file(&self, dir: &Path, name: &str) -> PathBuf {
        let mut a = self.common_args();
        a.extend(args(&["--rate", &self.rate.to_string()]));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let files = generate(dir, name, &refs);
        assert_eq!(files.len(), 1, "{files:?}");
        files.into_iter().next().expect("one file")
    }

    /// Publishes the stream with `weir produce`.
    fn produce(&self, dir: &Path, name: &str, url: &str, topic: &str) {
        let mut a = args(&["produce", "--quiet", "--pulsar", url, "--topic", topic]);
        a.extend(self.common_args());
        a.extend(args(&["--event-rate", &self.rate.to_string()]));
        let mut p = weir(dir, name, &a);
        p.wait_success(Duration::from_secs(120));
        assert!(
            p.stdout()
                .contains(&format!("weir produce: {} messages", group(self.records))),
            "{}",
            p.logs()
        );
    }
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `weir local` reading `topic`, writing JSON lines into `out`.
fn local_to_jsonl(dir: &Path, url: &str, topic: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["local", "--quiet", "--pulsar", url, "--topic", topic]);
    a.push("--output".into());
    a.push(out.display().to_string());
    a.push("--data-dir".into());
    a.push(dir.join("data").display().to_string());
    a.extend(args(extra));
    a
}

/// Both contract tables in `out` hold exactly the expected rows, each once.
fn check_jsonl(out: &Path, expected: &Expected) {
    let local = jsonl(out, "sensors_local.jsonl");
    let aggregates = jsonl(out, "sensor_aggregates_1m.jsonl");
    assert_rows_match(
        "sensors_local",
        &expected.sensors_local,
        &rows_from_json_lines(&local, "time"),
    );
    assert_rows_match(
        "sensor_aggregates_1m",
        &expected.aggregates,
        &rows_from_json_lines(&aggregates, "window_start"),
    );
    assert_eq!(
        local.lines().count(),
        expected.sensors_local.len(),
        "every sensors_local row once"
    );
    assert_eq!(
        aggregates.lines().count(),
        expected.aggregates.len(),
        "every aggregate row once"
    );
    assert_eq!(jsonl(out, "late_readings.jsonl"), "");
}

fn expected_of(files: &[PathBuf]) -> Expected {
    // All files as one partition, in order: each stream's readings follow
    // the previous stream's in event time.
    let readings = read_partitions(files)
        .into_iter()
        .flat_map(|(_, r)| r)
        .collect();
    let expected = compute(&[("all".to_owned(), readings)], MINUTE, OOO);
    assert!(expected.late.is_empty());
    expected
}

/// A test broker on a free port; topics created on first use have
/// `partitions` partitions (0: not partitioned).
fn broker_with(partitions: u32) -> TestBroker {
    TestBroker::start(BrokerConfig {
        partitions,
        ..BrokerConfig::default()
    })
    .expect("start the test broker")
}

fn partition(topic: &str, n: u32) -> String {
    format!("{topic}-partition-{n}")
}

#[test]
fn produced_readings_through_four_partitions_match_in_clickhouse() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(4);
    let stream = Stream {
        disorder_ms: 2_000,
        ..Stream::new(60_000, 200, 500, 41)
    };
    stream.produce(dir, "produce", &broker.url(), TOPIC);
    for p in 0..4 {
        let entries = broker.entries(&partition(TOPIC, p));
        assert!(
            entries > 0 && entries < 15_000,
            "partition {p} has batched entries: {entries}"
        );
    }
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_pulsar");
    let mut a = args(&[
        "local",
        "--quiet",
        "--pulsar",
        &broker.url(),
        "--until-idle",
        "2s",
        "--clickhouse",
        &ch.url(),
        "--database",
        "t_pulsar",
        "--data-dir",
    ]);
    a.push(dir.join("data").display().to_string());
    let mut job = weir(dir, "weir-local", &a);
    job.wait_success(Duration::from_secs(180));
    assert_eq!(summary_number(&job.stdout(), "records read"), 60_000);
    let expected = expected_of(&[stream.file(dir, "expected.avro")]);
    assert!(expected.sensors_local.len() > 400);
    ch.check_contract_tables("t_pulsar", &expected);
    assert_eq!(ch.count("t_pulsar.late_readings"), 0);
}

#[test]
fn messages_from_the_official_python_client_are_read_plain_batched_and_compressed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(3);
    let stream = Stream::new(20_000, 100, 200, 42);
    let file = stream.file(dir, "python.avro");
    let (schema, values) = weir_tests::avro_file::values(&file);
    let mut lines = String::new();
    for v in &values {
        let Value::Record(fields) = v else {
            panic!("a record: {v:?}")
        };
        let key = fields
            .iter()
            .find_map(|(n, v)| match (n.as_str(), v) {
                ("sensorId", Value::Int(id)) => Some(*id),
                _ => None,
            })
            .expect("sensorId");
        let hex: String = weir_tests::avro_file::datum(&schema, v)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        lines.push_str(&format!("{key} {hex}\n"));
    }
    let messages = dir.join("messages.txt");
    std::fs::write(&messages, lines).expect("write messages");
    let script = format!(
        "{}/python/pulsar_produce_raw.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(broker.url())
        .arg(TOPIC)
        .arg(&messages)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python producer failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let entries: usize = (0..3).map(|p| broker.entries(&partition(TOPIC, p))).sum();
    assert!(
        entries > 10_000 && entries < 15_000,
        "half the messages are batched: {entries} entries"
    );
    // ... and the batches come with each codec the client offers.
    let mut codecs = std::collections::BTreeMap::new();
    for p in 0..3 {
        for (codec, n) in broker.entries_by_codec(&partition(TOPIC, p)) {
            *codecs.entry(codec).or_insert(0) += n;
        }
    }
    for codec in ["NONE", "LZ4", "ZLIB", "ZSTD", "SNAPPY"] {
        assert!(
            codecs.get(codec).copied().unwrap_or(0) > 0,
            "entries compressed with {codec}: {codecs:?}"
        );
    }

    let out = dir.join("out");
    let mut job = weir(
        dir,
        "weir-local",
        &local_to_jsonl(dir, &broker.url(), TOPIC, &out, &["--until-idle", "2s"]),
    );
    job.wait_success(Duration::from_secs(120));
    assert_eq!(summary_number(&job.stdout(), "records read"), 20_000);
    check_jsonl(&out, &expected_of(&[file]));
    assert_eq!(jsonl(&out, "dead_letters.jsonl"), "");
}

#[test]
fn broker_disconnects_lose_and_repeat_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(4);
    let stream = Stream {
        disorder_ms: 1_000,
        ..Stream::new(40_000, 200, 400, 43)
    };
    stream.produce(dir, "produce", &broker.url(), TOPIC);
    let out = dir.join("out");
    // About 4 s of reading (2,500 records per second per partition).
    let mut job = weir(
        dir,
        "weir-local",
        &local_to_jsonl(
            dir,
            &broker.url(),
            TOPIC,
            &out,
            &["--until-idle", "3s", "--rate-limit", "2500"],
        ),
    );
    wait_for("the job's consumers", Duration::from_secs(30), || {
        broker.connection_count() > 0
    });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1200));
        assert!(job.try_status().is_none(), "still running: {}", job.logs());
        broker.drop_connections();
        wait_for("the job to reconnect", Duration::from_secs(30), || {
            broker.connection_count() > 0
        });
    }
    job.wait_success(Duration::from_secs(120));
    // The broker sent again what was not acknowledged; the job dropped it.
    let redelivered: u64 = job
        .stderr()
        .split("redelivered_and_dropped=")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(redelivered > 0, "{}", job.stderr());
    assert_eq!(summary_number(&job.stdout(), "records read"), 40_000);
    check_jsonl(&out, &expected_of(&[stream.file(dir, "expected.avro")]));
}

#[test]
fn a_stopped_run_is_resumed_from_its_final_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(4);
    // 60k readings over two minutes of event time.
    let stream = Stream::new(60_000, 200, 500, 44);
    stream.produce(dir, "produce", &broker.url(), TOPIC);
    let out = dir.join("out");
    // Slowly (6,000 records a second), stopped once the first minute's
    // windows are written.
    let mut first = weir(
        dir,
        "weir-first",
        &local_to_jsonl(dir, &broker.url(), TOPIC, &out, &["--rate-limit", "1500"]),
    );
    wait_for("the first windows", Duration::from_secs(60), || {
        weir_tests::read_parts(&out.join("sensors_local")).is_ok_and(|s| s.lines().count() >= 200)
    });
    std::thread::sleep(Duration::from_millis(1500));
    first.signal("TERM");
    first.wait_success(Duration::from_secs(60));
    let read_first = summary_number(&first.stdout(), "records read");
    assert!(read_first < 60_000, "stopped before the end: {read_first}");
    assert!(
        !dir.join("data/iot-sensor-aggregation.positions.json")
            .exists(),
        "checkpoints are the only record of positions"
    );

    let mut second = weir(
        dir,
        "weir-second",
        &local_to_jsonl(dir, &broker.url(), TOPIC, &out, &["--until-idle", "2s"]),
    );
    second.wait_success(Duration::from_secs(120));
    // The first run stopped after a final checkpoint (its sources read
    // nothing after its barriers): the second restores it.
    assert!(
        second
            .stderr()
            .contains("restoring the job from its latest completed checkpoint"),
        "{}",
        second.stderr()
    );
    let read_second = summary_number(&second.stdout(), "records read");
    assert!(
        read_second < 45_000 && read_first + read_second >= 60_000,
        "the second run reads only what the first did not finish: {read_first} + {read_second}"
    );
    check_jsonl(&out, &expected_of(&[stream.file(dir, "expected.avro")]));

    // A third run finds nothing new and writes nothing.
    let mut third = weir(
        dir,
        "weir-third",
        &local_to_jsonl(dir, &broker.url(), TOPIC, &out, &["--until-idle", "1s"]),
    );
    third.wait_success(Duration::from_secs(60));
    assert_eq!(summary_number(&third.stdout(), "rows written"), 0);
    check_jsonl(&out, &expected_of(&[stream.file(dir, "expected2.avro")]));
}

/// Runs `weir local` on `out` and expects it to fail; returns its logs.
fn refused(dir: &Path, name: &str, url: &str, out: &Path) -> String {
    let mut run = weir(
        dir,
        name,
        &local_to_jsonl(dir, url, TOPIC, out, &["--until-idle", "2s"]),
    );
    let status = run.wait(Duration::from_secs(120));
    assert!(!status.success(), "{}", run.logs());
    run.logs()
}

#[test]
fn a_recreated_topic_is_refused_until_the_job_is_told_where_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(2);
    let url = broker.url();
    // Far more than the run reads at its rate limit: a pull takes whole
    // entries of up to 1,000 messages, so the limit holds only to about two
    // entries per partition, and stopping (a final checkpoint) takes a
    // while on a loaded machine.
    let first = Stream::new(40_000, 100, 500, 46);
    first.produce(dir, "produce-first", &url, TOPIC);
    // Stopped part-way: it stops after a checkpoint that the next run
    // restores (a job that ran to its end starts over from where its
    // subscription is instead).
    let out = dir.join("out");
    let mut run = weir(
        dir,
        "weir-first",
        &local_to_jsonl(dir, &url, TOPIC, &out, &["--rate-limit", "1000"]),
    );
    std::thread::sleep(Duration::from_secs(3));
    run.signal("TERM");
    run.wait_success(Duration::from_secs(60));
    let read = summary_number(&run.stdout(), "records read");
    assert!(read > 0 && read < 40_000, "stopped part-way: {read}");

    // The topic is deleted and created again: its partitions hold no
    // message, or other ones (in new ledgers) than the checkpoint's. The
    // job fails naming the partition and the position, writing nothing.
    broker.delete_topic(TOPIC);
    broker.create_topic(TOPIC, 2);
    let out2 = dir.join("out2");
    let logs = refused(dir, "weir-empty", &url, &out2);
    assert!(
        logs.contains(&format!("partition {}", partition(TOPIC, 0)))
            || logs.contains(&format!("partition {}", partition(TOPIC, 1))),
        "{logs}"
    );
    assert!(
        logs.contains("the partition holds no message") && logs.contains("--start-from earliest"),
        "{logs}"
    );
    let second = Stream::new(8_000, 100, 500, 47);
    second.produce(dir, "produce-second", &url, TOPIC);
    let logs = refused(dir, "weir-other", &url, &out2);
    assert!(
        logs.contains("and not the position itself") && logs.contains("--start-from earliest"),
        "{logs}"
    );
    for table in ["sensors_local.jsonl", "sensor_aggregates_1m.jsonl"] {
        assert_eq!(
            weir_tests::read_parts(&out2.join(table.trim_end_matches(".jsonl")))
                .unwrap_or_default(),
            "",
            "nothing written"
        );
    }

    // Told to start at the earliest message, it reads the new topic.
    let mut earliest = weir(
        dir,
        "weir-earliest",
        &local_to_jsonl(
            dir,
            &url,
            TOPIC,
            &out2,
            &["--until-idle", "2s", "--start-from", "earliest"],
        ),
    );
    earliest.wait_success(Duration::from_secs(120));
    assert_eq!(summary_number(&earliest.stdout(), "records read"), 8_000);
    check_jsonl(&out2, &expected_of(&[second.file(dir, "second.avro")]));

    // Told to start at the latest, it skips what is on the topic (all of
    // the second stream again) and reads only what is published after it
    // subscribed.
    second.produce(dir, "produce-again", &url, TOPIC);
    let out3 = dir.join("out3");
    let mut latest = weir(
        dir,
        "weir-latest",
        &local_to_jsonl(
            dir,
            &url,
            TOPIC,
            &out3,
            &["--until-idle", "6s", "--start-from", "latest"],
        ),
    );
    wait_for(
        "both subscriptions at the end",
        Duration::from_secs(60),
        || latest.stderr().matches("subscription moved").count() >= 2,
    );
    let third = Stream::new(6_000, 100, 500, 48);
    third.produce(dir, "produce-third", &url, TOPIC);
    latest.wait_success(Duration::from_secs(120));
    assert_eq!(summary_number(&latest.stdout(), "records read"), 6_000);
    check_jsonl(&out3, &expected_of(&[third.file(dir, "third.avro")]));
}

#[test]
fn bad_messages_go_to_dead_letters_with_their_message_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(0);
    broker.create_topic(TOPIC, 2);
    let p0 = partition(TOPIC, 0);
    let p1 = partition(TOPIC, 1);
    // Not Avro at all, and an Avro datum of another schema ({id: long}).
    let json = br#"{"sensorId": 7, "temperature": 21.5}"#;
    let (l0, e0) = broker.inject(&p0, Some("7"), json);
    let (l1, e1) = broker.inject(&p1, Some("8"), &[0x0e]);
    let stream = Stream::new(20_000, 100, 300, 45);
    stream.produce(dir, "produce", &broker.url(), TOPIC);
    let (l2, e2) = broker.inject(&p1, None, b"");

    let out = dir.join("out");
    let mut job = weir(
        dir,
        "weir-local",
        &local_to_jsonl(dir, &broker.url(), TOPIC, &out, &["--until-idle", "2s"]),
    );
    job.wait_success(Duration::from_secs(120));
    assert_eq!(summary_number(&job.stdout(), "records read"), 20_000);
    assert_eq!(summary_number(&job.stdout(), "dead letters"), 3);
    check_jsonl(&out, &expected_of(&[stream.file(dir, "expected.avro")]));
    let dead: BTreeSet<(String, String)> = jsonl(&out, "dead_letters.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains("message")),
                "{v}"
            );
            (
                v["source"].as_str().expect("source").to_owned(),
                v["position"].as_str().expect("position").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        (p0.clone(), format!("{l0}:{e0}:-1")),
        (p1.clone(), format!("{l1}:{e1}:-1")),
        (p1.clone(), format!("{l2}:{e2}:-1")),
    ]
    .into_iter()
    .collect();
    assert_eq!(dead, want);
}

/// `weir local` against `url` with a token from `WEIR_TEST_PULSAR_TOKEN`.
fn with_token(dir: &Path, name: &str, url: &str, token: &str) -> Proc {
    let mut cmd = Command::new(weir_bin());
    cmd.args(local_to_jsonl(
        dir,
        url,
        TOPIC,
        &dir.join(format!("out-{name}")),
        &[
            "--until-idle",
            "1s",
            "--token-env",
            "WEIR_TEST_PULSAR_TOKEN",
        ],
    ))
    .env("WEIR_TEST_PULSAR_TOKEN", token)
    .env("WEIR_LOG", "info")
    .env("NO_COLOR", "1");
    Proc::spawn(name, cmd, dir)
}

#[test]
fn a_wrong_token_or_an_unreachable_broker_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = TestBroker::start(BrokerConfig {
        partitions: 2,
        token: Some("s3cret".into()),
        ..BrokerConfig::default()
    })
    .expect("broker");

    let mut wrong = with_token(dir, "wrong-token", &broker.url(), "guess");
    assert!(!wrong.wait(Duration::from_secs(60)).success());
    let err = wrong.stderr();
    assert!(
        err.contains(&broker.url()) && err.to_lowercase().contains("auth"),
        "{err}"
    );

    let mut right = with_token(dir, "right-token", &broker.url(), "s3cret");
    right.wait_success(Duration::from_secs(60));

    let nobody = format!("pulsar://127.0.0.1:{}", weir_tests::free_port());
    let mut unreachable = weir(
        dir,
        "unreachable",
        &local_to_jsonl(
            dir,
            &nobody,
            TOPIC,
            &dir.join("out-x"),
            &["--until-idle", "1s"],
        ),
    );
    assert!(!unreachable.wait(Duration::from_secs(90)).success());
    let err = unreachable.stderr();
    assert!(
        err.contains(&nobody) && err.to_lowercase().contains("connect"),
        "{err}"
    );
}

#[test]
fn partitions_added_while_running_are_read_with_the_registry_schema() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(0);
    broker.create_topic(TOPIC, 2);
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../common/contract/sensor_data.avsc"
    ))
    .expect("contract schema");
    broker.set_avro_schema(TOPIC, &schema);
    let before = Stream::new(20_000, 100, 400, 46);
    before.produce(dir, "produce-before", &broker.url(), TOPIC);
    let spec = dir.join("job.yaml");
    std::fs::write(
        &spec,
        "source:\n  pulsar:\n    schema_from_registry: true\n    discovery_interval: 500ms\n",
    )
    .expect("spec");
    let out = dir.join("out");
    let mut a = local_to_jsonl(
        dir,
        &broker.url(),
        TOPIC,
        &out,
        &["--until-idle", "3s", "--rate-limit", "2000"],
    );
    a.push("--spec".into());
    a.push(spec.display().to_string());
    let mut job = weir(dir, "weir-local", &a);
    wait_for("the job's consumers", Duration::from_secs(30), || {
        broker.connection_count() > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    broker.add_partitions(TOPIC, 4);
    // 50 s of event time later, on all four partitions.
    let after = Stream {
        start_ms: Some(1_760_054_400_000 + 100_000),
        ..Stream::new(10_000, 100, 400, 47)
    };
    after.produce(dir, "produce-after", &broker.url(), TOPIC);
    assert!(broker.entries(&partition(TOPIC, 3)) > 0);
    job.wait_success(Duration::from_secs(120));
    assert!(
        job.stderr().contains("new input partitions"),
        "the new partitions were found: {}",
        job.stderr()
    );
    // The generation that reads the new partitions restores the latest
    // checkpoint (one is taken as windows close): it reads what follows it.
    let read = summary_number(&job.stdout(), "records read");
    assert!(read > 10_000 && read <= 30_000, "{read}");
    check_jsonl(
        &out,
        &expected_of(&[
            before.file(dir, "before.avro"),
            after.file(dir, "after.avro"),
        ]),
    );
}

#[test]
fn a_killed_worker_of_a_pulsar_job_is_restored_from_its_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let broker = broker_with(4);
    let url = broker.url();
    // 80 s of event time over 2,000 devices: windows close while the job
    // runs, and open ones are in the checkpoints.
    let stream = Stream::new(80_000, 2_000, 1_000, 49);
    stream.produce(dir, "produce", &url, TOPIC);
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_pkill");
    let coordinator = args(&[
        "--pulsar",
        &url,
        "--topic",
        TOPIC,
        "--until-idle",
        "3s",
        "--clickhouse",
        &ch.url(),
        "--database",
        "t_pkill",
        "--data-dir",
        "data",
        "--min-workers",
        "2",
        "--rate-limit",
        "2000",
        "--checkpoint-interval",
        "500ms",
    ]);
    let mut cluster = Cluster::start(dir, &coordinator, 2);
    wait_for(
        "three completed checkpoints",
        Duration::from_secs(60),
        || {
            let (_, list) = cluster.rest("GET", "/api/v1/checkpoints");
            list["completed"].as_u64().unwrap_or(0) >= 3
        },
    );
    assert_eq!(cluster.job()["state"], "running", "still running");
    cluster.kill_worker("w-1");
    let job = cluster.wait_state("finished", Duration::from_secs(240));
    assert!(job["generation"].as_u64() > Some(1), "{job}");
    assert!(
        job["restored_checkpoint"].as_u64() > Some(0),
        "the last generation restored a checkpoint: {job}"
    );
    assert!(
        job["records_in"].as_u64() < Some(80_000),
        "the restored generation read on from the checkpoint: {job}"
    );
    let expected = expected_of(&[stream.file(dir, "expected.avro")]);
    ch.check_contract_tables("t_pkill", &expected);
    for p in job["partitions"].as_array().expect("partitions") {
        assert!(
            p["checkpointed"].as_str().is_some_and(|c| !c.is_empty()),
            "{job}"
        );
    }
    // The subscription was acknowledged up to the final checkpoint: a new
    // run (the job ran to its end, so it starts from the subscription)
    // finds nothing to read.
    drop(cluster);
    let mut again = weir(
        dir,
        "weir-again",
        &local_to_jsonl(dir, &url, TOPIC, &dir.join("out"), &["--until-idle", "1s"]),
    );
    again.wait_success(Duration::from_secs(60));
    assert_eq!(summary_number(&again.stdout(), "records read"), 0);
}

/// A CA (its PEM file under `dir`) and the broker's identity: a
/// certificate for 127.0.0.1 signed by that CA, with its key.
fn broker_certificates(dir: &Path) -> (PathBuf, BrokerTls) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &*ca)
        .expect("certificate");
    let ca_file = dir.join("pulsar-ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA");
    let identity = BrokerTls {
        certificate_chain_pem: cert.pem(),
        private_key_pem: key.serialize_pem(),
    };
    (ca_file, identity)
}

/// `weir` with `args` and `token` in `WEIR_TEST_PULSAR_TOKEN`.
fn weir_with_token(dir: &Path, name: &str, args: &[String], token: &str) -> Proc {
    let mut cmd = Command::new(weir_bin());
    cmd.args(args)
        .env("WEIR_TEST_PULSAR_TOKEN", token)
        .env("WEIR_LOG", "info")
        .env("NO_COLOR", "1");
    Proc::spawn(name, cmd, dir)
}

/// A TLS test broker with the token `s3cret` and two partitions, and the
/// PEM file of the CA that signed its certificate.
fn tls_broker(dir: &Path) -> (TestBroker, PathBuf) {
    let (ca, identity) = broker_certificates(dir);
    let broker = TestBroker::start(BrokerConfig {
        partitions: 2,
        token: Some("s3cret".into()),
        tls: Some(identity),
        ..BrokerConfig::default()
    })
    .expect("start the TLS test broker");
    assert!(
        broker.url().starts_with("pulsar+ssl://127.0.0.1:"),
        "{}",
        broker.url()
    );
    (broker, ca)
}

const TOKEN_FLAGS: [&str; 2] = ["--token-env", "WEIR_TEST_PULSAR_TOKEN"];

/// Publishes `stream` with `weir produce` over TLS, trusting `ca`.
fn produce_tls(dir: &Path, stream: &Stream, url: &str, ca: &Path) {
    let mut a = args(&["produce", "--quiet", "--pulsar", url, "--topic", TOPIC]);
    a.extend(args(&TOKEN_FLAGS));
    a.extend(args(&["--tls-ca-file", &ca.display().to_string()]));
    a.extend(stream.common_args());
    a.extend(args(&["--event-rate", &stream.rate.to_string()]));
    let mut produce = weir_with_token(dir, "produce", &a, "s3cret");
    produce.wait_success(Duration::from_secs(120));
    assert!(
        produce
            .stdout()
            .contains(&format!("weir produce: {} messages", group(stream.records))),
        "{}",
        produce.logs()
    );
}

/// A job spec file with the TLS settings (they are spec keys, with no
/// flag). A spec is checked on its own, before the flags apply, so it
/// names the pulsar+ssl:// URL too.
fn tls_spec(dir: &Path, name: &str, url: &str, settings: &str) -> PathBuf {
    let spec = dir.join(name);
    std::fs::write(
        &spec,
        format!("source:\n  pulsar:\n    url: {url:?}\n{settings}"),
    )
    .expect("spec");
    spec
}

/// `weir local` over TLS with the token, writing into `dir/name`, with
/// the spec if any; returns the finished process.
fn local_tls(dir: &Path, name: &str, url: &str, spec: Option<&Path>) -> Proc {
    let mut a = local_to_jsonl(
        &dir.join(name),
        url,
        TOPIC,
        &dir.join(name).join("out"),
        &["--until-idle", "2s"],
    );
    a.extend(args(&TOKEN_FLAGS));
    if let Some(spec) = spec {
        a.extend(args(&["--spec", &spec.display().to_string()]));
    }
    let mut job = weir_with_token(dir, name, &a, "s3cret");
    job.wait(Duration::from_secs(120));
    job
}

#[test]
fn a_tls_broker_with_a_token_is_read_to_the_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (broker, ca) = tls_broker(dir);
    let url = broker.url();
    let stream = Stream::new(20_000, 100, 400, 50);
    produce_tls(dir, &stream, &url, &ca);
    for p in 0..2 {
        assert!(broker.entries(&partition(TOPIC, p)) > 0, "partition {p}");
    }

    // The job's client (lookups, the schema, seeks) and its own consumers
    // all connect over TLS: the broker has no plain port.
    let spec = tls_spec(
        dir,
        "with-ca.yaml",
        &url,
        &format!("    tls_ca_file: {:?}\n", ca.display().to_string()),
    );
    let mut job = local_tls(dir, "weir-local", &url, Some(&spec));
    assert!(
        job.try_status().is_some_and(|s| s.success()),
        "{}",
        job.logs()
    );
    assert_eq!(summary_number(&job.stdout(), "records read"), 20_000);
    assert_eq!(summary_number(&job.stdout(), "dead letters"), 0);
    let out = dir.join("weir-local/out");
    check_jsonl(&out, &expected_of(&[stream.file(dir, "expected.avro")]));
    assert_eq!(jsonl(&out, "dead_letters.jsonl"), "");

    // Without the CA (and not insecure) the broker's certificate is not
    // trusted: the job fails at start, naming the URL.
    let mut no_ca = local_tls(dir, "weir-no-ca", &url, None);
    assert!(
        no_ca.try_status().is_some_and(|s| !s.success()),
        "{}",
        no_ca.logs()
    );
    let err = no_ca.stderr();
    assert!(
        err.contains(&format!("cannot connect to Pulsar at {url}")),
        "{err}"
    );
}

/// A certificate the job does not trust is named as the cause, and
/// `tls_allow_insecure` (which the client library cannot honour) is refused
/// by name rather than silently ignored.
#[test]
fn tls_errors_are_named_and_insecure_tls_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (broker, ca) = tls_broker(dir);
    let url = broker.url();
    let stream = Stream::new(5_000, 50, 400, 51);
    produce_tls(dir, &stream, &url, &ca);

    // The client library drops the handshake's error; Weir names it.
    let no_ca = local_tls(dir, "weir-no-ca", &url, None);
    let err = no_ca.stderr().to_lowercase();
    assert!(
        err.contains(&url) && err.contains("tls handshake failed") && err.contains("certificate"),
        "{err}"
    );

    // Skipping verification is not offered: the key is refused by name.
    let spec = tls_spec(dir, "insecure.yaml", &url, "    tls_allow_insecure: true\n");
    let job = local_tls(dir, "weir-insecure", &url, Some(&spec));
    let err = job.stderr();
    assert!(
        err.contains("source.pulsar.tls_allow_insecure") && err.contains("tls_ca_file"),
        "{err}"
    );
    let _ = stream;
}
