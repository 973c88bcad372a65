//! Committing a sealed epoch: its rows into ClickHouse, its files into
//! place.
//!
//! A commit is retried with exponential backoff for as long as it takes
//! when the failure may pass (ClickHouse down, disk full, store
//! unreachable); meanwhile the sink takes no new rows, so the job holds its
//! input back instead of losing or buffering without limit. A failure that
//! cannot pass (wrong schema, bad credentials) fails the job with its
//! cause.
//!
//! A commit is never repeated on top of itself. Files: a restored epoch's
//! part that exists was committed (see [`weir_common::sink::parts`]). ClickHouse: before an
//! insert whose rows may already be in the table — a restored epoch, a
//! retry, the first insert of a deployment — the rows the table has are
//! looked up and left out; before a retry the earlier attempt, if the
//! server still runs it, is stopped first (its query id is the same), so
//! that the lookup sees everything it wrote. Earlier generations' inserts
//! were stopped when the deployment started
//! ([`ClickHouseWriter::kill_older_generations`]).

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use weir_common::checkpoint::CheckpointStore;
use weir_common::rows::{LateReadingRow, SensorAggregatesRow, SensorsLocalRow};
use weir_common::sink::clickhouse::{ClickHouseWriter, InsertId};
use weir_common::sink::parts::{commit_part, part_path};
use weir_common::sink::stage::StagedRowsReader;
use weir_common::sink::{SinkError, TableRows};

use super::epoch::{Format, SealedEpoch, StagedFile};
use super::output::{Destination, Destinations, Output};
use super::SinkConfig;
use crate::lease::Lease;
use crate::metrics::JobMetrics;

/// The newest window each table may hold rows of (by table index):
/// unknown until asked, then what the table had when this deployment
/// started, raised by every insert whose fate is unknown. Epochs are
/// committed oldest first, so once the rows pass it no lookup is needed.
type Newest = [Option<Option<u32>>; 3];

/// Commits epochs, one at a time.
pub struct Committer {
    pub destinations: Destinations,
    pub store: CheckpointStore,
    pub config: SinkConfig,
    pub metrics: Arc<JobMetrics>,
    /// Cancelled to give up (the deployment is aborted).
    pub abort: CancellationToken,
    /// The worker's lease: no write starts once it has run out.
    pub lease: Arc<Lease>,
    newest: Newest,
}

impl Committer {
    pub fn new(
        destinations: Destinations,
        store: CheckpointStore,
        config: SinkConfig,
        metrics: Arc<JobMetrics>,
        abort: CancellationToken,
        lease: Arc<Lease>,
    ) -> Self {
        Committer {
            destinations,
            store,
            config,
            metrics,
            abort,
            lease,
            newest: [None; 3],
        }
    }

    /// Whether a write may start: at once with a lease; after a wait while
    /// it is revoked (the raft leader was lost: a new one may adopt the
    /// deployment); `false` when aborted first, or when it ran out (a
    /// fenced worker writes nothing more).
    async fn lease_held(&self) -> bool {
        if self.lease.holds() {
            return true;
        }
        if !self.lease.revoked() {
            tracing::warn!("the lease from the coordinator ran out: writing nothing more");
            return false;
        }
        tracing::warn!("no lease from a coordinator: writing nothing until a new leader adopts this deployment");
        self.lease.held(&self.abort).await
    }

    /// Commits `epoch` whole; `Ok(false)` if aborted first (a fenced
    /// worker waits for its lease meanwhile).
    pub async fn commit(&mut self, epoch: &mut SealedEpoch) -> Result<bool, SinkError> {
        for i in 0..epoch.files.len() {
            if !self.lease_held().await {
                return Ok(false);
            }
            let file = epoch.files[i].clone();
            let done = match (self.destinations.get(file.output), file.format) {
                (Some(Destination::ClickHouse), Format::Rows) => {
                    if !file.local && !self.fetch(&file).await? {
                        return Ok(false);
                    }
                    epoch.files[i].local = true;
                    self.insert_file(epoch.epoch, &file).await?
                }
                (Some(Destination::Files(dir)), Format::JsonLines) => {
                    let part = part_path(dir, epoch.epoch, epoch.key_groups);
                    if epoch.restored && part.exists() {
                        // Committed before: nothing to do. (A part of a new
                        // epoch that exists is left from an earlier run or
                        // a rewind, and is replaced.)
                        if file.local {
                            let _ = std::fs::remove_file(&file.path);
                        }
                        true
                    } else {
                        if !file.local && !self.fetch(&file).await? {
                            return Ok(false);
                        }
                        epoch.files[i].local = true;
                        self.place(&file.path, &part).await?
                    }
                }
                _ => {
                    return Err(SinkError::Schema {
                        table: file.output.name().to_owned(),
                        problem: "staged for another destination than this job's".into(),
                    })
                }
            };
            if !done {
                return Ok(false);
            }
            if file.format == Format::JsonLines {
                JobMetrics::add(&self.metrics.rows_written, file.rows);
            }
        }
        for file in &epoch.files {
            if file.format == Format::Rows {
                if let Err(e) = std::fs::remove_file(&file.path) {
                    tracing::debug!(path = %file.path.display(), error = %e, "cannot remove committed staged rows");
                }
            }
        }
        Ok(true)
    }

    /// Fetches a restored epoch's file from the checkpoint store (and
    /// forces it to disk: a part renamed from it must survive a crash).
    async fn fetch(&self, file: &StagedFile) -> Result<bool, SinkError> {
        let Some(key) = &file.key else {
            return Err(SinkError::Staged {
                message: format!("{} of a restored epoch has no key", file.output.name()),
                retryable: false,
            });
        };
        let mut delay = self.config.retry_initial;
        let mut failures = 0u32;
        loop {
            let fetched = tokio::select! {
                biased;
                _ = self.abort.cancelled() => return Ok(false),
                r = self.store.get_file(key, &file.path) => r,
            };
            let err = match fetched {
                Ok(_) => {
                    std::fs::File::open(&file.path)
                        .and_then(|f| f.sync_all())
                        .map_err(|source| SinkError::Io {
                            path: file.path.clone(),
                            source,
                        })?;
                    return Ok(true);
                }
                Err(e) if e.is_retryable() => e,
                Err(e) => {
                    return Err(SinkError::Staged {
                        message: format!("cannot fetch a restored epoch's output: {e}"),
                        retryable: false,
                    })
                }
            };
            failures += 1;
            if failures == 1 || failures.is_multiple_of(10) {
                tracing::warn!(error = %err, failures, retry_in = ?delay, "cannot fetch staged output; retrying");
            }
            if !self.pause(&mut delay).await {
                return Ok(false);
            }
        }
    }

    /// Renames an in-progress file to its part, retrying what may pass.
    async fn place(
        &self,
        staged: &std::path::Path,
        part: &std::path::Path,
    ) -> Result<bool, SinkError> {
        let mut delay = self.config.retry_initial;
        loop {
            match commit_part(staged, part) {
                Ok(()) => return Ok(true),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot commit a part file; retrying");
                }
                Err(e) => return Err(e),
            }
            if !self.pause(&mut delay).await {
                return Ok(false);
            }
        }
    }

    async fn insert_file(&mut self, epoch: u64, file: &StagedFile) -> Result<bool, SinkError> {
        match file.output {
            Output::SensorsLocal => self.insert_rows_of::<SensorsLocalRow>(epoch, file).await,
            Output::SensorAggregates => {
                self.insert_rows_of::<SensorAggregatesRow>(epoch, file)
                    .await
            }
            Output::LateReadings => self.insert_rows_of::<LateReadingRow>(epoch, file).await,
            Output::DeadLetters => Err(SinkError::Schema {
                table: file.output.name().to_owned(),
                problem: "dead letters cannot go to ClickHouse".into(),
            }),
        }
    }

    /// Inserts a staged file's rows in inserts of at most `insert_rows`:
    /// the same batches, with the same ids, whoever commits the epoch.
    async fn insert_rows_of<T: StagedRow>(
        &mut self,
        epoch: u64,
        file: &StagedFile,
    ) -> Result<bool, SinkError> {
        let Some(table) = file.output.table() else {
            return Ok(true);
        };
        let mut reader = StagedRowsReader::open(&file.path)?;
        let mut rows: Vec<T> = Vec::new();
        let mut batch = 0u64;
        while reader.read(self.config.insert_rows.max(1), &mut rows)? > 0 {
            let id = InsertId {
                epoch,
                table,
                batch,
            };
            if !self.write_rows(T::table_rows(&rows), id).await? {
                return Ok(false);
            }
            batch += 1;
        }
        Ok(true)
    }

    fn clickhouse(&self) -> Result<&ClickHouseWriter, SinkError> {
        self.destinations
            .clickhouse
            .as_ref()
            .ok_or_else(no_clickhouse)
    }

    /// Writes one insert's worth of rows until it is written. Before each
    /// attempt — the first, since an earlier generation or run may have
    /// written these rows, and every retry, since a failed attempt may have
    /// reached the server anyway — the rows the server already has are
    /// looked up and left out (unless they are of windows newer than any
    /// the table holds: see [`Newest`]).
    async fn write_rows(&mut self, rows: TableRows<'_>, id: InsertId) -> Result<bool, SinkError> {
        let mut delay = self.config.retry_initial;
        let mut failures = 0u32;
        let mut check_first = true;
        // An attempt was made that may still run on the server.
        let mut attempted = false;
        if !self.lease_held().await {
            return Ok(false);
        }
        // Indexes of rows the table already has (ascending).
        let mut existing: Vec<usize> = Vec::new();
        let slot = rows.table() as usize;
        loop {
            // An aborted deployment must not wait for a hung request: the
            // attempt is dropped (its rows are rechecked by whoever retries).
            let abort = self.abort.clone();
            let attempt = if check_first {
                let ch = self
                    .destinations
                    .clickhouse
                    .as_ref()
                    .ok_or_else(no_clickhouse)?;
                let newest = &mut self.newest[slot];
                let checked = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Ok(false),
                    r = async {
                        if attempted {
                            ch.kill_insert(id).await?;
                        }
                        existing_rows(ch, rows, newest, &self.metrics).await
                    } => r,
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
                if !self.lease_held().await {
                    return Ok(false);
                }
                let ch = self.clickhouse()?;
                attempted = true;
                let result = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Ok(false),
                    r = ch.insert(rows, &existing, id) => r,
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
                        if let (Some(known), Some(ours)) =
                            (self.newest[slot].as_mut(), rows.newest_window())
                        {
                            *known = Some(known.map_or(ours, |k| k.max(ours)));
                        }
                    }
                }
                check_first = true;
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
                    epoch = id.epoch,
                    unwritten_rows = rows.len() - existing.len(),
                    retry_in = ?delay,
                    "commit failed; retrying (input is held back meanwhile)"
                );
            }
            if !self.pause(&mut delay).await {
                return Ok(false);
            }
        }
        if failures > 0 {
            tracing::info!(after_failures = failures, "the sink writes again");
        }
        Ok(true)
    }

    /// Sleeps for `delay` and doubles it (up to the maximum); `false` if
    /// aborted meanwhile.
    pub(super) async fn pause(&self, delay: &mut Duration) -> bool {
        let sleep = *delay;
        *delay = (*delay * 2).min(self.config.retry_max);
        tokio::select! {
            biased;
            _ = self.abort.cancelled() => false,
            _ = tokio::time::sleep(sleep) => true,
        }
    }
}

fn no_clickhouse() -> SinkError {
    SinkError::Protocol("the job has no ClickHouse writer".into())
}

/// A row type staged for ClickHouse.
trait StagedRow: DeserializeOwned {
    fn table_rows(rows: &[Self]) -> TableRows<'_>;
}

impl StagedRow for SensorsLocalRow {
    fn table_rows(rows: &[Self]) -> TableRows<'_> {
        TableRows::SensorsLocal(rows)
    }
}

impl StagedRow for SensorAggregatesRow {
    fn table_rows(rows: &[Self]) -> TableRows<'_> {
        TableRows::SensorAggregates(rows)
    }
}

impl StagedRow for LateReadingRow {
    fn table_rows(rows: &[Self]) -> TableRows<'_> {
        TableRows::LateReadings(rows)
    }
}

/// The indexes of the rows the table already has. `newest` is what is
/// known of the newest window in the rows' table (asked here the first
/// time): rows of newer windows are not looked up.
async fn existing_rows(
    ch: &ClickHouseWriter,
    rows: TableRows<'_>,
    newest: &mut Option<Option<u32>>,
    metrics: &JobMetrics,
) -> Result<Vec<usize>, SinkError> {
    if let Some(ours) = rows.newest_window() {
        let theirs = match *newest {
            Some(known) => known,
            None => {
                JobMetrics::add(&metrics.sink_lookups, 1);
                let found = ch.newest_window(rows.table()).await?;
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
    ch.existing(rows).await
}
