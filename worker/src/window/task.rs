//! The window task: the actor around the [`WindowOperator`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_common::position::Position;
use weir_common::sink::OutputBatch;
use weir_common::time::millis;

use super::align::{Aligner, Step};
use super::inputs::Inputs;
use super::{Produced, WindowOperator, EMIT_ROWS};
use crate::checkpoint::{TaskSnapshot, UploaderMsg};
use crate::envelope::Envelope;
use crate::metrics::JobMetrics;
use crate::state::StateError;

/// Messages from a window task to its sink.
#[derive(Debug)]
pub enum SinkMsg {
    Rows(OutputBatch),
    /// Checkpoint `n`'s barriers: the rows sent before (since the previous
    /// barrier) are epoch `n`.
    Barrier(u64),
    /// Every window has been emitted (and the final checkpoint's barriers
    /// have passed): commit and finish.
    End,
}

/// Tells the deployment that every window ending at or before the
/// watermark is closed (their rows are emitted): the coordinator then takes
/// a checkpoint that commits them. The end of input (+∞) is left to the
/// final checkpoint.
fn report_closed(closed: &tokio::sync::watch::Sender<i64>, watermark: i64, window_ms: i64) {
    if watermark == i64::MIN || watermark == i64::MAX {
        return;
    }
    let Some(through) = watermark.checked_sub(watermark.rem_euclid(window_ms)) else {
        return;
    };
    closed.send_if_modified(|c| {
        let newer = through > *c;
        *c = (*c).max(through);
        newer
    });
}

/// How a window task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutcome {
    /// All inputs ended and every window was emitted.
    Finished,
    /// Its inputs went away first (the job was stopped); open windows were
    /// not emitted.
    Stopped { open_windows: usize },
}

/// The window task: feeds envelopes to the operator and rows to the sink,
/// until every input closed or `stop` is cancelled. Inputs that delivered a
/// checkpoint barrier are held back until all did (see [`super::align`]).
///
/// At the end of every input all windows are emitted, but the task goes on
/// taking barriers (ended inputs still deliver them) until every source
/// closed its input: the final checkpoint, taken after the end, is what
/// tells the sources that their input is done with.
pub async fn run_window_task(
    mut op: WindowOperator,
    mut inputs: Inputs,
    sink: mpsc::Sender<SinkMsg>,
    checkpoints: mpsc::Sender<UploaderMsg>,
    windows_closed: tokio::sync::watch::Sender<i64>,
    metrics: Arc<JobMetrics>,
    stop: CancellationToken,
) -> Result<WindowOutcome, StateError> {
    let window_ms = op.config.window_ms.max(1);
    let mut last_watermark = i64::MIN;
    let mut produced = Produced::default();
    let n_inputs = op.config.input_names.len();
    let mut closed = vec![false; n_inputs];
    let mut aligner = Aligner::new(n_inputs);
    // By input: where its partition resumes from the checkpoint being
    // aligned (its barrier's, or its end's, position and watermark).
    let mut resume_at: Vec<(Option<Position>, i64)> = vec![(None, i64::MIN); n_inputs];
    let mut aligning_since = Instant::now();
    let mut aligned: Option<u64> = None;
    loop {
        let envelope = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            e = inputs.recv(&aligner) => e,
        };
        let Some(envelope) = envelope else {
            return Ok(WindowOutcome::Stopped {
                open_windows: op.open_windows(),
            });
        };
        match envelope {
            Envelope::Records(batch) => {
                op.on_records(&batch, &mut produced)?;
            }
            Envelope::Partials(batch) => {
                op.on_partials(batch)?;
            }
            Envelope::Watermark { input, watermark } => {
                op.on_watermark(input, watermark);
            }
            Envelope::Idle { input } => {
                op.on_idle(input);
            }
            Envelope::End { input, through } => {
                op.on_end(input);
                if let Some(slot) = resume_at.get_mut(input as usize) {
                    *slot = (through, i64::MAX);
                }
                if let Step::Aligned(n) = aligner.on_end(input as usize) {
                    aligned = Some(n);
                }
            }
            Envelope::DeadLetters { letters, .. } => {
                produced.rows.dead_letters.extend(letters);
            }
            Envelope::Closed { input } => {
                if let Some(c) = closed.get_mut(input as usize) {
                    *c = true;
                }
            }
            Envelope::Barrier {
                input,
                checkpoint,
                through,
                watermark,
            } => {
                let starts = aligner.aligning() != Some(checkpoint);
                let (abandoned, step) = aligner.on_barrier(input as usize, checkpoint);
                if starts && step != Step::None {
                    // The first barrier of this checkpoint (which aligns at
                    // once when it is the only input left).
                    aligning_since = Instant::now();
                }
                if let Some(old) = abandoned {
                    tracing::info!(
                        checkpoint = old,
                        newer = checkpoint,
                        "checkpoint abandoned: a newer barrier arrived before it aligned"
                    );
                }
                if step != Step::None {
                    if let Some(slot) = resume_at.get_mut(input as usize) {
                        *slot = (through, watermark);
                    }
                }
                if let Step::Aligned(n) = step {
                    aligned = Some(n);
                }
            }
        }
        // Rows of closed windows go to the sink even when stopping: a stop
        // writes what was emitted. Closing windows are emitted whole before
        // the next envelope, in messages of bounded size.
        loop {
            op.emit(EMIT_ROWS, &mut produced)?;
            JobMetrics::add(
                &metrics.windows_closed,
                std::mem::take(&mut produced.windows),
            );
            if !produced.rows.is_empty() {
                let rows = std::mem::take(&mut produced.rows);
                if sink.send(SinkMsg::Rows(rows)).await.is_err() {
                    return Ok(WindowOutcome::Stopped {
                        open_windows: op.open_windows(),
                    });
                }
            }
            if !op.has_output() {
                break;
            }
        }
        JobMetrics::add(&metrics.late_records, std::mem::take(&mut produced.late));
        let watermark = op.watermark();
        if watermark != last_watermark {
            last_watermark = watermark;
            report_closed(&windows_closed, watermark, window_ms);
        }
        metrics.watermark.store(watermark, Relaxed);
        metrics.state_spills.store(op.spills(), Relaxed);
        metrics
            .open_accumulators
            .store(op.accumulators_in_memory() as u64, Relaxed);
        metrics
            .open_windows
            .store(op.open_windows() as u64, Relaxed);
        if let Some(n) = aligned.take() {
            // Every window the barriers closed is emitted (above): the state
            // is exactly that of the records before them.
            let alignment_ms = millis(aligning_since.elapsed());
            let started = Instant::now();
            let snapshot = op.snapshot(n)?;
            let sync_ms = millis(started.elapsed());
            tracing::debug!(checkpoint = n, alignment_ms, sync_ms, "state snapshotted");
            if sink.send(SinkMsg::Barrier(n)).await.is_err() {
                return Ok(WindowOutcome::Stopped {
                    open_windows: op.open_windows(),
                });
            }
            let snapshot = TaskSnapshot {
                operator: snapshot,
                positions: resume_at.clone(),
                alignment_ms,
                sync_ms,
            };
            // The uploader ends only with the deployment.
            let _ = checkpoints
                .send(UploaderMsg::Snapshot(Box::new(snapshot)))
                .await;
        }
        if closed.iter().all(|&c| c) && op.is_finished() {
            // If the sink is gone the job is failing anyway; its error wins.
            let _ = sink.send(SinkMsg::End).await;
            return Ok(WindowOutcome::Finished);
        }
    }
}
