//! The job spec: one YAML file that says what the job reads, how it windows,
//! and where it writes.
//!
//! Every section has defaults, and the defaults are the contract's job (see
//! `contract/`), so an empty file — or no file — runs it. Unknown keys and
//! invalid values are errors that name the key path (`sink.clickhouse.url`)
//! and say what is allowed. Secrets never appear here: the spec names the
//! environment variable that holds them.

pub mod checkpoint;
pub mod restart;
pub mod units;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use checkpoint::CheckpointSpec;
pub use restart::RestartSpec;
pub use units::{ByteSize, Duration};

/// A spec that cannot be used, with the key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read job spec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        origin: "job spec".into(),
        key: key.into(),
        message: message.into(),
    }
}

/// The whole job.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSpec {
    /// Names the job in logs, metrics and output locations.
    pub name: String,
    pub source: SourceSpec,
    /// Writer schema (`.avsc`) of datums that do not carry their own, such as
    /// Pulsar messages. Avro container files carry theirs. Default: the
    /// contract schema.
    pub schema: Option<PathBuf>,
    /// The key field. The contract job keys by device.
    pub key: KeyField,
    pub event_time: EventTimeSpec,
    pub window: WindowSpec,
    /// Which aggregate tables the job produces.
    pub aggregates: Vec<Aggregate>,
    pub late: LateSpec,
    pub dead_letter: DeadLetterSpec,
    pub sink: SinkSpec,
    pub state: StateSpec,
    pub checkpoint: CheckpointSpec,
    /// What the coordinator does when a generation fails.
    pub restart: RestartSpec,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            name: "iot-sensor-aggregation".into(),
            source: SourceSpec::default(),
            schema: None,
            key: KeyField::SensorId,
            event_time: EventTimeSpec::default(),
            window: WindowSpec::default(),
            aggregates: vec![Aggregate::SensorsLocal, Aggregate::SensorAggregates1m],
            late: LateSpec::default(),
            dead_letter: DeadLetterSpec::default(),
            sink: SinkSpec::default(),
            state: StateSpec::default(),
            checkpoint: CheckpointSpec::default(),
            restart: RestartSpec::default(),
        }
    }
}

/// Where readings come from. Exactly one kind is set. When the whole
/// `source` section is absent the job reads the default generator; when it
/// is present, it must name its kind.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default)]
    pub generator: Option<GeneratorSpec>,
    /// Avro Object Container Files; each file is one partition, read in order.
    #[serde(default)]
    pub avro_files: Option<AvroFilesSpec>,
    /// A Pulsar topic; each partition is one partition of the job.
    #[serde(default)]
    pub pulsar: Option<PulsarSourceSpec>,
    /// Upper bound on records per second per partition (unbounded when
    /// absent): for backfills that must not swamp the sink.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Records per batch between the source and the window operator.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Where the inputs start: from the latest completed checkpoint
    /// (the default), or ignoring the checkpoints, from each partition's
    /// first or (Pulsar) next message.
    #[serde(default)]
    pub start_from: StartFrom,
}

/// Where a job's inputs start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// From the latest completed checkpoint (its state and positions); with
    /// none, files and generators from their beginning and Pulsar from the
    /// subscription's position. A checkpointed position that does not fit
    /// its input stops the job.
    #[default]
    Checkpoint,
    /// The checkpoints are not restored: every partition from its first
    /// record (Pulsar: the subscription is reset to the earliest message).
    Earliest,
    /// The checkpoints are not restored: Pulsar partitions from the next
    /// message published (the subscription is reset to the end).
    Latest,
}

impl std::str::FromStr for StartFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "checkpoint" => Ok(StartFrom::Checkpoint),
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            _ => Err(format!("`{s}`: expected checkpoint, earliest or latest")),
        }
    }
}

fn default_batch_size() -> usize {
    1024
}

impl Default for SourceSpec {
    fn default() -> Self {
        SourceSpec {
            generator: Some(GeneratorSpec::default()),
            avro_files: None,
            pulsar: None,
            rate_limit: None,
            batch_size: default_batch_size(),
            start_from: StartFrom::default(),
        }
    }
}

/// The kinds of source, once validated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceKind<'a> {
    Generator(&'a GeneratorSpec),
    AvroFiles(&'a AvroFilesSpec),
    Pulsar(&'a PulsarSourceSpec),
}

impl SourceSpec {
    /// The one configured source kind (validation guarantees exactly one).
    pub fn kind(&self) -> Result<SourceKind<'_>, SpecError> {
        match (&self.generator, &self.avro_files, &self.pulsar) {
            (Some(g), None, None) => Ok(SourceKind::Generator(g)),
            (None, Some(f), None) => Ok(SourceKind::AvroFiles(f)),
            (None, None, Some(p)) => Ok(SourceKind::Pulsar(p)),
            _ => Err(invalid(
                "source",
                "set exactly one of `generator`, `avro_files` or `pulsar`",
            )),
        }
    }
}

/// A deterministic stream of contract readings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorSpec {
    /// Distinct devices (sensor ids `1..=devices`).
    pub devices: u32,
    /// Readings per second of event time, over all partitions.
    pub rate: f64,
    /// Readings arrive up to this much later than their event time
    /// (uniformly); more than `event_time.out_of_orderness` makes late data.
    pub disorder: Duration,
    pub seed: u64,
    /// Total readings; unbounded when absent.
    pub records: Option<u64>,
    /// Event time of the first reading, epoch ms. Default: the wall clock
    /// when `realtime`, else 2025-10-10T00:00:00Z (so files are reproducible).
    pub start_ms: Option<i64>,
    /// Emit readings at `rate` per wall-clock second (a live feed) instead of
    /// as fast as the job can take them.
    pub realtime: bool,
    /// Partitions the devices are spread over (`sensorId % partitions`).
    pub partitions: u32,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        GeneratorSpec {
            devices: 500,
            rate: 30_000.0,
            disorder: Duration::from_secs(2),
            seed: 7,
            records: None,
            start_ms: None,
            realtime: true,
            partitions: 2,
        }
    }
}

/// Event time of a generator that is not paced by the wall clock.
pub const GENERATOR_EPOCH_MS: i64 = 1_760_054_400_000;

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AvroFilesSpec {
    pub paths: Vec<PathBuf>,
}

/// A Pulsar topic. Weir keeps each partition's position (a MessageId)
/// itself, so that a restart resumes exactly where the output ends; it
/// acknowledges the durable `subscription` cumulatively up to the positions
/// it has recorded, which keeps the topic's backlog meaningful.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PulsarSourceSpec {
    /// Service URL: `pulsar://host:6650`, or `pulsar+ssl://host:6651` for TLS.
    pub url: String,
    /// The topic, partitioned or not (a plain topic is one partition).
    pub topic: String,
    /// The durable subscription Weir reads and acknowledges on.
    /// Default: `weir-<job name>`.
    pub subscription: Option<String>,
    /// Environment variable holding a token for `token` authentication
    /// (unset: no authentication).
    pub token_env: Option<String>,
    /// PEM file of the certificate authorities that sign the broker's TLS
    /// certificate (default: the usual public roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (for test clusters only).
    pub tls_allow_insecure: bool,
    /// Take the writer schema from the topic's schema in Pulsar's schema
    /// registry instead of the job's `schema`.
    pub schema_from_registry: bool,
    /// Treat a partition that has had no message for this long as ended:
    /// every open window is closed and written. For backfills and tests;
    /// absent, the job reads until it is stopped.
    pub until_idle: Option<Duration>,
    /// Messages the broker may send ahead of processing, per partition.
    pub receiver_queue: u32,
    /// How often the topic is checked for new partitions.
    pub discovery_interval: Duration,
}

impl Default for PulsarSourceSpec {
    fn default() -> Self {
        PulsarSourceSpec {
            url: "pulsar://127.0.0.1:6650".into(),
            topic: "persistent://public/default/iot-sensor-data".into(),
            subscription: None,
            token_env: None,
            tls_ca_file: None,
            tls_allow_insecure: false,
            schema_from_registry: false,
            until_idle: None,
            receiver_queue: 1000,
            discovery_interval: Duration::from_secs(30),
        }
    }
}

impl PulsarSourceSpec {
    /// The subscription name for a job.
    pub fn subscription_for(&self, job: &str) -> String {
        self.subscription
            .clone()
            .unwrap_or_else(|| format!("weir-{job}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum KeyField {
    #[serde(rename = "sensorId")]
    SensorId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum EventTimeField {
    #[serde(rename = "timestamp")]
    Timestamp,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventTimeSpec {
    pub field: EventTimeField,
    /// How far behind the highest event time seen a reading may still arrive.
    pub out_of_orderness: Duration,
    /// A partition without data for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Where the event time comes from when a datum's `timestamp` is 0 or
    /// negative (not set by the device). Pulsar sources only.
    pub fallback: EventTimeFallback,
}

/// Event time for readings whose own timestamp is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventTimeFallback {
    /// None: such readings are dead letters (out of range).
    #[default]
    None,
    /// The message's event time, set by its producer (when it has one).
    MessageEventTime,
    /// The time the broker received the message.
    PublishTime,
}

impl Default for EventTimeSpec {
    fn default() -> Self {
        EventTimeSpec {
            field: EventTimeField::Timestamp,
            out_of_orderness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            fallback: EventTimeFallback::None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowSpec {
    /// Tumbling window size; a whole number of seconds.
    pub size: Duration,
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            size: Duration::from_secs(60),
        }
    }
}

impl WindowSpec {
    pub fn size_ms(&self) -> i64 {
        self.size.as_millis() as i64
    }
}

/// An aggregate table of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Aggregate {
    #[serde(rename = "sensors_local")]
    SensorsLocal,
    #[serde(rename = "sensor_aggregates_1m")]
    SensorAggregates1m,
}

/// What happens to readings that arrive after their window closed. They are
/// never dropped silently: every policy counts them in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// Written by the sink (the `late_readings` table or JSONL file).
    Output,
    /// Written as JSON-lines part files into the directory `late.path`.
    File,
    /// Counted and logged (rate-limited), not stored.
    Log,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LateSpec {
    pub policy: LatePolicy,
    pub path: Option<PathBuf>,
}

impl Default for LateSpec {
    fn default() -> Self {
        LateSpec {
            policy: LatePolicy::Output,
            path: None,
        }
    }
}

/// Where undecodable input is kept.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSpec {
    /// Directory of JSON-lines part files, one per epoch and task (see
    /// the sink). Default: `dead_letters/` in the JSONL output directory,
    /// or in the state directory for other sinks.
    pub path: Option<PathBuf>,
    /// Payload bytes kept per entry (the full length is always recorded).
    pub max_payload: ByteSize,
}

impl Default for DeadLetterSpec {
    fn default() -> Self {
        DeadLetterSpec {
            path: None,
            max_payload: ByteSize(64 << 10),
        }
    }
}

/// Where results go. Exactly one kind is set; when the whole `sink` section
/// is absent the job writes JSON lines to `weir-output/`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    #[serde(default)]
    pub jsonl: Option<JsonlSinkSpec>,
    #[serde(default)]
    pub clickhouse: Option<ClickHouseSinkSpec>,
}

impl Default for SinkSpec {
    fn default() -> Self {
        SinkSpec {
            jsonl: Some(JsonlSinkSpec::default()),
            clickhouse: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SinkKind<'a> {
    Jsonl(&'a JsonlSinkSpec),
    ClickHouse(&'a ClickHouseSinkSpec),
}

impl SinkSpec {
    pub fn kind(&self) -> Result<SinkKind<'_>, SpecError> {
        match (&self.jsonl, &self.clickhouse) {
            (Some(j), None) => Ok(SinkKind::Jsonl(j)),
            (None, Some(c)) => Ok(SinkKind::ClickHouse(c)),
            _ => Err(invalid(
                "sink",
                "set exactly one of `jsonl` or `clickhouse`",
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlSinkSpec {
    /// Directory with a directory of part files per output table
    /// (`<table>/part-<epoch>-kg<start>-<end>.jsonl`).
    pub dir: PathBuf,
}

impl Default for JsonlSinkSpec {
    fn default() -> Self {
        JsonlSinkSpec {
            dir: PathBuf::from("weir-output"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSinkSpec {
    /// HTTP interface, e.g. `http://clickhouse:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    /// Environment variable holding the password (unset: no password).
    pub password_env: String,
    pub tables: TableNames,
    /// Create the database and tables (`CREATE ... IF NOT EXISTS`) at start.
    pub create_tables: bool,
    /// Rows per insert when an epoch is committed. (Rows are written when
    /// the checkpoint of their epoch completes, so there is no time-based
    /// flush: `batch_interval` of earlier versions is gone.)
    pub batch_rows: usize,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Timeout of one request to ClickHouse.
    pub request_timeout: Duration,
}

impl Default for ClickHouseSinkSpec {
    fn default() -> Self {
        ClickHouseSinkSpec {
            url: "http://127.0.0.1:8123".into(),
            database: "benchmark".into(),
            user: "default".into(),
            password_env: "CLICKHOUSE_PASSWORD".into(),
            tables: TableNames::default(),
            create_tables: false,
            batch_rows: 1000,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableNames {
    pub sensors_local: String,
    pub sensor_aggregates_1m: String,
    pub late_readings: String,
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames {
            sensors_local: "sensors_local".into(),
            sensor_aggregates_1m: "sensor_aggregates_1m".into(),
            late_readings: "late_readings".into(),
        }
    }
}

impl TableNames {
    pub fn get(&self, table: crate::rows::Table) -> &str {
        match table {
            crate::rows::Table::SensorsLocal => &self.sensors_local,
            crate::rows::Table::SensorAggregates => &self.sensor_aggregates_1m,
            crate::rows::Table::LateReadings => &self.late_readings,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSpec {
    /// Working directory: RocksDB state, and dead letters unless configured.
    pub dir: PathBuf,
    /// In-memory window accumulators beyond this are spilled to RocksDB.
    pub memory_budget: ByteSize,
    /// Number of key groups: the upper bound of window parallelism.
    pub max_parallelism: u16,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSpec {
            dir: PathBuf::from("weir-data"),
            // A minute of state is about 390 bytes per device: this keeps
            // the windows of half a million devices in memory. Beyond it,
            // state goes to RocksDB at some cost (docs/performance.md).
            memory_budget: ByteSize(256 << 20),
            max_parallelism: 128,
        }
    }
}

impl JobSpec {
    /// Parses a spec from YAML; `origin` names it in errors (a file path).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let with_origin = |key: String, message: String| SpecError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        // An empty file is the all-defaults spec.
        if text.trim().is_empty() {
            return Ok(JobSpec::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let spec: JobSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            let location = match inner.location() {
                Some(l) if !message.contains(" at line ") => {
                    format!(" (line {}, column {})", l.line(), l.column())
                }
                _ => String::new(),
            };
            let key = if key == "." {
                "(top level)".to_owned()
            } else {
                key
            };
            with_origin(key, format!("{message}{location}"))
        })?;
        spec.validate().map_err(|e| match e {
            SpecError::Invalid { key, message, .. } => with_origin(key, message),
            other => other,
        })?;
        Ok(spec)
    }

    /// Reads and validates a spec file. Relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut spec = Self::from_yaml(&text, &path.display().to_string())?;
        if let Some(base) = path.parent() {
            spec.resolve_paths(base);
        }
        Ok(spec)
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(files) = &mut self.source.avro_files {
            files.paths.iter_mut().for_each(fix);
        }
        if let Some(schema) = &mut self.schema {
            fix(schema);
        }
        if let Some(ca) = self
            .source
            .pulsar
            .as_mut()
            .and_then(|p| p.tls_ca_file.as_mut())
        {
            fix(ca);
        }
        if let Some(p) = &mut self.late.path {
            fix(p);
        }
        if let Some(p) = &mut self.dead_letter.path {
            fix(p);
        }
        if let Some(j) = &mut self.sink.jsonl {
            fix(&mut j.dir);
        }
        fix(&mut self.state.dir);
    }

    /// Checks every value; the error names the first wrong key.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        self.checkpoint.validate()?;
        self.restart.validate()?;
        match self.source.kind()? {
            SourceKind::Generator(g) => {
                if g.devices == 0 {
                    return Err(invalid("source.generator.devices", "must be at least 1"));
                }
                if !(g.rate.is_finite() && g.rate > 0.0) {
                    return Err(invalid(
                        "source.generator.rate",
                        "must be a positive number of readings per second",
                    ));
                }
                if g.partitions == 0 || g.partitions > 4096 {
                    return Err(invalid(
                        "source.generator.partitions",
                        "must be between 1 and 4096",
                    ));
                }
                if g.partitions > g.devices {
                    return Err(invalid(
                        "source.generator.partitions",
                        format!(
                            "must not exceed devices ({}), or some partitions would be empty",
                            g.devices
                        ),
                    ));
                }
            }
            SourceKind::AvroFiles(f) => {
                if f.paths.is_empty() {
                    return Err(invalid(
                        "source.avro_files.paths",
                        "must list at least one file",
                    ));
                }
            }
            SourceKind::Pulsar(p) => validate_pulsar(p, self.schema.is_some())?,
        }
        if self.event_time.fallback != EventTimeFallback::None && self.source.pulsar.is_none() {
            return Err(invalid(
                "event_time.fallback",
                "only Pulsar messages carry an event or publish time; use `none` with this source",
            ));
        }
        if let Some(rate) = self.source.rate_limit {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(invalid(
                    "source.rate_limit",
                    "must be a positive number of records per second",
                ));
            }
        }
        if self.source.start_from == StartFrom::Latest && self.source.pulsar.is_none() {
            return Err(invalid(
                "source.start_from",
                "`latest` applies to Pulsar sources; files and generators have no next message",
            ));
        }
        if self.source.batch_size == 0 || self.source.batch_size > 1 << 20 {
            return Err(invalid(
                "source.batch_size",
                "must be between 1 and 1048576",
            ));
        }
        let size = self.window.size.as_millis();
        if size == 0 || !size.is_multiple_of(1000) {
            return Err(invalid(
                "window.size",
                "must be a positive whole number of seconds (the output's DateTime columns have second precision)",
            ));
        }
        if self.event_time.idle_timeout.as_millis() == 0 {
            return Err(invalid("event_time.idle_timeout", "must be positive"));
        }
        if self.aggregates.is_empty() {
            return Err(invalid(
                "aggregates",
                "must list at least one of `sensors_local`, `sensor_aggregates_1m`",
            ));
        }
        for (i, a) in self.aggregates.iter().enumerate() {
            if self.aggregates[..i].contains(a) {
                return Err(invalid("aggregates", format!("lists {a:?} twice")));
            }
        }
        match (self.late.policy, &self.late.path) {
            (LatePolicy::File, None) => {
                return Err(invalid(
                    "late.path",
                    "is required when late.policy is `file`",
                ))
            }
            (LatePolicy::Output | LatePolicy::Log, Some(_)) => {
                return Err(invalid("late.path", "is only used with late.policy `file`"))
            }
            _ => {}
        }
        match self.sink.kind()? {
            SinkKind::Jsonl(_) => {}
            SinkKind::ClickHouse(c) => validate_clickhouse(c)?,
        }
        if self.state.max_parallelism == 0 || self.state.max_parallelism > 32_768 {
            return Err(invalid(
                "state.max_parallelism",
                "must be between 1 and 32768",
            ));
        }
        if self.state.memory_budget.0 < 1024 {
            return Err(invalid("state.memory_budget", "must be at least 1KiB"));
        }
        Ok(())
    }

    /// The names of the job's input partitions, by input index, when the
    /// spec fixes them: a file's path, or `generator-<n>`. A Pulsar topic's
    /// partitions are found when the job starts (`None`).
    pub fn partition_names(&self) -> Result<Option<Vec<String>>, SpecError> {
        Ok(match self.source.kind()? {
            SourceKind::AvroFiles(f) => {
                Some(f.paths.iter().map(|p| p.display().to_string()).collect())
            }
            SourceKind::Generator(g) => Some(
                (0..g.partitions)
                    .map(|p| format!("generator-{p}"))
                    .collect(),
            ),
            SourceKind::Pulsar(_) => None,
        })
    }

    /// The directory dead letters go to (see [`DeadLetterSpec::path`]).
    pub fn dead_letter_dir(&self) -> PathBuf {
        if let Some(p) = &self.dead_letter.path {
            return p.clone();
        }
        match &self.sink.jsonl {
            Some(j) => j.dir.join("dead_letters"),
            None => self.state.dir.join("dead_letters"),
        }
    }
}

fn validate_pulsar(p: &PulsarSourceSpec, has_schema: bool) -> Result<(), SpecError> {
    let url = p.url.trim();
    let rest = url
        .strip_prefix("pulsar://")
        .or_else(|| url.strip_prefix("pulsar+ssl://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {}
        _ => {
            return Err(invalid(
                "source.pulsar.url",
                format!(
                "`{url}` is not a pulsar:// or pulsar+ssl:// URL such as pulsar://127.0.0.1:6650"
            ),
            ))
        }
    }
    let topic = p.topic.trim();
    let name = topic
        .strip_prefix("persistent://")
        .or_else(|| topic.strip_prefix("non-persistent://"))
        .unwrap_or(topic);
    if name.is_empty() || name.contains(char::is_whitespace) || name.ends_with('/') {
        return Err(invalid(
            "source.pulsar.topic",
            format!(
                "`{topic}` is not a topic name such as persistent://public/default/iot-sensor-data"
            ),
        ));
    }
    if name.split('/').count() != 1 && name.split('/').count() != 3 {
        return Err(invalid(
            "source.pulsar.topic",
            format!("`{topic}` must be `name` or `tenant/namespace/name`, optionally with persistent://"),
        ));
    }
    if p.subscription
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return Err(invalid("source.pulsar.subscription", "must not be empty"));
    }
    if p.token_env.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err(invalid(
            "source.pulsar.token_env",
            "must name an environment variable",
        ));
    }
    if p.tls_allow_insecure {
        // The `pulsar` crate on rustls verifies certificates whatever it is
        // told: accepting the key would promise what does not happen.
        return Err(invalid(
            "source.pulsar.tls_allow_insecure",
            "is not supported: certificates are always verified; give the broker's CA in tls_ca_file",
        ));
    }
    if p.tls_ca_file.is_some() && !url.starts_with("pulsar+ssl://") {
        return Err(invalid(
            "source.pulsar.url",
            "TLS settings need a pulsar+ssl:// URL",
        ));
    }
    if p.schema_from_registry && has_schema {
        return Err(invalid(
            "schema",
            "set either `schema` or `source.pulsar.schema_from_registry`, not both",
        ));
    }
    if p.until_idle.is_some_and(|d| d.as_millis() == 0) {
        return Err(invalid("source.pulsar.until_idle", "must be positive"));
    }
    if p.receiver_queue == 0 || p.receiver_queue > 1_000_000 {
        return Err(invalid(
            "source.pulsar.receiver_queue",
            "must be between 1 and 1000000",
        ));
    }
    if p.discovery_interval.as_millis() < 100 {
        return Err(invalid(
            "source.pulsar.discovery_interval",
            "must be at least 100ms",
        ));
    }
    Ok(())
}

fn validate_clickhouse(c: &ClickHouseSinkSpec) -> Result<(), SpecError> {
    let url = c.url.trim();
    if url.starts_with("https://") {
        return Err(invalid(
            "sink.clickhouse.url",
            "https is not supported by this build; use http:// (for example via a TLS-terminating proxy)",
        ));
    }
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => {
            return Err(invalid(
                "sink.clickhouse.url",
                format!("`{url}` is not an http:// URL such as http://127.0.0.1:8123"),
            ))
        }
    }
    let ident_ok = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    if !ident_ok(&c.database) {
        return Err(invalid(
            "sink.clickhouse.database",
            "must be a plain identifier (letters, digits, underscore)",
        ));
    }
    for (key, name) in [
        (
            "sink.clickhouse.tables.sensors_local",
            &c.tables.sensors_local,
        ),
        (
            "sink.clickhouse.tables.sensor_aggregates_1m",
            &c.tables.sensor_aggregates_1m,
        ),
        (
            "sink.clickhouse.tables.late_readings",
            &c.tables.late_readings,
        ),
    ] {
        if !ident_ok(name) {
            return Err(invalid(
                key,
                "must be a plain identifier (letters, digits, underscore)",
            ));
        }
    }
    if c.batch_rows == 0 {
        return Err(invalid("sink.clickhouse.batch_rows", "must be at least 1"));
    }
    if c.retry_initial.as_millis() == 0 || c.retry_initial > c.retry_max {
        return Err(invalid(
            "sink.clickhouse.retry_initial",
            "must be positive and at most sink.clickhouse.retry_max",
        ));
    }
    if c.request_timeout.as_millis() == 0 {
        return Err(invalid(
            "sink.clickhouse.request_timeout",
            "must be positive",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> (String, String) {
        match JobSpec::from_yaml(yaml, "t.yaml") {
            Err(SpecError::Invalid { key, message, .. }) => (key, message),
            other => panic!("expected an error for {yaml:?}, got {other:?}"),
        }
    }

    #[test]
    fn empty_spec_is_the_contract_job() {
        let spec = JobSpec::from_yaml("", "t").expect("valid");
        assert_eq!(spec, JobSpec::default());
        assert_eq!(spec.window.size_ms(), 60_000);
        assert_eq!(spec.event_time.out_of_orderness, Duration::from_secs(5));
        assert_eq!(spec.event_time.idle_timeout, Duration::from_secs(30));
        assert_eq!(spec.state.max_parallelism, 128);
        assert_eq!(spec.aggregates.len(), 2);
        spec.validate().expect("default validates");
    }

    #[test]
    fn defaults_round_trip_through_yaml() {
        let text = serde_yaml::to_string(&JobSpec::default()).expect("serializes");
        assert_eq!(
            JobSpec::from_yaml(&text, "t").expect("parses"),
            JobSpec::default()
        );
    }

    #[test]
    fn full_spec_parses() {
        let spec = JobSpec::from_yaml(
            r#"
name: backfill
source:
  avro_files:
    paths: [a.avro, b.avro]
  rate_limit: 5000
event_time:
  out_of_orderness: 10s
  idle_timeout: 1m
window:
  size: 5m
aggregates: [sensors_local]
late:
  policy: file
  path: late
sink:
  clickhouse:
    url: http://ch:8123
    database: iot
    batch_rows: 500
state:
  memory_budget: 16MiB
  max_parallelism: 256
"#,
            "t",
        )
        .expect("valid");
        assert_eq!(spec.window.size_ms(), 300_000);
        assert_eq!(spec.late.policy, LatePolicy::File);
        assert!(matches!(spec.source.kind(), Ok(SourceKind::AvroFiles(f)) if f.paths.len() == 2));
        let Ok(SinkKind::ClickHouse(c)) = spec.sink.kind() else {
            panic!("clickhouse sink")
        };
        assert_eq!(c.database, "iot");
        assert_eq!(c.batch_rows, 500);
        assert_eq!(c.user, "default");
        assert_eq!(spec.state.memory_budget, ByteSize(16 << 20));
    }

    #[test]
    fn unknown_keys_are_named() {
        let (key, msg) = err("windw:\n  size: 1m\n");
        assert_eq!(key, "windw");
        assert!(msg.contains("unknown field `windw`"), "{msg}");
        assert!(msg.contains("window"), "lists allowed keys: {msg}");
        let (key, msg) = err("source:\n  generator:\n    devicez: 5\n");
        assert_eq!(key, "source.generator.devicez");
        assert!(
            msg.contains("unknown field `devicez`") && msg.contains("devices"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let cases: &[(&str, &str, &str)] = &[
            ("window:\n  size: 60\n", "window.size", "needs a unit"),
            (
                "window:\n  size: 1500ms\n",
                "window.size",
                "whole number of seconds",
            ),
            (
                "event_time:\n  out_of_orderness: soon\n",
                "event_time.out_of_orderness",
                "not a duration",
            ),
            ("key: deviceId\n", "key", "sensorId"),
            ("late:\n  policy: drop\n", "late.policy", "output"),
            ("late:\n  policy: file\n", "late.path", "required"),
            (
                "source:\n  generator:\n    devices: 0\n",
                "source.generator.devices",
                "at least 1",
            ),
            (
                "source:\n  generator:\n    devices: -3\n",
                "source.generator.devices",
                "expected u32",
            ),
            ("source:\n  rate_limit: 5\n", "source", "exactly one"),
            (
                "source:\n  generator: {}\n  avro_files:\n    paths: [x.avro]\n",
                "source",
                "exactly one",
            ),
            (
                "source:\n  avro_files:\n    paths: []\n",
                "source.avro_files.paths",
                "at least one",
            ),
            (
                "sink:\n  clickhouse:\n    url: ftp://x\n",
                "sink.clickhouse.url",
                "http://",
            ),
            (
                "sink:\n  clickhouse:\n    url: https://x\n",
                "sink.clickhouse.url",
                "https is not supported",
            ),
            (
                "sink:\n  clickhouse:\n    database: \"x; DROP\"\n",
                "sink.clickhouse.database",
                "identifier",
            ),
            (
                "sink:\n  jsonl: {}\n  clickhouse: {}\n",
                "sink",
                "exactly one",
            ),
            (
                "state:\n  max_parallelism: 0\n",
                "state.max_parallelism",
                "between 1 and 32768",
            ),
            (
                "state:\n  memory_budget: lots\n",
                "state.memory_budget",
                "not a size",
            ),
            (
                "aggregates: [sensors_local, sensors_local]\n",
                "aggregates",
                "twice",
            ),
            ("aggregates: []\n", "aggregates", "at least one"),
            (
                "source:\n  pulsar:\n    url: http://x:6650\n",
                "source.pulsar.url",
                "pulsar://",
            ),
            (
                "source:\n  pulsar:\n    topic: \"a/b\"\n",
                "source.pulsar.topic",
                "tenant/namespace/name",
            ),
            (
                "source:\n  pulsar:\n    tls_allow_insecure: true\n",
                "source.pulsar.tls_allow_insecure",
                "tls_ca_file",
            ),
            (
                "source:\n  pulsar:\n    tls_ca_file: ca.pem\n",
                "source.pulsar.url",
                "pulsar+ssl://",
            ),
            (
                "schema: x.avsc\nsource:\n  pulsar:\n    schema_from_registry: true\n",
                "schema",
                "not both",
            ),
            (
                "source:\n  pulsar:\n    until_idle: 0s\n",
                "source.pulsar.until_idle",
                "positive",
            ),
            (
                "event_time:\n  fallback: publish-time\n",
                "event_time.fallback",
                "only Pulsar",
            ),
            (
                "event_time:\n  fallback: sometimes\n",
                "event_time.fallback",
                "publish-time",
            ),
        ];
        for (yaml, want_key, want_msg) in cases {
            let (key, msg) = err(yaml);
            assert_eq!(&key, want_key, "for {yaml:?}: {msg}");
            assert!(msg.contains(want_msg), "for {yaml:?}: {msg}");
        }
    }

    #[test]
    fn pulsar_source_parses_with_defaults() {
        let spec = JobSpec::from_yaml(
            "source:\n  pulsar:\n    url: pulsar+ssl://broker:6651\n    topic: iot\n    token_env: PULSAR_TOKEN\n    until_idle: 5s\nevent_time:\n  fallback: message-event-time\n",
            "t",
        )
        .expect("valid");
        let Ok(SourceKind::Pulsar(p)) = spec.source.kind() else {
            panic!("pulsar source")
        };
        assert_eq!(p.url, "pulsar+ssl://broker:6651");
        assert_eq!(p.until_idle, Some(Duration::from_secs(5)));
        assert_eq!(p.receiver_queue, 1000);
        assert_eq!(
            p.subscription_for(&spec.name),
            "weir-iot-sensor-aggregation"
        );
        assert_eq!(
            spec.event_time.fallback,
            EventTimeFallback::MessageEventTime
        );
        assert_eq!(spec.partition_names().expect("kind"), None);
    }

    #[test]
    fn not_yaml_is_an_error_with_a_location() {
        let (_, msg) = err("source: [unclosed\n");
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn relative_paths_follow_the_spec_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.yaml");
        std::fs::write(
            &path,
            "source:\n  avro_files:\n    paths: [in/a.avro, /abs/b.avro]\n",
        )
        .expect("write");
        let spec = JobSpec::load(&path).expect("loads");
        let Ok(SourceKind::AvroFiles(f)) = spec.source.kind() else {
            panic!("files")
        };
        assert_eq!(f.paths[0], dir.path().join("in/a.avro"));
        assert_eq!(f.paths[1], PathBuf::from("/abs/b.avro"));
        assert_eq!(spec.state.dir, dir.path().join("weir-data"));
        let missing = JobSpec::load(&dir.path().join("nope.yaml")).unwrap_err();
        assert!(missing.to_string().contains("nope.yaml"), "{missing}");
    }
}
