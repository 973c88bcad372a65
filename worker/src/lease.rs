//! The worker's lease from the coordinator, shared with what writes.
//!
//! The control loop renews it with every message from the coordinator; the
//! sink starts no write once it has run out. A worker that was frozen
//! (SIGSTOP, a VM pause) past its lease therefore writes nothing when it
//! wakes, even before its control loop has noticed: by then the
//! coordinator may have given its work to another generation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the process's first look at the clock.
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    weir_common::time::millis(origin.elapsed())
}

/// When the lease ends (ms on [`now_ms`]'s clock); `0`: no lease (writes
/// are always allowed, as for `weir local` and older coordinators).
#[derive(Debug, Default)]
pub struct Lease {
    ends_ms: AtomicU64,
}

impl Lease {
    /// Renews the lease for `length` from now (`None`: no lease).
    pub fn renew(&self, length: Option<Duration>) {
        let ends = length.map_or(0, |l| {
            now_ms().saturating_add(weir_common::time::millis(l)).max(1)
        });
        self.ends_ms.store(ends, Relaxed);
    }

    /// Whether a write may start now.
    pub fn holds(&self) -> bool {
        match self.ends_ms.load(Relaxed) {
            0 => true,
            ends => now_ms() < ends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_it_runs_out_and_no_lease_always_holds() {
        let lease = Lease::default();
        assert!(lease.holds());
        lease.renew(Some(Duration::from_millis(30)));
        assert!(lease.holds());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!lease.holds());
        lease.renew(Some(Duration::from_secs(60)));
        assert!(lease.holds());
        lease.renew(None);
        assert!(lease.holds());
    }
}
