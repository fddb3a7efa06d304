//! The loop every sink runs: take a lease from the channel, hand it to the [`Sink`], commit it
//! once delivered (strictly oldest first), roll back what failed (newest first), back off and
//! open the sink again, retire on `Draining`, settle and return on `Aborting`.

use std::collections::VecDeque;
use std::time::Duration;

use sluice_channels::lifecycle::Phase;
use sluice_channels::{BoxFuture, ChannelError, Lease};
use tokio::time::{Interval, MissedTickBehavior};

use crate::sink::{Close, Failure, Outcome, Returned, Sink, Stopped};
use crate::{SinkContext, SinkError, SinkMetrics};

/// The first and the longest pause before a sink is opened again after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

type Take<'a> = BoxFuture<'a, Result<Option<Lease>, ChannelError>>;

/// Runs `sink` on `ctx.channel` until the channel is closed and empty and everything taken was
/// delivered and committed, or until `ctx.shutdown` asks it to drain (then it takes nothing
/// more and returns once what it took is delivered and committed), or until the agent aborts
/// (then it commits what was delivered before the oldest lease not delivered and rolls the
/// rest back). A failure that retrying can help puts the leases in flight back in the channel
/// and opens the sink again after a backoff (500 ms, doubling up to 30 s, reset by a
/// delivery; or as [`Sink::retry_in`] says); a fatal one puts them back and returns its error.
/// A sink that asks to be reopened ([`Outcome::Reopen`]) is handed nothing more until what it
/// holds is settled, then closed and opened again.
pub async fn drive(sink: Box<dyn Sink>, ctx: SinkContext) -> Result<(), SinkError> {
    Driver {
        sink,
        ctx,
        ledger: Ledger::default(),
    }
    .run()
    .await
}

struct Driver {
    sink: Box<dyn Sink>,
    ctx: SinkContext,
    ledger: Ledger,
}

impl Driver {
    async fn run(mut self) -> Result<(), SinkError> {
        self.ctx.metrics.started();
        self.sink.open().await?;
        let caps = self.sink.capabilities();
        let channel = self.ctx.channel.clone();
        let mut shutdown = self.ctx.shutdown.clone();
        let mut retire = self.ctx.shutdown.clone();
        let mut take: Option<Take<'_>> = None;
        let mut closed = false;
        // Asked to retire (a reload replaces or removes this sink): take nothing more.
        let mut retiring = false;
        let mut backoff = MIN_BACKOFF;
        let mut watch = caps.watch_every.map(|every| {
            let mut watch = tokio::time::interval(every);
            watch.set_missed_tick_behavior(MissedTickBehavior::Delay);
            watch
        });
        // The sink asked to be reopened: take nothing more until what it holds is settled.
        let mut reopening = false;
        loop {
            if self.ledger.is_empty() {
                if closed || retiring {
                    break;
                }
                if reopening {
                    reopening = false;
                    let returned = self.sink.close(Close::Finish).await;
                    self.settle(returned).await?;
                    self.sink.open().await?;
                    continue;
                }
            }
            let can_take =
                !closed && !retiring && !reopening && self.ledger.len() < caps.in_flight.max(1);
            if can_take && take.is_none() {
                take = Some(channel.take(caps.batch_size));
            }
            tokio::select! {
                biased;
                _ = shutdown.reached(Phase::Aborting) => {
                    drop(take);
                    return self.abort().await;
                }
                _ = retire.reached(Phase::Draining), if !retiring => {
                    retiring = true;
                    take = None;
                }
                _ = tick(&mut watch) => self.sink.watch(),
                outcome = self.sink.outcome() => match outcome? {
                    Outcome::Delivered(lease) => {
                        self.ledger.take_back(lease, true);
                        self.commit_delivered().await?;
                        backoff = MIN_BACKOFF;
                    }
                    Outcome::Failed { lease, failure } => {
                        take = None;
                        if !self.recover(lease, failure, &mut backoff).await? {
                            return Ok(());
                        }
                        // The leases rolled back are in the channel again, closed or not:
                        // take them again before the end.
                        closed = false;
                        reopening = false;
                    }
                    Outcome::Reopen => {
                        reopening = true;
                        take = None;
                    }
                },
                taken = async { take.as_mut().expect("a take is armed").await }, if can_take => {
                    take = None;
                    match taken.map_err(|error| self.channel_error(error))? {
                        None => closed = true,
                        Some(lease) => {
                            self.ledger.hand_over(&lease);
                            self.sink.deliver(lease)?;
                        }
                    }
                }
            }
        }
        let returned = self.sink.close(Close::Finish).await;
        let settled = self.settle(returned).await?;
        self.sink.stopped(Stopped::Finished {
            undelivered: settled.rolled_back,
        });
        Ok(())
    }

    /// Handles a failed lease: closes the sink, settles, then stops (when retrying cannot
    /// help) or backs off and opens the sink again. False if the agent aborted meanwhile.
    async fn recover(
        &mut self,
        failed: Lease,
        failure: Failure,
        backoff: &mut Duration,
    ) -> Result<bool, SinkError> {
        self.ctx.metrics.delivery_failed(failure.why.clone());
        self.ledger.take_back(failed, false);
        // The sink must let go of the leases before they go back: it may still be sending them.
        let returned = self.sink.close(Close::Purge).await;
        let settled = self.settle(returned).await?;
        let pause = self.sink.retry_in(*backoff);
        let retry_in = failure.fatal.is_none().then_some(pause);
        self.sink.failed(&failure, settled.rolled_back, retry_in);
        if let Some(error) = failure.fatal {
            return Err(error);
        }
        let mut shutdown = self.ctx.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.reached(Phase::Aborting) => {
                self.sink.stopped(Stopped::AbortedRecovering);
                return Ok(false);
            }
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        SinkMetrics::add(&self.ctx.metrics.retries, 1);
        self.sink.open().await?;
        Ok(true)
    }

    /// The agent gives up waiting: commit what is already delivered, roll back the rest.
    async fn abort(mut self) -> Result<(), SinkError> {
        let returned = self.sink.close(Close::Purge).await;
        let settled = self.settle(returned).await?;
        self.sink.stopped(Stopped::Aborted {
            undelivered: settled.rolled_back,
            abandoned: settled.abandoned,
        });
        Ok(())
    }

    /// Takes back what a closed sink returned, commits the delivered leases older than every
    /// other, and rolls back the rest, newest first. A lease the sink kept ends the rollback:
    /// it and the leases older than it are left as they are (the channel takes rollbacks only
    /// newest first).
    async fn settle(&mut self, returned: Returned) -> Result<Settled, SinkError> {
        for lease in returned.delivered {
            self.ledger.take_back(lease, true);
        }
        for lease in returned.undelivered {
            self.ledger.take_back(lease, false);
        }
        self.commit_delivered().await?;
        let mut settled = Settled::default();
        while let Some(entry) = self.ledger.entries.pop_back() {
            let (State::Delivered(lease) | State::Undelivered(lease)) = entry.state else {
                settled.abandoned = 1 + self.ledger.len();
                self.ledger.entries.clear();
                break;
            };
            self.ctx
                .channel
                .rollback(lease)
                .map_err(|error| self.channel_error(error))?;
            SinkMetrics::add(&self.ctx.metrics.rollbacks, 1);
            settled.rolled_back += 1;
        }
        Ok(settled)
    }

    /// Commits the oldest leases for as long as they are delivered.
    async fn commit_delivered(&mut self) -> Result<(), SinkError> {
        while let Some(lease) = self.ledger.pop_delivered() {
            let (events, bytes) = (lease.events.len() as u64, lease.bytes as u64);
            self.ctx
                .channel
                .commit(lease)
                .await
                .map_err(|error| self.channel_error(error))?;
            self.ctx.metrics.delivered(events, bytes);
        }
        Ok(())
    }

    fn channel_error(&self, error: ChannelError) -> SinkError {
        SinkError::Channel {
            sink: self.ctx.name.clone(),
            error,
        }
    }
}

/// The next tick of the watch, if there is one.
async fn tick(watch: &mut Option<Interval>) {
    match watch {
        Some(watch) => {
            watch.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What a settlement did with the leases in flight.
#[derive(Debug, Default)]
struct Settled {
    rolled_back: usize,
    abandoned: usize,
}

/// The leases handed to the sink and neither committed nor rolled back, oldest first.
#[derive(Default)]
struct Ledger {
    entries: VecDeque<Entry>,
}

struct Entry {
    first_seq: u64,
    state: State,
}

enum State {
    /// The sink holds it.
    Handed,
    /// Delivered; committed once every older lease is.
    Delivered(Lease),
    /// Back from the sink, not delivered.
    Undelivered(Lease),
}

impl Ledger {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Notes a lease the sink is handed (the newest).
    fn hand_over(&mut self, lease: &Lease) {
        self.entries.push_back(Entry {
            first_seq: lease.first_seq,
            state: State::Handed,
        });
    }

    /// Takes a lease back from the sink, delivered or not.
    fn take_back(&mut self, lease: Lease, delivered: bool) {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.first_seq == lease.first_seq)
            .expect("a sink gives back only leases it was handed");
        entry.state = if delivered {
            State::Delivered(lease)
        } else {
            State::Undelivered(lease)
        };
    }

    /// The oldest lease, if it is delivered.
    fn pop_delivered(&mut self) -> Option<Lease> {
        if !matches!(self.entries.front()?.state, State::Delivered(_)) {
            return None;
        }
        match self.entries.pop_front()?.state {
            State::Delivered(lease) => Some(lease),
            State::Handed | State::Undelivered(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_channels::Channel;
    use sluice_channels::lifecycle::ShutdownTrigger;

    use super::*;
    use crate::testing::{Fake, Log, Recording, Shared, Step};

    const DEADLINE: Duration = Duration::from_secs(60);

    struct Running {
        channel: Arc<Recording>,
        shared: Arc<Shared>,
        trigger: ShutdownTrigger,
        metrics: Arc<SinkMetrics>,
        task: tokio::task::JoinHandle<Result<(), SinkError>>,
    }

    /// Drives a fake that may hold `in_flight` leases of 10 events and reports `steps`, on a
    /// channel holding `events` events.
    async fn start(events: u64, in_flight: usize, steps: &[Step]) -> Running {
        let channel = Recording::with_events(events).await;
        let shared = Arc::new(Shared::default());
        shared.steps.lock().unwrap().extend(steps);
        let trigger = ShutdownTrigger::new();
        let metrics = Arc::new(SinkMetrics::default());
        let ctx = SinkContext {
            name: "k1".into(),
            channel: channel.clone(),
            shutdown: trigger.subscribe(),
            metrics: metrics.clone(),
        };
        let fake = Fake::new(in_flight, shared.clone());
        let task = tokio::spawn(drive(Box::new(fake), ctx));
        Running {
            channel,
            shared,
            trigger,
            metrics,
            task,
        }
    }

    impl Running {
        /// Waits until the fake has reported every step.
        async fn idle(&self) {
            tokio::time::timeout(DEADLINE, self.shared.idle.notified())
                .await
                .expect("the fake reported every step in time");
        }

        fn add(&self, steps: &[Step]) {
            self.shared.steps.lock().unwrap().extend(steps);
            self.shared.more.notify_one();
        }

        async fn finish(self) -> (Result<(), SinkError>, Log, Arc<Recording>) {
            let result = tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("the driver returned in time")
                .expect("the driver did not panic");
            let log = std::mem::take(&mut *self.shared.log.lock().unwrap());
            (result, log, self.channel)
        }
    }

    fn commits(channel: &Recording) -> Vec<u64> {
        channel
            .commits
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect()
    }

    fn rollbacks(channel: &Recording) -> Vec<u64> {
        channel
            .rollbacks
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn commits_oldest_first_whatever_order_deliveries_come_in() {
        use Step::*;
        let run = start(30, 3, &[Deliver(20), Deliver(10), Deliver(0)]).await;
        run.idle().await;
        run.channel.close();
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert_eq!(commits(&channel), [0, 10, 20]);
        assert_eq!(log.handed, [0, 10, 20]);
        assert_eq!(log.closes, [Close::Finish]);
        assert_eq!(log.stopped, Some(Stopped::Finished { undelivered: 0 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rolls_back_newest_first_then_the_sink_is_opened_again_and_delivers() {
        use Step::*;
        let steps = [
            Handed(20),
            Deliver(0),
            Fail(10, false),
            Deliver(10),
            Deliver(20),
        ];
        let run = start(30, 3, &steps).await;
        run.idle().await;
        run.channel.close();
        let metrics = run.metrics.clone();
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert_eq!(rollbacks(&channel), [20, 10], "newest first");
        assert_eq!(commits(&channel), [0, 10, 20]);
        assert_eq!(log.failed, [(2, Some(MIN_BACKOFF))]);
        assert_eq!(log.opens, 2, "opened again after the failure");
        assert_eq!(log.handed, [0, 10, 20, 10, 20]);
        assert_eq!(SinkMetrics::get(&metrics.rollbacks), 2);
        assert_eq!(SinkMetrics::get(&metrics.retries), 1);
        assert_eq!(SinkMetrics::get(&metrics.errors), 1);
        assert_eq!(SinkMetrics::get(&metrics.batches), 3);
        assert!(
            !metrics.health(0).failing,
            "a delivery ends the failing state"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leases_rolled_back_after_the_channel_closed_are_taken_and_delivered_again() {
        use Step::*;
        let run = start(20, 3, &[Handed(10)]).await;
        run.idle().await;
        run.channel.close();
        // Single-threaded: let the driver see the end of the channel before the failure.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        run.add(&[Fail(0, false), Deliver(0), Deliver(10)]);
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert_eq!(log.handed, [0, 10, 0, 10], "taken again after the rollback");
        assert_eq!(commits(&channel), [0, 10]);
        assert_eq!(channel.stats().events, 0, "nothing left behind");
        assert_eq!(log.stopped, Some(Stopped::Finished { undelivered: 0 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_failure_stops_with_its_error_and_leaves_the_leases_in_the_channel() {
        use Step::*;
        let run = start(30, 2, &[Handed(10), Fail(0, true)]).await;
        let (result, log, channel) = run.finish().await;
        let err = result.unwrap_err().to_string();
        assert_eq!(err, "sink k1: the fake failed");
        assert_eq!(rollbacks(&channel), [10, 0]);
        assert_eq!(log.failed, [(2, None)]);
        assert_eq!(log.opens, 1);
        assert_eq!(log.stopped, None);
        assert_eq!(channel.stats().events, 30);
        let back = channel.take(100).await.unwrap().unwrap();
        assert_eq!((back.first_seq, back.events.len()), (0, 30));
    }

    #[tokio::test(start_paused = true)]
    async fn retiring_takes_nothing_more_and_returns_once_what_it_took_is_committed() {
        use Step::*;
        let run = start(50, 2, &[Handed(10)]).await;
        run.idle().await;
        run.trigger.advance(Phase::Draining);
        run.add(&[Deliver(0), Deliver(10)]);
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert_eq!(log.handed, [0, 10], "nothing taken after Draining");
        assert_eq!(commits(&channel), [0, 10]);
        assert_eq!(log.stopped, Some(Stopped::Finished { undelivered: 0 }));
        let stats = channel.stats();
        assert_eq!((stats.committed_total, stats.events), (20, 30));
    }

    #[tokio::test(start_paused = true)]
    async fn abort_commits_up_to_the_oldest_undelivered_lease_and_rolls_back_the_rest() {
        use Step::*;
        // 0 is delivered and committed; 30 is delivered but waits for 10 and 20; on closing,
        // the fake gives 10 back delivered and 20 not.
        let run = start(40, 4, &[Deliver(0), Deliver(30)]).await;
        run.shared.quiet.lock().unwrap().push(10);
        run.idle().await;
        run.trigger.advance(Phase::Aborting);
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert_eq!(commits(&channel), [0, 10]);
        assert_eq!(rollbacks(&channel), [30, 20], "newest first");
        assert_eq!(log.closes, [Close::Purge]);
        assert_eq!(
            log.stopped,
            Some(Stopped::Aborted {
                undelivered: 2,
                abandoned: 0
            })
        );
        let back = channel.take(100).await.unwrap().unwrap();
        assert_eq!((back.first_seq, back.events.len()), (20, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn abort_leaves_a_lease_the_sink_keeps_and_every_older_one_as_they_are() {
        use Step::*;
        let run = start(20, 2, &[Handed(10)]).await;
        run.shared.kept.lock().unwrap().push(10);
        run.idle().await;
        run.trigger.advance(Phase::Aborting);
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert!(commits(&channel).is_empty() && rollbacks(&channel).is_empty());
        assert_eq!(
            log.stopped,
            Some(Stopped::Aborted {
                undelivered: 0,
                abandoned: 2
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_during_the_backoff_ends_the_run_with_the_leases_back() {
        use Step::*;
        let run = start(10, 1, &[Fail(0, false)]).await;
        tokio::time::timeout(DEADLINE, run.shared.said.notified())
            .await
            .expect("the failure was said");
        run.trigger.advance(Phase::Aborting);
        let (result, log, channel) = run.finish().await;
        result.unwrap();
        assert_eq!(rollbacks(&channel), [0]);
        assert_eq!(log.opens, 1);
        assert_eq!(log.stopped, Some(Stopped::AbortedRecovering));
    }
}
