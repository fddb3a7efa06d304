//! Turns the events of a lease into Kafka records.
//!
//! Topic and key depend only on an event's origin (the configuration refuses `%{offset}` in
//! them), so they are rendered once for each run of events that share one `Origin`, which is
//! once per file and batch. Per line there is only the offset header, written on the stack.

use std::sync::Arc;

use rdkafka::error::RDKafkaErrorCode;
use sluice_channels::{Event, Lease, Origin};
use tracing::{debug, error, warn};

use super::config::{EmptyKey, KafkaConfig, Oversize};
use super::positions::Streams;
use super::producer::{FailureKind, KafkaProducer, Record, TopicRef, opaque};
use super::template::{Decimal, Field, Template};
use crate::SinkMetrics;

/// librdkafka's "no partition given": the partitioner chooses (`RD_KAFKA_PARTITION_UA`).
const PARTITION_UNASSIGNED: i32 = -1;
/// librdkafka's bound on a record's framing (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`).
const RECORD_OVERHEAD: usize = 36;
/// librdkafka's bound on one header's framing (two varints).
const HEADER_OVERHEAD: usize = 10;

/// Where the production of a lease stands, so that it can resume after a full queue.
#[derive(Debug, Default)]
pub struct Cursor {
    /// The next event to produce.
    pub event: usize,
    /// While an oversized event is being split: the byte offset of its next piece.
    pub piece: Option<usize>,
    /// Records librdkafka accepted so far.
    pub produced: usize,
}

/// How far [`RecordWriter::write`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Every event was produced (or skipped under `oversize: skip`).
    Done,
    /// librdkafka's queue is full: wait a little and call again with the same cursor.
    QueueFull,
    /// A record failed and the failure is recorded in the batch's slot: produce nothing more.
    Failed,
}

/// A producer with the sink's templates and policies, and the routing of the current file.
pub struct RecordWriter {
    producer: KafkaProducer,
    topic: Template,
    key: Template,
    headers: Vec<(Box<[u8]>, Field)>,
    max_message_bytes: usize,
    oversize: Oversize,
    /// The origin `route`, `key_buf` and `topic_buf` were rendered for, and whether they were
    /// rendered for an event with headers of its own (then they hold for that event alone).
    origin: Option<Arc<Origin>>,
    own_headers: bool,
    route: Option<TopicRef>,
    key_buf: Vec<u8>,
    /// Whether a key that renders empty is sent as no key at all.
    null_key: bool,
    /// The headers that override topic, partition and timestamp, and the default partition.
    topic_header: Option<String>,
    partition_header: Option<String>,
    default_partition: i32,
    timestamp_header: Option<String>,
    /// The partition and timestamp `route` found for the events it routed.
    partition: i32,
    timestamp_ms: Option<i64>,
    topic_buf: Vec<u8>,
    /// The file and end offset of the last event that exceeded `max_message_bytes`: an event
    /// that starts right there is the next piece of the same line (the source split it), which
    /// is neither logged nor counted again.
    long_line: Option<(Arc<Origin>, u64)>,
    /// Under exactly-once delivery: each file's position, and what is already delivered.
    streams: Option<Streams>,
}

impl RecordWriter {
    /// A writer producing through `producer` as `cfg` says.
    pub fn new(producer: KafkaProducer, cfg: &KafkaConfig) -> Self {
        RecordWriter {
            producer,
            topic: cfg.topic.clone(),
            key: cfg.key.clone(),
            null_key: cfg.empty_key == EmptyKey::Null,
            topic_header: cfg.topic_header.clone(),
            partition_header: cfg.partition_header.clone(),
            default_partition: cfg.partition.unwrap_or(PARTITION_UNASSIGNED),
            timestamp_header: cfg.timestamp_header.clone(),
            partition: PARTITION_UNASSIGNED,
            timestamp_ms: None,
            headers: cfg
                .headers
                .iter()
                .map(|h| (h.name.as_bytes().into(), Field::from_name(&h.from)))
                .collect(),
            max_message_bytes: cfg.max_message_bytes.as_usize(),
            oversize: cfg.oversize,
            origin: None,
            own_headers: false,
            route: None,
            key_buf: Vec::new(),
            topic_buf: Vec::new(),
            long_line: None,
            streams: None,
        }
    }

    /// Delivers exactly once from now on: skips the events `streams` says are delivered, and
    /// notes each file's position.
    pub fn set_streams(&mut self, streams: Streams) {
        self.streams = Some(streams);
    }

    /// The position records of the open transaction (see [`Streams::records`]); none unless
    /// delivering exactly once.
    pub fn take_positions(&mut self, now: std::time::Instant) -> Vec<(Box<str>, Option<Vec<u8>>)> {
        self.streams
            .as_mut()
            .map_or_else(Vec::new, |s| s.records(now))
    }

    /// The producer, to open topics on.
    pub fn producer_mut(&mut self) -> &mut KafkaProducer {
        &mut self.producer
    }

    /// The producer.
    pub fn producer(&self) -> &KafkaProducer {
        &self.producer
    }

    /// Gives the producer back, to be closed.
    pub fn into_producer(self) -> KafkaProducer {
        self.producer
    }

    /// Produces the events of `lease` from `cur` on, as the batch in `slot`. Never waits.
    ///
    /// # Safety
    /// The records refer to the events' bodies in place: they must stay alive until every
    /// record produced from `lease` is reported, or until the producer is dropped.
    pub unsafe fn write(
        &mut self,
        lease: &Lease,
        slot: usize,
        cur: &mut Cursor,
        metrics: &SinkMetrics,
    ) -> Step {
        while let Some(ev) = lease.events.get(cur.event) {
            if cur.piece.is_none()
                && let Some(streams) = self.streams.as_mut()
                && !streams.admit(ev)
            {
                SinkMetrics::add(&metrics.skipped, 1);
                cur.event += 1;
                continue;
            }
            let same = !self.own_headers
                && ev.headers.is_empty()
                && self
                    .origin
                    .as_ref()
                    .is_some_and(|o| Arc::ptr_eq(o, &ev.origin));
            if !same && let Err(why) = self.route(ev) {
                error!(file = %ev.origin.path, offset = ev.offset,
                    error = %why, "cannot route the line to a topic");
                self.fail(slot, cur.event, FailureKind::BadTopic(why));
                return Step::Failed;
            }
            let (value, at) = match cur.piece {
                None => (&ev.body[..], ev.offset),
                Some(start) => {
                    let len = self.piece_len(ev);
                    if len == 0 {
                        error!(file = %ev.origin.path, offset = ev.offset,
                            "key and headers alone exceed max_message_bytes; the line cannot be split");
                        self.fail(slot, cur.event, FailureKind::Oversize);
                        return Step::Failed;
                    }
                    let end = ev.body.len().min(start + len);
                    (&ev.body[start..end], ev.offset + start as u64)
                }
            };
            // SAFETY: `value` is part of an event of `lease`, kept alive by our caller.
            match unsafe { self.send(ev, value, at, opaque(slot, cur.event)) } {
                Ok(()) => {
                    cur.produced += 1;
                    let next = cur
                        .piece
                        .map(|s| s + value.len())
                        .filter(|&n| n < ev.body.len());
                    cur.piece = next;
                    if next.is_none() {
                        cur.event += 1;
                    }
                }
                Err(RDKafkaErrorCode::QueueFull) => return Step::QueueFull,
                Err(RDKafkaErrorCode::MessageSizeTooLarge) if cur.piece.is_none() => {
                    let policy = self.oversize;
                    if self.first_piece_of_long_line(ev) {
                        SinkMetrics::add(&metrics.oversize, 1);
                        warn!(file = %ev.origin.path, offset = ev.offset,
                            bytes = ev.body.len(), max_message_bytes = self.max_message_bytes,
                            policy = ?policy,
                            "line exceeds max_message_bytes (logged once per line, however many pieces the source cut it into)");
                    } else {
                        debug!(file = %ev.origin.path, offset = ev.offset,
                            bytes = ev.body.len(), policy = ?policy,
                            "the next piece of a long line exceeds max_message_bytes too");
                    }
                    match policy {
                        Oversize::Split => cur.piece = Some(0),
                        Oversize::Skip => cur.event += 1,
                        Oversize::Stop => {
                            self.fail(slot, cur.event, FailureKind::Oversize);
                            return Step::Failed;
                        }
                    }
                }
                Err(code) => {
                    let kind = match code {
                        RDKafkaErrorCode::MessageSizeTooLarge => FailureKind::Oversize,
                        c => FailureKind::Delivery(c),
                    };
                    self.fail(slot, cur.event, kind);
                    return Step::Failed;
                }
            }
        }
        Step::Done
    }

    fn fail(&self, slot: usize, index: usize, kind: FailureKind) {
        self.producer.deliveries().fail(slot, index, kind, None);
    }

    /// Notes that `ev` exceeds `max_message_bytes`; false when it continues the last such
    /// event (the next piece of a line the source split), true when it starts a new line.
    fn first_piece_of_long_line(&mut self, ev: &Event) -> bool {
        let continues = self.long_line.as_ref().is_some_and(|(o, end)| {
            *end == ev.offset && (Arc::ptr_eq(o, &ev.origin) || o.path == ev.origin.path)
        });
        self.long_line = Some((ev.origin.clone(), ev.offset + ev.body.len() as u64));
        !continues
    }

    /// Renders topic and key for the origin of `ev` (and its own headers), and finds its
    /// partition and timestamp.
    fn route(&mut self, ev: &Event) -> Result<(), String> {
        self.origin = None;
        let header = |name: &Option<String>| {
            name.as_deref()
                .and_then(|h| ev.header(h))
                .filter(|v| !v.is_empty())
        };
        match header(&self.topic_header) {
            Some(t) => {
                self.topic_buf.clear();
                self.topic_buf.extend_from_slice(t.as_bytes());
            }
            None => self.topic.render(ev, &mut self.topic_buf),
        }
        self.partition = match header(&self.partition_header) {
            Some(p) => p
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .unwrap_or_else(|| {
                    warn!(file = %ev.origin.path, offset = ev.offset, value = p,
                    "the partition header is not a partition number; ignored");
                    self.default_partition
                }),
            None => self.default_partition,
        };
        self.timestamp_ms = header(&self.timestamp_header).and_then(|t| t.parse().ok());
        self.route = Some(self.producer.topic(&self.topic_buf)?);
        self.key.render(ev, &mut self.key_buf);
        self.origin = Some(ev.origin.clone());
        self.own_headers = !ev.headers.is_empty();
        Ok(())
    }

    /// Produces `value`, a part of `ev`'s body, in place.
    ///
    /// # Safety
    /// As [`RecordWriter::write`].
    unsafe fn send(
        &self,
        ev: &Event,
        value: &[u8],
        offset: u64,
        opaque: usize,
    ) -> Result<(), RDKafkaErrorCode> {
        let Some(topic) = self.route else {
            return Err(RDKafkaErrorCode::InvalidArgument);
        };
        let record = Record {
            topic,
            key: (!(self.null_key && self.key_buf.is_empty())).then_some(&self.key_buf[..]),
            partition: self.partition,
            value: Some(value),
            timestamp_ms: self
                .timestamp_ms
                .unwrap_or_else(|| i64::try_from(ev.read_at_ms).unwrap_or(0)),
            opaque,
        };
        // SAFETY: `value` lies in the body of an event of the lease `write` was given, which
        // its caller keeps alive as long as librdkafka may refer to it.
        unsafe {
            self.producer
                .send_in_place(&record, self.headers.len(), |h| {
                    for (name, field) in &self.headers {
                        match field {
                            Field::Offset => h.add(name, Decimal::new(offset).as_bytes()),
                            f => {
                                if let Some(v) = f.value(ev) {
                                    h.add(name, v.as_bytes());
                                }
                            }
                        }
                    }
                })
        }
    }

    /// The longest piece of `ev`'s body that fits in a record with its key and headers.
    fn piece_len(&self, ev: &Event) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, field)| {
                let value = match field {
                    Field::Offset => 20,
                    f => f.value(ev).map_or(0, str::len),
                };
                HEADER_OVERHEAD + name.len() + value
            })
            .sum();
        self.max_message_bytes
            .saturating_sub(RECORD_OVERHEAD + self.key_buf.len() + headers)
    }
}
