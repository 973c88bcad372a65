//! Exactly-once output through failures, checked against an independent
//! computation: real coordinator and worker processes, SIGKILLed while the
//! job runs, with output that must hold every row once — window rows, late
//! readings and dead letters alike.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_tests::avro_file::{datum, values, write_container};
use weir_tests::cluster::Cluster;
use weir_tests::expected::{
    assert_rows_match, compute, late_keys_from_json_lines, rows_from_json_lines, Reading,
};
use weir_tests::{args, generate, input_args, jsonl, read_partitions};

const MINUTE: i64 = 60_000;
/// Lateness cannot be computed independently when several partitions
/// carry late data (it depends on how they interleave), so the windows are
/// checked against the input minus the readings the job reported late,
/// computed with no lateness at all.
const NO_LATENESS: i64 = i64::MAX / 4;

/// Three partitions with late data (30 s of disorder against 5 s allowed),
/// and a fourth in order with undecodable datums in every twentieth block
/// (each takes the rest of its block to the dead letters). Returns the
/// files, the fourth's decodable readings, and its dead-lettered records.
fn inputs(dir: &Path) -> (Vec<PathBuf>, Vec<Reading>, u64) {
    let mut files = Vec::new();
    for i in 0..3u64 {
        files.extend(generate(
            dir,
            &format!("late-{i}.avro"),
            &[
                "--records",
                "20000",
                "--devices",
                "500",
                "--rate",
                "150",
                "--disorder-ms",
                "30000",
                "--seed",
                &(70 + i).to_string(),
            ],
        ));
    }
    let source = generate(
        dir,
        "src.avro",
        &[
            "--records",
            "20000",
            "--devices",
            "500",
            "--rate",
            "150",
            "--disorder-ms",
            "2000",
            "--seed",
            "77",
        ],
    );
    let (schema, vals) = values(&source[0]);
    let (mut blocks, mut good, mut dead) = (Vec::new(), Vec::new(), 0u64);
    for (b, chunk) in vals.chunks(100).enumerate() {
        let damaged = b % 20 == 5;
        let mut data = Vec::new();
        let mut count = chunk.len() as i64;
        for (i, v) in chunk.iter().enumerate() {
            if damaged && i == 10 {
                data.extend_from_slice(&[0xff; 11]); // a varint that never ends
                count += 1;
            }
            data.extend(datum(&schema, v));
            if damaged && i >= 10 {
                dead += 1;
            } else {
                good.push(Reading::from_avro(v));
            }
        }
        if damaged {
            dead += 1; // the garbage itself
        }
        blocks.push((count, data));
    }
    let damaged = dir.join("damaged.avro");
    write_container(&damaged, &schema.canonical_form(), &blocks);
    files.push(damaged);
    (files, good, dead)
}

/// Checks the JSON-lines output in `out` against the input: every window
/// row once and equal to the computation over the readings that were not
/// late, every late reading once and one of the input's, every dead letter
/// once.
fn check_output(out: &Path, files: &[PathBuf], good: &[Reading], dead_records: u64) {
    let late_text = jsonl(out, "late_readings.jsonl");
    let late = late_keys_from_json_lines(&late_text);
    let unique: BTreeSet<_> = late.iter().collect();
    assert_eq!(unique.len(), late.len(), "a late reading written twice");
    assert!(!late.is_empty(), "the input has late readings");
    let mut partitions = read_partitions(&files[..3]);
    partitions.push((files[3].display().to_string(), good.to_vec()));
    for (name, readings) in &mut partitions {
        let late_here: BTreeSet<u64> = late
            .iter()
            .filter(|(source, ..)| source == name)
            .map(|(_, ordinal, ..)| *ordinal)
            .collect();
        for (source, ordinal, device, ts) in late.iter().filter(|(s, ..)| s == name) {
            let r = readings
                .get(*ordinal as usize)
                .unwrap_or_else(|| panic!("late reading {source} {ordinal} is not in the input"));
            assert_eq!(
                (format!("sensor_{}", r.sensor_id), r.timestamp),
                (device.clone(), *ts),
                "late reading {source} {ordinal} is the input's"
            );
        }
        let mut i = 0u64;
        readings.retain(|_| {
            let keep = !late_here.contains(&i);
            i += 1;
            keep
        });
    }
    let expected = compute(&partitions, MINUTE, NO_LATENESS);
    // `rows_from_json_lines` fails on a row written twice.
    assert_rows_match(
        "sensors_local",
        &expected.sensors_local,
        &rows_from_json_lines(&jsonl(out, "sensors_local.jsonl"), "time"),
    );
    assert_rows_match(
        "sensor_aggregates_1m",
        &expected.aggregates,
        &rows_from_json_lines(&jsonl(out, "sensor_aggregates_1m.jsonl"), "window_start"),
    );
    let letters: Vec<serde_json::Value> = jsonl(out, "dead_letters.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
        .collect();
    let positions: BTreeSet<String> = letters
        .iter()
        .map(|l| l["position"].as_str().expect("position").to_owned())
        .collect();
    assert_eq!(
        positions.len(),
        letters.len(),
        "a dead letter written twice"
    );
    let records: u64 = letters.iter().filter_map(|l| l["records"].as_u64()).sum();
    assert_eq!(records, dead_records, "every undecodable record once");
    // No in-progress file is left behind by the killed deployments.
    for sub in [
        "sensors_local",
        "sensor_aggregates_1m",
        "late_readings",
        "dead_letters",
    ] {
        let left: Vec<_> = std::fs::read_dir(out.join(sub))
            .expect("output dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".inprogress"))
            .collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}

/// A JSON-lines job on three workers; a worker is SIGKILLed twice while
/// the job runs and comes back under the same id (as a StatefulSet pod
/// would). Each time the job restores the latest checkpoint and commits the
/// epochs it holds again: every row, late reading and dead letter is in the
/// output exactly once.
#[test]
fn killed_workers_leave_every_output_row_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (files, good, dead_records) = inputs(dir);
    let out = dir.join("out");
    let mut a = args(&[
        "--output",
        "out",
        "--data-dir",
        "data",
        "--min-workers",
        "3",
        "--rate-limit",
        "1200",
        "--memory-budget",
        "256KiB",
        "--checkpoint-interval",
        "700ms",
    ]);
    a.extend(input_args(&files));
    let mut cluster = Cluster::start(dir, &a, 3);
    for (round, victim) in ["w-1", "w-2"].into_iter().enumerate() {
        let completed = |c: &Cluster| {
            let (_, list) = c.rest("GET", "/api/v1/checkpoints");
            list["completed"].as_u64().unwrap_or(0)
        };
        let before = completed(&cluster);
        weir_tests::wait_for("checkpoints to complete", Duration::from_secs(60), || {
            completed(&cluster) >= before + 3
        });
        assert_eq!(cluster.job()["state"], "running", "round {round}");
        cluster.kill_worker(victim);
        std::thread::sleep(Duration::from_millis(300));
        cluster.start_worker(victim);
    }
    let job = cluster.wait_state("finished", Duration::from_secs(300));
    assert!(job["generation"].as_u64() >= Some(3), "{job}");
    assert!(job["restored_checkpoint"].as_u64() > Some(0), "{job}");
    check_output(&out, &files, &good, dead_records);
}
