//! A Weir cluster for one test: a real `weir coordinator` and real
//! `weir worker` processes on free loopback ports, each with its own
//! directory, queried through the REST admin API, killed when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, http, wait_for, weir_bin};

pub struct Cluster {
    dir: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    coordinator: Proc,
    workers: Vec<(String, u16, Proc)>,
    /// Extra environment of every process (an S3 endpoint and keys).
    env: Vec<(String, String)>,
    /// The CA the processes' certificates are checked against, when they
    /// serve TLS.
    tls_ca: Option<PathBuf>,
}

/// A cluster's TLS files: every process serves with `cert` and `key`
/// (which must name 127.0.0.1) and trusts `ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The environment that gives a `weir` process these files.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("WEIR_TLS_CERT", &self.cert),
            ("WEIR_TLS_KEY", &self.key),
            ("WEIR_TLS_CA", &self.ca),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect()
    }
}

impl Cluster {
    /// Starts a coordinator with `args` (job flags and options) and
    /// `workers` workers named `w-0`, `w-1`, ...
    pub fn start(dir: &Path, args: &[String], workers: usize) -> Cluster {
        Cluster::start_with_env(dir, args, workers, &[])
    }

    /// [`start`](Self::start) with `env` set for every process.
    pub fn start_with_env(
        dir: &Path,
        args: &[String],
        workers: usize,
        env: &[(String, String)],
    ) -> Cluster {
        Cluster::launch(dir, args, workers, env.to_vec(), None)
    }

    /// [`start_with_env`](Self::start_with_env) with TLS on every port of
    /// every process (the harness's own requests use TLS too).
    pub fn start_tls(
        dir: &Path,
        args: &[String],
        workers: usize,
        env: &[(String, String)],
        tls: &TlsFiles,
    ) -> Cluster {
        let mut env = env.to_vec();
        env.extend(tls.env());
        Cluster::launch(dir, args, workers, env, Some(tls.ca.clone()))
    }

    fn launch(
        dir: &Path,
        args: &[String],
        workers: usize,
        env: Vec<(String, String)>,
        tls_ca: Option<PathBuf>,
    ) -> Cluster {
        let grpc_port = free_port();
        let http_port = free_port();
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.arg("coordinator")
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(args)
            .current_dir(dir)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let coordinator = Proc::spawn("coordinator", cmd, dir);
        let mut cluster = Cluster {
            dir: dir.to_owned(),
            grpc_port,
            http_port,
            coordinator,
            workers: Vec::new(),
            env,
            tls_ca,
        };
        cluster.wait_ready();
        for i in 0..workers {
            cluster.start_worker(&format!("w-{i}"));
        }
        cluster
    }

    fn wait_ready(&mut self) {
        let (port, ca) = (self.http_port, self.tls_ca.clone());
        let coordinator = &mut self.coordinator;
        wait_for(
            "the coordinator to be ready",
            Duration::from_secs(60),
            || {
                if let Some(status) = coordinator.try_status() {
                    panic!(
                        "the coordinator exited with {status}\n{}",
                        coordinator.logs()
                    );
                }
                let ready = match &ca {
                    Some(ca) => http::request_tls(port, ca, "GET", "/readyz", &[], ""),
                    None => http::request(port, "GET", "/readyz", ""),
                };
                matches!(ready, Ok((200, _)))
            },
        );
    }

    /// Starts one more worker.
    pub fn start_worker(&mut self, id: &str) {
        let coordinator = format!("127.0.0.1:{}", self.grpc_port);
        self.start_worker_via(id, &coordinator);
    }

    /// Starts one more worker that reaches the coordinator at
    /// `coordinator` (a fault-injecting proxy, say).
    pub fn start_worker_via(&mut self, id: &str, coordinator: &str) {
        let port = free_port();
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.arg("worker")
            .args(["--coordinator", coordinator])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--id", id])
            .current_dir(&self.dir)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn(&format!("worker-{id}"), cmd, &self.dir);
        self.workers.push((id.to_owned(), port, proc));
    }

    /// `(status, JSON body)` of a REST call.
    pub fn rest(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, body) = self
            .request(self.http_port, method, path, &[], "")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()));
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }

    /// One HTTP request to a port of this cluster (`https` when it serves
    /// TLS): `(status, body)`.
    pub fn request(
        &self,
        port: u16,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        match &self.tls_ca {
            Some(ca) => http::request_tls(port, ca, method, path, headers, body),
            None => http::request_with(port, method, path, headers, body),
        }
    }

    pub fn job(&self) -> Value {
        let (status, body) = self.rest("GET", "/api/v1/job");
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn cluster(&self) -> Value {
        let (status, body) = self.rest("GET", "/api/v1/cluster");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the job is in `state`; panics early if it failed.
    pub fn wait_state(&self, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        wait_for(&format!("the job to be {state}"), timeout, || {
            last = self.job();
            if last["state"] == "failed" && state != "failed" {
                panic!("the job failed: {}\n{}", last["error"], self.logs());
            }
            last["state"] == state
        });
        last
    }

    /// A worker's HTTP port (its shuffle port serves HTTP too).
    pub fn worker_port(&self, id: &str) -> u16 {
        self.worker(id).1
    }

    fn worker(&self, id: &str) -> &(String, u16, Proc) {
        self.workers
            .iter()
            .find(|(w, _, _)| w == id)
            .unwrap_or_else(|| panic!("no worker {id}"))
    }

    /// Resident memory of a worker process, from /proc.
    pub fn worker_rss_bytes(&self, id: &str) -> u64 {
        let pid = self.worker(id).2.pid();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the coordinator.
    pub fn signal_coordinator(&self, signal: &str) {
        self.coordinator.signal(signal);
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to a worker.
    pub fn signal_worker(&self, id: &str, signal: &str) {
        let (_, _, proc) = self
            .workers
            .iter()
            .find(|(w, _, _)| w == id)
            .unwrap_or_else(|| panic!("no worker {id}"));
        proc.signal(signal);
    }

    /// SIGTERMs a worker, as Kubernetes does to a pod it removes, and
    /// waits (up to `timeout`) for it to leave; returns its exit status.
    pub fn stop_worker(&mut self, id: &str, timeout: Duration) -> std::process::ExitStatus {
        let mut proc = self.take_worker(id);
        proc.signal("TERM");
        proc.wait(timeout)
    }

    /// SIGKILLs a worker.
    pub fn kill_worker(&mut self, id: &str) {
        let mut proc = self.take_worker(id);
        proc.signal("KILL");
        proc.wait(Duration::from_secs(30));
    }

    /// Takes worker `id`'s process out of the cluster.
    fn take_worker(&mut self, id: &str) -> Proc {
        let i = self
            .workers
            .iter()
            .position(|(w, _, _)| w == id)
            .unwrap_or_else(|| panic!("no worker {id}"));
        self.workers.remove(i).2
    }

    /// SIGKILLs the coordinator, runs `between`, and starts a new one on
    /// the same ports with `args` (workers reconnect to it).
    pub fn restart_coordinator(&mut self, args: &[String], between: impl FnOnce()) {
        self.coordinator.signal("KILL");
        self.coordinator.wait(Duration::from_secs(30));
        between();
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.arg("coordinator")
            .args(["--listen", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--http", &format!("127.0.0.1:{}", self.http_port)])
            .args(args)
            .current_dir(&self.dir)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.coordinator = Proc::spawn("coordinator-2", cmd, &self.dir);
        self.wait_ready();
    }

    /// Every process's output, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = self.coordinator.logs();
        for (_, _, p) in &self.workers {
            out.push('\n');
            out.push_str(&p.logs());
        }
        out
    }

    pub fn coordinator_stderr(&self) -> String {
        self.coordinator.stderr()
    }
}
