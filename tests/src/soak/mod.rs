//! The fault-injection soak: a Pulsar job on a real cluster under steady
//! load while faults strike at random (seeded) times, then its output
//! checked against an independent computation.
//!
//! The test broker holds a 4-partition topic; `weir produce` publishes a
//! generated data set (with readings late by more than the allowed
//! out-of-orderness) at a steady rate while a coordinator and 3 workers
//! read it into ClickHouse 18.16 (merges stopped, so a duplicate stays
//! visible) or into JSON-lines files, and undecodable messages are injected
//! now and then. Faults, one at a time at seeded random times, every kind
//! once in a seeded order before any kind comes again:
//!
//! - SIGKILL of a worker (started again under the same id, as a
//!   StatefulSet would), or of the coordinator (started again);
//! - SIGSTOP of a worker for longer than its lease, then SIGCONT;
//! - ClickHouse frozen (SIGSTOP) while a generation changes, then resumed;
//! - the broker dropping every connection;
//! - a network partition between a worker and the coordinator, or between
//!   the workers and ClickHouse, through [`FaultProxy`].
//!
//! When the producer is done the job reads to the end of the topic and
//! finishes. Then every (device, window) must be in each table exactly once
//! (read without `FINAL`) with the values the computation gives for the
//! readings that were not late, every late reading must be one of the
//! input's and be there once, and every injected message must be a dead
//! letter once. Lateness itself is not computed independently: with several
//! partitions it depends on how they interleave, which is exactly why a
//! reading's fate must be decided once (see the sink's epochs).
//!
//! The same rig rescales instead ([`Schedule::Replicas`]): workers are
//! started, or stopped with SIGTERM (the highest ids first), as a
//! StatefulSet scaled to each count in turn would; every rescale must end
//! with a generation that restored a checkpoint taken for it, on every key
//! group, and the output must again be exactly once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

mod check;
pub use check::{check, lines_of, Output};

use crate::clickhouse::ClickHouse;
use crate::cluster::Cluster;
use crate::expected::read_avro;
use crate::process::Proc;
use crate::proxy::FaultProxy;
use crate::pulsar_broker::{BrokerConfig, TestBroker};
use crate::{args, generate, wait_for, weir};

const TOPIC: &str = "persistent://public/default/soak";
const PARTITIONS: u32 = 4;
/// Workers of a fault soak.
const WORKERS: usize = 3;
/// The job's key groups (the spec's default `state.max_parallelism`).
const MAX_PARALLELISM: u16 = 128;
const MINUTE: i64 = 60_000;
/// Windows are checked against the readings that were not late, computed
/// with no lateness at all.
const NO_LATENESS: i64 = i64::MAX / 4;
/// The coordinator counts a silent worker lost after this; workers hold a
/// lease of three quarters of it.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);

/// Where the job writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    ClickHouse,
    Jsonl,
}

/// What happens to the cluster while the producer publishes.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Faults of every kind, about this far apart (each ±50%).
    Faults(Duration),
    /// Start with `initial` workers; at each `(time, count)` scale to
    /// `count` workers.
    Replicas {
        initial: usize,
        changes: Vec<(Duration, usize)>,
    },
}

#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// How long the producer publishes (faults strike meanwhile).
    pub duration: Duration,
    pub schedule: Schedule,
    pub seed: u64,
    /// Messages published per second.
    pub rate: u32,
    pub devices: u32,
    pub sink: Sink,
}

/// What a soak did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `(seconds into the run, fault)`.
    pub faults: Vec<(f64, String)>,
    /// The job status's rescales (a replicas schedule), oldest first.
    pub rescales: Vec<Json>,
    pub records: u64,
    pub dead_letters_injected: u64,
    pub rows_checked: u64,
    pub late_readings: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Rows whose values differ from the computation, or that it does not
    /// have.
    pub wrong: u64,
    /// Anything else that went wrong (the job failed, late readings that
    /// are not the input's...).
    pub problems: Vec<String>,
    pub elapsed: Duration,
    pub generations: u64,
    pub checkpoints: u64,
}

impl Report {
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.wrong == 0 && self.problems.is_empty()
    }

    pub fn print(&self) {
        println!("soak: {} faults injected", self.faults.len());
        for (at, f) in &self.faults {
            println!("  {at:7.1} s  {f}");
        }
        for r in &self.rescales {
            println!("soak: rescale {r}");
        }
        println!(
            "soak: {} records, {} undecodable messages injected, {:.0} s, {} generations, {} checkpoints",
            self.records,
            self.dead_letters_injected,
            self.elapsed.as_secs_f64(),
            self.generations,
            self.checkpoints
        );
        println!(
            "soak: rows checked {}, late readings {}, lost {}, duplicated {}, wrong {}",
            self.rows_checked, self.late_readings, self.lost, self.duplicated, self.wrong
        );
        for p in &self.problems {
            println!("soak: PROBLEM {p}");
        }
        println!(
            "soak: {}",
            if self.is_exact() {
                "exactly once"
            } else {
                "NOT EXACT"
            }
        );
    }
}

/// A small deterministic generator for the fault schedule.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillWorker,
    KillCoordinator,
    StopWorker,
    FreezeClickHouseWhileGenerationChanges,
    DropBrokerConnections,
    PartitionWorkerFromCoordinator,
    PartitionClickHouse,
}

impl Fault {
    fn all(sink: Sink) -> Vec<Fault> {
        let mut all = vec![
            Fault::KillWorker,
            Fault::KillCoordinator,
            Fault::StopWorker,
            Fault::DropBrokerConnections,
            Fault::PartitionWorkerFromCoordinator,
        ];
        if sink == Sink::ClickHouse {
            all.push(Fault::FreezeClickHouseWhileGenerationChanges);
            all.push(Fault::PartitionClickHouse);
        }
        all
    }
}

/// Everything the soak runs; fields drop in order (processes before the
/// servers they use).
struct Rig {
    cluster: Cluster,
    /// Workers running now (`w-0` .. `w-{running-1}`).
    running: usize,
    /// By worker: its proxy to the coordinator.
    coordinator_proxies: Vec<FaultProxy>,
    servers: Servers,
    coordinator_args: Vec<String>,
}

impl Rig {
    fn worker_id(i: usize) -> String {
        format!("w-{i}")
    }

    fn start_worker(&mut self, i: usize) {
        let addr = self.coordinator_proxies[i].addr();
        self.cluster.start_worker_via(&Self::worker_id(i), &addr);
    }

    /// Scales to `n` workers as a StatefulSet does: new ones get the next
    /// ids; the highest ids are stopped with SIGTERM, and must leave
    /// cleanly (exit 0) once the coordinator released them.
    fn scale_to(&mut self, n: usize, problems: &mut Vec<String>) -> String {
        let from = self.running;
        for i in from..n {
            self.start_worker(i);
        }
        for i in (n..from).rev() {
            let id = Self::worker_id(i);
            let asked = Instant::now();
            let status = self.cluster.stop_worker(&id, Duration::from_secs(120));
            if !status.success() {
                problems.push(format!(
                    "worker {id} did not leave cleanly on SIGTERM: {status}"
                ));
            }
            // Released once the checkpoint completed, not after its leave
            // timeout (90 s).
            if asked.elapsed() > Duration::from_secs(30) {
                problems.push(format!(
                    "worker {id} took {:?} to leave: the coordinator did not release it",
                    asked.elapsed()
                ));
            }
        }
        self.running = n;
        format!("scaled from {from} to {n} workers")
    }

    /// Waits for the job status to show `count` rescales, the last one
    /// ended; checks that it restored a checkpoint of its own on every key
    /// group.
    fn rescaled(&self, count: usize, to: usize, report: &mut Report) {
        let mut job = Json::Null;
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for("the rescale to end", Duration::from_secs(120), || {
                job = self.cluster.job();
                job["rescales"].as_array().map_or(0, Vec::len) >= count
                    && job["rescaling"].as_str().unwrap_or("").is_empty()
            })
        }));
        if ended.is_err() {
            report
                .problems
                .push(format!("rescale {count} did not end: {job}"));
            return;
        }
        let r = job["rescales"][0].clone();
        let checkpoint = r["checkpoint"].as_u64().unwrap_or(0);
        if r["outcome"] != "done" || r["to"].as_u64() != Some(to as u64) || checkpoint == 0 {
            report
                .problems
                .push(format!("rescale {count} went otherwise than planned: {r}"));
        }
        // The new generation restored that checkpoint on every key group
        // (the metrics of all its workers, once they have reported).
        let mut restored = Json::Null;
        let whole = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for("the restored key groups", Duration::from_secs(20), || {
                restored = self.cluster.job();
                restored["restored_checkpoint"].as_u64() == Some(checkpoint)
                    && restored["restored_key_groups"].as_u64() == Some(u64::from(MAX_PARALLELISM))
            })
        }));
        if whole.is_err() {
            report.problems.push(format!(
                "rescale {count}: the new generation did not restore checkpoint {checkpoint} on every key group: restored_checkpoint {}, restored_key_groups {}",
                restored["restored_checkpoint"], restored["restored_key_groups"]
            ));
        }
        report.rescales.push(r);
    }

    /// Injects `fault`; returns what was done.
    fn inject(&mut self, fault: Fault, rng: &mut Rng) -> String {
        let i = rng.below(self.running as u64) as usize;
        let id = Self::worker_id(i);
        let lease = HEARTBEAT_TIMEOUT * 3 / 4;
        match fault {
            Fault::KillWorker => {
                self.cluster.kill_worker(&id);
                std::thread::sleep(Duration::from_millis(500));
                self.start_worker(i);
                format!("SIGKILL worker {id}, started again")
            }
            Fault::KillCoordinator => {
                let args = self.coordinator_args.clone();
                self.cluster
                    .restart_coordinator(&args, || std::thread::sleep(Duration::from_millis(500)));
                "SIGKILL coordinator, started again".into()
            }
            Fault::StopWorker => {
                let pause = lease + Duration::from_secs(3);
                self.cluster.signal_worker(&id, "STOP");
                std::thread::sleep(pause);
                self.cluster.signal_worker(&id, "CONT");
                format!("SIGSTOP worker {id} for {pause:?} (lease {lease:?}), SIGCONT")
            }
            Fault::FreezeClickHouseWhileGenerationChanges => {
                let Some(ch) = &self.servers.ch else {
                    return "no ClickHouse".into();
                };
                ch.pause();
                self.cluster.kill_worker(&id);
                std::thread::sleep(Duration::from_millis(500));
                self.start_worker(i);
                std::thread::sleep(Duration::from_secs(4));
                if let Some(ch) = &self.servers.ch {
                    ch.resume();
                }
                format!("SIGSTOP ClickHouse, SIGKILL worker {id} (a new generation), SIGCONT ClickHouse 4.5 s later")
            }
            Fault::DropBrokerConnections => {
                self.servers.broker.drop_connections();
                "the broker dropped every connection".into()
            }
            Fault::PartitionWorkerFromCoordinator => {
                let cut = HEARTBEAT_TIMEOUT + Duration::from_secs(2);
                self.coordinator_proxies[i].partition();
                std::thread::sleep(cut);
                self.coordinator_proxies[i].heal();
                format!("network partition worker {id} ↔ coordinator for {cut:?}, healed")
            }
            Fault::PartitionClickHouse => {
                let cut = Duration::from_secs(5);
                if let Some(p) = &self.servers.ch_proxy {
                    p.partition();
                    std::thread::sleep(cut);
                    p.heal();
                }
                format!("network partition workers ↔ ClickHouse for {cut:?}, healed")
            }
        }
    }
}

/// Runs a soak in `dir`; returns what it found (it does not panic on
/// wrong output: the caller decides).
/// The soak's input and the servers it reads from and writes to.
pub struct Servers {
    /// The generated stream `weir produce` publishes.
    pub stream: PathBuf,
    pub broker: TestBroker,
    pub ch: Option<ClickHouse>,
    /// Between the workers and ClickHouse.
    pub ch_proxy: Option<FaultProxy>,
}

impl Servers {
    /// Generates the data set (event time runs 5 times faster than the
    /// wall clock: windows close every 12 s of the run) and starts the
    /// broker with the topic, and ClickHouse with the contract's tables.
    pub fn start(dir: &Path, config: &SoakConfig) -> Servers {
        let records = config.records();
        let event_rate = (config.rate / 5).max(1);
        let stream = generate(
            dir,
            "stream.avro",
            &[
                "--records",
                &records.to_string(),
                "--devices",
                &config.devices.to_string(),
                "--rate",
                &event_rate.to_string(),
                "--disorder-ms",
                "8000",
                "--seed",
                &config.seed.to_string(),
            ],
        );
        let broker = TestBroker::start(BrokerConfig {
            partitions: PARTITIONS,
            ..BrokerConfig::default()
        })
        .expect("start the test broker");
        broker.create_topic(TOPIC, PARTITIONS);
        let (ch, ch_proxy) = match config.sink {
            Sink::ClickHouse => {
                let ch = ClickHouse::start(dir);
                ch.apply_weir_ddl(dir, "soak");
                let proxy = FaultProxy::start(
                    format!("127.0.0.1:{}", ch.http_port())
                        .parse()
                        .expect("address"),
                );
                (Some(ch), Some(proxy))
            }
            Sink::Jsonl => (None, None),
        };
        Servers {
            stream: stream[0].clone(),
            broker,
            ch,
            ch_proxy,
        }
    }

    /// The job's flags: the topic, read until idle, into the sink, with
    /// short heartbeats and checkpoints every 3 s.
    pub fn job_args(&self, sink: Sink) -> Vec<String> {
        let mut job = args(&[
            "--pulsar",
            &self.broker.url(),
            "--topic",
            TOPIC,
            "--until-idle",
            "8s",
            "--data-dir",
            "data",
            "--heartbeat-timeout",
            &format!("{}s", HEARTBEAT_TIMEOUT.as_secs()),
            "--checkpoint-interval",
            "3s",
        ]);
        match (&self.ch_proxy, sink) {
            (Some(p), Sink::ClickHouse) => job.extend(args(&[
                "--clickhouse",
                &format!("http://{}", p.addr()),
                "--database",
                "soak",
            ])),
            _ => job.extend(args(&["--output", "out"])),
        }
        job
    }

    /// Starts publishing the stream at the configured rate.
    pub fn produce(&self, dir: &Path, config: &SoakConfig) -> Proc {
        weir(
            dir,
            "produce",
            &args(&[
                "produce",
                "--quiet",
                "--pulsar",
                &self.broker.url(),
                "--topic",
                TOPIC,
                "--input",
                &self.stream.display().to_string(),
                "--rate",
                &config.rate.to_string(),
            ]),
        )
    }

    /// Publishes an undecodable message to a random partition now and
    /// then (call it often; it keeps its own time).
    pub fn inject_dead_letters(&self, letters: &mut DeadLetters, rng: &mut Rng) {
        let now = letters.started.elapsed();
        if now < letters.next {
            return;
        }
        let p = rng.below(u64::from(PARTITIONS)) as u32;
        let partition = format!("{TOPIC}-partition-{p}");
        let (ledger, entry) = self.broker.inject(&partition, Some("bad"), &[0x0e, 0xff]);
        letters
            .injected
            .insert((partition, format!("{ledger}:{entry}:-1")));
        letters.next = now + Duration::from_millis(1500 + rng.below(1000));
    }

    /// Reads the job's output and checks it against the computation.
    pub fn verify(&self, dir: &Path, sink: Sink, letters: &DeadLetters, report: &mut Report) {
        report.dead_letters_injected = letters.injected.len() as u64;
        let (readings, whole) = read_avro(&self.stream);
        assert!(whole, "the generated stream is whole");
        let output = match sink {
            Sink::ClickHouse => {
                let ch = self.ch.as_ref().expect("ClickHouse");
                Output {
                    sensors_local: ch.rows("soak", "sensors_local"),
                    aggregates: ch.rows("soak", "sensor_aggregates_1m"),
                    late: ch.rows("soak", "late_readings"),
                    dead_letters: lines_of(&dir.join("data/dead_letters")),
                }
            }
            Sink::Jsonl => {
                let out = dir.join("out");
                Output {
                    sensors_local: lines_of(&out.join("sensors_local")),
                    aggregates: lines_of(&out.join("sensor_aggregates_1m")),
                    late: lines_of(&out.join("late_readings")),
                    dead_letters: lines_of(&out.join("dead_letters")),
                }
            }
        };
        check(&readings, &output, &letters.injected, report);
    }
}

/// The undecodable messages injected, by (partition, position).
pub struct DeadLetters {
    pub injected: BTreeSet<(String, String)>,
    started: Instant,
    next: Duration,
}

impl DeadLetters {
    pub fn new() -> Self {
        DeadLetters {
            injected: BTreeSet::new(),
            started: Instant::now(),
            next: Duration::from_secs(2),
        }
    }
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters::new()
    }
}

impl SoakConfig {
    /// Readings published in all.
    pub fn records(&self) -> u64 {
        u64::from(self.rate) * self.duration.as_secs().max(1)
    }
}

/// Runs a soak in `dir`; returns what it found (it does not panic on
/// wrong output: the caller decides).
pub fn run(dir: &Path, config: &SoakConfig) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut rng = Rng::new(config.seed);
    report.records = config.records();
    let servers = Servers::start(dir, config);
    let mut coordinator_args = servers.job_args(config.sink);
    let (initial, most) = match &config.schedule {
        Schedule::Faults(_) => (WORKERS, WORKERS),
        Schedule::Replicas { initial, changes } => (
            *initial,
            changes.iter().map(|c| c.1).fold(*initial, usize::max),
        ),
    };
    coordinator_args.extend(args(&["--min-workers", &initial.to_string()]));
    let cluster = Cluster::start(dir, &coordinator_args, 0);
    let coordinator: std::net::SocketAddr = format!("127.0.0.1:{}", cluster.grpc_port)
        .parse()
        .expect("address");
    let coordinator_proxies = (0..most).map(|_| FaultProxy::start(coordinator)).collect();
    let mut rig = Rig {
        cluster,
        running: initial,
        coordinator_proxies,
        servers,
        coordinator_args,
    };
    for i in 0..initial {
        rig.start_worker(i);
    }
    rig.cluster.wait_state("running", Duration::from_secs(120));

    let mut producer = rig.servers.produce(dir, config);
    // Every kind of fault in a seeded order, then again in another: a short
    // run meets each kind.
    let mut deck: Vec<Fault> = Vec::new();
    let mut letters = DeadLetters::new();
    let (fault_every, mut changes) = match &config.schedule {
        Schedule::Faults(every) => (Some(*every), Vec::new()),
        Schedule::Replicas { changes, .. } => (None, changes.clone()),
    };
    changes.reverse();
    let mut next_fault = fault_every.map(|every| jitter(&mut rng, every));
    let run_started = Instant::now();
    loop {
        if producer.try_status().is_some() {
            break;
        }
        let now = run_started.elapsed();
        rig.servers.inject_dead_letters(&mut letters, &mut rng);
        if changes.last().is_some_and(|(at, _)| now >= *at) {
            let (_, n) = changes.pop().expect("a change");
            let at = started.elapsed().as_secs_f64();
            let what = rig.scale_to(n, &mut report.problems);
            println!("soak: {at:7.1} s  {what}");
            report.faults.push((at, what));
            let count = report.rescales.len() + 1;
            rig.rescaled(count, n, &mut report);
        }
        if let Some(every) = fault_every.filter(|_| next_fault.is_some_and(|due| now >= due)) {
            if deck.is_empty() {
                deck = Fault::all(config.sink);
                for k in (1..deck.len()).rev() {
                    deck.swap(k, rng.below(k as u64 + 1) as usize);
                }
            }
            let fault = deck.pop().expect("a fault");
            let at = started.elapsed().as_secs_f64();
            let what = rig.inject(fault, &mut rng);
            println!("soak: {at:7.1} s  {what}");
            report.faults.push((at, what));
            next_fault = Some(run_started.elapsed() + jitter(&mut rng, every));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !producer.try_status().is_some_and(|status| status.success()) {
        report
            .problems
            .push(format!("the producer failed: {}", producer.logs()));
    }

    // The job reads to the end of the topic and finishes.
    let mut last = Json::Null;
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the job to finish", Duration::from_secs(300), || {
            last = rig.cluster.job();
            last["state"] == "finished" || last["state"] == "failed"
        });
    }));
    report.generations = last["generation"].as_u64().unwrap_or(0);
    let (_, checkpoints) = rig.cluster.rest("GET", "/api/v1/checkpoints");
    report.checkpoints = checkpoints["completed"].as_u64().unwrap_or(0);
    if finished.is_err() || last["state"] != "finished" {
        report.problems.push(format!(
            "the job did not finish: {last}\n{}",
            tail(&rig.cluster.logs(), 60)
        ));
        report.elapsed = started.elapsed();
        return report;
    }

    rig.servers.verify(dir, config.sink, &letters, &mut report);
    report.elapsed = started.elapsed();
    report
}

pub fn jitter(rng: &mut Rng, mean: Duration) -> Duration {
    let ms = mean.as_millis() as u64;
    Duration::from_millis(ms / 2 + rng.below(ms.max(1)))
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The soak's directory and settings from the environment, for the script
/// (`scripts/soak.sh`): `SOAK_MINUTES`, `SOAK_FAULT_EVERY_S`, `SOAK_SEED`,
/// `SOAK_RATE`, `SOAK_SINK` (`clickhouse` or `jsonl`).
pub fn config_from_env() -> SoakConfig {
    let get = |k: &str, d: u64| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    SoakConfig {
        duration: Duration::from_secs(get("SOAK_MINUTES", 10) * 60),
        schedule: Schedule::Faults(Duration::from_secs(get("SOAK_FAULT_EVERY_S", 20))),
        seed: get("SOAK_SEED", 1),
        rate: get("SOAK_RATE", 2000) as u32,
        devices: get("SOAK_DEVICES", 1000) as u32,
        sink: match std::env::var("SOAK_SINK").as_deref() {
            Ok("jsonl") => Sink::Jsonl,
            _ => Sink::ClickHouse,
        },
    }
}

/// A scratch directory for a soak run that is kept for inspection.
pub fn kept_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-soak-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("soak directory");
    dir
}
