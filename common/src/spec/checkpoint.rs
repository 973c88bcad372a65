//! The `checkpoint` section of the job spec.

use serde::{Deserialize, Serialize};

use super::{invalid, Duration, SpecError};

/// When and where the job's state is checkpointed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSpec {
    /// Time from one checkpoint's trigger to the next.
    pub interval: Duration,
    /// A checkpoint not completed within this is abandoned.
    pub timeout: Duration,
    /// Also take a checkpoint as soon as every task has closed a window
    /// (`min_pause` permitting): output is committed when a checkpoint
    /// completes, so this makes rows appear seconds after the watermark
    /// passes their window instead of up to `interval` later.
    pub on_window_close: bool,
    /// At least this long between the end of one checkpoint and the trigger
    /// of the next (so that slow checkpoints do not follow each other
    /// back to back).
    pub min_pause: Duration,
    /// Where checkpoints go: `s3://BUCKET/PREFIX` or a directory. Default:
    /// `checkpoints` under `state.dir`.
    pub store: Option<String>,
    /// Completed checkpoints kept; older ones and the files only they
    /// reference are deleted.
    pub retention: u32,
    /// S3: address the bucket in the path (`endpoint/bucket/key`), as most
    /// S3-compatible servers want.
    pub s3_path_style: bool,
    /// Start from this checkpoint or savepoint of the store instead of the
    /// latest completed one (a coordinator started again with it starts
    /// from it again).
    pub restore_from: Option<u64>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
            on_window_close: true,
            min_pause: Duration::from_millis(0),
            store: None,
            retention: 3,
            s3_path_style: false,
            restore_from: None,
        }
    }
}

impl CheckpointSpec {
    /// How to reach the store.
    pub fn store_options(&self) -> crate::checkpoint::StoreOptions {
        crate::checkpoint::StoreOptions {
            s3_path_style: self.s3_path_style,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.interval.as_millis() < 100 {
            return Err(invalid("checkpoint.interval", "must be at least 100ms"));
        }
        if self.timeout.as_millis() < 100 {
            return Err(invalid("checkpoint.timeout", "must be at least 100ms"));
        }
        if self.retention == 0 {
            return Err(invalid(
                "checkpoint.retention",
                "must keep at least 1 completed checkpoint",
            ));
        }
        if let Some(store) = &self.store {
            crate::checkpoint::StoreLocation::parse(store)
                .map_err(|e| invalid("checkpoint.store", e))?;
        }
        Ok(())
    }
}
