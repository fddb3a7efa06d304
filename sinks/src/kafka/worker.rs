//! The producer's own thread: it produces the leases the sink hands it, serves librdkafka's
//! delivery reports, and hands each lease back, oldest first, once all its records are
//! reported. No tokio worker ever waits on librdkafka.
//!
//! Producing and serving reports on one thread is what makes the producer cheap: librdkafka
//! allocates a record (and its headers) on the producing thread and frees it after its report
//! is served, so both stay on one thread's malloc cache instead of crossing threads.
//!
//! Values are produced in place (not copied), so the events' bodies must outlive their
//! records inside librdkafka. The thread hands a lease back only once every record of it was
//! reported, or after the producer is dropped; a lease handed back before that (a failure
//! that gives it up while its records are still queued) leaves its bodies pinned here until
//! the producer is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use sluice_channels::Lease;
use tokio::sync::mpsc as tokio_mpsc;

use super::producer::{Failure, FailureKind};
use super::records::{Cursor, RecordWriter, Step};
use super::transaction::{Committed, Txn};
use crate::SinkMetrics;

/// How long one wait for delivery reports lasts while batches are in flight; a new batch
/// waits at most this long to be produced.
const POLL_WAIT: Duration = Duration::from_millis(1);
/// How long the thread sleeps between checks for client errors when nothing is in flight.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long one attempt at committing a transaction may wait.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Since when records have been in flight with no broker connection up and no attempt to
/// make one.
///
/// librdkafka can be left for good with no connection and no attempt to make one after the
/// broker restarts: the broker's last metadata answer, sent while it shut down, leaves itself
/// out and the broker is decommissioned; a decommissioned broker stays listed (in the
/// statistics too) until its thread ends, and librdkafka never picks a terminating broker to
/// connect to, so no error is ever reported (seen with a one-broker cluster stopped and
/// restarted on the same port). Nothing but a new producer, bootstrapping afresh, gets
/// delivery going again. In an ordinary outage librdkafka keeps trying, and the sink waits.
#[derive(Default)]
struct Unreachable {
    /// Milliseconds since the Unix epoch (0: connected, or nothing in flight).
    since_ms: u64,
}

impl Unreachable {
    /// Notes at `now_ms` whether records are `in_flight` and a broker is `connected`, and
    /// when librdkafka last tried to connect (`tried_ms`); returns how long records have been
    /// in flight with neither, once that is past `limit`.
    fn note(
        &mut self,
        now_ms: u64,
        in_flight: bool,
        connected: bool,
        tried_ms: u64,
        limit: Duration,
    ) -> Option<Duration> {
        if !in_flight || connected {
            self.since_ms = 0;
            return None;
        }
        if self.since_ms == 0 {
            self.since_ms = now_ms;
        }
        self.since_ms = self.since_ms.max(tried_ms);
        let for_ms = now_ms.saturating_sub(self.since_ms);
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        (for_ms > limit).then(|| Duration::from_millis(for_ms))
    }
}

enum Command {
    Produce(Lease),
    Close { purge: bool, wait: Duration },
}

/// What the producer thread hands back.
pub enum Report {
    /// Every record of the lease was acknowledged: commit it.
    Delivered(Lease),
    /// A record of the lease failed; the thread reports nothing more until it is closed.
    Failed {
        /// The lease.
        lease: Lease,
        /// Its earliest failed record.
        failure: Failure,
    },
    /// The producer is gone; these leases (oldest first) were not all delivered.
    Closed(Vec<Lease>),
    /// The producer can never deliver (refused by the broker, fenced) and holds no lease:
    /// why. The thread reports nothing more until it is closed.
    Fatal(String),
}

/// Signs of life of the producer thread and of librdkafka, in milliseconds since the Unix
/// epoch (0: not yet).
#[derive(Default)]
struct Pulse {
    /// When the thread last went round its loop.
    looped: AtomicU64,
    /// When librdkafka's statistics were last served.
    statistics: AtomicU64,
}

impl Pulse {
    /// What has been silent at `now_ms` for longer than its limit (`thread`, `statistics`):
    /// the thread first (a stuck thread serves no statistics either). Silence before the
    /// first sign counts as none.
    fn stall(&self, now_ms: u64, thread: Duration, statistics: Duration) -> Option<Stall> {
        let silent = |at: &AtomicU64, limit: Duration| {
            let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            let at = at.load(Ordering::Relaxed);
            let for_ms = now_ms.saturating_sub(at);
            (at > 0 && for_ms > limit).then(|| Duration::from_millis(for_ms))
        };
        silent(&self.looped, thread)
            .map(Stall::Thread)
            .or_else(|| silent(&self.statistics, statistics).map(Stall::Librdkafka))
    }
}

/// What has stopped answering, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The producer thread has not come back from librdkafka (a call into it blocks).
    Thread(Duration),
    /// The thread runs, but librdkafka's main thread emitted no statistics (due every
    /// `statistics.interval.ms`): librdkafka itself is stuck.
    Librdkafka(Duration),
}

/// A handle on the producer thread.
pub struct Worker {
    commands: mpsc::Sender<Command>,
    reports: tokio_mpsc::UnboundedReceiver<Report>,
    pulse: Arc<Pulse>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread `kafka-NAME` that produces through `writer`, logging in the current
    /// span (the sink's). When records have been in flight for longer than `unreachable` (if
    /// given) with no broker connection up (as `metrics` says) and no attempt by librdkafka
    /// to make one, it reports the oldest lease failed ([`FailureKind::Unreachable`]), so that
    /// the sink is rebuilt. With `txn` it delivers exactly once: leases are reported
    /// delivered only once the transaction that carried them committed.
    pub fn spawn(
        writer: RecordWriter,
        metrics: Arc<SinkMetrics>,
        name: &str,
        unreachable: Option<Duration>,
        txn: Option<Txn>,
    ) -> std::io::Result<Worker> {
        let (commands, command_rx) = mpsc::channel();
        let (report_tx, reports) = tokio_mpsc::unbounded_channel();
        let pulse = Arc::new(Pulse::default());
        let beat = pulse.clone();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{name}"))
            .spawn(move || {
                let _in = span.enter();
                Thread {
                    writer,
                    metrics,
                    commands: command_rx,
                    reports: report_tx,
                    waiting: VecDeque::new(),
                    current: None,
                    inflight: VecDeque::new(),
                    next_slot: 0,
                    failed: false,
                    pulse: beat,
                    unreachable: Unreachable::default(),
                    unreachable_limit: unreachable,
                    txn,
                    closing: None,
                    pinned: Vec::new(),
                }
                .run()
            })?;
        Ok(Worker {
            commands,
            reports,
            pulse,
            thread: Some(thread),
        })
    }

    /// What has stopped answering at `now_ms` for longer than its limit (`thread`,
    /// `statistics`), if anything.
    pub fn stall(&self, now_ms: u64, thread: Duration, statistics: Duration) -> Option<Stall> {
        self.pulse.stall(now_ms, thread, statistics)
    }

    /// Hands a lease to the producer. Never waits.
    pub fn produce(&self, lease: Lease) {
        // A send fails only if the thread is gone, which the next report tells.
        let _ = self.commands.send(Command::Produce(lease));
    }

    /// The next report; `None` once the thread is gone.
    pub async fn report(&mut self) -> Option<Report> {
        self.reports.recv().await
    }

    /// Closes the producer, first failing what it holds if `purge`, waiting up to `wait` for
    /// reports, and returns the reports that followed, the last one `Closed`.
    pub async fn close(mut self, purge: bool, wait: Duration) -> Vec<Report> {
        let _ = self.commands.send(Command::Close { purge, wait });
        let mut reports = Vec::new();
        while let Some(r) = self.reports.recv().await {
            let closed = matches!(r, Report::Closed(_));
            reports.push(r);
            if closed {
                break;
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        reports
    }
}

struct Thread {
    /// First, so that the producer is dropped before the leases whatever the way out (a
    /// panic included): librdkafka may refer to their bodies until then.
    writer: RecordWriter,
    metrics: Arc<SinkMetrics>,
    commands: mpsc::Receiver<Command>,
    reports: tokio_mpsc::UnboundedSender<Report>,
    /// Leases received and not produced yet.
    waiting: VecDeque<Lease>,
    /// The lease being produced (librdkafka's queue was full), its slot and progress.
    current: Option<(Lease, usize, Cursor)>,
    /// Produced leases and their slots, oldest first.
    inflight: VecDeque<(Lease, usize)>,
    next_slot: usize,
    /// A failure was reported: produce and report nothing more.
    failed: bool,
    pulse: Arc<Pulse>,
    /// Since when records have been in flight with no connection up nor attempt to make one.
    unreachable: Unreachable,
    /// How long that may last before the producer is given up (`None`: for ever).
    unreachable_limit: Option<Duration>,
    /// The transactions, when delivering exactly once.
    txn: Option<Txn>,
    /// A close asked for (purge, wait), or the sink gone.
    closing: Option<(bool, Duration)>,
    /// The bodies of leases handed back while librdkafka may still hold records that refer
    /// to them: kept until the producer is dropped.
    pinned: Vec<Bytes>,
}

impl Thread {
    fn run(mut self) {
        loop {
            // Take every command that waits; with nothing in flight, wait for one.
            let busy = self.current.is_some() || !self.inflight.is_empty();
            let wait = match &self.txn {
                Some(t) if !t.ready() && t.broken().is_none() => t.retry_in().min(IDLE_WAIT),
                // Acknowledged leases wait for the commit: until it is due.
                Some(t) if t.ready() && !busy && !t.done.is_empty() => t.due_in().min(IDLE_WAIT),
                _ if busy => Duration::ZERO,
                _ => IDLE_WAIT,
            };
            self.read_commands(wait);
            if let Some((purge, wait)) = self.closing.take() {
                return self.close(purge, wait);
            }
            if let Some(txn) = self.txn.as_mut()
                && !txn.ready()
            {
                txn.prepare(&mut self.writer, &self.metrics);
                if let Some(why) = txn.broken().map(str::to_owned) {
                    self.fail_waiting(FailureKind::Transaction { why, fatal: true });
                }
                if !self.txn.as_ref().is_some_and(Txn::ready) {
                    // Not stuck: waiting for the broker (which the log says).
                    self.writer.producer().poll(Duration::ZERO);
                    self.beat();
                    continue;
                }
            }
            self.produce_waiting();
            let busy = self.current.is_some() || !self.inflight.is_empty();
            // Serve delivery reports (and client errors, also when idle).
            self.writer
                .producer()
                .poll(if busy { POLL_WAIT } else { Duration::ZERO });
            let now = self.beat();
            let tried = self.writer.producer().last_try_ms();
            self.report_finished();
            self.commit_if_due();
            let in_flight = !self.failed && !self.inflight.is_empty();
            let connected = self.metrics.connected();
            if let Some(limit) = self.unreachable_limit
                && let Some(d) = self
                    .unreachable
                    .note(now, in_flight, connected, tried, limit)
            {
                self.give_up(d);
            }
        }
    }

    /// Records that the thread went round its loop and when librdkafka last emitted
    /// statistics; returns the time now, in milliseconds since the Unix epoch.
    fn beat(&self) -> u64 {
        let now = crate::metrics::now_ms();
        self.pulse.looped.store(now, Ordering::Relaxed);
        self.pulse.statistics.store(
            self.writer.producer().last_statistics_ms(),
            Ordering::Relaxed,
        );
        now
    }

    /// Takes every command that waits, waiting up to `wait` for the first; notes a close
    /// (or the sink gone) in `closing`.
    fn read_commands(&mut self, wait: Duration) {
        let mut next = if wait.is_zero() {
            self.commands
                .try_recv()
                .map_err(|e| e == TryRecvError::Disconnected)
        } else {
            self.commands
                .recv_timeout(wait)
                .map_err(|e| e == RecvTimeoutError::Disconnected)
        };
        loop {
            match next {
                Ok(Command::Produce(lease)) => self.waiting.push_back(lease),
                Ok(Command::Close { purge, wait }) => {
                    self.closing = Some((purge, wait));
                    return;
                }
                // The sink is gone: fail what is in flight and stop.
                Err(true) => {
                    self.closing = Some((true, Duration::ZERO));
                    return;
                }
                Err(false) => return,
            }
            next = self
                .commands
                .try_recv()
                .map_err(|e| e == TryRecvError::Disconnected);
        }
    }

    /// Reports the oldest lease held failed with `kind`, and nothing more.
    fn fail_waiting(&mut self, kind: FailureKind) {
        if self.failed {
            return;
        }
        let oldest = self
            .txn
            .as_mut()
            .and_then(|t| t.done.pop_front())
            .or_else(|| self.give_back_in_flight())
            .or_else(|| self.waiting.pop_front());
        let Some(lease) = oldest else {
            // Nothing held: the sink stops now, with the reason, rather than at its next batch.
            if let FailureKind::Transaction { why, fatal: true } = kind {
                self.failed = true;
                let _ = self.reports.send(Report::Fatal(why));
            }
            return;
        };
        self.failed = true;
        let failure = Failure {
            index: 0,
            kind,
            topic: None,
        };
        let _ = self.reports.send(Report::Failed { lease, failure });
    }

    /// Commits the open transaction once it is due and everything it carries is
    /// acknowledged, then reports its leases delivered.
    fn commit_if_due(&mut self) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if self.failed {
            return;
        }
        let held = txn.done.len()
            + self.inflight.len()
            + self.waiting.len()
            + usize::from(self.current.is_some());
        if !txn.check_due(held) || self.current.is_some() || !self.inflight.is_empty() {
            return;
        }
        match txn.commit(&mut self.writer, COMMIT_WAIT) {
            Committed::Done(leases) => {
                SinkMetrics::add(&self.metrics.transactions, 1);
                for lease in leases {
                    let _ = self.reports.send(Report::Delivered(lease));
                }
            }
            Committed::Pending => {}
            Committed::Failed(kind) => {
                let kind = txn.give_up(self.writer.producer(), kind);
                self.fail_waiting(kind);
            }
        }
    }

    /// Reports the oldest lease in flight failed, no broker connection having been up nor
    /// tried for `d`, and reports nothing more: the sink closes this producer and opens a new one.
    fn give_up(&mut self, d: Duration) {
        let Some(lease) = self.give_back_in_flight() else {
            return;
        };
        self.failed = true;
        let failure = Failure {
            index: 0,
            kind: FailureKind::Unreachable(d),
            topic: None,
        };
        let _ = self.reports.send(Report::Failed { lease, failure });
    }

    /// Takes the oldest lease in flight to hand back before all its records are reported,
    /// pinning its events' bodies until the producer is dropped.
    fn give_back_in_flight(&mut self) -> Option<Lease> {
        let (lease, _) = self.inflight.pop_front()?;
        self.pinned
            .extend(lease.events.iter().map(|e| e.body.clone()));
        Some(lease)
    }

    /// Produces the waiting leases until librdkafka's queue is full or a record fails.
    fn produce_waiting(&mut self) {
        let slots = self.writer.producer().deliveries().clone();
        while !self.failed {
            if self.current.is_none() {
                // Under exactly-once delivery the sink holds more leases than there are
                // slots: the next slot is free while fewer leases than slots are in flight.
                if self.waiting.is_empty() || self.inflight.len() >= slots.slots() {
                    return;
                }
                if let Some(txn) = self.txn.as_mut() {
                    match txn.begin(self.writer.producer()) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(kind) => return self.fail_waiting(kind),
                    }
                }
                let Some(lease) = self.waiting.pop_front() else {
                    return;
                };
                let slot = self.next_slot;
                self.next_slot = (slot + 1) % slots.slots();
                slots.arm(slot);
                self.current = Some((lease, slot, Cursor::default()));
            }
            let Some((lease, slot, cur)) = self.current.as_mut() else {
                return;
            };
            // SAFETY: the lease stays in `current` or `inflight` until all its records are
            // reported, or is handed back with its bodies pinned (`give_back_in_flight`),
            // or after the producer is dropped (`close`).
            let step = unsafe { self.writer.write(lease, *slot, cur, &self.metrics) };
            if step == Step::QueueFull {
                return;
            }
            let Some((lease, slot, cur)) = self.current.take() else {
                return;
            };
            slots.disarm(slot, cur.produced);
            self.inflight.push_back((lease, slot));
            if step == Step::Failed {
                return;
            }
        }
    }

    /// Hands back the finished leases at the front, oldest first, until one failed.
    fn report_finished(&mut self) {
        let slots = self.writer.producer().deliveries();
        while !self.failed {
            let Some((_, slot)) = self.inflight.front() else {
                return;
            };
            if !slots.is_done(*slot) {
                return;
            }
            let failure = slots.failure(*slot);
            let Some((lease, _)) = self.inflight.pop_front() else {
                return;
            };
            let report = match (failure, self.txn.as_mut()) {
                (None, None) => Report::Delivered(lease),
                (None, Some(txn)) => {
                    txn.done.push_back(lease);
                    continue;
                }
                (Some(mut failure), txn) => {
                    self.failed = true;
                    if let Some(txn) = txn {
                        failure.kind = txn.give_up(self.writer.producer(), failure.kind);
                    }
                    Report::Failed { lease, failure }
                }
            };
            let _ = self.reports.send(report);
        }
    }

    fn close(mut self, purge: bool, wait: Duration) {
        if self.txn.is_some() {
            return self.close_transactional(wait);
        }
        let producer = self.writer.producer();
        if purge {
            producer.purge();
        }
        if let Some((lease, slot, cur)) = self.current.take() {
            producer.deliveries().disarm(slot, cur.produced);
            self.inflight.push_back((lease, slot));
        }
        // Serve the reports of what is left (purged records report at once).
        let Thread {
            writer,
            mut inflight,
            waiting,
            reports,
            mut failed,
            pinned,
            ..
        } = self;
        let deliveries = writer.producer().deliveries().clone();
        writer.into_producer().close(wait);
        // The producer is destroyed: nothing refers to the leases' events any more.
        drop(pinned);
        while !failed {
            let Some((_, slot)) = inflight.front() else {
                break;
            };
            if !deliveries.is_done(*slot) || deliveries.failure(*slot).is_some() {
                failed = true;
                continue;
            }
            if let Some((lease, _)) = inflight.pop_front() {
                let _ = reports.send(Report::Delivered(lease));
            }
        }
        let rest = inflight
            .into_iter()
            .map(|(l, _)| l)
            .chain(waiting)
            .collect();
        let _ = reports.send(Report::Closed(rest));
    }

    /// Closes a transactional producer: the open transaction is aborted (a sink closes when
    /// nothing is in flight, or to give back what it holds), and every lease still held goes
    /// back, oldest first; none is reported delivered without a commit.
    fn close_transactional(mut self, wait: Duration) {
        if let Some(txn) = self.txn.as_mut() {
            txn.abort(self.writer.producer(), wait);
        }
        let Thread {
            writer,
            inflight,
            current,
            waiting,
            reports,
            txn,
            pinned,
            ..
        } = self;
        writer.into_producer().close(wait);
        drop(pinned);
        let rest = txn
            .into_iter()
            .flat_map(|t| t.done)
            .chain(inflight.into_iter().map(|(l, _)| l))
            .chain(current.map(|(l, _, _)| l))
            .chain(waiting)
            .collect();
        let _ = reports.send(Report::Closed(rest));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use rdkafka::ClientConfig;
    use sluice_channels::{Event, Origin};

    use super::*;
    use crate::kafka::config::KafkaConfig;
    use crate::kafka::producer::KafkaProducer;

    /// A body that says when its bytes are freed.
    struct Tracked(Arc<AtomicBool>, Vec<u8>);

    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.1
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_given_up_with_records_still_queued_keeps_its_bytes_until_the_producer_is_dropped()
     {
        // No broker (and no statistics, so no sign of attempts): the record stays queued in
        // librdkafka, referring to the body in place, and the lease is given up after 200 ms.
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        let metrics = Arc::new(SinkMetrics::default());
        let producer = KafkaProducer::new(&config, 2, metrics.clone()).unwrap();
        let cfg: KafkaConfig = serde_yaml::from_str("brokers: 127.0.0.1:1\ntopic: t").unwrap();
        let writer = RecordWriter::new(producer, &cfg);
        let limit = Some(Duration::from_millis(200));
        let mut worker = Worker::spawn(writer, metrics, "k1", limit, None).unwrap();
        let freed = Arc::new(AtomicBool::new(false));
        let body = Bytes::from_owner(Tracked(freed.clone(), b"a line".to_vec()));
        let origin = Origin::for_file("r1", std::path::Path::new("/logs/a.log"), "h", Vec::new());
        let event = Event::new(body, Arc::new(origin), 0, 0);
        let lease = Lease {
            first_seq: 0,
            bytes: event.weight(),
            events: vec![event],
        };
        worker.produce(lease);
        let deadline = Instant::now() + Duration::from_secs(30);
        let report = tokio::time::timeout_at(deadline.into(), worker.report())
            .await
            .expect("a report in time");
        let Some(Report::Failed { lease, failure }) = report else {
            panic!("the lease is given up");
        };
        assert!(matches!(failure.kind, FailureKind::Unreachable(_)));
        // The sink rolls it back and the channel may drop it: the bytes live on while
        // librdkafka holds the record.
        drop(lease);
        assert!(
            !freed.load(Ordering::SeqCst),
            "the body was freed while librdkafka still referred to it"
        );
        let reports = worker.close(true, Duration::ZERO).await;
        assert!(matches!(reports.last(), Some(Report::Closed(rest)) if rest.is_empty()));
        assert!(
            freed.load(Ordering::SeqCst),
            "freed once the producer is gone"
        );
    }

    #[test]
    fn records_in_flight_with_no_connection_nor_attempt_past_the_limit_give_it_up() {
        let mut u = Unreachable::default();
        let limit = Duration::from_secs(30);
        let t0 = 1_000_000;
        assert_eq!(u.note(t0, true, false, 0, limit), None, "it starts now");
        assert_eq!(
            u.note(t0 + 30_000, true, false, 0, limit),
            None,
            "not past it"
        );
        assert_eq!(
            u.note(t0 + 31_000, true, false, 0, limit),
            Some(Duration::from_secs(31))
        );
        assert_eq!(u.note(t0 + 32_000, true, true, 0, limit), None, "connected");
        assert_eq!(u.note(t0 + 33_000, true, false, 0, limit), None, "anew");
        assert_eq!(
            u.note(t0 + 60_000, true, false, t0 + 50_000, limit),
            None,
            "librdkafka tried to connect: counted from then"
        );
        assert_eq!(
            u.note(t0 + 81_000, true, false, t0 + 50_000, limit),
            Some(Duration::from_secs(31))
        );
        assert_eq!(
            u.note(t0 + 90_000, false, false, 0, limit),
            None,
            "none in flight"
        );
        assert_eq!(u.note(t0 + 91_000, true, false, 0, limit), None, "anew");
    }

    #[test]
    fn a_silent_thread_is_named_before_silent_statistics() {
        let p = Pulse::default();
        let limit = Duration::from_secs(30);
        assert_eq!(
            p.stall(1_000_000, limit, limit),
            None,
            "no sign yet is no stall"
        );
        p.looped.store(1_000_000, Ordering::Relaxed);
        p.statistics.store(1_000_000, Ordering::Relaxed);
        assert_eq!(
            p.stall(1_030_000, limit, limit),
            None,
            "30 s is the limit, not past it"
        );
        p.looped.store(1_040_000, Ordering::Relaxed);
        assert_eq!(
            p.stall(1_040_000, limit, limit),
            Some(Stall::Librdkafka(Duration::from_secs(40)))
        );
        assert_eq!(
            p.stall(1_071_000, limit, limit),
            Some(Stall::Thread(Duration::from_secs(31)))
        );
    }
}
