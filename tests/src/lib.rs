//! The multi-process test harness.
//!
//! Tests start real processes — ClickHouse 18.16 from Debian, the `weir`
//! binary — on free loopback ports in temporary directories, poll for
//! conditions instead of sleeping, and kill whatever they started when they
//! end (also when they fail). Results are checked against [`expected`], an
//! independent computation of the contract written here from the contract's
//! text, reading the input with apache-avro rather than Weir's decoder.

pub mod avro_file;
pub mod chart;
pub mod clickhouse;
pub mod cluster;
pub mod expected;
pub mod ha;
pub mod http;
pub mod process;
pub mod proxy;
pub mod pulsar_broker;
pub mod s3;
pub mod soak;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `weir` binary, brought up to date on first use in each test process.
///
/// Built with `--workspace` on purpose: building a single package resolves
/// features differently, which would rebuild dependencies (RocksDB's C++
/// among them) in a second configuration.
pub fn weir_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("WEIR_BIN") {
            return PathBuf::from(p);
        }
        // Test executables live in <target>/<profile>/deps/, the harness's
        // own binaries (`weir-soak`) in <target>/<profile>/.
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().expect("an executable is in a directory");
        let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
            dir.parent()
                .expect("test binary is in <target>/<profile>/deps")
        } else {
            dir
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = profile_dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("debug");
        let mut cmd = std::process::Command::new(cargo);
        // With every target, as nextest builds them: features are then
        // unified the same way (dev-dependencies turn some on), so this
        // finds the binary built and does not rebuild half the workspace
        // with other features — which the next test build would undo.
        cmd.args(["build", "--quiet", "--workspace", "--all-targets"]);
        // What cargo set for this test process (its crate's manifest
        // directory, package name, ...) must not reach the build: build
        // scripts that read such a variable (ring's reads
        // CARGO_MANIFEST_DIR) are rerun, and everything above them rebuilt,
        // whenever its value differs from the outer build's — ~100 s per
        // test process, and the outer build then rebuilds it all back.
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let set_for_tests = name == "OUT_DIR"
                || name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&name);
            if set_for_tests {
                cmd.env_remove(name);
            }
        }
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo to build weir");
        assert!(status.success(), "building the weir binary failed");
        let bin = profile_dir.join("weir");
        assert!(bin.exists(), "weir binary not found at {}", bin.display());
        bin
    })
}

/// Runs `weir gen` and returns the files it wrote.
pub fn generate(dir: &Path, name: &str, args: &[&str]) -> Vec<PathBuf> {
    let out = dir.join(name);
    let output = std::process::Command::new(weir_bin())
        .arg("gen")
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .expect("run weir gen");
    assert!(
        output.status.success(),
        "weir gen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(p, _)| PathBuf::from(p)))
        .collect()
}

/// Starts `weir <args>` with its output captured under `dir`.
pub fn weir(dir: &Path, name: &str, args: &[String]) -> process::Proc {
    let mut cmd = std::process::Command::new(weir_bin());
    cmd.args(args)
        .env(
            "WEIR_LOG",
            std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1");
    process::Proc::spawn(name, cmd, dir)
}

/// A job over one generated file: `weir gen` with `gen` writes `in.avro`
/// in `dir`, and the flags returned read it, write JSON lines to `out/`
/// with state in `data/`, then `extra`.
pub fn file_job(dir: &Path, gen: &[&str], extra: &[&str]) -> Vec<String> {
    let files = generate(dir, "in.avro", gen);
    let mut a = args(&["--output", "out", "--data-dir", "data"]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(input_args(&files));
    a
}

/// `[--input f]...` for `weir local`.
pub fn input_args(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| ["--input".to_string(), f.display().to_string()])
        .collect()
}

/// Each file as a named partition of readings (name = the path, as Weir
/// names file partitions).
pub fn read_partitions(files: &[PathBuf]) -> Vec<(String, Vec<expected::Reading>)> {
    files
        .iter()
        .map(|f| {
            let (readings, whole) = expected::read_avro(f);
            assert!(whole, "{} is damaged", f.display());
            (f.display().to_string(), readings)
        })
        .collect()
}

/// The whole of the output `name` in `dir` (a JSONL table, say:
/// `sensors_local.jsonl` is the directory `sensors_local` of part files),
/// its committed parts in order. Panics if the output does not exist.
pub fn jsonl(dir: &Path, name: &str) -> String {
    let stem = name.strip_suffix(".jsonl").unwrap_or(name);
    read_parts(&dir.join(stem)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The committed part files (`part-*.jsonl`) of an output directory,
/// concatenated in epoch order; in-progress files are not output.
pub fn read_parts(dir: &Path) -> std::io::Result<String> {
    let mut parts: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".jsonl"))
        })
        .collect();
    parts.sort();
    let mut all = String::new();
    for p in parts {
        all.push_str(&std::fs::read_to_string(p)?);
    }
    Ok(all)
}

/// Builds `args` from string slices.
pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// A number from the summary `weir local` prints (`  late readings  1,234`,
/// `  records read  5,000  (1,000/s)`).
pub fn summary_number(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in the summary:\n{stdout}"))
}
