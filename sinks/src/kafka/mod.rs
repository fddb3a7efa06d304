//! The Kafka sink: delivers a channel's events to Kafka with librdkafka, keeping each file's
//! lines in one partition and in order, and commits each lease only after Kafka acknowledged
//! every record of it.
//!
//! It is a [`Sink`]: the shared driver ([`crate::drive`]) takes the leases, commits and rolls
//! back. Several leases are in flight at once (`batches_in_flight`): each is handed to the
//! producer's own thread (see `worker`) as soon as it is taken, and the thread reports them
//! delivered oldest first as their deliveries complete.
//! The idempotent producer keeps one partition's records in order across retries, and with no
//! delivery deadline a broker outage only makes the sink wait (the channel fills and the
//! sources pause), unless librdkafka stops even trying to connect: no connection up and no
//! attempt for `UNREACHABLE_STATISTICS` statistics intervals fails the batches and rebuilds
//! the producer. A batch with a failed record is rolled back with every newer batch, newest
//! first, the producer is rebuilt, and delivery resumes from the failed batch after a backoff.

mod config;
mod positions;
mod producer;
mod records;
mod recovery;
mod security;
mod template;
mod transaction;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use sluice_channels::{BoxFuture, Lease};
use tracing::{error, info, warn};

pub use config::{
    Acks, Compression, Delivery, EmptyKey, HeaderSpec, KEY_AND_HEADERS_RESERVE, KafkaConfig,
    Oversize, ProducerValue,
};
pub use security::{
    SECRET_SETTINGS, SaslConfig, SaslMechanism, Security, TlsConfig, open_key_file_mode,
};
pub use template::{Template, TemplateError};

use crate::sink::{Capabilities, Close, Failure, Outcome, Returned, Sink, Stopped};
use crate::{SinkError, SinkMetrics};
use producer::{FailureKind, KafkaProducer};
use records::RecordWriter;
use recovery::Recovery;
use transaction::Txn;
use worker::{Report, Stall, Worker};

/// How long a closing producer may take to report what it still holds.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often the sink checks that its producer thread and librdkafka are alive, and how long
/// either may be silent before the sink says so.
const WATCH_EVERY: Duration = Duration::from_secs(5);
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// For how many statistics intervals in a row records may be in flight with no broker
/// connection up and no attempt to make one before the producer is given up and rebuilt.
const UNREACHABLE_STATISTICS: u32 = 60;
/// How many times `batches_in_flight` leases one transaction may carry: a commit waits for
/// every record of it, a pause in the flow that larger transactions make rarer.
const TRANSACTION_LEASES: usize = 4;

/// The Kafka sink: `batches_in_flight` leases at once on the producer's thread, each reported
/// delivered once Kafka acknowledged every record of it. A failure is fatal when a line can
/// never be delivered as configured (an oversized line under `oversize: stop`, a record the
/// broker refuses as too large, a topic name Kafka refuses); otherwise the sink is closed and
/// opened again with a new producer.
pub struct KafkaSink {
    cfg: KafkaConfig,
    name: String,
    metrics: Arc<SinkMetrics>,
    /// The producer's thread, while the sink is open.
    worker: Option<Worker>,
    /// What had stopped answering at the last watch.
    stalled: Option<Stall>,
}

impl KafkaSink {
    /// A sink named `name` delivering into Kafka as `cfg` says, counting in `metrics`; `cfg`
    /// should have passed [`KafkaConfig::validate`].
    pub fn new(cfg: KafkaConfig, name: &str, metrics: Arc<SinkMetrics>) -> Self {
        KafkaSink {
            cfg,
            name: name.to_owned(),
            metrics,
            worker: None,
            stalled: None,
        }
    }

    fn setup_error(&self, message: String) -> SinkError {
        SinkError::Setup {
            sink: self.name.clone(),
            message,
        }
    }

    fn thread_stopped(&self) -> SinkError {
        self.setup_error("the producer thread stopped".into())
    }

    /// Builds a producer (librdkafka starts threads and resolves names: off the runtime)
    /// and its thread.
    async fn start(&self) -> Result<Worker, SinkError> {
        let mut config = self.cfg.client_config(&self.name);
        let txn = (self.cfg.delivery == Delivery::ExactlyOnce).then(|| {
            let id = self
                .cfg
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("sluice-{}", self.name));
            config.set("transactional.id", &id);
            let recovery = Recovery::new(
                &config,
                &self.cfg.positions_topic,
                tokio::runtime::Handle::current(),
            );
            Txn::new(
                id,
                self.cfg.transaction_interval.0,
                self.leases_held(),
                self.cfg.transaction_timeout.0,
                self.cfg.tombstone_after.0,
                recovery,
            )
        });
        let slots = self.cfg.batches_in_flight;
        let metrics = self.metrics.clone();
        // librdkafka's threads log through the producer's context in the sink's span.
        let span = tracing::Span::current();
        let producer = tokio::task::spawn_blocking(move || {
            span.in_scope(|| KafkaProducer::new(&config, slots, metrics))
        })
        .await
        .map_err(|e| self.setup_error(e.to_string()))?
        .map_err(|e| {
            let text = e.to_string();
            match security::explain_creation_error(&text) {
                Some(why) => {
                    self.setup_error(format!("cannot create the kafka producer: {why} ({text})"))
                }
                None => self.setup_error(format!("cannot create the kafka producer: {text}")),
            }
        })?;
        let writer = RecordWriter::new(producer, &self.cfg);
        Worker::spawn(
            writer,
            self.metrics.clone(),
            &self.name,
            self.unreachable_limit(),
            txn,
        )
        .map_err(|e| self.setup_error(format!("cannot start the producer thread: {e}")))
    }

    /// How many leases the sink may hold at once: `batches_in_flight`, and under exactly-once
    /// delivery [`TRANSACTION_LEASES`] times as many, since acknowledged leases wait for their
    /// transaction's commit (at most `batches_in_flight` are being produced at once).
    fn leases_held(&self) -> usize {
        match self.cfg.delivery {
            Delivery::AtLeastOnce => self.cfg.batches_in_flight,
            Delivery::ExactlyOnce => self.cfg.batches_in_flight * TRANSACTION_LEASES,
        }
    }

    /// How long librdkafka's statistics may be silent: they come every
    /// `statistics.interval.ms`, and three missed ones, at least [`STALL_LIMIT`], is a stall.
    fn statistics_limit(&self) -> Duration {
        STALL_LIMIT.max(self.cfg.statistics_interval() * 3)
    }

    /// How long records may be in flight with no broker connection up and no attempt by
    /// librdkafka to make one before the producer is given up: [`UNREACHABLE_STATISTICS`]
    /// statistics intervals (a minute by default; librdkafka retries a connection every
    /// `reconnect.backoff.max.ms`, 10 s, at most); `None` without statistics (nothing tells).
    fn unreachable_limit(&self) -> Option<Duration> {
        let every = self.cfg.statistics_interval();
        (!every.is_zero()).then(|| every * UNREACHABLE_STATISTICS)
    }

    /// The next report of the producer thread, as an outcome.
    async fn report(&mut self) -> Result<Outcome, SinkError> {
        let report = match self.worker.as_mut() {
            Some(worker) => worker.report().await,
            None => None,
        };
        match report {
            Some(Report::Delivered(lease)) => Ok(Outcome::Delivered(lease)),
            Some(Report::Failed { lease, failure }) => {
                let failure = self.failure(&lease, &failure);
                Ok(Outcome::Failed { lease, failure })
            }
            Some(Report::Fatal(why)) => {
                error!(error = %why, "the kafka sink cannot deliver and stops");
                Err(SinkError::Delivery {
                    sink: self.name.clone(),
                    message: why,
                })
            }
            Some(Report::Closed(_)) | None => Err(self.thread_stopped()),
        }
    }

    /// What the failure of the oldest batch means: which line, why, and whether retrying
    /// can help.
    fn failure(&self, failed: &Lease, failure: &producer::Failure) -> Failure {
        let event = failed.events.get(failure.index);
        let (file, offset) =
            event.map_or((String::new(), 0), |e| (e.origin.path.clone(), e.offset));
        let line_bytes = event.map_or(0, |e| e.body.len());
        let (why, fatal) = self.describe(failure, line_bytes);
        if let FailureKind::Delivery(code) = failure.kind
            && (code as i32 > 0 || code == RDKafkaErrorCode::UnknownTopic)
        {
            // A broker answered (error codes above 0 are the broker's; a missing topic is
            // known from its metadata): the sink is connected, even if its producer does not
            // live long enough to report its statistics.
            self.metrics.set_connected(true);
        }
        let fatal = fatal.then(|| SinkError::Delivery {
            sink: self.name.clone(),
            message: format!("{file} at offset {offset}: {why}"),
        });
        Failure {
            why,
            line: Some((file, offset)),
            fatal,
        }
    }

    /// Closes the producer, first failing what it holds if `purge`, and returns what it
    /// still held.
    async fn close_worker(&mut self, purge: bool) -> Returned {
        let mut returned = Returned::default();
        let Some(worker) = self.worker.take() else {
            return returned;
        };
        for report in worker.close(purge, CLOSE_WAIT).await {
            match report {
                Report::Delivered(lease) => returned.delivered.push(lease),
                Report::Failed { lease, .. } => returned.undelivered.push(lease),
                Report::Closed(rest) => returned.undelivered.extend(rest),
                Report::Fatal(_) => {}
            }
        }
        returned
    }

    /// Why a record failed, in words that name the real cause, and whether retrying cannot
    /// help (the sink stops then). `line_bytes` is the size of the failed record's line.
    fn describe(&self, failure: &producer::Failure, line_bytes: usize) -> (String, bool) {
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
            FailureKind::Transaction { why, fatal } => (why.clone(), *fatal),
            FailureKind::Unreachable(d) => (
                format!(
                    "no broker connection, nor any attempt by librdkafka to make one, for {} s \
                     while records waited to be delivered: the producer is given up and a new \
                     one connects from the bootstrap brokers",
                    d.as_secs()
                ),
                false,
            ),
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
}

impl Sink for KafkaSink {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batch_size: self.cfg.batch_size,
            in_flight: self.leases_held(),
            watch_every: Some(WATCH_EVERY),
        }
    }

    fn open(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.worker = Some(self.start().await?);
            Ok(())
        })
    }

    fn deliver(&mut self, lease: Lease) -> Result<(), SinkError> {
        let worker = self.worker.as_ref().ok_or_else(|| self.thread_stopped())?;
        worker.produce(lease);
        Ok(())
    }

    fn outcome(&mut self) -> BoxFuture<'_, Result<Outcome, SinkError>> {
        Box::pin(self.report())
    }

    fn close(&mut self, how: Close) -> BoxFuture<'_, Returned> {
        Box::pin(self.close_worker(how == Close::Purge))
    }

    /// Says so, once per episode, when the producer thread or librdkafka stopped answering
    /// (delivery cannot go on then, and nothing else would tell), and when they answer again.
    fn watch(&mut self) {
        let Some(worker) = &self.worker else {
            return;
        };
        let now = worker.stall(
            crate::metrics::now_ms(),
            STALL_LIMIT,
            self.statistics_limit(),
        );
        match (now, self.stalled) {
            (Some(Stall::Thread(d)), None | Some(Stall::Librdkafka(_))) => {
                let why = "the producer thread is blocked in librdkafka; delivery is stuck";
                error!(stuck_for = ?d, "{why}");
                self.metrics.client_error(why.to_owned());
            }
            (Some(Stall::Librdkafka(d)), None | Some(Stall::Thread(_))) => {
                let why = "librdkafka emits no statistics (due every statistics.interval.ms): \
                    its main thread is stuck; delivery may not resume";
                error!(silent_for = ?d, "{why}");
                self.metrics.client_error(why.to_owned());
            }
            (None, Some(_)) => info!("the producer and librdkafka answer again"),
            _ => {}
        }
        self.stalled = now;
    }

    fn failed(&self, failure: &Failure, batches: usize, retry_in: Option<Duration>) {
        let (file, offset) = failure.line.clone().unwrap_or_default();
        let why = &failure.why;
        match retry_in {
            None => error!(file = %file, offset, batches, error = %why,
                "cannot deliver the line; the sink stops and the line stays in the channel"),
            Some(retry_in) => warn!(file = %file, offset, batches, error = %why,
                retry_in = ?retry_in,
                "delivery failed; the batches in flight are back in the channel and the producer is rebuilt"),
        }
    }

    fn stopped(&self, how: Stopped) {
        match how {
            Stopped::Finished { undelivered } => {
                if undelivered > 0 {
                    warn!(batches = undelivered, "batches left undelivered at the end");
                }
                info!("kafka sink stopped");
            }
            Stopped::Aborted { undelivered, .. } if undelivered > 0 => {
                warn!(
                    batches = undelivered,
                    "kafka sink aborted; undelivered batches are back in the channel"
                );
            }
            Stopped::Aborted { .. } => info!("kafka sink stopped"),
            Stopped::AbortedRecovering => {
                info!("kafka sink aborted while recovering");
            }
        }
    }
}
