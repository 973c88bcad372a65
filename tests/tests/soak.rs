//! The fault-injection soak, briefly (see `weir_tests::soak`; the long run
//! is `scripts/soak.sh --minutes N`).

use std::time::Duration;

use weir_tests::soak::{run, Sink, SoakConfig};

fn short(sink: Sink, seed: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = run(
        tmp.path(),
        &SoakConfig {
            duration: Duration::from_secs(60),
            fault_every: Duration::from_secs(5),
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
