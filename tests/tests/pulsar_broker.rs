//! The Pulsar test broker's fidelity: real clients against it.

use std::time::Duration;

use weir_tests::pulsar_broker::{BrokerConfig, TestBroker};

fn script() -> String {
    format!(
        "{}/python/pulsar_client_check.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The official Apache Pulsar Python client (the C++ client underneath)
/// produces to and consumes from the test broker.
#[test]
fn the_official_python_client_works_against_the_test_broker() {
    let broker = TestBroker::start(BrokerConfig {
        partitions: 3,
        ..BrokerConfig::default()
    })
    .expect("broker");
    let output = std::process::Command::new("python3")
        .arg(script())
        .arg(broker.url())
        .arg("persistent://public/default/python-check")
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python client check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let total: usize = (0..3)
        .map(|p| broker.entries(&format!("python-check-partition-{p}")))
        .sum();
    assert!(total > 100, "batched sends are stored as entries: {total}");
}

/// The Rust `pulsar` crate client: produce, consume, cumulative ack.
#[test]
fn the_pulsar_crate_works_against_the_test_broker() {
    use futures::StreamExt;
    let broker = TestBroker::start(BrokerConfig::default()).expect("broker");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let client = pulsar::Pulsar::builder(broker.url(), pulsar::TokioExecutor)
            .build()
            .await
            .expect("client");
        let mut producer = client
            .producer()
            .with_topic("rust-check")
            .build()
            .await
            .expect("producer");
        for i in 0..20u32 {
            producer
                .send_non_blocking(i.to_be_bytes().to_vec())
                .await
                .expect("send")
                .await
                .expect("receipt");
        }
        let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
            .consumer()
            .with_topic("rust-check")
            .with_subscription("s")
            .with_options(
                pulsar::ConsumerOptions::default()
                    .with_initial_position(pulsar::consumer::InitialPosition::Earliest),
            )
            .build()
            .await
            .expect("consumer");
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let msg = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .expect("in time")
                .expect("message")
                .expect("ok");
            seen.push(u32::from_be_bytes(
                msg.payload.data[..4].try_into().expect("4 bytes"),
            ));
            if seen.len() == 20 {
                consumer.cumulative_ack(&msg).await.expect("ack");
            }
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    });
}
