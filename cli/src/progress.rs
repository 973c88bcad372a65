//! The live progress line of `weir local`.
//!
//! On a terminal it redraws one line in place twice a second; otherwise
//! (logs collected by a supervisor) it writes a log line every ten seconds.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use weir_common::time::format_utc_ms;
use weir_worker::job::Phase;
use weir_worker::metrics::{JobMetrics, MetricsSnapshot};

use crate::local::group;

pub struct Progress {
    metrics: Arc<JobMetrics>,
    terminal: bool,
    last: (Instant, MetricsSnapshot),
    last_log: Instant,
    drawn: bool,
}

impl Progress {
    pub fn new(metrics: Arc<JobMetrics>, quiet: bool) -> Self {
        let now = Instant::now();
        Progress {
            last: (now, metrics.snapshot()),
            metrics,
            terminal: !quiet && std::io::stderr().is_terminal(),
            last_log: now,
            drawn: false,
        }
    }

    pub fn draw(&mut self, phase: Phase) {
        let now = Instant::now();
        let m = self.metrics.snapshot();
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let rate = (m.records_in.saturating_sub(self.last.1.records_in)) as f64 / dt;
        self.last = (now, m);
        let state = match phase {
            Phase::WaitingForSink => "waiting for sink",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Done => "done",
        };
        let line = format!(
            "{state} │ records {} ({}/s) │ watermark {} │ windows {} │ rows {} │ late {} │ bad {}",
            group(m.records_in),
            group(rate as u64),
            format_utc_ms(m.watermark),
            group(m.windows_closed),
            group(m.rows_written),
            group(m.late_records),
            group(m.bad_records),
        );
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.drawn = true;
        } else if now.duration_since(self.last_log).as_secs() >= 10 {
            self.last_log = now;
            tracing::info!("{line}");
        }
    }

    /// Removes the progress line (before other output).
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}
