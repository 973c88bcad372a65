//! `weir local`: the whole job in this process, with live progress.

use anyhow::Context;
use clap::Args;
use tokio::time::{interval, Duration, MissedTickBehavior};
use weir_worker::job::{JobOutcome, JobReport, LocalJob};

use crate::overrides::JobFlags;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct LocalArgs {
    #[command(flatten)]
    pub job: JobFlags,
    /// No live progress line (a log line every 10 s instead).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    let spec = args.job.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let job = LocalJob::start(spec).await?;
        for out in job.outputs() {
            tracing::info!(output = %out, "writing");
        }
        let mut progress = Progress::new(job.metrics(), args.quiet);
        let mut ticker = interval(Duration::from_millis(500));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        let mut interrupts = 0;
        while !job.is_done() {
            tokio::select! {
                _ = ticker.tick() => progress.draw(job.phase()),
                _ = tokio::signal::ctrl_c() => {
                    interrupts += 1;
                    if interrupts == 1 {
                        progress.clear();
                        eprintln!("stopping: writing every closed window (press Ctrl-C again to abort)");
                        job.stop();
                    } else {
                        progress.clear();
                        eprintln!("aborting");
                        job.abort();
                    }
                }
                _ = terminate.recv() => {
                    progress.clear();
                    eprintln!("SIGTERM: stopping");
                    job.stop();
                }
            }
        }
        let outputs = job.outputs().to_vec();
        progress.clear();
        let report = job.wait().await?;
        print_summary(&report, &outputs);
        Ok(())
    })
}

fn print_summary(r: &JobReport, outputs: &[String]) {
    let m = &r.metrics;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let head = match r.outcome {
        JobOutcome::Finished => "finished: every input read, every window written".to_string(),
        JobOutcome::Stopped { open_windows } => format!(
            "stopped: every closed window written; {open_windows} open window(s) were not emitted"
        ),
        JobOutcome::Aborted { unwritten_rows } => {
            format!("aborted: {unwritten_rows} row(s) were not written")
        }
    };
    println!("weir local {head} ({:.1} s)", r.elapsed.as_secs_f64());
    println!(
        "  records read     {:>14}  ({}/s)",
        group(m.records_in),
        group((m.records_in as f64 / secs) as u64)
    );
    println!("  bad records      {:>14}", group(m.bad_records));
    println!("  late readings    {:>14}", group(m.late_records));
    println!("  windows closed   {:>14}", group(m.windows_closed));
    println!("  rows written     {:>14}", group(m.rows_written));
    println!("  sink retries     {:>14}", group(m.sink_retries));
    println!("  state spills     {:>14}", group(m.state_spills));
    println!("  dead letters     {:>14}", group(r.dead_letters));
    println!(
        "  watermark        {:>14}",
        weir_common::time::format_utc_ms(m.watermark)
    );
    for out in outputs {
        println!("  output           {out}");
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1000), "1,000");
        assert_eq!(super::group(1_234_567), "1,234,567");
    }
}
