//! `weir ddl`: the output tables' DDL, printed or applied.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use weir_common::sink::clickhouse::ClickHouseWriter;
use weir_common::sink::ddl;
use weir_common::spec::{ClickHouseSinkSpec, JobSpec};

#[derive(Args, Debug)]
pub struct DdlArgs {
    /// Take database and table names (and the ClickHouse URL) from this spec.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Database name (default: the spec's, or `benchmark`).
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Run the statements instead of printing them.
    #[arg(long)]
    pub apply: bool,
    /// ClickHouse HTTP URL for --apply.
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
}

pub fn run(args: DdlArgs) -> anyhow::Result<()> {
    let spec = match &args.spec {
        Some(p) => JobSpec::load(p)?,
        None => JobSpec::default(),
    };
    let mut ch = spec
        .sink
        .clickhouse
        .clone()
        .unwrap_or_else(ClickHouseSinkSpec::default);
    if let Some(db) = &args.database {
        ch.database = db.clone();
    }
    if let Some(url) = &args.clickhouse {
        ch.url = url.clone();
    }
    let mut check = JobSpec::default();
    check.sink.jsonl = None;
    check.sink.clickhouse = Some(ch.clone());
    check.validate()?;
    if !args.apply {
        if args.clickhouse.is_some() {
            bail!("--clickhouse is only used with --apply");
        }
        print!("{}", ddl::script(&ch.database, &ch.tables));
        return Ok(());
    }
    let password = std::env::var(&ch.password_env)
        .ok()
        .filter(|p| !p.is_empty());
    let writer = ClickHouseWriter::new(&ch, password);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        writer.ping().await?;
        writer.create_tables().await?;
        writer
            .check_tables(&weir_common::rows::Table::ALL)
            .await
            .map_err(anyhow::Error::from)
    })?;
    println!(
        "created (if missing) {}.{}, {}.{}, {}.{} at {}",
        ch.database,
        ch.tables.sensors_local,
        ch.database,
        ch.tables.sensor_aggregates_1m,
        ch.database,
        ch.tables.late_readings,
        ch.url
    );
    Ok(())
}
