//! `weir ctl`: the admin API from the command line (REST underneath).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{header, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir_common::error_chain::error_chain;
use weir_common::secret::Secret;
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
    /// The environment variable holding the admin token, sent as
    /// `Authorization: Bearer` (a coordinator with a token refuses changes
    /// without it).
    #[arg(long, default_value = "WEIR_ADMIN_TOKEN")]
    pub admin_token_env: String,
    /// For https:// coordinators: trust this CA certificate (PEM) rather
    /// than the system's roots.
    #[arg(long, env = "WEIR_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
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
        CtlCommand::Status => (Method::GET, "/api/v1/job", String::new()),
        CtlCommand::Workers => (Method::GET, "/api/v1/cluster", String::new()),
        CtlCommand::Stop { savepoint } => (
            Method::POST,
            "/api/v1/job/stop",
            serde_json::json!({ "savepoint": savepoint }).to_string(),
        ),
        CtlCommand::Resume { from } => (
            Method::POST,
            "/api/v1/job/resume",
            from.as_ref()
                .map(|f| serde_json::json!({ "from": f }).to_string())
                .unwrap_or_default(),
        ),
        CtlCommand::Rescale { workers } => (
            Method::POST,
            "/api/v1/job/rescale",
            serde_json::json!({ "workers": workers }).to_string(),
        ),
        CtlCommand::Checkpoints => (Method::GET, "/api/v1/checkpoints", String::new()),
        CtlCommand::Checkpoint { savepoint } => (
            Method::POST,
            "/api/v1/checkpoints",
            serde_json::json!({ "savepoint": savepoint }).to_string(),
        ),
        CtlCommand::CheckpointInterval { interval } => (
            Method::PUT,
            "/api/v1/checkpoints/interval",
            serde_json::json!({ "interval_ms": interval.as_millis() }).to_string(),
        ),
    };
    let token = Secret::from_env(&args.admin_token_env).context("--admin-token-env")?;
    let tls = client_tls(args.tls_ca.as_deref())?;
    let body = request_any(&bases, tls, method, path, &request_body, token.as_ref())?;
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
fn request_any(
    bases: &[String],
    tls: rustls::ClientConfig,
    method: Method,
    path: &str,
    body: &str,
    token: Option<&Secret>,
) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    // The https connector hands https:// on to plain TCP first.
    connector.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    runtime.block_on(async {
        let mut errors = Vec::new();
        for base in bases {
            match request(&client, base, method.clone(), path, body, token).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Elsewhere(e)) if bases.len() == 1 => return Err(e),
                Err(Failure::Elsewhere(e)) => errors.push(format!("{e:#}")),
            }
        }
        bail!("no coordinator answered: {}", errors.join("; "))
    })
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What https:// coordinators are trusted with: the `--tls-ca` file, or
/// the system's roots (none found: https:// fails, http:// still works).
fn client_tls(ca: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    if let Some(ca) = ca {
        return weir_proto::tls::client_config(ca).context("--tls-ca");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?;
    Ok(match builder.clone().with_native_roots() {
        Ok(native) => native.with_no_client_auth(),
        Err(_) => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    })
}

/// How long one coordinator may take to answer.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request; the answer's body, or an error with the API's message.
async fn request(
    client: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    body: &str,
    token: Option<&Secret>,
) -> Result<String, Failure> {
    let uri: Uri = format!("{base}{path}")
        .parse()
        .ok()
        .filter(|u: &Uri| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| {
            Failure::Refused(anyhow!(
                "--coordinator must be an http:// or https:// URL, not `{base}`"
            ))
        })?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| Failure::Refused(anyhow!("cannot build the request: {e}")))?;
    let exchange = async {
        let answer = client.request(request).await.map_err(|e| {
            anyhow!(
                "cannot reach the coordinator at {base}: {}",
                error_chain(&e)
            )
        })?;
        let status = answer.status();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("the coordinator at {base} broke off its answer: {e}"))?
            .to_bytes();
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    let (status, body) = tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| {
            Failure::Elsewhere(anyhow!(
                "the coordinator at {base} did not answer within {PATIENCE:?}"
            ))
        })?
        .map_err(Failure::Elsewhere)?;
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    let e = anyhow!(
        "the coordinator at {base} refused ({}): {message}",
        status.as_u16()
    );
    Err(if status == StatusCode::SERVICE_UNAVAILABLE {
        Failure::Elsewhere(e)
    } else {
        Failure::Refused(e)
    })
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
