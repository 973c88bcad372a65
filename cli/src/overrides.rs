//! Command-line flags that override a job spec.
//!
//! The spec (a file, or the built-in default) is loaded first; each flag
//! then replaces one part of it, and the result is validated as a whole, so
//! a flag that makes no sense with the spec (`--records` with file inputs)
//! is an error naming the flag.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use weir_common::spec::{
    AvroFilesSpec, ByteSize, ClickHouseSinkSpec, Duration, JobSpec, JsonlSinkSpec, PulsarSourceSpec,
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
    /// Dead-letter file (JSON lines).
    #[arg(long, value_name = "FILE")]
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
    /// Address the checkpoint bucket in the path (S3-compatible servers).
    #[arg(long)]
    pub s3_path_style: bool,
    /// Start from this checkpoint or savepoint (its number in the store)
    /// instead of the latest completed one.
    #[arg(long, value_name = "N")]
    pub restore_from: Option<u64>,
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
        if let Some(d) = self.checkpoint_interval {
            spec.checkpoint.interval = d;
        }
        if self.s3_path_style {
            spec.checkpoint.s3_path_style = true;
        }
        if let Some(n) = self.restore_from {
            spec.checkpoint.restore_from = Some(n);
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
}
