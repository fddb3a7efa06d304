//! What the sinks' unit tests share: a memory channel that records what a sink did with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sluice_channels::{
    BoxFuture, Channel, ChannelError, ChannelStats, Event, Lease, MemoryChannel,
    MemoryChannelConfig, Receipt,
};

/// A memory channel that records how many leases were outstanding at most and the order of
/// commits and rollbacks, to check what a sink does with several batches in flight.
pub struct Recording {
    inner: MemoryChannel,
    /// Leases taken and neither committed nor rolled back.
    pub outstanding: AtomicUsize,
    /// The most leases outstanding at once.
    pub max_outstanding: AtomicUsize,
    /// The leases committed, as (first, end) sequence numbers, in order.
    pub commits: Mutex<Vec<(u64, u64)>>,
    /// The leases rolled back, as (first, end) sequence numbers, in order.
    pub rollbacks: Mutex<Vec<(u64, u64)>>,
}

impl Recording {
    /// An empty channel `c1` with room for a million events.
    pub fn new() -> Arc<Self> {
        Arc::new(Recording {
            inner: MemoryChannel::new(
                "c1",
                MemoryChannelConfig {
                    capacity: 1_000_000,
                    capacity_bytes: 1 << 30,
                },
            ),
            outstanding: AtomicUsize::new(0),
            max_outstanding: AtomicUsize::new(0),
            commits: Mutex::new(Vec::new()),
            rollbacks: Mutex::new(Vec::new()),
        })
    }

    /// Notes in `list` that `lease` is no longer outstanding.
    fn record(&self, list: &Mutex<Vec<(u64, u64)>>, lease: &Lease) {
        list.lock()
            .unwrap()
            .push((lease.first_seq, lease.end_seq()));
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Channel for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn put(&self, batch: Vec<Event>) -> BoxFuture<'_, Result<Receipt, ChannelError>> {
        self.inner.put(batch)
    }
    fn take(&self, max: usize) -> BoxFuture<'_, Result<Option<Lease>, ChannelError>> {
        Box::pin(async move {
            let lease = self.inner.take(max).await?;
            if lease.is_some() {
                let n = self.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_outstanding.fetch_max(n, Ordering::SeqCst);
            }
            Ok(lease)
        })
    }
    fn commit(&self, lease: Lease) -> BoxFuture<'_, Result<(), ChannelError>> {
        self.record(&self.commits, &lease);
        self.inner.commit(lease)
    }
    fn rollback(&self, lease: Lease) -> Result<(), ChannelError> {
        self.record(&self.rollbacks, &lease);
        self.inner.rollback(lease)
    }
    fn close(&self) {
        self.inner.close()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
}
