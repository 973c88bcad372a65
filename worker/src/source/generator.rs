//! The built-in generator as a source partition.
//!
//! In real time it emits each reading when the wall clock reaches the
//! reading's arrival time, like a live fleet; otherwise as fast as the job
//! takes them. A reading's position is its ordinal in the partition.

use tokio::time::Instant;
use weir_common::generator::PartitionGenerator;
use weir_common::position::Position;
use weir_common::reading::Reading;

use super::{PartitionReader, Pulled, SourceError};
use crate::emitter::Emitter;

pub struct GeneratorReader {
    generator: PartitionGenerator,
    /// Wall-clock pacing: the instant at which event time `start_ms` arrives.
    pace: Option<(Instant, i64)>,
    chunk: usize,
    scratch: Reading,
}

impl GeneratorReader {
    /// `realtime_from`: pace arrivals so that event time `start_ms` arrives
    /// at that instant; `None` for as fast as possible.
    pub fn new(
        generator: PartitionGenerator,
        realtime_from: Option<(Instant, i64)>,
        chunk: usize,
    ) -> Self {
        GeneratorReader {
            generator,
            pace: realtime_from,
            chunk: chunk.max(1),
            scratch: Reading::default(),
        }
    }
}

impl PartitionReader for GeneratorReader {
    async fn pull(&mut self, out: &mut Emitter) -> Result<Pulled, SourceError> {
        if self.generator.is_done() {
            return Ok(Pulled::End);
        }
        let now = Instant::now();
        for _ in 0..self.chunk {
            if let Some((origin, start_ms)) = self.pace {
                let due_ms = self
                    .generator
                    .next_arrival_ms()
                    .saturating_sub(start_ms)
                    .max(0);
                let due = origin + std::time::Duration::from_millis(due_ms as u64);
                if due > now {
                    return Ok(Pulled::WaitUntil(due));
                }
            }
            let ordinal = self.generator.emitted();
            if !self.generator.next_into(&mut self.scratch) {
                break;
            }
            out.reading(&self.scratch, Position::Offset(ordinal));
        }
        Ok(Pulled::Progress)
    }
}
