//! What the coordinators replicate: commands, and the job record they
//! build.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Completed checkpoints kept in the record (the checkpoint store keeps
/// its own retention; these are what a new leader may restore).
pub const CHECKPOINTS_KEPT: usize = 32;
/// Rescales kept in the record.
pub const RESCALES_KEPT: usize = 20;

/// A change of the job's control state. Commands are applied in log order
/// on every coordinator; applying one never fails (a command that does not
/// fit the record is kept out of it and said so in the [`Response`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The job spec (YAML) the coordinators run; its version goes up by one.
    SetSpec { yaml: String },
    /// The job's lifecycle state (and, when it failed, why).
    SetLifecycle { state: Lifecycle, error: String },
    /// Generation `generation` was deployed with `assignment` (a
    /// protobuf-encoded `weir.cluster.Assignment`). Generations only go up.
    Deployed {
        generation: u64,
        assignment: Vec<u8>,
    },
    /// A checkpoint completed: its metadata is in the checkpoint store. The
    /// leader records it here before it tells the workers, so that a new
    /// leader knows every checkpoint whose output was committed.
    CheckpointCompleted(CheckpointPointer),
    /// A rescale ended.
    Rescaled(RescaleRecord),
}

/// The job's lifecycle, as the coordinators' actor has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifecycle {
    #[default]
    Waiting,
    Running,
    Restarting,
    Finished,
    Stopped,
    Failed,
}

/// A completed checkpoint: where its metadata is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub checkpoint: u64,
    pub generation: u64,
    /// Its metadata's key in the job's checkpoint store.
    pub metadata: String,
    pub savepoint: bool,
    /// Completed at (epoch ms).
    pub completed_ms: i64,
}

/// One rescale, as the job status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescaleRecord {
    pub from: u32,
    pub to: u32,
    pub cause: String,
    pub checkpoint: u64,
    pub generation: u64,
    pub started_ms: i64,
    pub duration_ms: u64,
    pub outcome: String,
}

/// The job's control state: what a new leader needs to carry on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec_yaml: String,
    /// 0 before the first spec.
    pub spec_version: u64,
    pub lifecycle: Lifecycle,
    /// Why the job failed (when it did).
    pub error: String,
    /// The latest generation deployed (0: none yet).
    pub generation: u64,
    pub assignment: Vec<u8>,
    /// Newest last.
    pub checkpoints: VecDeque<CheckpointPointer>,
    /// Newest last.
    pub rescales: VecDeque<RescaleRecord>,
}

/// What applying a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// False when the command did not fit the record (an older generation
    /// or checkpoint than the record's); the record is unchanged then.
    pub applied: bool,
    /// The spec version after the command.
    pub spec_version: u64,
}

impl JobRecord {
    /// Applies `command`. Deterministic: every coordinator gets the same
    /// record from the same log.
    pub fn apply(&mut self, command: Command) -> Response {
        let applied = match command {
            Command::SetSpec { yaml } => {
                self.spec_yaml = yaml;
                self.spec_version = self.spec_version.saturating_add(1);
                true
            }
            Command::SetLifecycle { state, error } => {
                self.lifecycle = state;
                self.error = error;
                true
            }
            Command::Deployed {
                generation,
                assignment,
            } => {
                if generation > self.generation {
                    self.generation = generation;
                    self.assignment = assignment;
                    true
                } else {
                    false
                }
            }
            Command::CheckpointCompleted(pointer) => {
                let newer = self
                    .checkpoints
                    .back()
                    .is_none_or(|last| pointer.checkpoint > last.checkpoint);
                if newer {
                    self.checkpoints.push_back(pointer);
                    while self.checkpoints.len() > CHECKPOINTS_KEPT {
                        self.checkpoints.pop_front();
                    }
                }
                newer
            }
            Command::Rescaled(record) => {
                self.rescales.push_back(record);
                while self.rescales.len() > RESCALES_KEPT {
                    self.rescales.pop_front();
                }
                true
            }
        };
        Response {
            applied,
            spec_version: self.spec_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(checkpoint: u64) -> CheckpointPointer {
        CheckpointPointer {
            checkpoint,
            generation: 1,
            metadata: format!("chk-{checkpoint}/_metadata"),
            savepoint: false,
            completed_ms: 0,
        }
    }

    #[test]
    fn generations_and_checkpoints_only_go_forward() {
        let mut r = JobRecord::default();
        assert!(
            r.apply(Command::Deployed {
                generation: 2,
                assignment: vec![1]
            })
            .applied
        );
        let stale = r.apply(Command::Deployed {
            generation: 1,
            assignment: vec![9],
        });
        assert!(!stale.applied);
        assert_eq!((r.generation, r.assignment.as_slice()), (2, &[1u8][..]));
        assert!(r.apply(Command::CheckpointCompleted(pointer(5))).applied);
        assert!(!r.apply(Command::CheckpointCompleted(pointer(4))).applied);
        assert_eq!(r.checkpoints.len(), 1);
    }

    #[test]
    fn the_spec_version_counts_specs_and_history_is_bounded() {
        let mut r = JobRecord::default();
        assert_eq!(
            r.apply(Command::SetSpec { yaml: "a".into() }).spec_version,
            1
        );
        assert_eq!(
            r.apply(Command::SetSpec { yaml: "b".into() }).spec_version,
            2
        );
        for id in 1..=100 {
            r.apply(Command::CheckpointCompleted(pointer(id)));
        }
        assert_eq!(r.checkpoints.len(), CHECKPOINTS_KEPT);
        assert_eq!(r.checkpoints.back().map(|p| p.checkpoint), Some(100));
    }
}
