//! The web dashboard in a real headless browser (Debian's chromium, driven
//! through chromedriver's WebDriver): the page loads with no console
//! errors, shows a running job's numbers as the REST API gives them,
//! updates without a reload, and its "trigger checkpoint" action takes a
//! checkpoint (with the admin token typed into the page). Screenshots are
//! saved under `<target>/test-artifacts/dashboard/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use weir_tests::avro_file::with_garbage_datum;
use weir_tests::cluster::Cluster;
use weir_tests::process::Proc;
use weir_tests::{file_job, free_port, generate, http, wait_for};

const TOKEN: &str = "dashb0ard-t0ken";

/// Where screenshots go: kept after the test, for people to look at.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts").join("dashboard");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir
}

/// chromedriver on a free loopback port, chromium headless behind it.
struct Browser {
    driver: Proc,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(dir: &Path) -> Browser {
        let port = free_port();
        let mut cmd = std::process::Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", cmd, dir);
        wait_for("chromedriver", Duration::from_secs(30), || {
            matches!(http::request(port, "GET", "/status", ""), Ok((200, _)))
        });
        Browser {
            driver,
            port,
            _profile: tempfile::tempdir().expect("a profile directory"),
        }
    }

    async fn connect(&self) -> Client {
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1400,2200",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}\n{}", self.driver.logs()))
    }

    /// The browser console's entries so far (chromedriver's log endpoint).
    async fn console(&self, client: &Client) -> Vec<Value> {
        let session = client
            .session_id()
            .await
            .expect("the session")
            .expect("a session id");
        let (status, body) = http::request_with(
            self.port,
            "POST",
            &format!("/session/{session}/se/log"),
            &["Content-Type: application/json"],
            r#"{"type":"browser"}"#,
        )
        .expect("the log endpoint");
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        answer["value"].as_array().cloned().unwrap_or_default()
    }
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn value(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .attr("data-value")
        .await
        .expect("attribute")
        .unwrap_or_default()
}

async fn updates(client: &Client) -> u64 {
    let v = client
        .execute("return Number(document.body.dataset.updates || 0);", vec![])
        .await
        .expect("script");
    v.as_u64().unwrap_or(0)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("save the screenshot");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_dashboard_shows_the_job_live_and_triggers_a_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut a = file_job(
        dir,
        &["--records", "400000", "--devices", "300", "--seed", "11"],
        &["--rate-limit", "4000", "--checkpoint-interval", "1h"],
    );
    // A second, small input with an undecodable datum: a dead letter.
    let small = generate(
        dir,
        "small.avro",
        &[
            "--records",
            "3000",
            "--devices",
            "40",
            "--rate",
            "50",
            "--seed",
            "8",
        ],
    );
    let damaged = dir.join("damaged.avro");
    with_garbage_datum(&small[0], &damaged, 5);
    a.extend(["--input".to_string(), damaged.display().to_string()]);
    let env = [("WEIR_ADMIN_TOKEN".to_string(), TOKEN.to_string())];
    let cluster = Cluster::start_with_env(dir, &a, 1, &env);
    cluster.wait_state("running", Duration::from_secs(90));
    wait_for("records to flow", Duration::from_secs(60), || {
        cluster.job()["records_in"].as_u64().unwrap_or(0) > 0
    });

    let browser = Browser::start(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = browser.connect().await;
        let page = format!("http://127.0.0.1:{}/", cluster.http_port);
        client.goto(&page).await.expect("the page loads");
        assert_eq!(client.title().await.expect("title"), "Weir");
        wait_until("the first update", Duration::from_secs(20), || async {
            updates(&client).await >= 1
        })
        .await;

        // The page's numbers are the API's.
        let before = cluster.job();
        let shown_in: u64 = value(&client, "#v-records-in")
            .await
            .parse()
            .expect("a number");
        let generation = value(&client, "#v-generation").await;
        let after = cluster.job();
        assert_eq!(
            text(&client, "#v-state").await,
            after["state"].as_str().expect("state")
        );
        assert_eq!(generation, after["generation"].to_string());
        let (low, high) = (
            before["records_in"].as_u64().expect("records"),
            after["records_in"].as_u64().expect("records"),
        );
        // The page read the API between our two reads, give or take a
        // refresh (2 s at 4,000 records/s).
        assert!(
            shown_in <= high && shown_in + 20_000 >= low,
            "the page shows {shown_in} records, the API {low}..{high}"
        );
        let partitions = client
            .find_all(Locator::Css("#partitions tbody tr"))
            .await
            .expect("rows");
        assert_eq!(
            partitions.len(),
            after["partitions"].as_array().expect("partitions").len()
        );
        let workers = text(&client, "#workers tbody").await;
        assert!(workers.contains("w-0"), "{workers}");
        let cluster_status = cluster.cluster();
        assert!(
            workers.contains(
                cluster_status["workers"][0]["data_address"]
                    .as_str()
                    .expect("address")
            ),
            "{workers}"
        );
        let workers_api = cluster_status["workers"].as_array().expect("workers");
        let share: f64 = value(&client, "#workers tbody tr td:nth-child(8)")
            .await
            .parse()
            .expect("the backpressure share");
        assert!((0.0..=1.0).contains(&share), "backpressure {share}");
        assert!(workers_api[0]["backpressure"].as_f64().is_some());

        // The dead letter, with its reason, as the API lists it.
        wait_until("the dead letter", Duration::from_secs(30), || async {
            client
                .find_all(Locator::Css("#dead-letters tbody tr"))
                .await
                .map(|rows| !rows.is_empty())
                .unwrap_or(false)
        })
        .await;
        let letters = cluster.job()["latest_dead_letters"].clone();
        let letter = &letters[0];
        assert_eq!(letter["kind"], "bad-varint", "{letters}");
        assert_eq!(letter["records"], 91, "{letters}");
        assert_eq!(letter["worker_id"], "w-0", "{letters}");
        assert_eq!(letter["source"], damaged.display().to_string());
        let row = text(&client, "#dead-letters tbody tr").await;
        for field in ["kind", "position", "worker_id", "error"] {
            let expected = letter[field].as_str().expect("a string field");
            assert!(
                row.contains(expected),
                "{field} {expected:?} not in {row:?}"
            );
        }
        screenshot(&client, "overview").await;

        // Live: more updates and more records, without a reload.
        let seen = updates(&client).await;
        wait_until("live updates", Duration::from_secs(30), || async {
            let now: u64 = value(&client, "#v-records-in").await.parse().unwrap_or(0);
            updates(&client).await >= seen + 2 && now > shown_in
        })
        .await;

        // An action: the token typed in, then "Trigger checkpoint",
        // confirmed.
        let completed_before = cluster.rest("GET", "/api/v1/checkpoints").1["completed"]
            .as_u64()
            .unwrap_or(0);
        client
            .find(Locator::Css("#token"))
            .await
            .expect("the token field")
            .send_keys(TOKEN)
            .await
            .expect("typing");
        client
            .find(Locator::Css("#token-form button"))
            .await
            .expect("the token button")
            .click()
            .await
            .expect("click");
        client
            .find(Locator::Css("button[data-action=checkpoint]"))
            .await
            .expect("the checkpoint button")
            .click()
            .await
            .expect("click");
        client.accept_alert().await.expect("the confirmation");
        wait_until("the action's answer", Duration::from_secs(20), || async {
            text(&client, "#action-result").await == "checkpoint requested"
        })
        .await;
        wait_until("the checkpoint", Duration::from_secs(60), || async {
            cluster.rest("GET", "/api/v1/checkpoints").1["completed"]
                .as_u64()
                .unwrap_or(0)
                > completed_before
        })
        .await;
        wait_until(
            "the checkpoint on the page",
            Duration::from_secs(20),
            || async {
                client
                    .find_all(Locator::Css("#checkpoints tbody tr.COMPLETED"))
                    .await
                    .map(|rows| !rows.is_empty())
                    .unwrap_or(false)
            },
        )
        .await;
        screenshot(&client, "checkpoint").await;

        let console = browser.console(&client).await;
        let errors: Vec<&Value> = console
            .iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .collect();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        client.close().await.expect("close the browser");
    });
}
