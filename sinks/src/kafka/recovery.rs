//! Reading a sink's committed positions back before it delivers (exactly-once delivery).
//!
//! The positions topic is created when missing (compacted, one partition, the broker's
//! replication factor); an existing one that is not compacted is refused, since deleting old
//! segments would forget positions. Every sink's positions are in the topic's first partition
//! (adding partitions moves nothing), read with a `read_committed` consumer from the start to
//! the end of what was written when the read began. That end is behind the first transaction
//! still open, and the sink's own (if its predecessor left one open) was aborted by
//! `init_transactions` before this runs; another sink's is waited for (it commits within
//! moments, or it is aborted when its `transaction_timeout` expires), for a while.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use tracing::{info, warn};

use super::positions::Streams;

/// The partition that holds the positions: always the first, so that adding partitions to
/// the topic never hides a sink's positions from it.
pub const PARTITION: i32 = 0;

/// How long the topic's configuration may take to be described.
const DESCRIBE_WAIT: Duration = Duration::from_secs(3);

/// Settings of the producer's client that a consumer or an admin client of the same cluster
/// needs too (where and how to connect).
const SHARED_PREFIXES: [&str; 10] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "security.protocol",
    "ssl.",
    "sasl.",
    "socket.",
    "broker.",
    "reconnect.",
    "client.dns.lookup",
];

/// Why the positions could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryError {
    /// What went wrong, in words.
    pub why: String,
    /// True when trying again cannot help (the topic is not compacted, say).
    pub fatal: bool,
}

fn retriable(why: String) -> RecoveryError {
    RecoveryError { why, fatal: false }
}

/// Where the positions are and how to reach them.
pub struct Recovery {
    client: ClientConfig,
    topic: String,
    runtime: tokio::runtime::Handle,
}

impl Recovery {
    /// Reads `topic` on the cluster the producer's `producer` settings connect to; the admin
    /// calls run on `runtime`.
    pub fn new(producer: &ClientConfig, topic: &str, runtime: tokio::runtime::Handle) -> Self {
        let mut client = ClientConfig::new();
        for key in producer.config_map().keys() {
            if SHARED_PREFIXES.iter().any(|p| key.starts_with(p))
                && let Some(v) = producer.get(key)
            {
                client.set(*key, v);
            }
        }
        Recovery {
            client,
            topic: topic.to_owned(),
            runtime,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Makes sure the topic exists and is compacted, and reads the positions of `streams`'
    /// sink into it (from [`PARTITION`], where they are written). Gives up after `wait`.
    pub fn run(&self, streams: &mut Streams, wait: Duration) -> Result<(), RecoveryError> {
        let deadline = Instant::now() + wait;
        let consumer = self.reader(streams, "recovery", "read_committed")?;
        let admin: AdminClient<DefaultClientContext> = self
            .client
            .create()
            .map_err(|e| retriable(format!("cannot create an admin client: {e}")))?;
        if self.partitions(&consumer, deadline)? == 0 {
            self.create_topic(&admin, wait)?;
            if self.partitions(&consumer, deadline)? == 0 {
                return Err(retriable(format!(
                    "topic `{}` has no partition yet",
                    self.topic
                )));
            }
        }
        self.check_policy(&admin, wait.min(DESCRIBE_WAIT))?;
        // Every record written so far counts: a `read_committed` reader stops before the
        // first transaction still open (another sink's, between its positions and its commit),
        // and positions of this sink may lie beyond it.
        let probe = self.reader(streams, "probe", "read_uncommitted")?;
        let (_, written) = probe
            .fetch_watermarks(&self.topic, PARTITION, left(deadline))
            .map_err(|e| retriable(format!("no end offset for `{}`: {e}", self.topic)))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, PARTITION, Offset::Beginning)
            .map_err(|e| retriable(e.to_string()))?;
        consumer
            .assign(&tpl)
            .map_err(|e| retriable(format!("cannot read `{}`: {e}", self.topic)))?;
        let mut held_up = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                if held_up {
                    warn!(topic = %self.topic, waited = ?wait,
                        "a transaction of another producer stayed open in the positions topic; \
                         going on with the positions before it: lines of the last moments \
                         before this sink stopped may be delivered again");
                    return Ok(());
                }
                return Err(retriable(format!(
                    "reading the positions in `{}` took longer than {wait:?}",
                    self.topic
                )));
            }
            match consumer.poll((deadline - now).min(Duration::from_millis(200))) {
                None => {}
                Some(Ok(m)) => streams.recover(m.key().unwrap_or_default(), m.payload()),
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    let (_, visible) = consumer
                        .fetch_watermarks(&self.topic, PARTITION, left(deadline))
                        .map_err(|e| {
                            retriable(format!("no end offset for `{}`: {e}", self.topic))
                        })?;
                    if visible >= written {
                        return Ok(());
                    }
                    if !held_up {
                        info!(topic = %self.topic, visible, written,
                            "another producer's transaction is open in the positions topic; \
                             waiting for it to end");
                        held_up = true;
                    }
                }
                Some(Err(e)) => {
                    return Err(retriable(format!(
                        "reading the positions in `{}`: {e}",
                        self.topic
                    )));
                }
            }
        }
    }

    /// A consumer of the topic's positions with `isolation` (`isolation.level`), named after
    /// `streams`' sink and its `role`; it never commits.
    fn reader(
        &self,
        streams: &Streams,
        role: &str,
        isolation: &str,
    ) -> Result<BaseConsumer, RecoveryError> {
        let mut config = self.client.clone();
        config
            .set("group.id", format!("{}{role}", streams.prefix().trim_end()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .set("auto.offset.reset", "earliest")
            // At the end of the partition the broker holds a fetch this long for more data
            // (500 ms by default) before librdkafka learns it reached the end.
            .set("fetch.wait.max.ms", "10");
        config
            .create()
            .map_err(|e| retriable(format!("cannot create the positions reader: {e}")))
    }

    /// How many partitions the topic has; 0 when it does not exist.
    fn partitions(
        &self,
        consumer: &BaseConsumer,
        deadline: Instant,
    ) -> Result<usize, RecoveryError> {
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), left(deadline))
            .map_err(|e| retriable(format!("no metadata for `{}`: {e}", self.topic)))?;
        Ok(metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len()))
    }

    /// Creates the missing topic, compacted. A cluster that does not let this client create
    /// topics (ACLs) is not an error yet: an operator may create it.
    fn create_topic(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        wait: Duration,
    ) -> Result<(), RecoveryError> {
        let opts = AdminOptions::new().request_timeout(Some(wait));
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let created = self
            .runtime
            .block_on(admin.create_topics([&topic], &opts))
            .map_err(|e| retriable(format!("cannot create topic `{}`: {e}", self.topic)))?;
        for r in created {
            match r {
                Ok(_) => info!(topic = %self.topic, "positions topic created (compacted)"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(retriable(format!(
                        "the positions topic `{}` does not exist and cannot be created ({code}): \
                         create it with cleanup.policy=compact, or let this client create it",
                        self.topic
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuses a topic that is not compacted. A cluster that does not let this client read
    /// topic configurations (ACLs) gets a warning only.
    fn check_policy(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        wait: Duration,
    ) -> Result<(), RecoveryError> {
        let opts = AdminOptions::new().request_timeout(Some(wait));
        let described = self
            .runtime
            .block_on(admin.describe_configs([&ResourceSpecifier::Topic(&self.topic)], &opts));
        let policy = match described.as_ref().map(|d| d.first()) {
            Ok(Some(Ok(resource))) => resource.get("cleanup.policy").and_then(|e| e.value.clone()),
            _ => None,
        };
        match policy {
            None => warn!(topic = %self.topic,
                "cannot read the positions topic's cleanup.policy; it must be compact"),
            Some(policy) if !policy.split(',').any(|p| p.trim() == "compact") => {
                return Err(RecoveryError {
                    why: format!(
                        "the positions topic `{}` has cleanup.policy={policy}: it must be \
                         compacted (cleanup.policy=compact), or old positions are deleted and \
                         lines delivered again; change its policy or set positions_topic",
                        self.topic
                    ),
                    fatal: true,
                });
            }
            Some(_) => {}
        }
        Ok(())
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
