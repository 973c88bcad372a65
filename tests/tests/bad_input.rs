//! Bad input: damaged files, undecodable datums, wrong schemas, bad specs.
//! None of it stops a running job or vanishes: it ends up in the dead-letter
//! file with its partition and position, and every record is accounted for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apache_avro::types::Value;
use weir_tests::avro_file::{datum, values, with_garbage_datum, write_container};
use weir_tests::expected::{assert_rows_match, compute, read_avro, rows_from_json_lines, Reading};
use weir_tests::{args, generate, input_args, summary_number, weir};

const MINUTE: i64 = 60_000;
const OOO: i64 = 5_000;

fn run_local(dir: &Path, files: &[PathBuf]) -> weir_tests::process::Proc {
    let mut a = args(&["local", "--quiet", "--output"]);
    a.push(dir.join("out").display().to_string());
    a.push("--data-dir".into());
    a.push(dir.join("data").display().to_string());
    a.extend(input_args(files));
    let mut job = weir(dir, "weir", &a);
    job.wait(Duration::from_secs(120));
    job
}

fn out(dir: &Path, name: &str) -> String {
    weir_tests::jsonl(&dir.join("out"), name)
}

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    out(dir, "dead_letters.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
        .collect()
}

fn readings_in_windows(dir: &Path) -> u64 {
    out(dir, "sensor_aggregates_1m.jsonl")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["readings"]
                .as_u64()
                .expect("readings")
        })
        .sum()
}

#[test]
fn truncated_file_keeps_whole_blocks_and_dead_letters_the_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let files = generate(
        dir,
        "in.avro",
        &[
            "--records",
            "20000",
            "--devices",
            "50",
            "--rate",
            "200",
            "--seed",
            "4",
        ],
    );
    let len = std::fs::metadata(&files[0]).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .expect("open");
    file.set_len(len - 3000).expect("truncate");

    let mut job = run_local(dir, &files);
    assert!(
        job.try_status().expect("exited").success(),
        "{}",
        job.logs()
    );
    let (readings, whole) = read_avro(&files[0]);
    assert!(!whole && !readings.is_empty());
    let expected = compute(&[(files[0].display().to_string(), readings)], MINUTE, OOO);
    assert_rows_match(
        "sensors_local",
        &expected.sensors_local,
        &rows_from_json_lines(&out(dir, "sensors_local.jsonl"), "time"),
    );
    let letters = dead_letters(dir);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["kind"], "corrupt-block");
    assert!(
        letter["error"]
            .as_str()
            .expect("error")
            .contains("truncated"),
        "{letter}"
    );
    assert_eq!(letter["source"], files[0].display().to_string());
    assert!(letter["payload_len"].as_u64().expect("len") > 0);
    assert!(
        job.stderr().contains("dead letter"),
        "the first dead letter of a kind is logged"
    );
}

/// A block whose 11th datum is garbage: the 10 before it are read, the
/// garbage and everything after it in that block go to the dead letters
/// with their count, and the following blocks are read normally.
#[test]
fn undecodable_datum_takes_the_rest_of_its_block_to_the_dead_letters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let source = generate(
        dir,
        "src.avro",
        &[
            "--records",
            "3000",
            "--devices",
            "40",
            "--rate",
            "50",
            "--seed",
            "8",
        ],
    );
    let damaged = dir.join("damaged.avro");
    let good: Vec<Reading> = with_garbage_datum(&source[0], &damaged, 5)
        .iter()
        .map(Reading::from_avro)
        .collect();

    let mut job = run_local(dir, std::slice::from_ref(&damaged));
    assert!(
        job.try_status().expect("exited").success(),
        "{}",
        job.logs()
    );
    let expected = compute(&[(damaged.display().to_string(), good)], MINUTE, OOO);
    assert_rows_match(
        "sensors_local",
        &expected.sensors_local,
        &rows_from_json_lines(&out(dir, "sensors_local.jsonl"), "time"),
    );
    assert_rows_match(
        "sensor_aggregates_1m",
        &expected.aggregates,
        &rows_from_json_lines(&out(dir, "sensor_aggregates_1m.jsonl"), "window_start"),
    );
    let letters = dead_letters(dir);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], "bad-varint");
    assert_eq!(letters[0]["records"], 91);
    assert!(
        letters[0]["position"]
            .as_str()
            .expect("pos")
            .starts_with("records 510..601"),
        "{}",
        letters[0]
    );
    assert_eq!(summary_number(&job.stdout(), "bad records"), 91);
    assert_eq!(readings_in_windows(dir) + 91, 3001);
}

/// A block written with a different (eight-field) schema than the header
/// declares: its datums cannot be read as the declared schema. Whatever part
/// of them fails goes to the dead letters; the job carries on, and every
/// declared record is either aggregated, late, or counted as bad.
#[test]
fn block_of_another_schema_is_dead_lettered_and_the_job_continues() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let source = generate(
        dir,
        "src.avro",
        &[
            "--records",
            "1000",
            "--devices",
            "20",
            "--rate",
            "20",
            "--seed",
            "2",
        ],
    );
    let (schema, vals) = values(&source[0]);
    let legacy = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"SensorData","namespace":"com.iot.pipeline.avro","fields":[
        {"name":"sensorId","type":"int"},{"name":"sensorType","type":"int"},
        {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"temperature","type":"double"},{"name":"humidity","type":"double"},
        {"name":"pressure","type":"double"},{"name":"batteryLevel","type":"double"},
        {"name":"status","type":"int"}]}"#,
    )
    .expect("legacy schema");
    let mut blocks = Vec::new();
    for (b, chunk) in vals.chunks(100).enumerate() {
        let mut data = Vec::new();
        for v in chunk {
            if b == 3 {
                let Value::Record(fields) = v else {
                    panic!("record")
                };
                data.extend(datum(&legacy, &Value::Record(fields[..8].to_vec())));
            } else {
                data.extend(datum(&schema, v));
            }
        }
        blocks.push((chunk.len() as i64, data));
    }
    let mixed = dir.join("mixed.avro");
    write_container(&mixed, &schema.canonical_form(), &blocks);
    let mut job = run_local(dir, std::slice::from_ref(&mixed));
    assert!(
        job.try_status().expect("exited").success(),
        "{}",
        job.logs()
    );
    assert!(!dead_letters(dir).is_empty());
    let late = out(dir, "late_readings.jsonl").lines().count() as u64;
    let bad = summary_number(&job.stdout(), "bad records");
    assert!(bad > 0);
    assert_eq!(
        readings_in_windows(dir) + late + bad,
        1000,
        "every record is accounted for"
    );
}

#[test]
fn incompatible_writer_schema_fails_at_start_naming_file_and_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let path = dir.join("other.avro");
    let schema = r#"{"type":"record","name":"Other","fields":[{"name":"a","type":"string"}]}"#;
    let parsed = apache_avro::Schema::parse_str(schema).expect("schema");
    let d = datum(
        &parsed,
        &Value::Record(vec![("a".into(), Value::String("x".into()))]),
    );
    write_container(&path, schema, &[(1, d)]);
    let job = run_local(dir, std::slice::from_ref(&path));
    let err = job.stderr();
    assert!(!job.stdout().contains("finished"));
    assert!(
        err.contains(&path.display().to_string()) && err.contains("sensorId"),
        "{err}"
    );
}

#[test]
fn unreadable_inputs_fail_at_start_with_the_cause() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let not_avro = dir.join("notes.txt");
    std::fs::write(&not_avro, "hello").expect("write");
    let job = run_local(dir, std::slice::from_ref(&not_avro));
    assert!(
        job.stderr().contains("notes.txt")
            && job.stderr().contains("not a readable Avro container"),
        "{}",
        job.stderr()
    );
    let missing = dir.join("missing.avro");
    let job = run_local(dir, std::slice::from_ref(&missing));
    assert!(
        job.stderr().contains("missing.avro") && job.stderr().contains("No such file"),
        "{}",
        job.stderr()
    );
}

#[test]
fn bad_specs_name_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for (yaml, key, why) in [
        ("window:\n  size: 90\n", "window.size", "needs a unit"),
        (
            "sink:\n  jsonl:\n    dirr: x\n",
            "sink.jsonl.dirr",
            "unknown field",
        ),
        (
            "state:\n  max_parallelism: 100000\n",
            "state.max_parallelism",
            "expected u16",
        ),
        ("late:\n  policy: file\n", "late.path", "required"),
    ] {
        let spec = dir.join("job.yaml");
        std::fs::write(&spec, yaml).expect("write spec");
        let mut job = weir(
            dir,
            "weir",
            &args(&["local", "--spec", spec.to_str().expect("utf8")]),
        );
        let status = job.wait(Duration::from_secs(30));
        assert!(!status.success());
        let err = job.stderr();
        assert!(
            err.contains(key) && err.contains(why) && err.contains("job.yaml"),
            "for {yaml:?}: {err}"
        );
    }
    let mut job = weir(
        dir,
        "weir",
        &args(&["local", "--spec", "/nonexistent/job.yaml"]),
    );
    assert!(!job.wait(Duration::from_secs(30)).success());
    assert!(
        job.stderr().contains("/nonexistent/job.yaml"),
        "{}",
        job.stderr()
    );
}
