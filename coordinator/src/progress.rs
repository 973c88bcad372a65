//! What a job's output already holds, and where its inputs resume.
//!
//! Window tasks report what their sink has written (a watermark, and the
//! last position of each partition they processed; see `weir_worker::resume`
//! for what that means). The coordinator keeps one such record per key
//! group, so that it does not depend on how key groups are spread over
//! workers. A key group's record is replaced by a newer report only when the
//! report covers everything the record did (a watermark at least as high
//! and every position at least as far): a new generation starts by reading
//! again from the partitions' durable points, and until it has caught up its
//! reports describe less than what is already written.
//!
//! From these records come, per partition, the bounds within which a source
//! finds its durable point (every key group has processed the partition that
//! far and written every window up to the lowest watermark), and the durable
//! points the sources report are recorded here too. For Pulsar jobs the
//! whole record is kept in a file, so that a new run of the job resumes
//! exactly where the last one's output ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_common::keygroup::KeyGroupRange;
use weir_common::position::Position;
use weir_proto::cluster as pb;

/// What was written for one key group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyGroupWritten {
    watermark: i64,
    /// By partition name.
    processed: BTreeMap<String, Position>,
}

impl KeyGroupWritten {
    fn nothing() -> Self {
        KeyGroupWritten {
            watermark: i64::MIN,
            processed: BTreeMap::new(),
        }
    }

    /// Whether `self` describes at least everything `other` does.
    fn covers(&self, other: &KeyGroupWritten) -> bool {
        self.watermark >= other.watermark
            && other
                .processed
                .iter()
                .all(|(name, p)| self.processed.get(name).is_some_and(|q| q >= p))
    }
}

/// A partition's durable point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    pub position: Position,
    /// The partition's watermark there.
    pub watermark: i64,
}

/// The job's written output, by key group, and its partitions' durable points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    key_groups: Vec<KeyGroupWritten>,
    durable: BTreeMap<String, Durable>,
}

impl JobProgress {
    pub fn new(max_parallelism: u16) -> Self {
        JobProgress {
            key_groups: vec![KeyGroupWritten::nothing(); usize::from(max_parallelism)],
            durable: BTreeMap::new(),
        }
    }

    /// Records what a window task owning `range` has written; returns
    /// whether anything changed.
    pub fn merge_written(
        &mut self,
        range: KeyGroupRange,
        watermark: i64,
        processed: BTreeMap<String, Position>,
    ) -> bool {
        let report = KeyGroupWritten {
            watermark,
            processed,
        };
        let mut changed = false;
        for kg in range.start..range.end {
            let Some(current) = self.key_groups.get_mut(usize::from(kg)) else {
                break;
            };
            if *current != report && report.covers(current) {
                *current = report.clone();
                changed = true;
            }
        }
        changed
    }

    /// Every key group has processed `partition` through the position, and
    /// every window up to the watermark is written; `None` while some key
    /// group has not processed it at all.
    pub fn bounds(&self, partition: &str) -> Option<(Position, i64)> {
        let mut position: Option<Position> = None;
        let mut watermark = i64::MAX;
        for kg in &self.key_groups {
            let p = *kg.processed.get(partition)?;
            position = Some(position.map_or(p, |q| q.min(p)));
            watermark = watermark.min(kg.watermark);
        }
        position.map(|p| (p, watermark))
    }

    /// Records a partition's durable point (it only moves forward); returns
    /// whether it moved.
    pub fn record_durable(&mut self, partition: &str, durable: Durable) -> bool {
        match self.durable.get(partition) {
            Some(d) if d.position >= durable.position => false,
            _ => {
                self.durable.insert(partition.to_owned(), durable);
                true
            }
        }
    }

    pub fn durable(&self, partition: &str) -> Option<Durable> {
        self.durable.get(partition).copied()
    }

    /// Where the partitions (named by input index) resume.
    pub fn resume_points(&self, names: &[String]) -> Vec<pb::PartitionPoint> {
        names
            .iter()
            .enumerate()
            .filter_map(|(input, name)| {
                let d = self.durable.get(name)?;
                Some(pb::PartitionPoint::new(
                    input as u32,
                    d.position,
                    d.watermark,
                ))
            })
            .collect()
    }

    /// What is written, as key-group ranges with partitions named by input
    /// index; empty when nothing is.
    pub fn written(&self, names: &[String]) -> Vec<pb::KeyGroupProgress> {
        let mut out: Vec<pb::KeyGroupProgress> = Vec::new();
        let mut start = 0usize;
        while start < self.key_groups.len() {
            let kg = &self.key_groups[start];
            let mut end = start + 1;
            while end < self.key_groups.len() && self.key_groups[end] == *kg {
                end += 1;
            }
            if *kg != KeyGroupWritten::nothing() {
                out.push(pb::KeyGroupProgress {
                    key_group_start: start as u32,
                    key_group_end: end as u32,
                    watermark: kg.watermark,
                    processed: names
                        .iter()
                        .enumerate()
                        .filter_map(|(input, name)| {
                            kg.processed.get(name).map(|p| pb::InputPosition {
                                input: input as u32,
                                position: Some((*p).into()),
                            })
                        })
                        .collect(),
                });
            }
            start = end;
        }
        out
    }
}

/// Why the progress file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProgressFileError {
    #[error("cannot read the job's positions {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the job's positions {path} are damaged ({message}); move the file away to start from the subscription's position instead")]
    Damaged { path: PathBuf, message: String },
    #[error("the job's positions {path} are for {what}; move the file away to start over")]
    OtherJob { path: PathBuf, what: String },
    #[error("cannot write the job's positions {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a Pulsar job's progress is kept between runs.
#[derive(Clone, Debug)]
pub struct ProgressFile {
    pub path: PathBuf,
    /// The topic the positions belong to.
    pub topic: String,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    format: u32,
    topic: String,
    max_parallelism: u16,
    /// Runs of key groups with the same record.
    key_groups: Vec<KeyGroupRun>,
    partitions: BTreeMap<String, Durable>,
}

#[derive(Serialize, Deserialize)]
struct KeyGroupRun {
    start: u16,
    end: u16,
    #[serde(flatten)]
    written: KeyGroupWritten,
}

const FORMAT: u32 = 1;

impl ProgressFile {
    /// The record in the file; `None` when there is no file yet.
    pub fn load(&self, max_parallelism: u16) -> Result<Option<JobProgress>, ProgressFileError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ProgressFileError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let damaged = |message: String| ProgressFileError::Damaged {
            path: self.path.clone(),
            message,
        };
        let file: FileFormat = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        if file.format != FORMAT {
            return Err(damaged(format!(
                "format {}, expected {FORMAT}",
                file.format
            )));
        }
        let other = |what: String| ProgressFileError::OtherJob {
            path: self.path.clone(),
            what,
        };
        if file.topic != self.topic {
            return Err(other(format!("topic {}, not {}", file.topic, self.topic)));
        }
        if file.max_parallelism != max_parallelism {
            return Err(other(format!(
                "max_parallelism {}, not {max_parallelism} (key groups cannot be remapped without state)",
                file.max_parallelism
            )));
        }
        let mut progress = JobProgress::new(max_parallelism);
        for run in file.key_groups {
            if run.start >= run.end || run.end > max_parallelism {
                return Err(damaged(format!("key groups {}..{}", run.start, run.end)));
            }
            for kg in run.start..run.end {
                progress.key_groups[usize::from(kg)] = run.written.clone();
            }
        }
        progress.durable = file.partitions;
        Ok(Some(progress))
    }

    /// Replaces the file with `progress`, atomically (write aside, sync,
    /// rename), so that a crash leaves the old record or the new one.
    pub fn save(&self, progress: &JobProgress) -> Result<(), ProgressFileError> {
        let write_err = |source| ProgressFileError::Write {
            path: self.path.clone(),
            source,
        };
        let mut runs = Vec::new();
        let mut start = 0usize;
        let kgs = &progress.key_groups;
        while start < kgs.len() {
            let mut end = start + 1;
            while end < kgs.len() && kgs[end] == kgs[start] {
                end += 1;
            }
            runs.push(KeyGroupRun {
                start: start as u16,
                end: end as u16,
                written: kgs[start].clone(),
            });
            start = end;
        }
        let file = FileFormat {
            format: FORMAT,
            topic: self.topic.clone(),
            max_parallelism: kgs.len() as u16,
            key_groups: runs,
            partitions: progress.durable.clone(),
        };
        let text =
            serde_json::to_string_pretty(&file).map_err(|e| write_err(std::io::Error::other(e)))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let aside = aside_path(&self.path);
        let mut f = std::fs::File::create(&aside).map_err(write_err)?;
        f.write_all(text.as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        std::fs::rename(&aside, &self.path).map_err(write_err)?;
        Ok(())
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64) -> Position {
        Position::Offset(n)
    }

    fn processed(items: &[(&str, u64)]) -> BTreeMap<String, Position> {
        items.iter().map(|(n, p)| (n.to_string(), at(*p))).collect()
    }

    fn range(start: u16, end: u16) -> KeyGroupRange {
        KeyGroupRange { start, end }
    }

    #[test]
    fn a_report_replaces_only_what_it_covers() {
        let mut p = JobProgress::new(4);
        assert!(p.merge_written(range(0, 2), 100, processed(&[("a", 10), ("b", 5)])));
        assert!(p.merge_written(range(2, 4), 60, processed(&[("a", 20), ("b", 9)])));
        assert_eq!(p.bounds("a"), Some((at(10), 60)));
        assert_eq!(p.bounds("c"), None, "nobody processed c");
        // A new generation that has not caught up yet changes nothing...
        assert!(!p.merge_written(range(0, 4), 80, processed(&[("a", 30)])));
        // ...until its report covers what was recorded.
        assert!(p.merge_written(range(0, 4), 120, processed(&[("a", 30), ("b", 9)])));
        assert_eq!(p.bounds("b"), Some((at(9), 120)));
        assert!(!p.merge_written(range(0, 4), 120, processed(&[("a", 30), ("b", 9)])));
    }

    #[test]
    fn durable_points_only_move_forward_and_become_resume_points() {
        let mut p = JobProgress::new(2);
        let d = |n, wm| Durable {
            position: at(n),
            watermark: wm,
        };
        assert!(p.record_durable("a", d(5, 50)));
        assert!(!p.record_durable("a", d(4, 40)));
        assert!(p.record_durable("a", d(6, 60)));
        let names = vec!["x".to_string(), "a".to_string()];
        let points = p.resume_points(&names);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].input, 1);
        assert_eq!(
            weir_proto::convert::position_of(&points[0].position),
            Some(at(6))
        );
    }

    #[test]
    fn written_ranges_are_compressed_and_indexed_by_input() {
        let mut p = JobProgress::new(8);
        assert!(p.written(&["a".into()]).is_empty());
        p.merge_written(range(0, 4), 10, processed(&[("a", 1)]));
        p.merge_written(range(4, 6), 20, processed(&[("a", 2)]));
        let w = p.written(&["b".into(), "a".into()]);
        let ranges: Vec<(u32, u32, i64)> = w
            .iter()
            .map(|k| (k.key_group_start, k.key_group_end, k.watermark))
            .collect();
        assert_eq!(ranges, [(0, 4, 10), (4, 6, 20)]);
        assert_eq!(w[0].processed[0].input, 1);
    }

    #[test]
    fn the_file_round_trips_and_refuses_other_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = ProgressFile {
            path: dir.path().join("sub/job.positions.json"),
            topic: "persistent://public/default/t".into(),
        };
        assert_eq!(file.load(8).expect("no file"), None);
        let mut p = JobProgress::new(8);
        p.merge_written(range(0, 8), 10, processed(&[("a", 1)]));
        p.record_durable(
            "a",
            Durable {
                position: Position::Pulsar {
                    ledger: 3,
                    entry: 4,
                    batch: 2,
                },
                watermark: 7,
            },
        );
        file.save(&p).expect("save");
        assert_eq!(file.load(8).expect("load"), Some(p));
        let err = file.load(16).unwrap_err().to_string();
        assert!(err.contains("max_parallelism 8"), "{err}");
        let other = ProgressFile {
            topic: "persistent://public/default/u".into(),
            ..file.clone()
        };
        assert!(other.load(8).unwrap_err().to_string().contains("topic"));
        std::fs::write(&file.path, "{").expect("write");
        assert!(file.load(8).unwrap_err().to_string().contains("damaged"));
    }
}
