//! Reading a topic once, from each partition's low watermark to the high watermark it had when
//! the audit started, with a plain consumer: assigned partitions, no group, no commits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use sluice_sinks::kafka::Security;

use super::check::Record;

/// How long one poll waits before the loop checks for a stall.
const POLL: Duration = Duration::from_millis(200);

/// The header names records are attributed by.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// The source file's path.
    pub path: String,
    /// The line's byte offset in the file.
    pub offset: String,
    /// The file's identity.
    pub fid: String,
    /// Where a record whose body was changed ends in its file.
    pub end: String,
    /// Where lines dropped on purpose right before a record begin.
    pub dropped_from: String,
}

/// Where and how to read.
#[derive(Debug, Clone)]
pub struct ConsumeOptions<'a> {
    /// `bootstrap.servers`.
    pub brokers: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// librdkafka settings passed through, applied last.
    pub properties: &'a [(String, String)],
    /// TLS and SASL.
    pub security: Security<'a>,
    /// How long to wait for the cluster to answer, and for progress while reading.
    pub timeout: Duration,
    /// librdkafka's `isolation.level`: `read_committed` leaves out the records of aborted
    /// and still open transactions.
    pub isolation: &'a str,
    /// The headers to attribute records by.
    pub headers: &'a HeaderNames,
}

/// The part of one partition that was read: offsets `low..high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionRange {
    /// The partition.
    pub partition: i32,
    /// Its low watermark (the first offset still in the log).
    pub low: i64,
    /// Its high watermark when the audit started.
    pub high: i64,
}

/// Why the topic could not be read. The caller names the topic and the brokers.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// librdkafka refused the configuration.
    #[error("cannot create the consumer: {0}")]
    Config(#[source] KafkaError),
    /// The cluster did not answer.
    #[error("no metadata within {}: {source}", show(*.timeout))]
    Metadata {
        /// How long it waited.
        timeout: Duration,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The topic does not exist (or is not visible to this client).
    #[error("no such topic")]
    NoTopic,
    /// A partition's watermarks could not be read.
    #[error("cannot read the watermarks of partition {partition}: {source}")]
    Watermarks {
        /// The partition.
        partition: i32,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The partitions could not be assigned.
    #[error("cannot assign the partitions: {0}")]
    Assign(#[source] KafkaError),
    /// Reading stopped making progress before the high watermarks.
    #[error(
        "no progress for {}: partition {partition} at offset {position} of {high}{}",
        show(*.timeout),
        last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Stalled {
        /// How long it waited.
        timeout: Duration,
        /// A partition not yet read to its end.
        partition: i32,
        /// The next offset to read there.
        position: i64,
        /// Its high watermark.
        high: i64,
        /// The last error the consumer reported, if any.
        last: Option<String>,
    },
}

fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Reads every record of the topic that existed when the call started and hands each to
/// `sink`, in order within each partition. Returns the ranges read.
pub fn read_topic(
    opts: &ConsumeOptions<'_>,
    mut sink: impl FnMut(Record<'_>),
) -> Result<Vec<PartitionRange>, ConsumeError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", opts.brokers)
        // librdkafka wants a group for assign(); it is never joined nor committed to.
        .set("group.id", "sluice-audit")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // Should retention delete records before they are read, go on from the oldest left.
        .set("auto.offset.reset", "earliest")
        // librdkafka pauses fetching for this long whenever its prefetch queue is full (1 s by
        // default), which made reading a large topic 3-4 times slower than draining it.
        .set("fetch.queue.backoff.ms", "10")
        .set("allow.auto.create.topics", "false")
        .set("isolation.level", opts.isolation);
    opts.security.apply(&mut config);
    for (k, v) in opts.properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().map_err(ConsumeError::Config)?;
    let ranges = watermarks(&consumer, opts)?;
    let total: i64 = ranges.iter().map(|r| r.high - r.low).sum();
    tracing::info!(
        topic = opts.topic,
        partitions = ranges.len(),
        records = total,
        "reading"
    );

    let mut pending: HashMap<i32, (i64, i64)> = ranges
        .iter()
        .filter(|r| r.high > r.low)
        .map(|r| (r.partition, (r.low, r.high)))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for (&p, &(low, _)) in &pending {
        assignment
            .add_partition_offset(opts.topic, p, Offset::Offset(low))
            .map_err(ConsumeError::Assign)?;
    }
    consumer.assign(&assignment).map_err(ConsumeError::Assign)?;

    let mut progress = Instant::now();
    let mut last_error = None;
    while !pending.is_empty() {
        match consumer.poll(POLL) {
            Some(Ok(m)) => {
                progress = Instant::now();
                let p = m.partition();
                let Some((position, high)) = pending.get_mut(&p) else {
                    continue;
                };
                if m.offset() < *high {
                    sink(record(&m, opts.headers));
                }
                *position = m.offset() + 1;
                if *position >= *high {
                    pending.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                progress = Instant::now();
                pending.remove(&p);
            }
            Some(Err(e)) => {
                tracing::warn!(topic = opts.topic, error = %e, "consumer error");
                last_error = Some(e.to_string());
            }
            None => {}
        }
        if progress.elapsed() > opts.timeout
            && let Some((&partition, &(position, high))) = pending.iter().min_by_key(|e| e.0)
        {
            return Err(ConsumeError::Stalled {
                timeout: opts.timeout,
                partition,
                position,
                high,
                last: last_error,
            });
        }
    }
    Ok(ranges)
}

/// The partitions of the topic and their watermarks, in partition order.
fn watermarks(
    consumer: &BaseConsumer,
    opts: &ConsumeOptions<'_>,
) -> Result<Vec<PartitionRange>, ConsumeError> {
    let metadata = consumer
        .fetch_metadata(Some(opts.topic), opts.timeout)
        .map_err(|source| ConsumeError::Metadata {
            timeout: opts.timeout,
            source,
        })?;
    let topic = metadata.topics().iter().find(|t| t.name() == opts.topic);
    let partitions: Vec<i32> = match topic {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            t.partitions().iter().map(|p| p.id()).collect()
        }
        _ => return Err(ConsumeError::NoTopic),
    };
    let mut ranges = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(opts.topic, partition, opts.timeout)
            .map_err(|source| ConsumeError::Watermarks { partition, source })?;
        ranges.push(PartitionRange {
            partition,
            low,
            high,
        });
    }
    ranges.sort_by_key(|r| r.partition);
    Ok(ranges)
}

/// The checker's view of a message: position, the three headers (first occurrence of each),
/// the value (a null value is an empty line).
fn record<'a>(m: &'a BorrowedMessage<'_>, names: &HeaderNames) -> Record<'a> {
    let mut r = Record {
        partition: m.partition(),
        kafka_offset: m.offset(),
        path: None,
        offset: None,
        fid: None,
        end: None,
        dropped_from: None,
        body: m.payload().unwrap_or_default(),
    };
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let slot = if h.key == names.path {
                &mut r.path
            } else if h.key == names.offset {
                &mut r.offset
            } else if h.key == names.fid {
                &mut r.fid
            } else if h.key == names.end {
                &mut r.end
            } else if h.key == names.dropped_from {
                &mut r.dropped_from
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = h.value;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;

    /// What the sink was given, owned.
    type Seen = (
        i32,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<u8>,
    );

    fn read(bootstrap: &str, topic: &str, headers: &HeaderNames) -> Result<Vec<Seen>, String> {
        let opts = ConsumeOptions {
            brokers: bootstrap,
            topic,
            properties: &[],
            security: Security::default(),
            timeout: Duration::from_secs(10),
            isolation: "read_committed",
            headers,
        };
        let mut seen = Vec::new();
        let own = |v: Option<&[u8]>| v.map(<[u8]>::to_vec);
        let ranges = read_topic(&opts, |r| {
            seen.push((
                r.partition,
                r.kafka_offset,
                own(r.path),
                own(r.offset),
                own(r.fid),
                r.body.to_vec(),
            ));
        })
        .map_err(|e| e.to_string())?;
        assert_eq!(ranges.len(), 2);
        Ok(seen)
    }

    #[test]
    fn reads_every_partition_to_its_end_with_the_named_headers() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("logs", 2, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let header = |key, value: &'static str| Header {
            key,
            value: Some(value.as_bytes()),
        };
        for (partition, offset, body) in [(0, "0", "alpha"), (0, "6", "bravo"), (1, "0", "x")] {
            let headers = OwnedHeaders::new()
                .insert(header("origin", "host1"))
                .insert(header("p", "/spool/a.log"))
                .insert(header("o", offset))
                .insert(header("o", "999"));
            let record = BaseRecord::to("logs")
                .partition(partition)
                .key("a.log")
                .payload(body);
            producer
                .send(record.headers(headers))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer
            .send(BaseRecord::<(), [u8]>::to("logs").partition(1))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();

        let names = HeaderNames {
            path: "p".into(),
            offset: "o".into(),
            fid: "fid".into(),
            end: "offset_end".into(),
            dropped_from: "dropped_from".into(),
        };
        let mut seen = read(&bootstrap, "logs", &names).unwrap();
        seen.sort();
        let path = Some(b"/spool/a.log".to_vec());
        assert_eq!(
            seen,
            [
                (
                    0,
                    0,
                    path.clone(),
                    Some(b"0".to_vec()),
                    None,
                    b"alpha".to_vec()
                ),
                (
                    0,
                    1,
                    path.clone(),
                    Some(b"6".to_vec()),
                    None,
                    b"bravo".to_vec()
                ),
                (1, 0, path, Some(b"0".to_vec()), None, b"x".to_vec()),
                (1, 1, None, None, None, Vec::new()),
            ]
        );
    }
}
