//! Where a record sits in its partition.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A record's position in its partition: what a source seeks to on restart
/// and what late-reading rows and dead letters report. Positions of one
/// partition are ordered as the partition is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// The record's ordinal in a file or generated stream (0-based).
    Offset(u64),
    /// A Pulsar message id; `batch` is the index inside a batched message
    /// (-1 when the message is not batched).
    Pulsar { ledger: u64, entry: u64, batch: i32 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Offset(n) => write!(f, "{n}"),
            Position::Pulsar {
                ledger,
                entry,
                batch,
            } => write!(f, "{ledger}:{entry}:{batch}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_compactly() {
        assert_eq!(Position::Offset(42).to_string(), "42");
        assert_eq!(
            Position::Pulsar {
                ledger: 7,
                entry: 3,
                batch: -1
            }
            .to_string(),
            "7:3:-1"
        );
    }
}
