//! The Helm chart (`helm/weir`): lint, rendering with representative value
//! sets, validation of every rendered object against Kubernetes 1.32's
//! schemas (`kubernetes-validate --strict`), the values schema refusing bad
//! values, and the rendered objects fitting together (the job spec the
//! coordinator reads is valid, workers dial the coordinator's Service,
//! secrets come from Secrets, least-privilege RBAC, one scrape per
//! component). The monitoring the chart ships is tested in `monitoring.rs`.
//! Helm and kubernetes-validate are installed by the README's test command
//! (`scripts/lib.sh`: `install_k8s_tools`).

use std::process::Command;

use serde_yaml::Value;
use weir_tests::chart::*;

const VALUE_SETS: &[&[&str]] = &[
    &[],
    &["helm/values/eks-irsa.yaml"],
    &["helm/values/observability.yaml"],
    &["helm/values/ha.yaml"],
    &["helm/values/tls.yaml"],
];

#[test]
fn the_chart_lints_clean_with_every_value_set() {
    for values in VALUE_SETS {
        let mut a = vec!["lint", "--strict", "helm/weir"];
        for v in *values {
            a.extend(["-f", v]);
        }
        let out = helm(&a);
        assert!(
            out.status.success(),
            "helm lint --strict {values:?}:\n{}",
            text(&out)
        );
        assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
    }
}

#[test]
fn rendered_manifests_validate_against_kubernetes_1_32() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, values) in VALUE_SETS.iter().enumerate() {
        let yaml = template(values);
        let file = dir.path().join(format!("rendered-{i}.yaml"));
        std::fs::write(&file, &yaml).expect("write rendered manifests");
        let out = run(Command::new(tool(
            "weir-python/bin/kubernetes-validate",
            "kubernetes-validate",
        ))
        .args(["--strict", "--kubernetes-version", "1.32.0"])
        .arg(&file));
        let report = text(&out);
        assert!(out.status.success(), "{values:?}:\n{report}");
        // Every object was checked; the only ones without a schema are the
        // Prometheus Operator's (CRDs), checked by hand below.
        let docs = documents(&yaml);
        let passed = report.matches(" passed for resource ").count();
        let crds = of_kind(&docs, "ServiceMonitor").len() + of_kind(&docs, "PrometheusRule").len();
        assert_eq!(passed + crds, docs.len(), "{values:?}:\n{report}");
        assert!(!report.contains("ERROR"), "{values:?}:\n{report}");
    }
}

#[test]
fn the_values_schema_rejects_bad_values_with_the_offending_key() {
    for (file, expected) in [
        ("invalid-negative-workers.yaml", "worker.replicas"),
        ("invalid-two-coordinators.yaml", "coordinator.replicas"),
        ("invalid-state-dir.yaml", "job.spec.state"),
        ("invalid-unknown-key.yaml", "wrokers"),
        ("invalid-log-format.yaml", "logFormat"),
        ("invalid-admin-token-for-reads.yaml", "secrets.adminToken"),
        ("invalid-tls-without-secret.yaml", "tls.existingSecret"),
    ] {
        let path = format!("helm/values/{file}");
        let out = helm(&["template", "weir", "helm/weir", "-f", &path]);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(text(&out).contains(expected), "{file}: {}", text(&out));
        let out = helm(&["lint", "--strict", "helm/weir", "-f", &path]);
        assert!(!out.status.success(), "helm lint accepted {file}");
    }
}

/// Three coordinators: a raft group of the StatefulSet's pods, found by
/// their names in the headless Service, each with its raft store on a
/// volume, at most one evicted at a time.
#[test]
fn three_coordinators_form_a_raft_group_of_the_statefulsets_pods() {
    let docs = documents(&template(&["helm/values/ha.yaml"]));
    let sts = kind_named(&docs, "StatefulSet", "weir-coordinator");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "weir-coordinator-headless");
    let a = args(sts);
    let peers = a
        .iter()
        .find_map(|a| a.strip_prefix("--peers="))
        .expect("--peers");
    let ns = "stream";
    assert_eq!(
        peers,
        (0..3)
            .map(|i| format!(
                "{i}=weir-coordinator-{i}.weir-coordinator-headless.{ns}.svc.cluster.local:7070"
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    // Workers know every coordinator pod and find the leader among them.
    let worker = kind_named(&docs, "StatefulSet", "weir-worker");
    let pods = (0..3)
        .map(|i| {
            format!("weir-coordinator-{i}.weir-coordinator-headless.{ns}.svc.cluster.local:7070")
        })
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        args(worker).contains(&format!("--coordinator={pods}")),
        "{:?}",
        args(worker)
    );
    // The node id is the pod's ordinal, from its host name.
    assert!(!a.iter().any(|a| a.starts_with("--node-id")));
    assert!(a.contains(&"--raft-dir=/var/lib/weir-raft/store".to_owned()));
    let claims = sts["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("volume claims");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "raft");
    let mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts");
    assert!(mounts
        .iter()
        .any(|m| m["name"] == "raft" && m["mountPath"] == "/var/lib/weir-raft"));
    let pdb = kind_named(&docs, "PodDisruptionBudget", "weir-coordinator");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let headless = kind_named(&docs, "Service", "weir-coordinator-headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    // One coordinator: no raft flags, no volume.
    let docs = documents(&template(&[]));
    let sts = kind_named(&docs, "StatefulSet", "weir-coordinator");
    assert!(!args(sts).iter().any(|a| a.starts_with("--peers")));
    assert!(sts["spec"]["volumeClaimTemplates"].is_null());
}

/// A coordinator of a group without a volume would lose its raft store
/// with its pod, and could not rejoin: refused.
#[test]
fn three_coordinators_without_raft_volumes_are_refused() {
    let out = helm(&[
        "template",
        "weir",
        "helm/weir",
        "-f",
        "helm/values/ha.yaml",
        "--set",
        "coordinator.raft.persistence.enabled=false",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs coordinator.raft.persistence.enabled"),
        "{}",
        text(&out)
    );
}

/// A non-S3 checkpoint store would leave every pod with its own checkpoints.
#[test]
fn a_checkpoint_store_that_pods_do_not_share_is_refused() {
    let out = helm(&[
        "template",
        "weir",
        "helm/weir",
        "--set",
        "job.spec.checkpoint.store=/var/lib/weir/checkpoints",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("must be s3://"), "{}", text(&out));
}

#[test]
fn the_job_spec_in_the_config_map_is_valid_and_uses_the_data_volume() {
    let dir = tempfile::tempdir().expect("temp dir");
    for values in VALUE_SETS {
        let docs = documents(&template(values));
        let cm = kind_named(&docs, "ConfigMap", "weir-job");
        let spec = str_of(&cm["data"]["job.yaml"]);
        let file = dir.path().join("job.yaml");
        std::fs::write(&file, spec).expect("write spec");
        let out = run(Command::new(weir_tests::weir_bin())
            .arg("spec")
            .arg("--check")
            .arg(&file));
        assert!(
            out.status.success(),
            "{values:?}: weir rejects the chart's spec:\n{}\n{spec}",
            text(&out)
        );
        let resolved: Value = serde_yaml::from_slice(&out.stdout).expect("weir spec prints YAML");
        assert_eq!(resolved["state"]["dir"], "/var/lib/weir/data", "{values:?}");
        assert!(
            resolved["source"]["pulsar"].is_mapping(),
            "{values:?}: the contract job reads Pulsar"
        );
        assert!(
            resolved["sink"]["clickhouse"].is_mapping(),
            "{values:?}: and writes ClickHouse"
        );
        assert!(str_of(&resolved["checkpoint"]["store"]).starts_with("s3://"));
        // The coordinator reads exactly this file.
        let coordinator = kind_named(&docs, "StatefulSet", "weir-coordinator");
        assert!(args(coordinator).contains(&"--spec=/etc/weir/job.yaml".to_owned()));
    }
}

/// Passwords and tokens come from Secrets through environment variables
/// that the spec names; nothing secret is in a ConfigMap.
#[test]
fn secrets_are_referenced_never_inlined() {
    let docs = documents(&template(&["helm/values/eks-irsa.yaml"]));
    let cm = kind_named(&docs, "ConfigMap", "weir-job");
    let spec: Value = serde_yaml::from_str(str_of(&cm["data"]["job.yaml"])).expect("spec");
    let token_env = str_of(&spec["source"]["pulsar"]["token_env"]);
    let password_env = str_of(&spec["sink"]["clickhouse"]["password_env"]);
    for name in ["weir-coordinator", "weir-worker"] {
        let sts = kind_named(&docs, "StatefulSet", name);
        for (var, secret, key) in [
            (token_env, "weir-pulsar", "token"),
            (password_env, "weir-clickhouse", "password"),
        ] {
            let e = env(sts, var).unwrap_or_else(|| panic!("{name} lacks {var}"));
            assert_eq!(
                e["valueFrom"]["secretKeyRef"]["name"], secret,
                "{name} {var}"
            );
            assert_eq!(e["valueFrom"]["secretKeyRef"]["key"], key, "{name} {var}");
            assert!(e["value"].is_null(), "{name}: {var} inlined");
        }
        // IRSA: no static keys.
        assert!(env(sts, "AWS_ACCESS_KEY_ID").is_none());
        // Both roles share the cluster secret; only coordinators hold the
        // admin token.
        let cluster =
            env(sts, "WEIR_CLUSTER_SECRET").unwrap_or_else(|| panic!("{name}: no cluster secret"));
        assert_eq!(cluster["valueFrom"]["secretKeyRef"]["name"], "weir-cluster");
        assert_eq!(cluster["valueFrom"]["secretKeyRef"]["key"], "secret");
        let admin = env(sts, "WEIR_ADMIN_TOKEN");
        if name == "weir-coordinator" {
            let admin = admin.expect("the coordinator reads the admin token");
            assert_eq!(admin["valueFrom"]["secretKeyRef"]["name"], "weir-admin");
            assert!(admin["value"].is_null());
        } else {
            assert!(admin.is_none(), "workers need no admin token");
        }
    }
    let sa = kind_named(&docs, "ServiceAccount", "weir");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/weir-checkpoints"
    );
    // Without a token secret, no token variable is named or set.
    let docs = documents(&template(&[]));
    let cm = kind_named(&docs, "ConfigMap", "weir-job");
    let spec: Value = serde_yaml::from_str(str_of(&cm["data"]["job.yaml"])).expect("spec");
    assert!(spec["source"]["pulsar"]["token_env"].is_null());
    assert!(env(
        kind_named(&docs, "StatefulSet", "weir-worker"),
        "PULSAR_TOKEN"
    )
    .is_none());
}

#[test]
fn workers_dial_the_coordinator_service_and_advertise_their_stable_names() {
    let docs = documents(&template(&["helm/values/eks-irsa.yaml"]));
    let worker = kind_named(&docs, "StatefulSet", "weir-worker");
    assert_eq!(worker["spec"]["replicas"], 4);
    assert_eq!(worker["spec"]["serviceName"], "weir-worker-headless");
    let a = args(worker);
    assert_eq!(a[0], "worker");
    assert!(
        a.contains(&"--coordinator=weir-coordinator.stream.svc.cluster.local:7070".to_owned()),
        "{a:?}"
    );
    assert!(a.contains(&"--id=$(POD_NAME)".to_owned()), "{a:?}");
    assert!(
        a.contains(
            &"--advertise=$(POD_NAME).weir-worker-headless.$(POD_NAMESPACE).svc.cluster.local:7071"
                .to_owned()
        ),
        "{a:?}"
    );
    // The variables the args use are defined.
    assert!(env(worker, "POD_NAME").is_some() && env(worker, "POD_NAMESPACE").is_some());
    // JSON logs (for CloudWatch) on every pod, as the values ask.
    let coordinator = kind_named(&docs, "StatefulSet", "weir-coordinator");
    for sts in [worker, coordinator] {
        assert_eq!(
            env(sts, "WEIR_LOG_FORMAT").map(|e| &e["value"]),
            Some(&Value::from("json")),
            "{sts:?}"
        );
    }
    let svc = kind_named(&docs, "Service", "weir-coordinator");
    let ports: Vec<_> = svc["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, [Some(7070), Some(8080)]);
    // Probes on /healthz and /readyz, graceful termination, non-root.
    for (name, port) in [("weir-coordinator", "http"), ("weir-worker", "worker")] {
        let sts = kind_named(&docs, "StatefulSet", name);
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);
        assert_eq!(
            sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }
    // Persistent volumes for RocksDB, removed with the pods on scale-down.
    assert_eq!(
        worker["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        "gp3"
    );
    assert_eq!(
        worker["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
        "Delete"
    );
    // One PodDisruptionBudget per component, selecting its pods.
    for pdb in of_kind(&docs, "PodDisruptionBudget") {
        let component = &pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"];
        let sts = kind_named(&docs, "StatefulSet", &format!("weir-{}", str_of(component)));
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            sts["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    }
}

/// The coordinator may follow and patch its own workers' StatefulSet and
/// list pods, in its namespace, and nothing else.
#[test]
fn rbac_is_least_privilege() {
    let docs = documents(&template(&[]));
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty()
    );
    let role = kind_named(&docs, "Role", "weir-coordinator");
    let rules = role["rules"].as_sequence().expect("rules");
    let mut seen = Vec::new();
    for r in rules {
        let resources: Vec<_> = r["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .map(str_of)
            .collect();
        let verbs: Vec<_> = r["verbs"]
            .as_sequence()
            .expect("verbs")
            .iter()
            .map(str_of)
            .collect();
        assert!(
            !verbs.contains(&"*") && !verbs.contains(&"delete") && !verbs.contains(&"create"),
            "{r:?}"
        );
        if resources.iter().any(|x| x.starts_with("statefulsets")) {
            assert_eq!(r["resourceNames"][0], "weir-worker", "{r:?}");
        }
        seen.push((resources, verbs));
    }
    assert!(seen
        .iter()
        .any(|(r, v)| r == &["statefulsets/scale"] && v.contains(&"patch")));
    assert!(seen
        .iter()
        .any(|(r, v)| r == &["statefulsets"] && v.contains(&"watch") && !v.contains(&"patch")));
    assert!(seen
        .iter()
        .any(|(r, v)| r == &["pods"] && v.contains(&"list") && !v.contains(&"patch")));
    let binding = kind_named(&docs, "RoleBinding", "weir-coordinator");
    assert_eq!(binding["subjects"][0]["name"], "weir");
    assert_eq!(binding["subjects"][0]["namespace"], "stream");
    let coordinator = kind_named(&docs, "StatefulSet", "weir-coordinator");
    assert_eq!(
        coordinator["spec"]["template"]["spec"]["serviceAccountName"],
        "weir"
    );
}

/// The ServiceMonitors (a CRD kubernetes-validate has no schema for) each
/// select exactly one Service, which has the port they scrape.
#[test]
fn service_monitors_scrape_each_component_once() {
    let docs = documents(&template(&["helm/values/observability.yaml"]));
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2);
    let services = of_kind(&docs, "Service");
    for m in monitors {
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["metadata"]["labels"]["release"], "kube-prometheus-stack");
        let want = m["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("matchLabels");
        let matching: Vec<_> = services
            .iter()
            .filter(|s| want.iter().all(|(k, v)| s["metadata"]["labels"][k] == *v))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{:?} selects {} services",
            m["metadata"]["name"],
            matching.len()
        );
        let port = &m["spec"]["endpoints"][0]["port"];
        assert!(
            matching[0]["spec"]["ports"]
                .as_sequence()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == *port),
            "{port:?} is not a port of the selected service"
        );
        assert_eq!(m["spec"]["endpoints"][0]["path"], "/metrics");
        // The coordinator's /metrics needs the admin token in this value
        // set (secrets.adminToken.forReads); the workers' never does.
        let auth = &m["spec"]["endpoints"][0]["authorization"];
        if m["metadata"]["name"] == "weir-coordinator" {
            assert_eq!(auth["type"], "Bearer");
            assert_eq!(auth["credentials"]["name"], "weir-admin");
            assert_eq!(auth["credentials"]["key"], "token");
        } else {
            assert!(auth.is_null(), "{auth:?}");
        }
    }
    let coordinator = kind_named(&docs, "StatefulSet", "weir-coordinator");
    assert!(args(coordinator)
        .iter()
        .any(|a| a == "--admin-token-for-reads"));
    let policies = of_kind(&docs, "NetworkPolicy");
    assert_eq!(policies.len(), 2);
}

/// `k8s/weir.yaml` is the chart rendered by `scripts/render-k8s.sh`.
#[test]
fn the_plain_manifests_are_the_chart_rendered_now() {
    let out = helm(&[
        "template",
        "weir",
        "helm/weir",
        "--namespace",
        "weir",
        "--skip-tests",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let checked_in = std::fs::read_to_string(repo().join("k8s/weir.yaml")).expect("k8s/weir.yaml");
    let body: String = checked_in
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == String::from_utf8_lossy(&out.stdout),
        "k8s/weir.yaml is stale: run scripts/render-k8s.sh"
    );
}

/// The EKS example (`k8s/eks/values-eks.yaml`) renders and validates once
/// its placeholders are filled in, and the IAM policy grants only object
/// access under the checkpoint prefix.
#[test]
fn the_eks_example_renders_and_its_iam_policy_is_least_privilege() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(repo().join("k8s/eks/values-eks.yaml")).expect("example");
    let filled = example
        .replace("ACCOUNT_ID", "123456789012")
        .replace("s3://BUCKET/PREFIX", "s3://weir-checkpoints/prod");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, filled).expect("write values");
    let values = values.to_str().expect("UTF-8 path");
    // Unfilled, the role ARN is refused by the schema.
    let out = helm(&[
        "template",
        "weir",
        "helm/weir",
        "-f",
        "k8s/eks/values-eks.yaml",
    ]);
    assert!(!out.status.success(), "placeholders accepted");
    let yaml = template(&[values]);
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &yaml).expect("write");
    let out = run(Command::new(tool(
        "weir-python/bin/kubernetes-validate",
        "kubernetes-validate",
    ))
    .args(["--strict", "--kubernetes-version", "1.32.0"])
    .arg(&file));
    assert!(out.status.success(), "{}", text(&out));

    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("k8s/eks/iam-policy.json")).expect("policy"),
    )
    .expect("the IAM policy is JSON");
    for statement in policy["Statement"].as_array().expect("statements") {
        let actions: Vec<&str> = match &statement["Action"] {
            serde_json::Value::String(a) => vec![a.as_str()],
            a => a
                .as_array()
                .expect("actions")
                .iter()
                .filter_map(|x| x.as_str())
                .collect(),
        };
        for action in actions {
            assert!(
                [
                    "s3:ListBucket",
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject"
                ]
                .contains(&action),
                "{action} is more than checkpoints need"
            );
        }
        let resource = statement["Resource"].as_str().expect("one resource");
        assert!(
            resource == "arn:aws:s3:::BUCKET" || resource == "arn:aws:s3:::BUCKET/PREFIX/*",
            "{resource}"
        );
    }
    let trust: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("k8s/eks/trust-policy.json")).expect("trust policy"),
    )
    .expect("the trust policy is JSON");
    assert_eq!(
        trust["Statement"][0]["Action"],
        "sts:AssumeRoleWithWebIdentity"
    );
}

#[test]
fn tls_mounts_the_secret_sets_the_flags_and_probes_use_https() {
    let docs = documents(&template(&[
        "helm/values/tls.yaml",
        "helm/values/observability.yaml",
    ]));
    for name in ["weir-coordinator", "weir-worker"] {
        let sts = kind_named(&docs, "StatefulSet", name);
        let pod = &sts["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "tls")
            .unwrap_or_else(|| panic!("{name}: no tls volume"));
        assert_eq!(volume["secret"]["secretName"], "weir-tls", "{name}");
        let container = &pod["containers"][0];
        let mount = container["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == "tls")
            .unwrap_or_else(|| panic!("{name}: tls not mounted"));
        assert_eq!(mount["readOnly"], true, "{name}");
        let dir = str_of(&mount["mountPath"]);
        let a = args(sts);
        for (flag, file) in [
            ("--tls-cert", "tls.crt"),
            ("--tls-key", "tls.key"),
            ("--tls-ca", "ca.crt"),
        ] {
            assert!(
                a.contains(&format!("{flag}={dir}/{file}")),
                "{name}: no {flag}: {a:?}"
            );
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["scheme"], "HTTPS",
                "{name}'s {probe}"
            );
        }
    }
    // Scrapes check the certificate against the Secret's CA.
    for monitor in of_kind(&docs, "ServiceMonitor") {
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["scheme"], "https", "{monitor:?}");
        assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["name"], "weir-tls");
        assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["key"], "ca.crt");
    }
    // `helm test` speaks https:// with the CA.
    let test = documents(&template(&["helm/values/tls.yaml"]))
        .into_iter()
        .find(|d| d["kind"] == "Pod")
        .expect("the test pod");
    let a: Vec<&str> = test["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(str_of)
        .collect();
    assert!(
        a.contains(&"--coordinator=https://weir-coordinator:8080"),
        "{a:?}"
    );
    assert!(a.contains(&"--tls-ca=/etc/weir-tls/ca.crt"), "{a:?}");

    // Without TLS: no volume, no flags, plain probes.
    let docs = documents(&template(&[]));
    let worker = kind_named(&docs, "StatefulSet", "weir-worker");
    assert!(!args(worker).iter().any(|a| a.starts_with("--tls")));
    let probe = &worker["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
    assert!(probe["httpGet"]["scheme"].is_null() || probe["httpGet"]["scheme"] == "HTTP");
}
