//! librdkafka's producer as the sink drives it.
//!
//! Records are produced with `rd_kafka_producev` through cached topic handles, straight from
//! the events' bytes: librdkafka copies the key, an event's value is referred to where it is
//! (the lease that holds it outlives the record inside librdkafka, see `worker`), and we
//! allocate nothing per record (rdkafka's `BaseRecord` path would allocate a `CString` for
//! the topic of every record). The thread that produces also serves the delivery reports (see
//! `worker`), so that librdkafka frees each record's memory on the thread that allocated it;
//! each report costs one uncontended atomic decrement on its batch's slot, found from the
//! record's opaque (slot and event index packed in a `usize`).

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::bindings::rd_kafka_vtype_t::*;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use crate::SinkMetrics;

/// Bits of a record's opaque that hold the event's index in its batch; the rest is the slot.
const INDEX_BITS: u32 = 40;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
const _: () = assert!(
    usize::BITS == 64,
    "the delivery opaque packs slot and index in 64 bits"
);

/// How often, at most, librdkafka is given its bootstrap brokers again while it knows none.
const READD_EVERY: Duration = Duration::from_secs(5);

/// Added to a slot's pending count while its batch is being produced, so that reports that
/// arrive meanwhile never bring it to zero; one atomic per batch instead of one per record.
const GUARD: usize = 1 << 62;

/// Why a record of a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// librdkafka or the broker reported this error for the record.
    Delivery(RDKafkaErrorCode),
    /// The line exceeds `max_message_bytes` and the policy is `stop`.
    Oversize,
    /// The topic template rendered a name Kafka does not accept.
    BadTopic(String),
    /// No broker connection was up, nor tried, for this long while records waited: the
    /// producer is given up and rebuilt (librdkafka may stop trying, see `worker`).
    Unreachable(Duration),
    /// A transaction (exactly-once delivery) failed: why, in words, and whether retrying
    /// cannot help (the producer was fenced by another with its `transactional.id`, or the
    /// broker refuses the configuration).
    Transaction {
        /// What happened.
        why: String,
        /// True when the sink must stop.
        fatal: bool,
    },
}

/// Why a transactional call of the producer failed, and what may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnError {
    /// librdkafka's or the broker's error code.
    pub code: RDKafkaErrorCode,
    /// librdkafka's description.
    pub message: String,
    /// The same call may be made again (a timeout, a coordinator not available yet).
    pub retriable: bool,
    /// The transaction must be aborted before anything else.
    pub abortable: bool,
    /// The producer can do nothing more (fenced, or refused by the broker).
    pub fatal: bool,
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn txn_error(e: KafkaError) -> TxnError {
    match e {
        KafkaError::Transaction(e) => TxnError {
            code: e.code(),
            message: e.to_string(),
            retriable: e.is_retriable(),
            abortable: e.txn_requires_abort(),
            fatal: e.is_fatal(),
        },
        other => TxnError {
            code: other.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
            message: other.to_string(),
            // Only flushing before a commit fails otherwise: it timed out.
            retriable: matches!(other, KafkaError::Flush(_)),
            abortable: false,
            fatal: false,
        },
    }
}

/// The opaque of a record that belongs to no batch (the positions of exactly-once delivery):
/// its slot is beyond every real one, so its delivery report changes nothing.
pub const UNTRACKED: usize = usize::MAX;

/// The earliest record of a batch that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The index of its event in the batch.
    pub index: usize,
    /// What went wrong.
    pub kind: FailureKind,
    /// The topic the record was produced to, when librdkafka reported it.
    pub topic: Option<String>,
}

struct Slot {
    pending: AtomicUsize,
    failure: Mutex<Option<Failure>>,
}

/// The delivery state of the batches in flight, updated by the delivery reports.
pub struct Deliveries {
    slots: Box<[Slot]>,
}

impl Deliveries {
    fn new(slots: usize) -> Self {
        Deliveries {
            slots: (0..slots)
                .map(|_| Slot {
                    pending: AtomicUsize::new(0),
                    failure: Mutex::new(None),
                })
                .collect(),
        }
    }

    fn failure_of(&self, slot: usize) -> MutexGuard<'_, Option<Failure>> {
        self.slots[slot]
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many batches can be tracked at once.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Readies `slot` for a new batch, before its first record is produced.
    pub fn arm(&self, slot: usize) {
        *self.failure_of(slot) = None;
        self.slots[slot].pending.store(GUARD, Ordering::Release);
    }

    /// Marks the end of producing `slot`'s batch, of which `produced` records were accepted.
    pub fn disarm(&self, slot: usize, produced: usize) {
        self.slots[slot]
            .pending
            .fetch_sub(GUARD - produced, Ordering::AcqRel);
    }

    /// Records a failure of the record at `index` of `slot`'s batch, produced to `topic`;
    /// the earliest one is kept.
    pub fn fail(&self, slot: usize, index: usize, kind: FailureKind, topic: Option<String>) {
        let mut f = self.failure_of(slot);
        if f.as_ref().is_none_or(|old| index < old.index) {
            *f = Some(Failure { index, kind, topic });
        }
    }

    /// True once every record of `slot`'s batch was reported and the batch was disarmed.
    pub fn is_done(&self, slot: usize) -> bool {
        self.slots[slot].pending.load(Ordering::Acquire) == 0
    }

    /// The earliest failure of `slot`'s batch, if any.
    pub fn failure(&self, slot: usize) -> Option<Failure> {
        self.failure_of(slot).clone()
    }

    /// Applies the delivery report of the record with `opaque`; `error` is its error code and
    /// a function that names its topic (called only for a failure).
    fn delivered(
        &self,
        opaque: usize,
        error: Option<(RDKafkaErrorCode, &dyn Fn() -> Option<String>)>,
    ) {
        let (slot, index) = (opaque >> INDEX_BITS, opaque & INDEX_MASK);
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        if let Some((code, topic)) = error {
            self.fail(slot, index, FailureKind::Delivery(code), topic());
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The record opaque for event `index` of the batch in `slot`.
pub fn opaque(slot: usize, index: usize) -> usize {
    (slot << INDEX_BITS) | (index & INDEX_MASK)
}

/// Logs one of librdkafka's log lines at its syslog `level` (0 emergency to 7 debug).
fn log_line(level: i32, facility: &str, message: &str) {
    match level {
        ..=3 => error!(facility, "librdkafka: {message}"),
        4 => warn!(facility, "librdkafka: {message}"),
        5 | 6 => info!(facility, "librdkafka: {message}"),
        _ => debug!(facility, "librdkafka: {message}"),
    }
}

/// Receives librdkafka's callbacks: delivery reports, logs and client errors. Its log lines
/// are said in the sink's span, whatever thread librdkafka calls from.
/// Why connections to the brokers fail that no retry will mend: the configuration (or the
/// broker's) must change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectFailure {
    /// SASL: the broker rejected the user name or the password.
    Authentication,
    /// TLS: the broker's certificate is not signed by a CA the sink trusts, or does not name
    /// the host.
    BrokerCertificate,
    /// TLS: the broker refused the sink's client certificate, or wants one and got none.
    ClientCertificate,
    /// TLS: another handshake failure (protocol versions, ciphers, a plain listener).
    Handshake,
}

impl ConnectFailure {
    /// The failure a client error stands for, if it is one of these.
    fn of(code: RDKafkaErrorCode, reason: &str) -> Option<Self> {
        let has = |s: &str| reason.contains(s);
        if code == RDKafkaErrorCode::Authentication || has("SASL authentication error") {
            Some(ConnectFailure::Authentication)
        } else if has("certificate verify failed") {
            Some(ConnectFailure::BrokerCertificate)
        } else if has("alert bad certificate")
            || has("alert certificate required")
            || has("alert unknown ca")
            || has("alert certificate unknown")
        {
            Some(ConnectFailure::ClientCertificate)
        } else if code == RDKafkaErrorCode::SSL || has("SSL handshake failed") {
            Some(ConnectFailure::Handshake)
        } else {
            None
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// What to check, for whoever reads the log.
    fn describe(self) -> &'static str {
        match self {
            ConnectFailure::Authentication => {
                "SASL authentication failed: the broker rejected the user name or password \
                 (sasl.username, sasl.password, sasl.mechanism)"
            }
            ConnectFailure::BrokerCertificate => {
                "TLS certificate verify failed: the broker's certificate is not signed by a CA \
                 in tls.ca, or does not name the host in brokers (tls.verify_hostname)"
            }
            ConnectFailure::ClientCertificate => {
                "TLS: the broker refused the client certificate, or requires one (tls.cert and \
                 tls.key, signed by a CA the broker trusts)"
            }
            ConnectFailure::Handshake => {
                "TLS handshake failed: is the listener in brokers a TLS one, and do its TLS \
                 versions and ciphers match?"
            }
        }
    }
}

struct Context {
    span: tracing::Span,
    deliveries: Arc<Deliveries>,
    /// When statistics were last emitted (shared with the producer).
    statistics_ms: Arc<AtomicU64>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.span.in_scope(|| log_line(level as i32, fac, message));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let _in = self.span.enter();
        warn!(error = %error, reason, "kafka client error");
    }

    /// Statistics served by rdkafka's own polling (while it flushes before a transaction
    /// commits) still show that librdkafka's main thread is alive.
    fn stats_raw(&self, _statistics: &[u8]) {
        self.statistics_ms
            .store(crate::metrics::now_ms(), Ordering::Relaxed);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let code = match result {
            Ok(_) => None,
            Err((KafkaError::MessageProduction(code), _)) => Some(*code),
            Err(_) => Some(RDKafkaErrorCode::Fail),
        };
        let topic = || match result {
            Ok(m) | Err((_, m)) => Some(m.topic().to_owned()),
        };
        self.deliveries.delivered(
            opaque,
            code.map(|c| (c, &topic as &dyn Fn() -> Option<String>)),
        );
    }
}

/// What the sink reads of librdkafka's statistics (`statistics.interval.ms`).
#[derive(Debug, Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: HashMap<String, BrokerStatistics>,
}

#[derive(Debug, Deserialize)]
struct BrokerStatistics {
    /// `configured`, `learned`, `internal` or `logical`.
    #[serde(default)]
    source: String,
    /// `INIT`, `DOWN`, `CONNECT`, `AUTH`, `APIVERSION_QUERY`, `AUTH_HANDSHAKE`, `UP`, `UPDATE`.
    #[serde(default)]
    state: String,
    /// Connection attempts so far, failed ones included.
    #[serde(default)]
    connects: u64,
}

impl Statistics {
    /// True when librdkafka should be given its bootstrap brokers again: no broker
    /// connection is up and none of the brokers it lists is a configured (bootstrap) one.
    /// After a metadata answer that listed no broker, librdkafka forgets the brokers it
    /// learned (issue #5301); the one it is left with, still decommissioning, never
    /// reconnects, and no bootstrap broker is left to fall back on. In any outage, giving it
    /// the bootstrap brokers is what its own re-bootstrap would do; once one is listed, this
    /// is false until a later outage.
    fn needs_bootstrap(&self) -> bool {
        !self.brokers.is_empty()
            && !self.connected()
            && !self.brokers.values().any(|b| b.source == "configured")
    }

    /// Connection attempts so far to real brokers, summed.
    fn connects(&self) -> u64 {
        self.brokers
            .values()
            .filter(|b| !matches!(b.source.as_str(), "internal" | "logical"))
            .map(|b| b.connects)
            .sum()
    }

    /// True when a connection to a real broker (not librdkafka's internal ones) is up.
    fn connected(&self) -> bool {
        self.brokers.values().any(|b| {
            !matches!(b.source.as_str(), "internal" | "logical")
                && matches!(b.state.as_str(), "UP" | "UPDATE")
        })
    }
}

/// A C string from librdkafka, lossily as UTF-8; empty for a null pointer.
///
/// # Safety
/// `s` is null or a valid NUL-terminated string.
unsafe fn lossy(s: *const std::ffi::c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(s) }
        .to_string_lossy()
        .into_owned()
}

/// Whether Kafka accepts `name` as a topic name: 1 to 249 letters, digits, `.`, `_` and `-`,
/// but not `.` or `..`.
pub fn is_topic_name(name: &[u8]) -> bool {
    let legal = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    !name.is_empty() && name.len() <= 249 && name != b"." && name != b".." && name.iter().all(legal)
}

/// A topic handle of one producer. Using it with another producer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRef {
    rkt: NonNull<rdsys::rd_kafka_topic_t>,
    producer: u64,
}

// SAFETY: librdkafka topic handles may be used from any thread, also concurrently.
unsafe impl Send for TopicRef {}
// SAFETY: as above; a `TopicRef` is only a pointer and is never written through.
unsafe impl Sync for TopicRef {}

struct Topic(NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka topic handles may be used and destroyed from any thread.
unsafe impl Send for Topic {}
// SAFETY: shared access only reads the pointer; librdkafka handles are thread-safe.
unsafe impl Sync for Topic {}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is destroyed once.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// A handle on the producer's main queue, where delivery reports and client errors arrive.
struct MainQueue(NonNull<rdsys::rd_kafka_queue_t>);

// SAFETY: librdkafka queue handles may be used and destroyed from any thread.
unsafe impl Send for MainQueue {}
// SAFETY: polling a queue handle from several threads is allowed by librdkafka.
unsafe impl Sync for MainQueue {}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_queue_get_main and is destroyed once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Record headers under construction, owned by librdkafka once the record is accepted.
pub struct Headers(NonNull<rdsys::rd_kafka_headers_t>);

impl Headers {
    /// Adds a header; librdkafka copies name and value.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        // SAFETY: valid headers list; the slices are valid for their lengths and copied.
        unsafe {
            rdsys::rd_kafka_header_add(
                self.0.as_ptr(),
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            );
        }
    }
}

/// A record to produce.
pub struct Record<'a> {
    /// Its topic.
    pub topic: TopicRef,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its partition, or `RD_KAFKA_PARTITION_UA` (-1) for the partitioner's choice.
    pub partition: i32,
    /// Its value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Its timestamp in milliseconds since the epoch (0: the time of producing).
    pub timestamp_ms: i64,
    /// The delivery opaque (see [`opaque`]).
    pub opaque: usize,
}

static PRODUCER_IDS: AtomicU64 = AtomicU64::new(1);

/// An idempotent librdkafka producer, its topic handles and its delivery bookkeeping.
pub struct KafkaProducer {
    /// Declared before `inner` so that the handles are destroyed before the client.
    topics: HashMap<Box<[u8]>, Topic>,
    queue: MainQueue,
    inner: BaseProducer<Context>,
    deliveries: Arc<Deliveries>,
    /// The sink's counters: client errors and the connection state are recorded here.
    metrics: Arc<SinkMetrics>,
    /// When librdkafka's statistics were last served, in milliseconds since the Unix epoch
    /// (0: never).
    statistics_ms: Arc<AtomicU64>,
    /// `bootstrap.servers`, to give librdkafka again when it has forgotten every broker.
    bootstrap: Option<CString>,
    /// When the bootstrap brokers were last given again (milliseconds since the epoch).
    readded_ms: AtomicU64,
    /// The connection attempts the statistics last counted.
    connects: AtomicU64,
    /// When the statistics last showed a connection up or a new attempt to make one
    /// (milliseconds since the epoch; 0: never).
    tried_ms: AtomicU64,
    /// The causes of [`ConnectFailure`] already logged since a connection was last up (bits
    /// of [`ConnectFailure::bit`]).
    told: AtomicU8,
    id: u64,
}

impl KafkaProducer {
    /// A producer from `config` with delivery bookkeeping for `slots` batches in flight; it
    /// records client errors and its connection state in `metrics`, and logs in the current
    /// span (the sink's). Starts librdkafka's
    /// threads; call from a blocking context. Its delivery reports, errors and statistics
    /// are served only by [`KafkaProducer::poll`].
    pub fn new(
        config: &ClientConfig,
        slots: usize,
        metrics: Arc<SinkMetrics>,
    ) -> KafkaResult<Self> {
        let deliveries = Arc::new(Deliveries::new(slots));
        let statistics_ms = Arc::new(AtomicU64::new(0));
        let context = Context {
            span: tracing::Span::current(),
            deliveries: deliveries.clone(),
            statistics_ms: statistics_ms.clone(),
        };
        let inner: BaseProducer<Context> = config.create_with_context(context)?;
        // SAFETY: a live client; the returned handle is a new reference, destroyed on drop.
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(inner.client().native_ptr()) };
        let queue = NonNull::new(queue)
            .ok_or_else(|| KafkaError::ClientCreation("librdkafka has no main queue".to_owned()))?;
        Ok(KafkaProducer {
            topics: HashMap::new(),
            queue: MainQueue(queue),
            inner,
            deliveries,
            metrics,
            statistics_ms,
            bootstrap: config
                .get("bootstrap.servers")
                .and_then(|b| CString::new(b).ok()),
            readded_ms: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            tried_ms: AtomicU64::new(0),
            told: AtomicU8::new(0),
            id: PRODUCER_IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// When librdkafka's statistics were last served, in milliseconds since the Unix epoch
    /// (0: never, or statistics are turned off). librdkafka's main thread emits them every
    /// `statistics.interval.ms`, outage or not: a long silence means it is stuck.
    pub fn last_statistics_ms(&self) -> u64 {
        self.statistics_ms.load(Ordering::Relaxed)
    }

    /// When librdkafka's statistics last showed a broker connection up or a new attempt to
    /// make one, in milliseconds since the Unix epoch (0: never). During an outage librdkafka
    /// keeps trying (every `reconnect.backoff.max.ms` at most); no attempt for long while no
    /// connection is up means it has stopped trying.
    pub fn last_try_ms(&self) -> u64 {
        self.tried_ms.load(Ordering::Relaxed)
    }

    /// The delivery bookkeeping.
    pub fn deliveries(&self) -> &Arc<Deliveries> {
        &self.deliveries
    }

    /// The handle of topic `name`, created on first use. Refuses names Kafka refuses.
    pub fn topic(&mut self, name: &[u8]) -> Result<TopicRef, String> {
        if let Some(t) = self.topics.get(name) {
            return Ok(TopicRef {
                rkt: t.0,
                producer: self.id,
            });
        }
        if !is_topic_name(name) {
            return Err(format!(
                "`{}` is not a valid topic name (1 to 249 letters, digits, `.`, `_`, `-`)",
                String::from_utf8_lossy(name)
            ));
        }
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        let native = self.inner.client().native_ptr();
        // SAFETY: a live client and a NUL-terminated name; a null conf means the defaults.
        let rkt = unsafe { rdsys::rd_kafka_topic_new(native, c_name.as_ptr(), ptr::null_mut()) };
        let rkt = NonNull::new(rkt).ok_or_else(|| {
            // SAFETY: reads librdkafka's thread-local last error.
            let code: RDKafkaErrorCode = unsafe { rdsys::rd_kafka_last_error() }.into();
            format!(
                "cannot open topic `{}`: {code}",
                String::from_utf8_lossy(name)
            )
        })?;
        self.topics.insert(name.into(), Topic(rkt));
        Ok(TopicRef {
            rkt,
            producer: self.id,
        })
    }

    /// Produces a record without waiting, its value copied; `headers` adds its headers (when
    /// `header_count` is not 0). Fails with `QueueFull` when librdkafka's queue is full, and
    /// with `MessageSizeTooLarge` when the record exceeds `message.max.bytes`.
    pub fn send(
        &self,
        record: &Record<'_>,
        header_count: usize,
        headers: impl FnOnce(&mut Headers),
    ) -> Result<(), RDKafkaErrorCode> {
        // SAFETY: the value is copied.
        unsafe { self.produce(record, rdsys::RD_KAFKA_MSG_F_COPY, header_count, headers) }
    }

    /// As [`KafkaProducer::send`], but librdkafka refers to the value where it is instead of
    /// copying it: no copy, and no memory held twice while the record is in flight.
    ///
    /// # Safety
    /// The value's bytes must stay valid and unchanged until the record's delivery report
    /// has been served, or, if that never comes, until this producer is dropped.
    pub unsafe fn send_in_place(
        &self,
        record: &Record<'_>,
        header_count: usize,
        headers: impl FnOnce(&mut Headers),
    ) -> Result<(), RDKafkaErrorCode> {
        // SAFETY: the caller keeps the value alive as long as librdkafka may read it.
        unsafe { self.produce(record, 0, header_count, headers) }
    }

    /// Produces `record` with `msgflags` (`RD_KAFKA_MSG_F_COPY` or none).
    ///
    /// # Safety
    /// Without `RD_KAFKA_MSG_F_COPY`, as [`KafkaProducer::send_in_place`].
    unsafe fn produce(
        &self,
        record: &Record<'_>,
        msgflags: i32,
        header_count: usize,
        headers: impl FnOnce(&mut Headers),
    ) -> Result<(), RDKafkaErrorCode> {
        if record.topic.producer != self.id {
            return Err(RDKafkaErrorCode::InvalidArgument);
        }
        let hdrs = if header_count > 0 {
            // SAFETY: allocates an empty headers list.
            let h = unsafe { rdsys::rd_kafka_headers_new(header_count) };
            let mut h = Headers(NonNull::new(h).ok_or(RDKafkaErrorCode::Fail)?);
            headers(&mut h);
            h.0.as_ptr()
        } else {
            ptr::null_mut()
        };
        // SAFETY: the client and topic handle are alive (the topic belongs to this producer);
        // key and value are valid for their lengths; the key is always copied, the value is
        // copied with F_COPY or kept alive by the caller; the argument list follows
        // librdkafka's vtype conventions and ends with VTYPE_END. On success librdkafka owns
        // the headers; on failure they are still ours.
        let err = unsafe {
            rdsys::rd_kafka_producev(
                self.inner.client().native_ptr(),
                RD_KAFKA_VTYPE_RKT,
                record.topic.rkt.as_ptr(),
                RD_KAFKA_VTYPE_MSGFLAGS,
                msgflags,
                RD_KAFKA_VTYPE_VALUE,
                record
                    .value
                    .map_or(ptr::null_mut(), |v| v.as_ptr() as *mut c_void),
                record.value.map_or(0, <[u8]>::len),
                RD_KAFKA_VTYPE_KEY,
                record
                    .key
                    .map_or(ptr::null(), |k| k.as_ptr() as *const c_void),
                record.key.map_or(0, <[u8]>::len),
                RD_KAFKA_VTYPE_PARTITION,
                record.partition,
                RD_KAFKA_VTYPE_OPAQUE,
                record.opaque as *mut c_void,
                RD_KAFKA_VTYPE_TIMESTAMP,
                record.timestamp_ms,
                RD_KAFKA_VTYPE_HEADERS,
                hdrs,
                RD_KAFKA_VTYPE_END,
            )
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        if !hdrs.is_null() {
            // SAFETY: the record was refused, so the headers are still ours to free.
            unsafe { rdsys::rd_kafka_headers_destroy(hdrs) };
        }
        Err(err.into())
    }

    /// Waits up to `wait` for delivery reports or client errors, then serves every one that
    /// is ready. Blocks.
    pub fn poll(&self, wait: Duration) {
        let mut timeout_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: a live queue handle; the event returned is ours to destroy.
            let ev = unsafe { rdsys::rd_kafka_queue_poll(self.queue.0.as_ptr(), timeout_ms) };
            let Some(ev) = NonNull::new(ev) else { return };
            self.serve(ev.as_ptr());
            // SAFETY: served and no longer used.
            unsafe { rdsys::rd_kafka_event_destroy(ev.as_ptr()) };
            timeout_ms = 0;
        }
    }

    /// Applies one event: delivery reports to the slots, client errors to the log and the
    /// metrics, statistics to the connection state, librdkafka's own log lines to the log
    /// (rdkafka routes them to this queue: unserved, they would be lost).
    fn serve(&self, ev: *mut rdsys::rd_kafka_event_t) {
        // SAFETY: `ev` is a live event from our queue; its messages and strings live as long as
        // it does.
        unsafe {
            match rdsys::rd_kafka_event_type(ev) {
                rdsys::RD_KAFKA_EVENT_DR => loop {
                    let msg = rdsys::rd_kafka_event_message_next(ev);
                    if msg.is_null() {
                        break;
                    }
                    let err = (*msg).err;
                    let topic = || {
                        let rkt = (*msg).rkt;
                        (!rkt.is_null()).then(|| lossy(rdsys::rd_kafka_topic_name(rkt)))
                    };
                    let error = (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                        .then(|| {
                            (
                                RDKafkaErrorCode::from(err),
                                &topic as &dyn Fn() -> Option<String>,
                            )
                        });
                    self.deliveries.delivered((*msg)._private as usize, error);
                },
                rdsys::RD_KAFKA_EVENT_ERROR => {
                    let code = RDKafkaErrorCode::from(rdsys::rd_kafka_event_error(ev));
                    let reason = lossy(rdsys::rd_kafka_event_error_string(ev));
                    let fatal = rdsys::rd_kafka_event_error_is_fatal(ev) != 0;
                    self.client_error(code, &reason, fatal);
                }
                rdsys::RD_KAFKA_EVENT_LOG => {
                    let (mut fac, mut text, mut level) = (ptr::null(), ptr::null(), 0);
                    if rdsys::rd_kafka_event_log(ev, &mut fac, &mut text, &mut level) == 0 {
                        log_line(level, lossy(fac).trim(), lossy(text).trim());
                    }
                }
                rdsys::RD_KAFKA_EVENT_STATS => {
                    let json = rdsys::rd_kafka_event_stats(ev);
                    if !json.is_null() {
                        self.statistics(std::ffi::CStr::from_ptr(json).to_bytes());
                    }
                }
                _ => {}
            }
        }
    }

    /// Logs and counts an error of the client (not of one record).
    fn client_error(&self, code: RDKafkaErrorCode, reason: &str, fatal: bool) {
        if fatal {
            error!(error = %code, reason, "fatal kafka producer error");
        } else {
            warn!(error = %code, reason, "kafka client error");
        }
        if code == RDKafkaErrorCode::AllBrokersDown {
            self.metrics.set_connected(false);
        }
        match ConnectFailure::of(code, reason) {
            Some(cause) => {
                // librdkafka repeats these every 30 s for as long as they last: the operator
                // reads the cause once, in words, until a connection is up again.
                if self.told.fetch_or(cause.bit(), Ordering::Relaxed) & cause.bit() == 0 {
                    error!(
                        cause = cause.describe(),
                        reason, "the sink cannot connect to Kafka"
                    );
                }
                self.metrics
                    .client_error(format!("{}: {reason}", cause.describe()));
            }
            None => self.metrics.client_error(format!("{code}: {reason}")),
        }
    }

    /// Reads the connection state from librdkafka's statistics: connected when a broker
    /// connection is up.
    fn statistics(&self, json: &[u8]) {
        self.statistics_ms
            .store(crate::metrics::now_ms(), Ordering::Relaxed);
        match serde_json::from_slice::<Statistics>(json) {
            Ok(stats) => {
                let connects = stats.connects();
                let before = self.connects.swap(connects, Ordering::Relaxed);
                if stats.connected() || connects != before {
                    self.tried_ms
                        .store(crate::metrics::now_ms(), Ordering::Relaxed);
                }
                self.metrics.set_connected(stats.connected());
                if stats.connected() {
                    self.told.store(0, Ordering::Relaxed);
                }
                if stats.needs_bootstrap() {
                    self.bootstrap_again();
                }
            }
            Err(e) => debug!(error = %e, "unreadable librdkafka statistics"),
        }
    }

    /// Gives librdkafka its bootstrap brokers again, at most every [`READD_EVERY`].
    ///
    /// librdkafka (2.10 on) forgets the brokers a metadata answer leaves out. The only broker
    /// of a cluster, while it shuts down, answers metadata without itself; librdkafka then
    /// has no usable broker, sends nothing, reports no error, and does not bootstrap again
    /// (its timer starts with a metadata request it can no longer send): delivery stalled
    /// for good after the broker was back (librdkafka issue #5301).
    fn bootstrap_again(&self) {
        let Some(list) = &self.bootstrap else { return };
        let now = crate::metrics::now_ms();
        let last = self.readded_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < READD_EVERY.as_millis() as u64 {
            return;
        }
        self.readded_ms.store(now, Ordering::Relaxed);
        // SAFETY: a live client and a NUL-terminated list, which librdkafka copies.
        let added =
            unsafe { rdsys::rd_kafka_brokers_add(self.inner.client().native_ptr(), list.as_ptr()) };
        warn!(brokers = %list.to_string_lossy(), added,
            "no broker connection is up and librdkafka has no bootstrap broker left (a metadata \
             answer may have listed none: a broker shutting down); giving it the bootstrap \
             brokers again");
    }

    /// Readies the transactional producer: fences any earlier producer with its
    /// `transactional.id` and aborts the transaction it left open. Blocks up to `wait`.
    pub fn init_transactions(&self, wait: Duration) -> Result<(), TxnError> {
        self.inner.init_transactions(wait).map_err(txn_error)
    }

    /// Opens a transaction; the records produced next belong to it.
    pub fn begin_transaction(&self) -> Result<(), TxnError> {
        self.inner.begin_transaction().map_err(txn_error)
    }

    /// Commits the open transaction once every record of it is delivered. Blocks up to `wait`.
    pub fn commit_transaction(&self, wait: Duration) -> Result<(), TxnError> {
        self.inner.commit_transaction(wait).map_err(txn_error)
    }

    /// Aborts the open transaction: its records are never seen by `read_committed`
    /// consumers. Blocks up to `wait`.
    pub fn abort_transaction(&self, wait: Duration) -> Result<(), TxnError> {
        self.inner.abort_transaction(wait).map_err(txn_error)
    }

    /// The error that left the producer unusable, if one did (fenced, say).
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.inner.client().fatal_error()
    }

    /// Fails everything queued or in flight; their reports follow with `Purge*` errors.
    pub fn purge(&self) {
        self.inner.purge(PurgeConfig::default().queue().inflight());
    }

    /// Waits up to `wait` for every record to be reported (serving the reports), then
    /// destroys the producer. Blocks.
    pub fn close(self, wait: Duration) {
        self.drain(wait);
    }

    /// Waits up to `wait` for every record to be reported, serving the reports. Blocks.
    pub fn drain(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        // SAFETY: a live client.
        let left = || unsafe { rdsys::rd_kafka_outq_len(self.inner.client().native_ptr()) };
        while left() > 0 {
            let now = Instant::now();
            if now >= deadline {
                warn!(
                    records = left(),
                    "kafka producer closed with records still unreported"
                );
                break;
            }
            self.poll((deadline - now).min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_that_no_retry_mends_are_told_apart() {
        use ConnectFailure::*;
        let cases = [
            (
                RDKafkaErrorCode::Authentication,
                "sasl_ssl://h:1/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials",
                Some(Authentication),
            ),
            (
                RDKafkaErrorCode::SSL,
                "ssl://h:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified",
                Some(BrokerCertificate),
            ),
            (
                RDKafkaErrorCode::BrokerTransportFailure,
                "ssl://h:1/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42",
                Some(ClientCertificate),
            ),
            (
                RDKafkaErrorCode::SSL,
                "ssl://h:1/bootstrap: SSL handshake failed: wrong version number",
                Some(Handshake),
            ),
            (
                RDKafkaErrorCode::BrokerTransportFailure,
                "h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused",
                None,
            ),
            (
                RDKafkaErrorCode::AllBrokersDown,
                "1/1 brokers are down",
                None,
            ),
        ];
        for (code, reason, want) in cases {
            assert_eq!(ConnectFailure::of(code, reason), want, "{reason}");
        }
        let bits: Vec<u8> = [
            Authentication,
            BrokerCertificate,
            ClientCertificate,
            Handshake,
        ]
        .map(ConnectFailure::bit)
        .into();
        assert_eq!(bits, [1, 2, 4, 8]);
    }

    fn producer() -> KafkaProducer {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        KafkaProducer::new(&config, 1, Arc::new(SinkMetrics::default())).unwrap()
    }

    const INTERNAL_ONLY: &[u8] =
        br#"{"brokers":{":0/internal":{"source":"internal","state":"UP"}}}"#;

    #[test]
    fn bootstrap_brokers_are_given_again_when_librdkafka_knows_none() {
        let p = producer();
        p.statistics(br#"{"brokers":{}}"#);
        assert_eq!(
            p.readded_ms.load(Ordering::Relaxed),
            0,
            "no broker list, no conclusion"
        );
        p.statistics(
            br#"{"brokers":{"127.0.0.1:1/bootstrap":{"source":"configured","state":"CONNECT"},
                ":0/internal":{"source":"internal","state":"UP"}}}"#,
        );
        assert_eq!(p.readded_ms.load(Ordering::Relaxed), 0, "it knows a broker");
        p.statistics(
            br#"{"brokers":{"127.0.0.1:1/1":{"source":"learned","state":"UP"},
                ":0/internal":{"source":"internal","state":"UP"}}}"#,
        );
        assert_eq!(p.readded_ms.load(Ordering::Relaxed), 0, "connected");
        p.statistics(
            br#"{"brokers":{"127.0.0.1:1/1":{"source":"learned","state":"DOWN"},
                ":0/internal":{"source":"internal","state":"UP"}}}"#,
        );
        let first = p.readded_ms.load(Ordering::Relaxed);
        assert!(
            first > 0,
            "not connected, no bootstrap broker left: given again"
        );
        p.statistics(INTERNAL_ONLY);
        assert_eq!(
            p.readded_ms.load(Ordering::Relaxed),
            first,
            "not again within READD_EVERY"
        );
        assert!(p.last_statistics_ms() > 0);
    }

    #[test]
    fn a_try_is_a_connection_up_or_a_new_connection_attempt() {
        let p = producer();
        let down = |connects: u64| {
            format!(
                r#"{{"brokers":{{"b:1/1":{{"source":"learned","state":"DOWN","connects":{connects}}},
                ":0/internal":{{"source":"internal","state":"UP","connects":9}}}}}}"#
            )
        };
        p.statistics(down(0).as_bytes());
        assert_eq!(p.last_try_ms(), 0, "no attempt, nothing up");
        p.statistics(down(1).as_bytes());
        let first = p.last_try_ms();
        assert!(first > 0, "a new attempt");
        p.tried_ms.store(1, Ordering::Relaxed);
        p.statistics(down(1).as_bytes());
        assert_eq!(p.last_try_ms(), 1, "no new attempt");
        p.statistics(INTERNAL_ONLY);
        assert!(p.last_try_ms() > 1, "the broker list changed");
        p.tried_ms.store(1, Ordering::Relaxed);
        p.statistics(INTERNAL_ONLY);
        assert_eq!(
            p.last_try_ms(),
            1,
            "only librdkafka's internal broker is up"
        );
        p.statistics(br#"{"brokers":{"b:1/1":{"source":"learned","state":"UP","connects":0}}}"#);
        assert!(p.last_try_ms() > 1, "a connection is up");
    }
}
