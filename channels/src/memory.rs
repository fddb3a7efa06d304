//! The bounded in-memory channel, with end-to-end acknowledgement.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Deserializer};
use tokio::sync::{Notify, watch};

use crate::channel::{BoxFuture, Channel, ChannelError, ChannelStats, Lease, Receipt};
use crate::chunks::{self, EventChunk};
use crate::config::Problem;
use crate::event::Event;
use crate::units::ByteSize;

/// The memory channel's limits, as written under `channels.NAME` with `type: memory`
/// (`capacity: 20000`, `capacity_bytes: 4MiB`); a key left out keeps its default. The default
/// holds what a Kafka sink keeps in flight by default (`batch_size` 2000 × `batches_in_flight` 8)
/// and two source batches more, so that the sink's window is never part empty for want of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryChannelConfig {
    /// The most events held at once, queued or leased.
    pub capacity: usize,
    /// The most body bytes held at once, queued or leased; written as a [`ByteSize`].
    #[serde(deserialize_with = "byte_size")]
    pub capacity_bytes: usize,
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ByteSize::deserialize(d).map(ByteSize::as_usize)
}

impl Default for MemoryChannelConfig {
    fn default() -> Self {
        MemoryChannelConfig {
            capacity: 20_000,
            capacity_bytes: 4 << 20,
        }
    }
}

impl MemoryChannelConfig {
    /// Checks what serde cannot: both limits are at least one.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.capacity == 0 {
            problems.push(Problem::new("capacity", "must be at least 1"));
        }
        if self.capacity_bytes == 0 {
            problems.push(Problem::new("capacity_bytes", "must be at least 1 byte"));
        }
        problems
    }
}

/// A put batch kept whole in the queue, so that events are not moved one by one.
struct Chunk {
    first_seq: u64,
    events: Vec<Event>,
    bytes: usize,
}

impl EventChunk for Chunk {
    fn first_seq(&self) -> u64 {
        self.first_seq
    }
    fn events_mut(&mut self) -> &mut Vec<Event> {
        &mut self.events
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn split_off(&mut self, n: usize) -> Self {
        let events = self.events.split_off(n);
        let bytes = chunks::weight(&events);
        self.bytes -= bytes;
        Chunk {
            first_seq: self.first_seq + n as u64,
            events,
            bytes,
        }
    }
}

struct State {
    queue: VecDeque<Chunk>,
    /// The sequence number the next put event gets.
    put_seq: u64,
    /// The sequence number of the first queued event (everything before it is leased or
    /// committed).
    take_seq: u64,
    /// Everything before this sequence number is committed.
    committed_seq: u64,
    /// Events and bytes held, queued or leased.
    events: usize,
    bytes: usize,
    closed: bool,
}

/// A bounded FIFO of events in memory.
///
/// A put waits while the channel holds `capacity` events or `capacity_bytes` bytes. Its
/// receipt resolves only when a sink has *committed* the batch (end-to-end acknowledgement),
/// so a source that checkpoints over resolved receipts loses nothing in a crash even though
/// this channel's content does not survive one.
pub struct MemoryChannel {
    name: String,
    config: MemoryChannelConfig,
    state: Mutex<State>,
    /// Publishes `committed_seq` to receipts.
    committed: watch::Sender<u64>,
    /// Woken when events are queued or the channel closes.
    data: Notify,
    /// Woken when events leave the channel.
    space: Notify,
}

impl MemoryChannel {
    /// An empty channel with the given name and limits (a zero limit counts as one).
    pub fn new(name: impl Into<String>, config: MemoryChannelConfig) -> Self {
        MemoryChannel {
            name: name.into(),
            config: MemoryChannelConfig {
                capacity: config.capacity.max(1),
                capacity_bytes: config.capacity_bytes.max(1),
            },
            state: Mutex::new(State {
                queue: VecDeque::new(),
                put_seq: 0,
                take_seq: 0,
                committed_seq: 0,
                events: 0,
                bytes: 0,
                closed: false,
            }),
            committed: watch::channel(0).0,
            data: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every update is a few
        // assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self) -> ChannelError {
        ChannelError::Closed {
            channel: self.name.clone(),
        }
    }

    fn order_error(&self, what: &'static str) -> ChannelError {
        ChannelError::LeaseOrder {
            channel: self.name.clone(),
            what,
        }
    }

    async fn put_batch(&self, batch: Vec<Event>) -> Result<Receipt, ChannelError> {
        let count = batch.len();
        let bytes = chunks::weight(&batch);
        let mut batch = Some(batch);
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(self.closed_error());
                }
                let fits = st.events + count <= self.config.capacity
                    && st.bytes + bytes <= self.config.capacity_bytes;
                if fits || st.events == 0 {
                    let first_seq = st.put_seq;
                    st.put_seq += count as u64;
                    st.events += count;
                    st.bytes += bytes;
                    let end = st.put_seq;
                    if count > 0 {
                        st.queue.push_back(Chunk {
                            first_seq,
                            events: batch.take().unwrap_or_default(),
                            bytes,
                        });
                    }
                    drop(st);
                    self.data.notify_one();
                    return Ok(Receipt::new(end, self.committed.subscribe()));
                }
            }
            space.await;
        }
    }

    async fn take_batch(&self, max: usize) -> Result<Option<Lease>, ChannelError> {
        let max = max.max(1);
        loop {
            let data = self.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(lease) = Self::lease_from(&mut st, max) {
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        // Pass the wake-up on: another taker may be waiting.
                        self.data.notify_one();
                    }
                    return Ok(Some(lease));
                }
                if st.closed {
                    return Ok(None);
                }
            }
            data.await;
        }
    }

    /// Moves up to `max` of the oldest queued events into a lease, whole chunks when they fit.
    fn lease_from(st: &mut State, max: usize) -> Option<Lease> {
        let lease = chunks::lease(&mut st.queue, max, |_| {})?;
        st.take_seq = lease.end_seq();
        Some(lease)
    }

    fn commit_lease(&self, lease: Lease) -> Result<(), ChannelError> {
        let committed = {
            let mut st = self.lock();
            if lease.first_seq != st.committed_seq || lease.end_seq() > st.take_seq {
                return Err(
                    self.order_error("commit of a lease that is not the oldest outstanding")
                );
            }
            st.committed_seq = lease.end_seq();
            st.events -= lease.events.len();
            st.bytes -= lease.bytes;
            st.committed_seq
        };
        drop(lease);
        self.committed.send_replace(committed);
        self.space.notify_waiters();
        Ok(())
    }

    fn rollback_lease(&self, lease: Lease) -> Result<(), ChannelError> {
        let mut st = self.lock();
        if lease.end_seq() != st.take_seq || lease.first_seq < st.committed_seq {
            return Err(self.order_error("rollback of a lease that is not the newest outstanding"));
        }
        st.take_seq = lease.first_seq;
        if !lease.events.is_empty() {
            st.queue.push_front(Chunk {
                first_seq: lease.first_seq,
                events: lease.events,
                bytes: lease.bytes,
            });
        }
        drop(st);
        self.data.notify_one();
        Ok(())
    }
}

impl Channel for MemoryChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, batch: Vec<Event>) -> BoxFuture<'_, Result<Receipt, ChannelError>> {
        Box::pin(self.put_batch(batch))
    }

    fn take(&self, max: usize) -> BoxFuture<'_, Result<Option<Lease>, ChannelError>> {
        Box::pin(self.take_batch(max))
    }

    fn commit(&self, lease: Lease) -> BoxFuture<'_, Result<(), ChannelError>> {
        let result = self.commit_lease(lease);
        Box::pin(std::future::ready(result))
    }

    fn rollback(&self, lease: Lease) -> Result<(), ChannelError> {
        self.rollback_lease(lease)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.data.notify_waiters();
        self.space.notify_waiters();
    }

    fn stats(&self) -> ChannelStats {
        let st = self.lock();
        ChannelStats {
            events: st.events,
            bytes: st.bytes,
            capacity_events: self.config.capacity,
            capacity_bytes: self.config.capacity_bytes,
            put_total: st.put_seq,
            committed_total: st.committed_seq,
            ..ChannelStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::event::Origin;

    fn events(range: std::ops::Range<u64>) -> Vec<Event> {
        let origin = Arc::new(Origin::default());
        range
            .map(|i| Event {
                body: Bytes::from(i.to_string()),
                origin: origin.clone(),
                offset: i,
                read_at_ms: 0,
                headers: Default::default(),
            })
            .collect()
    }

    fn offsets(lease: &Lease) -> Vec<u64> {
        lease.events.iter().map(|e| e.offset).collect()
    }

    fn channel(capacity: usize, capacity_bytes: usize) -> MemoryChannel {
        MemoryChannel::new(
            "c1",
            MemoryChannelConfig {
                capacity,
                capacity_bytes,
            },
        )
    }

    #[tokio::test]
    async fn take_returns_events_in_put_order_across_batches() {
        let ch = channel(100, 1 << 20);
        ch.put(events(0..3)).await.unwrap();
        ch.put(events(3..10)).await.unwrap();
        let a = ch.take(5).await.unwrap().unwrap();
        assert_eq!(offsets(&a), vec![0, 1, 2, 3, 4]);
        let b = ch.take(100).await.unwrap().unwrap();
        assert_eq!(offsets(&b), vec![5, 6, 7, 8, 9]);
        assert_eq!((a.first_seq, b.first_seq), (0, 5));
    }

    #[tokio::test]
    async fn receipt_resolves_only_when_the_batch_is_committed() {
        let ch = channel(100, 1 << 20);
        let mut r1 = ch.put(events(0..3)).await.unwrap();
        let r2 = ch.put(events(3..6)).await.unwrap();
        assert!(!r1.is_safe());
        let lease = ch.take(4).await.unwrap().unwrap();
        assert!(!r1.is_safe(), "taken is not committed");
        ch.commit(lease).await.unwrap();
        assert!(r1.is_safe());
        assert!(r1.wait().await);
        assert!(!r2.is_safe(), "only part of the second batch is committed");
        let rest = ch.take(10).await.unwrap().unwrap();
        ch.commit(rest).await.unwrap();
        assert!(r2.is_safe());
    }

    async fn commit_everything(ch: &MemoryChannel) {
        let lease = ch.take(usize::MAX).await.unwrap().unwrap();
        ch.commit(lease).await.unwrap();
    }

    /// What `wait` gives when polled once: `None` while it would still wait.
    async fn wait_now(receipt: &mut Receipt) -> Option<bool> {
        let mut wait = std::pin::pin!(receipt.wait());
        match std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await {
            Poll::Ready(safe) => Some(safe),
            Poll::Pending => None,
        }
    }

    /// Two channels, and the receipt of a batch put into both.
    async fn fanned_out() -> (MemoryChannel, MemoryChannel, Receipt) {
        let (a, b) = (channel(100, 1 << 20), channel(100, 1 << 20));
        let ra = a.put(events(0..3)).await.unwrap();
        let rb = b.put(events(0..5)).await.unwrap();
        (a, b, ra.and(rb))
    }

    #[tokio::test]
    async fn a_combined_receipt_resolves_only_when_every_part_has() {
        let (a, b, ab) = fanned_out().await;
        let c = channel(100, 1 << 20);
        let mut all = ab.and(c.put(events(0..2)).await.unwrap());
        assert!(!all.is_safe());
        assert_eq!(wait_now(&mut all).await, None);
        commit_everything(&a).await;
        commit_everything(&c).await;
        assert!(!all.is_safe(), "b has not committed");
        assert_eq!(wait_now(&mut all).await, None);
        commit_everything(&b).await;
        assert!(all.is_safe());
        assert_eq!(wait_now(&mut all).await, Some(true));
    }

    #[tokio::test]
    async fn waiting_on_a_combined_receipt_ends_false_once_a_channel_is_dropped() {
        let (a, b, mut all) = fanned_out().await;
        let waiter = tokio::spawn(async move { all.wait().await });
        // a's part never resolves: the drop of b alone ends the wait.
        drop(b);
        let safe = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the wait ended")
            .unwrap();
        assert!(!safe);
        drop(a);
    }

    #[tokio::test]
    async fn a_channel_dropped_after_its_part_resolved_does_not_fail_the_receipt() {
        let (a, b, mut all) = fanned_out().await;
        commit_everything(&a).await;
        drop(a);
        assert_eq!(wait_now(&mut all).await, None);
        commit_everything(&b).await;
        assert!(all.is_safe());
        assert!(all.wait().await);
    }

    #[tokio::test]
    async fn rollback_returns_events_to_the_head_in_order() {
        let ch = channel(100, 1 << 20);
        ch.put(events(0..10)).await.unwrap();
        let a = ch.take(3).await.unwrap().unwrap();
        let b = ch.take(3).await.unwrap().unwrap();
        ch.rollback(b).unwrap();
        ch.rollback(a).unwrap();
        let all = ch.take(100).await.unwrap().unwrap();
        assert_eq!(offsets(&all), (0..10).collect::<Vec<_>>());
        assert_eq!(all.first_seq, 0);
    }

    #[tokio::test]
    async fn out_of_order_commit_and_rollback_are_refused() {
        let ch = channel(100, 1 << 20);
        ch.put(events(0..10)).await.unwrap();
        let a = ch.take(3).await.unwrap().unwrap();
        let b = ch.take(3).await.unwrap().unwrap();
        let b_copy = Lease {
            first_seq: b.first_seq,
            events: b.events.clone(),
            bytes: b.bytes,
        };
        assert!(matches!(
            ch.commit(b).await,
            Err(ChannelError::LeaseOrder { .. })
        ));
        assert!(matches!(
            ch.rollback(a),
            Err(ChannelError::LeaseOrder { .. })
        ));
        ch.rollback(b_copy).unwrap();
    }

    #[tokio::test]
    async fn a_full_channel_makes_put_wait_until_a_commit_frees_space() {
        let ch = Arc::new(channel(4, 1 << 20));
        ch.put(events(0..4)).await.unwrap();
        let blocked = tokio::spawn({
            let ch = ch.clone();
            async move { ch.put(events(4..6)).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        let lease = ch.take(2).await.unwrap().unwrap();
        assert!(!blocked.is_finished(), "a lease still holds its space");
        ch.commit(lease).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("put resumed after commit")
            .unwrap()
            .unwrap();
        assert_eq!(ch.stats().events, 4);
    }

    #[tokio::test]
    async fn byte_capacity_also_bounds_puts() {
        let ch = Arc::new(channel(1000, 4));
        ch.put(events(10..12)).await.unwrap(); // "10" + "11" = 4 bytes
        let blocked = tokio::spawn({
            let ch = ch.clone();
            async move { ch.put(events(12..13)).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        let lease = ch.take(10).await.unwrap().unwrap();
        ch.commit(lease).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_oversized_batch_enters_an_empty_channel() {
        let ch = channel(2, 1 << 20);
        ch.put(events(0..5)).await.unwrap();
        assert_eq!(ch.stats().events, 5);
    }

    #[tokio::test]
    async fn close_lets_takers_drain_then_ends_them_and_refuses_puts() {
        let ch = channel(100, 1 << 20);
        ch.put(events(0..2)).await.unwrap();
        ch.close();
        assert!(matches!(
            ch.put(events(2..3)).await,
            Err(ChannelError::Closed { .. })
        ));
        let lease = ch.take(10).await.unwrap().unwrap();
        assert_eq!(lease.events.len(), 2);
        assert!(ch.take(10).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_waiting_taker_wakes_on_put_and_on_close() {
        let ch = Arc::new(channel(100, 1 << 20));
        let taker = tokio::spawn({
            let ch = ch.clone();
            async move { ch.take(10).await.unwrap().map(|l| l.events.len()) }
        });
        ch.put(events(0..3)).await.unwrap();
        assert_eq!(taker.await.unwrap(), Some(3));
        let taker = tokio::spawn({
            let ch = ch.clone();
            async move { ch.take(10).await.unwrap().map(|l| l.events.len()) }
        });
        tokio::task::yield_now().await;
        ch.close();
        assert_eq!(taker.await.unwrap(), None);
    }

    mod model {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8),
            Take(u8),
            Commit,
            Rollback,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (1u8..20).prop_map(Op::Put),
                (1u8..20).prop_map(Op::Take),
                Just(Op::Commit),
                Just(Op::Rollback),
            ]
        }

        proptest! {
            /// Against a model queue: whatever the interleaving of puts, takes, in-order
            /// commits and newest-first rollbacks, every event is committed exactly once and
            /// in put order.
            #[test]
            fn transactions_match_a_model_queue(ops in proptest::collection::vec(op(), 1..200)) {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(async {
                    let ch = channel(usize::MAX, usize::MAX);
                    let mut next = 0u64;
                    let mut leases: VecDeque<Lease> = VecDeque::new();
                    let mut committed = Vec::new();
                    for op in ops {
                        match op {
                            Op::Put(n) => {
                                ch.put(events(next..next + n as u64)).await.unwrap();
                                next += n as u64;
                            }
                            Op::Take(n) => {
                                if ch.stats().events > leases.iter().map(|l| l.events.len()).sum() {
                                    leases.push_back(ch.take(n as usize).await.unwrap().unwrap());
                                }
                            }
                            Op::Commit => {
                                if let Some(l) = leases.pop_front() {
                                    committed.extend(offsets(&l));
                                    ch.commit(l).await.unwrap();
                                }
                            }
                            Op::Rollback => {
                                if let Some(l) = leases.pop_back() {
                                    ch.rollback(l).unwrap();
                                }
                            }
                        }
                    }
                    while let Some(l) = leases.pop_back() {
                        ch.rollback(l).unwrap();
                    }
                    ch.close();
                    while let Some(l) = ch.take(7).await.unwrap() {
                        committed.extend(offsets(&l));
                        ch.commit(l).await.unwrap();
                    }
                    prop_assert_eq!(committed, (0..next).collect::<Vec<_>>());
                    prop_assert_eq!(ch.stats().events, 0);
                    prop_assert_eq!(ch.stats().bytes, 0);
                    Ok(())
                })?;
            }
        }
    }

    #[test]
    fn options_default_per_key_and_take_byte_sizes() {
        let c: MemoryChannelConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, MemoryChannelConfig::default());
        let c: MemoryChannelConfig =
            serde_yaml::from_str("{capacity: 500, capacity_bytes: 1MiB}").unwrap();
        assert_eq!((c.capacity, c.capacity_bytes), (500, 1 << 20));
        assert!(c.validate().is_empty());
        let c: MemoryChannelConfig = serde_yaml::from_str("capacity_bytes: 2KiB").unwrap();
        assert_eq!((c.capacity, c.capacity_bytes), (20_000, 2048));
        assert!(serde_yaml::from_str::<MemoryChannelConfig>("size: 3").is_err());
        let c: MemoryChannelConfig =
            serde_yaml::from_str("{capacity: 0, capacity_bytes: 0}").unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["capacity", "capacity_bytes"]);
    }
}
