//! The Helm chart as its tests see it: `helm template` with value files,
//! the rendered documents, and lookups into them. Helm (and the other
//! tools) are where the README's test command installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize as _;
use serde_yaml::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// A tool where the test command installs it (next to the build
/// directory), or else from PATH.
pub fn tool(installed: &str, name: &str) -> PathBuf {
    let path = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/weir-target"))
        .join("..")
        .join(installed);
    if path.exists() {
        path
    } else {
        PathBuf::from(name)
    }
}

pub fn helm_bin() -> PathBuf {
    tool("weir-tools/bin/helm", "helm")
}

pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {shown}: {e} (the test command installs it: scripts/test.sh)")
    })
}

pub fn helm(args: &[&str]) -> Output {
    run(Command::new(helm_bin()).current_dir(repo()).args(args))
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `helm template` of the chart with the given values files.
pub fn template(values: &[&str]) -> String {
    let mut args = vec!["template", "weir", "helm/weir", "--namespace", "stream"];
    for v in values {
        args.extend(["-f", v]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template {values:?}:\n{}",
        text(&out)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn kind_named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The container's args of a StatefulSet.
pub fn args(sts: &Value) -> Vec<String> {
    sts["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| str_of(a).to_owned())
        .collect()
}

pub fn env<'a>(sts: &'a Value, name: &str) -> Option<&'a Value> {
    sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
}
