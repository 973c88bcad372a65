//! Checkpoint barrier alignment.
//!
//! A window task has one input per partition. When barrier `n` arrives on an
//! input, every record of that input before it belongs to checkpoint `n`
//! and none after: the input is held back (not read, so its channel fills
//! and its source waits) until every other input delivered barrier `n` too.
//! Then the state holds exactly the records before the barriers: the task
//! snapshots it and reads every input again. Inputs that ended count as
//! having delivered every barrier (their records are all in); an idle input
//! still delivers barriers, since its source keeps running.
//!
//! A barrier newer than the one being aligned means the input's source never
//! saw the older trigger (it was abandoned, or the source started after it):
//! the older checkpoint cannot complete here, so it is abandoned and the
//! newer one aligned instead. A barrier older than the last aligned or
//! abandoned one is stale and ignored.

/// Where an alignment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No barrier pending; `last` is the newest checkpoint aligned or
    /// abandoned (barriers up to it are stale).
    Idle { last: Option<u64> },
    /// Barrier `checkpoint` arrived on the inputs marked in `held`.
    Aligning { checkpoint: u64, held: Vec<bool> },
}

/// What a barrier (or an input's end) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do (a stale barrier, or an end while not aligning).
    None,
    /// The input is held back; other inputs have yet to deliver the barrier.
    /// `started` when it is the first input of this checkpoint.
    Holding { started: bool },
    /// Every input delivered barrier `n`: snapshot now. No input is held.
    Aligned(u64),
}

/// The barrier alignment of one window task (see the module docs).
#[derive(Debug, Clone)]
pub struct Aligner {
    ended: Vec<bool>,
    state: State,
}

impl Aligner {
    /// An aligner for `inputs` inputs.
    pub fn new(inputs: usize) -> Self {
        Aligner {
            ended: vec![false; inputs],
            state: State::Idle { last: None },
        }
    }

    /// Continues after checkpoint `last` (a restored job): barriers up to it
    /// are stale.
    pub fn after(mut self, last: u64) -> Self {
        self.state = State::Idle { last: Some(last) };
        self
    }

    /// Whether `input` is held back.
    #[inline]
    pub fn is_held(&self, input: usize) -> bool {
        match &self.state {
            State::Aligning { held, .. } => held.get(input).copied().unwrap_or(false),
            State::Idle { .. } => false,
        }
    }

    /// The checkpoint being aligned, if any.
    pub fn aligning(&self) -> Option<u64> {
        match self.state {
            State::Aligning { checkpoint, .. } => Some(checkpoint),
            State::Idle { .. } => None,
        }
    }

    /// Barrier `checkpoint` arrived on `input`. Returns the checkpoint this
    /// abandons, if any, and what to do.
    pub fn on_barrier(&mut self, input: usize, checkpoint: u64) -> (Option<u64>, Step) {
        if input >= self.ended.len() {
            return (None, Step::None);
        }
        let mut abandoned = None;
        match &mut self.state {
            State::Idle { last } => {
                if last.is_some_and(|l| checkpoint <= l) {
                    return (None, Step::None);
                }
            }
            State::Aligning {
                checkpoint: current,
                held,
            } => {
                if checkpoint < *current {
                    return (None, Step::None);
                }
                if checkpoint == *current {
                    held[input] = true;
                    return (None, self.check(false));
                }
                abandoned = Some(*current);
            }
        }
        let mut held = vec![false; self.ended.len()];
        held[input] = true;
        self.state = State::Aligning { checkpoint, held };
        (abandoned, self.check(true))
    }

    /// `input` ended: it has delivered every barrier there will be.
    pub fn on_end(&mut self, input: usize) -> Step {
        if let Some(e) = self.ended.get_mut(input) {
            *e = true;
        }
        match self.state {
            State::Aligning { .. } => match self.check(false) {
                Step::Holding { .. } => Step::None,
                step => step,
            },
            State::Idle { .. } => Step::None,
        }
    }

    /// Abandons the checkpoint being aligned if it is `checkpoint` or older
    /// (the coordinator gave it up): every input is read again.
    pub fn abandon(&mut self, checkpoint: u64) -> bool {
        match self.state {
            State::Aligning { checkpoint: c, .. } if c <= checkpoint => {
                self.state = State::Idle {
                    last: Some(checkpoint),
                };
                true
            }
            _ => false,
        }
    }

    fn check(&mut self, started: bool) -> Step {
        let State::Aligning { checkpoint, held } = &self.state else {
            return Step::None;
        };
        let all = held.iter().zip(&self.ended).all(|(h, e)| *h || *e);
        if all {
            let n = *checkpoint;
            self.state = State::Idle { last: Some(n) };
            Step::Aligned(n)
        } else {
            Step::Holding { started }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_held_until_all_delivered_then_released() {
        let mut a = Aligner::new(3);
        assert_eq!(a.on_barrier(1, 1), (None, Step::Holding { started: true }));
        assert!(a.is_held(1) && !a.is_held(0) && !a.is_held(2));
        assert_eq!(a.on_barrier(0, 1), (None, Step::Holding { started: false }));
        assert!(a.is_held(0) && a.is_held(1) && !a.is_held(2));
        assert_eq!(a.aligning(), Some(1));
        assert_eq!(a.on_barrier(2, 1), (None, Step::Aligned(1)));
        assert!((0..3).all(|i| !a.is_held(i)));
        assert_eq!(a.aligning(), None);
        // The next checkpoint aligns the same way.
        assert_eq!(a.on_barrier(2, 2), (None, Step::Holding { started: true }));
        assert_eq!(a.on_barrier(0, 2).1, Step::Holding { started: false });
        assert_eq!(a.on_barrier(1, 2).1, Step::Aligned(2));
    }

    #[test]
    fn a_single_input_aligns_at_once() {
        let mut a = Aligner::new(1);
        assert_eq!(a.on_barrier(0, 7), (None, Step::Aligned(7)));
        assert!(!a.is_held(0));
    }

    #[test]
    fn an_input_that_ended_counts_as_delivered() {
        let mut a = Aligner::new(3);
        assert_eq!(a.on_end(2), Step::None);
        assert_eq!(a.on_barrier(0, 1).1, Step::Holding { started: true });
        assert_eq!(a.on_barrier(1, 1).1, Step::Aligned(1));
        // An input ending while others are held completes the alignment.
        assert_eq!(a.on_barrier(0, 2).1, Step::Holding { started: true });
        assert_eq!(a.on_end(1), Step::Aligned(2));
        assert!(!a.is_held(0));
    }

    #[test]
    fn an_ending_input_that_leaves_others_to_wait_changes_nothing() {
        let mut a = Aligner::new(3);
        assert_eq!(a.on_barrier(0, 1).1, Step::Holding { started: true });
        assert_eq!(a.on_end(1), Step::None);
        assert!(a.is_held(0) && !a.is_held(2));
        assert_eq!(a.on_barrier(2, 1).1, Step::Aligned(1));
    }

    #[test]
    fn idle_inputs_are_not_special() {
        // An idle input's source still emits barriers; until it does, the
        // others wait (its watermark does not matter here).
        let mut a = Aligner::new(2);
        assert_eq!(a.on_barrier(0, 3).1, Step::Holding { started: true });
        assert!(a.is_held(0) && !a.is_held(1));
        assert_eq!(a.on_barrier(1, 3).1, Step::Aligned(3));
    }

    #[test]
    fn a_newer_barrier_abandons_the_older_checkpoint() {
        let mut a = Aligner::new(2);
        assert_eq!(a.on_barrier(0, 1).1, Step::Holding { started: true });
        // Input 1's source never saw trigger 1.
        assert_eq!(
            a.on_barrier(1, 2),
            (Some(1), Step::Holding { started: true })
        );
        assert!(!a.is_held(0) && a.is_held(1));
        assert_eq!(a.on_barrier(0, 2).1, Step::Aligned(2));
        // Barrier 1 arriving late (or again) is stale.
        assert_eq!(a.on_barrier(1, 1), (None, Step::None));
        assert_eq!(a.on_barrier(1, 2), (None, Step::None));
    }

    #[test]
    fn stale_barriers_during_an_alignment_are_ignored() {
        let mut a = Aligner::new(2).after(4);
        assert_eq!(a.on_barrier(0, 4), (None, Step::None));
        assert_eq!(a.on_barrier(0, 5).1, Step::Holding { started: true });
        assert_eq!(a.on_barrier(1, 3), (None, Step::None));
        assert!(a.is_held(0) && !a.is_held(1));
    }

    #[test]
    fn abandoning_releases_every_input() {
        let mut a = Aligner::new(2);
        a.on_barrier(0, 5);
        assert!(!a.abandon(4));
        assert!(a.is_held(0));
        assert!(a.abandon(5));
        assert!(!a.is_held(0));
        assert_eq!(a.on_barrier(1, 5), (None, Step::None));
    }

    #[test]
    fn out_of_range_inputs_are_ignored() {
        let mut a = Aligner::new(1);
        assert_eq!(a.on_barrier(3, 1), (None, Step::None));
        assert_eq!(a.on_end(3), Step::None);
    }
}
