//! The transactional channel contract shared by every channel type.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::watch;

use crate::event::Event;
use crate::family::Family;

/// A boxed future, as returned by the [`Channel`] methods that may wait.
///
/// One is allocated per batch, never per event.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The channel was closed for puts: the agent is shutting down.
    #[error("channel {channel} is closed")]
    Closed {
        /// The channel's name.
        channel: String,
    },
    /// A commit or rollback broke the lease order (a bug in the caller).
    #[error("channel {channel}: {what}")]
    LeaseOrder {
        /// The channel's name.
        channel: String,
        /// What was out of order.
        what: &'static str,
    },
    /// The channel's storage failed.
    #[error("channel {channel}: {source}")]
    Io {
        /// The channel's name.
        channel: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Events handed to a sink by [`Channel::take`], owned by it until it commits or rolls back.
///
/// Leases are numbered by the position of their first event in the channel's sequence, so that
/// the channel can check the order of commits and rollbacks without bookkeeping per lease.
#[derive(Debug)]
pub struct Lease {
    /// The sequence number of the first event of the lease.
    pub first_seq: u64,
    /// The events, in channel order.
    pub events: Vec<Event>,
    /// The sum of the events' weights.
    pub bytes: usize,
}

impl Lease {
    /// The sequence number just past the lease's last event.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }
}

/// A promise that a batch given to [`Channel::put`] becomes safe.
///
/// It resolves once the channel's *safe* watermark reaches the end of the batch; what safe
/// means is the channel's choice (committed by a sink for the memory channel, durably written
/// for a file channel). Waiting on a receipt from one channel costs no allocation.
///
/// Receipts combine with [`Receipt::and`] into one that resolves when all of them have
/// resolved, for a batch put into several channels.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The first part; a receipt from [`Channel::put`] has only this one.
    head: Part,
    /// The parts combined into this receipt after the first, in the order they were added.
    more: Vec<Part>,
}

/// One channel's promise: its watermark, and where the batch ends in that channel.
#[derive(Debug, Clone)]
struct Part {
    end_seq: u64,
    safe: watch::Receiver<u64>,
}

impl Part {
    fn is_safe(&self) -> bool {
        *self.safe.borrow() >= self.end_seq
    }

    async fn wait(&mut self) -> bool {
        let end = self.end_seq;
        self.safe.wait_for(|v| *v >= end).await.is_ok()
    }
}

impl Receipt {
    /// A receipt that resolves when the watermark published on `safe` reaches `end_seq`.
    pub fn new(end_seq: u64, safe: watch::Receiver<u64>) -> Self {
        Receipt {
            head: Part { end_seq, safe },
            more: Vec::new(),
        }
    }

    /// A receipt that resolves once both `self` and `other` have resolved (each may itself be
    /// combined), for a batch put into several channels: `receipts.reduce(Receipt::and)`.
    /// Allocates once per combination (the list of parts), never per event.
    pub fn and(mut self, other: Receipt) -> Receipt {
        self.more.reserve(1 + other.more.len());
        self.more.push(other.head);
        self.more.extend(other.more);
        self
    }

    /// True once the batch is safe in every channel it was put into; never waits.
    pub fn is_safe(&self) -> bool {
        self.head.is_safe() && self.more.iter().all(Part::is_safe)
    }

    /// Waits until the batch is safe in every channel it was put into. Returns false as soon as
    /// one of those channels is dropped before the batch was safe in it, in which case the
    /// batch must be treated as not safe. A receipt from one channel waits without allocating;
    /// a combined one allocates on each call: a future for each part not safe yet, and their
    /// list.
    pub async fn wait(&mut self) -> bool {
        if self.more.is_empty() {
            return self.head.wait().await;
        }
        let mut waits: Vec<_> = std::iter::once(&mut self.head)
            .chain(self.more.iter_mut())
            .filter(|p| !p.is_safe())
            .map(|p| Box::pin(p.wait()))
            .collect();
        std::future::poll_fn(|cx| {
            let mut i = 0;
            while i < waits.len() {
                match waits[i].as_mut().poll(cx) {
                    Poll::Ready(false) => return Poll::Ready(false),
                    Poll::Ready(true) => drop(waits.swap_remove(i)),
                    Poll::Pending => i += 1,
                }
            }
            if waits.is_empty() {
                Poll::Ready(true)
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// A snapshot of a channel's fill level, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Events held: queued plus leased but not committed.
    pub events: usize,
    /// Bytes held, counted as in [`Event::weight`].
    pub bytes: usize,
    /// The capacity in events.
    pub capacity_events: usize,
    /// The capacity in bytes.
    pub capacity_bytes: usize,
    /// Events put since the channel started.
    pub put_total: u64,
    /// Events committed since the channel started.
    pub committed_total: u64,
    /// Damaged records found in durable storage (always 0 for the memory channel).
    pub corrupt_records: u64,
    /// Times the channel started waiting for its disk: full, below its free-space floor, or
    /// failing (always 0 for the memory channel).
    pub disk_stalls: u64,
}

impl ChannelStats {
    /// The metric families of a channel, in the order `/metrics` shows them.
    pub const FAMILIES: &[Family<ChannelStats>] = &[
        Family::gauge(
            "sluice_channel_events",
            "Events held, queued or leased.",
            |s| s.events as u64,
        ),
        Family::gauge(
            "sluice_channel_bytes",
            "Bytes held, queued or leased.",
            |s| s.bytes as u64,
        ),
        Family::gauge(
            "sluice_channel_capacity_events",
            "Capacity in events.",
            |s| s.capacity_events as u64,
        ),
        Family::gauge("sluice_channel_capacity_bytes", "Capacity in bytes.", |s| {
            s.capacity_bytes as u64
        }),
        Family::counter("sluice_channel_put_events_total", "Events put.", |s| {
            s.put_total
        }),
        Family::counter(
            "sluice_channel_committed_events_total",
            "Events committed by the sink.",
            |s| s.committed_total,
        ),
        Family::counter(
            "sluice_channel_corrupt_records_total",
            "Damaged records found in a file channel's log (each logged with its segment and position).",
            |s| s.corrupt_records,
        ),
        Family::counter(
            "sluice_channel_disk_stalls_total",
            "Times a file channel started waiting for its disk (full, low on space, or failing).",
            |s| s.disk_stalls,
        ),
    ];
}

/// A bounded FIFO queue of events with transactions, between sources and one sink.
///
/// The contract every implementation keeps:
/// - `put` appends a batch atomically, waiting while the channel is full (backpressure), and
///   returns a [`Receipt`] for it.
/// - `take` hands out the oldest events as a [`Lease`]; several leases may be outstanding.
/// - `commit` removes a lease's events for good; leases are committed oldest first.
/// - `rollback` returns a lease's events to the head of the queue; leases are rolled back
///   newest first, so the queue keeps its order.
pub trait Channel: Send + Sync + 'static {
    /// The channel's name in the configuration.
    fn name(&self) -> &str;

    /// Appends `batch` atomically, waiting while the channel is full. A batch larger than the
    /// whole capacity is accepted once the channel is empty. Fails once the channel is closed.
    ///
    /// A put that has room completes on its first poll, and one dropped while it waits puts
    /// nothing: a caller that must not wait (a source's optional channel) polls it once.
    fn put(&self, batch: Vec<Event>) -> BoxFuture<'_, Result<Receipt, ChannelError>>;

    /// Waits for at least one event and leases up to `max` of the oldest ones. Returns `None`
    /// once the channel is closed and holds no queued event.
    fn take(&self, max: usize) -> BoxFuture<'_, Result<Option<Lease>, ChannelError>>;

    /// Removes the lease's events from the channel. The lease must be the oldest outstanding.
    fn commit(&self, lease: Lease) -> BoxFuture<'_, Result<(), ChannelError>>;

    /// Returns the lease's events to the head of the queue, to be taken again first. The lease
    /// must be the newest outstanding one.
    fn rollback(&self, lease: Lease) -> Result<(), ChannelError>;

    /// Refuses further puts; takes drain what is queued and then return `None`.
    fn close(&self);

    /// The channel's current fill level and counters.
    fn stats(&self) -> ChannelStats;
}
