//! `weir local` end to end with JSON-lines output: every row compared with
//! the independent computation of the contract.

use std::time::Duration;

use weir_tests::expected::{assert_rows_match, compute, rows_from_json_lines};
use weir_tests::{args, generate, input_args, jsonl, read_partitions, summary_number, weir};

const MINUTE: i64 = 60_000;
const OOO: i64 = 5_000;

#[test]
fn three_file_partitions_match_the_contract() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // 60k readings at 500/s: two minutes of event time over 200 devices,
    // arriving up to 3 s late (within the 5 s bound: nothing is late).
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "60000",
            "--devices",
            "200",
            "--rate",
            "500",
            "--disorder-ms",
            "3000",
            "--partitions",
            "3",
            "--seed",
            "3",
            "--codec",
            "deflate",
        ],
    );
    assert_eq!(files.len(), 3);
    let out = dir.join("out");
    let mut a = args(&["local", "--quiet", "--output"]);
    a.push(out.display().to_string());
    a.extend(args(&["--data-dir"]));
    a.push(dir.join("data").display().to_string());
    a.extend(input_args(&files));
    let mut job = weir(dir, "weir", &a);
    job.wait_success(Duration::from_secs(120));
    assert!(job.stdout().contains("finished"), "{}", job.logs());

    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    assert!(expected.late.is_empty());
    assert!(
        expected.sensors_local.len() > 400,
        "{}",
        expected.sensors_local.len()
    );
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
    assert_eq!(jsonl(&out, "late_readings.jsonl"), "");
    assert_eq!(jsonl(&out, "dead_letters.jsonl"), "");
}

#[test]
fn late_readings_are_reported_and_kept_out_of_windows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Up to 20 s of disorder against a 5 s bound: many late readings.
    let files = generate(
        dir,
        "late.avro",
        &[
            "--records",
            "30000",
            "--devices",
            "100",
            "--rate",
            "300",
            "--disorder-ms",
            "20000",
            "--seed",
            "5",
        ],
    );
    let out = dir.join("out");
    let mut a = args(&["local", "--quiet", "--output"]);
    a.push(out.display().to_string());
    a.push("--data-dir".into());
    a.push(dir.join("data").display().to_string());
    a.extend(input_args(&files));
    let mut job = weir(dir, "weir", &a);
    job.wait_success(Duration::from_secs(120));

    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    assert!(
        expected.late.len() > 100,
        "the data must have late readings: {}",
        expected.late.len()
    );
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
    let late = weir_tests::expected::late_keys_from_json_lines(&jsonl(&out, "late_readings.jsonl"));
    let mut want = expected.late.clone();
    want.sort();
    assert_eq!(late, want);
    assert_eq!(
        summary_number(&job.stdout(), "late readings"),
        want.len() as u64
    );
}

#[test]
fn state_over_the_memory_budget_spills_and_stays_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "50000",
            "--devices",
            "2000",
            "--rate",
            "400",
            "--disorder-ms",
            "4000",
            "--seed",
            "9",
        ],
    );
    let out = dir.join("out");
    let mut a = args(&["local", "--quiet", "--memory-budget", "16KiB", "--output"]);
    a.push(out.display().to_string());
    a.push("--data-dir".into());
    a.push(dir.join("data").display().to_string());
    a.extend(input_args(&files));
    let mut job = weir(dir, "weir", &a);
    job.wait_success(Duration::from_secs(120));
    let spills = summary_number(&job.stdout(), "state spills");
    assert!(
        spills > 10,
        "the budget must force spills: {spills}\n{}",
        job.stdout()
    );
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
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

/// The embedded generator and `weir gen` make the same readings, so the
/// default job (generator source) can be checked against the contract too.
#[test]
fn embedded_generator_job_matches_the_contract() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let out = dir.join("out");
    let mut a = args(&[
        "local",
        "--quiet",
        "--records",
        "40000",
        "--fast",
        "--output",
    ]);
    a.push(out.display().to_string());
    a.push("--data-dir".into());
    a.push(dir.join("data").display().to_string());
    let mut job = weir(dir, "weir", &a);
    job.wait_success(Duration::from_secs(120));
    // The default generator: 500 devices, 30000/s, 2 s disorder, seed 7,
    // two partitions.
    let files = generate(
        dir,
        "same.avro",
        &[
            "--records",
            "40000",
            "--devices",
            "500",
            "--rate",
            "30000",
            "--disorder-ms",
            "2000",
            "--seed",
            "7",
            "--partitions",
            "2",
        ],
    );
    let partitions: Vec<_> = read_partitions(&files)
        .into_iter()
        .enumerate()
        .map(|(i, (_, r))| (format!("generator-{i}"), r))
        .collect();
    let expected = compute(&partitions, MINUTE, OOO);
    assert_rows_match(
        "sensors_local",
        &expected.sensors_local,
        &rows_from_json_lines(&jsonl(&out, "sensors_local.jsonl"), "time"),
    );
}
