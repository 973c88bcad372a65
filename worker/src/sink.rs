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
//! Progress reports from the window task ([`SinkMsg::Progress`]) are
//! published to the metrics only once every row sent before them is
//! written: that is what the coordinator records as durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::rows::Table;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::sink::jsonl::{JsonlFile, JsonlWriter};
use weir_common::sink::{OutputBatch, SinkError};

use crate::metrics::JobMetrics;
use crate::resume::Written;
use crate::window::SinkMsg;

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
    async fn write(&mut self, batch: &mut OutputBatch) -> Result<(), SinkError> {
        if let Some(file) = &mut self.late_file {
            file.append(&batch.late)?;
            batch.late.clear();
        }
        match &mut self.main {
            TableWriter::Jsonl(w) => w.write(batch),
            TableWriter::ClickHouse(c) => c.write(batch).await,
        }
    }

    /// Drops rows the destination already has (ClickHouse only; the JSONL
    /// writer rolls back failed appends instead).
    async fn forget_existing(&mut self, batch: &mut OutputBatch) -> Result<usize, SinkError> {
        match &self.main {
            TableWriter::ClickHouse(c) => c.forget_existing(batch).await,
            TableWriter::Jsonl(_) => Ok(0),
        }
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
    pub batch_rows: usize,
    pub batch_interval: Duration,
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

pub struct SinkTask {
    pub writer: SinkWriter,
    pub config: SinkConfig,
    pub metrics: Arc<JobMetrics>,
    /// Cancelled to give up on retries (the job is failing or aborted).
    pub abort: CancellationToken,
}

impl SinkTask {
    pub async fn run(mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<SinkOutcome, SinkError> {
        let mut pending = OutputBatch::default();
        let mut oldest: Option<Instant> = None;
        // The latest progress report, waiting for `pending` to be written.
        let mut progress: Option<Written> = None;
        loop {
            let deadline = oldest.map(|t| t + self.config.batch_interval);
            let msg = tokio::select! {
                msg = rx.recv() => Some(msg),
                _ = sleep_until_opt(deadline) => None,
            };
            match msg {
                Some(Some(SinkMsg::Rows(rows))) => {
                    if pending.is_empty() {
                        oldest = Some(Instant::now());
                    }
                    pending.append(rows);
                    if pending.len() < self.config.batch_rows {
                        continue;
                    }
                }
                Some(Some(SinkMsg::Progress(p))) => {
                    progress = Some(p);
                    if pending.is_empty() {
                        self.publish(&mut progress);
                    }
                    continue;
                }
                Some(Some(SinkMsg::End)) => {
                    if !self.write_all(&mut pending).await? {
                        return Ok(SinkOutcome::Aborted {
                            unwritten: pending.len(),
                        });
                    }
                    self.writer.finish().await?;
                    self.publish(&mut progress);
                    return Ok(SinkOutcome::Finished);
                }
                Some(None) => {
                    if !self.write_all(&mut pending).await? {
                        return Ok(SinkOutcome::Aborted {
                            unwritten: pending.len(),
                        });
                    }
                    self.writer.finish().await?;
                    self.publish(&mut progress);
                    return Ok(SinkOutcome::Stopped);
                }
                None => {} // the oldest row has waited long enough
            }
            if !self.write_all(&mut pending).await? {
                return Ok(SinkOutcome::Aborted {
                    unwritten: pending.len(),
                });
            }
            oldest = None;
            self.publish(&mut progress);
        }
    }

    /// Everything sent before `progress` is written: make it known.
    fn publish(&self, progress: &mut Option<Written>) {
        if let Some(p) = progress.take() {
            self.metrics.set_written(p);
        }
    }

    /// Writes `pending` completely, in inserts of at most `batch_rows`
    /// rows, retrying transient failures. `Ok(false)` if aborted first.
    async fn write_all(&mut self, pending: &mut OutputBatch) -> Result<bool, SinkError> {
        while !pending.is_empty() {
            let mut chunk = pending.take_front(self.config.batch_rows);
            if !self.write_chunk(&mut chunk).await? {
                chunk.append(std::mem::take(pending));
                *pending = chunk;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes one insert's worth of rows until it is written. After a failed
    /// attempt, whose rows may have reached the server anyway, the rows the
    /// server already has are dropped before the next attempt.
    async fn write_chunk(&mut self, chunk: &mut OutputBatch) -> Result<bool, SinkError> {
        let mut delay = self.config.retry_initial;
        let mut failures = 0u32;
        // Always look first: the rows may have been written by a failed
        // attempt, an earlier generation or an earlier run.
        let mut check_first = true;
        while !chunk.is_empty() {
            // An aborted deployment must not wait for a hung request: the
            // attempt is dropped (its rows are rechecked by whoever retries).
            let abort = self.abort.clone();
            let attempt = if check_first {
                let checked = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Ok(false),
                    r = self.writer.forget_existing(chunk) => r,
                };
                checked.map(|n| {
                    if n > 0 {
                        tracing::info!(
                            rows = n,
                            "rows already in the table; not writing them again"
                        );
                        JobMetrics::add(&self.metrics.rows_written, n as u64);
                    }
                    check_first = false;
                })
            } else {
                let before = chunk.len();
                let result = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Ok(false),
                    r = self.writer.write(chunk) => r,
                };
                JobMetrics::add(&self.metrics.rows_written, (before - chunk.len()) as u64);
                if result.is_err() {
                    check_first = true;
                }
                result
            };
            let err = match attempt {
                Ok(()) => continue,
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
                    unwritten_rows = chunk.len(),
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

    fn late_row(i: usize) -> LateReadingRow {
        LateReadingRow {
            device_id: format!("sensor_{i}"),
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
                batch_rows,
                batch_interval: interval,
                retry_initial: Duration::from_millis(10),
                retry_max: Duration::from_millis(100),
            },
            metrics: Arc::new(JobMetrics::default()),
            abort: CancellationToken::new(),
        }
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
        let progress = |watermark| {
            SinkMsg::Progress(Written {
                watermark,
                processed: vec![Some(weir_common::position::Position::Offset(
                    watermark as u64,
                ))],
            })
        };
        tx.send(progress(1)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            metrics.written().map(|w| w.watermark),
            Some(1),
            "nothing pending: published at once"
        );
        tx.send(SinkMsg::Rows(rows(4..5))).await.expect("send");
        tx.send(progress(2)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            metrics.written().map(|w| w.watermark),
            Some(1),
            "a row before it is not written yet"
        );
        tx.send(SinkMsg::End).await.expect("send");
        assert_eq!(
            handle.await.expect("join").expect("ok"),
            SinkOutcome::Finished
        );
        assert_eq!(lines(dir.path()), 5);
        assert_eq!(metrics.snapshot().rows_written, 5);
        assert_eq!(metrics.written().map(|w| w.watermark), Some(2));
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
