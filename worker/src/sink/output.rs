//! The job's outputs and where each one goes.

use std::path::PathBuf;

use weir_common::rows::Table;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::spec::{Aggregate, LatePolicy};

/// One output of the job: a result table, or the dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Output {
    SensorsLocal,
    SensorAggregates,
    LateReadings,
    DeadLetters,
}

impl Output {
    /// In the order an epoch's outputs are committed.
    pub const ALL: [Output; 4] = [
        Output::SensorsLocal,
        Output::SensorAggregates,
        Output::LateReadings,
        Output::DeadLetters,
    ];

    /// Its name in checkpoints and file names.
    pub fn name(self) -> &'static str {
        match self.table() {
            Some(t) => t.default_name(),
            None => "dead_letters",
        }
    }

    pub fn from_name(name: &str) -> Option<Output> {
        Output::ALL.into_iter().find(|o| o.name() == name)
    }

    pub fn table(self) -> Option<Table> {
        match self {
            Output::SensorsLocal => Some(Table::SensorsLocal),
            Output::SensorAggregates => Some(Table::SensorAggregates),
            Output::LateReadings => Some(Table::LateReadings),
            Output::DeadLetters => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where an output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The ClickHouse table of the output.
    ClickHouse,
    /// Part files (JSON lines) in this directory.
    Files(PathBuf),
}

/// Where each output of a job goes (`None`: the job does not produce it).
#[derive(Clone)]
pub struct Destinations {
    pub clickhouse: Option<ClickHouseWriter>,
    by_output: [Option<Destination>; 4],
}

impl Destinations {
    pub fn new(clickhouse: Option<ClickHouseWriter>) -> Self {
        Destinations {
            clickhouse,
            by_output: Default::default(),
        }
    }

    pub fn set(&mut self, output: Output, destination: Destination) {
        self.by_output[output.index()] = Some(destination);
    }

    pub fn get(&self, output: Output) -> Option<&Destination> {
        self.by_output[output.index()].as_ref()
    }

    /// The file directories outputs go to.
    pub fn dirs(&self) -> impl Iterator<Item = (Output, &PathBuf)> {
        Output::ALL.into_iter().filter_map(|o| match self.get(o) {
            Some(Destination::Files(dir)) => Some((o, dir)),
            _ => None,
        })
    }
}

/// Tables a job writes to its main destination, given its late policy.
pub fn tables_for(aggregates: &[Aggregate], late_to_main: bool) -> Vec<Table> {
    let mut tables = Vec::new();
    if aggregates.contains(&Aggregate::SensorsLocal) {
        tables.push(Table::SensorsLocal);
    }
    if aggregates.contains(&Aggregate::SensorAggregates1m) {
        tables.push(Table::SensorAggregates);
    }
    if late_to_main {
        tables.push(Table::LateReadings);
    }
    tables
}

/// Whether late readings go to the main destination.
pub fn late_to_main(policy: LatePolicy) -> bool {
    policy == LatePolicy::Output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for o in Output::ALL {
            assert_eq!(Output::from_name(o.name()), Some(o));
        }
        assert_eq!(Output::from_name("nope"), None);
        assert_eq!(Output::DeadLetters.name(), "dead_letters");
    }
}
