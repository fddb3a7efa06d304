//! The Kafka sink's options, the librdkafka settings they stand for, and the checks that keep
//! a configuration from breaking per-file ordering.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use serde::Deserialize;
use sluice_channels::config::Problem;
use sluice_channels::units::{ByteSize, HumanDuration};

use super::security::{SaslConfig, Security, TlsConfig, readable};
use super::template::Template;

/// The Kafka sink's options, as written under `sinks.NAME` (without `type` and `channel`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers: `host:port`, several separated by commas.
    pub brokers: String,
    /// The topic, a template over the event headers (`logs-%{source}`).
    pub topic: Template,
    /// The record key, a template over the event headers; one key lands in one partition.
    #[serde(default = "default_key")]
    pub key: Template,
    /// What a key that renders empty (its headers absent) becomes: an empty key (the
    /// default: hashed like any other, so such records share one partition) or, with
    /// `null`, no key (librdkafka spreads such records over the partitions, as Flume does).
    #[serde(default)]
    pub empty_key: EmptyKey,
    /// An event with this header (not empty) goes to the topic it names instead of `topic`
    /// (Flume's `allowTopicOverride` with `topicHeader`).
    #[serde(default)]
    pub topic_header: Option<String>,
    /// An event with this header goes to the partition it names (a whole number; another
    /// value is logged and ignored); Flume's `partitionIdHeader`.
    #[serde(default)]
    pub partition_header: Option<String>,
    /// The partition of every event without `partition_header` (default: the partitioner
    /// chooses by key); Flume's `defaultPartitionId`.
    #[serde(default)]
    pub partition: Option<i32>,
    /// The record timestamp is this header's value, in milliseconds since the epoch (default,
    /// or when it is not a number: the time the line was read); Flume's `timestampHeader`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// The event headers sent as Kafka record headers, under the same names.
    #[serde(default = "default_headers")]
    pub headers: Vec<HeaderSpec>,
    /// The most events taken from the channel as one batch (one lease).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How many batches may be handed to the producer before the oldest is acknowledged.
    #[serde(default = "default_batches_in_flight")]
    pub batches_in_flight: usize,
    /// The compression codec of record batches.
    #[serde(default)]
    pub compression: Compression,
    /// How many replicas must acknowledge a record.
    #[serde(default)]
    pub acks: Acks,
    /// The largest record the sink produces (librdkafka's `message.max.bytes`); it must not
    /// exceed the topic's `max.message.bytes`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// What happens to a line whose record would exceed `max_message_bytes`.
    #[serde(default)]
    pub oversize: Oversize,
    /// TLS to the brokers (see [`TlsConfig`]).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// SASL authentication to the brokers (see [`SaslConfig`]).
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// librdkafka settings passed through as they are (`linger.ms`, `socket.keepalive.enable`,
    /// ...).
    #[serde(default)]
    pub producer: BTreeMap<String, ProducerValue>,
    /// At least once (the default), or exactly once for `read_committed` consumers: Kafka
    /// transactions that also record each file's delivered position (see `docs/exactly-once.md`).
    #[serde(default)]
    pub delivery: Delivery,
    /// The producer's `transactional.id` under `delivery: exactly_once`: stable across restarts
    /// and unique to this agent and sink (the agent fills in `sluice-HOST-AGENT-SINK` when it is
    /// left out), so that a restarted agent fences its predecessor and finds its positions.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// How long one transaction collects batches before it is committed (exactly once).
    #[serde(default = "default_transaction_interval")]
    pub transaction_interval: HumanDuration,
    /// librdkafka's `transaction.timeout.ms` (exactly once): how long the broker lets a
    /// transaction stay open before it aborts it; at most the broker's
    /// `transaction.max.timeout.ms` (15 minutes by default).
    #[serde(default = "default_transaction_timeout")]
    pub transaction_timeout: HumanDuration,
    /// The compacted topic that holds each file's delivered position (exactly once); created
    /// when missing.
    #[serde(default = "default_positions_topic")]
    pub positions_topic: String,
    /// A file with no event for this long gets a tombstone in the positions topic (exactly
    /// once), so that the topic holds only the files that are still read.
    #[serde(default = "default_tombstone_after")]
    pub tombstone_after: HumanDuration,
}

/// The delivery guarantee of the Kafka sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Every line at least once: a crash may send again what was in flight.
    #[default]
    AtLeastOnce,
    /// Every line exactly once for a `read_committed` consumer: records are produced in
    /// transactions that also write each file's delivered position to `positions_topic`,
    /// and a restarted sink skips what those positions say was delivered.
    ExactlyOnce,
}

fn default_transaction_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_transaction_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_positions_topic() -> String {
    "__sluice_positions".to_owned()
}
fn default_tombstone_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_key() -> Template {
    Template::compile("%{file}").unwrap_or_else(|_| unreachable!("a valid literal template"))
}
/// `path` and `offset` let `sluice audit` check every file; `fid` (set by both file sources)
/// tells a recreated file from its predecessor under the same path;
/// `offset_end` and `dropped_from` (set only by processing stages that change or drop lines)
/// keep the audit truthful when they do.
fn default_headers() -> Vec<HeaderSpec> {
    [
        "path",
        "offset",
        "fid",
        sluice_channels::END_HEADER,
        sluice_channels::DROPPED_FROM_HEADER,
    ]
    .map(HeaderSpec::same)
    .to_vec()
}

/// One Kafka header a record carries: its name, and the event header it takes its value
/// from. Written as the name alone (`path`: the event header of that name) or as a
/// one-entry mapping (`{ file: path }`: Kafka header `file`, the value of event header
/// `path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    /// The Kafka header's name.
    pub name: String,
    /// The event header (or field: `path`, `offset`, ...) it takes its value from.
    pub from: String,
}

impl HeaderSpec {
    /// The header `name`, taken from the event header of the same name.
    pub fn same(name: &str) -> Self {
        HeaderSpec {
            name: name.to_owned(),
            from: name.to_owned(),
        }
    }
}

impl PartialEq<&str> for HeaderSpec {
    /// True for a header sent under the name of the event header it comes from, `name`.
    fn eq(&self, name: &&str) -> bool {
        self.name == *name && self.from == *name
    }
}

impl<'de> Deserialize<'de> for HeaderSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Same(String),
            Renamed(BTreeMap<String, String>),
        }
        match Written::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a header name, or a mapping `{ KAFKA_NAME: EVENT_HEADER }` of one entry",
            )
        })? {
            Written::Same(n) => Ok(HeaderSpec::same(&n)),
            Written::Renamed(m) if m.len() == 1 => {
                let (name, from) = m.into_iter().next().unwrap_or_default();
                Ok(HeaderSpec { name, from })
            }
            Written::Renamed(_) => Err(serde::de::Error::custom(
                "a renamed header is a mapping of one entry: `{ KAFKA_NAME: EVENT_HEADER }`",
            )),
        }
    }
}
fn default_batch_size() -> usize {
    2000
}
fn default_batches_in_flight() -> usize {
    8
}
fn default_max_message_bytes() -> ByteSize {
    ByteSize(1_000_000)
}

/// Room kept for a record's key, headers and framing when telling whether a line fits in
/// `max_message_bytes`: with the default key (the file name) and headers (path, offset, fid)
/// that is the path twice (at most 4096 bytes each) and a few dozen bytes. A source's
/// `max_line_bytes` at most `max_message_bytes` minus this fits one record.
pub const KEY_AND_HEADERS_RESERVE: u64 = 16 << 10;

/// The most batches the sink keeps in flight (the delivery bookkeeping has this many slots).
pub const MAX_BATCHES_IN_FLIGHT: usize = 1024;

/// Record batch compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default: cheap on CPU, good on log lines).
    #[default]
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn codec(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Producer acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "ProducerValue")]
pub enum Acks {
    /// `all` (or `-1`): every in-sync replica has the record. The default, and what the
    /// idempotent producer requires.
    #[default]
    All,
    /// `1`: the partition leader has the record; a leader change can lose it.
    Leader,
    /// `0`: no acknowledgement at all.
    None,
}

impl Acks {
    fn setting(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

impl TryFrom<ProducerValue> for Acks {
    type Error = String;

    fn try_from(v: ProducerValue) -> Result<Self, String> {
        match v.to_string().as_str() {
            "all" | "-1" => Ok(Acks::All),
            "1" => Ok(Acks::Leader),
            "0" => Ok(Acks::None),
            other => Err(format!("`{other}` is not one of: all, 1, 0")),
        }
    }
}

/// What a record key that renders empty becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyKey {
    /// An empty key: one partition for all such records, their order kept.
    #[default]
    Empty,
    /// No key: the partitioner spreads such records over the partitions.
    Null,
}

/// The policy for a line whose record exceeds `max_message_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Send the line as several records, in order, each at most `max_message_bytes`, with
    /// the same key and the byte offset of each piece (the default: nothing is lost).
    #[default]
    Split,
    /// Leave the line out: it is logged with its file and offset and counted.
    Skip,
    /// Stop the sink with an error; the line stays in the channel (and its file).
    Stop,
}

/// A librdkafka setting's value as written in YAML: a string, a number or a boolean. Two
/// values are equal when librdkafka is given the same text (`5` and `"5"`), so that a reload
/// that only quotes a value keeps the sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProducerValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Anything else, passed as written.
    Str(String),
}

impl PartialEq for ProducerValue {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for ProducerValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProducerValue::Bool(b) => write!(f, "{b}"),
            ProducerValue::Int(i) => write!(f, "{i}"),
            ProducerValue::Float(x) => write!(f, "{x}"),
            ProducerValue::Str(s) => f.write_str(s),
        }
    }
}

/// The librdkafka settings the sink sets before the `producer:` map, for ordering and no
/// loss: an idempotent producer (one key's records stay in order across retries, even with
/// several requests in flight), the Java-compatible partitioner, and no delivery deadline (a
/// broker outage makes the sink wait, not drop).
pub const ORDERING_DEFAULTS: [(&str, &str); 4] = [
    ("enable.idempotence", "true"),
    ("partitioner", "murmur2_random"),
    ("message.timeout.ms", "0"),
    ("client.id", "sluice"),
];

/// `producer:` keys that a typed option owns, and that option.
const OWNED: [(&str, &str); 9] = [
    ("bootstrap.servers", "brokers"),
    ("metadata.broker.list", "brokers"),
    ("acks", "acks"),
    ("request.required.acks", "acks"),
    ("compression.codec", "compression"),
    ("compression.type", "compression"),
    ("message.max.bytes", "max_message_bytes"),
    ("transactional.id", "transactional_id"),
    ("transaction.timeout.ms", "transaction_timeout"),
];

/// Partitioners that always put one non-empty or empty key into one partition.
const KEYED_PARTITIONERS: [&str; 5] = [
    "murmur2_random",
    "murmur2",
    "consistent",
    "fnv1a",
    "fnv1a_random",
];

/// librdkafka settings that name a file (or, for `ssl.ca.location`, a folder) librdkafka reads
/// when the producer starts: a missing or unreadable one fails the sink at start, so
/// `validate` checks them.
const FILE_SETTINGS: [&str; 6] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "sasl.kerberos.keytab",
];

/// How often librdkafka reports its statistics, from which the sink reads whether a broker
/// connection is up (the `sluice_sink_connected` metric); `producer: { statistics.interval.ms }`
/// overrides it.
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// librdkafka's limit on requests in flight for an idempotent producer.
const IDEMPOTENT_MAX_IN_FLIGHT: i64 = 5;

impl KafkaConfig {
    /// The `producer:` value of a librdkafka setting, under any of its names.
    fn producer_value(&self, names: &[&str]) -> Option<(&str, &ProducerValue)> {
        names
            .iter()
            .find_map(|n| self.producer.get_key_value(*n))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Whether the producer runs idempotent, and the `producer:` key that says otherwise.
    fn idempotence(&self) -> (bool, Option<&str>) {
        match self.producer_value(&["enable.idempotence"]) {
            Some((k, v)) => (
                !matches!(v.to_string().as_str(), "false" | "f" | "0"),
                Some(k),
            ),
            None => (true, None),
        }
    }

    /// Checks what serde cannot: broker list, templates, limits, and `producer:` settings
    /// that would break ordering or that librdkafka refuses; keys are relative to the sink.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p: Vec<Problem> = Vec::new();
        let mut add = |k: &str, m: String| p.push(Problem::new(k, m));
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            add(
                "brokers",
                "must name at least one broker as host:port".into(),
            );
        }
        if self.topic.uses_offset() {
            add("topic", "`%{offset}` would make one topic per line".into());
        }
        let legal = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if self.topic.literals().any(|l| !l.iter().all(legal)) {
            add(
                "topic",
                "topic names may use only letters, digits, `.`, `_` and `-`".into(),
            );
        }
        let fixed: usize = self.topic.literals().map(<[u8]>::len).sum();
        if fixed > 249 {
            add("topic", "topic names are at most 249 characters".into());
        }
        if self.topic.as_str().is_empty() {
            add("topic", "must not be empty".into());
        }
        if self.key.uses_offset() {
            add(
                "key",
                "`%{offset}` in the key spreads one file's lines over partitions and breaks their \
                 order; send the offset as a header instead"
                    .into(),
            );
        }
        for (key, h) in [
            ("topic_header", &self.topic_header),
            ("partition_header", &self.partition_header),
            ("timestamp_header", &self.timestamp_header),
        ] {
            if h.as_deref().is_some_and(str::is_empty) {
                add(key, "must name an event header".into());
            }
        }
        if self.partition.is_some_and(|p| p < 0) {
            add("partition", "must be a partition number, 0 or more".into());
        }
        for (i, h) in self.headers.iter().enumerate() {
            if h.name.is_empty() || h.from.is_empty() {
                add(&format!("headers[{i}]"), "must name an event header".into());
            } else if self.headers[..i].iter().any(|o| o.name == h.name) {
                add(
                    &format!("headers[{i}]"),
                    format!("`{}` is listed twice", h.name),
                );
            }
        }
        if let Some(p) = sluice_channels::config::batch_size_problem(self.batch_size) {
            add(&p.key, p.message);
        }
        if !(1..=MAX_BATCHES_IN_FLIGHT).contains(&self.batches_in_flight) {
            add(
                "batches_in_flight",
                format!("must be between 1 and {MAX_BATCHES_IN_FLIGHT}"),
            );
        }
        if !(1000..=1_000_000_000).contains(&self.max_message_bytes.0) {
            add(
                "max_message_bytes",
                "must be between 1000 and 1000000000 bytes".into(),
            );
        }
        self.validate_exactly_once(&mut p);
        self.validate_producer(&mut p);
        p
    }

    /// Checks the options of `delivery: exactly_once`, and that they are not set without it.
    fn validate_exactly_once(&self, p: &mut Vec<Problem>) {
        if self.delivery != Delivery::ExactlyOnce {
            if self.transactional_id.is_some() {
                p.push(Problem::new(
                    "transactional_id",
                    "only used with `delivery: exactly_once`",
                ));
            }
            return;
        }
        if self
            .transactional_id
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            p.push(Problem::new("transactional_id", "must not be empty"));
        }
        let timeout = self.transaction_timeout.0;
        if !(Duration::from_secs(1)..=Duration::from_millis(i32::MAX as u64)).contains(&timeout) {
            p.push(Problem::new(
                "transaction_timeout",
                "must be between 1s and 24d (and at most the broker's \
                 transaction.max.timeout.ms, 15m by default)",
            ));
        }
        let interval = self.transaction_interval.0;
        if interval.is_zero() || interval * 2 > timeout {
            p.push(Problem::new(
                "transaction_interval",
                format!(
                    "must be more than 0 and at most half of transaction_timeout ({})",
                    self.transaction_timeout
                ),
            ));
        }
        if self.tombstone_after.0 < Duration::from_secs(60) {
            p.push(Problem::new(
                "tombstone_after",
                "must be at least 1m: a position is needed until the sources and the channel \
                 have recorded that its lines were delivered",
            ));
        }
        if !super::producer::is_topic_name(self.positions_topic.as_bytes()) {
            p.push(Problem::new(
                "positions_topic",
                "must be a topic name: 1 to 249 letters, digits, `.`, `_` and `-`",
            ));
        }
        if let Some((k, v)) = self.producer_value(&["message.timeout.ms", "delivery.timeout.ms"]) {
            let ms: Option<u64> = v.to_string().trim().parse().ok();
            if ms.is_none_or(|ms| ms == 0 || u128::from(ms) > timeout.as_millis()) {
                p.push(Problem::new(
                    format!("producer.{k}"),
                    format!(
                        "must be more than 0 and at most transaction_timeout ({}) with exactly-once \
                         delivery (it defaults to transaction_timeout)",
                        self.transaction_timeout
                    ),
                ));
            }
        }
    }

    fn validate_producer(&self, p: &mut Vec<Problem>) {
        for (key, option) in OWNED {
            if self.producer.contains_key(key) {
                let m = format!("set with the sink option `{option}`, not under producer");
                p.push(Problem::new(format!("producer.{key}"), m));
            }
        }
        let (idempotent, idem_key) = self.idempotence();
        let in_flight =
            self.producer_value(&["max.in.flight.requests.per.connection", "max.in.flight"]);
        let in_flight_n = in_flight.and_then(|(_, v)| v.to_string().parse::<i64>().ok());
        if !idempotent && in_flight_n.is_none_or(|n| n > 1) {
            p.push(Problem::new(
                format!("producer.{}", idem_key.unwrap_or("enable.idempotence")),
                "without idempotence a retried request can land after a later one and reorder a \
                 file's lines; keep it on, or also set max.in.flight.requests.per.connection: 1",
            ));
        }
        if idempotent {
            if self.acks != Acks::All {
                p.push(Problem::new(
                    "acks",
                    "the idempotent producer that keeps lines in order needs `acks: all`",
                ));
            }
            if let Some((k, _)) =
                in_flight.filter(|_| in_flight_n.is_some_and(|n| n > IDEMPOTENT_MAX_IN_FLIGHT))
            {
                p.push(Problem::new(
                    format!("producer.{k}"),
                    format!("the idempotent producer allows at most {IDEMPOTENT_MAX_IN_FLIGHT}"),
                ));
            }
        }
        if let Some((k, v)) = self.producer_value(&["partitioner"]) {
            let v = v.to_string();
            if !KEYED_PARTITIONERS.contains(&v.as_str()) {
                p.push(Problem::new(
                    format!("producer.{k}"),
                    format!(
                        "`{v}` may put one key's lines in several partitions; use one of: {}",
                        KEYED_PARTITIONERS.join(", ")
                    ),
                ));
            }
        }
        self.validate_files(p);
        let passthrough = self
            .producer
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()));
        p.extend(self.security().validate(passthrough, "producer"));
        if let Err(KafkaError::ClientConfig(_, desc, key, _)) =
            self.client_config("validate").create_native_config()
        {
            let at = if self.producer.contains_key(&key) {
                format!("producer.{key}")
            } else {
                OWNED
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("producer", |(_, option)| option)
                    .to_owned()
            };
            if !p.iter().any(|problem| problem.key == at) {
                p.push(Problem::new(at, desc));
            }
        }
    }

    /// Checks that the files the `producer:` settings name exist and can be read.
    fn validate_files(&self, p: &mut Vec<Problem>) {
        for key in FILE_SETTINGS {
            let Some(value) = self.producer.get(key) else {
                continue;
            };
            let path = value.to_string();
            if key == "ssl.ca.location" && path == "probe" {
                continue;
            }
            let folder_ok = key == "ssl.ca.location";
            if let Err(e) = readable(std::path::Path::new(&path), folder_ok) {
                p.push(Problem::new(
                    format!("producer.{key}"),
                    format!("cannot read `{path}`: {e}"),
                ));
            }
        }
    }

    /// The `tls:` and `sasl:` options.
    pub fn security(&self) -> Security<'_> {
        Security {
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
        }
    }

    /// How often librdkafka reports its statistics: `producer: { statistics.interval.ms }`,
    /// else [`STATISTICS_INTERVAL_MS`] (0: never).
    pub fn statistics_interval(&self) -> Duration {
        let ms = self
            .producer_value(&["statistics.interval.ms"])
            .map_or_else(|| STATISTICS_INTERVAL_MS.to_owned(), |(_, v)| v.to_string());
        Duration::from_millis(ms.trim().parse().unwrap_or(0))
    }

    /// How long a record may wait for the broker before its delivery fails:
    /// `producer: { message.timeout.ms }` (or `delivery.timeout.ms`); `None` when unset or 0,
    /// the default (the sink then waits out a broker outage and never fails on it).
    pub fn delivery_deadline(&self) -> Option<Duration> {
        let exactly_once = self.delivery == Delivery::ExactlyOnce;
        let Some((_, v)) = self.producer_value(&["message.timeout.ms", "delivery.timeout.ms"])
        else {
            return exactly_once.then_some(self.transaction_timeout.0);
        };
        let ms: u64 = v.to_string().trim().parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The librdkafka configuration: the ordering defaults, the typed options, then the
    /// `producer:` map as written.
    pub fn client_config(&self, sink: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        // librdkafka's debug lines (`producer: { debug: ... }`) pass only when asked for.
        c.set_log_level(if self.producer.contains_key("debug") {
            RDKafkaLogLevel::Debug
        } else {
            RDKafkaLogLevel::Warning
        });
        for (k, v) in ORDERING_DEFAULTS {
            c.set(k, v);
        }
        c.set("client.id", format!("sluice-{sink}"));
        c.set("bootstrap.servers", self.brokers.trim());
        c.set("acks", self.acks.setting());
        c.set("compression.codec", self.compression.codec());
        c.set("message.max.bytes", self.max_message_bytes.0.to_string());
        c.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        if self.delivery == Delivery::ExactlyOnce {
            let ms = self.transaction_timeout.0.as_millis().to_string();
            if let Some(id) = &self.transactional_id {
                c.set("transactional.id", id);
            }
            c.set("transaction.timeout.ms", &ms);
            // A record that waits longer than its transaction may live fails it.
            c.set("message.timeout.ms", ms);
        }
        self.security().apply(&mut c);
        for (k, v) in &self.producer {
            c.set(k, v.to_string());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(yaml: &str) -> Result<KafkaConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    fn parse(yaml: &str) -> KafkaConfig {
        try_parse(yaml).unwrap()
    }

    /// The base options plus `extra` YAML lines.
    fn with(extra: &str) -> KafkaConfig {
        parse(&format!(
            "brokers: localhost:9092\ntopic: logs-%{{source}}\n{extra}"
        ))
    }

    /// The keys of the problems found with the base options plus `extra`.
    fn keys(extra: &str) -> Vec<String> {
        with(extra).validate().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn a_header_may_be_sent_under_another_name() {
        let c = with("headers: [offset, { file: path }, { byteoffset: offset }]");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.headers[0], "offset");
        assert_eq!(
            (c.headers[1].name.as_str(), c.headers[1].from.as_str()),
            ("file", "path")
        );
        assert_eq!(
            keys("headers: [offset, { offset: path }]"),
            ["headers[1]"],
            "one Kafka name twice"
        );
        let two: Result<KafkaConfig, _> =
            serde_yaml::from_str("brokers: b\ntopic: t\nheaders: [{ a: path, b: file }]");
        assert!(two.unwrap_err().to_string().contains("one entry"));
    }

    #[test]
    fn defaults_are_the_ordering_and_no_loss_settings() {
        let c = with("");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.key.as_str(), "%{file}");
        assert_eq!(
            c.headers,
            ["path", "offset", "fid", "offset_end", "dropped_from"]
        );
        assert_eq!(
            (c.compression, c.acks, c.oversize),
            (Compression::Lz4, Acks::All, Oversize::Split)
        );
        let cc = c.client_config("k1");
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("partitioner"), Some("murmur2_random"));
        assert_eq!(cc.get("message.timeout.ms"), Some("0"));
        assert_eq!(cc.get("compression.codec"), Some("lz4"));
        assert_eq!(cc.get("message.max.bytes"), Some("1000000"));
        assert_eq!(cc.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(cc.get("client.id"), Some("sluice-k1"));
        assert_eq!(cc.get("statistics.interval.ms"), Some("1000"));
    }

    #[test]
    fn the_statistics_interval_is_the_default_or_the_producer_setting() {
        assert_eq!(with("").statistics_interval(), Duration::from_secs(1));
        let c = with("producer: { statistics.interval.ms: 60000 }");
        assert_eq!(c.statistics_interval(), Duration::from_secs(60));
    }

    #[test]
    fn producer_settings_pass_through_as_strings() {
        let c = with(
            "producer: { linger.ms: 20, socket.keepalive.enable: true, security.protocol: plaintext }",
        );
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let cc = c.client_config("k1");
        assert_eq!(cc.get("linger.ms"), Some("20"));
        assert_eq!(cc.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(cc.get("security.protocol"), Some("plaintext"));
        // TLS and SASL are built in.
        let tls = with(
            "producer: { security.protocol: sasl_ssl, sasl.mechanisms: SCRAM-SHA-512, sasl.username: u, sasl.password: p }",
        );
        assert!(tls.validate().is_empty(), "{:?}", tls.validate());
    }

    #[test]
    fn unknown_options_and_bad_values_are_refused_by_serde() {
        let err = |extra: &str| try_parse(&format!("brokers: x:1\n{extra}")).unwrap_err();
        assert!(err("topic: t\ncolour: red").contains("unknown field `colour`"));
        assert!(err("").contains("missing field `topic`"));
        assert!(err("topic: t\ncompression: brotli").contains("unknown variant `brotli`"));
        assert!(err("topic: t\nacks: 2").contains("`2` is not one of: all, 1, 0"));
        assert!(err("topic: logs-%{x").contains("is not closed"));
    }

    #[test]
    fn every_compression_codec_is_built_into_librdkafka() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let c = with(&format!("compression: {codec}"));
            assert!(c.validate().is_empty(), "{codec}: {:?}", c.validate());
            assert_eq!(c.client_config("k1").get("compression.codec"), Some(codec));
        }
    }

    #[test]
    fn acks_accepts_numbers_and_words() {
        let no_idem =
            "producer: { enable.idempotence: false, max.in.flight.requests.per.connection: 1 }";
        for (v, a) in [
            ("all", Acks::All),
            ("-1", Acks::All),
            ("1", Acks::Leader),
            ("0", Acks::None),
        ] {
            let c = with(&format!("acks: {v}\n{no_idem}"));
            assert_eq!(c.acks, a);
            assert!(c.validate().is_empty(), "{v}: {:?}", c.validate());
        }
    }

    #[test]
    fn ordering_breaking_settings_are_refused() {
        assert_eq!(
            keys("producer: { enable.idempotence: false }"),
            ["producer.enable.idempotence"]
        );
        assert_eq!(
            keys("producer: { enable.idempotence: false, max.in.flight: 3 }"),
            ["producer.enable.idempotence"]
        );
        assert_eq!(keys("acks: 1"), ["acks"]);
        assert_eq!(
            keys("producer: { max.in.flight.requests.per.connection: 6 }"),
            ["producer.max.in.flight.requests.per.connection"]
        );
        assert_eq!(
            keys("producer: { partitioner: random }"),
            ["producer.partitioner"]
        );
        assert_eq!(
            keys("producer: { partitioner: consistent_random }"),
            ["producer.partitioner"]
        );
        assert!(keys("producer: { partitioner: murmur2 }").is_empty());
        assert_eq!(keys("key: \"%{file}-%{offset}\""), ["key"]);
        let c = parse("brokers: x:1\ntopic: \"t-%{offset}\"");
        assert_eq!(c.validate()[0].key, "topic");
    }

    #[test]
    fn settings_owned_by_options_and_librdkafka_errors_name_the_key() {
        assert_eq!(
            keys("producer: { compression.type: gzip }"),
            ["producer.compression.type"]
        );
        assert_eq!(
            keys("producer: { transactional.id: t }"),
            ["producer.transactional.id"]
        );
        let p = with("producer: { no.such.setting: 1 }").validate();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "producer.no.such.setting");
        assert!(
            p[0].message.contains("No such configuration property"),
            "{}",
            p[0].message
        );
        assert_eq!(
            keys("producer: { linger.ms: soon }"),
            ["producer.linger.ms"]
        );
    }

    #[test]
    fn files_given_to_librdkafka_must_exist_and_be_readable() {
        let dir = std::env::temp_dir();
        let ca = dir.join(format!("sluice-test-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked here").unwrap();
        let ok = format!(
            "producer: {{ security.protocol: ssl, ssl.ca.location: {}, ssl.key.location: {} }}",
            dir.display(),
            ca.display()
        );
        assert!(keys(&ok).is_empty(), "{:?}", with(&ok).validate());
        assert!(keys("producer: { ssl.ca.location: probe }").is_empty());
        let bad = with(
            "producer: { security.protocol: ssl, ssl.ca.location: /nonexistent/ca.pem, \
             ssl.certificate.location: /nonexistent/cert.pem, ssl.key.location: /tmp }",
        )
        .validate();
        let _ = std::fs::remove_file(&ca);
        let found: Vec<&str> = bad.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            found,
            [
                "producer.ssl.ca.location",
                "producer.ssl.certificate.location",
                "producer.ssl.key.location"
            ],
            "{bad:?}"
        );
        assert!(
            bad[0].message.contains("cannot read `/nonexistent/ca.pem`")
                && bad[0].message.contains("No such file"),
            "{}",
            bad[0].message
        );
    }

    #[test]
    fn plain_checks() {
        let k = |yaml: &str| -> Vec<String> {
            parse(yaml).validate().into_iter().map(|p| p.key).collect()
        };
        assert_eq!(k("brokers: \" , \"\ntopic: t"), ["brokers"]);
        assert_eq!(k("brokers: x:1\ntopic: bad/topic"), ["topic"]);
        assert_eq!(
            keys("batch_size: 0\nbatches_in_flight: 0"),
            ["batch_size", "batches_in_flight"]
        );
        assert_eq!(keys("max_message_bytes: 10"), ["max_message_bytes"]);
        assert_eq!(
            keys("headers: [path, \"\", path]"),
            ["headers[1]", "headers[2]"]
        );
        assert!(keys("headers: []\nmax_message_bytes: 64KiB").is_empty());
    }

    #[test]
    fn exactly_once_options_are_checked_and_set_the_transactional_producer() {
        let c = with("delivery: exactly_once\ntransactional_id: a-b");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let cc = c.client_config("k1");
        assert_eq!(cc.get("transactional.id"), Some("a-b"));
        assert_eq!(cc.get("transaction.timeout.ms"), Some("60000"));
        assert_eq!(cc.get("message.timeout.ms"), Some("60000"));
        assert_eq!(c.delivery_deadline(), Some(Duration::from_secs(60)));
        assert_eq!(c.positions_topic, "__sluice_positions");
        assert_eq!(keys("transactional_id: x"), ["transactional_id"]);
        let eos = "delivery: exactly_once\n";
        for (extra, key) in [
            ("transactional_id: ' '", "transactional_id"),
            ("transaction_timeout: 500ms", "transaction_timeout"),
            ("transaction_interval: 40s", "transaction_interval"),
            ("transaction_interval: 0s", "transaction_interval"),
            ("tombstone_after: 10s", "tombstone_after"),
            ("positions_topic: 'a b'", "positions_topic"),
            (
                "producer: { enable.idempotence: false }",
                "producer.enable.idempotence",
            ),
            (
                "producer: { message.timeout.ms: 120000 }",
                "producer.message.timeout.ms",
            ),
            (
                "producer: { transactional.id: t }",
                "producer.transactional.id",
            ),
            (
                "producer: { transaction.timeout.ms: 9 }",
                "producer.transaction.timeout.ms",
            ),
        ] {
            assert_eq!(keys(&format!("{eos}{extra}")), [key], "{extra}");
        }
        let at_least_once = with("");
        assert_eq!(at_least_once.delivery, Delivery::AtLeastOnce);
        assert_eq!(
            at_least_once.client_config("k1").get("transactional.id"),
            None
        );
    }
}
