//! What every part of Weir shares: the job's data model and its rules.
//!
//! Weir runs one kind of job — sensor readings in, per-device event-time
//! windows out — and this crate is that job, independent of how it is
//! distributed:
//!
//! - [`spec`]: the job spec (YAML) with defaults that are the contract job.
//! - [`reading`]: a decoded reading; [`avro`] turns Avro datums and container
//!   files into readings (schema resolution compiled to a plan, no per-record
//!   allocation) and back; [`generator`] makes deterministic readings.
//! - [`keygroup`]: Flink's key groups, the unit in which state is split.
//! - [`time`] and [`watermark`]: windows, watermarks, lateness.
//! - [`aggregate`]: the per-(device, window) accumulator, mergeable in any
//!   order, and the output [`rows`] it becomes.
//! - [`sink`]: writers for ClickHouse and JSON lines and the shipped DDL;
//!   [`dead_letter`]: how undecodable input is kept.
//! - [`pulsar`]: Pulsar clients built from the job spec (authentication,
//!   TLS, retries) and topic partition discovery.
//! - [`tasks`]: one cancellation tree per process; critical tasks stop it.
//!
//! The worker crate puts these into actors (sources, window operator with
//! RocksDB state, sink); the coordinator crate decides who runs what.

pub mod aggregate;
pub mod avro;
pub mod checkpoint;
pub mod dead_letter;
pub mod error_chain;
pub mod exposition;
pub mod generator;
pub mod input;
pub mod keygroup;
pub mod position;
pub mod pulsar;
pub mod reading;
pub mod rows;
pub mod secret;
pub mod sink;
pub mod spec;
pub mod tasks;
pub mod time;
pub mod watermark;
