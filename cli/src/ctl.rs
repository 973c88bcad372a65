//! `weir ctl`: the admin API from the command line (REST underneath).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use weir_common::spec::Duration as SpecDuration;
use weir_common::time::format_utc_ms;
use weir_proto::admin::{CheckpointList, ClusterStatus, JobStatus};

use crate::local::group;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The coordinator's HTTP address, or those of a raft group's
    /// coordinators, comma-separated: any of them answers (a follower asks
    /// the leader); one that cannot be reached, or has no leader to ask,
    /// is skipped for the next.
    #[arg(
        long,
        env = "WEIR_COORDINATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    pub coordinator: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// The job: state, generation, throughput, watermarks.
    Status,
    /// The coordinator and its workers.
    Workers,
    /// Stop the job (closed windows are written).
    Stop {
        /// Take a savepoint first; the job stops once it completed, and a
        /// resumed job restores it.
        #[arg(long)]
        savepoint: bool,
    },
    /// Resume a stopped or failed job from its latest completed checkpoint
    /// (from the beginning of its inputs when there is none).
    Resume {
        /// Restore this checkpoint or savepoint instead: its number, or its
        /// path in the job's store (STORE/JOB/chk-N).
        #[arg(long, value_name = "N|PATH")]
        from: Option<String>,
    },
    /// The latest checkpoints: id, state, duration, size.
    Checkpoints,
    /// Take a checkpoint now.
    Checkpoint {
        /// A savepoint: kept until deleted by hand, not by retention.
        #[arg(long)]
        savepoint: bool,
    },
    /// Change the checkpoint interval of the running job (e.g. 30s).
    CheckpointInterval { interval: SpecDuration },
    /// Run the job on N workers: on Kubernetes, patches the workers'
    /// StatefulSet's scale (as `kubectl scale` does); the coordinator then
    /// rescales the job from a checkpoint.
    Rescale { workers: u32 },
}

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let bases: Vec<String> = args
        .coordinator
        .split(',')
        .map(|b| b.trim().trim_end_matches('/').to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    if bases.is_empty() {
        bail!("--coordinator names no address");
    }
    let (method, path, request_body) = match &args.command {
        CtlCommand::Status => ("GET", "/api/v1/job", String::new()),
        CtlCommand::Workers => ("GET", "/api/v1/cluster", String::new()),
        CtlCommand::Stop { savepoint } => (
            "POST",
            "/api/v1/job/stop",
            serde_json::json!({ "savepoint": savepoint }).to_string(),
        ),
        CtlCommand::Resume { from } => (
            "POST",
            "/api/v1/job/resume",
            from.as_ref()
                .map(|f| serde_json::json!({ "from": f }).to_string())
                .unwrap_or_default(),
        ),
        CtlCommand::Rescale { workers } => (
            "POST",
            "/api/v1/job/rescale",
            serde_json::json!({ "workers": workers }).to_string(),
        ),
        CtlCommand::Checkpoints => ("GET", "/api/v1/checkpoints", String::new()),
        CtlCommand::Checkpoint { savepoint } => (
            "POST",
            "/api/v1/checkpoints",
            serde_json::json!({ "savepoint": savepoint }).to_string(),
        ),
        CtlCommand::CheckpointInterval { interval } => (
            "PUT",
            "/api/v1/checkpoints/interval",
            serde_json::json!({ "interval_ms": interval.as_millis() }).to_string(),
        ),
    };
    let body = request_any(&bases, method, path, &request_body)?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    match args.command {
        CtlCommand::Checkpoints
        | CtlCommand::Checkpoint { .. }
        | CtlCommand::CheckpointInterval { .. } => {
            let c: CheckpointList =
                serde_json::from_str(&body).context("unexpected answer from the coordinator")?;
            match args.command {
                CtlCommand::Checkpoint { savepoint: true } => println!("savepoint requested"),
                CtlCommand::Checkpoint { savepoint: false } => println!("checkpoint requested"),
                _ => {}
            }
            print_checkpoints(&c);
        }
        CtlCommand::Workers => {
            let c: ClusterStatus =
                serde_json::from_str(&body).context("unexpected answer from the coordinator")?;
            print_cluster(&c);
        }
        _ => {
            let j: JobStatus =
                serde_json::from_str(&body).context("unexpected answer from the coordinator")?;
            print_job(&j);
        }
    }
    Ok(())
}

/// Why a request to one coordinator did not get an answer.
enum Failure {
    /// Unreachable, or no leader to ask (503): another may answer.
    Elsewhere(anyhow::Error),
    /// The API refused the request; another coordinator would too.
    Refused(anyhow::Error),
}

/// The request, to each coordinator in turn until one answers.
fn request_any(bases: &[String], method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut errors = Vec::new();
    for base in bases {
        match request(base, method, path, body) {
            Ok(answer) => return Ok(answer),
            Err(Failure::Refused(e)) => return Err(e),
            Err(Failure::Elsewhere(e)) if bases.len() == 1 => return Err(e),
            Err(Failure::Elsewhere(e)) => errors.push(format!("{e:#}")),
        }
    }
    bail!("no coordinator answered: {}", errors.join("; "))
}

/// One HTTP/1.1 request; the answer's body, or an error with the API's
/// message.
fn request(base: &str, method: &str, path: &str, body: &str) -> Result<String, Failure> {
    let elsewhere = Failure::Elsewhere;
    let hostport = base.strip_prefix("http://").ok_or_else(|| {
        Failure::Refused(anyhow!(
            "--coordinator must be an http:// URL, not `{base}`"
        ))
    })?;
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    exchange(base, hostport, method, path, body).map_err(|e| match e {
        Exchange::Io(e) => elsewhere(e),
        Exchange::Status(503, e) => elsewhere(e),
        Exchange::Status(_, e) => Failure::Refused(e),
    })
}

enum Exchange {
    Io(anyhow::Error),
    Status(u16, anyhow::Error),
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Self {
        Exchange::Io(e.into())
    }
}

impl From<anyhow::Error> for Exchange {
    fn from(e: anyhow::Error) -> Self {
        Exchange::Io(e)
    }
}

fn exchange(
    base: &str,
    hostport: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, Exchange> {
    let mut stream = TcpStream::connect(hostport)
        .with_context(|| format!("cannot reach the coordinator at {base}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{base} did not answer HTTP"))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let lower = line.trim_end().to_ascii_lowercase();
        if lower.is_empty() {
            break;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).context("bad chunked answer")?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        return Err(Exchange::Status(
            status,
            anyhow!("the coordinator at {base} refused ({status}): {message}"),
        ));
    }
    Ok(body)
}

fn print_checkpoints(c: &CheckpointList) {
    println!(
        "store {}  interval {} ms  completed {}  failed {}",
        c.store, c.interval_ms, c.completed, c.failed
    );
    println!(
        "{:>6}  {:<11}  {:<24}  {:>9}  {:>12}  {:>12}  {:>9}  failure",
        "id", "state", "triggered", "duration", "size", "incremental", "aligning"
    );
    for k in &c.checkpoints {
        println!(
            "{:>6}  {:<11}  {:<24}  {:>6} ms  {:>12}  {:>12}  {:>6} ms  {}",
            k.id,
            k.state,
            format_utc_ms(k.triggered_ms),
            k.duration_ms,
            k.bytes,
            k.incremental_bytes,
            k.alignment_ms,
            k.failure
        );
    }
}

fn print_job(j: &JobStatus) {
    println!("job         {}", j.name);
    println!(
        "state       {}{}",
        j.state,
        if j.phase.is_empty() {
            String::new()
        } else {
            format!(" ({})", j.phase)
        }
    );
    if !j.error.is_empty() {
        println!("error       {}", j.error);
    }
    println!("generation  {}", j.generation);
    let rescaling = if j.rescaling.is_empty() {
        String::new()
    } else {
        format!(", rescaling ({})", j.rescaling)
    };
    println!(
        "workers     {} (wanted {}{rescaling})",
        j.workers, j.desired_workers
    );
    if !j.kubernetes.is_empty() {
        println!("kubernetes  {}", j.kubernetes);
    }
    if let Some(r) = &j.raft {
        let members: Vec<String> = r
            .members
            .iter()
            .map(|m| format!("{}={} (log {})", m.id, m.address, m.matched_index))
            .collect();
        println!(
            "raft        leader {}, term {}, members {}",
            if r.has_leader {
                r.leader.to_string()
            } else {
                "none".into()
            },
            r.term,
            members.join(", ")
        );
    }
    println!(
        "records     {} in ({}/s), {} rows out ({}/s)",
        group(j.records_in),
        group(j.records_in_per_second as u64),
        group(j.rows_written),
        group(j.rows_out_per_second as u64)
    );
    println!(
        "windows     {} closed, {} open; late {}, bad {}",
        group(j.windows_closed),
        group(j.open_windows),
        group(j.late_records),
        group(j.bad_records)
    );
    println!("watermark   {}", format_utc_ms(j.watermark));
    println!();
    println!(
        "{:<6} {:<16} {:>12} {:<25} {:<8} NAME",
        "INPUT", "WORKER", "RECORDS", "WATERMARK", "DONE"
    );
    for p in &j.partitions {
        println!(
            "{:<6} {:<16} {:>12} {:<25} {:<8} {}",
            p.input,
            p.worker_id,
            group(p.records),
            format_utc_ms(p.watermark),
            if p.finished { "yes" } else { "no" },
            p.name
        );
    }
    if !j.rescales.is_empty() {
        println!();
        println!(
            "{:<24} {:>4} {:>4} {:<8} {:>10} {:>10} {:>9}  OUTCOME",
            "RESCALED", "FROM", "TO", "CAUSE", "CHECKPOINT", "GENERATION", "TOOK"
        );
        for r in &j.rescales {
            println!(
                "{:<24} {:>4} {:>4} {:<8} {:>10} {:>10} {:>7}ms  {}",
                format_utc_ms(r.started_ms),
                r.from,
                r.to,
                r.cause,
                r.checkpoint,
                r.generation,
                r.duration_ms,
                r.outcome
            );
        }
    }
}

fn print_cluster(c: &ClusterStatus) {
    println!(
        "coordinator {} (version {}, up {} s)",
        c.coordinator_address,
        c.version,
        c.uptime_ms / 1000
    );
    println!();
    println!(
        "{:<16} {:<22} {:<10} {:>10} {:<12} {:<11} {:>12} {:>8}",
        "WORKER", "ADDRESS", "STATE", "HEARTBEAT", "PARTITIONS", "KEY GROUPS", "RECORDS", "RSS MB"
    );
    for w in &c.workers {
        let partitions: Vec<String> = w.partitions.iter().map(u32::to_string).collect();
        println!(
            "{:<16} {:<22} {:<10} {:>8}ms {:<12} {:<11} {:>12} {:>8}",
            w.worker_id,
            w.data_address,
            w.state,
            w.last_heartbeat_ms_ago,
            partitions.join(","),
            format!("[{}, {})", w.key_group_start, w.key_group_end),
            group(w.records_in),
            w.resident_bytes >> 20
        );
    }
}
