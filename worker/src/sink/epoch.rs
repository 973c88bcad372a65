//! Epochs of output: staged as the window task emits them, sealed at a
//! checkpoint's barrier, committed once that checkpoint has completed.
//!
//! Rows for ClickHouse are staged as postcard records in a local staging
//! directory; lines for files are staged in hidden in-progress files in
//! the output directory itself, so that committing them is a rename (see
//! [`weir_common::sink::parts`]). A sealed epoch's files are uploaded to the
//! checkpoint store with the checkpoint, so that a recovery — on this
//! worker or any other — commits the same rows.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use weir_common::keygroup::KeyGroupRange;
use weir_common::sink::jsonl::JsonlFile;
use weir_common::sink::parts::in_progress_path;
use weir_common::sink::stage::StagedRowsWriter;
use weir_common::sink::{OutputBatch, SinkError};
use weir_proto::cluster as pb;

use super::output::{Destination, Destinations, Output};

/// How an output's rows are staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Postcard records, inserted into ClickHouse on commit.
    Rows,
    /// JSON lines, renamed into place on commit.
    JsonLines,
}

/// One output's staged rows of an epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct StagedFile {
    pub output: Output,
    pub format: Format,
    /// Where the file is (or goes, when fetched from the store).
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    /// Its key in the checkpoint store, once uploaded.
    pub key: Option<String>,
    /// Whether `path` holds it (a restored epoch's files are fetched when
    /// committed).
    pub local: bool,
}

/// An epoch staged whole: its checkpoint's barriers have passed.
#[derive(Clone, Debug, PartialEq)]
pub struct SealedEpoch {
    pub epoch: u64,
    /// The key groups of the task that staged it (they name its parts).
    pub key_groups: KeyGroupRange,
    pub files: Vec<StagedFile>,
    /// Taken over from a checkpoint: it may have been committed before.
    pub restored: bool,
    /// When its first row was staged (emitted): its rows have waited since
    /// at most this long for their commit (`None` when restored).
    pub first_row_at: Option<std::time::Instant>,
}

impl SealedEpoch {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// For a checkpoint; `None` while a file is not uploaded.
    pub fn to_pb(&self) -> Option<pb::SinkEpoch> {
        let outputs = self
            .files
            .iter()
            .map(|f| {
                Some(pb::StagedOutput {
                    output: f.output.name().to_owned(),
                    key: f.key.clone()?,
                    rows: f.rows,
                    bytes: f.bytes,
                    format: match f.format {
                        Format::Rows => pb::StagedFormat::Rows,
                        Format::JsonLines => pb::StagedFormat::JsonLines,
                    } as i32,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(pb::SinkEpoch {
            epoch: self.epoch,
            key_group_start: u32::from(self.key_groups.start),
            key_group_end: u32::from(self.key_groups.end),
            outputs,
        })
    }

    /// An epoch of a restored checkpoint, to commit again. Its files are
    /// fetched to the staging directory (rows) or to in-progress files of
    /// this generation in their output directories (lines).
    pub fn restored(
        e: &pb::SinkEpoch,
        staging: &Path,
        destinations: &Destinations,
        generation: u64,
        mine: KeyGroupRange,
    ) -> Result<SealedEpoch, String> {
        let key_groups = KeyGroupRange {
            start: u16::try_from(e.key_group_start).map_err(|_| "bad key groups".to_owned())?,
            end: u16::try_from(e.key_group_end).map_err(|_| "bad key groups".to_owned())?,
        };
        let mut files = Vec::with_capacity(e.outputs.len());
        for o in &e.outputs {
            let output = Output::from_name(&o.output)
                .ok_or_else(|| format!("epoch {}: unknown output `{}`", e.epoch, o.output))?;
            let format = match pb::StagedFormat::try_from(o.format) {
                Ok(pb::StagedFormat::Rows) => Format::Rows,
                Ok(pb::StagedFormat::JsonLines) => Format::JsonLines,
                Err(_) => return Err(format!("epoch {}: unknown staged format", e.epoch)),
            };
            let path = match (destinations.get(output), format) {
                (Some(Destination::ClickHouse), Format::Rows) => {
                    staging.join(format!("restored-e{}-{}.rows", e.epoch, output.name()))
                }
                (Some(Destination::Files(dir)), Format::JsonLines) => {
                    // Unique among this task's in-progress files: restored
                    // epochs count down from the top.
                    in_progress_path(dir, generation, mine, u64::MAX.saturating_sub(e.epoch))
                }
                _ => {
                    return Err(format!(
                        "epoch {} staged `{}` for another destination than this job's \
                         (the sink changed since the checkpoint)",
                        e.epoch, o.output
                    ))
                }
            };
            files.push(StagedFile {
                output,
                format,
                path,
                rows: o.rows,
                bytes: o.bytes,
                key: Some(o.key.clone()),
                local: false,
            });
        }
        Ok(SealedEpoch {
            epoch: e.epoch,
            key_groups,
            files,
            restored: true,
            first_row_at: None,
        })
    }
}

/// One output's file of the epoch being staged.
#[derive(Debug)]
enum Stage {
    Rows(StagedRowsWriter),
    Lines(JsonlFile),
}

/// Stages the rows of the open epoch.
pub struct Stager {
    /// Where rows for ClickHouse are staged.
    pub dir: PathBuf,
    pub destinations: Destinations,
    pub generation: u64,
    pub key_groups: KeyGroupRange,
    /// Numbers this task's epochs as they open (their checkpoint number is
    /// known only when they are sealed).
    seq: u64,
    open: [Option<Stage>; 4],
    /// Rows staged in the open epoch, by output.
    rows: [u64; 4],
    /// When the open epoch's first row was staged.
    first_row_at: Option<std::time::Instant>,
    /// Dead-letter kinds logged (each kind once).
    seen_kinds: HashSet<String>,
}

impl Stager {
    pub fn new(
        dir: PathBuf,
        destinations: Destinations,
        generation: u64,
        key_groups: KeyGroupRange,
    ) -> Self {
        Stager {
            dir,
            destinations,
            generation,
            key_groups,
            seq: 0,
            open: Default::default(),
            rows: [0; 4],
            first_row_at: None,
            seen_kinds: HashSet::new(),
        }
    }

    /// Rows staged in the open epoch.
    pub fn rows(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// Stages `batch`, output by output. `done` marks the outputs already
    /// staged by an earlier call that failed part way, so that a retry
    /// stages each row once.
    pub fn stage(&mut self, batch: &OutputBatch, done: &mut [bool; 4]) -> Result<(), SinkError> {
        if !batch.is_empty() && self.first_row_at.is_none() {
            self.first_row_at = Some(std::time::Instant::now());
        }
        for output in Output::ALL {
            if done[output.index()] {
                continue;
            }
            let n = match output {
                Output::SensorsLocal => batch.sensors_local.len(),
                Output::SensorAggregates => batch.aggregates.len(),
                Output::LateReadings => batch.late.len(),
                Output::DeadLetters => batch.dead_letters.len(),
            };
            if n > 0 {
                if output == Output::DeadLetters {
                    self.log_dead_letters(batch);
                }
                let stage = self.stage_of(output)?;
                match (stage, output) {
                    (Stage::Rows(w), Output::SensorsLocal) => w.append(&batch.sensors_local)?,
                    (Stage::Rows(w), Output::SensorAggregates) => w.append(&batch.aggregates)?,
                    (Stage::Rows(w), Output::LateReadings) => w.append(&batch.late)?,
                    (Stage::Lines(f), Output::SensorsLocal) => {
                        f.append_rows(&batch.sensors_local)?
                    }
                    (Stage::Lines(f), Output::SensorAggregates) => {
                        f.append_rows(&batch.aggregates)?
                    }
                    (Stage::Lines(f), Output::LateReadings) => f.append_rows(&batch.late)?,
                    (Stage::Lines(f), Output::DeadLetters) => f.append(&batch.dead_letters)?,
                    (Stage::Rows(_), Output::DeadLetters) => {
                        // `stage_of` gives dead letters only files.
                        return Err(no_destination(output));
                    }
                }
                self.rows[output.index()] += n as u64;
            }
            done[output.index()] = true;
        }
        Ok(())
    }

    fn stage_of(&mut self, output: Output) -> Result<&mut Stage, SinkError> {
        let slot = output.index();
        if self.open[slot].is_none() {
            let stage = match self.destinations.get(output) {
                Some(Destination::ClickHouse) if output != Output::DeadLetters => {
                    let path = self.dir.join(format!(
                        "g{}-{}-{}.rows",
                        self.generation,
                        self.seq,
                        output.name()
                    ));
                    Stage::Rows(StagedRowsWriter::create(&path)?)
                }
                Some(Destination::Files(dir)) => {
                    let path = in_progress_path(dir, self.generation, self.key_groups, self.seq);
                    Stage::Lines(JsonlFile::create(&path)?)
                }
                _ => return Err(no_destination(output)),
            };
            self.open[slot] = Some(stage);
        }
        self.open[slot]
            .as_mut()
            .ok_or_else(|| no_destination(output))
    }

    fn log_dead_letters(&mut self, batch: &OutputBatch) {
        for letter in &batch.dead_letters {
            if self.seen_kinds.insert(letter.kind.clone()) {
                tracing::warn!(
                    kind = %letter.kind,
                    source = %letter.source,
                    position = %letter.position,
                    records = letter.records,
                    error = %letter.error,
                    "undecodable input kept as a dead letter (further ones of this kind are counted, not logged)"
                );
            }
        }
    }

    /// Ends the open epoch as epoch `epoch`: its files are forced to disk.
    /// `None` if it staged nothing.
    pub fn seal(&mut self, epoch: u64) -> Result<Option<SealedEpoch>, SinkError> {
        let mut files = Vec::new();
        for output in Output::ALL {
            let Some(stage) = self.open[output.index()].take() else {
                continue;
            };
            let (format, path, bytes) = match stage {
                Stage::Rows(w) => {
                    let path = w.path().to_owned();
                    let (_, bytes) = w.finish()?;
                    (Format::Rows, path, bytes)
                }
                Stage::Lines(mut f) => {
                    f.sync()?;
                    (Format::JsonLines, f.path().to_owned(), f.len())
                }
            };
            files.push(StagedFile {
                output,
                format,
                path,
                rows: std::mem::take(&mut self.rows[output.index()]),
                bytes,
                key: None,
                local: true,
            });
        }
        self.seq += 1;
        self.rows = [0; 4];
        let first_row_at = self.first_row_at.take();
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(SealedEpoch {
            epoch,
            key_groups: self.key_groups,
            files,
            restored: false,
            first_row_at,
        }))
    }
}

fn no_destination(output: Output) -> SinkError {
    SinkError::Schema {
        table: output.name().to_owned(),
        problem: "the job has no destination for this output".into(),
    }
}
