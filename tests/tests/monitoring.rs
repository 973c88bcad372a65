//! The monitoring the Helm chart ships: the Grafana dashboard and the
//! alerting rules name only metrics Weir emits, the rules pass `promtool
//! check rules` and fire (and stay quiet) as `promtool test rules` expects.
//! Helm and promtool are installed by the README's test command
//! (`scripts/lib.sh`: `install_k8s_tools`, `install_promtool`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_yaml::Value;
use weir_tests::chart::*;

const OBSERVABILITY: &[&str] = &["helm/values/observability.yaml"];

fn promtool(args: &[&str], dir: &Path) -> Output {
    run(Command::new(tool("weir-tools/bin/promtool", "promtool"))
        .current_dir(dir)
        .args(args))
}

/// A values file in `dir`, for `template`.
fn values_file(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write values");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// The metrics Weir emits, by name, with their type, read from the code
/// that serves `/metrics` (the coordinator's and the workers'): each keeps
/// one list, `EXPOSED`, of `("name", "kind")` — a family by the name
/// queries use (a counter's with `_total`) — which its unit tests hold
/// equal to what a full scrape encodes (`# TYPE` lines). A metric a query
/// reads is then emitted exactly when it is listed here.
fn emitted_metrics() -> BTreeMap<String, String> {
    let sources = [
        include_str!("../../coordinator/src/prometheus.rs"),
        include_str!("../../worker/src/prometheus.rs"),
    ];
    let mut kinds = BTreeMap::new();
    for src in sources {
        let list = src
            .split_once("pub const EXPOSED: &[(&str, &str)] = &[")
            .and_then(|(_, rest)| rest.split_once("];"))
            .map(|(list, _)| list)
            .expect("an EXPOSED list");
        let mut entries = 0;
        for entry in list.split('(').skip(1) {
            let entry = entry.split(')').next().expect("an entry");
            let fields: Vec<&str> = entry
                .split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect();
            let [name, kind] = fields[..] else {
                panic!("not a (name, kind) entry: {entry}");
            };
            assert!(
                name.starts_with("weir_")
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{name}: {kind}"
            );
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name}: counters, and only they, end in _total"
            );
            // The same family on both sides (the partitions' watermark) has
            // one type.
            if let Some(before) = kinds.insert(name.to_owned(), kind.to_owned()) {
                assert_eq!(before, kind, "{name}");
            }
            entries += 1;
        }
        assert!(entries > 20, "{entries} metrics in an EXPOSED list");
    }
    kinds
}

/// The metric names an expression uses (`weir_...` outside quotes), each
/// with where it is.
fn metrics_in(expr: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut quoted = false;
    let mut prev = ' ';
    for (at, c) in expr.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if !(quoted || prev.is_ascii_alphanumeric() || prev == '_' || prev == ':')
            && expr[at..].starts_with("weir_")
        {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((at, name));
        }
        prev = c;
    }
    found
}

/// Every metric `expr` names is one Weir emits (a histogram's or summary's
/// `_bucket`, `_sum` and `_count` series by its name), counters are only
/// read through `rate()` or `increase()`, and gauges never are.
fn check_metrics(what: &str, expr: &str, emitted: &BTreeMap<String, String>) {
    let used = metrics_in(expr);
    assert!(!used.is_empty(), "{what}: `{expr}` reads no Weir metric");
    for (at, name) in used {
        let series_of = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            name.strip_suffix(suffix).filter(|base| {
                matches!(
                    emitted.get(*base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            })
        });
        let base = series_of.unwrap_or(&name);
        let kind = emitted
            .get(base)
            .unwrap_or_else(|| panic!("{what}: `{expr}` reads {name}, which Weir does not emit"));
        let rated = ["rate(", "increase("]
            .iter()
            .any(|f| expr[..at].trim_end().ends_with(f));
        match kind.as_str() {
            "counter" => assert!(rated, "{what}: counter {name} not through rate(): `{expr}`"),
            "gauge" => assert!(!rated, "{what}: rate() of gauge {name}: `{expr}`"),
            _ => {}
        }
    }
}

#[test]
fn the_metric_names_are_read_from_the_code_that_emits_them() {
    let emitted = emitted_metrics();
    for (name, kind) in [
        ("weir_job_state", "gauge"),
        ("weir_job_records_in_total", "counter"),
        ("weir_checkpoints_failed_total", "counter"),
        ("weir_partition_watermark_milliseconds", "gauge"),
        ("weir_raft_term", "gauge"),
        ("weir_worker_connected", "gauge"),
        ("weir_sink_retries_total", "counter"),
        ("weir_resident_memory_bytes", "gauge"),
        ("weir_checkpoint_duration_seconds", "histogram"),
        ("weir_checkpoint_size_bytes", "histogram"),
        ("weir_partition_watermark_lag_seconds", "gauge"),
        ("weir_worker_backpressure_ratio", "gauge"),
        ("weir_source_wait_seconds_total", "counter"),
        ("weir_dead_letters_by_kind_total", "counter"),
    ] {
        assert_eq!(emitted.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // Every metric docs/api.md lists is found, and nothing that is no metric.
    let api = std::fs::read_to_string(repo().join("docs/api.md")).expect("docs/api.md");
    let section = api
        .split("## Metrics")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section");
    let documented: BTreeSet<String> = metrics_in(section).into_iter().map(|(_, n)| n).collect();
    assert!(documented.len() > 30, "{documented:?}");
    for name in &documented {
        assert!(emitted.contains_key(name), "docs/api.md lists {name}");
    }
    for name in emitted.keys() {
        assert!(!name.starts_with("weir_common") && !name.starts_with("weir_proto"));
    }
    // The parser sees more than the tests ask about.
    assert_eq!(
        metrics_in(r#"rate(weir_x_total{job="weir_y"}[5m]) / weir_z"#)
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>(),
        ["weir_x_total", "weir_z"]
    );
}

fn the_rule(docs: &[Value]) -> &Value {
    let rules = of_kind(docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0]
}

fn alerts(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .collect()
}

fn alert<'a>(rule: &'a Value, name: &str) -> Option<&'a Value> {
    alerts(rule).into_iter().find(|a| a["alert"] == name)
}

const ALERTS: &[&str] = &[
    "WeirJobFailed",
    "WeirJobNotRunning",
    "WeirNoCoordinatorLeader",
    "WeirCheckpointsFailing",
    "WeirCheckpointsStale",
    "WeirWatermarkLagHigh",
    "WeirDeadLettersRising",
    "WeirNoWorkers",
    "WeirWorkerDisconnected",
    "WeirJobRedeployingOften",
    "WeirSinkRetrying",
];

/// Off by default (k8s/weir.yaml has neither); on, every alert reads only
/// metrics Weir emits, has a severity, says what happened and points at its
/// runbook in docs/kubernetes.md.
#[test]
fn the_alerts_read_emitted_metrics_and_say_what_to_do() {
    let docs = documents(&template(&[]));
    assert!(of_kind(&docs, "PrometheusRule").is_empty());
    let docs = documents(&template(OBSERVABILITY));
    let rule = the_rule(&docs);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["name"], "weir");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let names: Vec<&str> = alerts(rule).iter().map(|a| str_of(&a["alert"])).collect();
    assert_eq!(names, ALERTS);
    let emitted = emitted_metrics();
    let runbooks = std::fs::read_to_string(repo().join("docs/kubernetes.md")).expect("docs");
    for a in alerts(rule) {
        let name = str_of(&a["alert"]);
        check_metrics(name, str_of(&a["expr"]), &emitted);
        assert!(
            ["critical", "warning"].contains(&str_of(&a["labels"]["severity"])),
            "{name}"
        );
        assert_eq!(a["labels"]["team"], "data", "{name}: alertLabels");
        for key in ["summary", "description"] {
            assert!(
                str_of(&a["annotations"][key]).len() > 20,
                "{name} lacks a {key}"
            );
        }
        let runbook = str_of(&a["annotations"]["runbook_url"]);
        assert_eq!(
            runbook,
            format!(
                "https://github.com/weir-stream/weir/blob/main/docs/kubernetes.md#{}",
                name.to_lowercase()
            )
        );
        assert!(
            runbooks
                .lines()
                .any(|l| l.starts_with('#') && l.trim_start_matches('#') == format!(" {name}")),
            "docs/kubernetes.md has no runbook heading for {name}"
        );
        if let Some(duration) = a["for"].as_str() {
            assert!(duration.ends_with('m'), "{name}: for {duration}");
        }
    }
    // The value set's threshold, and the release's series only.
    let lag = str_of(&alert(rule, "WeirWatermarkLagHigh").expect("lag")["expr"]);
    assert!(lag.contains("> 300)"), "{lag}");
    let disconnected = str_of(&alert(rule, "WeirWorkerDisconnected").expect("worker")["expr"]);
    assert_eq!(
        disconnected,
        r#"weir_worker_connected{namespace="stream", job="weir-worker-headless"} == 0"#
    );
    // The ServiceMonitors' Services are what the default selectors name.
    for job in ["weir-coordinator", "weir-worker-headless"] {
        let svc = kind_named(&docs, "Service", job);
        assert_eq!(
            svc["metadata"]["labels"]["weir.io/metrics"], "true",
            "{job}"
        );
    }
}

/// What `promtool test rules` feeds the default rules (release `weir` in
/// namespace `stream`), and what must fire or stay quiet. `$C` and `$W`
/// are the coordinators' and the workers' series labels (`$CL`, `$WL` as
/// an alert's); `$QUIET(t)` lists every alert a group expects nothing else
/// of as not firing at `t`.
const RULE_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # A healthy job: nothing fires. A checkpoint abandoned because its
  # generation was replaced is no failure.
  - interval: 1m
    input_series:
      - {series: 'weir_coordinator_leader{$C, pod="weir-coordinator-0"}', values: '1x40'}
      - {series: 'weir_job_state{$C, state="running"}', values: '1x40'}
      - {series: 'weir_job_state{$C, state="failed"}', values: '0x40'}
      - {series: 'weir_job_state{$C, state="stopped"}', values: '0x40'}
      - {series: 'weir_cluster_workers{$C}', values: '2x40'}
      - {series: 'weir_job_generation{$C}', values: '3x40'}
      - {series: 'weir_checkpoints_failed_total{$C, cause="timeout"}', values: '0x40'}
      - {series: 'weir_checkpoints_failed_total{$C, cause="generation_replaced"}', values: '0+1x40'}
      - {series: 'weir_checkpoint_since_last_completed_seconds{$C}', values: '30x40'}
      - {series: 'weir_checkpoint_interval_seconds{$C}', values: '60x40'}
      - {series: 'weir_job_watermark_milliseconds{$C}', values: '0+60000x40'}
      - {series: 'weir_job_bad_records_total{$C}', values: '0x40'}
      - {series: 'weir_worker_connected{$W, worker="weir-worker-0"}', values: '1x40'}
      - {series: 'weir_sink_retries_total{$W, worker="weir-worker-0"}', values: '0x40'}
    alert_rule_test:
      - $QUIET(40m)
  # Everything goes wrong at once while the job runs.
  - interval: 1m
    input_series:
      - {series: 'weir_coordinator_leader{$C, pod="weir-coordinator-0"}', values: '1x40'}
      - {series: 'weir_job_state{$C, state="running"}', values: '1x40'}
      - {series: 'weir_job_state{$C, state="failed"}', values: '0x40'}
      - {series: 'weir_cluster_workers{$C}', values: '0x40'}
      - {series: 'weir_job_generation{$C}', values: '1+1x40'}
      - {series: 'weir_checkpoints_failed_total{$C, cause="timeout"}', values: '0+1x40'}
      - {series: 'weir_checkpoint_since_last_completed_seconds{$C}', values: '0+60x40'}
      - {series: 'weir_checkpoint_interval_seconds{$C}', values: '60x40'}
      - {series: 'weir_job_watermark_milliseconds{$C}', values: '1x40'}
      - {series: 'weir_job_bad_records_total{$C}', values: '0+5x40'}
      - {series: 'weir_worker_connected{$W, worker="weir-worker-1"}', values: '0x40'}
      - {series: 'weir_sink_retries_total{$W, worker="weir-worker-1"}', values: '0+1x40'}
    alert_rule_test:
      - {eval_time: 40m, alertname: WeirNoWorkers, exp_alerts: [{exp_labels: {severity: critical, $CL}}]}
      - {eval_time: 40m, alertname: WeirJobRedeployingOften, exp_alerts: [{exp_labels: {severity: warning, $CL}}]}
      - {eval_time: 40m, alertname: WeirCheckpointsFailing, exp_alerts: [{exp_labels: {severity: warning, $CL}}]}
      - {eval_time: 40m, alertname: WeirCheckpointsStale, exp_alerts: [{exp_labels: {severity: critical, $CL}}]}
      - {eval_time: 40m, alertname: WeirWatermarkLagHigh, exp_alerts: [{exp_labels: {severity: warning, $CL}}]}
      - {eval_time: 40m, alertname: WeirDeadLettersRising, exp_alerts: [{exp_labels: {severity: warning, $CL}}]}
      - {eval_time: 40m, alertname: WeirWorkerDisconnected, exp_alerts: [{exp_labels: {severity: warning, $WL, worker: weir-worker-1}}]}
      - {eval_time: 40m, alertname: WeirSinkRetrying, exp_alerts: [{exp_labels: {severity: warning, $WL, worker: weir-worker-1}}]}
      - $QUIET(40m)
  # A stopped job: not running, but its old watermark and checkpoint are
  # no news.
  - interval: 1m
    input_series:
      - {series: 'weir_coordinator_leader{$C, pod="weir-coordinator-0"}', values: '1x30'}
      - {series: 'weir_job_state{$C, state="running"}', values: '0x30'}
      - {series: 'weir_job_state{$C, state="stopped"}', values: '1x30'}
      - {series: 'weir_cluster_workers{$C}', values: '2x30'}
      - {series: 'weir_checkpoint_since_last_completed_seconds{$C}', values: '0+60x30'}
      - {series: 'weir_checkpoint_interval_seconds{$C}', values: '60x30'}
      - {series: 'weir_job_watermark_milliseconds{$C}', values: '1x30'}
    alert_rule_test:
      - {eval_time: 30m, alertname: WeirJobNotRunning, exp_alerts: [{exp_labels: {severity: warning, $CL, state: stopped}}]}
      - $QUIET(30m)
  # A failed job.
  - interval: 1m
    input_series:
      - {series: 'weir_coordinator_leader{$C, pod="weir-coordinator-0"}', values: '1x10'}
      - {series: 'weir_job_state{$C, state="running"}', values: '1 1 1 0x7'}
      - {series: 'weir_job_state{$C, state="failed"}', values: '0 0 0 1x7'}
      - {series: 'weir_cluster_workers{$C}', values: '2x10'}
    alert_rule_test:
      - {eval_time: 10m, alertname: WeirJobFailed, exp_alerts: [{exp_labels: {severity: critical, $CL, state: failed}}]}
      - $QUIET(10m)
  # Only a follower answers: no leader.
  - interval: 1m
    input_series:
      - {series: 'weir_coordinator_leader{$C, pod="weir-coordinator-1"}', values: '0x10'}
    alert_rule_test:
      - {eval_time: 5m, alertname: WeirNoCoordinatorLeader, exp_alerts: [{exp_labels: {severity: critical, $CL}}]}
      - $QUIET(5m)
  # No coordinator is scraped at all.
  - interval: 1m
    input_series:
      - {series: 'weir_worker_connected{$W, worker="weir-worker-0"}', values: '1x10'}
    alert_rule_test:
      - {eval_time: 5m, alertname: WeirNoCoordinatorLeader, exp_alerts: [{exp_labels: {severity: critical, $CL}}]}
      - $QUIET(5m)
"#;

/// The rendered rules pass `promtool check rules` (expressions, durations,
/// annotation templates), and `promtool test rules` sees each alert fire on
/// the trouble it is about, and stay quiet on a healthy, a stopped and a
/// failed job.
#[test]
fn promtool_checks_the_rules_and_sees_them_fire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = values_file(
        dir.path(),
        "values.yaml",
        "prometheusRule:\n  enabled: true\n",
    );
    let docs = documents(&template(&[&values]));
    let spec = &the_rule(&docs)["spec"];
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(spec).expect("YAML"),
    )
    .expect("write rules");
    let out = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{}",
        text(&out)
    );

    // Without their annotations, which promtool would want word for word.
    let mut bare = spec.clone();
    for group in bare["groups"].as_sequence_mut().expect("groups") {
        for r in group["rules"].as_sequence_mut().expect("rules") {
            r.as_mapping_mut().expect("rule").remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&bare).expect("YAML"),
    )
    .expect("write rules");
    let mut tests = RULE_TESTS
        .replace("$CL", "namespace: stream, job: weir-coordinator")
        .replace("$WL", "namespace: stream, job: weir-worker-headless")
        .replace("$C", r#"namespace="stream", job="weir-coordinator""#)
        .replace("$W", r#"namespace="stream", job="weir-worker-headless""#);
    // `$QUIET(t)`: the alerts a test group expects nothing of, at t.
    let groups: Vec<String> = tests.split("\n  - interval").map(str::to_owned).collect();
    tests = groups
        .iter()
        .map(|group| {
            let Some(start) = group.find("$QUIET(") else {
                return group.clone();
            };
            let end = start + group[start..].find(')').expect("$QUIET(t)");
            let at = &group[start + "$QUIET(".len()..end];
            let quiet: Vec<String> = ALERTS
                .iter()
                .filter(|a| !group.contains(&format!("alertname: {a},")))
                .map(|a| format!("{{eval_time: {at}, alertname: {a}, exp_alerts: []}}"))
                .collect();
            format!(
                "{}{}{}",
                &group[..start],
                quiet.join("\n      - "),
                &group[end + 1..]
            )
        })
        .collect::<Vec<_>>()
        .join("\n  - interval");
    std::fs::write(dir.path().join("tests.yaml"), &tests).expect("write tests");
    let out = promtool(&["test", "rules", "tests.yaml"], dir.path());
    assert!(out.status.success(), "{}\n{tests}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
}

/// Thresholds, durations, severities, selectors and each alert's presence
/// come from the values; the schema refuses what Prometheus would not read.
#[test]
fn the_alerts_thresholds_and_selectors_are_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = values_file(
        dir.path(),
        "values.yaml",
        r#"
prometheusRule:
  enabled: true
  selectors:
    coordinator: 'job="weir-pods", role="coordinator"'
    worker: 'job="weir-pods", role="worker"'
  runbookUrl: https://wiki.example.com/weir
  alerts:
    jobFailed: {enabled: false}
    checkpointsFailing: {failures: 5, window: 1h}
    noWorkers: {for: 1m, severity: page}
    redeployingOften: {generations: 10, window: 1h30m}
"#,
    );
    let docs = documents(&template(&[&values]));
    let rule = the_rule(&docs);
    assert!(alert(rule, "WeirJobFailed").is_none());
    assert_eq!(alerts(rule).len(), ALERTS.len() - 1);
    let failing = alert(rule, "WeirCheckpointsFailing").expect("failing");
    assert_eq!(
        str_of(&failing["expr"]),
        r#"sum by (namespace, job) (increase(weir_checkpoints_failed_total{job="weir-pods", role="coordinator", cause!="generation_replaced"}[1h])) >= 5"#
    );
    let no_workers = alert(rule, "WeirNoWorkers").expect("no workers");
    assert_eq!(no_workers["for"], "1m");
    assert_eq!(no_workers["labels"]["severity"], "page");
    assert_eq!(
        no_workers["annotations"]["runbook_url"],
        "https://wiki.example.com/weir#weirnoworkers"
    );
    let redeploying = alert(rule, "WeirJobRedeployingOften").expect("redeploying");
    assert!(str_of(&redeploying["expr"]).ends_with("[1h30m]) > 10"));
    for a in alerts(rule) {
        let expr = str_of(&a["expr"]);
        assert!(!expr.contains("namespace=\""), "{expr}");
        assert!(expr.contains(r#"job="weir-pods", role=""#), "{expr}");
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).expect("YAML"),
    )
    .expect("write rules");
    let out = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(out.status.success(), "{}", text(&out));

    for (set, key) in [
        ("prometheusRule.alerts.watermarkLag.for=1.5m", "for"),
        ("prometheusRule.alerts.jobFaild.enabled=false", "jobFaild"),
        ("prometheusRule.alerts.deadLetters.records=-1", "records"),
        ("grafanaDashboard.enabeld=true", "enabeld"),
    ] {
        let out = helm(&["template", "weir", "helm/weir", "--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(text(&out).contains(key), "{set}: {}", text(&out));
    }
}

/// Every panel of a dashboard, rows' collapsed panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut all = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(inner) = p["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// The dashboard's queries, with where each is.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for p in panels(dashboard) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            found.push((format!("panel {title}"), expr.to_owned()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if v["type"] == "query" {
            let query = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .expect("a variable's query");
            found.push((format!("variable {}", v["name"]), query.to_owned()));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = a["expr"].as_str() {
            found.push((format!("annotation {}", a["name"]), expr.to_owned()));
        }
    }
    found
}

/// The dashboard is the ConfigMap's content for the Grafana sidecar, uses a
/// Prometheus data source variable, covers the job, checkpoints, workers
/// and coordinators, and each query reads only metrics Weir emits and
/// parses as PromQL (checked by promtool with Grafana's variables filled in).
#[test]
fn the_grafana_dashboard_is_shipped_and_queries_emitted_metrics() {
    let file = std::fs::read_to_string(repo().join("helm/weir/dashboards/weir.json"))
        .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&file).expect("the dashboard is JSON");
    let docs = documents(&template(&[]));
    assert!(!docs
        .iter()
        .any(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "weir-dashboard"));
    let docs = documents(&template(OBSERVABILITY));
    let cm = kind_named(&docs, "ConfigMap", "weir-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Weir");
    let shipped = str_of(&cm["data"]["weir.json"]);
    assert_eq!(shipped, file.trim_end(), "the ConfigMap holds the file");
    let shipped: serde_json::Value = serde_json::from_str(shipped).expect("JSON");
    assert_eq!(shipped, dashboard);

    assert_eq!(dashboard["uid"], "weir");
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in panels(&dashboard) {
        let title = p["title"].as_str().expect("title");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "id of {title}");
        let grid = &p["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(x + w <= 24, "{title} is off the grid");
        if p["type"] == "row" {
            continue;
        }
        titles.insert(title);
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    for want in [
        "Job state",
        "Generation",
        "Records in and out",
        "Watermark lag per partition",
        "Late and bad records",
        "Checkpoints per minute",
        "Checkpoint timing",
        "Checkpoint size",
        "Workers",
        "Resident memory per worker",
        "Raft term",
    ] {
        assert!(titles.contains(want), "no panel {want}: {titles:?}");
    }

    let emitted = emitted_metrics();
    let found = queries(&dashboard);
    assert!(found.len() > 30, "{}", found.len());
    let mut records = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (what, expr)) in found.iter().enumerate() {
        check_metrics(what, expr, &emitted);
        if what.starts_with("variable") {
            continue; // label_values() is Grafana's, not PromQL
        }
        let filled = expr
            .replace("$__rate_interval", "2m")
            .replace("$namespace", "stream")
            .replace("$coordinator", "weir-coordinator")
            .replace("$worker", "weir-worker-headless");
        assert!(
            !filled.contains('$'),
            "{what}: unknown variable in `{expr}`"
        );
        records.push_str(&format!(
            "      - record: weir:dashboard:{i}\n        expr: {}\n",
            serde_json::Value::from(filled)
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dashboard.yaml"), &records).expect("write");
    let out = promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(out.status.success(), "{}\n{records}", text(&out));

    // The sidecar's label and the ConfigMap's namespace are values.
    let values = values_file(
        dir.path(),
        "values.yaml",
        "grafanaDashboard:\n  enabled: true\n  label: weir_dashboards\n  labelValue: \"yes\"\n  namespace: monitoring\n",
    );
    let docs = documents(&template(&[&values]));
    let cm = kind_named(&docs, "ConfigMap", "weir-dashboard");
    assert_eq!(cm["metadata"]["labels"]["weir_dashboards"], "yes");
    assert!(cm["metadata"]["labels"]["grafana_dashboard"].is_null());
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
}
