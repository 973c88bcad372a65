//! Closing a window costs the same per row whatever the window's size.
//!
//! Closing a window of N devices once cost O(N² / batch_rows): the sink
//! split "the rest" off its pending rows for every insert, a fresh copy of
//! everything still waiting. This test counts the work instead of timing it:
//! the allocations and allocated bytes of the thread that closes a window
//! and writes its rows (window operator → sink task → staged JSON-lines
//! part files, committed at the checkpoint, on one current-thread runtime),
//! per closed row, for 10,000 and 100,000 devices, with the window in
//! memory and with it spilled to RocksDB. Work per row that grows with N
//! fails the test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_common::checkpoint::CheckpointStore;
use weir_common::keygroup::KeyGroupRange;
use weir_common::position::Position;
use weir_common::reading::Reading;
use weir_common::sink::parts::part_path;
use weir_common::spec::{Aggregate, LatePolicy};
use weir_worker::envelope::RecordBatch;
use weir_worker::metrics::JobMetrics;
use weir_worker::sink::{
    Committer, Destination, Destinations, Output, SinkConfig, SinkTask, Stager,
};
use weir_worker::state::StateStore;
use weir_worker::window::{Produced, SinkMsg, WindowConfig, WindowOperator, EMIT_ROWS};

/// Counts allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + bytes as u64));
}

// SAFETY: delegates every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counters() -> (u64, u64) {
    (ALLOCS.with(Cell::get), BYTES.with(Cell::get))
}

const MIN: i64 = 60_000;
const T0: i64 = 1_760_054_400_000;

/// Work per closed (device, window) result.
#[derive(Debug)]
struct PerRow {
    allocations: f64,
    bytes: f64,
}

/// One window of `devices` devices (two readings each), closed and written
/// to JSON lines through the sink task; the work of closing and writing,
/// per closed result.
fn close_window(devices: i32, budget: usize) -> PerRow {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateStore::open_fresh(&dir.path().join("state")).expect("state");
    let mut op = WindowOperator::new(
        WindowConfig {
            window_ms: MIN,
            key_groups: KeyGroupRange::all(128),
            max_parallelism: 128,
            memory_budget: budget,
            late_policy: LatePolicy::Output,
            aggregates: vec![Aggregate::SensorsLocal, Aggregate::SensorAggregates1m],
            input_names: vec!["p0".into()],
        },
        state,
    );
    let mut out = Produced::default();
    for round in 0..2 {
        for first in (0..devices).step_by(1024) {
            let mut batch = RecordBatch::with_capacity(0, 1024);
            for sensor in first..(first + 1024).min(devices) {
                let reading = Reading {
                    sensor_id: sensor,
                    sensor_type: 1,
                    timestamp_ms: T0 + i64::from(sensor % 50_000) + round,
                    temperature: 20.0,
                    ..Reading::default()
                };
                batch.push(reading, Position::Offset(sensor as u64));
            }
            op.on_records(&batch, &mut out).expect("records");
        }
    }
    if budget < 1 << 20 {
        assert!(op.spills() > 0, "the small budget spills");
    }
    let out_dir = dir.path().join("out");
    let mut destinations = Destinations::new(None);
    for (output, name) in [
        (Output::SensorsLocal, "sensors_local"),
        (Output::SensorAggregates, "sensor_aggregates_1m"),
    ] {
        let d = out_dir.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        destinations.set(output, Destination::Files(d));
    }
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).expect("dir");
    let metrics = Arc::new(JobMetrics::default());
    let (_completed_tx, completed) = tokio::sync::watch::channel(1u64);
    let store = CheckpointStore::local(&dir.path().join("store"), "job");
    let sink = SinkTask {
        stager: Stager::new(staging, destinations.clone(), 1, KeyGroupRange::all(128)),
        committer: Committer::new(
            destinations,
            store,
            SinkConfig {
                insert_rows: 1_000,
                retry_initial: Duration::from_millis(10),
                retry_max: Duration::from_millis(10),
            },
            metrics.clone(),
            CancellationToken::new(),
            Default::default(),
        ),
        instance: "test".into(),
        checkpoints: None,
        completed,
        restored: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let before = counters();
    let closed = rt.block_on(async move {
        let (tx, rx) = mpsc::channel(8);
        let sink = tokio::spawn(sink.run(rx));
        op.on_end(0);
        let mut out = Produced::default();
        let mut closed = 0;
        while op.has_output() {
            op.emit(EMIT_ROWS, &mut out).expect("emit");
            assert!(out.windows <= EMIT_ROWS as u64, "messages are bounded");
            closed += std::mem::take(&mut out.windows);
            tx.send(SinkMsg::Rows(std::mem::take(&mut out.rows)))
                .await
                .expect("send");
        }
        // The window's rows are epoch 1, committed at the end (checkpoint 1
        // counts as completed from the start).
        tx.send(SinkMsg::Barrier(1)).await.expect("send");
        tx.send(SinkMsg::End).await.expect("send");
        sink.await.expect("join").expect("sink");
        closed
    });
    let after = counters();
    assert_eq!(closed, devices as u64);
    assert_eq!(metrics.snapshot().rows_written, 2 * devices as u64);
    let part = part_path(&out_dir.join("sensors_local"), 1, KeyGroupRange::all(128));
    let lines = std::fs::read_to_string(part).expect("read").lines().count();
    assert_eq!(lines, devices as usize);
    PerRow {
        allocations: (after.0 - before.0) as f64 / closed as f64,
        bytes: (after.1 - before.1) as f64 / closed as f64,
    }
}

fn assert_linear(budget: usize, what: &str) {
    let small = close_window(10_000, budget);
    let large = close_window(100_000, budget);
    eprintln!("{what}: 10,000 devices {small:?}, 100,000 devices {large:?}");
    assert!(
        large.allocations <= small.allocations * 1.1 + 1.0,
        "{what}: allocations per closed row grow with the window: {small:?} → {large:?}"
    );
    assert!(
        large.bytes <= small.bytes * 1.1 + 256.0,
        "{what}: bytes allocated per closed row grow with the window: {small:?} → {large:?}"
    );
}

#[test]
fn closing_a_window_in_memory_costs_the_same_per_row_at_any_size() {
    assert_linear(1 << 30, "in memory");
}

#[test]
fn closing_a_spilled_window_costs_the_same_per_row_at_any_size() {
    assert_linear(256 << 10, "spilled to RocksDB");
}
