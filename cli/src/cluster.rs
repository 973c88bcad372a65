//! `weir coordinator` and `weir worker`: the two roles of a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use weir_common::spec::{JobSpec, SourceKind};
use weir_common::tasks::TaskGroup;
use weir_coordinator::auth::{AdminAuth, Protected};
use weir_coordinator::discovery::Discovery;
use weir_coordinator::kubernetes::WorkerSet;
use weir_coordinator::{Coordinator, CoordinatorConfig};
use weir_proto::auth::{ClusterSecret, Secret};
use weir_proto::tls::{Dialer, Tls, TlsConfig};
use weir_worker::node::{WorkerConfig, WorkerNode};

use crate::overrides::JobFlags;

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub job: JobFlags,
    /// gRPC address for workers and gRPC admin clients.
    #[arg(long, default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// HTTP address for the REST admin API, /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
    /// A worker without a heartbeat for this long is lost.
    #[arg(long, default_value = "10s")]
    pub heartbeat_timeout: weir_common::spec::Duration,
    /// Workers needed before the job is first deployed.
    #[arg(long, default_value_t = 1)]
    pub min_workers: usize,
    /// Quiet time after workers join or leave before redeploying.
    #[arg(long, default_value = "1s")]
    pub settle: weir_common::spec::Duration,
    /// Watch the workers' StatefulSet: its replicas are the workers the job
    /// runs on, and `weir ctl rescale` patches them. Uses the pod's service
    /// account (or KUBECONFIG outside a cluster).
    #[arg(long)]
    pub kubernetes: bool,
    /// The workers' StatefulSet (with --kubernetes).
    #[arg(long, env = "WEIR_WORKER_STATEFULSET", default_value = "weir-worker")]
    pub worker_statefulset: String,
    /// Its namespace (default: the coordinator's own).
    #[arg(long, env = "WEIR_NAMESPACE")]
    pub namespace: Option<String>,
    /// How long a rescale waits for the workers it asked for to register
    /// before it goes on with those there are.
    #[arg(long, default_value = "3m")]
    pub rescale_patience: weir_common::spec::Duration,
    /// The coordinators of a raft group, this one included:
    /// `0=HOST:PORT,1=HOST:PORT,2=HOST:PORT` (their gRPC addresses; raft
    /// runs over the gRPC port). Without it this coordinator runs alone.
    #[arg(long, env = "WEIR_PEERS")]
    pub peers: Option<String>,
    /// This coordinator's id in --peers (default: the number at the end of
    /// the host name, as in a StatefulSet's `weir-coordinator-2`).
    #[arg(long, env = "WEIR_NODE_ID")]
    pub node_id: Option<u64>,
    /// Where the raft log and state are kept (default: `raft-<id>` in the
    /// job's state directory). Keep it across restarts: a coordinator that
    /// lost it rejoins as a new member would not.
    #[arg(long)]
    pub raft_dir: Option<PathBuf>,
    /// The raft leader's heartbeat interval.
    #[arg(long, default_value = "250ms")]
    pub raft_heartbeat: weir_common::spec::Duration,
    /// A follower that hears nothing from the leader for 2.5–3 times this
    /// starts an election (openraft's leader lease, 1.5 × this, plus its
    /// election timeout, 1–1.5 × this); a leader that cannot reach a
    /// majority for this long steps down, well before.
    #[arg(long, default_value = "1500ms")]
    pub raft_election: weir_common::spec::Duration,
    /// The environment variable holding the admin API's token: with it set,
    /// every call that changes something needs `Authorization: Bearer
    /// <token>` (401 / UNAUTHENTICATED without). Unset: the API is open.
    #[arg(long, default_value = "WEIR_ADMIN_TOKEN")]
    pub admin_token_env: String,
    /// With an admin token, require it for reads too (status, checkpoints,
    /// /metrics); /healthz and /readyz stay open.
    #[arg(long)]
    pub admin_token_for_reads: bool,
    #[command(flatten)]
    pub cluster: ClusterSecretArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS on this process's ports and to its peers (workers, coordinators).
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Serve TLS on every port of this process with this certificate chain
    /// (PEM), and dial the coordinator and peers with TLS. The file is read
    /// again every few seconds: a renewed certificate is served without a
    /// restart. Needs --tls-key.
    #[arg(long, env = "WEIR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "WEIR_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Dial the coordinator and peers with TLS, trusting this CA
    /// certificate (PEM) rather than the system's roots.
    #[arg(long, env = "WEIR_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS of this process: none without flags; every file read and
    /// checked now (a bad one stops the process, naming it).
    pub fn tls(&self) -> anyhow::Result<Tls> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Tls::load(&TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                ca: self.tls_ca.clone(),
            })?,
            (Some(cert), None) => bail!(
                "--tls-cert {} needs --tls-key (WEIR_TLS_KEY): the certificate's private key",
                cert.display()
            ),
            (None, Some(key)) => bail!(
                "--tls-key {} needs --tls-cert (WEIR_TLS_CERT): the certificate it belongs to",
                key.display()
            ),
            // Dials TLS, serves plain.
            (None, None) => match &self.tls_ca {
                Some(ca) => Tls {
                    server: None,
                    dial: Dialer::tls(Some(ca))?,
                },
                None => Tls::none(),
            },
        };
        Ok(tls)
    }
}

/// The cluster's shared secret (workers, coordinators).
#[derive(Args, Debug)]
pub struct ClusterSecretArgs {
    /// The environment variable holding the cluster's shared secret: with
    /// it set, workers and coordinators present it on every internal call
    /// and refuse calls without it. Set it to the same value everywhere.
    #[arg(long, default_value = "WEIR_CLUSTER_SECRET")]
    pub cluster_secret_env: String,
}

impl ClusterSecretArgs {
    pub fn secret(&self) -> anyhow::Result<ClusterSecret> {
        let secret = Secret::from_env(&self.cluster_secret_env).context("--cluster-secret-env")?;
        Ok(ClusterSecret::new(secret))
    }
}

/// The raft group of `--peers`, if any.
fn raft_group(
    args: &CoordinatorArgs,
    state_dir: &std::path::Path,
) -> anyhow::Result<Option<weir_raft::group::GroupConfig>> {
    let Some(peers) = &args.peers else {
        return Ok(None);
    };
    let peers = weir_raft::group::parse_peers(peers).context("--peers")?;
    let node_id = match args.node_id {
        Some(id) => id,
        None => node_id_from_hostname().context(
            "--node-id is needed with --peers (the host name does not end in -<number>)",
        )?,
    };
    if !peers.contains_key(&node_id) {
        bail!("--node-id {node_id} is not in --peers");
    }
    let heartbeat = args.raft_heartbeat.std();
    let election = args.raft_election.std();
    if election < heartbeat * 3 {
        bail!("--raft-election must be at least three --raft-heartbeat intervals");
    }
    let dir = args
        .raft_dir
        .clone()
        .unwrap_or_else(|| state_dir.join(format!("raft-{node_id}")));
    Ok(Some(weir_raft::group::GroupConfig {
        node_id,
        peers,
        dir,
        heartbeat,
        election,
        // The coordinator sets its cluster secret here.
        secret: ClusterSecret::none(),
        // And how to dial the peers.
        dial: Dialer::plain(),
    }))
}

fn node_id_from_hostname() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    ordinal(host.trim())
}

/// The number after the last `-` of a StatefulSet pod's name.
fn ordinal(name: &str) -> Option<u64> {
    name.rsplit_once('-')?.1.parse().ok()
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The coordinator's gRPC address (host:port), or the addresses of a
    /// raft group's coordinators, comma-separated: the worker finds the
    /// leader among them.
    #[arg(long, env = "WEIR_COORDINATOR_GRPC")]
    pub coordinator: String,
    /// Address for the shuffle (gRPC) and /healthz, /readyz, /metrics.
    #[arg(long, default_value = "0.0.0.0:7071")]
    pub listen: SocketAddr,
    /// Stable worker id (default: the host name and process id).
    #[arg(long, env = "WEIR_WORKER_ID")]
    pub id: Option<String>,
    /// Address peers use to reach this worker (default: the bound address).
    #[arg(long, env = "WEIR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Working directory for state, overriding the job spec's.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// On SIGTERM the worker waits this long for the coordinator to
    /// checkpoint its state and run the job without it (keep it below the
    /// pod's termination grace period).
    #[arg(long, default_value = "90s")]
    pub leave_timeout: weir_common::spec::Duration,
    #[command(flatten)]
    pub cluster: ClusterSecretArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The coordinator's configuration for a spec: paths made absolute (workers
/// may run elsewhere), inputs checked now rather than on every worker.
pub fn coordinator_config(
    mut spec: JobSpec,
    heartbeat_timeout: Duration,
    min_workers: usize,
    settle: Duration,
) -> anyhow::Result<CoordinatorConfig> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    spec.resolve_paths(&cwd);
    if let Ok(SourceKind::AvroFiles(files)) = spec.source.kind() {
        for path in &files.paths {
            weir_common::input::check_avro_file(path)?;
        }
    }
    let partitions = spec.partition_names()?.unwrap_or_default();
    let discovery = match spec.source.kind()? {
        SourceKind::Pulsar(p) => Some(Discovery {
            connection: p.into(),
            topic: p.topic.clone(),
            interval: p.discovery_interval.std(),
        }),
        _ => None,
    };
    let mut config = CoordinatorConfig::new(spec, partitions);
    config.heartbeat_interval =
        (heartbeat_timeout / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
    config.heartbeat_timeout = heartbeat_timeout;
    config.min_workers = min_workers;
    config.settle = settle;
    config.discovery = discovery;
    Ok(config)
}

pub fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let spec = args.job.resolve()?;
    let mut config = coordinator_config(
        spec,
        args.heartbeat_timeout.std(),
        args.min_workers,
        args.settle.std(),
    )?;
    config.rescale_patience = args.rescale_patience.std();
    config.raft = raft_group(&args, &config.spec.state.dir)?;
    let token = Secret::from_env(&args.admin_token_env).context("--admin-token-env")?;
    if token.is_none() {
        tracing::warn!(variable = %args.admin_token_env, "no admin token: anyone who reaches the admin API can stop the job");
    }
    let protected = if args.admin_token_for_reads {
        Protected::Everything
    } else {
        Protected::Writes
    };
    if args.admin_token_for_reads && token.is_none() {
        bail!(
            "--admin-token-for-reads needs an admin token in {}",
            args.admin_token_env
        );
    }
    config.admin_auth = AdminAuth::new(token, protected);
    config.cluster_secret = args.cluster.secret()?;
    config.tls = args.tls.tls()?;
    runtime()?.block_on(async move {
        if args.kubernetes {
            let set =
                WorkerSet::from_environment(args.namespace.as_deref(), &args.worker_statefulset)
                    .await
                    .context("--kubernetes")?;
            tracing::info!(statefulset = %set.target(), "watching the workers' StatefulSet");
            config.worker_set = Some(set);
        }
        let root = TaskGroup::root();
        let coordinator = Coordinator::start(config, args.listen, Some(args.http), &root).await?;
        let failure = tokio::select! {
            r = wait_for_signal() => { r?; None }
            reason = coordinator.stopped() => reason,
        };
        tracing::info!("shutting down");
        coordinator.shutdown().await;
        root.shutdown().await;
        match failure {
            Some(reason) => bail!("the coordinator stopped: {reason}"),
            None => Ok(()),
        }
    })
}

pub fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let secret = args.cluster.secret()?;
    let tls = args.tls.tls()?;
    let id = args.id.unwrap_or_else(default_worker_id);
    let config = WorkerConfig {
        id,
        coordinator: args.coordinator,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        own_subdirectories: true,
        secret,
        tls,
    };
    let leave_timeout = args.leave_timeout.std();
    runtime()?.block_on(async move {
        let root = TaskGroup::root();
        let node = WorkerNode::start(config, &root).await?;
        tracing::info!(address = %node.local_addr, "worker listening");
        let failure = tokio::select! {
            r = wait_for_signal() => {
                r?;
                // A scale-down, an upgrade, a drained node: hand the work
                // over through a checkpoint before going.
                if node.leave(leave_timeout).await {
                    tracing::info!("left the cluster: the job runs without this worker");
                }
                None
            }
            reason = node.stopped() => reason,
        };
        tracing::info!("shutting down");
        node.shutdown().await;
        root.shutdown().await;
        match failure {
            Some(reason) => bail!("the worker stopped: {reason}"),
            None => Ok(()),
        }
    })
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()
        .context("cannot start the async runtime")
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ordinal_of_a_statefulset_pod() {
        assert_eq!(super::ordinal("weir-coordinator-2"), Some(2));
        assert_eq!(super::ordinal("weir-coordinator"), None);
        assert_eq!(super::ordinal("host"), None);
    }
}
