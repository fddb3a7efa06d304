//! What the sinks' unit tests share: a memory channel that records what a sink did with it, and
//! a fake sink that reports what a script says.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_channels::{
    BoxFuture, Channel, ChannelError, ChannelStats, Event, Lease, MemoryChannel,
    MemoryChannelConfig, Origin, Receipt,
};
use tokio::sync::Notify;

use crate::SinkError;
use crate::sink::{Capabilities, Close, Failure, Outcome, Returned, Sink, Stopped};

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

    /// A channel `c1` holding `events` events, numbered from 0 (body and offset).
    pub async fn with_events(events: u64) -> Arc<Self> {
        let channel = Self::new();
        channel.add_events(events).await;
        channel
    }

    /// Puts `events` more events, numbered from 0 (body and offset).
    pub async fn add_events(&self, events: u64) {
        let origin = Arc::new(Origin::default());
        let batch = (0..events)
            .map(|i| Event {
                body: i.to_string().into(),
                origin: origin.clone(),
                offset: i,
                read_at_ms: 0,
                headers: Default::default(),
            })
            .collect();
        self.put(batch).await.expect("the channel takes the events");
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

/// What the fake sink reports, in this order; each step waits until its lease (named by
/// its first sequence number) is handed over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Report nothing; only wait for the lease.
    Handed(u64),
    Deliver(u64),
    /// Fail the lease; fatal or not.
    Fail(u64, bool),
}

/// What the test and the fake share.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) steps: Mutex<VecDeque<Step>>,
    /// Set when steps are added.
    pub(crate) more: Notify,
    /// Set when the fake has no step left.
    pub(crate) idle: Notify,
    /// Set when a failure was said.
    pub(crate) said: Notify,
    /// Leases a close gives back as delivered, and leases it keeps.
    pub(crate) quiet: Mutex<Vec<u64>>,
    pub(crate) kept: Mutex<Vec<u64>>,
    pub(crate) log: Mutex<Log>,
}

/// What the driver did with the fake.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) opens: usize,
    /// When each open happened.
    pub(crate) opened_at: Vec<tokio::time::Instant>,
    pub(crate) handed: Vec<u64>,
    pub(crate) closes: Vec<Close>,
    /// `batches` and `retry_in` of each failure said.
    pub(crate) failed: Vec<(usize, Option<Duration>)>,
    pub(crate) stopped: Option<Stopped>,
}

pub(crate) struct Fake {
    in_flight: usize,
    held: Vec<Lease>,
    shared: Arc<Shared>,
}

impl Fake {
    /// A fake that may hold `in_flight` leases of 10 events and follows `shared`'s script.
    pub(crate) fn new(in_flight: usize, shared: Arc<Shared>) -> Self {
        Fake {
            in_flight,
            held: Vec::new(),
            shared,
        }
    }

    fn failure(fatal: bool) -> Failure {
        Failure {
            why: "the fake failed".into(),
            line: None,
            fatal: fatal.then(|| SinkError::Delivery {
                sink: "k1".into(),
                message: "the fake failed".into(),
            }),
        }
    }

    /// The held lease that starts at `seq`, taken out.
    fn release(&mut self, seq: u64) -> Option<Lease> {
        let i = self.held.iter().position(|l| l.first_seq == seq)?;
        Some(self.held.remove(i))
    }

    /// The next step whose lease is held, taken out of the script.
    fn next(&mut self) -> Option<Outcome> {
        let shared = self.shared.clone();
        let mut steps = shared.steps.lock().unwrap();
        loop {
            let Some(&step) = steps.front() else {
                shared.idle.notify_one();
                return None;
            };
            let seq = match step {
                Step::Handed(s) | Step::Deliver(s) | Step::Fail(s, _) => s,
            };
            if !self.held.iter().any(|l| l.first_seq == seq) {
                return None;
            }
            steps.pop_front();
            match step {
                Step::Handed(_) => {}
                Step::Deliver(_) => return self.release(seq).map(Outcome::Delivered),
                Step::Fail(_, fatal) => {
                    let lease = self.release(seq)?;
                    let failure = Self::failure(fatal);
                    return Some(Outcome::Failed { lease, failure });
                }
            }
        }
    }
}

impl Sink for Fake {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batch_size: 10,
            in_flight: self.in_flight,
            watch_every: None,
        }
    }

    fn open(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        let mut log = self.shared.log.lock().unwrap();
        log.opens += 1;
        log.opened_at.push(tokio::time::Instant::now());
        drop(log);
        Box::pin(std::future::ready(Ok(())))
    }

    fn deliver(&mut self, lease: Lease) -> Result<(), SinkError> {
        self.shared.log.lock().unwrap().handed.push(lease.first_seq);
        self.held.push(lease);
        Ok(())
    }

    fn outcome(&mut self) -> BoxFuture<'_, Result<Outcome, SinkError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            loop {
                let more = shared.more.notified();
                if let Some(outcome) = self.next() {
                    return Ok(outcome);
                }
                // A lease handed over makes the driver ask again.
                more.await;
            }
        })
    }

    fn close(&mut self, how: Close) -> BoxFuture<'_, Returned> {
        self.shared.log.lock().unwrap().closes.push(how);
        let quiet = self.shared.quiet.lock().unwrap().clone();
        let kept = self.shared.kept.lock().unwrap().clone();
        let mut returned = Returned::default();
        for lease in self.held.drain(..) {
            if kept.contains(&lease.first_seq) {
                continue;
            }
            if quiet.contains(&lease.first_seq) {
                returned.delivered.push(lease);
            } else {
                returned.undelivered.push(lease);
            }
        }
        Box::pin(std::future::ready(returned))
    }

    fn failed(&self, _: &Failure, batches: usize, retry_in: Option<Duration>) {
        self.shared
            .log
            .lock()
            .unwrap()
            .failed
            .push((batches, retry_in));
        self.shared.said.notify_one();
    }

    fn stopped(&self, how: Stopped) {
        self.shared.log.lock().unwrap().stopped = Some(how);
    }
}
