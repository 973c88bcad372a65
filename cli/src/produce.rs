//! `weir produce`: publishes contract readings to a Pulsar topic — the load
//! producer of the old Flink benchmarks.
//!
//! Readings come from the deterministic generator (the same stream `weir
//! gen` writes for the same arguments, so a test can compute what a job
//! must output) or from Avro container files. Each is one Avro datum of the
//! contract schema per message, keyed by sensorId (so a device's readings
//! stay in one partition, in order), with the reading's time as the
//! message's event time. Messages are batched by the client; the producer
//! keeps a bounded number of sends in flight and reports its rate live.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use pulsar::producer::{Message, SendFuture};
use pulsar::ProducerOptions;
use tokio::sync::mpsc;
use weir_common::avro::encode::encode_reading;
use weir_common::error_chain::error_chain;
use weir_common::generator::{GeneratorParams, PartitionGenerator};
use weir_common::input::for_each_reading;
use weir_common::pulsar::{connect, full_topic_name, Connection};
use weir_common::reading::Reading;
use weir_common::spec::GENERATOR_EPOCH_MS;

use crate::cluster::runtime;
use crate::local::group;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Pulsar service URL (pulsar:// or pulsar+ssl://).
    #[arg(long, value_name = "URL")]
    pub pulsar: String,
    /// The topic to publish to (partitioned or not).
    #[arg(long, default_value = "persistent://public/default/iot-sensor-data")]
    pub topic: String,
    /// Environment variable holding an authentication token.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// PEM file of the certificate authorities of the broker (pulsar+ssl://).
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Publish the records of these Avro container files, in order, instead
    /// of generated readings (repeatable).
    #[arg(long = "input", value_name = "FILE.avro")]
    pub inputs: Vec<PathBuf>,
    /// Generated readings to publish.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct devices (sensor ids 1..=D).
    #[arg(long, default_value_t = 500)]
    pub devices: u32,
    /// Readings per second of event time in the generated stream.
    #[arg(long, default_value_t = 30_000.0)]
    pub event_rate: f64,
    /// Readings arrive up to this many ms after their event time.
    #[arg(long, default_value_t = 0)]
    pub disorder_ms: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Event time of the first reading, epoch ms (default 2025-10-10T00:00:00Z).
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Messages per second to publish at most (default: as fast as the broker takes them).
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Messages per batch (1: no batching).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u32,
    /// A batch that is not full is sent after this long.
    #[arg(long, default_value = "10ms")]
    pub batch_delay: weir_common::spec::Duration,
    /// No live rate line; only the summary.
    #[arg(long)]
    pub quiet: bool,
}

/// Sends waiting for their receipt, at most.
const IN_FLIGHT: usize = 20_000;
/// Readings handed from the reading thread to the publisher at a time.
const CHUNK: usize = 1024;

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    if !args.url_ok() {
        bail!(
            "--pulsar `{}` is not a pulsar:// or pulsar+ssl:// URL",
            args.pulsar
        );
    }
    let readings = start_readings(&args)?;
    runtime()?.block_on(publish(args, readings))
}

impl ProduceArgs {
    fn url_ok(&self) -> bool {
        let url = self.pulsar.trim();
        url.starts_with("pulsar://") || url.starts_with("pulsar+ssl://")
    }
}

/// Starts reading (or generating) on its own thread; chunks of readings
/// arrive on the channel, an error ends it.
fn start_readings(
    args: &ProduceArgs,
) -> anyhow::Result<mpsc::Receiver<anyhow::Result<Vec<Reading>>>> {
    let (tx, rx) = mpsc::channel(16);
    let inputs = args.inputs.clone();
    let params = if inputs.is_empty() {
        if args.devices == 0 {
            bail!("--devices must be at least 1");
        }
        if !(args.event_rate.is_finite() && args.event_rate > 0.0) {
            bail!("--event-rate must be a positive number of readings per second");
        }
        Some(GeneratorParams {
            devices: args.devices,
            rate: args.event_rate,
            disorder_ms: args.disorder_ms,
            seed: args.seed,
            records: Some(args.records),
            start_ms: args.start_ms.unwrap_or(GENERATOR_EPOCH_MS),
            partitions: 1,
        })
    } else {
        None
    };
    std::thread::Builder::new()
        .name("weir-produce-read".into())
        .spawn(move || {
            let send = |chunk: Vec<Reading>| tx.blocking_send(Ok(chunk)).is_ok();
            match params {
                Some(params) => {
                    let mut g = PartitionGenerator::new(&params, 0);
                    let mut r = Reading::default();
                    let mut chunk = Vec::with_capacity(CHUNK);
                    while g.next_into(&mut r) {
                        chunk.push(r.clone());
                        if chunk.len() == CHUNK && !send(std::mem::take(&mut chunk)) {
                            return;
                        }
                    }
                    send(chunk);
                }
                None => {
                    for path in inputs {
                        let mut chunk = Vec::with_capacity(CHUNK);
                        let result = for_each_reading(&path, |r| {
                            chunk.push(r.clone());
                            if chunk.len() == CHUNK && !send(std::mem::take(&mut chunk)) {
                                return Err(weir_common::input::InputError::Damaged {
                                    path: path.display().to_string(),
                                    what: "the publisher stopped".into(),
                                });
                            }
                            Ok(())
                        });
                        if let Err(e) = result {
                            let _ = tx.blocking_send(Err(e.into()));
                            return;
                        }
                        if !send(chunk) {
                            return;
                        }
                    }
                }
            }
        })
        .context("cannot start the reading thread")?;
    Ok(rx)
}

async fn publish(
    args: ProduceArgs,
    mut readings: mpsc::Receiver<anyhow::Result<Vec<Reading>>>,
) -> anyhow::Result<()> {
    let connection = Connection {
        url: args.pulsar.trim().to_owned(),
        token_env: args.token_env.clone(),
        tls_ca_file: args.tls_ca_file.clone(),
        tls_allow_insecure: false,
    };
    let client = connect(&connection).await?;
    let topic = full_topic_name(&args.topic);
    let options = ProducerOptions {
        batch_size: (args.batch_size > 1).then_some(args.batch_size),
        batch_timeout: (args.batch_size > 1).then(|| args.batch_delay.std()),
        // Keyed messages go to the partition of their key's hash.
        routing_policy: Some(pulsar::routing_policy::RoutingPolicy::RoundRobin),
        block_queue_if_full: true,
        ..ProducerOptions::default()
    };
    let mut producer = client
        .producer()
        .with_topic(&topic)
        .with_options(options)
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("cannot create a producer on {topic}: {}", error_chain(&e)))?;
    let mut display = Display::new(args.quiet);
    let mut in_flight: VecDeque<SendFuture> = VecDeque::with_capacity(IN_FLIGHT);
    let started = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while let Some(chunk) = readings.recv().await {
        for r in chunk? {
            if let Some(rate) = args.rate {
                let due = started + weir_common::time::pace(sent, rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let mut payload = Vec::with_capacity(160);
            encode_reading(&r, &mut payload);
            let message = Message {
                payload,
                partition_key: Some(r.sensor_id.to_string()),
                event_time: u64::try_from(r.timestamp_ms).ok(),
                ..Message::default()
            };
            let receipt = producer
                .send_non_blocking(message)
                .await
                .map_err(|e| anyhow::anyhow!("cannot publish to {topic}: {}", error_chain(&e)))?;
            in_flight.push_back(receipt);
            sent += 1;
            while in_flight.len() >= IN_FLIGHT {
                confirm(&mut in_flight, &topic).await?;
                acked += 1;
            }
            display.maybe_draw(sent, acked, started);
        }
    }
    producer
        .send_batch()
        .await
        .map_err(|e| anyhow::anyhow!("cannot publish to {topic}: {}", error_chain(&e)))?;
    while !in_flight.is_empty() {
        confirm(&mut in_flight, &topic).await?;
        acked += 1;
        display.maybe_draw(sent, acked, started);
    }
    display.clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "weir produce: {} messages to {topic} in {secs:.1} s ({}/s)",
        group(acked),
        group((acked as f64 / secs) as u64)
    );
    Ok(())
}

/// Waits for the oldest send's receipt.
async fn confirm(in_flight: &mut VecDeque<SendFuture>, topic: &str) -> anyhow::Result<()> {
    if let Some(receipt) = in_flight.pop_front() {
        receipt.await.map_err(|e| {
            anyhow::anyhow!(
                "the broker did not take a message for {topic}: {}",
                error_chain(&e)
            )
        })?;
    }
    Ok(())
}

/// The live rate line (on a terminal), redrawn every 250 ms.
struct Display {
    terminal: bool,
    last: Instant,
    last_acked: u64,
}

impl Display {
    fn new(quiet: bool) -> Self {
        Display {
            terminal: !quiet && std::io::stderr().is_terminal(),
            last: Instant::now(),
            last_acked: 0,
        }
    }

    fn maybe_draw(&mut self, sent: u64, acked: u64, started: Instant) {
        let elapsed = self.last.elapsed();
        if !self.terminal || elapsed < Duration::from_millis(250) {
            return;
        }
        let rate = (acked - self.last_acked) as f64 / elapsed.as_secs_f64();
        self.last = Instant::now();
        self.last_acked = acked;
        eprint!(
            "\r\x1b[2Kproduced {} │ confirmed {} │ {}/s │ {:.0} s",
            group(sent),
            group(acked),
            group(rate as u64),
            started.elapsed().as_secs_f64()
        );
    }

    fn clear(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}
