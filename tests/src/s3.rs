//! A real S3-compatible server for one test: moto's `moto_server` (PyPI
//! `moto[server]`, installed by scripts/test.sh) on a free loopback port,
//! with one bucket. It accepts any credentials.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{free_port, http, wait_for};

pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    proc: Proc,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub fn start(dir: &Path, bucket: &str) -> S3Server {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto", cmd, dir);
        wait_for("the S3 server to answer", Duration::from_secs(60), || {
            if let Some(status) = proc.try_status() {
                panic!(
                    "moto_server exited with {status} (is moto[server] installed? scripts/test.sh installs it)\n{}",
                    proc.logs()
                );
            }
            http::request(port, "GET", "/", "").is_ok()
        });
        let (status, body) =
            http::request(port, "PUT", &format!("/{bucket}"), "").expect("create the bucket");
        assert_eq!(status, 200, "create bucket: {body}");
        S3Server {
            port,
            bucket: bucket.to_owned(),
            proc,
        }
    }

    /// The environment a Weir process needs to use the server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ACCESS_KEY_ID", "weir-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "weir-test-secret".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            // No IMDS lookups on a machine that is not on EC2.
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The keys under `prefix` in the bucket.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{}?list-type=2&prefix={prefix}", self.bucket);
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={t}"));
            }
            let (status, body) = http::request(self.port, "GET", &path, "").expect("list");
            assert_eq!(status, 200, "{body}");
            keys.extend(tags(&body, "Key"));
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        keys
    }

    /// Deletes an object.
    pub fn delete(&self, key: &str) {
        let (status, body) =
            http::request(self.port, "DELETE", &format!("/{}/{key}", self.bucket), "")
                .expect("delete");
        assert!(
            status == 204 || status == 200,
            "delete {key}: {status} {body}"
        );
    }

    /// Freezes the server (SIGSTOP): requests hang.
    pub fn pause(&self) {
        self.proc.signal("STOP");
    }

    pub fn resume(&self) {
        self.proc.signal("CONT");
    }
}

fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split(&close).next().map(str::to_owned))
        .collect()
}
