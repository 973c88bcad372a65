//! A coordinator's place in its raft group: the static peer list, the one
//! safe initialisation, and starting raft over the store.
//!
//! The group is the chart's coordinator StatefulSet: `weir-coordinator-0..2`
//! reached through the headless service, given to every coordinator as the
//! same `--peers 0=HOST:PORT,1=HOST:PORT,2=HOST:PORT`. Exactly one
//! coordinator may initialise the group, exactly once (openraft issues
//! #1535, #927, #1242 list what goes wrong otherwise): the one with the
//! lowest id, and only when its store has never held a vote, a log entry or
//! a snapshot. A restarted coordinator (or all three restarted, or a rolling
//! update) finds its store and never initialises again; the others never
//! initialise at all — they wait to be reached by the leader. A lowest-id
//! coordinator that lost its volume initialises a group of its own at term
//! 0, which cannot win a vote against members with longer logs: the
//! existing leader brings it back into the group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, Raft};

use crate::network::Network;
use crate::{open, NodeId, OpenError, StateMachine, TypeConfig};

/// Why a peer list is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    #[error("--peers: `{0}` is not ID=HOST:PORT")]
    Entry(String),
    #[error("--peers: `{0}` is not a node id (0, 1, 2, ...)")]
    Id(String),
    #[error("--peers: node {0} is listed twice")]
    Twice(NodeId),
    #[error("--peers: empty")]
    Empty,
    #[error("--peers does not list this coordinator's --node-id {0}")]
    NotListed(NodeId),
}

/// Parses `0=HOST:PORT,1=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, PeersError> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .filter(|(_, a)| a.contains(':'))
            .ok_or_else(|| PeersError::Entry(entry.to_owned()))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| PeersError::Id(id.to_owned()))?;
        if peers.insert(id, addr.trim().to_owned()).is_some() {
            return Err(PeersError::Twice(id));
        }
    }
    if peers.is_empty() {
        return Err(PeersError::Empty);
    }
    Ok(peers)
}

/// How a coordinator runs its raft.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub node_id: NodeId,
    /// Every member, this one included: id → gRPC address.
    pub peers: BTreeMap<NodeId, String>,
    /// The store's directory.
    pub dir: PathBuf,
    pub heartbeat: Duration,
    /// A follower that hears nothing from the leader for its lease
    /// (openraft's `election_timeout_max`, 1.5 × this) plus a random
    /// election timeout (between this and 1.5 × this) starts an election:
    /// 2.5–3 × this in all.
    pub election: Duration,
    /// Sent to the peers with every call, and required of theirs.
    pub secret: weir_proto::auth::ClusterSecret,
    /// How to dial the peers (TLS or plain).
    pub dial: weir_proto::tls::Dialer,
}

/// Why the group could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Peers(#[from] PeersError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("raft: {0}")]
    Raft(String),
}

/// A coordinator's raft, started.
pub struct Group {
    pub raft: Raft<TypeConfig>,
    pub state: StateMachine,
    /// Whether this start initialised the group.
    pub initialised: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Group {
    /// Opens the store, starts raft, and initialises the group when this
    /// coordinator is the one to (see the module's doc).
    pub async fn start(config: GroupConfig) -> Result<Group, GroupError> {
        if !config.peers.contains_key(&config.node_id) {
            return Err(PeersError::NotListed(config.node_id).into());
        }
        let (mut log, mut state) = open(&config.dir)?;
        let pristine = log
            .read_vote()
            .await
            .map_err(|e| GroupError::Raft(e.to_string()))?
            .is_none()
            && log
                .get_log_state()
                .await
                .map_err(|e| GroupError::Raft(e.to_string()))?
                .last_log_id
                .is_none()
            && state
                .get_current_snapshot()
                .await
                .map_err(|e| GroupError::Raft(e.to_string()))?
                .is_none();
        let raft_config = openraft::Config {
            cluster_name: "weir-coordinators".into(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: millis(config.election),
            election_timeout_max: millis(config.election * 3 / 2),
            ..Default::default()
        }
        .validate()
        .map_err(|e| GroupError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(
                config.peers.clone(),
                config.secret.clone(),
                config.dial.clone(),
            ),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| GroupError::Raft(e.to_string()))?;
        let lowest = config.peers.keys().next() == Some(&config.node_id);
        let initialised = lowest && pristine;
        if initialised {
            let members: BTreeMap<NodeId, BasicNode> = config
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            tracing::info!(
                node = config.node_id,
                ?members,
                "initialising the coordinators' raft group"
            );
            raft.initialize(members)
                .await
                .map_err(|e| GroupError::Raft(e.to_string()))?;
        }
        Ok(Group {
            raft,
            state,
            initialised,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_are_named() {
        let p = parse_peers("0=a:1, 1=b:2,2=c:3").expect("valid");
        assert_eq!(p.len(), 3);
        assert_eq!(p[&1], "b:2");
        assert_eq!(parse_peers("0=a:1,0=b:2"), Err(PeersError::Twice(0)));
        assert_eq!(parse_peers("x=a:1"), Err(PeersError::Id("x".into())));
        assert_eq!(parse_peers("0=a"), Err(PeersError::Entry("0=a".into())));
        assert_eq!(parse_peers(" , "), Err(PeersError::Empty));
    }
}
