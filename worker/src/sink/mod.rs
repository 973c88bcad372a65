//! The sink task: batches result rows and writes them, retrying until they
//! are written.
//!
//! Rows arrive from the window task in bursts (a window closing). The task
//! collects them and writes when a batch is full or its oldest row has waited
//! long enough. A write that fails for a reason that may pass (ClickHouse
//! down, disk full) is retried with exponential backoff for as long as it
//! takes: the task does not take new rows meanwhile, so its bounded input
//! channel fills and the whole job slows to a stop instead of losing or
//! buffering without limit. Before each insert into ClickHouse, rows the
//! server already has are dropped from the batch, so nothing is written
//! twice. A write that cannot succeed (wrong schema, bad credentials) fails
//! the job with the error.
//!
//! At a checkpoint's barrier ([`SinkMsg::Barrier`]) everything received
//! before it is written, and the checkpoint uploader is told: a checkpoint
//! completes only once its output is written.

mod pending;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::rows::Table;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::sink::jsonl::{JsonlFile, JsonlWriter};
use weir_common::sink::{SinkError, TableRows};

use crate::checkpoint::UploaderMsg;
use crate::lease::Lease;
use crate::metrics::JobMetrics;
use crate::window::SinkMsg;
pub use pending::Pending;

/// Where the main output goes.
pub enum TableWriter {
    Jsonl(JsonlWriter),
    ClickHouse(Box<ClickHouseWriter>),
}

/// The sink's writers: the main one, and the late-readings file when the
/// late policy is `file`.
pub struct SinkWriter {
    pub main: TableWriter,
    pub late_file: Option<JsonlFile>,
}

impl SinkWriter {
    /// Writes `rows` except those at the indexes in `skip`, all or nothing.
    async fn write(&mut self, rows: TableRows<'_>, skip: &[usize]) -> Result<(), SinkError> {
        if let (Some(file), TableRows::LateReadings(late)) = (&mut self.late_file, rows) {
            return file.append_rows(late);
        }
        match &mut self.main {
            TableWriter::Jsonl(w) => w.write(rows),
            TableWriter::ClickHouse(c) => c.insert(rows, skip).await,
        }
    }

    /// Whether rows of `table` must be looked up before they are written
    /// (ClickHouse; the JSONL writer rolls back failed appends instead).
    fn looks_up(&self, table: Table) -> bool {
        let to_late_file = table == Table::LateReadings && self.late_file.is_some();
        matches!(self.main, TableWriter::ClickHouse(_)) && !to_late_file
    }

    /// The indexes of the rows the destination already has. `newest` is
    /// what is known of the newest window in the row's table (asked here
    /// the first time): rows of newer windows are not looked up.
    async fn existing(
        &self,
        rows: TableRows<'_>,
        newest: &mut Option<Option<u32>>,
        metrics: &JobMetrics,
    ) -> Result<Vec<usize>, SinkError> {
        let TableWriter::ClickHouse(c) = &self.main else {
            return Ok(Vec::new());
        };
        if let Some(ours) = rows.newest_window() {
            let theirs = match *newest {
                Some(known) => known,
                None => {
                    JobMetrics::add(&metrics.sink_lookups, 1);
                    let found = c.newest_window(rows.table()).await?;
                    tracing::debug!(table = ?rows.table(), newest = ?found, "newest window written");
                    *newest = Some(found);
                    found
                }
            };
            if theirs.is_none_or(|theirs| ours > theirs) {
                return Ok(Vec::new());
            }
        }
        JobMetrics::add(&metrics.sink_lookups, 1);
        c.existing(rows).await
    }

    async fn finish(&mut self) -> Result<(), SinkError> {
        if let Some(file) = &mut self.late_file {
            file.sync()?;
        }
        match &mut self.main {
            TableWriter::Jsonl(w) => w.sync(),
            TableWriter::ClickHouse(_) => Ok(()),
        }
    }
}

/// Batching and retry settings.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Write as soon as this many rows wait...
    pub flush_rows: usize,
    /// ...or the oldest waiting row has waited this long.
    pub batch_interval: Duration,
    /// At most this many rows per insert (or append) into one table.
    pub insert_rows: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// How the sink task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Everything the window task produced is written.
    Finished,
    /// Its input went away first (the job was stopped); what it had was
    /// written.
    Stopped,
    /// Aborted while rows were still unwritten.
    Aborted { unwritten: usize },
}

/// How much of what waits a write should take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// Only full inserts: the rest waits for more rows or the interval.
    Full,
    /// Everything.
    All,
}

pub struct SinkTask {
    pub writer: SinkWriter,
    pub config: SinkConfig,
    pub metrics: Arc<JobMetrics>,
    /// Cancelled to give up on retries (the job is failing or aborted).
    pub abort: CancellationToken,
    /// Told when everything before a checkpoint's barriers is written.
    pub checkpoints: Option<mpsc::Sender<UploaderMsg>>,
    /// The worker's lease: no write starts once it has run out.
    pub lease: Arc<Lease>,
}

/// The newest window each table may hold rows of (by [`Table`] index):
/// unknown until asked, then what the table had when this deployment
/// started, raised by every insert whose fate is unknown. Windows are
/// emitted oldest first, so once the rows pass it no lookup is needed.
///
/// Rows written meanwhile by another process for the same windows (a
/// deployment that was replaced but is still writing) are not seen; only
/// fencing (the exactly-once issue) rules those out.
type Newest = [Option<Option<u32>>; 3];

impl SinkTask {
    pub async fn run(mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<SinkOutcome, SinkError> {
        let mut pending = Pending::default();
        let mut newest: Newest = [None; 3];
        let mut oldest: Option<Instant> = None;
        loop {
            let deadline = oldest.map(|t| t + self.config.batch_interval);
            let msg = tokio::select! {
                msg = rx.recv() => Some(msg),
                _ = sleep_until_opt(deadline) => None,
            };
            let flush = match msg {
                Some(Some(SinkMsg::Rows(rows))) => {
                    if pending.is_empty() {
                        oldest = Some(Instant::now());
                    }
                    pending.push(rows);
                    if pending.len() < self.config.flush_rows {
                        continue;
                    }
                    Flush::Full
                }
                Some(Some(SinkMsg::Barrier(n))) => {
                    // Everything before the barriers is part of checkpoint
                    // `n`: written before the checkpoint can complete.
                    if !self
                        .write_pending(&mut pending, &mut newest, Flush::All)
                        .await?
                    {
                        return Ok(SinkOutcome::Aborted {
                            unwritten: pending.len(),
                        });
                    }
                    oldest = None;
                    if let Some(tx) = &self.checkpoints {
                        // The uploader ends only with the deployment.
                        let _ = tx.send(UploaderMsg::Flushed(n)).await;
                    }
                    continue;
                }
                Some(end) => {
                    if !self
                        .write_pending(&mut pending, &mut newest, Flush::All)
                        .await?
                    {
                        return Ok(SinkOutcome::Aborted {
                            unwritten: pending.len(),
                        });
                    }
                    self.writer.finish().await?;
                    return Ok(match end {
                        Some(_) => SinkOutcome::Finished,
                        None => SinkOutcome::Stopped,
                    });
                }
                None => Flush::All, // the oldest row has waited long enough
            };
            if !self.write_pending(&mut pending, &mut newest, flush).await? {
                return Ok(SinkOutcome::Aborted {
                    unwritten: pending.len(),
                });
            }
            if pending.is_empty() {
                oldest = None;
            }
        }
    }

    /// Writes what waits, table by table in inserts of at most
    /// `insert_rows` rows, retrying transient failures. With
    /// [`Flush::Full`] a table's last partial insert waits for more rows
    /// unless it has `flush_rows` itself. `Ok(false)` if aborted first.
    async fn write_pending(
        &mut self,
        pending: &mut Pending,
        newest: &mut Newest,
        flush: Flush,
    ) -> Result<bool, SinkError> {
        let max = self.config.insert_rows.max(1);
        for table in Table::ALL {
            loop {
                let waiting = pending.rows_of(table);
                let partial = waiting < max && waiting < self.config.flush_rows;
                if waiting == 0 || (flush == Flush::Full && partial) {
                    break;
                }
                let rows = pending.front(table, max);
                let n = rows.len();
                if !self.write_rows(rows, &mut newest[table as usize]).await? {
                    return Ok(false);
                }
                pending.consume(table, n);
            }
        }
        Ok(true)
    }

    /// Writes one insert's worth of rows until it is written. Before each
    /// attempt into ClickHouse — the first, since an earlier generation or
    /// run may have written these rows, and every retry, since a failed
    /// attempt may have reached the server anyway — the rows the server
    /// already has are looked up and left out (unless they are of windows
    /// newer than any the table holds: see [`Newest`]).
    async fn write_rows(
        &mut self,
        rows: TableRows<'_>,
        newest: &mut Option<Option<u32>>,
    ) -> Result<bool, SinkError> {
        let mut delay = self.config.retry_initial;
        let mut failures = 0u32;
        let looks_up = self.writer.looks_up(rows.table());
        let mut check_first = looks_up;
        if !self.lease.holds() {
            tracing::warn!("the lease from the coordinator ran out: writing nothing more");
            return Ok(false);
        }
        // Indexes of rows the table already has (ascending).
        let mut existing: Vec<usize> = Vec::new();
        loop {
            // An aborted deployment must not wait for a hung request: the
            // attempt is dropped (its rows are rechecked by whoever retries).
            let abort = self.abort.clone();
            let attempt = if check_first {
                let checked = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Ok(false),
                    r = self.writer.existing(rows, newest, &self.metrics) => r,
                };
                checked.map(|found| {
                    // Rows found by an earlier look were counted then.
                    let new = found.len().saturating_sub(existing.len());
                    if new > 0 {
                        tracing::info!(
                            rows = new,
                            "rows already in the table; not writing them again"
                        );
                        JobMetrics::add(&self.metrics.rows_written, new as u64);
                    }
                    existing = found;
                    check_first = false;
                    false
                })
            } else {
                let result = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Ok(false),
                    r = self.writer.write(rows, &existing) => r,
                };
                match &result {
                    Ok(()) => {
                        let n = rows.len() - existing.len();
                        JobMetrics::add(&self.metrics.rows_written, n as u64);
                    }
                    // Some of the rows may be in the table now. (Still
                    // unknown, the newest window is asked before the next
                    // attempt anyway.)
                    Err(_) => {
                        if let (Some(known), Some(ours)) = (newest.as_mut(), rows.newest_window()) {
                            *known = Some(known.map_or(ours, |k| k.max(ours)));
                        }
                    }
                }
                check_first = looks_up;
                result.map(|()| true)
            };
            let err = match attempt {
                Ok(true) => break,
                Ok(false) => continue,
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            failures += 1;
            JobMetrics::add(&self.metrics.sink_retries, 1);
            // The first failure and then every tenth, not every retry.
            if failures == 1 || failures.is_multiple_of(10) {
                tracing::warn!(
                    error = %err,
                    kind = err.kind(),
                    failures,
                    unwritten_rows = rows.len() - existing.len(),
                    retry_in = ?delay,
                    "sink write failed; retrying (input is held back meanwhile)"
                );
            }
            if !self.pause(&mut delay).await {
                return Ok(false);
            }
        }
        if failures > 0 {
            tracing::info!(after_failures = failures, "sink writes again");
        }
        Ok(true)
    }

    /// Sleeps for `delay` and doubles it (up to the maximum); `false` if
    /// aborted meanwhile.
    async fn pause(&self, delay: &mut Duration) -> bool {
        let sleep = *delay;
        *delay = (*delay * 2).min(self.config.retry_max);
        tokio::select! {
            biased;
            _ = self.abort.cancelled() => false,
            _ = tokio::time::sleep(sleep) => true,
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Tables the main writer of a job writes, given its late policy.
pub fn tables_for(aggregates: &[weir_common::spec::Aggregate], late_to_main: bool) -> Vec<Table> {
    use weir_common::spec::Aggregate;
    let mut tables = Vec::new();
    if aggregates.contains(&Aggregate::SensorsLocal) {
        tables.push(Table::SensorsLocal);
    }
    if aggregates.contains(&Aggregate::SensorAggregates1m) {
        tables.push(Table::SensorAggregates);
    }
    if late_to_main {
        tables.push(Table::LateReadings);
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::rows::LateReadingRow;
    use weir_common::sink::OutputBatch;

    fn late_row(i: usize) -> LateReadingRow {
        LateReadingRow {
            device_id: weir_common::reading::Reading::device_id(i as i32),
            event_time: 0,
            timestamp_ms: 0,
            window_end: 60,
            watermark_ms: 0,
            source: "s".into(),
            position: i.to_string(),
            reading: "{}".into(),
        }
    }

    fn task(dir: &std::path::Path, batch_rows: usize, interval: Duration) -> SinkTask {
        SinkTask {
            writer: SinkWriter {
                main: TableWriter::Jsonl(
                    JsonlWriter::create(dir, &[Table::LateReadings]).expect("writer"),
                ),
                late_file: None,
            },
            config: SinkConfig {
                flush_rows: batch_rows,
                insert_rows: batch_rows,
                batch_interval: interval,
                retry_initial: Duration::from_millis(10),
                retry_max: Duration::from_millis(100),
            },
            metrics: Arc::new(JobMetrics::default()),
            abort: CancellationToken::new(),
            checkpoints: None,
            lease: Arc::new(Lease::default()),
        }
    }

    #[tokio::test]
    async fn nothing_is_written_once_the_lease_has_run_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = task(dir.path(), 1, Duration::from_secs(1));
        let lease = t.lease.clone();
        let (tx, rx) = mpsc::channel(4);
        let handle = tokio::spawn(t.run(rx));
        let rows = |r: std::ops::Range<usize>| OutputBatch {
            late: r.map(late_row).collect(),
            ..OutputBatch::default()
        };
        lease.renew(Some(Duration::from_secs(60)));
        tx.send(SinkMsg::Rows(rows(0..2))).await.expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(lines(dir.path()), 2, "written while the lease holds");
        lease.renew(Some(Duration::ZERO));
        tx.send(SinkMsg::Rows(rows(2..4))).await.expect("send");
        let _ = tx.send(SinkMsg::End).await;
        let outcome = handle.await.expect("join").expect("ok");
        assert!(
            matches!(outcome, SinkOutcome::Aborted { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            lines(dir.path()),
            2,
            "nothing written after the lease ran out"
        );
    }

    fn lines(dir: &std::path::Path) -> usize {
        std::fs::read_to_string(dir.join("late_readings.jsonl"))
            .expect("read")
            .lines()
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn writes_full_batches_at_once_and_the_rest_after_the_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = task(dir.path(), 3, Duration::from_secs(1));
        let metrics = t.metrics.clone();
        let (tx, rx) = mpsc::channel(4);
        let handle = tokio::spawn(t.run(rx));
        let rows = |r: std::ops::Range<usize>| OutputBatch {
            late: r.map(late_row).collect(),
            ..OutputBatch::default()
        };
        tx.send(SinkMsg::Rows(rows(0..2))).await.expect("send");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lines(dir.path()), 0, "below batch size and interval");
        tx.send(SinkMsg::Rows(rows(2..3))).await.expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(lines(dir.path()), 3, "a full batch is written at once");
        tx.send(SinkMsg::Rows(rows(3..4))).await.expect("send");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(lines(dir.path()), 4, "the interval flushes a partial batch");
        tx.send(SinkMsg::Rows(rows(4..5))).await.expect("send");
        tx.send(SinkMsg::End).await.expect("send");
        assert_eq!(
            handle.await.expect("join").expect("ok"),
            SinkOutcome::Finished
        );
        assert_eq!(lines(dir.path()), 5);
        assert_eq!(metrics.snapshot().rows_written, 5);
    }

    #[tokio::test]
    async fn closed_input_flushes_and_reports_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = task(dir.path(), 100, Duration::from_secs(60));
        let (tx, rx) = mpsc::channel(4);
        tx.send(SinkMsg::Rows(OutputBatch {
            late: vec![late_row(1)],
            ..OutputBatch::default()
        }))
        .await
        .expect("send");
        drop(tx);
        assert_eq!(t.run(rx).await.expect("ok"), SinkOutcome::Stopped);
        assert_eq!(lines(dir.path()), 1);
    }
}
