//! Between the wire's messages and Weir's own types.

use weir_common::position::Position;

use crate::cluster as pb;

impl From<Position> for pb::Position {
    fn from(p: Position) -> Self {
        let kind = match p {
            Position::Offset(n) => pb::position::Kind::Offset(n),
            Position::Pulsar {
                ledger,
                entry,
                batch,
            } => pb::position::Kind::Pulsar(pb::MessageId {
                ledger,
                entry,
                batch,
            }),
        };
        pb::Position { kind: Some(kind) }
    }
}

impl pb::Position {
    /// The position, if the message holds one.
    pub fn get(&self) -> Option<Position> {
        match self.kind.as_ref()? {
            pb::position::Kind::Offset(n) => Some(Position::Offset(*n)),
            pb::position::Kind::Pulsar(m) => Some(Position::Pulsar {
                ledger: m.ledger,
                entry: m.entry,
                batch: m.batch,
            }),
        }
    }
}

/// The position of an optional message field.
pub fn position_of(p: &Option<pb::Position>) -> Option<Position> {
    p.as_ref().and_then(pb::Position::get)
}

impl pb::PartitionPoint {
    pub fn new(input: u32, position: Position, watermark: i64) -> Self {
        pb::PartitionPoint {
            input,
            position: Some(position.into()),
            watermark,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for p in [
            Position::Offset(0),
            Position::Offset(u64::MAX),
            Position::Pulsar {
                ledger: 7,
                entry: 9,
                batch: -1,
            },
            Position::Pulsar {
                ledger: 1,
                entry: 2,
                batch: 3,
            },
        ] {
            assert_eq!(pb::Position::from(p).get(), Some(p));
        }
        assert_eq!(pb::Position::default().get(), None);
        assert_eq!(position_of(&None), None);
    }
}
