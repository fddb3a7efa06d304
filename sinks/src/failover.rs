//! Sink groups with the `failover` processor: several sinks on one channel, of which only the
//! highest-priority live one is open and takes from the channel, so the channel keeps a single
//! consumer and its order.
//!
//! A [`Failover`] is itself a [`Sink`] over its members, so the driver ([`crate::drive`]) runs
//! one loop over the one channel. When the open member fails a lease, the group reports the
//! failure: the driver rolls back every lease in flight (newest first, so they return to the
//! head of the channel in order) and opens the group again, at once
//! ([`Sink::retry_in`]), which opens the next member by priority. The failed member waits in a
//! penalty box: 1 s after its first failure in a row, doubling with each further one, up to
//! `max_penalty`. When the penalty of a member of higher priority than the open one ends, the
//! group asks to be reopened ([`Outcome::Reopen`]): the driver lets the open member settle what
//! it holds, closes the group, and opens it again, which opens that member. If it fails again,
//! its penalty doubles and the next member takes over again. When every member is in its
//! penalty box, the driver waits until the first penalty ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use sluice_channels::config::Problem;
use sluice_channels::units::HumanDuration;
use sluice_channels::{BoxFuture, Lease};
use tokio::time::Instant;
use tracing::{Instrument, Span, info, warn};

use crate::sink::{Capabilities, Close, Failure, Outcome, Returned, Sink, Stopped};
use crate::{SinkError, SinkMetrics};

/// The penalty after a member's first failure in a row; it doubles with each further one.
pub const FIRST_PENALTY: Duration = Duration::from_secs(1);

/// The longest penalty when `max_penalty` is not set.
pub const DEFAULT_MAX_PENALTY: Duration = Duration::from_secs(30);

/// A sink group's options, as written under `sink_groups.NAME`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkGroupConfig {
    /// The sinks of the group, by name.
    pub sinks: Vec<String>,
    /// How the group picks the sink that delivers.
    pub processor: Processor,
    /// Each sink's priority: the highest takes from the channel. Sinks without one come after
    /// every sink that has one, in the order of `sinks`.
    #[serde(default)]
    pub priority: BTreeMap<String, i64>,
    /// The longest a failed sink waits before it is tried again.
    #[serde(default = "default_max_penalty")]
    pub max_penalty: HumanDuration,
}

fn default_max_penalty() -> HumanDuration {
    HumanDuration(DEFAULT_MAX_PENALTY)
}

/// The sink processors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Processor {
    /// The highest-priority live sink delivers; a failed one is retried after a penalty.
    Failover,
}

impl SinkGroupConfig {
    /// Checks what serde cannot, with keys relative to the group: at least one sink, none
    /// listed twice, priorities only for the group's sinks and each one different, a
    /// `max_penalty` above zero. Whether the sinks exist is the agent's check.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.sinks.is_empty() {
            problems.push(Problem::new("sinks", "a group needs at least one sink"));
        }
        for (i, s) in self.sinks.iter().enumerate() {
            if self.sinks[..i].contains(s) {
                problems.push(Problem::new(
                    format!("sinks[{i}]"),
                    format!("sink `{s}` is listed twice"),
                ));
            }
        }
        let mut seen: BTreeMap<i64, &str> = BTreeMap::new();
        for (s, p) in &self.priority {
            if !self.sinks.contains(s) {
                problems.push(Problem::new(
                    format!("priority.{s}"),
                    format!(
                        "`{s}` is not a sink of this group (sinks: {})",
                        self.sinks.join(", ")
                    ),
                ));
            } else if let Some(other) = seen.insert(*p, s) {
                problems.push(Problem::new(
                    format!("priority.{s}"),
                    format!(
                        "sink `{other}` has the same priority ({p}); give each sink its own, \
                         the order of failover depends on it"
                    ),
                ));
            }
        }
        if self.max_penalty.0.is_zero() {
            problems.push(Problem::new(
                "max_penalty",
                "must be more than 0 (a failed sink would be retried without pause)",
            ));
        }
        problems
    }

    /// The sinks, highest priority first: those with a priority by priority, then the others
    /// in the order of `sinks`.
    pub fn by_priority(&self) -> Vec<String> {
        let mut ranked: Vec<(usize, &String)> = self.sinks.iter().enumerate().collect();
        ranked.sort_by_key(|(i, s)| match self.priority.get(*s) {
            Some(p) => (0, -i128::from(*p), *i),
            None => (1, 0, *i),
        });
        ranked.into_iter().map(|(_, s)| s.clone()).collect()
    }
}

/// A sink group's state for `/metrics` and `/health`.
#[derive(Debug)]
pub struct GroupMetrics {
    /// The group's sinks, highest priority first.
    pub sinks: Vec<String>,
    /// The index in `sinks` of the open one; `usize::MAX`: none.
    active: AtomicUsize,
    /// Times a sink failed and the group opened another one.
    pub failovers: AtomicU64,
    /// Times the group went back to a sink of higher priority once its penalty ended.
    pub takebacks: AtomicU64,
}

impl GroupMetrics {
    /// The state of a group of `sinks` (highest priority first), none of them open.
    pub fn new(sinks: Vec<String>) -> Self {
        GroupMetrics {
            sinks,
            active: AtomicUsize::new(usize::MAX),
            failovers: AtomicU64::new(0),
            takebacks: AtomicU64::new(0),
        }
    }

    /// The sink that is open and takes from the channel, if one is.
    pub fn active(&self) -> Option<&str> {
        self.sinks
            .get(self.active.load(Ordering::Relaxed))
            .map(String::as_str)
    }

    fn set_active(&self, index: Option<usize>) {
        self.active
            .store(index.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}

/// One sink of a group, as the agent builds it.
pub struct Member {
    /// Its name.
    pub name: String,
    /// The sink.
    pub sink: Box<dyn Sink>,
    /// Its counters: the group counts its deliveries, failures and rollbacks there.
    pub metrics: Arc<SinkMetrics>,
}

/// A member and its penalty.
struct Slot {
    member: Member,
    /// What the member logs is in this span, as if it ran alone: `sink{sink=k1}`.
    span: Span,
    /// Failures since it last delivered.
    failures: u32,
    /// Until when it is not tried; `None`: it never failed, or delivered since.
    penalty_until: Option<Instant>,
}

/// Why the open member was closed: what the next open tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Failed(usize),
    TakeBack(usize),
    Other(usize),
}

/// A `failover` sink group: a [`Sink`] that delivers through the highest-priority member not
/// in its penalty box (see the module's documentation).
pub struct Failover {
    name: String,
    slots: Vec<Slot>,
    max_penalty: Duration,
    caps: Capabilities,
    metrics: Arc<GroupMetrics>,
    /// The open member.
    active: Option<usize>,
    /// The member closed last, and why.
    left: Option<Left>,
    /// A reopen was asked for and not done yet.
    reopening: bool,
    /// The open member failed a lease.
    failing: bool,
}

impl Failover {
    /// The group `name` of `members` (highest priority first, at least one), whose failed
    /// members wait at most `max_penalty` before they are tried again, showing its state in
    /// `metrics`. It takes batches of its members' smallest batch size and holds as many in
    /// flight as the member that holds fewest.
    pub fn new(
        name: &str,
        members: Vec<Member>,
        max_penalty: Duration,
        metrics: Arc<GroupMetrics>,
    ) -> Self {
        let caps = members
            .iter()
            .map(|m| m.sink.capabilities())
            .reduce(|a, b| Capabilities {
                batch_size: a.batch_size.min(b.batch_size),
                in_flight: a.in_flight.min(b.in_flight),
                watch_every: match (a.watch_every, b.watch_every) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                },
            })
            .expect("a group has at least one sink");
        Failover {
            name: name.to_owned(),
            slots: members
                .into_iter()
                .map(|member| Slot {
                    span: tracing::info_span!(parent: None, "sink", sink = %member.name),
                    member,
                    failures: 0,
                    penalty_until: None,
                })
                .collect(),
            max_penalty,
            caps,
            metrics,
            active: None,
            left: None,
            reopening: false,
            failing: false,
        }
    }

    /// The members in the order they are tried: those out of the penalty box by priority,
    /// then the others by the end of their penalty.
    fn candidates(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_by_key(|&i| match self.slots[i].penalty_until {
            Some(t) if t > now => (1, Some(t), i),
            _ => (0, None, i),
        });
        order
    }

    /// Puts member `i` in the penalty box after a failure; returns the penalty.
    fn penalize(&mut self, i: usize) -> Duration {
        let slot = &mut self.slots[i];
        slot.failures = slot.failures.saturating_add(1);
        let doubled = FIRST_PENALTY.saturating_mul(1 << (slot.failures - 1).min(20));
        let penalty = doubled.min(self.max_penalty);
        slot.penalty_until = Some(Instant::now() + penalty);
        penalty
    }

    /// When the open member should give way to one of higher priority whose penalty ends.
    fn takeback_at(&self) -> Option<Instant> {
        let active = self.active?;
        if self.reopening {
            return None;
        }
        self.slots[..active]
            .iter()
            .map(|s| s.penalty_until.unwrap_or_else(Instant::now))
            .min()
    }

    /// Opens the first candidate that opens; a member that does not is penalized.
    async fn open_next(&mut self) -> Result<(), SinkError> {
        let mut last = None;
        for i in self.candidates() {
            let slot = &mut self.slots[i];
            match slot.member.sink.open().instrument(slot.span.clone()).await {
                Ok(()) => {
                    slot.member.metrics.started();
                    if slot.failures > 0 {
                        SinkMetrics::add(&slot.member.metrics.retries, 1);
                    }
                    self.opened(i);
                    return Ok(());
                }
                Err(e) => {
                    let why = e.to_string();
                    slot.member.metrics.client_error(why.clone());
                    let penalty = self.penalize(i);
                    warn!(group = %self.name, sink = %self.slots[i].member.name, error = %why,
                        penalty = ?penalty, "a sink of the group cannot be opened; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a group has at least one sink"))
    }

    /// Notes that member `i` is open, and says so when it replaces another.
    fn opened(&mut self, i: usize) {
        self.active = Some(i);
        self.reopening = false;
        self.failing = false;
        let sink = &self.slots[i].member.name;
        match self.left.take() {
            Some(Left::Failed(f)) if f != i => {
                SinkMetrics::add(&self.metrics.failovers, 1);
                warn!(group = %self.name, failed = %self.slots[f].member.name, active = %sink,
                    "sink group failed over: the next sink by priority takes from the channel");
            }
            Some(Left::Failed(_)) => {
                info!(group = %self.name, active = %sink,
                    "every other sink of the group is in its penalty box; the failed sink is tried again");
            }
            Some(Left::TakeBack(from)) if from != i => {
                SinkMetrics::add(&self.metrics.takebacks, 1);
                info!(group = %self.name, from = %self.slots[from].member.name, active = %sink,
                    "sink group takes back: a sink of higher priority takes from the channel again");
            }
            Some(Left::TakeBack(_) | Left::Other(_)) => {}
            None => info!(group = %self.name, active = %sink, "sink group started"),
        }
        // After the counters, so that a reader who sees the new sink sees them counted.
        self.metrics.set_active(Some(i));
    }

    /// The next outcome of the open member, or a reopen when a member of higher priority is
    /// out of its penalty box.
    async fn next_outcome(&mut self) -> Result<Outcome, SinkError> {
        let Some(i) = self.active else {
            return std::future::pending().await;
        };
        let takeback = self.takeback_at();
        let slot = &mut self.slots[i];
        let outcome = tokio::select! {
            outcome = slot.member.sink.outcome().instrument(slot.span.clone()) => Some(outcome?),
            _ = sleep_until(takeback) => None,
        };
        let Some(outcome) = outcome else {
            self.reopening = true;
            return Ok(Outcome::Reopen);
        };
        match &outcome {
            Outcome::Delivered(lease) => {
                slot.failures = 0;
                slot.penalty_until = None;
                slot.member
                    .metrics
                    .delivered(lease.events.len() as u64, lease.bytes as u64);
            }
            Outcome::Failed { failure, .. } => {
                slot.member.metrics.delivery_failed(failure.why.clone());
                self.penalize(i);
                self.failing = true;
            }
            Outcome::Reopen => {}
        }
        Ok(outcome)
    }
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Sink for Failover {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn open(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.open_next())
    }

    fn deliver(&mut self, lease: Lease) -> Result<(), SinkError> {
        let Some(i) = self.active else {
            return Err(SinkError::Setup {
                sink: self.name.clone(),
                message: "no sink of the group is open".into(),
            });
        };
        let slot = &mut self.slots[i];
        let _in = slot.span.enter();
        slot.member.sink.deliver(lease)
    }

    fn outcome(&mut self) -> BoxFuture<'_, Result<Outcome, SinkError>> {
        Box::pin(self.next_outcome())
    }

    fn close(&mut self, how: Close) -> BoxFuture<'_, Returned> {
        Box::pin(async move {
            let Some(i) = self.active.take() else {
                return Returned::default();
            };
            self.metrics.set_active(None);
            self.left = Some(if self.failing {
                Left::Failed(i)
            } else if self.reopening {
                Left::TakeBack(i)
            } else {
                Left::Other(i)
            });
            let slot = &mut self.slots[i];
            slot.member
                .sink
                .close(how)
                .instrument(slot.span.clone())
                .await
        })
    }

    fn retry_in(&self, _backoff: Duration) -> Duration {
        let now = Instant::now();
        self.slots
            .iter()
            .map(|s| s.penalty_until.map_or(Duration::ZERO, |t| t - now))
            .min()
            .unwrap_or(Duration::ZERO)
    }

    fn watch(&mut self) {
        if let Some(i) = self.active {
            let slot = &mut self.slots[i];
            let _in = slot.span.enter();
            slot.member.sink.watch();
        }
    }

    fn failed(&self, failure: &Failure, batches: usize, retry_in: Option<Duration>) {
        let Some(Left::Failed(i)) = self.left else {
            return;
        };
        let slot = &self.slots[i];
        SinkMetrics::add(&slot.member.metrics.rollbacks, batches as u64);
        let penalty = slot
            .penalty_until
            .map(|t| t.saturating_duration_since(Instant::now()));
        // The member's own line, with when it is tried again.
        slot.span.in_scope(|| {
            slot.member
                .sink
                .failed(failure, batches, retry_in.and(penalty));
        });
        if retry_in.is_some() {
            let next = self
                .candidates()
                .into_iter()
                .next()
                .map(|n| self.slots[n].member.name.as_str());
            warn!(group = %self.name, failed = %slot.member.name, penalty = ?penalty,
                retry_in = ?retry_in, next = ?next, batches,
                "a sink of the group failed; its batches are back in the channel");
        }
    }

    fn stopped(&self, how: Stopped) {
        let last = self.active.or(match self.left {
            Some(Left::Failed(i) | Left::TakeBack(i) | Left::Other(i)) => Some(i),
            None => None,
        });
        if let Some(i) = last {
            let slot = &self.slots[i];
            slot.span.in_scope(|| slot.member.sink.stopped(how));
        }
        info!(group = %self.name, how = ?how, "sink group stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sluice_channels::Channel;
    use sluice_channels::lifecycle::{Phase, ShutdownTrigger};
    use tokio::time::Instant;

    use super::*;
    use crate::SinkContext;
    use crate::testing::{Fake, Log, Recording, Shared, Step};

    const DEADLINE: Duration = Duration::from_secs(600);

    /// A group driven on a channel, and what its members share with the test.
    struct Group {
        channel: Arc<Recording>,
        members: Vec<Arc<Shared>>,
        sink_metrics: Vec<Arc<SinkMetrics>>,
        metrics: Arc<GroupMetrics>,
        trigger: ShutdownTrigger,
        task: tokio::task::JoinHandle<Result<(), SinkError>>,
        start: Instant,
    }

    /// Drives a group of fakes (`k1`, `k2`, ... highest priority first) that each hold one
    /// lease of 10 events and report their `scripts`, on a channel of `events` events.
    async fn start(events: u64, max_penalty: Duration, scripts: &[&[Step]]) -> Group {
        start_with(events, max_penalty, 1, scripts).await
    }

    /// [`start`] with fakes that hold `in_flight` leases.
    async fn start_with(
        events: u64,
        max_penalty: Duration,
        in_flight: usize,
        scripts: &[&[Step]],
    ) -> Group {
        let channel = Recording::with_events(events).await;
        let names: Vec<String> = (1..=scripts.len()).map(|i| format!("k{i}")).collect();
        let metrics = Arc::new(GroupMetrics::new(names.clone()));
        let mut members = Vec::new();
        let mut shared_all = Vec::new();
        let mut sink_metrics = Vec::new();
        for (name, script) in names.iter().zip(scripts) {
            let shared = Arc::new(Shared::default());
            shared.steps.lock().unwrap().extend(script.iter());
            let m = Arc::new(SinkMetrics::default());
            members.push(Member {
                name: name.clone(),
                sink: Box::new(Fake::new(in_flight, shared.clone())),
                metrics: m.clone(),
            });
            shared_all.push(shared);
            sink_metrics.push(m);
        }
        let group = Failover::new("g1", members, max_penalty, metrics.clone());
        let trigger = ShutdownTrigger::new();
        let ctx = SinkContext {
            name: "g1".into(),
            channel: channel.clone(),
            shutdown: trigger.subscribe(),
            metrics: Arc::new(SinkMetrics::default()),
        };
        Group {
            channel,
            members: shared_all,
            sink_metrics,
            metrics,
            trigger,
            task: tokio::spawn(crate::drive(Box::new(group), ctx)),
            start: Instant::now(),
        }
    }

    impl Group {
        /// Waits until member `i` (0: `k1`) has reported every step of its script.
        async fn idle(&self, i: usize) {
            tokio::time::timeout(DEADLINE, self.members[i].idle.notified())
                .await
                .expect("the fake reported every step in time");
        }

        fn add(&self, i: usize, steps: &[Step]) {
            self.members[i].steps.lock().unwrap().extend(steps);
            self.members[i].more.notify_one();
        }

        fn log(&self, i: usize) -> std::sync::MutexGuard<'_, Log> {
            self.members[i].log.lock().unwrap()
        }

        /// When member `i` was opened, since the start.
        fn opened(&self, i: usize) -> Vec<Duration> {
            self.log(i)
                .opened_at
                .iter()
                .map(|t| *t - self.start)
                .collect()
        }

        async fn finish(self) -> (Result<(), SinkError>, Arc<Recording>) {
            let result = tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("the driver returned in time")
                .expect("the driver did not panic");
            (result, self.channel)
        }
    }

    fn seqs(list: &Mutex<Vec<(u64, u64)>>) -> Vec<u64> {
        list.lock().unwrap().iter().map(|c| c.0).collect()
    }

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn sinks_rank_by_priority_then_unranked_in_the_order_written() {
        let cfg = SinkGroupConfig {
            sinks: ["a", "b", "c", "d"].map(String::from).to_vec(),
            processor: Processor::Failover,
            priority: [("c".to_owned(), 1), ("b".to_owned(), 10)].into(),
            max_penalty: default_max_penalty(),
        };
        assert_eq!(cfg.by_priority(), ["b", "c", "a", "d"]);
        assert!(cfg.validate().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_highest_priority_sink_takes_and_the_next_takes_over_the_rolled_back_leases() {
        use Step::*;
        let g = start(
            30,
            DEFAULT_MAX_PENALTY,
            &[&[Deliver(0), Fail(10, false)], &[Deliver(10), Deliver(20)]],
        )
        .await;
        g.idle(1).await;
        assert_eq!(g.metrics.active(), Some("k2"));
        assert_eq!(SinkMetrics::get(&g.metrics.failovers), 1);
        g.channel.close();
        let (l1, l2) = (g.log(0).handed.clone(), g.log(1).handed.clone());
        assert_eq!(l1, [0, 10]);
        assert_eq!(l2, [10, 20], "k2 starts with the lease k1 failed");
        assert_eq!(g.opened(1), secs(&[0]), "k2 took over at once");
        assert_eq!(SinkMetrics::get(&g.sink_metrics[0].events), 10);
        assert_eq!(SinkMetrics::get(&g.sink_metrics[0].rollbacks), 1);
        assert_eq!(SinkMetrics::get(&g.sink_metrics[1].events), 20);
        assert!(g.sink_metrics[0].health(0).failing);
        let (result, channel) = g.finish().await;
        result.unwrap();
        assert_eq!(seqs(&channel.rollbacks), [10]);
        assert_eq!(seqs(&channel.commits), [0, 10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn leases_in_flight_go_back_newest_first_and_the_next_sink_delivers_them_in_order() {
        use Step::*;
        let k1 = [Handed(20), Deliver(0), Fail(10, false)];
        let k2 = [Deliver(10), Deliver(20), Deliver(30)];
        let g = start_with(40, DEFAULT_MAX_PENALTY, 3, &[&k1, &k2]).await;
        g.idle(1).await;
        g.channel.close();
        let (s1, s2) = (g.members[0].clone(), g.members[1].clone());
        let (result, channel) = g.finish().await;
        result.unwrap();
        assert_eq!(seqs(&channel.rollbacks), [20, 10], "newest first");
        assert_eq!(seqs(&channel.commits), [0, 10, 20, 30]);
        assert_eq!(s2.log.lock().unwrap().handed, [10, 20, 30]);
        assert_eq!(s1.log.lock().unwrap().closes, [Close::Purge]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_higher_sink_takes_back_after_its_penalty_which_doubles_up_to_the_cap() {
        use Step::*;
        // k1 fails, k2 delivers and empties the channel; once k1's penalty ends it takes back,
        // and the test puts 10 more events that k1 fails again.
        let g = start(
            10,
            Duration::from_secs(3),
            &[&[Fail(0, false)], &[Deliver(0)]],
        )
        .await;
        for seq in [10, 20, 30, 40] {
            g.idle(0).await;
            g.add(0, &[Fail(seq, false)]);
            g.add(1, &[Deliver(seq)]);
            g.channel.add_events(10).await;
        }
        g.idle(0).await;
        let opened = g.opened(0);
        let gaps: Vec<Duration> = opened.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, secs(&[1, 2, 3, 3, 3]), "k1 opened at {opened:?}");
        assert_eq!(g.opened(1), secs(&[0, 1, 3, 6, 9]), "k2 at each failure");
        // Now k1 delivers: it stays open, and k2 is not opened again.
        g.add(0, &[Deliver(50)]);
        g.channel.add_events(10).await;
        g.idle(0).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(g.metrics.active(), Some("k1"));
        assert_eq!(g.log(1).opens, 5);
        assert!(!g.sink_metrics[0].health(0).failing);
        assert_eq!(SinkMetrics::get(&g.metrics.failovers), 5);
        assert_eq!(SinkMetrics::get(&g.metrics.takebacks), 5);
        g.channel.close();
        let (result, channel) = g.finish().await;
        result.unwrap();
        assert_eq!(seqs(&channel.commits), [0, 10, 20, 30, 40, 50]);
        assert_eq!(seqs(&channel.rollbacks), [0, 10, 20, 30, 40]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_sink_down_the_group_waits_for_the_first_penalty_without_spinning() {
        use Step::*;
        let fails = [Fail(0, false), Fail(0, false), Fail(0, false)];
        let g = start(10, DEFAULT_MAX_PENALTY, &[&fails, &fails]).await;
        g.idle(0).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        // Each failure penalizes its sink (1 s, 2 s, 4 s): both are tried once per penalty.
        assert_eq!(g.opened(0), secs(&[0, 1, 3, 7]));
        assert_eq!(g.opened(1), secs(&[0, 1, 3]));
        assert_eq!(g.metrics.active(), Some("k1"), "the fourth attempt holds");
        assert_eq!(seqs(&g.channel.rollbacks), [0; 6]);
        g.trigger.advance(Phase::Aborting);
        let (result, channel) = g.finish().await;
        result.unwrap();
        assert_eq!(channel.stats().events, 10, "every event is back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_while_every_sink_is_down_ends_at_once_with_the_leases_back() {
        use Step::*;
        let g = start(
            10,
            DEFAULT_MAX_PENALTY,
            &[&[Fail(0, false)], &[Fail(0, false)]],
        )
        .await;
        tokio::time::timeout(DEADLINE, g.members[1].said.notified())
            .await
            .expect("k2's failure was said");
        g.trigger.advance(Phase::Aborting);
        let (start, members) = (g.start, g.members.clone());
        let (result, channel) = g.finish().await;
        result.unwrap();
        assert_eq!(
            Instant::now() - start,
            Duration::ZERO,
            "no wait for a penalty"
        );
        assert_eq!(seqs(&channel.rollbacks), [0, 0]);
        assert_eq!(channel.stats().events, 10);
        let stopped = members[1].log.lock().unwrap().stopped;
        assert_eq!(stopped, Some(Stopped::AbortedRecovering));
    }
}
