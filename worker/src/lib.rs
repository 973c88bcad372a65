//! The worker: the actors that run a job's dataflow.
//!
//! ```text
//! partition ─► SourceTask(reader + Emitter) ─► window task ─► sink task ─► ClickHouse / part files
//!                     (bounded channels: a slow sink slows the sources;
//!                      dead letters travel to the local window task)
//! ```
//!
//! - [`source`]: one task per input partition. A [`source::PartitionReader`]
//!   decodes its input; the [`emitter::Emitter`] routes readings by key group,
//!   batches them and generates the partition's watermark.
//! - [`combine`]: readings bound for another worker, aggregated per device
//!   and window before they cross the network.
//! - [`window`]: the window operator (event-time tumbling windows, lateness,
//!   in-memory accumulators spilled to [`state`] in RocksDB) and its task.
//! - [`sink`]: staging output by epoch and committing an epoch once its
//!   checkpoint completed (results, late readings and dead letters alike).
//! - [`checkpoint`]: uploading a task's part of a checkpoint.
//! - [`shuffle`]: records to the worker owning their key group, over gRPC.
//! - [`deployment`]: assembling and supervising this worker's part of one
//!   generation of the job; [`node`]: the worker process (its server and its
//!   control stream to the coordinator).
//! - [`metrics`], [`prometheus`]: counters shared with heartbeats and `/metrics`.

pub mod checkpoint;
pub mod combine;
pub mod deployment;
pub mod emitter;
pub mod envelope;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod prometheus;
pub mod shuffle;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;
