//! The container image: `scripts/test-image.sh` builds it from this
//! checkout's `weir` (podman, no Docker daemon; a base made with mmdebstrap
//! when no registry answers) and checks it in a container: `weir --version`
//! through tini, the default command, the image's configuration (non-root
//! user, ports, entrypoint), and that SIGTERM stops a coordinator cleanly.

use std::process::Command;

use weir_tests::weir_bin;

#[test]
fn the_image_builds_and_runs_weir_version() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-image.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(weir_bin())
        .output()
        .expect("run scripts/test-image.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/test-image.sh failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("test-image: SKIP"),
        "the image test was skipped on a machine that can run it:\n{stderr}"
    );
    let version = format!("--version: weir {}", env!("CARGO_PKG_VERSION"));
    assert!(stderr.contains(&version), "no `{version}` in:\n{stderr}");
    assert!(stderr.contains("PASS"), "{stderr}");
}
