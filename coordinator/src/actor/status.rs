//! Rendering the job and the cluster for the admin API.

use super::*;

impl Actor {
    pub(super) fn sample(&mut self, now: Instant) {
        if self
            .samples
            .last()
            .is_some_and(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(1))
        {
            return;
        }
        let (records, rows) = self.totals();
        self.samples.push((now, records, rows));
        if self.samples.len() > 6 {
            self.samples.remove(0);
        }
    }

    /// Metrics of the current generation, one per worker of it.
    pub(super) fn current_metrics(&self) -> Vec<(&str, &pb::WorkerMetrics)> {
        let Some(g) = self.job.generation() else {
            return Vec::new();
        };
        g.assignment
            .workers
            .iter()
            .filter_map(|slot| {
                let id = slot.worker_id.as_str();
                let live = self.workers.get(id).and_then(|w| w.metrics.as_ref());
                live.or_else(|| g.final_metrics.get(id))
                    .filter(|m| m.generation == g.number)
                    .map(|m| (id, m))
            })
            .collect()
    }

    pub(super) fn totals(&self) -> (u64, u64) {
        self.current_metrics()
            .iter()
            .fold((0, 0), |(r, w), (_, m)| {
                (r + m.records_in, w + m.rows_written)
            })
    }

    pub(super) fn job_status(&self) -> api::JobStatus {
        let metrics = self.current_metrics();
        let sum = |f: fn(&pb::WorkerMetrics) -> u64| metrics.iter().map(|(_, m)| f(m)).sum::<u64>();
        let rate = |f: fn(&(Instant, u64, u64)) -> u64| match (
            self.samples.first(),
            self.samples.last(),
        ) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (f(b).saturating_sub(f(a))) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        };
        let generation = self.job.generation();
        let watermark = if matches!(self.job, Job::Finished(_)) {
            i64::MAX
        } else {
            metrics
                .iter()
                .map(|(_, m)| m.watermark)
                .min()
                .unwrap_or(i64::MIN)
        };
        let mut shuffled = vec![0u64; usize::from(self.config.spec.state.max_parallelism)];
        for (_, m) in &metrics {
            for (kg, n) in m.remote_by_key_group.iter().enumerate() {
                if let Some(s) = shuffled.get_mut(kg) {
                    *s += n;
                }
            }
        }
        let partitions = self
            .config
            .partitions
            .iter()
            .enumerate()
            .map(|(input, name)| {
                let owner = generation
                    .and_then(|g| g.assignment.partition_owner.get(input))
                    .and_then(|&o| generation.and_then(|g| g.assignment.workers.get(o as usize)))
                    .map(|s| s.worker_id.clone())
                    .unwrap_or_default();
                let progress = metrics
                    .iter()
                    .filter(|(id, _)| *id == owner)
                    .flat_map(|(_, m)| m.partitions.iter())
                    .find(|p| p.input as usize == input);
                api::PartitionStatus {
                    input: input as u32,
                    name: name.clone(),
                    worker_id: owner,
                    records: progress.map_or(0, |p| p.records),
                    watermark: progress.map_or(i64::MIN, |p| p.watermark),
                    finished: progress.is_some_and(|p| p.finished),
                    checkpointed: self
                        .restorable
                        .back()
                        .and_then(|r| r.metadata.positions.iter().find(|p| &p.name == name))
                        .and_then(|p| position_of(&p.position))
                        .map_or_else(String::new, |p| p.to_string()),
                }
            })
            .collect();
        let phase = match metrics.iter().map(|(_, m)| m.phase).min() {
            Some(0) => "waiting-for-sink",
            Some(1) => "running",
            Some(2) => "draining",
            Some(_) => "done",
            None => "",
        };
        let (rescaling, rescales) = self.rescale_status();
        api::JobStatus {
            name: self.config.spec.name.clone(),
            state: self.job.name().to_owned(),
            generation: generation.map_or(0, |g| g.number),
            records_in_per_second: rate(|s| s.1),
            rows_out_per_second: rate(|s| s.2),
            records_in: sum(|m| m.records_in),
            rows_written: sum(|m| m.rows_written),
            late_records: sum(|m| m.late_records),
            bad_records: sum(|m| m.bad_records),
            windows_closed: sum(|m| m.windows_closed),
            watermark,
            partitions,
            error: match &self.job {
                Job::Failed { error, .. } => error.clone(),
                _ => String::new(),
            },
            workers: generation.map_or(0, |g| g.assignment.workers.len() as u32),
            shuffle_records: sum(|m| m.shuffle_records_sent),
            shuffle_accumulators: sum(|m| m.shuffle_accumulators_sent),
            sink_retries: sum(|m| m.sink_retries),
            sink_lookups: sum(|m| m.sink_lookups),
            state_spills: sum(|m| m.state_spills),
            dead_letters: sum(|m| m.dead_letters),
            open_windows: sum(|m| m.open_windows),
            shuffled_by_key_group: shuffled,
            phase: phase.to_owned(),
            restored_checkpoint: generation.map_or(0, |g| g.assignment.restore_checkpoint),
            restored_key_groups: metrics.iter().map(|(_, m)| m.restored_key_groups).sum(),
            restored_bytes: sum(|m| m.restored_bytes),
            raft: self.raft_status(),
            latest_dead_letters: latest_dead_letters(&metrics),
            rescales,
            rescaling,
            desired_workers: self
                .desired
                .unwrap_or_else(|| self.active_workers().count() as u32),
            kubernetes: match &self.config.worker_set {
                None => String::new(),
                Some(set) => match (&self.kube_trouble, self.desired) {
                    (Some(e), _) => format!("statefulset {}: {e}", set.target()),
                    (None, Some(n)) => format!("statefulset {}: {n} replicas", set.target()),
                    (None, None) => format!("statefulset {}: not read yet", set.target()),
                },
            },
        }
    }

    pub(super) fn cluster_status(&self) -> api::ClusterStatus {
        let now = Instant::now();
        let generation = self.job.generation();
        let workers = self
            .workers
            .iter()
            .map(|(id, w)| {
                let slot_index = generation
                    .and_then(|g| g.assignment.workers.iter().position(|s| &s.worker_id == id));
                let slot = slot_index.and_then(|i| generation.map(|g| &g.assignment.workers[i]));
                let partitions = match (generation, slot_index) {
                    (Some(g), Some(i)) => g
                        .assignment
                        .partition_owner
                        .iter()
                        .enumerate()
                        .filter(|(_, &o)| o as usize == i)
                        .map(|(p, _)| p as u32)
                        .collect(),
                    _ => Vec::new(),
                };
                let state = match w.state {
                    _ if w.presence == Presence::Leaving => "leaving",
                    pb::DeploymentState::Unspecified if slot.is_some() => "deploying",
                    pb::DeploymentState::Unspecified => "registered",
                    pb::DeploymentState::Running => "running",
                    pb::DeploymentState::Finished => "finished",
                    pb::DeploymentState::Failed => "failed",
                    pb::DeploymentState::Cancelled => "cancelled",
                };
                api::WorkerStatus {
                    worker_id: id.clone(),
                    data_address: w.data_address.clone(),
                    state: state.to_owned(),
                    last_heartbeat_ms_ago: now.duration_since(w.last_seen).as_millis() as u64,
                    partitions,
                    key_group_start: slot.map_or(0, |s| s.key_group_start),
                    key_group_end: slot.map_or(0, |s| s.key_group_end),
                    records_in: w.metrics.as_ref().map_or(0, |m| m.records_in),
                    resident_bytes: w.metrics.as_ref().map_or(0, |m| m.resident_bytes),
                    backpressure: w.backpressure.share(),
                }
            })
            .collect();
        api::ClusterStatus {
            coordinator_address: self.config.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            workers,
        }
    }
}

/// How many dead letters the job status lists.
const LATEST_DEAD_LETTERS: usize = 20;

/// The newest dead letters the workers of the current generation reported.
fn latest_dead_letters(metrics: &[(&str, &pb::WorkerMetrics)]) -> Vec<api::DeadLetterInfo> {
    let mut all: Vec<api::DeadLetterInfo> = metrics
        .iter()
        .flat_map(|(id, m)| {
            m.recent_dead_letters.iter().map(|l| api::DeadLetterInfo {
                worker_id: (*id).to_owned(),
                at_ms: l.at_ms,
                source: l.source.clone(),
                position: l.position.clone(),
                records: l.records,
                kind: l.kind.clone(),
                error: l.error.clone(),
                payload_len: l.payload_len,
            })
        })
        .collect();
    // Newest first; a worker's own order breaks ties (it sends oldest first).
    all.reverse();
    all.sort_by_key(|l| std::cmp::Reverse(l.at_ms));
    all.truncate(LATEST_DEAD_LETTERS);
    all
}
