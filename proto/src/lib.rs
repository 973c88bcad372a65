//! Weir's wire protocols, generated from `weir/*.proto` at build time.
//!
//! - [`cluster`]: coordinator ⇄ worker control stream (registration,
//!   heartbeats, deployments).
//! - [`shuffle`]: worker → worker record exchange.
//! - [`admin`]: the coordinator's admin API.
//! - [`convert`]: between wire messages and Weir's types.

pub mod cluster {
    tonic::include_proto!("weir.cluster");
}

pub mod shuffle {
    tonic::include_proto!("weir.shuffle");
}

pub mod admin {
    tonic::include_proto!("weir.admin");
}

pub mod convert;
