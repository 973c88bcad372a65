use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use weir_common::checkpoint::CheckpointStore;
use weir_common::dead_letter::DeadLetter;
use weir_common::keygroup::KeyGroupRange;
use weir_common::rows::LateReadingRow;
use weir_common::sink::parts::part_path;
use weir_common::sink::{OutputBatch, SinkError};
use weir_proto::cluster as pb;

use super::*;
use crate::checkpoint::UploaderMsg;
use crate::lease::Lease;
use crate::metrics::JobMetrics;
use crate::window::SinkMsg;

const KGS: KeyGroupRange = KeyGroupRange { start: 0, end: 128 };

fn late_row(i: usize) -> LateReadingRow {
    LateReadingRow {
        device_id: weir_common::reading::Reading::device_id(i as i32),
        event_time: 0,
        timestamp_ms: 0,
        window_end: 60,
        watermark_ms: 0,
        source: "s".into(),
        position: i.to_string(),
        reading: "{}".into(),
    }
}

fn dead_letter(i: usize) -> DeadLetter {
    DeadLetter::new(0, "s", i.to_string(), 1, "truncated", "x".into(), b"ab", 16)
}

fn rows(r: std::ops::Range<usize>) -> SinkMsg {
    SinkMsg::Rows(OutputBatch {
        late: r.clone().map(late_row).collect(),
        dead_letters: r.map(dead_letter).collect(),
        ..OutputBatch::default()
    })
}

struct Harness {
    dir: PathBuf,
    store: CheckpointStore,
    lease: Arc<Lease>,
    completed: watch::Sender<u64>,
    uploader: mpsc::Receiver<UploaderMsg>,
    abort: CancellationToken,
}

impl Harness {
    fn late_dir(&self) -> PathBuf {
        self.dir.join("late")
    }

    fn dead_dir(&self) -> PathBuf {
        self.dir.join("dead")
    }

    fn part(&self, dir: &Path, epoch: u64) -> PathBuf {
        part_path(dir, epoch, KGS)
    }

    fn lines(&self, dir: &Path, epoch: u64) -> Option<usize> {
        std::fs::read_to_string(self.part(dir, epoch))
            .ok()
            .map(|s| s.lines().count())
    }

    /// The next `Staged` message: its checkpoint and the epochs it holds.
    async fn staged(&mut self) -> (u64, Vec<pb::SinkEpoch>) {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.uploader.recv())
                .await
                .expect("a message to the uploader in time")
                .expect("the sink is running");
            if let UploaderMsg::Staged { checkpoint, epochs } = msg {
                return (checkpoint, epochs);
            }
        }
    }
}

fn task(dir: &Path, restored: Vec<SealedEpoch>) -> (SinkTask, Harness) {
    let mut destinations = Destinations::new(None);
    destinations.set(Output::LateReadings, Destination::Files(dir.join("late")));
    destinations.set(Output::DeadLetters, Destination::Files(dir.join("dead")));
    for d in ["late", "dead", "staging"] {
        std::fs::create_dir_all(dir.join(d)).expect("dir");
    }
    let store = CheckpointStore::local(&dir.join("store"), "job");
    let lease = Arc::new(Lease::default());
    let abort = CancellationToken::new();
    let (completed_tx, completed) = watch::channel(0);
    let (uploader_tx, uploader) = mpsc::channel(16);
    let task = SinkTask {
        stager: Stager::new(dir.join("staging"), destinations.clone(), 1, KGS),
        committer: Committer::new(
            destinations,
            store.clone(),
            SinkConfig {
                insert_rows: 100,
                retry_initial: Duration::from_millis(10),
                retry_max: Duration::from_millis(100),
            },
            Arc::new(JobMetrics::default()),
            abort.clone(),
            lease.clone(),
        ),
        instance: "w-g1-test".into(),
        checkpoints: Some(uploader_tx),
        completed,
        restored,
    };
    let harness = Harness {
        dir: dir.to_owned(),
        store,
        lease,
        completed: completed_tx,
        uploader,
        abort,
    };
    (task, harness)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn output_appears_when_its_checkpoint_completes_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, mut h) = task(dir.path(), Vec::new());
    let (tx, rx) = mpsc::channel(8);
    let handle = tokio::spawn(t.run(rx));
    tx.send(rows(0..3)).await.expect("send");
    tx.send(SinkMsg::Barrier(1)).await.expect("send");
    let (n, epochs) = h.staged().await;
    assert_eq!(n, 1);
    assert_eq!(epochs.len(), 1);
    assert_eq!(epochs[0].epoch, 1);
    let outputs: Vec<(&str, u64)> = epochs[0]
        .outputs
        .iter()
        .map(|o| (o.output.as_str(), o.rows))
        .collect();
    assert_eq!(outputs, [("late_readings", 3), ("dead_letters", 3)]);
    // In the store, not yet in the output.
    for o in &epochs[0].outputs {
        assert!(h.store.get(&o.key).await.is_ok(), "{} uploaded", o.key);
    }
    assert_eq!(h.lines(&h.late_dir(), 1), None);

    // Checkpoint 1 does not complete; checkpoint 2 holds epochs 1 and 2.
    tx.send(rows(3..5)).await.expect("send");
    tx.send(SinkMsg::Barrier(2)).await.expect("send");
    let (n, epochs) = h.staged().await;
    assert_eq!(n, 2);
    assert_eq!(
        epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [1, 2],
        "an uncommitted epoch stays in every checkpoint until committed"
    );
    assert_eq!(h.lines(&h.late_dir(), 1), None);

    h.completed.send(2).expect("send");
    eventually("epochs 1 and 2 are committed", || {
        h.lines(&h.late_dir(), 2).is_some()
    })
    .await;
    assert_eq!(h.lines(&h.late_dir(), 1), Some(3));
    assert_eq!(h.lines(&h.late_dir(), 2), Some(2));
    assert_eq!(h.lines(&h.dead_dir(), 1), Some(3));
    assert_eq!(h.lines(&h.dead_dir(), 2), Some(2));

    // A stop commits nothing that no completed checkpoint holds.
    tx.send(rows(5..6)).await.expect("send");
    drop(tx);
    let outcome = handle.await.expect("join").expect("ok");
    assert_eq!(outcome, SinkOutcome::Stopped { uncommitted: 2 });
    assert_eq!(h.lines(&h.late_dir(), 3), None);
}

#[tokio::test]
async fn a_restored_epoch_is_committed_from_the_store_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, h) = task(dir.path(), Vec::new());
    // Epoch 4 of a task of another generation, in the store.
    let local = dir.path().join("e4.jsonl");
    std::fs::write(&local, "{\"a\":1}\n{\"a\":2}\n").expect("write");
    h.store
        .put_file("shared/old-e4-late_readings", &local)
        .await
        .expect("put");
    let pb_epoch = pb::SinkEpoch {
        epoch: 4,
        key_group_start: 0,
        key_group_end: 128,
        outputs: vec![pb::StagedOutput {
            output: "late_readings".into(),
            key: "shared/old-e4-late_readings".into(),
            rows: 2,
            bytes: 16,
            format: pb::StagedFormat::JsonLines as i32,
        }],
    };
    for round in 0..2 {
        let staging = dir.path().join("staging");
        let restored = SealedEpoch::restored(
            &pb_epoch,
            &staging,
            &h_destinations(dir.path()),
            2 + round,
            KeyGroupRange { start: 0, end: 64 },
        )
        .expect("restored");
        let (t, h) = task(dir.path(), vec![restored]);
        let (tx, rx) = mpsc::channel(8);
        let handle = tokio::spawn(t.run(rx));
        drop(tx);
        assert_eq!(
            handle.await.expect("join").expect("ok"),
            SinkOutcome::Stopped { uncommitted: 0 }
        );
        assert_eq!(
            std::fs::read_to_string(h.part(&h.late_dir(), 4)).expect("part"),
            "{\"a\":1}\n{\"a\":2}\n",
            "round {round}"
        );
    }
    // No in-progress file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("late"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn h_destinations(dir: &Path) -> Destinations {
    let mut d = Destinations::new(None);
    d.set(Output::LateReadings, Destination::Files(dir.join("late")));
    d.set(Output::DeadLetters, Destination::Files(dir.join("dead")));
    d
}

#[tokio::test]
async fn nothing_is_committed_once_the_lease_has_run_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, mut h) = task(dir.path(), Vec::new());
    let (tx, rx) = mpsc::channel(8);
    let handle = tokio::spawn(t.run(rx));
    h.lease.renew(Some(Duration::from_secs(60)));
    tx.send(rows(0..2)).await.expect("send");
    tx.send(SinkMsg::Barrier(1)).await.expect("send");
    h.staged().await;
    h.completed.send(1).expect("send");
    eventually("epoch 1 is committed", || {
        h.lines(&h.late_dir(), 1).is_some()
    })
    .await;
    h.lease.renew(Some(Duration::ZERO));
    tx.send(rows(2..4)).await.expect("send");
    tx.send(SinkMsg::Barrier(2)).await.expect("send");
    h.staged().await;
    h.completed.send(2).expect("send");
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("ends")
        .expect("join")
        .expect("ok");
    assert_eq!(outcome, SinkOutcome::Aborted { uncommitted: 4 });
    assert_eq!(
        h.lines(&h.late_dir(), 2),
        None,
        "nothing committed after the lease ran out"
    );
}

#[tokio::test]
async fn a_revoked_lease_holds_commits_back_until_renewed_or_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, mut h) = task(dir.path(), Vec::new());
    let (tx, rx) = mpsc::channel(8);
    let handle = tokio::spawn(t.run(rx));
    // The raft leader was lost: completed epochs wait.
    h.lease.revoke();
    tx.send(rows(0..2)).await.expect("send");
    tx.send(SinkMsg::Barrier(1)).await.expect("send");
    h.staged().await;
    h.completed.send(1).expect("send");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.lines(&h.late_dir(), 1),
        None,
        "nothing committed while the lease is revoked"
    );
    assert!(!handle.is_finished(), "it waits for a lease");
    // A new leader adopts the deployment: its lease is renewed, and what
    // waited is committed.
    h.lease.renew(Some(Duration::from_secs(60)));
    eventually("epoch 1 is committed", || {
        h.lines(&h.late_dir(), 1).is_some()
    })
    .await;
    // Revoked again: an abort ends the wait.
    h.lease.revoke();
    tx.send(rows(2..4)).await.expect("send");
    tx.send(SinkMsg::Barrier(2)).await.expect("send");
    h.staged().await;
    h.completed.send(2).expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.is_finished(), "it waits for a lease");
    h.abort.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("ends")
        .expect("join")
        .expect("ok");
    assert_eq!(outcome, SinkOutcome::Aborted { uncommitted: 4 });
    assert_eq!(
        h.lines(&h.late_dir(), 2),
        None,
        "nothing committed without a lease"
    );
}

#[tokio::test]
async fn the_end_waits_for_the_final_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, mut h) = task(dir.path(), Vec::new());
    let (tx, rx) = mpsc::channel(8);
    let handle = tokio::spawn(t.run(rx));
    tx.send(rows(0..2)).await.expect("send");
    tx.send(SinkMsg::Barrier(1)).await.expect("send");
    tx.send(SinkMsg::End).await.expect("send");
    h.staged().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!handle.is_finished(), "waits for checkpoint 1 to complete");
    h.completed.send(1).expect("send");
    let outcome = handle.await.expect("join").expect("ok");
    assert_eq!(outcome, SinkOutcome::Finished);
    assert_eq!(h.lines(&h.late_dir(), 1), Some(2));
    assert!(!h.abort.is_cancelled());
}

#[tokio::test]
async fn rows_after_the_final_checkpoint_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, _h) = task(dir.path(), Vec::new());
    let (tx, rx) = mpsc::channel(8);
    tx.send(rows(0..1)).await.expect("send");
    tx.send(SinkMsg::End).await.expect("send");
    let err = t.run(rx).await.expect_err("rows no checkpoint covers");
    assert!(
        matches!(
            err,
            SinkError::Staged {
                retryable: false,
                ..
            }
        ),
        "{err}"
    );
}
