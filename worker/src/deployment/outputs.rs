//! Where a deployment's outputs go, and getting their directories ready.

use std::path::{Path, PathBuf};

use weir_common::keygroup::KeyGroupRange;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::sink::parts::{remove_parts, remove_stale_in_progress};
use weir_common::sink::SinkError;
use weir_common::spec::{JobSpec, LatePolicy, SinkKind};

use super::{DeploymentPlan, JobError, Layout};
use crate::sink::{late_to_main, tables_for, Destination, Destinations, Output};

/// Decides each output's destination, and makes the file destinations
/// ready: directories exist, in-progress files other generations left are
/// gone, and a new run (one that resumes nothing) removes the parts of
/// earlier runs. Returns them with a line per output for the user.
pub(super) fn open_outputs(
    plan: &DeploymentPlan,
    layout: &Layout,
) -> Result<(Destinations, Vec<String>), JobError> {
    let spec: &JobSpec = &plan.spec;
    let mine = plan.slots[plan.me].key_groups;
    let mut described = Vec::new();
    let kind = spec.sink.kind()?;
    let clickhouse = match kind {
        SinkKind::ClickHouse(c) => {
            let password = std::env::var(&c.password_env)
                .ok()
                .filter(|p| !p.is_empty());
            Some(ClickHouseWriter::new(c, password).with_generation(
                &spec.name,
                plan.generation,
                &plan.slots[plan.me].worker_id,
            ))
        }
        SinkKind::Jsonl(_) => None,
    };
    let mut destinations = Destinations::new(clickhouse.clone());
    let ready = |dir: &Path| prepare_dir(dir, plan.generation, mine, !plan.resumes());
    let tables = tables_for(&spec.aggregates, late_to_main(spec.late.policy));
    for table in tables {
        let output = match table {
            weir_common::rows::Table::SensorsLocal => Output::SensorsLocal,
            weir_common::rows::Table::SensorAggregates => Output::SensorAggregates,
            weir_common::rows::Table::LateReadings => Output::LateReadings,
        };
        match (&clickhouse, &layout.jsonl_dir) {
            (Some(w), _) => {
                described.push(format!("{} at {}", w.table_name(table), w.url()));
                destinations.set(output, Destination::ClickHouse);
            }
            (None, dir) => {
                let dir = dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("weir-output"))
                    .join(table.default_name());
                ready(&dir)?;
                described.push(format!("{}/", dir.display()));
                destinations.set(output, Destination::Files(dir));
            }
        }
    }
    if let (LatePolicy::File, Some(dir)) = (spec.late.policy, &layout.late_dir) {
        ready(dir)?;
        described.push(format!("{}/ (late readings)", dir.display()));
        destinations.set(Output::LateReadings, Destination::Files(dir.clone()));
    }
    ready(&layout.dead_letters).map_err(|e| match e {
        JobError::Sink(e) => JobError::DeadLetters(e),
        other => other,
    })?;
    described.push(format!("{}/ (dead letters)", layout.dead_letters.display()));
    destinations.set(
        Output::DeadLetters,
        Destination::Files(layout.dead_letters.clone()),
    );
    // Rows staged by an earlier deployment here are in its checkpoints if
    // they are needed at all.
    match std::fs::remove_dir_all(&layout.staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&layout.staging, e)),
    }
    std::fs::create_dir_all(&layout.staging).map_err(|e| io(&layout.staging, e))?;
    Ok((destinations, described))
}

fn io(path: &Path, source: std::io::Error) -> JobError {
    JobError::Sink(SinkError::Io {
        path: path.to_owned(),
        source,
    })
}

fn prepare_dir(
    dir: &Path,
    generation: u64,
    mine: KeyGroupRange,
    new_run: bool,
) -> Result<(), JobError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let stale = remove_stale_in_progress(dir, generation, mine)?;
    if stale > 0 {
        tracing::info!(dir = %dir.display(), files = stale, "removed in-progress files of uncommitted epochs");
    }
    if new_run {
        let old = remove_parts(dir, mine)?;
        if old > 0 {
            tracing::info!(dir = %dir.display(), files = old, "a new run: removed the output of earlier runs");
        }
    }
    Ok(())
}
