//! The worker: the actors that run a job's dataflow.
//!
//! ```text
//! partition ─► SourceTask(reader + Emitter) ─► window task ─► sink task ─► ClickHouse / JSONL
//!                     │   (bounded channels: a slow sink slows the sources)
//!                     └─► dead-letter task ─► dead_letters.jsonl
//! ```
//!
//! - [`source`]: one task per input partition. A [`source::PartitionReader`]
//!   decodes its input; the [`emitter::Emitter`] routes readings by key group,
//!   batches them and generates the partition's watermark.
//! - [`window`]: the window operator (event-time tumbling windows, lateness,
//!   in-memory accumulators spilled to [`state`] in RocksDB) and its task.
//! - [`sink`]: batching and retrying writes; [`dead_letters`]: keeping
//!   undecodable input.
//! - [`job`]: assembling and supervising all of it in one process.
//! - [`metrics`]: counters the tasks share with displays and exporters.

pub mod dead_letters;
pub mod emitter;
pub mod envelope;
pub mod job;
pub mod metrics;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;
