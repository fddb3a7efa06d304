//! The transactions of exactly-once delivery, as the producer thread drives them.
//!
//! Before its first lease the thread readies the producer (`init_transactions`, which fences
//! an earlier producer with the same `transactional.id` and aborts what it left open) and
//! reads the sink's committed positions back (see `recovery`). It then opens a transaction
//! when it starts producing a lease, and keeps the leases whose records were all acknowledged
//! until the transaction commits: after `transaction_interval`, or as soon as it holds as many
//! leases as the sink may have in flight. Committing stops taking new leases, waits for what
//! is in flight, writes each file's position (see `positions`) and commits; only then are the
//! leases reported delivered, oldest first. librdkafka runs one transaction at a time per
//! producer, so batches wait while one commits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::error::RDKafkaErrorCode;
use sluice_channels::Lease;
use tracing::{error, info, warn};

use super::positions::Streams;
use super::producer::{FailureKind, KafkaProducer, Record, TxnError, UNTRACKED};
use super::records::RecordWriter;
use super::recovery::{PARTITION, Recovery};
use crate::SinkMetrics;

/// How long one attempt at readying the producer, or at reading the positions, may take.
const PREPARE_WAIT: Duration = Duration::from_secs(5);
/// The first and the longest pause between attempts at readying the producer.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long aborting a transaction after a failure may wait.
const ABORT_WAIT: Duration = Duration::from_secs(10);

enum State {
    /// Not ready yet; the next attempt is due then.
    Unready {
        retry_at: Instant,
        backoff: Duration,
    },
    /// Ready: the positions were read.
    Ready,
    /// Can never be ready (refused by the broker, say): why.
    Broken(String),
}

/// Where a commit got.
pub enum Committed {
    /// Committed: the leases it carried, oldest first, are delivered.
    Done(VecDeque<Lease>),
    /// Not yet (a timeout the same commit may be retried after).
    Pending,
    /// The transaction is aborted, or the producer unusable: the leases go back.
    Failed(FailureKind),
}

/// The transaction state of one producer.
pub struct Txn {
    id: String,
    interval: Duration,
    /// The most leases one transaction carries.
    capacity: usize,
    /// `transaction_timeout`, to name it when the broker refuses it.
    timeout: Duration,
    tombstone_after: Duration,
    recovery: Recovery,
    state: State,
    /// Leases of the open transaction whose records were all acknowledged, oldest first.
    pub done: VecDeque<Lease>,
    /// When the open transaction began; `None` when none is open.
    opened: Option<Instant>,
    /// The open transaction is being committed: no new lease starts.
    committing: bool,
    /// Its positions were written (a commit that timed out is tried again without them).
    positions_written: bool,
    /// `init_transactions` succeeded.
    initialized: bool,
}

impl Txn {
    /// The transactions of the producer with `transactional.id` `id`, committed every
    /// `interval` or once it carries `capacity` leases, reading its positions through
    /// `recovery`; files idle for `tombstone_after` lose their position.
    pub fn new(
        id: String,
        interval: Duration,
        capacity: usize,
        timeout: Duration,
        tombstone_after: Duration,
        recovery: Recovery,
    ) -> Self {
        Txn {
            id,
            interval,
            capacity,
            timeout,
            tombstone_after,
            recovery,
            state: State::Unready {
                retry_at: Instant::now(),
                backoff: FIRST_BACKOFF,
            },
            done: VecDeque::new(),
            opened: None,
            committing: false,
            positions_written: false,
            initialized: false,
        }
    }

    /// True once the producer is ready for transactions.
    pub fn ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// Why the producer can never be ready, if it cannot.
    pub fn broken(&self) -> Option<&str> {
        match &self.state {
            State::Broken(why) => Some(why),
            _ => None,
        }
    }

    /// How long until the next attempt at readying the producer is due.
    pub fn retry_in(&self) -> Duration {
        match self.state {
            State::Unready { retry_at, .. } => retry_at.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        }
    }

    /// Readies the producer and reads the positions into `writer`, if an attempt is due.
    /// Blocks up to a few seconds. An outage is said (and counted in `metrics`) and tried
    /// again later; a refusal that retrying cannot help leaves the producer broken.
    pub fn prepare(&mut self, writer: &mut RecordWriter, metrics: &SinkMetrics) {
        let State::Unready { retry_at, backoff } = self.state else {
            return;
        };
        if Instant::now() < retry_at {
            return;
        }
        let mut streams = Streams::new(&self.id, self.tombstone_after);
        // librdkafka refuses a second init once one succeeded (only the positions failed).
        let init = if self.initialized {
            Ok(())
        } else {
            writer.producer().init_transactions(PREPARE_WAIT)
        };
        self.initialized |= init.is_ok();
        let result = match init {
            Err(e) if e.code == RDKafkaErrorCode::InvalidTransactionTimeout => Err((
                format!(
                    "the broker refuses transaction_timeout ({}): it exceeds the broker's \
                     transaction.max.timeout.ms (15m by default); lower transaction_timeout ({e})",
                    sluice_channels::units::HumanDuration(self.timeout)
                ),
                true,
            )),
            Err(e) if e.fatal || !(e.retriable || is_outage(&e)) => Err((
                format!(
                    "the broker refuses transactions for transactional.id `{}`: {e}",
                    self.id
                ),
                true,
            )),
            Err(e) => Err((
                format!("cannot ready the transactional producer: {e}"),
                false,
            )),
            Ok(()) => self
                .recovery
                .run(&mut streams, PREPARE_WAIT)
                .map_err(|e| (e.why, e.fatal)),
        };
        match result {
            Ok(()) => {
                info!(transactional_id = %self.id, positions_topic = self.recovery.topic(),
                    "exactly-once delivery ready: positions read");
                writer.set_streams(streams);
                self.state = State::Ready;
            }
            Err((why, true)) => {
                error!(transactional_id = %self.id, error = %why,
                    "exactly-once delivery cannot start; the sink stops");
                metrics.client_error(why.clone());
                self.state = State::Broken(why);
            }
            Err((why, false)) => {
                warn!(transactional_id = %self.id, error = %why, retry_in = ?backoff,
                    "exactly-once delivery is not ready; nothing is delivered until it is");
                metrics.client_error(why);
                self.state = State::Unready {
                    retry_at: Instant::now() + backoff,
                    backoff: (backoff * 2).min(MAX_BACKOFF),
                };
            }
        }
    }

    /// Opens a transaction unless one is open or being committed; false while one is being
    /// committed (no new lease may start then).
    pub fn begin(&mut self, producer: &KafkaProducer) -> Result<bool, FailureKind> {
        if self.committing {
            return Ok(false);
        }
        if self.opened.is_none() {
            producer
                .begin_transaction()
                .map_err(|e| self.failure(producer, &e))?;
            self.opened = Some(Instant::now());
            self.positions_written = false;
        }
        Ok(true)
    }

    /// How long until the open transaction is due for commit by its age (zero when it is,
    /// or none is open).
    pub fn due_in(&self) -> Duration {
        self.opened.map_or(Duration::ZERO, |opened| {
            self.interval.saturating_sub(opened.elapsed())
        })
    }

    /// Notes whether the open transaction is due for commit: `transaction_interval` passed,
    /// or the sink holds `held` leases, as many as a transaction may carry.
    pub fn check_due(&mut self, held: usize) -> bool {
        if let Some(opened) = self.opened
            && (held >= self.capacity || opened.elapsed() >= self.interval)
        {
            self.committing = true;
        }
        self.committing
    }

    /// Commits the open transaction, whose records are all acknowledged: writes the
    /// positions, then commits, waiting up to `wait`.
    pub fn commit(&mut self, writer: &mut RecordWriter, wait: Duration) -> Committed {
        if !self.ready() {
            return Committed::Pending;
        }
        if !self.positions_written {
            if let Err(kind) = self.write_positions(writer) {
                return Committed::Failed(kind);
            }
            self.positions_written = true;
            // Deliver the positions here: rdkafka's commit flushes first, waiting 100 ms
            // between polls while records are pending, which made every commit take 100 ms.
            writer.producer().drain(wait);
        }
        let started = Instant::now();
        match writer.producer().commit_transaction(wait) {
            Ok(()) => {
                tracing::debug!(leases = self.done.len(), took = ?started.elapsed(),
                    "transaction committed");
                self.opened = None;
                self.committing = false;
                Committed::Done(std::mem::take(&mut self.done))
            }
            Err(e) if e.retriable && !e.abortable && !e.fatal => {
                warn!(error = %e, positions_topic = self.recovery.topic(),
                    "the transaction commit is not confirmed yet: records of it are not \
                     acknowledged (the broker unreachable, or a topic of it, the positions topic \
                     included, missing); trying again until transaction_timeout");
                Committed::Pending
            }
            Err(e) => Committed::Failed(self.failure(writer.producer(), &e)),
        }
    }

    /// Writes the position of every file the transaction carried, and tombstones.
    fn write_positions(&mut self, writer: &mut RecordWriter) -> Result<(), FailureKind> {
        let records = writer.take_positions(Instant::now());
        let topic = writer
            .producer_mut()
            .topic(self.recovery.topic().as_bytes())
            .map_err(|why| FailureKind::Transaction { why, fatal: true })?;
        for (key, value) in &records {
            let record = Record {
                topic,
                key: Some(key.as_bytes()),
                partition: PARTITION,
                value: value.as_deref(),
                timestamp_ms: 0,
                opaque: UNTRACKED,
            };
            loop {
                match writer.producer().send(&record, 0, |_| {}) {
                    Ok(()) => break,
                    Err(RDKafkaErrorCode::QueueFull) => {
                        writer.producer().poll(Duration::from_millis(10));
                    }
                    Err(code) => {
                        return Err(self.failure(
                            writer.producer(),
                            &TxnError {
                                code,
                                message: format!(
                                    "cannot write a position to `{}`",
                                    self.recovery.topic()
                                ),
                                retriable: false,
                                abortable: true,
                                fatal: false,
                            },
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Aborts the open transaction, if any, waiting up to `wait`; what it carried is never
    /// seen by `read_committed` consumers. Best effort: a producer that cannot abort is
    /// destroyed, and the broker aborts its transaction when the next one starts with its id
    /// or after `transaction_timeout`.
    pub fn abort(&mut self, producer: &KafkaProducer, wait: Duration) {
        if self.opened.take().is_none() {
            return;
        }
        self.committing = false;
        // Purged records report at once; served here, since librdkafka's abort waits for
        // their reports and only this thread serves them.
        producer.purge();
        producer.drain(wait);
        if let Err(e) = producer.abort_transaction(wait) {
            warn!(error = %e, "cannot abort the open transaction; the broker aborts it later");
        }
    }

    /// Aborts the open transaction after a failure of `kind`, and says what it means: fatal
    /// when the producer learned meanwhile that it is fenced (a fenced sink must stop, not
    /// open a new producer that would fence the one that took over), `kind` otherwise.
    pub fn give_up(&mut self, producer: &KafkaProducer, kind: FailureKind) -> FailureKind {
        self.abort(producer, ABORT_WAIT);
        self.fatal(producer).unwrap_or(kind)
    }

    /// What a failed transactional call means for the sink.
    pub fn failure(&self, producer: &KafkaProducer, e: &TxnError) -> FailureKind {
        if let Some(kind) = self.fatal(producer) {
            return kind;
        }
        FailureKind::Transaction {
            why: format!("the transaction failed and is aborted: {e}"),
            fatal: e.fatal,
        }
    }

    /// The fatal error of the producer, if it has one, in words: fenced by another producer
    /// with its `transactional.id`, most often.
    pub fn fatal(&self, producer: &KafkaProducer) -> Option<FailureKind> {
        let (code, reason) = producer.fatal_error()?;
        let why = match code {
            RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch => format!(
                "fenced: another producer with transactional.id `{}` started (another agent \
                 with the same transactional_id, or a second copy of this agent); this sink \
                 stops and leaves the lines to it ({code}: {reason})",
                self.id
            ),
            _ => format!("the transactional producer failed for good ({code}: {reason})"),
        };
        Some(FailureKind::Transaction { why, fatal: true })
    }
}

/// Errors of `init_transactions` that an outage explains, although librdkafka does not call
/// them retriable.
fn is_outage(e: &TxnError) -> bool {
    matches!(
        e.code,
        RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorLoadInProgress
    )
}
