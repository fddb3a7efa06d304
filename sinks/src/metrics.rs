//! A sink's counters, read by the agent's metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters every sink keeps. Updated once per batch, never per event.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Events delivered and committed.
    pub events: AtomicU64,
    /// Bytes of event bodies delivered and committed.
    pub bytes: AtomicU64,
    /// Leases committed.
    pub batches: AtomicU64,
    /// Leases rolled back after a failed delivery.
    pub rollbacks: AtomicU64,
    /// Delivery errors.
    pub errors: AtomicU64,
    /// Lines larger than the output accepts (split, skipped or stopped at, by policy).
    pub oversize: AtomicU64,
}

impl SinkMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
