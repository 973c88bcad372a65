//! What a deployment runs: the partitions of the job, this worker's slot in
//! the assignment, and where its files go.

use std::path::PathBuf;

use weir_common::generator::GeneratorParams;
use weir_common::keygroup::KeyGroupRange;
use weir_common::position::Position;
use weir_common::spec::{
    JobSpec, LatePolicy, SourceKind, SpecError, StartFrom, GENERATOR_EPOCH_MS,
};

use crate::emitter::now_ms;

use super::JobError;

/// One partition of the job's input; its index in the job is its input index.
#[derive(Clone, Debug)]
pub struct Partition {
    pub name: String,
    pub source: PartitionSource,
}

#[derive(Clone, Debug)]
pub enum PartitionSource {
    File(PathBuf),
    Generator {
        params: GeneratorParams,
        partition: u32,
        realtime: bool,
    },
    /// A partition (or the whole) of a Pulsar topic, by its topic name.
    Pulsar(String),
}

/// The partitions a spec reads, in input order; `names` are the names the
/// coordinator assigned (for Pulsar, the topic's partitions). A realtime
/// generator without a start time starts now; the coordinator fixes that
/// in the spec it sends, so that every worker agrees.
pub fn partitions_of(spec: &JobSpec, names: &[String]) -> Result<Vec<Partition>, SpecError> {
    if let Some(fixed) = spec.partition_names()? {
        if fixed != names {
            return Err(SpecError::Invalid {
                origin: "the assignment".into(),
                key: "source".into(),
                message: format!(
                    "names {} partitions, the job spec {}",
                    names.len(),
                    fixed.len()
                ),
            });
        }
    }
    let names = names.to_vec();
    Ok(match spec.source.kind()? {
        SourceKind::Pulsar(_) => names
            .into_iter()
            .map(|name| Partition {
                source: PartitionSource::Pulsar(name.clone()),
                name,
            })
            .collect(),
        SourceKind::AvroFiles(f) => f
            .paths
            .iter()
            .zip(names)
            .map(|(p, name)| Partition {
                name,
                source: PartitionSource::File(p.clone()),
            })
            .collect(),
        SourceKind::Generator(g) => {
            let start_ms = g.start_ms.unwrap_or(if g.realtime {
                now_ms()
            } else {
                GENERATOR_EPOCH_MS
            });
            let params = GeneratorParams {
                devices: g.devices,
                rate: g.rate,
                disorder_ms: g.disorder.as_millis(),
                seed: g.seed,
                records: g.records,
                start_ms,
                partitions: g.partitions,
            };
            names
                .into_iter()
                .enumerate()
                .map(|(p, name)| Partition {
                    name,
                    source: PartitionSource::Generator {
                        params: params.clone(),
                        partition: p as u32,
                        realtime: g.realtime,
                    },
                })
                .collect()
        }
    })
}

/// A worker's window slot in an assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub worker_id: String,
    /// Where its shuffle service listens (host:port).
    pub data_address: String,
    pub key_groups: KeyGroupRange,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct DeploymentPlan {
    pub generation: u64,
    pub spec: JobSpec,
    /// Every worker of the generation, in slot order.
    pub slots: Vec<Slot>,
    /// This worker's slot.
    pub me: usize,
    /// Slot index of the worker reading each partition, by input index.
    pub partition_owner: Vec<usize>,
    /// Name of each partition, by input index.
    pub partition_names: Vec<String>,
    /// Where each partition resumes from the restored checkpoint (position,
    /// partition watermark there), by input index; `None`: as `start_from`
    /// says.
    pub resume: Vec<Option<(Position, i64)>>,
    /// Where partitions without a resume point start (`Checkpoint`: files
    /// from their beginning, Pulsar from the subscription's position).
    pub start_from: StartFrom,
    /// The completed checkpoint this generation restores (then `resume`
    /// holds its positions).
    pub restore: Option<RestoreFrom>,
    /// The worker's lease from the coordinator: the sink starts no write
    /// once it has run out.
    pub lease: std::sync::Arc<crate::lease::Lease>,
}

/// A checkpoint to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFrom {
    pub checkpoint: u64,
    /// Its metadata's key in the job's checkpoint store.
    pub metadata: String,
}

impl DeploymentPlan {
    /// Whether this generation continues the output of earlier ones: it
    /// restores a checkpoint, or reads Pulsar (whose subscription continues
    /// where the last run of the job acknowledged).
    pub fn resumes(&self) -> bool {
        self.restore.is_some() || self.spec.source.pulsar.is_some()
    }
}

/// Where this worker's files go.
#[derive(Clone, Debug)]
pub struct Layout {
    /// JSONL output directory (JSONL sink only): a directory of part files
    /// per table.
    pub jsonl_dir: Option<PathBuf>,
    /// Directory of the dead letters' part files.
    pub dead_letters: PathBuf,
    /// Directory of the late readings' part files (`late.policy: file`).
    pub late_dir: Option<PathBuf>,
    /// RocksDB directory of this deployment.
    pub state: PathBuf,
    /// Where this deployment's sink stages rows for ClickHouse.
    pub staging: PathBuf,
}

impl Layout {
    /// Where files go on a worker. Output directories are shared by all
    /// workers of a job (part files are named after the epoch and the key
    /// groups of the task that wrote them, so they never collide, and a
    /// worker that commits another's epoch after a failure finds its part
    /// if it is there). State and staging are the deployment's own: in a
    /// subdirectory named after the worker (a single-process job, `weir
    /// local`, has no name), one per generation, since the previous one may
    /// still be closing.
    pub fn of(spec: &JobSpec, worker_id: Option<&str>, generation: u64) -> Self {
        let jsonl_dir = spec.sink.jsonl.as_ref().map(|j| j.dir.clone());
        let late_dir = match (spec.late.policy, &spec.late.path) {
            (LatePolicy::File, Some(p)) => Some(p.clone()),
            _ => None,
        };
        let own = match worker_id {
            Some(id) => spec.state.dir.join(id),
            None => spec.state.dir.clone(),
        };
        let (state, staging) = match worker_id {
            Some(_) => (
                own.join(format!("state-gen-{generation}")),
                own.join(format!("staging-gen-{generation}")),
            ),
            None => (own.join("state"), own.join("staging")),
        };
        Layout {
            jsonl_dir,
            dead_letters: spec.dead_letter_dir(),
            late_dir,
            state,
            staging,
        }
    }
}

pub(super) fn check_plan(plan: &DeploymentPlan, partitions: usize) -> Result<(), JobError> {
    let bad = |m: String| Err(JobError::Assignment(m));
    if plan.me >= plan.slots.len() {
        return bad(format!("slot {} of {}", plan.me, plan.slots.len()));
    }
    if plan.partition_owner.len() != partitions || plan.resume.len() != partitions {
        return bad(format!(
            "{} partition owners and {} resume points for {partitions} partitions",
            plan.partition_owner.len(),
            plan.resume.len()
        ));
    }
    if plan.partition_owner.iter().any(|&o| o >= plan.slots.len()) {
        return bad("a partition is assigned to a worker that is not in the assignment".into());
    }
    let max = plan.spec.state.max_parallelism;
    let mut next = 0;
    for slot in &plan.slots {
        if slot.key_groups.start != next || slot.key_groups.end < slot.key_groups.start {
            return bad(format!(
                "key groups {} do not follow {next}",
                slot.key_groups
            ));
        }
        next = slot.key_groups.end;
    }
    if next != max {
        return bad(format!(
            "key groups end at {next}, not at max_parallelism {max}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(owners: Vec<usize>, ranges: &[(u16, u16)]) -> DeploymentPlan {
        let mut spec = JobSpec::default();
        spec.source
            .generator
            .as_mut()
            .expect("generator")
            .partitions = owners.len() as u32;
        DeploymentPlan {
            generation: 1,
            spec,
            slots: ranges
                .iter()
                .enumerate()
                .map(|(i, &(start, end))| Slot {
                    worker_id: format!("w{i}"),
                    data_address: String::new(),
                    key_groups: KeyGroupRange { start, end },
                })
                .collect(),
            me: 0,
            resume: vec![None; owners.len()],
            partition_names: (0..owners.len())
                .map(|p| format!("generator-{p}"))
                .collect(),
            partition_owner: owners,
            start_from: StartFrom::Checkpoint,
            lease: Default::default(),
            restore: None,
        }
    }

    #[test]
    fn inconsistent_assignments_are_rejected() {
        assert!(check_plan(&plan(vec![0, 1], &[(0, 64), (64, 128)]), 2).is_ok());
        assert!(
            check_plan(&plan(vec![0, 2], &[(0, 64), (64, 128)]), 2).is_err(),
            "unknown owner"
        );
        assert!(
            check_plan(&plan(vec![0, 1], &[(0, 60), (64, 128)]), 2).is_err(),
            "gap"
        );
        assert!(
            check_plan(&plan(vec![0, 1], &[(0, 64), (64, 100)]), 2).is_err(),
            "short"
        );
        assert!(
            check_plan(&plan(vec![0], &[(0, 128)]), 2).is_err(),
            "owners"
        );
    }

    #[test]
    fn cluster_workers_get_their_own_files() {
        let mut spec = JobSpec::default();
        spec.sink.jsonl = Some(weir_common::spec::JsonlSinkSpec { dir: "/out".into() });
        let local = Layout::of(&spec, None, 3);
        assert_eq!(local.jsonl_dir, Some(PathBuf::from("/out")));
        assert_eq!(local.dead_letters, PathBuf::from("/out/dead_letters"));
        assert_eq!(local.state, PathBuf::from("weir-data/state"));
        assert_eq!(local.staging, PathBuf::from("weir-data/staging"));
        // Workers share the output directories, not state and staging.
        let w = Layout::of(&spec, Some("w-1"), 3);
        assert_eq!(w.jsonl_dir, Some(PathBuf::from("/out")));
        assert_eq!(w.dead_letters, PathBuf::from("/out/dead_letters"));
        assert_eq!(w.state, PathBuf::from("weir-data/w-1/state-gen-3"));
        assert_eq!(w.staging, PathBuf::from("weir-data/w-1/staging-gen-3"));
        spec.dead_letter.path = Some("/dl/bad".into());
        assert_eq!(
            Layout::of(&spec, Some("w-1"), 1).dead_letters,
            PathBuf::from("/dl/bad")
        );
    }
}
