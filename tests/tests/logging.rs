//! `--log-format json`: every line a process writes to stderr is one JSON
//! object that a log collector can parse, errors that end it included.

use std::time::Duration;

use serde_json::Value;
use weir_tests::process::Proc;
use weir_tests::{args, weir, weir_bin};

/// Every non-empty stderr line parsed as a JSON object.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{stderr}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut a = args(&[
        "--log-format",
        "json",
        "local",
        "--records",
        "5000",
        "--fast",
        "--output",
    ]);
    a.push(dir.join("out").display().to_string());
    a.push("--data-dir".into());
    a.push(dir.join("data").display().to_string());
    let mut job = weir(dir, "weir", &a);
    job.wait_success(Duration::from_secs(120));
    let lines = json_lines(&job.stderr());
    assert!(lines.len() >= 3, "too few log lines: {}", job.stderr());
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    // Structured fields stay fields (a collector can filter on them).
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["generation"].as_u64() == Some(1)),
        "no line with a generation field: {}",
        job.stderr()
    );
}

#[test]
fn the_environment_chooses_json_and_a_failure_is_a_json_line_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let missing = dir.join("no-such-file.avro");
    let mut cmd = std::process::Command::new(weir_bin());
    cmd.args(["local", "--input"])
        .arg(&missing)
        .args(["--output"])
        .arg(dir.join("out"))
        .env("WEIR_LOG_FORMAT", "json")
        .env("WEIR_LOG", "info")
        .env("NO_COLOR", "1");
    let mut job = Proc::spawn("weir", cmd, dir);
    let status = job.wait(Duration::from_secs(60));
    assert!(!status.success(), "a missing input fails the job");
    let lines = json_lines(&job.stderr());
    let last = lines.last().expect("the failure is logged");
    assert_eq!(last["level"], "ERROR", "{last}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no-such-file.avro"),
        "the error names the file: {last}"
    );
}
