//! `weir local`: the whole job in this process — a coordinator and one
//! worker, the same code as a cluster, talking over loopback — with live
//! progress and a summary.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tokio::time::{interval, Instant, MissedTickBehavior};
use weir_common::spec::{JobSpec, LatePolicy, SinkKind};
use weir_common::tasks::TaskGroup;
use weir_coordinator::{Coordinator, Gateway};
use weir_proto::admin::JobStatus;
use weir_worker::node::{WorkerConfig, WorkerNode};

use crate::cluster::{coordinator_config, runtime};
use crate::overrides::JobFlags;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct LocalArgs {
    #[command(flatten)]
    pub job: JobFlags,
    /// No live progress line (a log line every 10 s instead).
    #[arg(long)]
    pub quiet: bool,
    /// Also serve the REST admin API and /metrics on this address.
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

/// How a `weir local` run ended.
enum Ending {
    Finished,
    Stopped,
    Aborted,
}

pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    let spec = args.job.resolve()?;
    let outputs = outputs_of(&spec);
    let mut spec = spec;
    // One process: a failed deployment will fail again; report it at once
    // (unless the spec says how often to try).
    spec.restart.max_attempts.get_or_insert(0);
    let mut config = coordinator_config(spec, Duration::from_secs(10), 1, Duration::ZERO)?;
    config.heartbeat_interval = Duration::from_millis(250);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    runtime()?.block_on(async move {
        // One process, one cancellation tree: the coordinator and the worker
        // are children of the root, and either failing ends the run.
        let root = TaskGroup::root();
        let coordinator = Coordinator::start(config, loopback, args.http, &root).await?;
        let worker = WorkerNode::start(
            WorkerConfig {
                id: "local".into(),
                coordinator: coordinator.grpc_addr.to_string(),
                listen: loopback,
                advertise: None,
                data_dir: None,
                own_subdirectories: false,
                secret: Default::default(),
                tls: Default::default(),
            },
            &root,
        )
        .await?;
        let handle = coordinator.handle();
        let result = tokio::select! {
            r = watch(&handle, args.quiet) => r,
            reason = coordinator.stopped() => Err(anyhow!("the coordinator stopped: {}", reason.unwrap_or_default())),
            reason = worker.stopped() => Err(anyhow!("the worker stopped: {}", reason.unwrap_or_default())),
        };
        worker.shutdown().await;
        coordinator.shutdown().await;
        root.shutdown().await;
        let (ending, status, elapsed) = result?;
        if status.state == "failed" {
            bail!("{}", status.error);
        }
        print_summary(&ending, &status, elapsed, &outputs);
        Ok(())
    })
}

/// Shows progress until the job ends; Ctrl-C (or SIGTERM) stops it, a
/// second Ctrl-C gives up waiting for the stop.
async fn watch(handle: &Gateway, quiet: bool) -> anyhow::Result<(Ending, JobStatus, Duration)> {
    let started = Instant::now();
    let mut progress = Progress::new(quiet);
    let mut ticker = interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let status = handle.job().await?;
                progress.draw(&status);
                let done = match status.state.as_str() {
                    "finished" | "failed" => true,
                    // A stop ends when the worker reports its last counters.
                    "stopped" => status.phase == "done" || status.phase.is_empty(),
                    _ => false,
                };
                if done {
                    progress.clear();
                    let ending = if status.state == "stopped" { Ending::Stopped } else { Ending::Finished };
                    return Ok((ending, status, started.elapsed()));
                }
            }
            _ = tokio::signal::ctrl_c() => {
                progress.clear();
                if stopping {
                    eprintln!("aborting");
                    let status = handle.job().await?;
                    return Ok((Ending::Aborted, status, started.elapsed()));
                }
                eprintln!("stopping after a final checkpoint: writing every closed window (press Ctrl-C again to abort)");
                stopping = true;
                let _ = handle.stop_with_checkpoint().await;
            }
            _ = terminate.recv() => {
                progress.clear();
                eprintln!("SIGTERM: stopping after a final checkpoint");
                stopping = true;
                let _ = handle.stop_with_checkpoint().await;
            }
        }
    }
}

/// Where results go, for the summary.
fn outputs_of(spec: &JobSpec) -> Vec<String> {
    let mut tables = Vec::new();
    for a in &spec.aggregates {
        tables.push(match a {
            weir_common::spec::Aggregate::SensorsLocal => "sensors_local",
            weir_common::spec::Aggregate::SensorAggregates1m => "sensor_aggregates_1m",
        });
    }
    if spec.late.policy == LatePolicy::Output {
        tables.push("late_readings");
    }
    let mut outputs: Vec<String> = match spec.sink.kind() {
        Ok(SinkKind::Jsonl(j)) => tables
            .iter()
            .map(|t| format!("{}/ (part files)", j.dir.join(t).display()))
            .collect(),
        Ok(SinkKind::ClickHouse(c)) => tables
            .iter()
            .map(|t| {
                let name = match *t {
                    "sensors_local" => &c.tables.sensors_local,
                    "sensor_aggregates_1m" => &c.tables.sensor_aggregates_1m,
                    _ => &c.tables.late_readings,
                };
                format!("{}.{name} at {}", c.database, c.url)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    if let Some(p) = &spec.late.path {
        outputs.push(format!("{}/ (late readings)", p.display()));
    }
    outputs
}

fn print_summary(ending: &Ending, s: &JobStatus, elapsed: Duration, outputs: &[String]) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let head = match ending {
        Ending::Finished => "finished: every input read, every window written".to_string(),
        Ending::Stopped => format!(
            "stopped: every closed window written; {} open window(s) were not emitted",
            s.open_windows
        ),
        Ending::Aborted => "aborted: output may be incomplete".to_string(),
    };
    println!("weir local {head} ({:.1} s)", elapsed.as_secs_f64());
    println!(
        "  records read     {:>14}  ({}/s)",
        group(s.records_in),
        group((s.records_in as f64 / secs) as u64)
    );
    println!("  bad records      {:>14}", group(s.bad_records));
    println!("  late readings    {:>14}", group(s.late_records));
    println!("  windows closed   {:>14}", group(s.windows_closed));
    println!("  rows written     {:>14}", group(s.rows_written));
    println!("  sink retries     {:>14}", group(s.sink_retries));
    if s.sink_lookups > 0 {
        println!("  sink lookups     {:>14}", group(s.sink_lookups));
    }
    println!("  state spills     {:>14}", group(s.state_spills));
    if s.restored_checkpoint > 0 {
        println!(
            "  restored from    {:>14}",
            format!("checkpoint {}", s.restored_checkpoint)
        );
    }
    println!("  dead letters     {:>14}", group(s.dead_letters));
    println!(
        "  watermark        {:>14}",
        weir_common::time::format_utc_ms(s.watermark)
    );
    for out in outputs {
        println!("  output           {out}");
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1000), "1,000");
        assert_eq!(super::group(1_234_567), "1,234,567");
    }
}
