//! A new raft leader adopting the generation its predecessor ran.
//!
//! Workers keep their deployment when their raft leader is lost while
//! their lease holds (writing nothing: the lease is revoked until a leader
//! renews it). A new leader whose record says a generation runs waits for
//! that generation's workers: when every one of them registers still
//! running it, the generation is adopted as it is — no restart, no
//! restore — and a checkpoint is taken at once (numbered after any the old
//! leader asked for, so that barriers it left half-injected are abandoned
//! by the workers' alignment). When one comes back without it or is lost,
//! or the lease passes without all of them (their deployments have been
//! aborted by then), a new generation is deployed from the latest
//! completed checkpoint, as after any failure.

use super::*;
use crate::checkpoints::Requested;

/// A generation a new leader may adopt (see the module docs).
pub(super) struct Adoption {
    pub(super) generation: Generation,
    /// Its workers that registered still running it.
    kept: BTreeSet<String>,
    /// One of its workers came back without it, or was lost.
    broken: bool,
    /// Its workers' deployments have been aborted by then (their lease ran
    /// out) unless they registered.
    until: Instant,
}

impl Adoption {
    pub(super) fn new(generation: Generation, lease: Duration) -> Self {
        Adoption {
            generation,
            kept: BTreeSet::new(),
            broken: false,
            until: Instant::now() + lease,
        }
    }

    fn slot(&self, id: &str) -> Option<&pb::WorkerSlot> {
        self.generation
            .assignment
            .workers
            .iter()
            .find(|s| s.worker_id == id)
    }

    /// A worker of the generation was lost, or its deployment ended.
    pub(super) fn lost(&mut self, id: &str) {
        if self.slot(id).is_some() {
            self.kept.remove(id);
            self.broken = true;
        }
    }
}

impl Actor {
    /// A worker registers: the generation it may keep running
    /// (`Registered.keep`). Whatever it ran, later generations and
    /// checkpoints are numbered after it.
    pub(super) fn keeps(&mut self, register: &pb::Register) -> u64 {
        self.last_generation = self.last_generation.max(register.generation);
        self.checkpoints.number_after(register.last_checkpoint);
        let Job::Adopting(a) = &mut self.job else {
            return 0;
        };
        let Some(slot) = a.slot(&register.worker_id) else {
            return 0;
        };
        let same = register.generation == a.generation.number
            && slot.data_address == register.data_address;
        if same && !a.broken {
            a.kept.insert(register.worker_id.clone());
            a.generation.number
        } else {
            tracing::info!(worker = %register.worker_id, running = register.generation, "a worker of the recorded generation came back without it; it is deployed anew");
            a.lost(&register.worker_id);
            0
        }
    }

    /// Every tick while adopting: adopts once every worker came back with
    /// the generation; deploys a new one when that cannot happen.
    pub(super) fn tick_adoption(&mut self, now: Instant) {
        let Job::Adopting(a) = &self.job else { return };
        let slots = &a.generation.assignment.workers;
        let all_back = slots.iter().all(|s| a.kept.contains(&s.worker_id));
        // Every worker of it registered (and told what it runs: a
        // generation its predecessor deployed but had not recorded is
        // numbered past), or the lease passed (any it still ran is
        // aborted by then).
        let all_heard = slots
            .iter()
            .all(|s| self.workers.contains_key(&s.worker_id));
        if all_back && !a.broken {
            self.adopt();
        } else if (a.broken && all_heard) || now >= a.until {
            tracing::info!(
                generation = a.generation.number,
                back = a.kept.len(),
                of = a.generation.assignment.workers.len(),
                "not adopting the recorded generation; deploying a new one from the latest completed checkpoint"
            );
            self.job = Job::Waiting;
            self.deploy_or_wait();
        }
    }

    fn adopt(&mut self) {
        let Job::Adopting(a) = std::mem::replace(&mut self.job, Job::Waiting) else {
            return;
        };
        let mut generation = a.generation;
        generation.started = Instant::now();
        for slot in &generation.assignment.workers {
            if let Some(w) = self.workers.get_mut(&slot.worker_id) {
                w.state = pb::DeploymentState::Running;
                // Only now do its writes resume.
                let adopted = pb::CoordinatorCommand {
                    command: Some(pb::coordinator_command::Command::Adopted(pb::Adopted {
                        generation: generation.number,
                    })),
                };
                let _ = w.commands.try_send(Ok(adopted));
            }
        }
        tracing::info!(
            generation = generation.number,
            workers = generation.assignment.workers.len(),
            "adopted the running generation: its workers kept running through the change of leader"
        );
        self.job = Job::Running(generation);
        self.generation_broken = false;
        self.consecutive_failures = 0;
        // Settles what the old leader left: a checkpoint it asked for (and
        // perhaps not every worker heard) is abandoned for this one, and
        // output waits no longer than a checkpoint.
        self.checkpoints.request(Requested::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Inbox = mpsc::Receiver<Result<pb::CoordinatorCommand, Status>>;

    /// A new leader's actor whose record says generation 4 runs on `w1`
    /// and `w2`.
    fn leader() -> Actor {
        let store = weir_common::checkpoint::CheckpointStore::local(
            &std::env::temp_dir().join("weir-unused"),
            "job",
        );
        let mut actor = Actor::new(
            CoordinatorConfig::new(JobSpec::default(), vec!["generator-0".into()]),
            super::super::CheckpointSetup {
                store,
                last: 7,
                restorable: Vec::new(),
            },
            mpsc::channel(1).0,
        );
        let slot = |id: &str, port: u16| pb::WorkerSlot {
            worker_id: id.into(),
            data_address: format!("127.0.0.1:{port}"),
            ..Default::default()
        };
        let assignment = pb::Assignment {
            workers: vec![slot("w1", 1001), slot("w2", 1002)],
            ..Default::default()
        };
        actor.last_generation = 4;
        actor.job = Job::Adopting(Adoption::new(
            Generation::new(4, assignment),
            actor.config.lease(),
        ));
        actor
    }

    fn register(a: &mut Actor, id: &str, port: u16, generation: u64, checkpoint: u64) -> Inbox {
        let (tx, rx) = mpsc::channel(64);
        a.connected(
            pb::Register {
                worker_id: id.into(),
                data_address: format!("127.0.0.1:{port}"),
                generation,
                last_checkpoint: checkpoint,
                ..Default::default()
            },
            0,
            tx,
        );
        rx
    }

    fn commands(inbox: &mut Inbox) -> Vec<pb::coordinator_command::Command> {
        let mut out = Vec::new();
        while let Ok(Ok(c)) = inbox.try_recv() {
            out.extend(c.command);
        }
        out
    }

    fn kept(commands: &[pb::coordinator_command::Command]) -> Option<u64> {
        commands.iter().find_map(|c| match c {
            pb::coordinator_command::Command::Registered(r) => Some(r.keep),
            _ => None,
        })
    }

    fn deployed(commands: &[pb::coordinator_command::Command]) -> Option<u64> {
        commands.iter().find_map(|c| match c {
            pb::coordinator_command::Command::Deploy(d) => Some(d.generation),
            _ => None,
        })
    }

    fn adopted(commands: &[pb::coordinator_command::Command]) -> Option<u64> {
        commands.iter().find_map(|c| match c {
            pb::coordinator_command::Command::Adopted(a) => Some(a.generation),
            _ => None,
        })
    }

    fn triggered(commands: &[pb::coordinator_command::Command]) -> Option<u64> {
        commands.iter().find_map(|c| match c {
            pb::coordinator_command::Command::TriggerCheckpoint(t) => Some(t.checkpoint),
            _ => None,
        })
    }

    #[test]
    fn workers_back_with_the_generation_keep_running_it() {
        let mut a = leader();
        let mut w1 = register(&mut a, "w1", 1001, 4, 9);
        a.tick();
        assert_eq!(a.job.name(), "adopting", "w2 is not back yet");
        let mut w2 = register(&mut a, "w2", 1002, 4, 8);
        a.tick();
        assert!(matches!(&a.job, Job::Running(g) if g.number == 4));
        let (c1, c2) = (commands(&mut w1), commands(&mut w2));
        assert_eq!(kept(&c1), Some(4));
        assert_eq!(kept(&c2), Some(4));
        assert_eq!(deployed(&c1), None, "not redeployed");
        assert_eq!(adopted(&c1), Some(4), "told to write again");
        assert_eq!(adopted(&c2), Some(4));
        // A checkpoint at once, numbered after the old leader's (9).
        assert_eq!(triggered(&c1), Some(10));
        assert_eq!(triggered(&c2), Some(10));
        assert!(!a.generation_broken);
    }

    #[test]
    fn a_worker_back_without_the_generation_gets_everyone_a_new_one() {
        let mut a = leader();
        let mut w1 = register(&mut a, "w1", 1001, 4, 0);
        let mut w2 = register(&mut a, "w2", 1002, 0, 0);
        a.tick();
        let (c1, c2) = (commands(&mut w1), commands(&mut w2));
        assert_eq!(kept(&c1), Some(4));
        assert_eq!(kept(&c2), Some(0));
        assert_eq!(deployed(&c1), Some(5), "replaced");
        assert_eq!(deployed(&c2), Some(5));
        assert!(matches!(&a.job, Job::Running(g) if g.number == 5));
    }

    #[test]
    fn a_broken_adoption_waits_to_hear_every_worker_before_numbering_the_next() {
        let mut a = leader();
        let mut w2 = register(&mut a, "w2", 1002, 0, 0);
        a.tick();
        assert_eq!(
            a.job.name(),
            "adopting",
            "w1 may run an unrecorded generation"
        );
        assert_eq!(deployed(&commands(&mut w2)), None);
        // It does: generation 5, deployed by the old leader, not recorded.
        let mut w1 = register(&mut a, "w1", 1001, 5, 0);
        a.tick();
        assert_eq!(deployed(&commands(&mut w1)), Some(6));
        assert_eq!(deployed(&commands(&mut w2)), Some(6));
    }

    #[test]
    fn a_worker_leaving_while_adopting_breaks_the_adoption() {
        let mut a = leader();
        let _w1 = register(&mut a, "w1", 1001, 4, 0);
        let reason = pb::Leaving {
            reason: "SIGTERM".into(),
        };
        a.event("w1", 0, pb::worker_event::Event::Leaving(reason));
        let Job::Adopting(adoption) = &a.job else {
            panic!("adopting, not {}", a.job.name());
        };
        assert!(adoption.broken);
    }

    #[test]
    fn a_worker_at_another_address_or_of_a_newer_generation_is_not_kept() {
        let mut a = leader();
        let mut w1 = register(&mut a, "w1", 1009, 4, 0);
        assert_eq!(kept(&commands(&mut w1)), Some(0), "moved");
        let mut a = leader();
        // Generation 6 was deployed by the old leader but not recorded:
        // the next is numbered after it.
        let mut w1 = register(&mut a, "w1", 1001, 6, 0);
        let mut w2 = register(&mut a, "w2", 1002, 6, 0);
        a.tick();
        assert_eq!(kept(&commands(&mut w2)), Some(0));
        assert_eq!(deployed(&commands(&mut w1)), Some(7));
    }

    #[test]
    fn without_every_worker_back_within_the_lease_a_new_generation_runs() {
        let mut a = leader();
        let mut w1 = register(&mut a, "w1", 1001, 4, 0);
        a.tick();
        assert_eq!(a.job.name(), "adopting");
        if let Job::Adopting(adoption) = &mut a.job {
            adoption.until = Instant::now();
        }
        a.tick();
        let c1 = commands(&mut w1);
        assert_eq!(deployed(&c1), Some(5));
        assert!(
            matches!(&a.job, Job::Running(g) if g.number == 5 && g.assignment.workers.len() == 1)
        );
    }

    #[test]
    fn a_kept_worker_lost_or_ended_breaks_the_adoption() {
        let mut a = leader();
        let _w1 = register(&mut a, "w1", 1001, 4, 0);
        a.remove("w1");
        let Job::Adopting(adoption) = &a.job else {
            panic!("adopting, not {}", a.job.name());
        };
        assert!(adoption.broken);

        let mut a = leader();
        let _w1 = register(&mut a, "w1", 1001, 4, 0);
        let report = pb::DeploymentReport {
            generation: 4,
            state: pb::DeploymentState::Failed as i32,
            ..Default::default()
        };
        a.event("w1", 0, pb::worker_event::Event::Report(report));
        let Job::Adopting(adoption) = &a.job else {
            panic!("adopting, not {}", a.job.name());
        };
        assert!(adoption.broken);
    }

    #[test]
    fn stopping_before_the_adoption_cancels_the_generation() {
        let mut a = leader();
        let mut w1 = register(&mut a, "w1", 1001, 4, 0);
        a.stop().expect("stops");
        assert!(matches!(&a.job, Job::Stopped(g) if g.number == 4));
        let cancelled = commands(&mut w1)
            .into_iter()
            .any(|c| matches!(c, pb::coordinator_command::Command::Cancel(c) if c.generation == 4));
        assert!(cancelled);
    }
}
