//! openraft's own storage test suite against the RocksDB store, and what
//! a restart finds in it.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;
use weir_raft::{open, LogStore, NodeId, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().expect("a temporary directory");
        let (log, sm) = open(dir.path()).expect("open the store");
        Ok((dir, log, sm))
    }
}

/// Plain `#[test]`: the suite runs each case on a runtime of its own.
#[test]
fn the_store_passes_openraft_s_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft's storage suite failed: {e}");
    }
}

/// No peers: a group of one never sends anything.
struct Alone;

struct NoPeer;

impl openraft::RaftNetworkFactory<TypeConfig> for Alone {
    type Network = NoPeer;
    async fn new_client(&mut self, _: NodeId, _: &openraft::BasicNode) -> NoPeer {
        NoPeer
    }
}

fn unreachable<E: std::error::Error>() -> openraft::error::RPCError<NodeId, openraft::BasicNode, E>
{
    openraft::error::RPCError::Unreachable(openraft::error::Unreachable::new(
        &std::io::Error::other("a group of one has no peers"),
    ))
}

impl openraft::RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _: openraft::raft::AppendEntriesRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::AppendEntriesResponse<NodeId>,
        openraft::error::RPCError<NodeId, openraft::BasicNode, openraft::error::RaftError<NodeId>>,
    > {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        openraft::error::RPCError<
            NodeId,
            openraft::BasicNode,
            openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>,
        >,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _: openraft::raft::VoteRequest<NodeId>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::VoteResponse<NodeId>,
        openraft::error::RPCError<NodeId, openraft::BasicNode, openraft::error::RaftError<NodeId>>,
    > {
        Err(unreachable())
    }
}

async fn start(dir: &std::path::Path) -> (openraft::Raft<TypeConfig>, StateMachine) {
    let (log, sm) = open(dir).expect("open the store");
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .expect("a valid config");
    let raft = openraft::Raft::new(1, std::sync::Arc::new(config), Alone, log, sm.clone())
        .await
        .expect("raft starts");
    (raft, sm)
}

/// A coordinator restarted (or SIGKILLed: every write is synced) finds its
/// job record again: the latest snapshot, then the committed entries after
/// it, which raft re-applies; a second initialisation is refused as
/// harmless.
#[tokio::test]
async fn a_restarted_group_of_one_finds_its_job_record() {
    use std::collections::BTreeMap;
    use weir_raft::{CheckpointPointer, Command};

    let dir = TempDir::new().expect("a temporary directory");
    let members = BTreeMap::from([(1u64, openraft::BasicNode::new("127.0.0.1:7070"))]);
    {
        let (raft, sm) = start(dir.path()).await;
        raft.initialize(members.clone()).await.expect("initialised");
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .current_leader(1, "the only member leads")
            .await
            .expect("a leader");
        raft.client_write(Command::SetSpec {
            yaml: "name: job\n".into(),
        })
        .await
        .expect("written");
        raft.client_write(Command::Deployed {
            generation: 1,
            assignment: vec![1, 2],
        })
        .await
        .expect("written");
        raft.trigger().snapshot().await.expect("a snapshot");
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .snapshot(openraft::testing::log_id(1, 1, 3), "the snapshot is built")
            .await
            .expect("a snapshot");
        let written = raft
            .client_write(Command::CheckpointCompleted(CheckpointPointer {
                checkpoint: 7,
                generation: 1,
                metadata: "chk-7/_metadata".into(),
                savepoint: false,
                completed_ms: 1,
            }))
            .await
            .expect("written");
        assert!(written.data.applied);
        assert_eq!(sm.record().checkpoints.len(), 1);
        raft.shutdown().await.expect("shut down");
    }
    let (raft, sm) = start(dir.path()).await;
    let again = raft.initialize(members).await;
    assert!(
        matches!(
            again,
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_)
            ))
        ),
        "{again:?}"
    );
    raft.wait(Some(std::time::Duration::from_secs(5)))
        .current_leader(1, "it leads again")
        .await
        .expect("a leader");
    raft.ensure_linearizable().await.expect("reads are current");
    let record = sm.record();
    assert_eq!(
        (
            record.spec_yaml.as_str(),
            record.spec_version,
            record.generation
        ),
        ("name: job\n", 1, 1)
    );
    assert_eq!(
        record.checkpoints.back().map(|p| p.checkpoint),
        Some(7),
        "re-applied after the snapshot"
    );
    raft.shutdown().await.expect("shut down");
}
