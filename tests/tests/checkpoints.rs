//! Checkpoints in a real cluster: barriers aligned across workers while
//! records flow, state uploaded to the store, metadata and the `latest`
//! pointer written, retention keeping the newest three — and output that is
//! still exactly the independent computation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde_json::Value;
use weir_proto::checkpoint::{CheckpointMetadata, LatestPointer};
use weir_tests::clickhouse::ClickHouse;
use weir_tests::cluster::Cluster;
use weir_tests::expected::compute;
use weir_tests::s3::S3Server;
use weir_tests::{args, generate, input_args, read_partitions, weir};

const MINUTE: i64 = 60_000;
const OOO: i64 = 5_000;

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The numbers of the checkpoints whose metadata is in a job's store
/// directory.
fn checkpoint_ids(store: &Path) -> Vec<u64> {
    files_under(store)
        .iter()
        .filter_map(|f| {
            f.strip_suffix("/_metadata")?
                .strip_prefix("chk-")?
                .parse()
                .ok()
        })
        .collect()
}

/// Four partitions that each carry every device, `records` readings each.
fn partitions(dir: &Path, records: u64, seed: u64) -> Vec<PathBuf> {
    (0..4)
        .flat_map(|i| {
            generate(
                dir,
                &format!("in-{i}.avro"),
                &[
                    "--records",
                    &records.to_string(),
                    "--devices",
                    "2000",
                    "--rate",
                    "150",
                    "--disorder-ms",
                    "3000",
                    "--seed",
                    &(seed + i).to_string(),
                ],
            )
        })
        .collect()
}

/// Coordinator arguments: ClickHouse, a slow read (so that the job is
/// still running when a process dies), a small memory budget (state in
/// RocksDB too), checkpoints every 500 ms unless `extra` says otherwise.
fn job_args(ch: &ClickHouse, database: &str, files: &[PathBuf], extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "--clickhouse",
        &ch.url(),
        "--database",
        database,
        "--rate-limit",
        "1500",
        "--memory-budget",
        "256KiB",
    ]);
    if !extra.contains(&"--checkpoint-interval") {
        a.extend(args(&["--checkpoint-interval", "500ms"]));
    }
    a.extend(args(extra));
    a.extend(input_args(files));
    a
}

/// `weir ctl` against the cluster; its standard output.
fn ctl(dir: &Path, cluster: &Cluster, extra: &[&str]) -> String {
    let mut a = args(&["ctl", "--coordinator"]);
    a.push(format!("http://127.0.0.1:{}", cluster.http_port));
    a.extend(args(extra));
    let mut p = weir(dir, "ctl", &a);
    p.wait_success(Duration::from_secs(30));
    p.stdout()
}

/// Waits until `n` checkpoints completed while the job runs.
fn wait_for_checkpoints(cluster: &Cluster, n: u64) {
    weir_tests::wait_for(
        &format!("{n} completed checkpoints"),
        Duration::from_secs(60),
        || {
            let (_, list) = cluster.rest("GET", "/api/v1/checkpoints");
            list["completed"].as_u64().unwrap_or(0) >= n
        },
    );
    assert_eq!(cluster.job()["state"], "running", "still running");
}

/// A finished job restored a checkpoint and wrote exactly the contract's
/// output; it did not read its inputs again from the start.
fn check_restored(cluster: &Cluster, ch: &ClickHouse, database: &str, files: &[PathBuf]) {
    let job = cluster.wait_state("finished", Duration::from_secs(240));
    assert!(job["generation"].as_u64() > Some(1), "{job}");
    assert!(
        job["restored_checkpoint"].as_u64() > Some(0),
        "the last generation restored a checkpoint: {job}"
    );
    let logs = cluster.logs();
    assert!(logs.contains("restoring state from a checkpoint"), "{logs}");
    let total: u64 = 4 * 24_000;
    assert!(
        job["records_in"].as_u64() < Some(total),
        "the restored generation read on from the checkpoint, not from the start: {job}"
    );
    let expected = compute(&read_partitions(files), MINUTE, OOO);
    ch.check_contract_tables(database, &expected);
}

/// A test's cluster over four partitions writing to its own ClickHouse
/// database (fields drop in order: processes first, the directory last).
struct Run {
    cluster: Cluster,
    ch: ClickHouse,
    database: String,
    files: Vec<PathBuf>,
    tmp: tempfile::TempDir,
}

impl Run {
    /// `workers` workers, the job of [`job_args`] with `extra`, data of
    /// `seed`, state under `data/`.
    fn start(database: &str, seed: u64, workers: usize, extra: &[&str]) -> Run {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let ch = ClickHouse::start(dir);
        ch.apply_weir_ddl(dir, database);
        let files = partitions(dir, 24_000, seed);
        let min = workers.to_string();
        let mut all = vec!["--data-dir", "data", "--min-workers", &min];
        all.extend_from_slice(extra);
        let cluster = Cluster::start(dir, &job_args(&ch, database, &files, &all), workers);
        Run {
            cluster,
            ch,
            database: database.to_owned(),
            files,
            tmp,
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The job finished from a restored checkpoint with exact output.
    fn check_restored(&self) {
        check_restored(&self.cluster, &self.ch, &self.database, &self.files);
    }

    fn check_output(&self) {
        let expected = compute(&read_partitions(&self.files), MINUTE, OOO);
        self.ch.check_contract_tables(&self.database, &expected);
    }
}

#[test]
fn a_killed_worker_is_restored_from_the_latest_checkpoint_onto_fewer_workers() {
    let mut run = Run::start("t_kill", 91, 3, &[]);
    wait_for_checkpoints(&run.cluster, 3);
    // Open windows in memory and in RocksDB, a checkpoint behind it: 3 → 2.
    run.cluster.kill_worker("w-1");
    run.check_restored();
}

#[test]
fn a_worker_joining_restores_the_checkpoint_onto_more_workers() {
    let mut run = Run::start("t_join", 111, 2, &[]);
    wait_for_checkpoints(&run.cluster, 3);
    // 2 → 3: the new generation spreads the key groups over three workers,
    // each restoring the parts of the checkpoint that overlap its own.
    run.cluster.start_worker("w-2");
    run.check_restored();
    assert_eq!(run.cluster.job()["workers"], 3);
}

#[test]
fn a_restarted_coordinator_on_a_fresh_directory_resumes_from_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_coord");
    let files = partitions(dir, 24_000, 131);
    let store = dir.join("store");
    let store = store.to_string_lossy().into_owned();
    let first = job_args(
        &ch,
        "t_coord",
        &files,
        &[
            "--data-dir",
            "data-1",
            "--min-workers",
            "2",
            "--checkpoint-store",
            &store,
        ],
    );
    let mut cluster = Cluster::start(dir, &first, 2);
    wait_for_checkpoints(&cluster, 3);
    let second = job_args(
        &ch,
        "t_coord",
        &files,
        &[
            "--data-dir",
            "data-2",
            "--min-workers",
            "2",
            "--checkpoint-store",
            &store,
        ],
    );
    // The newest checkpoint is corrupt when the new coordinator starts: it
    // falls back to the one before.
    let job_store = dir.join("store/iot-sensor-aggregation");
    let mut newest = 0;
    cluster.restart_coordinator(&second, || {
        let latest = LatestPointer::decode(
            std::fs::read(job_store.join("latest"))
                .expect("latest")
                .as_slice(),
        )
        .expect("pointer");
        newest = latest.checkpoint;
        std::fs::write(job_store.join(&latest.metadata), b"\x08\xff\xff garbage")
            .expect("corrupt it");
    });
    let job = cluster.wait_state("finished", Duration::from_secs(240));
    let restored = job["restored_checkpoint"].as_u64().unwrap_or(0);
    assert!(
        restored > 0 && restored < newest,
        "restored {restored}, the one before the corrupt {newest}: {job}"
    );
    assert!(
        cluster.logs().contains("falling back to an earlier one"),
        "{}",
        cluster.logs()
    );
    assert!(
        job["records_in"].as_u64() < Some(4 * 24_000),
        "read on from the checkpoint: {job}"
    );
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_coord", &expected);
}

#[test]
fn checkpoints_complete_across_workers_and_retention_keeps_three() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_ckpt");
    // Four partitions carrying every device, read slowly enough (the rate
    // limit) for a checkpoint every 500 ms to find open windows in memory
    // and in RocksDB (a small memory budget spills).
    let files = partitions(dir, 24_000, 71);
    let mut coordinator = args(&[
        "--clickhouse",
        &ch.url(),
        "--database",
        "t_ckpt",
        "--data-dir",
        "data",
        "--min-workers",
        "3",
        "--rate-limit",
        "3000",
        "--memory-budget",
        "256KiB",
    ]);
    coordinator.extend(input_args(&files));
    let cluster = Cluster::start(dir, &coordinator, 3);
    // The default interval (60 s) is longer than the job: checkpoints come
    // once the interval is changed through the API, without a restart.
    let ctl = |extra: &[&str]| ctl(dir, &cluster, extra);
    cluster.wait_state("running", Duration::from_secs(60));
    let changed = ctl(&["checkpoint-interval", "500ms", "--json"]);
    let changed: Value = serde_json::from_str(&changed).expect("json");
    assert_eq!(changed["interval_ms"], 500, "{changed}");
    let job = cluster.wait_state("finished", Duration::from_secs(180));
    assert_eq!(job["generation"], 1, "{job}");
    assert!(job["state_spills"].as_u64().expect("spills") > 0, "{job}");
    // Each partition's position in the newest checkpoint (the final one:
    // its last record's ordinal).
    for p in job["partitions"].as_array().expect("partitions") {
        assert_eq!(p["checkpointed"], "23999", "{job}");
    }

    // The output is exact: holding inputs back to align barriers reorders
    // nothing within a partition and loses nothing.
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_ckpt", &expected);

    // `weir ctl checkpoints --json`: several completed, none failed.
    let list: Value = serde_json::from_str(&ctl(&["checkpoints", "--json"])).expect("json");
    let all = list["checkpoints"].as_array().expect("checkpoints").clone();
    let completed: Vec<&Value> = all.iter().filter(|c| c["state"] == "COMPLETED").collect();
    assert!(completed.len() >= 4, "{list}");
    assert!(
        all.iter().all(|c| c["state"] != "FAILED"),
        "no checkpoint failed: {list}\n{}",
        cluster.logs()
    );
    // The last is the final checkpoint, taken after the end of input once
    // every window was written: it holds positions and no state. Every
    // other one holds state.
    let mut by_id = completed.clone();
    by_id.sort_by_key(|c| c["id"].as_u64());
    let (last, earlier) = by_id.split_last().expect("completed");
    assert_eq!(
        last["bytes"], 0,
        "the final checkpoint holds no state: {last}"
    );
    for c in earlier {
        assert!(
            c["bytes"].as_u64().unwrap_or(0) > 0,
            "state in every one: {c}"
        );
    }
    // Later checkpoints reference files uploaded by earlier ones.
    assert!(
        completed
            .iter()
            .any(|c| c["incremental_bytes"].as_u64() < c["bytes"].as_u64()),
        "incremental: {list}"
    );
    let table = ctl(&["checkpoints"]);
    assert!(table.contains("COMPLETED"), "{table}");

    // The store: `latest` points at the newest completed checkpoint; three
    // checkpoints remain; every file they reference is there, and nothing
    // else is.
    let store = dir.join("data/checkpoints/iot-sensor-aggregation");
    let latest = LatestPointer::decode(
        std::fs::read(store.join("latest"))
            .expect("latest")
            .as_slice(),
    )
    .expect("pointer");
    assert_eq!(
        Some(latest.checkpoint),
        completed.first().and_then(|c| c["id"].as_u64()),
        "{list}"
    );
    let present = files_under(&store);
    let metadata: Vec<&String> = present
        .iter()
        .filter(|k| k.ends_with("_metadata"))
        .collect();
    assert_eq!(metadata.len(), 3, "retention keeps three: {present:?}");
    let mut referenced = BTreeSet::new();
    for key in metadata {
        let m = CheckpointMetadata::decode(
            std::fs::read(store.join(key)).expect("metadata").as_slice(),
        )
        .expect("decodes");
        assert_eq!(m.tasks.len(), 3, "one state handle per worker");
        assert_eq!(m.positions.len(), 4, "a position per partition");
        let mut ranges: Vec<(u32, u32)> = m
            .tasks
            .iter()
            .map(|t| (t.key_group_start, t.key_group_end))
            .collect();
        ranges.sort_unstable();
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert_eq!(ranges.last().map(|r| r.1), Some(128));
        for t in &m.tasks {
            for w in &t.windows {
                for f in &w.files {
                    referenced.insert(f.key.clone());
                }
            }
        }
    }
    let shared: BTreeSet<String> = present
        .iter()
        .filter(|k| k.starts_with("shared/"))
        .cloned()
        .collect();
    assert!(!referenced.is_empty());
    assert!(
        referenced.is_subset(&shared),
        "missing: {:?}",
        referenced.difference(&shared).collect::<Vec<_>>()
    );
    // Files of the newest checkpoint's successors may not be referenced
    // yet when the job ends; everything else unreferenced is deleted.
    let unreferenced: Vec<&String> = shared.difference(&referenced).collect();
    assert!(unreferenced.len() <= 12, "left behind: {unreferenced:?}");
}

#[test]
fn checkpoints_in_s3_survive_an_outage_and_restore_a_killed_worker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let s3 = S3Server::start(dir, "weir-ckpt");
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_s3");
    let files = partitions(dir, 24_000, 151);
    // A checkpoint gives up after 2 s (the default is 10 minutes).
    let spec = dir.join("spec.yaml");
    std::fs::write(&spec, "checkpoint:\n  timeout: 2s\n").expect("spec");
    let spec = spec.to_string_lossy().into_owned();
    let coordinator = job_args(
        &ch,
        "t_s3",
        &files,
        &[
            "--spec",
            &spec,
            "--data-dir",
            "data",
            "--min-workers",
            "2",
            "--checkpoint-store",
            "s3://weir-ckpt/jobs",
            "--s3-path-style",
        ],
    );
    let mut cluster = Cluster::start_with_env(dir, &coordinator, 2, &s3.env());
    wait_for_checkpoints(&cluster, 2);

    // S3 frozen: checkpoints fail and are reported; the job keeps reading.
    s3.pause();
    let before = cluster.job()["records_in"].as_u64().unwrap_or(0);
    weir_tests::wait_for("a failed checkpoint", Duration::from_secs(30), || {
        let (_, list) = cluster.rest("GET", "/api/v1/checkpoints");
        list["failed"].as_u64().unwrap_or(0) >= 1
    });
    std::thread::sleep(Duration::from_secs(1));
    let job = cluster.job();
    assert_eq!(job["state"], "running", "{job}");
    assert!(
        job["records_in"].as_u64().unwrap_or(0) > before,
        "processing went on without S3: {job}"
    );
    // Back: the next checkpoints complete.
    s3.resume();
    let (_, list) = cluster.rest("GET", "/api/v1/checkpoints");
    let completed = list["completed"].as_u64().unwrap_or(0);
    wait_for_checkpoints(&cluster, completed + 2);

    // A worker dies: its state comes back from S3.
    cluster.kill_worker("w-0");
    check_restored(&cluster, &ch, "t_s3", &files);

    // Retention in the bucket: three checkpoints, and shared files.
    let keys = s3.list("jobs/iot-sensor-aggregation/");
    let metadata = keys.iter().filter(|k| k.ends_with("/_metadata")).count();
    assert_eq!(metadata, 3, "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/shared/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/latest")), "{keys:?}");
}

#[test]
fn stop_with_a_savepoint_then_resume_from_it() {
    // No periodic checkpoint in this run: only the savepoint.
    let run = Run::start(
        "t_save",
        171,
        2,
        &[
            "--checkpoint-interval",
            "1h",
            "--checkpoint-on-window-close",
            "false",
        ],
    );
    let (dir, cluster) = (run.dir(), &run.cluster);
    let ctl = |extra: &[&str]| ctl(dir, cluster, extra);
    cluster.wait_state("running", Duration::from_secs(60));
    weir_tests::wait_for("records to flow", Duration::from_secs(60), || {
        cluster.job()["records_in"].as_u64().unwrap_or(0) > 10_000
    });
    ctl(&["stop", "--savepoint"]);
    let stopped = cluster.wait_state("stopped", Duration::from_secs(60));
    let list: Value = serde_json::from_str(&ctl(&["checkpoints", "--json"])).expect("json");
    let savepoint = list["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .find(|c| c["savepoint"] == true && c["state"] == "COMPLETED")
        .unwrap_or_else(|| panic!("a completed savepoint: {list}"))
        .clone();
    let id = savepoint["id"].as_u64().expect("id");
    assert!(
        stopped["records_in"].as_u64() < Some(4 * 24_000),
        "stopped before the end: {stopped}"
    );
    // Prometheus shows it.
    let (status, metrics) =
        weir_tests::http::request(cluster.http_port, "GET", "/metrics", "").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("weir_checkpoints_completed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_checkpoints_failed_total{cause=\"timeout\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_checkpoint_last_size_bytes"),
        "{metrics}"
    );

    // A resume that names a checkpoint the store does not have, one in
    // another store or of another job, or nonsense, is refused; the job
    // stays stopped.
    let store = dir.join("data/checkpoints/iot-sensor-aggregation");
    for (from, why) in [
        ("999", "chk-999"),
        ("/elsewhere/iot-sensor-aggregation/chk-1", "its own store"),
        ("/elsewhere/other-job/chk-1", "of job `other-job`"),
        ("yesterday", "expected a checkpoint number"),
    ] {
        let request = serde_json::json!({ "from": from }).to_string();
        let (status, body) =
            weir_tests::http::request(cluster.http_port, "POST", "/api/v1/job/resume", &request)
                .expect("resume");
        assert_eq!(status, 400, "{from}: {body}");
        assert!(body.contains(why), "{from}: {body}");
    }
    assert_eq!(cluster.job()["state"], "stopped");

    // Resumed from the savepoint named by its path: the new generation
    // restores it, and the output is exact.
    let path = store.join(format!("chk-{id}"));
    ctl(&["resume", "--from", &path.display().to_string()]);
    let job = cluster.wait_state("finished", Duration::from_secs(240));
    assert_eq!(job["restored_checkpoint"].as_u64(), Some(id), "{job}");
    run.check_output();
}

#[test]
fn a_checkpoint_that_cannot_be_restored_falls_back_to_the_one_before() {
    let mut run = Run::start("t_fallback", 191, 2, &[]);
    let dir = run.dir().to_owned();
    let cluster = &mut run.cluster;
    wait_for_checkpoints(cluster, 3);
    // No more checkpoints, so that the latest stays the latest.
    let (status, body) = weir_tests::http::request(
        cluster.http_port,
        "PUT",
        "/api/v1/checkpoints/interval",
        r#"{"interval_ms": 3600000}"#,
    )
    .expect("put");
    assert_eq!(status, 200, "{body}");
    weir_tests::wait_for("no checkpoint in flight", Duration::from_secs(30), || {
        let (_, list) = cluster.rest("GET", "/api/v1/checkpoints");
        list["checkpoints"]
            .as_array()
            .is_some_and(|c| c.iter().all(|k| k["state"] != "IN_PROGRESS"))
    });
    // The files only the latest checkpoint has (its in-memory state) go
    // missing from the store.
    let store = dir.join("data/checkpoints/iot-sensor-aggregation");
    let latest = LatestPointer::decode(
        std::fs::read(store.join("latest"))
            .expect("latest")
            .as_slice(),
    )
    .expect("pointer");
    let m = CheckpointMetadata::decode(
        std::fs::read(store.join(&latest.metadata))
            .expect("metadata")
            .as_slice(),
    )
    .expect("decodes");
    let mut removed = 0;
    for t in &m.tasks {
        for w in &t.windows {
            for f in w.files.iter().filter(|f| f.key.contains("-snap-")) {
                std::fs::remove_file(store.join(&f.key)).expect("remove");
                removed += 1;
            }
        }
    }
    assert!(removed > 0, "{m:?}");
    cluster.kill_worker("w-1");
    let job = cluster.wait_state("finished", Duration::from_secs(240));
    let restored = job["restored_checkpoint"].as_u64().unwrap_or(0);
    assert!(
        restored > 0 && restored < latest.checkpoint,
        "restored {restored}, before the broken {}: {job}",
        latest.checkpoint
    );
    assert!(
        cluster
            .logs()
            .contains("a checkpoint cannot be restored; falling back to the one before"),
        "{}",
        cluster.logs()
    );
    run.check_output();
}

#[test]
fn a_checkpoint_of_a_longer_input_is_never_silently_skipped_past() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let long = generate(
        dir,
        "long.avro",
        &["--records", "30000", "--devices", "200", "--seed", "5"],
    );
    let input = long[0].clone();
    let local = |name: &str| {
        let mut a = args(&["local", "--quiet", "--rate-limit", "3000"]);
        a.extend(input_args(std::slice::from_ref(&input)));
        for (flag, path) in [("--output", "out"), ("--data-dir", "data")] {
            a.push(flag.into());
            a.push(dir.join(path).display().to_string());
        }
        weir(dir, name, &a)
    };
    // Stopped a few seconds in: it stops after a final checkpoint.
    let mut first = local("weir-first");
    std::thread::sleep(Duration::from_secs(4));
    first.signal("TERM");
    first.wait_success(Duration::from_secs(60));
    assert!(
        first.stderr().contains("final checkpoint completed"),
        "{}",
        first.logs()
    );
    // The same path now holds a shorter input: the checkpoint's position
    // is past its end. The job fails naming the partition and position
    // instead of reading nothing and reporting success.
    let short = generate(
        dir,
        "short.avro",
        &["--records", "100", "--devices", "200", "--seed", "5"],
    );
    std::fs::rename(&short[0], &input).expect("replace the input");
    let mut second = local("weir-second");
    let status = second.wait(Duration::from_secs(120));
    assert!(!status.success(), "{}", second.logs());
    let logs = second.logs();
    assert!(
        logs.contains("the input ends before it") && logs.contains(&input.display().to_string()),
        "{logs}"
    );
}

#[test]
fn restore_from_names_an_older_checkpoint_by_its_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_path");
    let files = partitions(dir, 3_000, 211);
    let local = |name: &str, data: &str, extra: &[&str]| {
        let mut a = args(&["local", "--quiet", "--data-dir"]);
        a.push(dir.join(data).display().to_string());
        a.extend(job_args(&ch, "t_path", &files, extra));
        weir(dir, name, &a)
    };
    // Stopped part-way, after several checkpoints.
    let mut first = local("weir-first", "data", &[]);
    let store = dir.join("data/checkpoints/iot-sensor-aggregation");
    weir_tests::wait_for("three checkpoints", Duration::from_secs(60), || {
        checkpoint_ids(&store).len() >= 3
    });
    first.signal("TERM");
    first.wait_success(Duration::from_secs(60));
    let kept = checkpoint_ids(&store);
    let oldest = kept.iter().min().copied().expect("checkpoints");
    let newest = kept.iter().max().copied().expect("checkpoints");
    assert!(oldest < newest, "{kept:?}");

    // Restored from the oldest retained checkpoint, named by its path; the
    // path's store is used although the data directory is another one.
    // What the first run wrote after that checkpoint is written again and
    // found by the sink's lookups: the output is exact.
    let path = store.join(format!("chk-{oldest}/_metadata"));
    let mut second = local(
        "weir-second",
        "data2",
        &["--restore-from", &path.display().to_string()],
    );
    second.wait_success(Duration::from_secs(240));
    assert!(
        second.stdout().contains(&format!("checkpoint {oldest}")),
        "{}",
        second.logs()
    );
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_path", &expected);
    // Numbering went on in the path's store, after the newest there.
    let after = checkpoint_ids(&store);
    assert!(after.iter().any(|&n| n > newest), "{after:?}");
    assert!(!dir.join("data2/checkpoints").exists());
}

#[test]
fn a_partition_that_ended_before_a_stop_is_not_read_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ch = ClickHouse::start(dir);
    ch.apply_weir_ddl(dir, "t_ended");
    // Three long partitions and a short one that ends at once.
    let mut files = partitions(dir, 60_000, 231);
    files.pop();
    files.extend(generate(
        dir,
        "short.avro",
        &[
            "--records",
            "300",
            "--devices",
            "2000",
            "--rate",
            "150",
            "--seed",
            "239",
        ],
    ));
    let total: u64 = 3 * 60_000 + 300;
    let local = |name: &str| {
        let mut a = args(&["local", "--data-dir"]);
        a.push(dir.join("data").display().to_string());
        a.extend(args(&[
            "--clickhouse",
            &ch.url(),
            "--database",
            "t_ended",
            "--rate-limit",
            "6000",
            "--checkpoint-interval",
            "500ms",
        ]));
        a.extend(input_args(&files));
        weir(dir, name, &a)
    };
    let mut first = local("weir-first");
    std::thread::sleep(Duration::from_secs(3));
    first.signal("TERM");
    first.wait_success(Duration::from_secs(60));
    let read_first = weir_tests::summary_number(&first.stdout(), "records read");
    assert!(
        read_first < total,
        "stopped part-way: {read_first}\n{}",
        first.logs()
    );

    // The stop took a checkpoint after everything read: the second run
    // reads exactly the rest, and nothing of the short partition.
    let mut second = local("weir-second");
    second.wait_success(Duration::from_secs(240));
    let read_second = weir_tests::summary_number(&second.stdout(), "records read");
    assert_eq!(read_first + read_second, total, "{}", second.logs());
    let expected = compute(&read_partitions(&files), MINUTE, OOO);
    ch.check_contract_tables("t_ended", &expected);
}

#[test]
fn workers_stop_writing_when_a_frozen_coordinator_lets_their_lease_run_out() {
    // Heartbeat timeout 4 s: leases of 3 s.
    let run = Run::start("t_lease", 251, 2, &["--heartbeat-timeout", "4s"]);
    let cluster = &run.cluster;
    wait_for_checkpoints(cluster, 2);
    cluster.signal_coordinator("STOP");
    std::thread::sleep(Duration::from_secs(5));
    let logs = cluster.logs();
    cluster.signal_coordinator("CONT");
    // Both workers noticed on their own, with no closed connection to tell
    // them, and abandoned their deployments.
    assert_eq!(
        logs.matches("no word from the coordinator within its lease")
            .count(),
        2,
        "{logs}"
    );
    assert_eq!(
        logs.matches("lost the coordinator; aborting the deployment")
            .count(),
        2,
        "{logs}"
    );
    // Once the coordinator runs again, they register again and a new
    // generation restores the latest checkpoint: the output is exact.
    run.check_restored();
}

#[test]
fn a_frozen_worker_past_its_lease_writes_nothing_when_it_wakes() {
    // Heartbeat timeout 3 s: leases of 2.25 s.
    let run = Run::start("t_frozen", 271, 3, &["--heartbeat-timeout", "3s"]);
    let cluster = &run.cluster;
    wait_for_checkpoints(cluster, 2);
    cluster.signal_worker("w-1", "STOP");
    // The coordinator counts it lost and deploys generation 2 on the others.
    weir_tests::wait_for("a generation without w-1", Duration::from_secs(60), || {
        let job = cluster.job();
        job["generation"].as_u64() >= Some(2) && job["state"] == "running"
    });
    cluster.signal_worker("w-1", "CONT");
    // Awake, it finds its lease run out and abandons generation 1 rather
    // than writing for it (it registers again: generation 3 has it back).
    weir_tests::wait_for(
        "w-1 to give up generation 1",
        Duration::from_secs(30),
        || {
            cluster
                .logs()
                .contains("no word from the coordinator within its lease")
        },
    );
    // No row twice (merges are stopped), every row right.
    run.check_restored();
}
