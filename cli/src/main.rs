//! `weir`: one binary for every role.
//!
//! - `weir local`: the whole job in this process, on built-in defaults.
//! - `weir coordinator`, `weir worker`: the roles of a cluster.
//! - `weir ctl`: the coordinator's admin API from the command line.
//! - `weir gen`: contract Avro files from the deterministic generator.
//! - `weir produce`: contract readings to a Pulsar topic (a load producer).
//! - `weir ddl`: the output tables' DDL, printed or applied.
//! - `weir spec`: the default job spec, as YAML to start from.

mod cluster;
mod ctl;
mod ddl;
mod gen;
mod local;
mod overrides;
mod produce;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a stream processor for per-device IoT windows"
)]
struct Cli {
    /// How log lines are written (stderr): `text` for people, `json` (one
    /// object per line: timestamp, level, fields, spans) for log
    /// collectors such as Fluent Bit, Vector or CloudWatch.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "WEIR_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job in this process (generator → RocksDB → JSON lines by default).
    Local(Box<local::LocalArgs>),
    /// Run the coordinator of a cluster.
    Coordinator(Box<cluster::CoordinatorArgs>),
    /// Run a worker of a cluster.
    Worker(cluster::WorkerArgs),
    /// Query and control a running coordinator.
    Ctl(ctl::CtlArgs),
    /// Write contract Avro container files of generated readings.
    Gen(gen::GenArgs),
    /// Publish contract readings (generated, or from Avro files) to a Pulsar topic.
    Produce(produce::ProduceArgs),
    /// Print (or apply) the DDL of the output tables.
    Ddl(ddl::DdlArgs),
    /// Print the default job spec as YAML, or check a spec file (`--check`).
    Spec(SpecArgs),
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,hyper_util=warn,openraft=warn"));
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        // Targets kept: a collector filters on them.
        LogFormat::Json => logs.json().with_target(true).with_ansi(false).init(),
    }
}

/// Keeps glibc from returning batch buffers to the kernel after every use.
///
/// Record batches are a few hundred KiB, above glibc's (dynamic) mmap
/// threshold when they are freed on another thread than the one that
/// allocated them; each batch then costs an mmap, page faults on every page
/// and an munmap — a quarter of the process's CPU time in the benchmark. A
/// fixed threshold keeps them in the heap, and a high trim threshold keeps
/// freed heap for the next batch instead of handing it back. (Window state
/// is allocated in pages above the threshold, so it is mapped and unmapped
/// whole and never lingers in a thread's arena: see `worker::window`.)
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[derive(clap::Args, Debug)]
struct SpecArgs {
    /// Validate this spec file and print it with every default filled in
    /// (exit status 1 and the offending key when it is invalid): a check
    /// before deploying it, e.g. in a Helm chart's ConfigMap.
    #[arg(long, value_name = "FILE")]
    check: Option<std::path::PathBuf>,
}

fn print_spec(args: SpecArgs) -> anyhow::Result<()> {
    let spec = match &args.check {
        Some(path) => weir_common::spec::JobSpec::load(path)?,
        None => weir_common::spec::JobSpec::default(),
    };
    print!("{}", serde_yaml::to_string(&spec)?);
    Ok(())
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Local(args) => local::run(*args),
        Command::Coordinator(args) => cluster::run_coordinator(*args),
        Command::Worker(args) => cluster::run_worker(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Ddl(args) => ddl::run(args),
        Command::Spec(args) => print_spec(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                // One object per line on stderr, as every other line.
                LogFormat::Json => tracing::error!(error = %format!("{e:#}"), "exiting"),
            }
            ExitCode::FAILURE
        }
    }
}
