//! Command-line flags that override a job spec.
//!
//! The spec (a file, or the built-in default) is loaded first; each flag
//! then replaces one part of it, and the result is validated as a whole, so
//! a flag that makes no sense with the spec (`--records` with file inputs)
//! is an error naming the flag.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use weir_common::checkpoint::{CheckpointRef, StoreLocation};
use weir_common::spec::{
    AvroFilesSpec, ByteSize, ClickHouseSinkSpec, Duration, JobSpec, JsonlSinkSpec,
    PulsarSourceSpec, StartFrom,
};

#[derive(Args, Debug, Default, Clone)]
pub struct JobFlags {
    /// Job spec (YAML); flags below override it. Default: the built-in job.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Read this Avro container file as one partition (repeatable); the job
    /// ends when all inputs are read.
    #[arg(long = "input", value_name = "FILE.avro")]
    pub inputs: Vec<PathBuf>,
    /// Write JSON lines into this directory.
    #[arg(long, value_name = "DIR", conflicts_with = "clickhouse")]
    pub output: Option<PathBuf>,
    /// Write to ClickHouse at this HTTP URL (e.g. http://127.0.0.1:8123).
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    /// ClickHouse database (with --clickhouse or a ClickHouse spec).
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Create the ClickHouse database and tables if they do not exist.
    #[arg(long)]
    pub create_tables: bool,
    /// Rows per ClickHouse insert.
    #[arg(long, value_name = "N")]
    pub batch_rows: Option<usize>,
    /// Working directory for state (RocksDB) and, unless set, dead letters.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Generator: stop after this many readings (closes every window).
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
    /// Generator: produce readings as fast as possible instead of in real time.
    #[arg(long)]
    pub fast: bool,
    /// In-memory window state before spilling to RocksDB (e.g. 64MiB).
    #[arg(long, value_name = "SIZE")]
    pub memory_budget: Option<ByteSize>,
    /// At most this many records per second per partition.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<f64>,
    /// Dead-letter directory (JSON-lines part files).
    #[arg(long, value_name = "DIR")]
    pub dead_letters: Option<PathBuf>,
    /// Read a Pulsar topic at this service URL (pulsar:// or pulsar+ssl://).
    #[arg(long, value_name = "URL", conflicts_with = "inputs")]
    pub pulsar: Option<String>,
    /// The Pulsar topic to read (with --pulsar or a Pulsar spec).
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// The Pulsar subscription (default: weir-<job name>).
    #[arg(long, value_name = "NAME")]
    pub subscription: Option<String>,
    /// End a Pulsar partition after no message arrived for this long,
    /// closing and writing every open window (for backfills and tests).
    #[arg(long, value_name = "DURATION")]
    pub until_idle: Option<Duration>,
    /// Environment variable holding a Pulsar authentication token.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Where checkpoints go: a directory or s3://BUCKET/PREFIX (default:
    /// `checkpoints` under the data directory).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub checkpoint_store: Option<String>,
    /// Time between checkpoints (e.g. 10s; default 60s).
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_interval: Option<Duration>,
    /// Whether to take a checkpoint as soon as every task has closed a
    /// window, so that its rows appear at once (default true).
    #[arg(long, value_name = "BOOL")]
    pub checkpoint_on_window_close: Option<bool>,
    /// Address the checkpoint bucket in the path (S3-compatible servers).
    #[arg(long)]
    pub s3_path_style: bool,
    /// Start from this checkpoint or savepoint instead of the latest
    /// completed one: its number in the job's store, or its path
    /// (`STORE/JOB/chk-N`, which sets the store when none is given).
    #[arg(long, value_name = "N|PATH")]
    pub restore_from: Option<String>,
    /// Where the inputs start: `checkpoint` (the latest completed one, the
    /// default), or ignoring the checkpoints `earliest` (every partition
    /// from its first record) or `latest` (Pulsar: new messages only).
    #[arg(long, value_name = "checkpoint|earliest|latest")]
    pub start_from: Option<StartFrom>,
}

impl JobFlags {
    /// The spec with every flag applied, validated.
    pub fn resolve(&self) -> anyhow::Result<JobSpec> {
        let mut spec = match &self.spec {
            Some(path) => JobSpec::load(path)?,
            None => JobSpec::default(),
        };
        if !self.inputs.is_empty() {
            spec.source.generator = None;
            spec.source.avro_files = Some(AvroFilesSpec {
                paths: self.inputs.clone(),
            });
        }
        if let Some(url) = &self.pulsar {
            spec.source.generator = None;
            spec.source.avro_files = None;
            spec.source
                .pulsar
                .get_or_insert_with(PulsarSourceSpec::default)
                .url = url.clone();
        }
        if self.topic.is_some()
            || self.subscription.is_some()
            || self.until_idle.is_some()
            || self.token_env.is_some()
        {
            let Some(p) = spec.source.pulsar.as_mut() else {
                bail!(
                    "--topic, --subscription, --until-idle and --token-env need a Pulsar source (--pulsar URL)"
                );
            };
            if let Some(v) = &self.token_env {
                p.token_env = Some(v.clone());
            }
            if let Some(t) = &self.topic {
                p.topic = t.clone();
            }
            if let Some(s) = &self.subscription {
                p.subscription = Some(s.clone());
            }
            if let Some(d) = self.until_idle {
                p.until_idle = Some(d);
            }
        }
        if let Some(dir) = &self.output {
            spec.sink.clickhouse = None;
            spec.sink.jsonl = Some(JsonlSinkSpec { dir: dir.clone() });
        }
        if let Some(url) = &self.clickhouse {
            spec.sink.jsonl = None;
            let ch = spec
                .sink
                .clickhouse
                .get_or_insert_with(ClickHouseSinkSpec::default);
            ch.url = url.clone();
        }
        if self.database.is_some() || self.create_tables || self.batch_rows.is_some() {
            let Some(ch) = spec.sink.clickhouse.as_mut() else {
                bail!("--database, --create-tables and --batch-rows need a ClickHouse sink (--clickhouse URL)");
            };
            if let Some(db) = &self.database {
                ch.database = db.clone();
            }
            if self.create_tables {
                ch.create_tables = true;
            }
            if let Some(n) = self.batch_rows {
                ch.batch_rows = n;
            }
        }
        if let Some(dir) = &self.data_dir {
            spec.state.dir = dir.clone();
        }
        if let Some(store) = &self.checkpoint_store {
            spec.checkpoint.store = Some(store.clone());
        }
        if let Some(on) = self.checkpoint_on_window_close {
            spec.checkpoint.on_window_close = on;
        }
        if let Some(d) = self.checkpoint_interval {
            spec.checkpoint.interval = d;
        }
        if self.s3_path_style {
            spec.checkpoint.s3_path_style = true;
        }
        if let Some(from) = &self.restore_from {
            spec.checkpoint.restore_from = Some(restore_from(&mut spec, from)?);
        }
        if let Some(start) = self.start_from {
            spec.source.start_from = start;
        }
        if self.records.is_some() || self.fast {
            let Some(g) = spec.source.generator.as_mut() else {
                bail!("--records and --fast apply to the generator source, not to --input files");
            };
            if let Some(n) = self.records {
                g.records = Some(n);
            }
            if self.fast {
                g.realtime = false;
            }
        }
        if let Some(b) = self.memory_budget {
            spec.state.memory_budget = b;
        }
        if let Some(r) = self.rate_limit {
            spec.source.rate_limit = Some(r);
        }
        if let Some(p) = &self.dead_letters {
            spec.dead_letter.path = Some(p.clone());
        }
        spec.validate()
            .context("invalid job (after applying command-line flags)")?;
        Ok(spec)
    }
}

/// The checkpoint `--restore-from` names: a number, or the path of a
/// checkpoint directory in the job's store (`STORE/JOB/chk-N`, optionally
/// with `/_metadata`). A path sets the store when none is given; a path in
/// another store than the one given is refused (a job restores from its own
/// store, whose retention knows the files the checkpoint references).
fn restore_from(spec: &mut JobSpec, from: &str) -> anyhow::Result<u64> {
    let named = CheckpointRef::parse(from, &spec.name)
        .map_err(|e| anyhow::anyhow!("--restore-from {e}"))?;
    let Some(store) = named.store else {
        return Ok(named.id);
    };
    match &spec.checkpoint.store {
        Some(given) if !StoreLocation::parse(given).is_ok_and(|g| g.same_as(&store)) => bail!(
            "--restore-from {from} is in the store {store}, but the job's checkpoint store is {given}: \
             a job restores from its own store (drop --checkpoint-store, or point it at {store})"
        ),
        Some(_) => {}
        None => spec.checkpoint.store = Some(store.to_string()),
    }
    Ok(named.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::spec::{SinkKind, SourceKind};

    #[test]
    fn flags_override_the_default_job() {
        let flags = JobFlags {
            inputs: vec!["a.avro".into()],
            clickhouse: Some("http://127.0.0.1:1".into()),
            database: Some("t1".into()),
            batch_rows: Some(10),
            ..JobFlags::default()
        };
        let spec = flags.resolve().expect("valid");
        assert!(matches!(spec.source.kind(), Ok(SourceKind::AvroFiles(f)) if f.paths.len() == 1));
        let Ok(SinkKind::ClickHouse(c)) = spec.sink.kind() else {
            panic!("clickhouse sink")
        };
        assert_eq!((c.database.as_str(), c.batch_rows), ("t1", 10));
    }

    #[test]
    fn pulsar_flags_make_a_pulsar_source() {
        let flags = JobFlags {
            pulsar: Some("pulsar://127.0.0.1:6650".into()),
            topic: Some("readings".into()),
            until_idle: Some(Duration::from_secs(3)),
            token_env: Some("PULSAR_TOKEN".into()),
            ..JobFlags::default()
        };
        let spec = flags.resolve().expect("valid");
        let Ok(SourceKind::Pulsar(p)) = spec.source.kind() else {
            panic!("pulsar source")
        };
        assert_eq!(p.topic, "readings");
        assert_eq!(p.until_idle, Some(Duration::from_secs(3)));
        assert_eq!(p.token_env.as_deref(), Some("PULSAR_TOKEN"));
        let bad = JobFlags {
            pulsar: Some("http://x".into()),
            ..JobFlags::default()
        };
        assert!(format!("{:#}", bad.resolve().unwrap_err()).contains("source.pulsar.url"));
    }

    #[test]
    fn flags_that_do_not_fit_are_errors() {
        let flags = JobFlags {
            inputs: vec!["a.avro".into()],
            records: Some(5),
            ..JobFlags::default()
        };
        assert!(flags
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--records"));
        let flags = JobFlags {
            database: Some("x".into()),
            ..JobFlags::default()
        };
        assert!(flags
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--database"));
        let flags = JobFlags {
            topic: Some("t".into()),
            ..JobFlags::default()
        };
        assert!(flags
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--pulsar"));
        let flags = JobFlags {
            clickhouse: Some("nope".into()),
            ..JobFlags::default()
        };
        let err = format!("{:#}", flags.resolve().unwrap_err());
        assert!(err.contains("sink.clickhouse.url"), "{err}");
    }
    #[test]
    fn restore_from_takes_a_number_or_a_checkpoint_path() {
        let mut spec = JobFlags::default().resolve().expect("valid");
        assert_eq!(restore_from(&mut spec, "7").expect("number"), 7);
        assert_eq!(spec.checkpoint.store, None);

        let n = restore_from(
            &mut spec,
            "/data/store/iot-sensor-aggregation/chk-12/_metadata",
        )
        .expect("path");
        assert_eq!(n, 12);
        assert_eq!(spec.checkpoint.store.as_deref(), Some("/data/store"));
        // The same store given again is fine; another one is refused.
        assert_eq!(
            restore_from(&mut spec, "/data/store/iot-sensor-aggregation/chk-3/").expect("same"),
            3
        );
        let err = restore_from(&mut spec, "/other/iot-sensor-aggregation/chk-3").unwrap_err();
        assert!(format!("{err}").contains("its own store"), "{err}");

        let mut s3 = JobFlags::default().resolve().expect("valid");
        let n = restore_from(&mut s3, "s3://bucket/prefix/iot-sensor-aggregation/chk-4")
            .expect("s3 path");
        assert_eq!(n, 4);
        assert_eq!(s3.checkpoint.store.as_deref(), Some("s3://bucket/prefix"));

        for bad in [
            "chk-x",
            "/s/iot-sensor-aggregation/cp-1",
            "/s/other-job/chk-1",
        ] {
            let mut spec = JobFlags::default().resolve().expect("valid");
            assert!(restore_from(&mut spec, bad).is_err(), "{bad}");
        }
    }
}
