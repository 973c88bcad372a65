//! Weir's wire protocols, generated from `weir/*.proto` at build time.
//!
//! - [`cluster`]: coordinator ⇄ worker control stream (registration,
//!   heartbeats, deployments).
//! - [`shuffle`]: worker → worker record exchange.
//! - [`admin`]: the coordinator's admin API.
//! - [`checkpoint`]: state handles and checkpoint metadata in the store.
//! - [`raft`]: coordinator ⇄ coordinator raft (high availability).
//! - [`convert`]: between wire messages and Weir's types.
//! - [`auth`]: the cluster's shared secret on the internal calls.
//! - [`tls`]: optional TLS on every port, certificates reloaded from files.

pub mod cluster {
    tonic::include_proto!("weir.cluster");

    /// Metadata of the status a coordinator that does not lead its raft
    /// group refuses a worker (or an admin client) with: the leader's gRPC
    /// address.
    pub const LEADER_KEY: &str = "weir-leader";
}

pub mod shuffle {
    tonic::include_proto!("weir.shuffle");
}

pub mod admin {
    tonic::include_proto!("weir.admin");
}

pub mod checkpoint {
    tonic::include_proto!("weir.checkpoint");
}

/// The coordinators' raft RPCs (bodies are openraft's messages).
pub mod raft {
    tonic::include_proto!("weir.raft");
}

pub mod auth;
pub mod convert;
pub mod tls;
