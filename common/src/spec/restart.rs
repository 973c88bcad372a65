//! The `restart` section of the job spec: what the coordinator does when a
//! generation fails.
//!
//! Only failures that a retry may cure count here (a server down, a disk
//! full, a crash). A deterministic error (a bad spec, a schema or table
//! that does not match, an input that is not the restored checkpoint's)
//! fails the job at once with its cause, and a worker that lost a peer is
//! not a failure of the job at all: the coordinator redeploys without
//! counting it. The default never gives up, with a delay that doubles up
//! to a minute (Flink's default `exponential-delay` strategy since 1.19).

use serde::{Deserialize, Serialize};

use super::{invalid, Duration, SpecError};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartSpec {
    /// The delay before the first restart.
    pub initial_backoff: Duration,
    /// Each further failure in a row multiplies the delay by this (1: a
    /// fixed delay).
    pub multiplier: f64,
    /// The delay grows no further than this.
    pub max_backoff: Duration,
    /// A generation that ran this long before it failed starts the count
    /// (and the delay) afresh.
    pub reset_after: Duration,
    /// Failures in a row after which the job fails (0: the first failure
    /// fails the job). None: never.
    pub max_attempts: Option<u32>,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            initial_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            reset_after: Duration::from_secs(600),
            max_attempts: None,
        }
    }
}

impl RestartSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(invalid(
                "restart.multiplier",
                "must be a number of at least 1",
            ));
        }
        if self.max_backoff.as_millis() < self.initial_backoff.as_millis() {
            return Err(invalid(
                "restart.max_backoff",
                "must be at least restart.initial_backoff",
            ));
        }
        Ok(())
    }

    /// The delay before restarting after the `failures`th failure in a row
    /// (1 for the first).
    pub fn backoff(&self, failures: u32) -> std::time::Duration {
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let ms = self.initial_backoff.as_millis() as f64 * self.multiplier.powi(exponent);
        let capped = ms.min(self.max_backoff.as_millis() as f64);
        // `capped` is finite and at most `max_backoff` (a u64 of ms).
        std::time::Duration::from_millis(capped as u64)
    }

    /// Whether the `failures`th failure in a row fails the job.
    pub fn gives_up_after(&self, failures: u32) -> bool {
        self.max_attempts.is_some_and(|max| failures > max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_to_its_cap_and_the_default_never_gives_up() {
        let r = RestartSpec::default();
        let secs = |n| r.backoff(n).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(6), secs(7)],
            [1, 2, 4, 32, 60]
        );
        assert_eq!(secs(u32::MAX), 60);
        assert!(!r.gives_up_after(u32::MAX));

        let fixed = RestartSpec {
            multiplier: 1.0,
            max_attempts: Some(3),
            ..RestartSpec::default()
        };
        assert_eq!(fixed.backoff(10), std::time::Duration::from_secs(1));
        assert!(!fixed.gives_up_after(3));
        assert!(fixed.gives_up_after(4));
        let at_once = RestartSpec {
            max_attempts: Some(0),
            ..RestartSpec::default()
        };
        assert!(at_once.gives_up_after(1));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = RestartSpec {
            multiplier: 0.5,
            ..RestartSpec::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("restart.multiplier"));
        let bad = RestartSpec {
            max_backoff: Duration::from_millis(10),
            ..RestartSpec::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("restart.max_backoff"));
        assert!(RestartSpec::default().validate().is_ok());
    }
}
