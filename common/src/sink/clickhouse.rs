//! The ClickHouse writer (HTTP, RowBinary, via the `clickhouse` crate).
//!
//! Works against ClickHouse 18.16 and current servers: row validation is off
//! (18.16 cannot describe rows in `RowBinaryWithNamesAndTypes`), so before
//! writing, [`ClickHouseWriter::check_tables`] compares each table's columns
//! with what Weir writes; RowBinary into a mismatched table would otherwise
//! fail obscurely or, worse, store garbage.
//!
//! An insert is never abandoned while its connection lives: a client-side
//! timeout could leave the server holding a request it will still commit,
//! and no later lookup could be sure of it. Instead the TCP connection is
//! watched with keepalive probes: a frozen server keeps it up (the insert
//! waits for the real answer), a dead server or path breaks it within about
//! half a minute (and a dead server commits nothing afterwards). Only reads
//! — pings, schema checks, lookups — have a timeout.
//!
//! No row may be written twice — not by a retried insert, not by a new
//! generation or a restarted job that recomputes windows already written —
//! and 18.16 has no `insert_deduplication_token`. Every output row has a
//! natural key (device and window, or source and position of a late
//! reading), so before each insert [`ClickHouseWriter::existing`]
//! asks the server which rows of the batch are already there (a primary-key
//! lookup) and drops them.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::{SinkError, TableRows};
use crate::error_chain::error_chain;
use crate::rows::Table;
use crate::spec::{ClickHouseSinkSpec, TableNames};

/// One attempt at a time against one ClickHouse server.
#[derive(Clone)]
pub struct ClickHouseWriter {
    /// Client bound to the job's database (for inserts and lookups).
    client: clickhouse::Client,
    /// Client without a database (for `CREATE DATABASE` and `system.*`).
    server: clickhouse::Client,
    url: String,
    database: String,
    tables: TableNames,
    timeout: Duration,
    /// Names this deployment's inserts (see [`Self::with_generation`]).
    fence: Option<std::sync::Arc<Fence>>,
}

/// How a deployment names its inserts:
/// `weir-<job>-g<generation>-<worker>-e<epoch>-<table>-<batch>` (the job
/// and worker with anything but ASCII letters and digits as `_`). The same
/// batch of an epoch gets the same id on every attempt: while an abandoned
/// attempt still runs, the server refuses another query with its id.
#[derive(Debug)]
struct Fence {
    /// `weir-<job>-g`.
    prefix: String,
    generation: u64,
    worker: String,
}

/// Which insert of a deployment: the batch `batch` of `table`'s rows of
/// epoch `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertId {
    pub epoch: u64,
    pub table: Table,
    pub batch: u64,
}

/// Letters and digits kept, anything else `_`: safe in a query id, a SQL
/// string and a regular expression.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct ColumnRow {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// A natural key read back from a table, both parts as text.
#[derive(Debug, Deserialize, clickhouse::Row)]
struct KeyRow {
    a: String,
    b: String,
}

impl ClickHouseWriter {
    pub fn new(spec: &ClickHouseSinkSpec, password: Option<String>) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(spec.request_timeout.std()));
        // A dead peer is noticed after 10 s of silence plus 4 probes 5 s apart.
        connector.set_keepalive(Some(Duration::from_secs(10)));
        connector.set_keepalive_interval(Some(Duration::from_secs(5)));
        connector.set_keepalive_retries(Some(4));
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(2))
                .build(connector);
        let mut server = clickhouse::Client::with_http_client(http)
            .with_url(spec.url.trim_end_matches('/'))
            .with_user(&spec.user)
            .with_validation(false);
        if let Some(p) = password {
            server = server.with_password(p);
        }
        ClickHouseWriter {
            client: server.clone().with_database(&spec.database),
            server,
            url: spec.url.clone(),
            database: spec.database.clone(),
            tables: spec.tables.clone(),
            timeout: spec.request_timeout.std(),
            fence: None,
        }
    }

    /// Names every insert after the job, the generation and the worker, so
    /// that a later generation can stop those still running before it
    /// looks up what the tables hold ([`Self::kill_older_generations`]).
    pub fn with_generation(mut self, job: &str, generation: u64, worker: &str) -> Self {
        self.fence = Some(std::sync::Arc::new(Fence {
            prefix: format!("weir-{}-g", plain(job)),
            generation,
            worker: plain(worker),
        }));
        self
    }

    /// Stops every query of an earlier generation of this job still running
    /// on the server (an insert abandoned when its deployment was replaced,
    /// on a slow or frozen server) and waits until they are gone
    /// (`KILL QUERY ... SYNC`, which 18.16 has): afterwards no insert of an
    /// earlier generation can land behind this generation's lookups. Needs
    /// the right to kill the user's own queries (the default).
    pub async fn kill_older_generations(&self) -> Result<(), SinkError> {
        let Some(f) = &self.fence else {
            return Ok(());
        };
        let statement = format!(
            "KILL QUERY WHERE position(query_id, '{p}') = 1 \
             AND toUInt64OrZero(extract(query_id, '^{p}([0-9]+)-')) < {g} SYNC",
            p = f.prefix,
            g = f.generation
        );
        self.timed(
            "stopping inserts of earlier generations",
            self.server.query(&statement).execute(),
        )
        .await
    }

    /// The query id of insert `id` of this deployment (`None` without
    /// [`Self::with_generation`]).
    fn query_id(&self, id: InsertId) -> Option<String> {
        let f = self.fence.as_ref()?;
        Some(format!(
            "{}{}-{}-e{}-{}-{}",
            f.prefix,
            f.generation,
            f.worker,
            id.epoch,
            id.table.default_name(),
            id.batch
        ))
    }

    /// Stops insert `id` of this deployment if it is still running (an
    /// attempt given up on) and waits until it is gone: a lookup afterwards
    /// sees everything it committed.
    pub async fn kill_insert(&self, id: InsertId) -> Result<(), SinkError> {
        let Some(query_id) = self.query_id(id) else {
            return Ok(());
        };
        let statement = format!("KILL QUERY WHERE query_id = '{query_id}' SYNC");
        self.timed(
            "stopping an earlier attempt of an insert",
            self.server.query(&statement).execute(),
        )
        .await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Qualified name of an output table, for messages.
    pub fn table_name(&self, table: Table) -> String {
        format!("{}.{}", self.database, self.tables.get(table))
    }

    fn classify(&self, what: &str, e: clickhouse::error::Error) -> SinkError {
        use clickhouse::error::Error as E;
        match e {
            E::Network(_) | E::TimedOut => SinkError::Unreachable {
                url: self.url.clone(),
                message: error_chain(&e),
            },
            E::BadResponse(text) => {
                let code = exception_code(&text);
                SinkError::Rejected {
                    what: what.to_owned(),
                    code,
                    retryable: code.is_none_or(code_is_retryable),
                    message: first_line(&text),
                }
            }
            other => SinkError::Protocol(error_chain(&other)),
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(|e| self.classify(what, e)),
            Err(_) => Err(SinkError::Unreachable {
                url: self.url.clone(),
                message: format!("no answer within {:?} ({what})", self.timeout),
            }),
        }
    }

    /// The server's version; fails if it cannot be reached or refuses us.
    pub async fn ping(&self) -> Result<String, SinkError> {
        self.timed(
            "a version query",
            self.server.query("SELECT version()").fetch_one::<String>(),
        )
        .await
    }

    /// Runs Weir's DDL (`CREATE ... IF NOT EXISTS`).
    pub async fn create_tables(&self) -> Result<(), SinkError> {
        for statement in super::ddl::statements(&self.database, &self.tables) {
            self.timed(
                "a CREATE statement",
                self.server.query(&statement).execute(),
            )
            .await?;
        }
        Ok(())
    }

    /// Checks that every table Weir will write exists with compatible
    /// columns. Servers before 22.6 read RowBinary in the table's column
    /// order whatever the INSERT names (ClickHouse issue 37420), so on them
    /// the columns must also be exactly Weir's, in Weir's order.
    pub async fn check_tables(&self, tables: &[Table]) -> Result<(), SinkError> {
        let version = self.ping().await?;
        let strict_order = version_before(&version, (22, 6));
        for &table in tables {
            let name = self.tables.get(table);
            let columns: Vec<ColumnRow> = self
                .timed(
                    "a schema query",
                    self.server
                        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                        .bind(&self.database)
                        .bind(name)
                        .fetch_all(),
                )
                .await?;
            let qualified = self.table_name(table);
            if columns.is_empty() {
                return Err(SinkError::Schema {
                    table: qualified,
                    problem: "the table does not exist; create it with `weir ddl --apply` \
                              or set sink.clickhouse.create_tables: true"
                        .into(),
                });
            }
            if strict_order {
                let theirs: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                let ours: Vec<&str> = table.columns().iter().map(|c| c.0).collect();
                if theirs != ours {
                    return Err(SinkError::Schema {
                        table: qualified,
                        problem: format!(
                            "ClickHouse {version} maps inserted columns by table order, so the \
                             table must have exactly Weir's columns in Weir's order ({}), but it \
                             has ({})",
                            ours.join(", "),
                            theirs.join(", ")
                        ),
                    });
                }
            }
            for (col, ty) in table.columns() {
                match columns.iter().find(|c| c.name == *col) {
                    None => {
                        return Err(SinkError::Schema {
                            table: qualified,
                            problem: format!("it has no column `{col}` (Weir writes `{col} {ty}`)"),
                        })
                    }
                    Some(c) if !type_compatible(&c.ty, ty) => {
                        return Err(SinkError::Schema {
                            table: qualified,
                            problem: format!(
                                "column `{col}` is `{}`, but Weir writes `{ty}`",
                                c.ty
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// One attempt to insert `rows` except those at the indexes in `skip`
    /// (ascending; rows the table already has).
    pub async fn insert(
        &self,
        rows: TableRows<'_>,
        skip: &[usize],
        id: InsertId,
    ) -> Result<(), SinkError> {
        match rows {
            TableRows::SensorsLocal(r) => self.insert_rows(Table::SensorsLocal, r, skip, id).await,
            TableRows::SensorAggregates(r) => {
                self.insert_rows(Table::SensorAggregates, r, skip, id).await
            }
            TableRows::LateReadings(r) => self.insert_rows(Table::LateReadings, r, skip, id).await,
        }
    }

    async fn insert_rows<T>(
        &self,
        table: Table,
        rows: &[T],
        skip: &[usize],
        id: InsertId,
    ) -> Result<(), SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.len() == skip.len() {
            return Ok(());
        }
        let what = format!("an insert into {}", self.table_name(table));
        // No timeouts: see the module documentation.
        let mut insert = self
            .client
            .insert::<T>(self.tables.get(table))
            .await
            .map_err(|e| self.classify(&what, e))?;
        if let Some(query_id) = self.query_id(id) {
            insert = insert.with_setting("query_id", query_id);
        }
        let mut skip = skip.iter().copied().peekable();
        for (i, row) in rows.iter().enumerate() {
            if skip.next_if_eq(&i).is_some() {
                continue;
            }
            insert
                .write(row)
                .await
                .map_err(|e| self.classify(&what, e))?;
        }
        insert.end().await.map_err(|e| self.classify(&what, e))
    }

    /// The newest window the table holds a row of: its `time`
    /// (`sensors_local`) or `window_start` (`sensor_aggregates_1m`), as
    /// epoch seconds; `None` if it has none (and for the late-readings
    /// table, whose rows are not ordered by window). One scan of that
    /// column, asked once per deployment: rows of newer windows cannot be
    /// in the table yet, so they need no lookup.
    pub async fn newest_window(&self, table: Table) -> Result<Option<u32>, SinkError> {
        let column = match table {
            Table::SensorsLocal => "time",
            Table::SensorAggregates => "window_start",
            Table::LateReadings => return Ok(None),
        };
        let sql = format!(
            "SELECT toUInt32(max({column})) FROM {}",
            self.tables.get(table)
        );
        let newest: u32 = self
            .timed(
                "a query for the newest window written",
                self.client.query(&sql).fetch_one(),
            )
            .await?;
        // `max` of an empty table is the epoch.
        Ok((newest > 0).then_some(newest))
    }

    /// The indexes (ascending) of the rows the table already has, by their
    /// natural keys. Asked before every insert: after a failed insert whose
    /// fate is unknown, and after a restart or a new generation that
    /// recomputes windows an earlier one wrote, it makes the insert write
    /// each row exactly once.
    pub async fn existing(&self, rows: TableRows<'_>) -> Result<Vec<usize>, SinkError> {
        match rows {
            TableRows::SensorsLocal(r) => {
                self.existing_keys(Table::SensorsLocal, "device_id", "time", r, |r| {
                    (r.device_id.as_str(), KeyPart::Seconds(r.time))
                })
                .await
            }
            TableRows::SensorAggregates(r) => {
                self.existing_keys(
                    Table::SensorAggregates,
                    "device_id",
                    "window_start",
                    r,
                    |r| (r.device_id.as_str(), KeyPart::Seconds(r.window_start)),
                )
                .await
            }
            TableRows::LateReadings(r) => {
                self.existing_keys(Table::LateReadings, "source", "position", r, |r| {
                    (r.source.as_str(), KeyPart::Text(r.position.as_str()))
                })
                .await
            }
        }
    }

    /// Looks up the natural keys `(first, second)` of `rows`. The keys go in
    /// as few queries as fit below the server's `max_query_size`; each query
    /// also bounds both key columns by the keys' range, so that ClickHouse
    /// reads only the parts and granules that can hold them (the tuple `IN`
    /// alone is not used for index analysis by every server version).
    async fn existing_keys<'r, T>(
        &self,
        table: Table,
        first: &str,
        second: &str,
        rows: &'r [T],
        key: impl Fn(&'r T) -> (&'r str, KeyPart<'r>),
    ) -> Result<Vec<usize>, SinkError> {
        // DateTime keys are read back as numbers, as they are written.
        let second_expr = match table {
            Table::LateReadings => second.to_owned(),
            _ => format!("toUInt32({second})"),
        };
        let mut found: HashSet<(String, String)> = HashSet::new();
        let mut start = 0;
        while start < rows.len() {
            let mut list = String::new();
            let (mut lo, mut hi) = (key(&rows[start]), key(&rows[start]));
            let mut end = start;
            while end < rows.len() && list.len() < LOOKUP_QUERY_BYTES {
                let k = key(&rows[end]);
                if end > start {
                    list.push_str(", ");
                }
                push_key(&mut list, &k);
                lo = (lo.0.min(k.0), lo.1.min(k.1));
                hi = (hi.0.max(k.0), hi.1.max(k.1));
                end += 1;
            }
            let mut sql = format!(
                "SELECT toString({first}) AS a, toString({second_expr}) AS b FROM {} WHERE {first} >= ",
                self.tables.get(table),
            );
            push_literal(&mut sql, lo.0);
            sql.push_str(&format!(" AND {first} <= "));
            push_literal(&mut sql, hi.0);
            sql.push_str(&format!(" AND {second} >= "));
            lo.1.push_sql(&mut sql);
            sql.push_str(&format!(" AND {second} <= "));
            hi.1.push_sql(&mut sql);
            sql.push_str(&format!(" AND ({first}, {second}) IN ("));
            sql.push_str(&list);
            sql.push(')');
            // Raw: the literals may contain `?`, which is not a placeholder here.
            let rows: Vec<KeyRow> = self
                .timed(
                    "a lookup of written rows",
                    self.client.query_raw(&sql).fetch_all(),
                )
                .await?;
            found.extend(rows.into_iter().map(|r| (r.a, r.b)));
            start = end;
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut probe = (String::new(), String::new());
        Ok(rows
            .iter()
            .enumerate()
            .filter(|(_, row)| {
                let (a, b) = key(row);
                probe.0.clear();
                probe.0.push_str(a);
                probe.1.clear();
                b.push_text(&mut probe.1);
                found.contains(&probe)
            })
            .map(|(i, _)| i)
            .collect())
    }
}

/// Bytes of key literals per lookup query: far below ClickHouse's default
/// `max_query_size` (256 KiB), whatever the batch size.
const LOOKUP_QUERY_BYTES: usize = 128 << 10;

/// The second part of a natural key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart<'a> {
    /// A `DateTime`, as epoch seconds.
    Seconds(u32),
    Text(&'a str),
}

impl KeyPart<'_> {
    fn push_sql(&self, out: &mut String) {
        match self {
            KeyPart::Seconds(s) => out.push_str(&s.to_string()),
            KeyPart::Text(t) => push_literal(out, t),
        }
    }

    /// As `toString` reads it back.
    fn push_text(&self, out: &mut String) {
        match self {
            KeyPart::Seconds(s) => out.push_str(&s.to_string()),
            KeyPart::Text(t) => out.push_str(t),
        }
    }
}

fn push_key(out: &mut String, (a, b): &(&str, KeyPart<'_>)) {
    out.push('(');
    push_literal(out, a);
    out.push_str(", ");
    b.push_sql(out);
    out.push(')');
}

/// Appends a ClickHouse string literal.
fn push_literal(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Whether a `version()` string such as `18.16.1` is older than `(major, minor)`.
fn version_before(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    v < (major, minor)
}

/// RowBinary compatibility of a server column type with the type Weir writes.
fn type_compatible(server: &str, ours: &str) -> bool {
    let server = server.trim();
    server == ours
        || (ours == "String" && server == "LowCardinality(String)")
        || (ours == "DateTime"
            && server.starts_with("DateTime(")
            && !server.starts_with("DateTime64"))
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    const MAX: usize = 500;
    if line.len() > MAX {
        let mut end = MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    } else {
        line.to_owned()
    }
}

/// The `Code: N` of a ClickHouse exception text, in both the 18.x
/// (`Code: 60, e.displayText() = ...`) and current (`Code: 60. DB::...`) forms.
fn exception_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Server errors a retry can get past: overload, timeouts, network trouble
/// between replicas, read-only or full disks. Everything about the request
/// itself (unknown table or column, bad data, authentication) is permanent.
fn code_is_retryable(code: u32) -> bool {
    !matches!(
        code,
        16  // NO_SUCH_COLUMN_IN_TABLE
        | 27 // CANNOT_PARSE_INPUT_ASSERTION_FAILED
        | 33 // CANNOT_READ_ALL_DATA
        | 47 // UNKNOWN_IDENTIFIER
        | 53 // TYPE_MISMATCH
        | 60 // UNKNOWN_TABLE
        | 62 // SYNTAX_ERROR
        | 81 // UNKNOWN_DATABASE
        | 115 // UNKNOWN_SETTING
        | 117 // INCORRECT_DATA
        | 164 // READONLY (user is read-only)
        | 192 // UNKNOWN_USER
        | 193 // WRONG_PASSWORD
        | 194 // REQUIRED_PASSWORD
        | 195 // IP_ADDRESS_NOT_ALLOWED
        | 497 // ACCESS_DENIED
        | 516 // AUTHENTICATION_FAILED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_in_old_and_new_formats() {
        assert_eq!(
            exception_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist., e.what() = DB::Exception"),
            Some(60)
        );
        assert_eq!(
            exception_code("Code: 516. DB::Exception: default: Authentication failed"),
            Some(516)
        );
        assert_eq!(exception_code("502 Bad Gateway"), None);
        assert!(!code_is_retryable(60));
        assert!(!code_is_retryable(516));
        assert!(code_is_retryable(252), "TOO_MANY_PARTS");
        assert!(code_is_retryable(241), "MEMORY_LIMIT_EXCEEDED");
    }

    #[test]
    fn old_versions_are_recognised() {
        assert!(version_before("18.16.1", (22, 6)));
        assert!(version_before("22.5.9.1", (22, 6)));
        assert!(!version_before("22.6.1", (22, 6)));
        assert!(!version_before("25.3.2.39", (22, 6)));
    }

    #[test]
    fn column_type_compatibility() {
        assert!(type_compatible("String", "String"));
        assert!(type_compatible("LowCardinality(String)", "String"));
        assert!(type_compatible("DateTime('UTC')", "DateTime"));
        assert!(!type_compatible("DateTime64(3)", "DateTime"));
        assert!(!type_compatible("Nullable(Float64)", "Float64"));
        assert!(!type_compatible("Float32", "Float64"));
    }

    #[test]
    fn literals_are_quoted() {
        let quote = |s: &str| {
            let mut out = String::new();
            push_literal(&mut out, s);
            out
        };
        assert_eq!(quote("sensor_1"), "'sensor_1'");
        assert_eq!(quote("a'b\\c?"), "'a\\'b\\\\c?'");
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let text = "é".repeat(400);
        let line = first_line(&text);
        assert!(line.ends_with('…') && line.len() <= 504);
    }
}
