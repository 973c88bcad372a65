//! Coordinator high availability: three coordinators in a raft group and
//! three workers run a Pulsar job into ClickHouse under steady load while
//! the leader is SIGKILLed (at a random moment, during a checkpoint, during
//! a rescale), a follower is killed and started again, the leader is cut
//! off from the others, and all three are restarted; then the output must
//! equal the independent computation (see `weir_tests::soak`), exactly
//! once.
//!
//! What it does not cover: a coordinator that loses its raft store (it
//! would have to rejoin as a new member, which needs a membership change
//! this version does not make), two coordinators down at once for longer
//! than a checkpoint interval (nothing is scheduled without a majority:
//! the job waits), and clocks that jump.

use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::ha::{Group, RAFT_ELECTION};
use weir_tests::soak::{tail, DeadLetters, Report, Rng, Servers, Sink, SoakConfig};
use weir_tests::{args, wait_for, weir};

/// A scratch directory kept (and named) when the test fails, for its logs.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("the directory").path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("ha: the test's files are kept in {}", dir.keep().display());
            }
        }
    }
}

/// The checkpoint after `before` completes; returns how long that took.
fn next_checkpoint(group: &Group, before: u64, timeout: Duration) -> Duration {
    let started = Instant::now();
    wait_for(&format!("a checkpoint after {before}"), timeout, || {
        group.latest_checkpoint() > before
    });
    started.elapsed()
}

/// Injects undecodable messages now and then for `span` (between the
/// steps, which are short).
fn pump(servers: &Servers, letters: &mut DeadLetters, rng: &mut Rng, span: Duration) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        servers.inject_dead_letters(letters, rng);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one fault did, for the report and the benchmark.
fn note(report: &mut Report, started: Instant, what: String) {
    let at = started.elapsed().as_secs_f64();
    println!("ha: {at:7.1} s  {what}");
    report.faults.push((at, what));
}

/// SIGKILLs the leader after `before` ran, measures the failover, and
/// starts the killed coordinator again (as its StatefulSet would).
/// Returns the generation before the kill and after the next checkpoint.
fn kill_leader(
    group: &mut Group,
    report: &mut Report,
    started: Instant,
    what: &str,
    before: impl FnOnce(&mut Group),
) -> (u64, u64) {
    let (leader, _) = group.wait_leader(None, Duration::from_secs(60));
    let checkpoint = group.latest_checkpoint();
    let generation = group.job()["generation"].as_u64().unwrap_or(0);
    before(group);
    let killed = Instant::now();
    group.kill_coordinator(leader);
    let (new, elected) = group.wait_leader(Some(leader), Duration::from_secs(60));
    let checkpointed = next_checkpoint(group, checkpoint, Duration::from_secs(120));
    let since_kill = killed.elapsed();
    let after = group.job()["generation"].as_u64().unwrap_or(0);
    let how = if after == generation {
        format!("generation {generation} adopted")
    } else {
        format!("generation {generation} replaced by {after}")
    };
    note(
        report,
        started,
        format!(
            "SIGKILL leader {leader} {what}: coordinator {new} leads after {} ms, next checkpoint after {} ms, {how}",
            elected.as_millis(),
            since_kill.as_millis().max(checkpointed.as_millis())
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    group.start_coordinator(leader);
    (generation, after)
}

/// The job's flags with the coordinator's heartbeat timeout set to
/// `timeout` (workers' leases are three quarters of it).
fn with_heartbeat_timeout(mut job: Vec<String>, timeout: Duration) -> Vec<String> {
    let at = job
        .iter()
        .position(|a| a == "--heartbeat-timeout")
        .expect("the soak's job flags set a heartbeat timeout");
    job[at + 1] = format!("{}ms", timeout.as_millis());
    job
}

#[test]
fn three_coordinators_survive_their_leaders_loss_and_the_output_is_exact() {
    let tmp = KeptOnFailure(Some(tempfile::tempdir().expect("tempdir")));
    let dir = tmp.path();
    let config = SoakConfig {
        duration: Duration::from_secs(80),
        schedule: weir_tests::soak::Schedule::Faults(Duration::from_secs(10)),
        seed: 31,
        rate: 1500,
        devices: 400,
        sink: Sink::ClickHouse,
    };
    let started = Instant::now();
    let mut report = Report {
        records: config.records(),
        ..Report::default()
    };
    let mut rng = Rng::new(config.seed);
    let servers = Servers::start(dir, &config);
    note(
        &mut report,
        started,
        "data set generated, broker and ClickHouse up".into(),
    );
    // Leases (6 s) that outlast an election (about 2.5 s with these raft
    // timings) and the workers finding the new leader: a new leader adopts
    // the running generation.
    let mut job_args =
        with_heartbeat_timeout(servers.job_args(config.sink), Duration::from_secs(8));
    job_args.extend(args(&["--min-workers", "3"]));
    let mut group = Group::start(dir, 3, &job_args);
    note(
        &mut report,
        started,
        "three coordinators up, one leads".into(),
    );
    for i in 0..3 {
        group.start_worker(&format!("w-{i}"));
    }
    wait_for("the job to run", Duration::from_secs(120), || {
        group.job()["state"] == "running"
    });
    note(&mut report, started, "the job runs on three workers".into());
    let mut producer = servers.produce(dir, &config);
    let mut letters = DeadLetters::new();
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(4));

    // Admin requests sent to a follower reach the leader.
    let (leader, _) = group.wait_leader(None, Duration::from_secs(30));
    let follower = (leader + 1) % group.len();
    let (status, job) = group.rest_on(follower, "GET", "/api/v1/job");
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(job["raft"]["leader"].as_u64(), Some(leader as u64), "{job}");
    assert_eq!(job["raft"]["members"].as_array().map(Vec::len), Some(3));
    let before = group.latest_checkpoint();
    let (status, body) = group.rest_on(follower, "POST", "/api/v1/checkpoints");
    assert_eq!(status, 200, "a checkpoint triggered on a follower: {body}");
    next_checkpoint(&group, before, Duration::from_secs(30));
    // `weir ctl` given a dead address first and a follower finds its way.
    let ctl = weir(
        dir,
        "ctl-status",
        &args(&[
            "ctl",
            "--coordinator",
            &format!(
                "http://127.0.0.1:{},http://127.0.0.1:{}",
                weir_tests::free_port(),
                group.http_port(follower)
            ),
            "--json",
            "status",
        ]),
    );
    let mut ctl = ctl;
    ctl.wait_success(Duration::from_secs(30));
    let status: Value = serde_json::from_str(&ctl.stdout()).expect("ctl status --json");
    assert_eq!(status["raft"]["leader"].as_u64(), Some(leader as u64));
    assert!(status["raft"]["term"].as_u64() > Some(0));
    assert_eq!(status["raft"]["members"].as_array().map(Vec::len), Some(3));
    note(
        &mut report,
        started,
        format!("admin requests on follower {follower} reached leader {leader}"),
    );

    // The leader killed at a random moment: the new leader adopts the
    // running generation (its workers kept running it).
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(3));
    let (before, after) = kill_leader(
        &mut group,
        &mut report,
        started,
        "at a random moment",
        |_| {},
    );
    assert_eq!(
        before,
        after,
        "the new leader did not adopt the running generation\n{}",
        tail(&group.logs(), 80)
    );
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(4));

    // The leader killed while a checkpoint is in flight: adopted too (the
    // workers abandon its barriers for the new leader's first checkpoint).
    let (before, after) = kill_leader(
        &mut group,
        &mut report,
        started,
        "during a checkpoint",
        |g| {
            let (status, body) = g.rest("POST", "/api/v1/checkpoints");
            assert_eq!(status, 200, "{body}");
            std::thread::sleep(Duration::from_millis(150));
        },
    );
    assert_eq!(
        before,
        after,
        "the new leader did not adopt the generation\n{}",
        tail(&group.logs(), 80)
    );
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(4));

    // The leader killed while a rescale is under way (a fourth worker
    // joined): adopted or redeployed, depending on how far it got.
    kill_leader(&mut group, &mut report, started, "during a rescale", |g| {
        g.start_worker("w-3");
        let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for("the rescale to start", Duration::from_secs(20), || {
                !g.job()["rescaling"].as_str().unwrap_or("").is_empty()
            })
        }));
        assert!(seen.is_ok(), "no rescale started when w-3 joined");
    });
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(4));

    // A follower killed and started again: nothing changes for the job.
    let (leader, _) = group.wait_leader(None, Duration::from_secs(60));
    let follower = (leader + 2) % group.len();
    group.kill_coordinator(follower);
    let checkpoint = group.latest_checkpoint();
    next_checkpoint(&group, checkpoint, Duration::from_secs(30));
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(2));
    group.start_coordinator(follower);
    assert_eq!(
        group.leaders(),
        vec![leader],
        "a follower's loss moved the leader"
    );
    note(
        &mut report,
        started,
        format!("SIGKILL follower {follower}, started again; coordinator {leader} still leads"),
    );
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(4));

    // The leader cut off from the others: it steps down, another leads,
    // and never do two run the job for longer than the step-down takes.
    let (leader, _) = group.wait_leader(None, Duration::from_secs(60));
    let checkpoint = group.latest_checkpoint();
    group.partition(leader);
    let cut = Instant::now();
    let mut stepped_down = None;
    let mut elected = None;
    wait_for(
        "the cut-off leader to step down and another to lead",
        Duration::from_secs(60),
        || {
            let leaders = group.leaders();
            if stepped_down.is_none() && !leaders.contains(&leader) {
                stepped_down = Some(cut.elapsed());
            }
            if elected.is_none() && leaders.iter().any(|&l| l != leader) {
                elected = Some(cut.elapsed());
            }
            stepped_down.is_some() && elected.is_some()
        },
    );
    let (stepped_down, elected) = (
        stepped_down.expect("stepped down"),
        elected.expect("elected"),
    );
    // Heartbeat checks every election/2, each waiting up to an election.
    assert!(
        stepped_down <= RAFT_ELECTION * 3,
        "the cut-off leader took {stepped_down:?} to step down"
    );
    let checkpointed = next_checkpoint(&group, checkpoint, Duration::from_secs(120));
    note(
        &mut report,
        started,
        format!(
            "leader {leader} cut off from the others: stepped down after {} ms, another led after {} ms, next checkpoint after {} ms",
            stepped_down.as_millis(),
            elected.as_millis(),
            cut.elapsed().as_millis().max(checkpointed.as_millis())
        ),
    );
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(2));
    group.heal(leader);
    pump(&servers, &mut letters, &mut rng, Duration::from_secs(4));

    // All three restarted: the job resumes from the raft record (adopted,
    // when a leader is back before the workers' leases ran out).
    let generation = group.job()["generation"].as_u64().unwrap_or(0);
    let checkpoint = group.latest_checkpoint();
    for i in 0..group.len() {
        group.kill_coordinator(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..group.len() {
        group.start_coordinator(i);
    }
    let (leader, took) = group.wait_leader(None, Duration::from_secs(60));
    let checkpointed = next_checkpoint(&group, checkpoint, Duration::from_secs(120));
    let job = group.job();
    assert_eq!(job["state"], "running", "{job}");
    let now = job["generation"].as_u64().unwrap_or(0);
    assert!(
        now >= generation,
        "generations went back: {generation} → {now}"
    );
    note(
        &mut report,
        started,
        format!("all three coordinators SIGKILLed and started again: coordinator {leader} leads after {} ms, next checkpoint after {} ms; generation {generation} → {now}", took.as_millis(), checkpointed.as_millis()),
    );

    // The producer finishes; the job reads to the end and finishes.
    while producer.try_status().is_none() {
        servers.inject_dead_letters(&mut letters, &mut rng);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        producer.try_status().is_some_and(|s| s.success()),
        "the producer failed: {}",
        producer.logs()
    );
    let mut last = Value::Null;
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the job to finish", Duration::from_secs(300), || {
            last = group.job();
            last["state"] == "finished" || last["state"] == "failed"
        })
    }));
    assert!(
        finished.is_ok() && last["state"] == "finished",
        "the job did not finish: {last}\n{}",
        tail(&group.logs(), 80)
    );
    report.generations = last["generation"].as_u64().unwrap_or(0);
    report.checkpoints = group.latest_checkpoint();
    servers.verify(dir, config.sink, &letters, &mut report);
    report.elapsed = started.elapsed();
    report.print();
    let logs = group.coordinator_logs();
    for line in logs
        .lines()
        .filter(|l| l.contains("recorded in the raft group"))
    {
        println!("ha: {}", line.trim());
    }
    assert!(
        report.is_exact(),
        "the output is not exactly once\n{}",
        tail(&group.logs(), 80)
    );
}
