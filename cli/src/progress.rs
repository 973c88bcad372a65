//! The live progress line of `weir local`.
//!
//! On a terminal it redraws one line in place; otherwise (logs collected by
//! a supervisor) it writes a log line every ten seconds.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use weir_common::time::format_utc_ms;
use weir_proto::admin::JobStatus;

use crate::local::group;

pub struct Progress {
    terminal: bool,
    last_log: Instant,
    drawn: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            terminal: !quiet && std::io::stderr().is_terminal(),
            last_log: Instant::now(),
            drawn: false,
        }
    }

    pub fn draw(&mut self, s: &JobStatus) {
        let phase = match (s.state.as_str(), s.phase.as_str()) {
            ("running", "waiting-for-sink") => "waiting for sink",
            ("running", "draining") | ("stopped", _) => "stopping",
            (state, _) => state,
        };
        let line = format!(
            "{phase} │ records {} ({}/s) │ watermark {} │ windows {} │ rows {} │ late {} │ bad {}",
            group(s.records_in),
            group(s.records_in_per_second as u64),
            format_utc_ms(s.watermark),
            group(s.windows_closed),
            group(s.rows_written),
            group(s.late_records),
            group(s.bad_records),
        );
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.drawn = true;
        } else if self.last_log.elapsed().as_secs() >= 10 {
            self.last_log = Instant::now();
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
