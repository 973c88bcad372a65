//! What the output holds and where inputs resume: progress reported by
//! workers, saved to the positions file, and sent back to the sources.

use super::*;

impl Actor {
    /// Records what a worker of the current generation reports as written
    /// and durable.
    pub(super) fn note_progress(&mut self, id: &str, m: &pb::ProgressReport) {
        let Some(g) = self.job.generation() else {
            return;
        };
        let Some(slot_index) = g.assignment.workers.iter().position(|s| s.worker_id == id) else {
            return;
        };
        let slot = &g.assignment.workers[slot_index];
        let names = &g.assignment.partition_names;
        let mut changed = false;
        if let Some(w) = &m.written {
            let processed: BTreeMap<String, Position> = w
                .processed
                .iter()
                .filter_map(|ip| {
                    Some((
                        names.get(ip.input as usize)?.clone(),
                        position_of(&ip.position)?,
                    ))
                })
                .collect();
            let range = KeyGroupRange {
                start: u16::try_from(slot.key_group_start).unwrap_or(u16::MAX),
                end: u16::try_from(slot.key_group_end).unwrap_or(u16::MAX),
            };
            changed |= self.progress.merge_written(range, w.watermark, processed);
        }
        for point in &m.durable {
            let owner = g
                .assignment
                .partition_owner
                .get(point.input as usize)
                .copied();
            let (Some(name), true) = (
                names.get(point.input as usize),
                owner == Some(slot_index as u32),
            ) else {
                continue;
            };
            if let Some(position) = position_of(&point.position) {
                changed |= self.progress.record_durable(
                    name,
                    Durable {
                        position,
                        watermark: point.watermark,
                    },
                );
            }
        }
        self.progress_dirty |= changed;
    }

    /// Saves changed progress and tells the sources about it.
    pub(super) fn save_progress(&mut self) -> bool {
        if !self.progress_dirty {
            return false;
        }
        if let Some(file) = &self.config.progress_file {
            if let Err(e) = file.save(&self.progress) {
                // Sources acknowledge only what is saved; keep trying.
                tracing::error!(error = %e, "cannot save the job's positions; retrying");
                return false;
            }
        }
        self.recorded = self.progress.clone();
        self.progress_dirty = false;
        true
    }

    pub(super) fn send_progress(&self) {
        // A failed generation's other workers still run until replaced.
        let (Job::Running(g) | Job::Restarting { failed: g, .. }) = &self.job else {
            return;
        };
        let names = &g.assignment.partition_names;
        for (slot_index, slot) in g.assignment.workers.iter().enumerate() {
            let Some(w) = self.workers.get(&slot.worker_id) else {
                continue;
            };
            let mine = g
                .assignment
                .partition_owner
                .iter()
                .enumerate()
                .filter(|(_, &o)| o as usize == slot_index)
                .filter_map(|(input, _)| names.get(input).map(|n| (input as u32, n)));
            let mut progress = pb::Progress {
                generation: g.number,
                ..Default::default()
            };
            for (input, name) in mine {
                if let Some((position, watermark)) = self.progress.bounds(name) {
                    progress
                        .bounds
                        .push(pb::PartitionPoint::new(input, position, watermark));
                }
                if let Some(d) = self.recorded.durable(name) {
                    progress
                        .recorded
                        .push(pb::PartitionPoint::new(input, d.position, d.watermark));
                }
            }
            if progress.bounds.is_empty() && progress.recorded.is_empty() {
                continue;
            }
            let command = pb::CoordinatorCommand {
                command: Some(pb::coordinator_command::Command::Progress(progress)),
            };
            let _ = w.commands.try_send(Ok(command));
        }
    }
}
