//! The window operator's part of a checkpoint: what it writes when its
//! inputs are aligned, and how a new generation starts from it.
//!
//! At a barrier no window is half emitted (closing windows are emitted
//! whole before the next envelope is taken), so the state is: the open
//! windows (files in RocksDB, and accumulators in memory, written as one
//! more file per window without leaving memory), the inputs' watermarks,
//! and the last window fired.

use std::collections::BTreeMap;
use std::path::PathBuf;

use weir_common::keygroup::KeyGroupRange;

use super::{key_group_of_key, sensor_of, Pane, WindowOperator, PREFETCH_AHEAD};
use crate::state::{StateError, StateFile};

/// A snapshot, staged in a directory of its own until it is uploaded.
#[derive(Debug)]
pub struct OperatorSnapshot {
    pub checkpoint: u64,
    /// Holds every file below; removed once they are uploaded.
    pub dir: PathBuf,
    pub key_groups: KeyGroupRange,
    /// Open windows' files, by window end.
    pub windows: BTreeMap<i64, Vec<StateFile>>,
    /// Every input's (watermark, idle); an ended input has `i64::MAX`.
    pub inputs: Vec<(i64, bool)>,
    pub fired: i64,
}

/// A window's state from a checkpoint, downloaded to local files.
#[derive(Debug)]
pub struct RestoredWindow {
    pub end: i64,
    pub files: Vec<RestoredFile>,
}

/// A state file of a checkpoint, downloaded.
#[derive(Debug)]
pub struct RestoredFile {
    /// The download, moved into the state store.
    pub local: PathBuf,
    pub spill: u32,
    pub key_groups: KeyGroupRange,
    /// Its key in the checkpoint store.
    pub key: String,
}

impl WindowOperator {
    /// Snapshots the state for checkpoint `checkpoint` (see the module docs).
    pub fn snapshot(&mut self, checkpoint: u64) -> Result<OperatorSnapshot, StateError> {
        let mp = self.config.max_parallelism;
        let mut in_memory = Vec::new();
        for (&end, pane) in &self.panes {
            if pane.len() == 0 {
                continue;
            }
            let order = pane.sorted(mp);
            let file = self
                .state
                .snapshot_file(order.iter().enumerate().filter_map(|(k, &(key, slot))| {
                    if let Some(&(_, ahead)) = order.get(k + PREFETCH_AHEAD) {
                        pane.prefetch(ahead);
                    }
                    pane.get(slot)
                        .map(|acc| (key_group_of_key(key), sensor_of(key), acc))
                }))?;
            if let Some(f) = file {
                in_memory.push((end, f));
            }
        }
        let (dir, windows) = self.state.stage(checkpoint, in_memory)?;
        Ok(OperatorSnapshot {
            checkpoint,
            dir,
            key_groups: self.config.key_groups,
            windows,
            inputs: self.combiner.snapshot(),
            fired: self.fired,
        })
    }

    /// Starts from a checkpoint's state: its inputs' watermarks, the last
    /// window fired, and the files of open windows (which may hold key
    /// groups of other tasks too: reads are bounded by this task's range).
    ///
    /// Returns, for each file, its name in the state store's `files/` and
    /// its key in the checkpoint store (so that later checkpoints reference
    /// it instead of uploading it again), with its size.
    pub fn restore(
        &mut self,
        inputs: &[(i64, bool)],
        fired: i64,
        windows: Vec<RestoredWindow>,
    ) -> Result<Vec<(String, String, u64)>, StateError> {
        self.combiner.restore(inputs);
        // The minimum over the inputs may be below windows that closed
        // before the checkpoint (an input that was idle came back behind,
        // or a partition was added since): their readings are late, as they
        // would have been without the restart, instead of opening the
        // window again (a second row, or one the sink drops as written).
        self.combiner.raise_to(fired);
        self.fired = self.fired.max(fired);
        let mut names = Vec::new();
        for w in windows {
            for f in w.files {
                let file = self
                    .state
                    .restore_file(w.end, &f.local, f.spill, f.key_groups)?;
                let name = file
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                names.push((name, f.key, file.bytes));
            }
            if self.state.has_window(w.end) {
                self.panes.entry(w.end).or_insert_with(Pane::spilled);
            }
        }
        Ok(names)
    }
}
