//! What a VM's idle timeout is measured from: the calls that use its guest. Each holds a
//! [`Busy`] for as long as it runs (a streamed answer until its body ends), so a long
//! exec is never taken for idleness; the owner pauses a VM only with no call in flight
//! and none started or ended for `idle_timeout_s`.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::models::now_ms;

pub struct Activity {
    in_flight: AtomicUsize,
    /// When the last call started or ended (ms since the epoch).
    last_ms: AtomicI64,
}

impl Activity {
    /// Counts from now, as a call would.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicI64::new(now_ms()),
        })
    }

    /// When the VM, idle for `timeout_ms`, is due to be paused: `None` while a call runs.
    pub fn idle_due_ms(&self, timeout_ms: i64) -> Option<i64> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.last_ms.load(Ordering::SeqCst) + timeout_ms)
    }

    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.last_ms.store(now_ms(), Ordering::SeqCst);
        Busy(self.clone())
    }
}

/// A call in flight to a VM's guest (see the module doc).
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_flight_is_never_idle_and_its_end_restarts_the_clock() {
        let a = Activity::new();
        let start = a.idle_due_ms(1000).unwrap();
        let busy = a.busy();
        let other = a.busy();
        assert_eq!(a.idle_due_ms(1000), None);
        drop(busy);
        assert_eq!(a.idle_due_ms(1000), None, "one call still runs");
        drop(other);
        assert!(a.idle_due_ms(1000).unwrap() >= start);
    }
}
