//! `weir local` into a real ClickHouse 18.16, with the DDL Weir ships:
//! every row of both contract tables (and the late-readings table) compared
//! with the independent computation, and ClickHouse failing under the job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_tests::clickhouse::ClickHouse;
use weir_tests::expected::compute;
use weir_tests::{args, generate, input_args, read_partitions, summary_number, wait_for, weir};

const MINUTE: i64 = 60_000;
const OOO: i64 = 5_000;

fn local_args(
    dir: &Path,
    ch: &ClickHouse,
    database: &str,
    files: &[PathBuf],
    extra: &[&str],
) -> Vec<String> {
    let mut a = args(&[
        "local",
        "--quiet",
        "--clickhouse",
        &ch.url(),
        "--database",
        database,
        "--data-dir",
    ]);
    a.push(dir.join(format!("data-{database}")).display().to_string());
    a.push("--dead-letters".into());
    a.push(dir.join(format!("dead-{database}")).display().to_string());
    a.extend(args(extra));
    a.extend(input_args(files));
    a
}

/// The DDL script `weir ddl` prints for `database`.
fn weir_ddl_script(database: &str) -> String {
    let out = std::process::Command::new(weir_tests::weir_bin())
        .args(["ddl", "--database", database])
        .output()
        .expect("weir ddl");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One partition of 20,000 readings up to 30 s late (against a 5 s bound).
fn late_input(dir: &Path, seed: u64) -> Vec<PathBuf> {
    generate(
        dir,
        "late.avro",
        &[
            "--records",
            "20000",
            "--devices",
            "100",
            "--rate",
            "200",
            "--disorder-ms",
            "30000",
            "--seed",
            &seed.to_string(),
        ],
    )
}

#[test]
fn contract_tables_match_for_partitions_and_late_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);

    // Two partitions, disorder within the bound.
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "80000",
            "--devices",
            "300",
            "--rate",
            "600",
            "--disorder-ms",
            "4000",
            "--partitions",
            "2",
            "--seed",
            "21",
        ],
    );
    ch.apply_weir_ddl(dir, "t_partitions");
    let mut job = weir(
        dir,
        "weir-partitions",
        &local_args(dir, &ch, "t_partitions", &files, &[]),
    );
    job.wait_success(Duration::from_secs(180));
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    assert!(expected.sensors_local.len() > 500);
    ch.check_contract_tables("t_partitions", &expected);
    assert_eq!(ch.count("t_partitions.late_readings"), 0);
    // Into empty tables, the sink asks once per table for the newest window
    // written, and looks up nothing else.
    let rows = expected.sensors_local.len() as u64;
    assert_eq!(
        summary_number(&job.stdout(), "sink lookups"),
        2,
        "{}",
        job.stdout()
    );

    // The same job again into the same tables (merges are stopped): every
    // row is already there, and none is written twice.
    let mut again = weir(
        dir,
        "weir-again",
        &local_args(dir, &ch, "t_partitions", &files, &[]),
    );
    again.wait_success(Duration::from_secs(180));
    assert!(
        again.stderr().contains("already in the table"),
        "{}",
        again.stderr()
    );
    // Every window is at most the newest written: every insert is looked
    // up (in batches of at most 1,000 rows per table).
    let lookups = summary_number(&again.stdout(), "sink lookups");
    assert!(
        lookups >= 2 + 2 * rows / 1000,
        "{lookups} lookups for {rows} rows"
    );
    ch.check_contract_tables("t_partitions", &expected);
    assert_eq!(
        ch.count("t_partitions.sensors_local"),
        expected.sensors_local.len() as u64
    );

    // One partition with readings up to 30 s late.
    let late_files = late_input(dir, 22);
    ch.apply_weir_ddl(dir, "t_late");
    let mut job = weir(
        dir,
        "weir-late",
        &local_args(dir, &ch, "t_late", &late_files, &["--batch-rows", "100"]),
    );
    job.wait_success(Duration::from_secs(180));
    let expected = compute(&read_partitions(&late_files), MINUTE, OOO);
    assert!(expected.late.len() > 100);
    ch.check_contract_tables("t_late", &expected);
    let mut late: Vec<(String, u64, String, i64)> = ch
        .rows("t_late", "late_readings")
        .into_iter()
        .map(|r| {
            (
                r["source"].as_str().expect("source").to_owned(),
                r["position"]
                    .as_str()
                    .expect("position")
                    .parse()
                    .expect("ordinal"),
                r["device_id"].as_str().expect("device").to_owned(),
                r["timestamp_ms"]
                    .as_i64()
                    .or_else(|| r["timestamp_ms"].as_str().and_then(|s| s.parse().ok()))
                    .expect("timestamp"),
            )
        })
        .collect();
    late.sort();
    let mut want = expected.late.clone();
    want.sort();
    assert_eq!(late, want);
}

#[test]
fn a_table_that_does_not_match_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_bad");
    ch.query("DROP TABLE t_bad.sensors_local");
    ch.query("CREATE TABLE t_bad.sensors_local (device_id String, time DateTime, temperature String) ENGINE = MergeTree ORDER BY device_id");
    let files = generate(dir, "in.avro", &["--records", "1000", "--devices", "10"]);
    let mut job = weir(dir, "weir", &local_args(dir, &ch, "t_bad", &files, &[]));
    let status = job.wait(Duration::from_secs(60));
    assert!(!status.success());
    let err = job.stderr();
    assert!(
        err.contains("t_bad.sensors_local") && err.contains("device_type"),
        "{err}"
    );

    // Same columns in another order: ClickHouse 18.16 would store garbage.
    ch.apply_weir_ddl(dir, "t_order");
    ch.query("DROP TABLE t_order.sensor_aggregates_1m");
    let ddl = weir_ddl_script("t_order").replace(
        "    window_start     DateTime,\n    window_end       DateTime,",
        "    window_end       DateTime,\n    window_start     DateTime,",
    );
    let statement = ddl
        .split(';')
        .find(|s| s.contains("t_order.sensor_aggregates_1m"))
        .expect("aggregates DDL");
    ch.query(statement);
    let mut job = weir(
        dir,
        "weir-order",
        &local_args(dir, &ch, "t_order", &files, &[]),
    );
    assert!(!job.wait(Duration::from_secs(60)).success());
    assert!(job.stderr().contains("in Weir's order"), "{}", job.stderr());

    let files = generate(dir, "in2.avro", &["--records", "1000", "--devices", "10"]);
    let mut job = weir(
        dir,
        "weir-missing",
        &local_args(dir, &ch, "t_nodb", &files, &[]),
    );
    assert!(!job.wait(Duration::from_secs(60)).success());
    assert!(
        job.stderr().contains("does not exist") && job.stderr().contains("weir ddl --apply"),
        "{}",
        job.stderr()
    );
}

/// ClickHouse is down when the job starts, comes up, and is killed
/// (SIGKILL) in the middle of the run: the job waits, retries, and in the
/// end every row is there exactly once.
#[test]
fn clickhouse_down_at_start_and_mid_run_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_outage");
    ch.kill();

    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "160000",
            "--devices",
            "300",
            "--rate",
            "400",
            "--disorder-ms",
            "3000",
            "--partitions",
            "2",
            "--seed",
            "23",
        ],
    );
    // Slow enough (about 8 s) to kill ClickHouse while windows are being
    // written, in small batches so there are many inserts to interrupt.
    let mut job = weir(
        dir,
        "weir",
        &local_args(
            dir,
            &ch,
            "t_outage",
            &files,
            &["--rate-limit", "10000", "--batch-rows", "20"],
        ),
    );
    wait_for(
        "the job to wait for ClickHouse",
        Duration::from_secs(30),
        || job.stderr().contains("waiting for ClickHouse"),
    );
    assert!(
        job.try_status().is_none(),
        "the job waits instead of failing\n{}",
        job.logs()
    );
    ch.restart();
    wait_for("rows to arrive", Duration::from_secs(60), || {
        ch.count("t_outage.sensors_local") > 0
    });
    ch.kill();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        job.try_status().is_none(),
        "the job survives the outage\n{}",
        job.logs()
    );
    ch.restart();
    job.wait_success(Duration::from_secs(180));
    assert!(job.stderr().contains("retrying"), "{}", job.stderr());

    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    // keyed_rows fails on any duplicate (device, window): exactly once.
    ch.check_contract_tables("t_outage", &expected);
    let distinct = ch
        .query("SELECT count() FROM (SELECT DISTINCT device_id, time FROM t_outage.sensors_local)");
    assert_eq!(distinct.trim(), expected.sensors_local.len().to_string());
}

#[test]
fn late_readings_go_to_their_file_while_the_tables_go_to_clickhouse() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_latefile");
    // With `late.policy: file` the database needs no late-readings table.
    ch.query("DROP TABLE t_latefile.late_readings");
    let files = late_input(dir, 23);
    let late_path = dir.join("late");
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        format!("late:\n  policy: file\n  path: {}\n", late_path.display()),
    )
    .expect("spec");
    let mut extra = vec!["--spec".to_owned(), spec.display().to_string()];
    extra.extend(args(&["--batch-rows", "100"]));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut job = weir(
        dir,
        "weir-latefile",
        &local_args(dir, &ch, "t_latefile", &files, &extra),
    );
    job.wait_success(Duration::from_secs(180));
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    assert!(expected.late.len() > 100);
    ch.check_contract_tables("t_latefile", &expected);
    let late = weir_tests::expected::late_keys_from_json_lines(
        &weir_tests::read_parts(&late_path).expect("late readings"),
    );
    let mut want = expected.late.clone();
    want.sort();
    assert_eq!(late, want);
}

#[test]
fn a_generation_stops_inserts_of_earlier_generations_before_it_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_fence");
    // Stand-ins for inserts still running on the server: one named as
    // generation 0 of this job would be, one of another job.
    let port = ch.http_port();
    let long = |id: &'static str| {
        std::thread::spawn(move || {
            weir_tests::http::request(
                port,
                "POST",
                &format!("/?query_id={id}"),
                "SELECT count() FROM numbers(100000000000)",
            )
        })
    };
    let ours = long("weir-iot_sensor_aggregation-g0-w_0-7");
    let theirs = long("weir-other_job-g0-w_0-7");
    let running = || {
        ch.query("SELECT count() FROM system.processes WHERE query_id LIKE 'weir-%'")
            .trim()
            .to_owned()
    };
    weir_tests::wait_for("both queries to run", Duration::from_secs(30), || {
        running() == "2"
    });
    let files = generate(dir, "in.avro", &["--records", "2000", "--devices", "20"]);
    let mut job = weir(dir, "weir", &local_args(dir, &ch, "t_fence", &files, &[]));
    job.wait_success(Duration::from_secs(120));
    // This job's earlier generation was stopped (and waited for) before the
    // job wrote; the other job's query runs on.
    let (status, body) = ours.join().expect("join").expect("answer");
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("cancel"), "{body}");
    assert_eq!(running(), "1");
    ch.query("KILL QUERY WHERE query_id = 'weir-other_job-g0-w_0-7' SYNC");
    let _ = theirs.join();
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_fence", &expected);
}
