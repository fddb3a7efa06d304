//! The Kafka sink: delivers a channel's events to Kafka with librdkafka, keeping each file's
//! lines in one partition and in order, and commits each lease only after Kafka acknowledged
//! every record of it.
//!
//! Several leases are in flight at once (`batches_in_flight`): each is handed to the producer's
//! own thread (see `worker`) as soon as it is taken, and leases are committed strictly oldest
//! first as their deliveries complete.
//! The idempotent producer keeps one partition's records in order across retries, and with no
//! delivery deadline a broker outage only makes the sink wait (the channel fills and the
//! sources pause). A batch with a failed record is rolled back with every newer batch, newest
//! first, the producer is rebuilt, and delivery resumes from the failed batch after a backoff.

mod config;
mod producer;
mod records;
mod template;
mod worker;

#[cfg(test)]
mod tests;

use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use sluice_channels::lifecycle::Phase;
use sluice_channels::{BoxFuture, ChannelError, Lease};
use tracing::{error, info, warn};

pub use config::{
    Acks, Compression, KEY_AND_HEADERS_RESERVE, KafkaConfig, Oversize, ProducerValue,
};
pub use template::{Template, TemplateError};

use crate::{SinkContext, SinkError, SinkMetrics};
use producer::{Failure, FailureKind, KafkaProducer};
use records::RecordWriter;
use worker::{Report, Stall, Worker};

/// How long a closing producer may take to report what it still holds.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often the sink checks that its producer thread and librdkafka are alive, and how long
/// either may be silent before the sink says so.
const WATCH_EVERY: Duration = Duration::from_secs(5);
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// The first and the longest pause before a failed batch is produced again.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The Kafka sink.
pub struct KafkaSink {
    cfg: KafkaConfig,
    ctx: SinkContext,
}

type Take<'a> = BoxFuture<'a, Result<Option<Lease>, ChannelError>>;

impl KafkaSink {
    /// A sink draining `ctx.channel` into Kafka as `cfg` says; `cfg` should have passed
    /// [`KafkaConfig::validate`].
    pub fn new(cfg: KafkaConfig, ctx: SinkContext) -> Self {
        KafkaSink { cfg, ctx }
    }

    /// Runs until the channel is closed and empty and everything taken was delivered, or
    /// until it is asked to drain (then it takes nothing more and returns once what it took
    /// was delivered), or until the agent aborts (then what is in flight is rolled back). Fails when a line can
    /// never be delivered as configured (an oversized line under `oversize: stop`, a record
    /// the broker refuses as too large, a topic name Kafka refuses); the batches not
    /// delivered are back in the channel then.
    pub async fn run(self) -> Result<(), SinkError> {
        self.ctx.metrics.started();
        let mut worker = self.start().await?;
        let channel = self.ctx.channel.clone();
        let mut shutdown = self.ctx.shutdown.clone();
        let mut retire = self.ctx.shutdown.clone();
        let mut in_flight = 0usize;
        let mut take: Option<Take<'_>> = None;
        let mut closed = false;
        // Asked to retire (a reload replaces or removes this sink): take nothing more.
        let mut retiring = false;
        let mut backoff = MIN_BACKOFF;
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled = None;
        while !((closed || retiring) && in_flight == 0) {
            let can_take = !closed && !retiring && in_flight < self.cfg.batches_in_flight;
            if can_take && take.is_none() {
                take = Some(channel.take(self.cfg.batch_size));
            }
            tokio::select! {
                biased;
                _ = shutdown.reached(Phase::Aborting) => {
                    drop(take);
                    return self.abort(worker).await;
                }
                _ = retire.reached(Phase::Draining), if !retiring => {
                    retiring = true;
                    take = None;
                }
                _ = watch.tick() => self.watch(&worker, &mut stalled),
                report = worker.report() => match report {
                    Some(Report::Delivered(lease)) => {
                        in_flight -= 1;
                        self.commit(lease).await?;
                        backoff = MIN_BACKOFF;
                    }
                    Some(Report::Failed { lease, failure }) => {
                        take = None;
                        let Some(w) = self.recover(worker, lease, failure, &mut backoff).await? else {
                            info!(sink = %self.ctx.name, "kafka sink aborted while recovering");
                            return Ok(());
                        };
                        worker = w;
                        in_flight = 0;
                    }
                    Some(Report::Closed(_)) | None => {
                        return Err(self.setup_error("the producer thread stopped".into()));
                    }
                },
                taken = async { take.as_mut().expect("a take is armed").await }, if can_take => {
                    take = None;
                    match taken.map_err(|error| self.channel_error(error))? {
                        None => closed = true,
                        Some(lease) => {
                            worker.produce(lease);
                            in_flight += 1;
                        }
                    }
                }
            }
        }
        let left = self.settle(worker.close(false, CLOSE_WAIT).await).await?;
        if left > 0 {
            warn!(sink = %self.ctx.name, batches = left, "batches left undelivered at the end");
        }
        info!(sink = %self.ctx.name, "kafka sink stopped");
        Ok(())
    }

    /// Says so, once per episode, when the producer thread or librdkafka stopped answering
    /// (delivery cannot go on then, and nothing else would tell), and when they answer again.
    fn watch(&self, worker: &Worker, stalled: &mut Option<Stall>) {
        // Statistics come every statistics.interval.ms: three missed ones, at least.
        let statistics = STALL_LIMIT.max(self.cfg.statistics_interval() * 3);
        let now = worker.stall(crate::metrics::now_ms(), STALL_LIMIT, statistics);
        let sink = &self.ctx.name;
        match (now, *stalled) {
            (Some(Stall::Thread(d)), None | Some(Stall::Librdkafka(_))) => {
                let why = "the producer thread is blocked in librdkafka; delivery is stuck";
                error!(sink = %sink, stuck_for = ?d, "{why}");
                self.ctx.metrics.client_error(why.to_owned());
            }
            (Some(Stall::Librdkafka(d)), None | Some(Stall::Thread(_))) => {
                let why = "librdkafka emits no statistics (due every statistics.interval.ms): \
                    its main thread is stuck; delivery may not resume";
                error!(sink = %sink, silent_for = ?d, "{why}");
                self.ctx.metrics.client_error(why.to_owned());
            }
            (None, Some(_)) => info!(sink = %sink, "the producer and librdkafka answer again"),
            _ => {}
        }
        *stalled = now;
    }

    fn channel_error(&self, error: ChannelError) -> SinkError {
        SinkError::Channel {
            sink: self.ctx.name.clone(),
            error,
        }
    }

    fn setup_error(&self, message: String) -> SinkError {
        SinkError::Setup {
            sink: self.ctx.name.clone(),
            message,
        }
    }

    /// Builds a producer (librdkafka starts threads and resolves names: off the runtime)
    /// and its thread.
    async fn start(&self) -> Result<Worker, SinkError> {
        let config = self.cfg.client_config(&self.ctx.name);
        let slots = self.cfg.batches_in_flight;
        let name = self.ctx.name.clone();
        let metrics = self.ctx.metrics.clone();
        let producer =
            tokio::task::spawn_blocking(move || KafkaProducer::new(&config, slots, &name, metrics))
                .await
                .map_err(|e| self.setup_error(e.to_string()))?
                .map_err(|e| self.setup_error(format!("cannot create the kafka producer: {e}")))?;
        let writer = RecordWriter::new(producer, &self.cfg, &self.ctx.name);
        Worker::spawn(writer, self.ctx.metrics.clone(), &self.ctx.name)
            .map_err(|e| self.setup_error(format!("cannot start the producer thread: {e}")))
    }

    async fn commit(&self, lease: Lease) -> Result<(), SinkError> {
        let (events, bytes) = (lease.events.len() as u64, lease.bytes as u64);
        self.ctx
            .channel
            .commit(lease)
            .await
            .map_err(|error| self.channel_error(error))?;
        self.ctx.metrics.delivered(events, bytes);
        Ok(())
    }

    /// Returns leases to the channel, newest first; they were taken in the given order.
    fn roll_back(&self, leases: Vec<Lease>) -> Result<(), SinkError> {
        for lease in leases.into_iter().rev() {
            self.ctx
                .channel
                .rollback(lease)
                .map_err(|error| self.channel_error(error))?;
            SinkMetrics::add(&self.ctx.metrics.rollbacks, 1);
        }
        Ok(())
    }

    /// Applies the reports of a closed producer: commits what was delivered before the first
    /// failure, rolls back the rest. Returns how many leases were rolled back.
    async fn settle(&self, reports: Vec<Report>) -> Result<usize, SinkError> {
        let mut undelivered = Vec::new();
        for report in reports {
            match report {
                Report::Delivered(lease) if undelivered.is_empty() => self.commit(lease).await?,
                Report::Delivered(lease) | Report::Failed { lease, .. } => undelivered.push(lease),
                Report::Closed(rest) => undelivered.extend(rest),
            }
        }
        let n = undelivered.len();
        self.roll_back(undelivered)?;
        Ok(n)
    }

    /// Handles the failure of the oldest batch: closes the producer, rolls back, then stops
    /// (when retrying cannot help) or backs off and starts a new producer. `None` if the
    /// agent aborted meanwhile.
    async fn recover(
        &self,
        worker: Worker,
        failed: Lease,
        failure: Failure,
        backoff: &mut Duration,
    ) -> Result<Option<Worker>, SinkError> {
        let event = failed.events.get(failure.index);
        let (file, offset) =
            event.map_or((String::new(), 0), |e| (e.origin.path.clone(), e.offset));
        let line_bytes = event.map_or(0, |e| e.body.len());
        let (why, fatal) = self.describe(&failure, line_bytes);
        self.ctx.metrics.delivery_failed(why.clone());
        if let FailureKind::Delivery(code) = failure.kind
            && (code as i32 > 0 || code == RDKafkaErrorCode::UnknownTopic)
        {
            // A broker answered (error codes above 0 are the broker's; a missing topic is
            // known from its metadata): the sink is connected, even if its producer does not
            // live long enough to report its statistics.
            self.ctx.metrics.set_connected(true);
        }
        // The producer must be gone before the leases go back: it may still be sending them.
        let mut leases = vec![failed];
        for report in worker.close(true, CLOSE_WAIT).await {
            match report {
                Report::Delivered(lease) | Report::Failed { lease, .. } => leases.push(lease),
                Report::Closed(rest) => leases.extend(rest),
            }
        }
        let batches = leases.len();
        self.roll_back(leases)?;
        if fatal {
            error!(sink = %self.ctx.name, file = %file, offset, batches, error = %why,
                "cannot deliver the line; the sink stops and the line stays in the channel");
            return Err(SinkError::Delivery {
                sink: self.ctx.name.clone(),
                message: format!("{file} at offset {offset}: {why}"),
            });
        }
        warn!(sink = %self.ctx.name, file = %file, offset, batches, error = %why,
            retry_in = ?*backoff,
            "delivery failed; the batches in flight are back in the channel and the producer is rebuilt");
        let mut shutdown = self.ctx.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = shutdown.reached(Phase::Aborting) => return Ok(None),
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        SinkMetrics::add(&self.ctx.metrics.retries, 1);
        self.start().await.map(Some)
    }

    /// Why a record failed, in words that name the real cause, and whether retrying cannot
    /// help (the sink stops then). `line_bytes` is the size of the failed record's line.
    fn describe(&self, failure: &Failure, line_bytes: usize) -> (String, bool) {
        let topic = failure.topic.as_deref().unwrap_or("?");
        let max = self.cfg.max_message_bytes.0;
        match &failure.kind {
            FailureKind::Oversize => (
                format!(
                    "the line ({line_bytes} bytes) exceeds max_message_bytes ({max} bytes) \
                     (oversize: stop)"
                ),
                true,
            ),
            FailureKind::BadTopic(why) => (why.clone(), true),
            FailureKind::Delivery(
                code @ (RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge),
            ) => (
                // librdkafka accepted the record, so the record itself is within
                // message.max.bytes (max_message_bytes); the broker refused the record batch
                // holding it, which librdkafka fills up to that same size.
                format!(
                    "the broker refused the record batch holding this line as too large \
                     ({code}); the line is {line_bytes} bytes, but librdkafka packs records into \
                     batches of up to max_message_bytes ({max} bytes) and topic `{topic}` accepts \
                     less (its max.message.bytes, or the broker's message.max.bytes, is smaller): \
                     set max_message_bytes to at most the topic's max.message.bytes"
                ),
                true,
            ),
            FailureKind::Delivery(
                code @ (RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition),
            ) => (
                format!(
                    "topic `{topic}` does not exist and the broker did not create it ({code}): \
                     create the topic, or let the broker create topics \
                     (auto.create.topics.enable)"
                ),
                false,
            ),
            FailureKind::Delivery(RDKafkaErrorCode::TopicAuthorizationFailed) => (
                format!("not authorized to write to topic `{topic}` (TopicAuthorizationFailed)"),
                false,
            ),
            FailureKind::Delivery(code) => {
                (format!("delivery to topic `{topic}` failed: {code}"), false)
            }
        }
    }

    /// The agent gives up waiting: commit what is already delivered, roll back the rest.
    async fn abort(&self, worker: Worker) -> Result<(), SinkError> {
        let undelivered = self.settle(worker.close(true, CLOSE_WAIT).await).await?;
        if undelivered > 0 {
            warn!(sink = %self.ctx.name, batches = undelivered,
                "kafka sink aborted; undelivered batches are back in the channel");
        } else {
            info!(sink = %self.ctx.name, "kafka sink stopped");
        }
        Ok(())
    }
}
