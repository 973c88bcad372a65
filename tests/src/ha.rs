//! Three coordinators in a raft group, as real processes, for the high
//! availability test: each on its own loopback ports with its own raft
//! store, reaching the others through [`FaultProxy`]s so that one can be
//! cut off from the others (while workers and admin clients still reach
//! it directly), and workers that know all three.
//!
//! Which coordinator leads is read from each one's own `/metrics`
//! (`weir_coordinator_leader`), which never asks another coordinator.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, http, wait_for, weir_bin};

/// The raft timings the test runs with (`--raft-heartbeat`,
/// `--raft-election`).
pub const RAFT_HEARTBEAT: Duration = Duration::from_millis(200);
pub const RAFT_ELECTION: Duration = Duration::from_millis(1000);

struct Node {
    grpc_port: u16,
    http_port: u16,
    proc: Option<Proc>,
    /// How often it was started (names its log files).
    starts: u32,
}

/// A raft group of coordinators and the workers of the job.
pub struct Group {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// `links[i][j]`: coordinator `i`'s way to coordinator `j`.
    links: Vec<Vec<Option<crate::proxy::FaultProxy>>>,
    job_args: Vec<String>,
    workers: Vec<(String, Proc)>,
    /// Environment of every process (TLS files, secrets).
    env: Vec<(String, String)>,
    /// The CA the harness trusts when the processes serve TLS.
    tls_ca: Option<PathBuf>,
}

impl Group {
    /// Starts `n` coordinators of the job `job_args` (job flags and
    /// coordinator options) and waits until one leads.
    pub fn start(dir: &Path, n: usize, job_args: &[String]) -> Group {
        Group::launch(dir, n, job_args, Vec::new(), None)
    }

    /// [`start`](Self::start) with TLS on every port of every process,
    /// raft among the coordinators included (the harness's own requests
    /// use TLS too), and `env` besides.
    pub fn start_tls(
        dir: &Path,
        n: usize,
        job_args: &[String],
        env: &[(String, String)],
        tls: &crate::cluster::TlsFiles,
    ) -> Group {
        let mut env = env.to_vec();
        env.extend(tls.env());
        Group::launch(dir, n, job_args, env, Some(tls.ca.clone()))
    }

    fn launch(
        dir: &Path,
        n: usize,
        job_args: &[String],
        env: Vec<(String, String)>,
        tls_ca: Option<PathBuf>,
    ) -> Group {
        let nodes: Vec<Node> = (0..n)
            .map(|_| Node {
                grpc_port: free_port(),
                http_port: free_port(),
                proc: None,
                starts: 0,
            })
            .collect();
        let links = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (i != j).then(|| {
                            crate::proxy::FaultProxy::start(
                                format!("127.0.0.1:{}", nodes[j].grpc_port)
                                    .parse()
                                    .expect("address"),
                            )
                        })
                    })
                    .collect()
            })
            .collect();
        let mut group = Group {
            dir: dir.to_owned(),
            nodes,
            links,
            job_args: job_args.to_vec(),
            workers: Vec::new(),
            env,
            tls_ca,
        };
        for i in 0..n {
            group.start_coordinator(i);
        }
        group.wait_leader(None, Duration::from_secs(60));
        group
    }

    /// Coordinator `i`'s `--peers`: itself at its address, the others
    /// through its proxies to them.
    fn peers_of(&self, i: usize) -> String {
        (0..self.nodes.len())
            .map(|j| match &self.links[i][j] {
                Some(proxy) => format!("{j}={}", proxy.addr()),
                None => format!("{j}=127.0.0.1:{}", self.nodes[j].grpc_port),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts coordinator `i` (again) on its ports and raft store.
    pub fn start_coordinator(&mut self, i: usize) {
        let peers = self.peers_of(i);
        let node = &mut self.nodes[i];
        assert!(node.proc.is_none(), "coordinator {i} runs already");
        node.starts += 1;
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.arg("coordinator")
            .args(["--listen", &format!("127.0.0.1:{}", node.grpc_port)])
            .args(["--http", &format!("127.0.0.1:{}", node.http_port)])
            .args(["--node-id", &i.to_string(), "--peers", &peers])
            .args(["--raft-dir", &format!("raft-{i}")])
            .args([
                "--raft-heartbeat",
                &format!("{}ms", RAFT_HEARTBEAT.as_millis()),
            ])
            .args([
                "--raft-election",
                &format!("{}ms", RAFT_ELECTION.as_millis()),
            ])
            .args(&self.job_args)
            .current_dir(&self.dir)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        node.proc = Some(Proc::spawn(
            &format!("coordinator-{i}-{}", node.starts),
            cmd,
            &self.dir,
        ));
    }

    /// SIGKILLs coordinator `i`.
    pub fn kill_coordinator(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.signal("KILL");
            p.wait(Duration::from_secs(30));
        }
    }

    /// Cuts coordinator `i` off from the others (both ways); workers and
    /// admin clients still reach it.
    pub fn partition(&self, i: usize) {
        self.cut(i, true);
    }

    pub fn heal(&self, i: usize) {
        self.cut(i, false);
    }

    fn cut(&self, i: usize, cut: bool) {
        for j in 0..self.nodes.len() {
            for link in [&self.links[i][j], &self.links[j][i]].into_iter().flatten() {
                if cut {
                    link.partition();
                } else {
                    link.heal();
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].proc.is_some()
    }

    pub fn http_port(&self, i: usize) -> u16 {
        self.nodes[i].http_port
    }

    pub fn grpc_addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.grpc_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether coordinator `i` says it runs the job (its own `/metrics`).
    pub fn says_it_leads(&self, i: usize) -> bool {
        if !self.is_running(i) {
            return false;
        }
        match self.request(i, "GET", "/metrics") {
            Ok((200, text)) => text.lines().any(|l| l == "weir_coordinator_leader 1"),
            _ => false,
        }
    }

    /// The coordinators that say they run the job.
    pub fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.says_it_leads(i))
            .collect()
    }

    /// Waits until exactly one coordinator other than `not` runs the job;
    /// returns it and how long that took.
    pub fn wait_leader(&self, not: Option<usize>, timeout: Duration) -> (usize, Duration) {
        let started = Instant::now();
        let mut found = None;
        wait_for("a coordinator to lead", timeout, || {
            let leaders = self.leaders();
            found = match leaders.as_slice() {
                [one] if Some(*one) != not => Some(*one),
                _ => None,
            };
            found.is_some()
        });
        (found.expect("a leader"), started.elapsed())
    }

    /// `(status, JSON body)` of a REST call to coordinator `i`.
    pub fn rest_on(&self, i: usize, method: &str, path: &str) -> (u16, Value) {
        match self.request(i, method, path) {
            Ok((status, body)) => (
                status,
                serde_json::from_str(&body).unwrap_or(Value::String(body)),
            ),
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// One HTTP request to coordinator `i` (over TLS when the group uses it).
    fn request(&self, i: usize, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let port = self.nodes[i].http_port;
        match &self.tls_ca {
            Some(ca) => http::request_tls(port, ca, method, path, &[], ""),
            None => http::request(port, method, path, ""),
        }
    }

    /// A REST call answered by any running coordinator (they ask the
    /// leader); waits through elections.
    pub fn rest(&self, method: &str, path: &str) -> (u16, Value) {
        let mut last = (0, Value::Null);
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                &format!("an answer to {method} {path}"),
                Duration::from_secs(60),
                || {
                    for i in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
                        last = self.rest_on(i, method, path);
                        if last.0 != 0 && last.0 != 503 {
                            return true;
                        }
                    }
                    false
                },
            )
        }));
        if answered.is_err() {
            panic!("no coordinator answered {method} {path}: {last:?}");
        }
        last
    }

    pub fn job(&self) -> Value {
        let (status, body) = self.rest("GET", "/api/v1/job");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The newest completed checkpoint, as the leader has it.
    pub fn latest_checkpoint(&self) -> u64 {
        let (_, list) = self.rest("GET", "/api/v1/checkpoints");
        list["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["state"] == "COMPLETED")
            .filter_map(|c| c["id"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Starts worker `id`, which knows every coordinator.
    pub fn start_worker(&mut self, id: &str) {
        let port = free_port();
        let mut cmd = std::process::Command::new(weir_bin());
        cmd.arg("worker")
            .args(["--coordinator", &self.grpc_addresses()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--id", id])
            .current_dir(&self.dir)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn(&format!("worker-{id}"), cmd, &self.dir);
        self.workers.push((id.to_owned(), proc));
    }

    /// Every process's output, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.nodes.iter().filter_map(|n| n.proc.as_ref()) {
            out.push_str(&p.logs());
            out.push('\n');
        }
        for (_, p) in &self.workers {
            out.push_str(&p.logs());
            out.push('\n');
        }
        out
    }

    /// The stderr of every coordinator process started so far (the logs
    /// of killed ones stay in their files).
    pub fn coordinator_logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for start in 1..=n.starts {
                let path = self.dir.join(format!("coordinator-{i}-{start}.err"));
                out.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
        }
        out
    }
}
