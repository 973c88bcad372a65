//! A deployment's checkpoint uploader: the asynchronous part of a
//! checkpoint.
//!
//! When its inputs are aligned the window task stages a snapshot (see
//! [`crate::window::snapshot`]) and goes on processing; the sink is told to
//! write everything it was given before the barriers. This task uploads the
//! snapshot's files the store does not have yet — a file is uploaded once,
//! under a name no other task or generation can use, and later checkpoints
//! reference it — and acknowledges the checkpoint to the coordinator once
//! the files are in the store *and* the sink has staged (and uploaded) its
//! output of the epoch the barrier ends: the ack carries the epochs the
//! sink has not committed yet. A failed upload declines the checkpoint; the
//! job goes on.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_common::checkpoint::CheckpointStore;
use weir_common::position::Position;
use weir_common::time::millis;
use weir_proto::cluster as pb;

use crate::window::OperatorSnapshot;

/// What the uploader is told.
#[derive(Debug)]
pub enum UploaderMsg {
    /// The window task's snapshot of a checkpoint.
    Snapshot(Box<TaskSnapshot>),
    /// The sink has staged and uploaded everything sent before this
    /// checkpoint's barriers; these are the epochs it has not committed.
    Staged {
        checkpoint: u64,
        epochs: Vec<pb::SinkEpoch>,
    },
    /// The sink could not keep its staged output for this checkpoint.
    StageFailed { checkpoint: u64, reason: String },
    /// The coordinator completed this checkpoint: the files it references
    /// are kept by retention, so later checkpoints may reference them
    /// without uploading them again.
    Completed(u64),
}

/// A window task's part of a checkpoint, before upload.
#[derive(Debug)]
pub struct TaskSnapshot {
    pub operator: OperatorSnapshot,
    /// Per input: where its partition resumes and its source's watermark
    /// there (from the barriers).
    pub positions: Vec<(Option<Position>, i64)>,
    pub alignment_ms: u64,
    pub sync_ms: u64,
}

/// What the deployment reports to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointEvent {
    Ack(pb::CheckpointAck),
    Declined(pb::CheckpointDeclined),
    /// A source read its partition (by input index) to the end: once all
    /// have, the coordinator takes the final checkpoint.
    InputEnded(u32),
}

/// Names state files uniquely: `shared/<instance>-<file>`.
pub struct Uploader {
    pub store: CheckpointStore,
    pub generation: u64,
    pub worker_id: String,
    /// Unique to this deployment (worker, generation, and a random part).
    pub instance: String,
    pub partition_names: Vec<String>,
    /// Files a completed checkpoint references, by local file name: (key,
    /// bytes). Files uploaded for a checkpoint that did not complete may be
    /// deleted by retention: they are uploaded again when needed.
    pub uploaded: HashMap<String, (String, u64)>,
    /// Files uploaded for checkpoints not completed yet, by checkpoint.
    pub tentative: BTreeMap<u64, Vec<(String, String, u64)>>,
    pub events: mpsc::Sender<CheckpointEvent>,
}

impl Uploader {
    pub async fn run(mut self, mut inbox: mpsc::Receiver<UploaderMsg>, abort: CancellationToken) {
        // What the sink staged for the newest checkpoint it saw.
        let mut staged: Option<(u64, Vec<pb::SinkEpoch>)> = None;
        // An uploaded checkpoint waiting for the sink.
        let mut ready: Option<pb::CheckpointAck> = None;
        loop {
            let msg = tokio::select! {
                biased;
                _ = abort.cancelled() => return,
                m = inbox.recv() => m,
            };
            match msg {
                None => return,
                Some(UploaderMsg::Staged { checkpoint, epochs }) => {
                    staged = Some((checkpoint, epochs));
                }
                Some(UploaderMsg::StageFailed { checkpoint, reason }) => {
                    if ready.as_ref().is_some_and(|a| a.checkpoint == checkpoint) {
                        ready = None;
                    }
                    if !self.decline(checkpoint, reason).await {
                        return;
                    }
                }
                Some(UploaderMsg::Completed(n)) => {
                    let done: Vec<u64> = self.tentative.range(..=n).map(|(k, _)| *k).collect();
                    for k in done {
                        if let Some(files) = self.tentative.remove(&k) {
                            if k == n {
                                for (name, key, size) in files {
                                    self.uploaded.insert(name, (key, size));
                                }
                            }
                        }
                    }
                }
                Some(UploaderMsg::Snapshot(s)) => {
                    let n = s.operator.checkpoint;
                    let dir = s.operator.dir.clone();
                    let started = Instant::now();
                    let uploaded = tokio::select! {
                        _ = abort.cancelled() => return,
                        r = self.upload(*s) => r,
                    };
                    remove_dir(dir).await;
                    match uploaded {
                        Ok(mut ack) => {
                            ack.async_ms = millis(started.elapsed());
                            ready = Some(ack);
                        }
                        Err(reason) => {
                            ready = None;
                            if !self.decline(n, reason).await {
                                return;
                            }
                        }
                    }
                }
            }
            let matched =
                matches!((&ready, &staged), (Some(a), Some((n, _))) if a.checkpoint == *n);
            if matched {
                if let (Some(mut ack), Some((_, epochs))) = (ready.take(), staged.take()) {
                    if let Some(state) = ack.state.as_mut() {
                        state.sink_epochs = epochs;
                    }
                    tracing::debug!(checkpoint = ack.checkpoint, "checkpoint acknowledged");
                    if self.events.send(CheckpointEvent::Ack(ack)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Tells the coordinator this task cannot complete `checkpoint`;
    /// `false` if the deployment is gone.
    async fn decline(&self, checkpoint: u64, reason: String) -> bool {
        tracing::warn!(checkpoint, %reason, "checkpoint declined");
        let declined = pb::CheckpointDeclined {
            generation: self.generation,
            checkpoint,
            reason,
        };
        self.events
            .send(CheckpointEvent::Declined(declined))
            .await
            .is_ok()
    }

    /// Uploads the files the store does not have; returns the ack.
    async fn upload(&mut self, s: TaskSnapshot) -> Result<pb::CheckpointAck, String> {
        let op = s.operator;
        let mut windows = Vec::with_capacity(op.windows.len());
        let (mut bytes, mut incremental) = (0u64, 0u64);
        for (end, files) in op.windows {
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                let name = f
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (key, size) = match self.uploaded.get(&name) {
                    Some(known) => known.clone(),
                    None => {
                        let key = format!("shared/{}-{name}", self.instance);
                        let size = self
                            .store
                            .put_file(&key, &f.path)
                            .await
                            .map_err(|e| e.to_string())?;
                        incremental += size;
                        // Only files that last (spills, restored files) are
                        // referenced again by later checkpoints.
                        if f.lasting {
                            self.tentative.entry(op.checkpoint).or_default().push((
                                name,
                                key.clone(),
                                size,
                            ));
                        }
                        (key, size)
                    }
                };
                bytes += size;
                out.push(pb::StateFile {
                    key,
                    bytes: size,
                    spill: f.spill,
                    key_group_start: u32::from(f.key_groups.start),
                    key_group_end: u32::from(f.key_groups.end),
                });
            }
            windows.push(pb::WindowState { end, files: out });
        }
        let inputs = op
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &(watermark, idle))| pb::InputWatermark {
                input: i as u32,
                watermark,
                idle,
                ended: watermark == i64::MAX,
            })
            .collect();
        let positions = s
            .positions
            .iter()
            .enumerate()
            .map(|(i, &(position, watermark))| pb::PartitionPosition {
                input: i as u32,
                name: self.partition_names.get(i).cloned().unwrap_or_default(),
                position: position.map(Into::into),
                watermark,
            })
            .collect();
        Ok(pb::CheckpointAck {
            generation: self.generation,
            checkpoint: op.checkpoint,
            state: Some(pb::TaskState {
                worker_id: self.worker_id.clone(),
                key_group_start: u32::from(op.key_groups.start),
                key_group_end: u32::from(op.key_groups.end),
                windows,
                inputs,
                fired: op.fired,
                bytes,
                incremental_bytes: incremental,
                sink_epochs: Vec::new(),
            }),
            positions,
            alignment_ms: s.alignment_ms,
            sync_ms: s.sync_ms,
            async_ms: 0,
        })
    }
}

async fn remove_dir(dir: PathBuf) {
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot remove a staged snapshot");
    }
}
