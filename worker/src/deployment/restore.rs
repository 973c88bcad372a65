//! Fetching this worker's part of a checkpoint before its tasks start: the
//! state files that overlap its key groups, its inputs' watermarks, and the
//! uncommitted sink epochs it commits again: those of every task of the
//! checkpoint whose key groups start in this worker's (exactly one worker
//! of a generation takes each task's epochs, whatever the new assignment).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prost::Message;
use weir_common::checkpoint::CheckpointStore;
use weir_common::keygroup::KeyGroupRange;
use weir_proto::checkpoint::CheckpointMetadata;

use super::{JobError, RestoreFrom};
use crate::window::{RestoredFile, RestoredWindow};

/// What a window task starts from.
#[derive(Debug)]
pub(super) struct Restored {
    pub inputs: Vec<(i64, bool)>,
    /// By input: some window task of the checkpoint, this worker's or
    /// not, restores the input as idle or had closed windows beyond its
    /// watermark (the task's watermark may then be ahead of the input's
    /// own): the input's source must not pre-aggregate.
    pub behind_somewhere: Vec<bool>,
    pub fired: i64,
    pub windows: Vec<RestoredWindow>,
    /// Sink epochs to commit again.
    pub sink_epochs: Vec<weir_proto::cluster::SinkEpoch>,
    pub files: usize,
    pub bytes: u64,
}

fn range(start: u32, end: u32) -> KeyGroupRange {
    KeyGroupRange {
        start: u16::try_from(start).unwrap_or(u16::MAX),
        end: u16::try_from(end).unwrap_or(u16::MAX),
    }
}

fn overlaps(a: KeyGroupRange, b: KeyGroupRange) -> bool {
    a.start < b.end && b.start < a.end
}

/// By input: whether some task of the checkpoint restores it as idle, or had
/// closed windows beyond its watermark, or does not list it (a partition
/// added since) after closing any window. Such a task's watermark may be
/// ahead of the input's own after the restore, so the input's source must
/// not pre-aggregate (see `crate::combine`).
fn behind_somewhere(metadata: &CheckpointMetadata, inputs: usize) -> Vec<bool> {
    let mut behind = vec![false; inputs];
    for task in &metadata.tasks {
        let mut listed = vec![false; inputs];
        for w in &task.inputs {
            let i = w.input as usize;
            if let Some(l) = listed.get_mut(i) {
                *l = true;
            }
            if w.idle || w.watermark < task.fired {
                if let Some(b) = behind.get_mut(i) {
                    *b = true;
                }
            }
        }
        if task.fired > i64::MIN {
            for (b, _) in behind.iter_mut().zip(&listed).filter(|(_, &l)| !l) {
                *b = true;
            }
        }
    }
    behind
}

/// Downloads the state of `mine` from checkpoint `from` into `dir`.
pub(super) async fn fetch(
    store: &CheckpointStore,
    from: &RestoreFrom,
    mine: KeyGroupRange,
    inputs: usize,
    dir: &Path,
) -> Result<Restored, JobError> {
    let fail = |what: String| JobError::Restore {
        checkpoint: from.checkpoint,
        message: format!("{} ({})", what, store.describe()),
    };
    // A store that fails for a reason that may pass (unreachable, I/O) is
    // not a damaged checkpoint: the generation fails and is tried again,
    // rather than the job falling back to an older checkpoint whose
    // successors' output is already committed.
    let store_error = |e: weir_common::checkpoint::StoreError| {
        if e.is_retryable() {
            JobError::Checkpoint(format!("cannot fetch checkpoint {}: {e}", from.checkpoint))
        } else {
            fail(e.to_string())
        }
    };
    let bytes = store.get(&from.metadata).await.map_err(store_error)?;
    let metadata = CheckpointMetadata::decode(bytes.as_slice())
        .map_err(|e| fail(format!("{}: {e}", from.metadata)))?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| JobError::Checkpoint(format!("cannot restore into {}: {e}", dir.display())))?;
    let mut watermarks: Vec<Option<(i64, bool)>> = vec![None; inputs];
    let mut fired = i64::MAX;
    let mut by_window: BTreeMap<i64, Vec<RestoredFile>> = BTreeMap::new();
    let mut fetched = BTreeSet::new();
    let mut total = 0u64;
    let mut sink_epochs = Vec::new();
    let behind_somewhere = behind_somewhere(&metadata, inputs);
    for task in &metadata.tasks {
        if u16::try_from(task.key_group_start).is_ok_and(|kg| mine.contains(kg)) {
            sink_epochs.extend(task.sink_epochs.iter().cloned());
        }
        if !overlaps(range(task.key_group_start, task.key_group_end), mine) {
            continue;
        }
        fired = fired.min(task.fired);
        // Every task saw the same watermarks of an input; the lowest is
        // the safe one if they ever differ.
        for w in &task.inputs {
            if let Some(slot) = watermarks.get_mut(w.input as usize) {
                *slot = Some(match *slot {
                    Some((wm, idle)) => (wm.min(w.watermark), idle && w.idle),
                    None => (w.watermark, w.idle),
                });
            }
        }
        for window in &task.windows {
            for f in &window.files {
                let kgs = range(f.key_group_start, f.key_group_end);
                if !overlaps(kgs, mine) || !fetched.insert(f.key.clone()) {
                    continue;
                }
                let local = dir.join(format!("{}.sst", fetched.len()));
                total += store.get_file(&f.key, &local).await.map_err(store_error)?;
                by_window.entry(window.end).or_default().push(RestoredFile {
                    local,
                    spill: f.spill,
                    key_groups: kgs,
                    key: f.key.clone(),
                });
            }
        }
    }
    Ok(Restored {
        inputs: watermarks
            .into_iter()
            .map(|w| w.unwrap_or((i64::MIN, false)))
            .collect(),
        behind_somewhere,
        fired: if fired == i64::MAX { i64::MIN } else { fired },
        sink_epochs,
        files: fetched.len(),
        bytes: total,
        windows: by_window
            .into_iter()
            .map(|(end, files)| RestoredWindow { end, files })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::cluster::{InputWatermark, TaskState};

    fn task(fired: i64, inputs: &[(u32, i64, bool)]) -> TaskState {
        TaskState {
            fired,
            inputs: inputs
                .iter()
                .map(|&(input, watermark, idle)| InputWatermark {
                    input,
                    watermark,
                    idle,
                    ended: watermark == i64::MAX,
                })
                .collect(),
            ..TaskState::default()
        }
    }

    #[test]
    fn inputs_a_task_may_be_ahead_of_are_found_in_every_task() {
        let metadata = CheckpointMetadata {
            tasks: vec![
                task(100, &[(0, 150, false), (1, 150, false), (2, 90, false)]),
                task(120, &[(0, 150, false), (1, 150, true), (2, 130, false)]),
            ],
            ..CheckpointMetadata::default()
        };
        // 0: fine; 1: idle in the second task; 2: behind the first task's
        // closed windows; 3: a partition neither lists, after windows closed.
        assert_eq!(
            behind_somewhere(&metadata, 4),
            vec![false, true, true, true]
        );
        // Before any window closed, an unlisted partition is not behind.
        let fresh = CheckpointMetadata {
            tasks: vec![task(i64::MIN, &[(0, 5, false)])],
            ..CheckpointMetadata::default()
        };
        assert_eq!(behind_somewhere(&fresh, 2), vec![false, false]);
        // Ended inputs are never behind.
        let ended = CheckpointMetadata {
            tasks: vec![task(100, &[(0, i64::MAX, false)])],
            ..CheckpointMetadata::default()
        };
        assert_eq!(behind_somewhere(&ended, 1), vec![false]);
    }
}
