//! The sink task: stages the window task's output by epoch and commits an
//! epoch once its checkpoint has completed (two-phase, as Flink's
//! `TwoPhaseCommitSinkFunction` and `FileSink`).
//!
//! Rows the window task emits between the barriers of checkpoints `n - 1`
//! and `n` are epoch `n`. They are staged as they arrive (see [`epoch`]).
//! At barrier `n` the epoch is sealed: its files are forced to disk and
//! uploaded to the checkpoint store, and the checkpoint uploader is told
//! which epochs the task has not committed yet — checkpoint `n` holds them.
//! When the coordinator completes checkpoint `n`, every epoch up to `n` is
//! committed (see [`commit`]). A recovery restores a checkpoint and commits
//! the epochs it holds again from their staged copies, never from
//! recomputed rows, so whether a reading went into a window or was late is
//! decided once, and a commit recognises what is already written.
//!
//! Output therefore appears when its checkpoint completes: what the job
//! emitted after the last completed checkpoint when it stops or fails is
//! not written, and the job emits it again from that checkpoint.

pub mod commit;
pub mod epoch;
pub mod output;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_common::sink::{OutputBatch, SinkError};

use crate::checkpoint::UploaderMsg;
use crate::metrics::JobMetrics;
use crate::window::SinkMsg;
pub use commit::Committer;
pub use epoch::{SealedEpoch, Stager};
pub use output::{late_to_main, tables_for, Destination, Destinations, Output};

/// Commit and retry settings.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// At most this many rows per insert into ClickHouse.
    pub insert_rows: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// How the sink task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Everything the window task produced is committed.
    Finished,
    /// Its input went away first (the job was stopped): the epochs of
    /// completed checkpoints are committed, these rows are not.
    Stopped { uncommitted: u64 },
    /// Aborted; these staged rows were not committed.
    Aborted { uncommitted: u64 },
}

pub struct SinkTask {
    pub stager: Stager,
    pub committer: Committer,
    /// Names staged files in the store (`shared/<instance>-e<n>-<output>`).
    pub instance: String,
    /// Told which epochs each checkpoint holds.
    pub checkpoints: Option<mpsc::Sender<UploaderMsg>>,
    /// The newest checkpoint the coordinator completed.
    pub completed: watch::Receiver<u64>,
    /// Epochs of the restored checkpoint: committed before anything else.
    pub restored: Vec<SealedEpoch>,
}

/// How a wait ended.
enum Next {
    Go,
    Aborted,
}

impl SinkTask {
    pub async fn run(mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<SinkOutcome, SinkError> {
        let mut sealed: VecDeque<SealedEpoch> = std::mem::take(&mut self.restored).into();
        if !sealed.is_empty() {
            tracing::info!(
                epochs = sealed.len(),
                rows = sealed.iter().map(SealedEpoch::rows).sum::<u64>(),
                "committing the epochs of the restored checkpoint"
            );
            // Their checkpoint completed: all of them are committed now.
            if let Next::Aborted = self.commit_through(&mut sealed, u64::MAX).await? {
                return Ok(self.aborted(&sealed));
            }
        }
        let mut watching = true;
        loop {
            tokio::select! {
                biased;
                _ = self.committer.abort.cancelled() => return Ok(self.aborted(&sealed)),
                changed = self.completed.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    let done = *self.completed.borrow_and_update();
                    if let Next::Aborted = self.commit_through(&mut sealed, done).await? {
                        return Ok(self.aborted(&sealed));
                    }
                }
                msg = rx.recv() => match msg {
                    Some(SinkMsg::Rows(batch)) => {
                        if let Next::Aborted = self.stage(&batch).await? {
                            return Ok(self.aborted(&sealed));
                        }
                    }
                    Some(SinkMsg::Barrier(n)) => {
                        if let Some(epoch) = self.stager.seal(n)? {
                            sealed.push_back(epoch);
                        }
                        if let Next::Aborted = self.hand_over(&mut sealed, n).await {
                            return Ok(self.aborted(&sealed));
                        }
                    }
                    Some(SinkMsg::End) => return self.finish(sealed).await,
                    None => {
                        // Stopped: what completed checkpoints hold is
                        // committed; the rest is emitted again on resume.
                        let done = *self.completed.borrow();
                        if let Next::Aborted = self.commit_through(&mut sealed, done).await? {
                            return Ok(self.aborted(&sealed));
                        }
                        let uncommitted = self.uncommitted(&sealed);
                        if uncommitted > 0 {
                            tracing::info!(
                                rows = uncommitted,
                                "stopped: rows emitted after the last completed checkpoint are not written (they are emitted again when the job resumes)"
                            );
                        }
                        return Ok(SinkOutcome::Stopped { uncommitted });
                    }
                },
            }
        }
    }

    fn uncommitted(&self, sealed: &VecDeque<SealedEpoch>) -> u64 {
        sealed.iter().map(SealedEpoch::rows).sum::<u64>() + self.stager.rows()
    }

    fn aborted(&self, sealed: &VecDeque<SealedEpoch>) -> SinkOutcome {
        SinkOutcome::Aborted {
            uncommitted: self.uncommitted(sealed),
        }
    }

    /// Stages a batch, retrying what may pass (a full disk).
    async fn stage(&mut self, batch: &OutputBatch) -> Result<Next, SinkError> {
        let mut done = [false; 4];
        let mut delay = self.committer.config.retry_initial;
        loop {
            match self.stager.stage(batch, &mut done) {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot stage output; retrying (input is held back meanwhile)");
                }
                Err(e) => return Err(e),
            }
            if !self.committer.pause(&mut delay).await {
                return Ok(Next::Aborted);
            }
        }
        if !batch.dead_letters.is_empty() {
            JobMetrics::add(
                &self.committer.metrics.dead_letters,
                batch.dead_letters.len() as u64,
            );
        }
        Ok(Next::Go)
    }

    /// Commits the sealed epochs up to checkpoint `done`, oldest first.
    async fn commit_through(
        &mut self,
        sealed: &mut VecDeque<SealedEpoch>,
        done: u64,
    ) -> Result<Next, SinkError> {
        while let Some(epoch) = sealed.front_mut().filter(|e| e.epoch <= done) {
            let rows = epoch.rows();
            if !self.committer.commit(epoch).await? {
                return Ok(Next::Aborted);
            }
            // How long its rows waited (from the first one's emission: for
            // window rows, the watermark passing their window).
            let waited_ms = epoch
                .first_row_at
                .map(|t| weir_common::time::millis(t.elapsed()));
            tracing::info!(epoch = epoch.epoch, rows, waited_ms, "epoch committed");
            sealed.pop_front();
        }
        Ok(Next::Go)
    }

    /// Uploads what the store does not have of the sealed epochs and tells
    /// the checkpoint uploader which of them checkpoint `n` holds. A failed
    /// upload declines the checkpoint (the next one uploads again).
    async fn hand_over(&mut self, sealed: &mut VecDeque<SealedEpoch>, n: u64) -> Next {
        let mut failure = None;
        'upload: for epoch in sealed.iter_mut() {
            for file in epoch.files.iter_mut().filter(|f| f.key.is_none()) {
                let key = format!(
                    "shared/{}-e{}-{}",
                    self.instance,
                    epoch.epoch,
                    file.output.name()
                );
                let put = tokio::select! {
                    biased;
                    _ = self.committer.abort.cancelled() => return Next::Aborted,
                    r = self.committer.store.put_file(&key, &file.path) => r,
                };
                match put {
                    Ok(_) => file.key = Some(key),
                    Err(e) => {
                        failure = Some(format!("cannot keep staged output: {e}"));
                        break 'upload;
                    }
                }
            }
        }
        let Some(tx) = &self.checkpoints else {
            return Next::Go;
        };
        let msg = match failure {
            Some(reason) => UploaderMsg::StageFailed {
                checkpoint: n,
                reason,
            },
            None => UploaderMsg::Staged {
                checkpoint: n,
                epochs: sealed.iter().filter_map(SealedEpoch::to_pb).collect(),
            },
        };
        // The uploader ends only with the deployment.
        let _ = tx.send(msg).await;
        Next::Go
    }

    /// The window task has emitted everything (after the final
    /// checkpoint's barriers): waits for the checkpoints that hold the
    /// sealed epochs to complete, and commits them.
    async fn finish(mut self, mut sealed: VecDeque<SealedEpoch>) -> Result<SinkOutcome, SinkError> {
        if self.stager.rows() > 0 {
            return Err(SinkError::Staged {
                message: format!(
                    "{} rows were emitted after the job's final checkpoint: no checkpoint covers them",
                    self.stager.rows()
                ),
                retryable: false,
            });
        }
        loop {
            let done = *self.completed.borrow_and_update();
            if let Next::Aborted = self.commit_through(&mut sealed, done).await? {
                return Ok(self.aborted(&sealed));
            }
            if sealed.is_empty() {
                return Ok(SinkOutcome::Finished);
            }
            tokio::select! {
                biased;
                _ = self.committer.abort.cancelled() => return Ok(self.aborted(&sealed)),
                changed = self.completed.changed() => {
                    if changed.is_err() {
                        // The deployment is gone: nothing completes these.
                        return Ok(self.aborted(&sealed));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
