//! The fault-injection soak, briefly (see `weir_tests::soak`; the long run
//! is `scripts/soak.sh --minutes N`).

use std::time::Duration;

use weir_tests::soak::{run, Schedule, Sink, SoakConfig};

fn short(sink: Sink, seed: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = run(
        tmp.path(),
        &SoakConfig {
            duration: Duration::from_secs(60),
            schedule: Schedule::Faults(Duration::from_secs(5)),
            seed,
            rate: 1500,
            devices: 400,
            sink,
        },
    );
    report.print();
    assert!(report.faults.len() >= 5, "faults were injected");
    assert!(report.late_readings > 0, "the data set has late readings");
    assert!(report.dead_letters_injected > 0);
    assert!(report.is_exact(), "the output is not exactly once");
}

#[test]
fn a_minute_of_faults_leaves_clickhouse_exactly_once() {
    short(Sink::ClickHouse, 11);
}

#[test]
fn a_minute_of_faults_leaves_json_lines_exactly_once() {
    short(Sink::Jsonl, 12);
}

/// Rescaling under steady Pulsar load, as a StatefulSet scaled 2 → 4 → 3
/// would: workers started, then one stopped with SIGTERM. Each rescale
/// takes a checkpoint, and the generation after it restores that checkpoint
/// on every key group (the job status's rescales and restored key groups);
/// the output is exactly once.
#[test]
fn rescaling_two_to_four_to_three_workers_under_load_is_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = run(
        tmp.path(),
        &SoakConfig {
            duration: Duration::from_secs(45),
            schedule: Schedule::Replicas {
                initial: 2,
                changes: vec![(Duration::from_secs(12), 4), (Duration::from_secs(27), 3)],
            },
            seed: 21,
            rate: 1500,
            devices: 400,
            sink: Sink::ClickHouse,
        },
    );
    report.print();
    assert_eq!(report.rescales.len(), 2, "both rescales ended");
    let shape: Vec<(u64, u64, &str)> = report
        .rescales
        .iter()
        .map(|r| {
            (
                r["from"].as_u64().unwrap_or(0),
                r["to"].as_u64().unwrap_or(0),
                r["cause"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(shape, [(2, 4, "joined"), (4, 3, "leaving")]);
    assert!(report.is_exact(), "the output is not exactly once");
}
