//! Rows waiting in the sink, written from the front without moving the rest.
//!
//! Rows arrive in messages of bounded size and leave in inserts of at most
//! `batch_rows`; neither size divides the other. Splitting "the rest" off a
//! buffer for every insert would copy the waiting rows once per insert, so a
//! window closing N rows would cost O(N² / batch_rows). Here the written
//! prefix is only skipped, and the buffer is compacted when that prefix is
//! at least as long as what remains: every row is moved at most once, and
//! memory is at most twice what waits.

use weir_common::rows::Table;
use weir_common::sink::{OutputBatch, TableRows};

/// A queue of rows of one table.
#[derive(Debug)]
struct RowQueue<T> {
    rows: Vec<T>,
    /// Rows before this index are written.
    head: usize,
    /// Moves of waiting rows made by compaction (what the tests count).
    moved: u64,
}

impl<T> Default for RowQueue<T> {
    fn default() -> Self {
        RowQueue {
            rows: Vec::new(),
            head: 0,
            moved: 0,
        }
    }
}

impl<T> RowQueue<T> {
    fn len(&self) -> usize {
        self.rows.len() - self.head
    }

    fn push(&mut self, mut more: Vec<T>) {
        if self.head > 0 && self.head >= self.len() {
            self.moved += self.len() as u64;
            self.rows.drain(..self.head);
            self.head = 0;
        }
        if self.rows.is_empty() {
            // Take the message's own buffer instead of copying it.
            self.rows = more;
        } else {
            self.rows.append(&mut more);
        }
    }

    fn front(&self, n: usize) -> &[T] {
        let end = self.head + n.min(self.len());
        &self.rows[self.head..end]
    }

    fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.rows.len() {
            self.rows.clear();
            self.head = 0;
        }
    }
}

/// Rows waiting to be written, per table.
#[derive(Debug, Default)]
pub struct Pending {
    sensors_local: RowQueue<weir_common::rows::SensorsLocalRow>,
    aggregates: RowQueue<weir_common::rows::SensorAggregatesRow>,
    late: RowQueue<weir_common::rows::LateReadingRow>,
}

impl Pending {
    pub fn push(&mut self, batch: OutputBatch) {
        self.sensors_local.push(batch.sensors_local);
        self.aggregates.push(batch.aggregates);
        self.late.push(batch.late);
    }

    pub fn len(&self) -> usize {
        self.sensors_local.len() + self.aggregates.len() + self.late.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rows_of(&self, table: Table) -> usize {
        match table {
            Table::SensorsLocal => self.sensors_local.len(),
            Table::SensorAggregates => self.aggregates.len(),
            Table::LateReadings => self.late.len(),
        }
    }

    /// The first `n` waiting rows of `table` (fewer if fewer wait).
    pub fn front(&self, table: Table, n: usize) -> TableRows<'_> {
        match table {
            Table::SensorsLocal => TableRows::SensorsLocal(self.sensors_local.front(n)),
            Table::SensorAggregates => TableRows::SensorAggregates(self.aggregates.front(n)),
            Table::LateReadings => TableRows::LateReadings(self.late.front(n)),
        }
    }

    /// Marks the first `n` waiting rows of `table` written.
    pub fn consume(&mut self, table: Table, n: usize) {
        match table {
            Table::SensorsLocal => self.sensors_local.consume(n),
            Table::SensorAggregates => self.aggregates.consume(n),
            Table::LateReadings => self.late.consume(n),
        }
    }

    /// Rows moved inside the queues so far (not counting their arrival).
    pub fn rows_moved(&self) -> u64 {
        self.sensors_local.moved + self.aggregates.moved + self.late.moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::aggregate::Accumulator;
    use weir_common::reading::Reading;

    fn batch(range: std::ops::Range<i32>) -> OutputBatch {
        let acc = Accumulator::new(&Reading::default());
        OutputBatch {
            sensors_local: range
                .clone()
                .map(|i| acc.sensors_local_row(i, 60_000))
                .collect(),
            aggregates: range.map(|i| acc.aggregates_row(i, 0, 60_000)).collect(),
            late: Vec::new(),
        }
    }

    fn ids(rows: TableRows<'_>) -> Vec<String> {
        match rows {
            TableRows::SensorsLocal(r) => r.iter().map(|r| r.device_id.to_string()).collect(),
            TableRows::SensorAggregates(r) => r.iter().map(|r| r.device_id.to_string()).collect(),
            TableRows::LateReadings(r) => r.iter().map(|r| r.position.clone()).collect(),
        }
    }

    #[test]
    fn rows_leave_in_arrival_order() {
        let mut p = Pending::default();
        p.push(batch(0..3));
        p.push(batch(3..5));
        assert_eq!(p.len(), 10);
        assert_eq!(
            ids(p.front(Table::SensorsLocal, 4)),
            ["sensor_0", "sensor_1", "sensor_2", "sensor_3"]
        );
        p.consume(Table::SensorsLocal, 4);
        p.push(batch(5..6));
        assert_eq!(
            ids(p.front(Table::SensorsLocal, 9)),
            ["sensor_4", "sensor_5"]
        );
        assert_eq!(p.rows_of(Table::SensorAggregates), 6);
        assert_eq!(ids(p.front(Table::SensorAggregates, 1)), ["sensor_0"]);
        p.consume(Table::SensorsLocal, 2);
        p.consume(Table::SensorAggregates, 6);
        assert!(p.is_empty());
    }
}
