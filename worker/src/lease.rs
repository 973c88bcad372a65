//! The worker's lease from the coordinator, shared with what writes.
//!
//! The control loop renews it with every message from the coordinator; the
//! sink starts no write while it does not hold. A worker that was frozen
//! (SIGSTOP, a VM pause) past its lease therefore writes nothing when it
//! wakes, even before its control loop has noticed: by then the
//! coordinator may have given its work to another generation. A worker
//! that lost its raft group's leader revokes the lease at once and keeps
//! computing: its writes wait until a new leader adopts its generation
//! (and renews the lease), or the deployment is aborted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

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
    /// Wakes writers waiting for the lease.
    renewed: tokio::sync::Notify,
}

/// `ends_ms` of a revoked lease.
const REVOKED: u64 = 1;

impl Lease {
    /// Renews the lease for `length` from now (`None`: no lease).
    pub fn renew(&self, length: Option<Duration>) {
        let ends = length.map_or(0, |l| {
            now_ms()
                .saturating_add(weir_common::time::millis(l))
                .max(REVOKED + 1)
        });
        self.ends_ms.store(ends, Relaxed);
        self.renewed.notify_waiters();
    }

    /// Ends the lease now (the coordinator that gave it is gone); only a
    /// renewal lets writes start again.
    pub fn revoke(&self) {
        self.ends_ms.store(REVOKED, Relaxed);
    }

    /// Whether a write may start now.
    pub fn holds(&self) -> bool {
        match self.ends_ms.load(Relaxed) {
            0 => true,
            REVOKED => false,
            ends => now_ms() < ends,
        }
    }

    /// Whether it was revoked (rather than run out).
    pub fn revoked(&self) -> bool {
        self.ends_ms.load(Relaxed) == REVOKED
    }

    /// Waits while the lease is revoked, until it holds: `false` when
    /// `abort` comes first, or when it ran out instead (a worker frozen or
    /// cut off past its lease gives up for good: a renewal after that
    /// would only be a stale message).
    pub async fn held(&self, abort: &CancellationToken) -> bool {
        loop {
            let renewed = self.renewed.notified();
            if self.holds() {
                return true;
            }
            if !self.revoked() {
                return false;
            }
            tokio::select! {
                biased;
                _ = abort.cancelled() => return false,
                _ = renewed => {}
                // A lease can also hold again without a notification only
                // by a renewal; this is a safety net, not a poll for one.
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            }
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
        lease.revoke();
        assert!(!lease.holds(), "revoked");
    }

    #[tokio::test]
    async fn a_lease_that_ran_out_is_not_waited_for() {
        let lease = Lease::default();
        lease.renew(Some(Duration::ZERO));
        // (A lease ends a millisecond or two after the clock's origin at
        // the earliest.)
        tokio::time::sleep(Duration::from_millis(5)).await;
        let abort = CancellationToken::new();
        let waited = tokio::time::timeout(Duration::from_secs(5), lease.held(&abort)).await;
        assert_eq!(waited.ok(), Some(false), "gives up at once");
    }

    #[tokio::test]
    async fn writers_wait_for_a_renewal_or_an_abort() {
        let lease = std::sync::Arc::new(Lease::default());
        lease.revoke();
        let abort = CancellationToken::new();
        let waiter = {
            let (lease, abort) = (lease.clone(), abort.clone());
            tokio::spawn(async move { lease.held(&abort).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "waits while revoked");
        lease.renew(Some(Duration::from_secs(60)));
        assert!(waiter.await.expect("joins"), "renewed");

        lease.revoke();
        let waiter = {
            let (lease, abort) = (lease.clone(), abort.clone());
            tokio::spawn(async move { lease.held(&abort).await })
        };
        abort.cancel();
        assert!(!waiter.await.expect("joins"), "aborted");
    }
}
