//! A coordinator's link to its raft group: recording the job's control
//! state, and what the admin API shows of the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use weir_proto::admin as api;
use weir_raft::{Command, JobRecord, NodeId, Response, StateMachine, TypeConfig};

/// Why a command was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// This coordinator no longer leads: whatever it was doing is for the
    /// new leader to do.
    #[error("this coordinator no longer leads the raft group (leader: {})", leader.map_or("unknown".to_owned(), |l| l.to_string()))]
    NotLeader { leader: Option<NodeId> },
    /// No majority answered in time (a partition, or two coordinators
    /// down): nothing can be recorded until one does.
    #[error("no majority of the coordinators recorded it within {0:?}")]
    NoQuorum(Duration),
    #[error("raft: {0}")]
    Raft(String),
}

/// The raft of a coordinator of a group (cheap to clone).
#[derive(Clone)]
pub struct RaftLink {
    raft: Raft<TypeConfig>,
    state: StateMachine,
    node_id: NodeId,
    peers: Arc<BTreeMap<NodeId, String>>,
}

impl RaftLink {
    pub fn new(
        raft: Raft<TypeConfig>,
        state: StateMachine,
        node_id: NodeId,
        peers: BTreeMap<NodeId, String>,
    ) -> Self {
        RaftLink {
            raft,
            state,
            node_id,
            peers: Arc::new(peers),
        }
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The gRPC address of coordinator `id`.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.peers.get(&id).map(String::as_str)
    }

    /// The job record as this coordinator has applied it.
    pub fn record(&self) -> JobRecord {
        self.state.record()
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Commits `command` through raft (a majority has it on disk) and
    /// applies it, or says why not within `patience`.
    pub async fn write(
        &self,
        command: Command,
        patience: Duration,
    ) -> Result<Response, RecordError> {
        match tokio::time::timeout(patience, self.raft.client_write(command)).await {
            Err(_) => Err(RecordError::NoQuorum(patience)),
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(RecordError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(RecordError::Raft(e.to_string())),
        }
    }

    /// Whether a majority still follows this coordinator as leader (a
    /// heartbeat round, at most `patience`).
    pub async fn confirm_leadership(&self, patience: Duration) -> bool {
        matches!(
            tokio::time::timeout(patience, self.raft.ensure_linearizable()).await,
            Ok(Ok(_))
        )
    }

    /// The group as this coordinator sees it.
    pub fn status(&self) -> api::RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let matched: BTreeMap<NodeId, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter_map(|(id, log)| log.as_ref().map(|l| (*id, l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| api::RaftMember {
                id: *id,
                address: node.addr.clone(),
                matched_index: matched.get(id).copied().unwrap_or(0),
                leader: m.current_leader == Some(*id),
            })
            .collect();
        api::RaftStatus {
            node_id: self.node_id,
            leader: m.current_leader.unwrap_or(0),
            has_leader: m.current_leader.is_some(),
            term: m.current_term,
            role: role_name(m.state).to_owned(),
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
        }
    }
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}
