//! What flows from sources to window tasks, in order, on one channel.

use weir_common::aggregate::Accumulator;
use weir_common::dead_letter::DeadLetter;
use weir_common::position::Position;
use weir_common::reading::Reading;

/// Readings of one input (partition), in partition order, with their
/// positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordBatch {
    pub input: u32,
    pub readings: Vec<Reading>,
    pub positions: Vec<Position>,
}

impl RecordBatch {
    pub fn with_capacity(input: u32, n: usize) -> Self {
        RecordBatch {
            input,
            readings: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
        }
    }

    #[inline]
    pub fn push(&mut self, r: Reading, p: Position) {
        self.readings.push(r);
        self.positions.push(p);
    }

    pub fn len(&self) -> usize {
        self.readings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

/// Readings of one input and one window, already aggregated per device by
/// the sending worker (see [`crate::combine`]): what crosses the network
/// instead of the readings themselves. Never late where it arrives: the
/// sender pre-aggregates only readings whose window its own watermark has
/// not reached, and sends them before a watermark that reaches it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartialBatch {
    pub input: u32,
    pub window_end: i64,
    /// (sensor, accumulator of its readings), each sensor once.
    pub partials: Vec<(i32, Accumulator)>,
}

impl PartialBatch {
    /// Readings the batch stands for.
    pub fn readings(&self) -> u64 {
        self.partials
            .iter()
            .fold(0u64, |n, (_, acc)| n.saturating_add(acc.count))
    }
}

/// One message on a source → window channel. Records, watermarks, barriers
/// and the end-of-input marker of one input travel on the same channel so
/// that their order is kept. `through` is the position of the last record
/// the source had read when it sent the envelope (`None` before the first):
/// where the partition resumes from a checkpoint taken there.
#[derive(Clone, Debug, PartialEq)]
pub enum Envelope {
    Records(RecordBatch),
    /// Pre-aggregated readings, in order with the input's other envelopes.
    Partials(PartialBatch),
    /// The input's watermark (it may not have moved: the envelope then only
    /// marks how far the source has read).
    Watermark {
        input: u32,
        watermark: i64,
    },
    /// The input has had no data for the idle timeout.
    Idle {
        input: u32,
    },
    /// The input is exhausted (finite sources): watermark +∞. Barriers may
    /// still follow (the final checkpoint's), then `Closed`.
    End {
        input: u32,
        through: Option<Position>,
    },
    /// The source sends nothing more: it ended and a checkpoint covering its
    /// end completed.
    Closed {
        input: u32,
    },
    /// Undecodable input of the partition, kept as dead letters. Sent only
    /// to the window task in the source's own process, in order with the
    /// barriers: a dead letter belongs to the epoch its position is in, and
    /// is written exactly once with that epoch's output.
    DeadLetters {
        input: u32,
        letters: Vec<DeadLetter>,
    },
    /// Checkpoint barrier: the input's records before it belong to
    /// checkpoint `checkpoint`, none after. `through` and `watermark` are the
    /// source's position and watermark at that point.
    Barrier {
        input: u32,
        checkpoint: u64,
        through: Option<Position>,
        watermark: i64,
    },
}

impl Envelope {
    /// The input (partition) the envelope belongs to.
    pub fn input(&self) -> u32 {
        match self {
            Envelope::Records(b) => b.input,
            Envelope::Partials(b) => b.input,
            Envelope::Watermark { input, .. }
            | Envelope::Idle { input, .. }
            | Envelope::End { input, .. }
            | Envelope::Closed { input }
            | Envelope::DeadLetters { input, .. }
            | Envelope::Barrier { input, .. } => *input,
        }
    }
}
