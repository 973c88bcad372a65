//! The dead-letter task: keeps undecodable input in a JSON-lines file.
//!
//! Every dead letter is written; the log gets one warning per kind of
//! failure (with its partition and position), so a stream of bad records
//! cannot flood it, and a count at the end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_common::dead_letter::DeadLetter;
use weir_common::sink::jsonl::JsonlFile;
use weir_common::sink::SinkError;

use crate::metrics::JobMetrics;

/// Writes dead letters until every sender is gone; returns how many.
pub async fn run_dead_letters(
    mut rx: mpsc::Receiver<DeadLetter>,
    mut file: JsonlFile,
    metrics: Arc<JobMetrics>,
    abort: CancellationToken,
) -> Result<u64, SinkError> {
    let mut seen_kinds = HashSet::new();
    let mut written = 0u64;
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        for letter in &batch {
            if seen_kinds.insert(letter.kind.clone()) {
                tracing::warn!(
                    kind = %letter.kind,
                    source = %letter.source,
                    position = %letter.position,
                    records = letter.records,
                    error = %letter.error,
                    file = %file.path().display(),
                    "undecodable input kept as a dead letter (further ones of this kind are counted, not logged)"
                );
            }
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match file.append(&batch) {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot write dead letters; retrying");
                    tokio::select! {
                        biased;
                        _ = abort.cancelled() => return Err(e),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
        written += batch.len() as u64;
        JobMetrics::add(&metrics.dead_letters, batch.len() as u64);
        batch.clear();
    }
    file.sync()?;
    Ok(written)
}
