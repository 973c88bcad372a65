//! `pulsar-test-broker --port P --partitions N [--token T] [--tls-cert
//! FILE --tls-key FILE]`: Weir's Pulsar test broker on its own, to try Weir
//! by hand without a Pulsar cluster (with the TLS files, it serves
//! `pulsar+ssl://` only). Messages live in memory until it stops (Ctrl-C).

use std::path::PathBuf;

use weir_tests::pulsar_broker::{BrokerConfig, BrokerTls, TestBroker};

fn main() {
    let mut config = BrokerConfig {
        port: 6650,
        ..BrokerConfig::default()
    };
    let (mut tls_cert, mut tls_key) = (None::<PathBuf>, None::<PathBuf>);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--port" => config.port = parse(&value("--port"), "--port"),
            "--partitions" => config.partitions = parse(&value("--partitions"), "--partitions"),
            "--token" => config.token = Some(value("--token")),
            "--tls-cert" => tls_cert = Some(value("--tls-cert").into()),
            "--tls-key" => tls_key = Some(value("--tls-key").into()),
            "-h" | "--help" => {
                println!("usage: pulsar-test-broker [--port P (6650; 0 = any)] [--partitions N (0)] [--token T] [--tls-cert CHAIN.pem --tls-key KEY.pem]");
                return;
            }
            other => {
                eprintln!("unknown argument {other} (try --help)");
                std::process::exit(2);
            }
        }
    }
    config.tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => match BrokerTls::from_files(&cert, &key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("--tls-cert and --tls-key go together");
            std::process::exit(2);
        }
    };
    let broker = match TestBroker::start(config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot start the broker: {e}");
            std::process::exit(1);
        }
    };
    println!("pulsar test broker listening on {}", broker.url());
    // Block until interrupted; the broker runs on its own thread.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = ctrlc_like(tx);
    let _ = rx.recv();
}

fn parse<T: std::str::FromStr>(s: &str, name: &str) -> T {
    s.parse().unwrap_or_else(|_| {
        eprintln!("{name}: `{s}` is not a number");
        std::process::exit(2)
    })
}

/// Waits for SIGINT/SIGTERM on a small runtime and signals `tx`.
fn ctrlc_like(tx: std::sync::mpsc::Sender<()>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(())
}
