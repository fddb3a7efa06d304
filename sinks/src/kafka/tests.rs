//! The Kafka sink against librdkafka's mock cluster: delivery and commit, ordering with
//! several batches in flight, injected broker errors, the oversize policies, abort.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_channels::lifecycle::{Phase, ShutdownTrigger};
use sluice_channels::{Channel, Event, Origin};

use super::{KafkaConfig, KafkaSink};
use crate::testing::Recording;
use crate::{SinkContext, SinkError, SinkMetrics, drive};

const TOPIC: &str = "logs";
const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(60);

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(1).expect("mock cluster");
    c.create_topic(TOPIC, PARTITIONS, 1).expect("topic");
    // The mock cluster answers no admin request: the positions topic of exactly-once
    // delivery is there already.
    c.create_topic("__sluice_positions", 1, 1)
        .expect("positions topic");
    c
}

fn origin(path: &str) -> Arc<Origin> {
    Arc::new(Origin {
        source: "r1".into(),
        path: format!("/spool/{path}"),
        file: path.into(),
        host: "h".into(),
        headers: vec![("env".into(), "test".into())],
    })
}

/// `n` lines of the file `name`: bodies `name:i`, offsets 100 apart.
fn lines(name: &str, n: usize) -> Vec<Event> {
    let o = origin(name);
    (0..n)
        .map(|i| Event {
            body: Bytes::from(format!("{name}:{i}")),
            origin: o.clone(),
            offset: i as u64 * 100,
            read_at_ms: 1_700_000_000_000,
            headers: Default::default(),
        })
        .collect()
}

fn config(bootstrap: &str, extra: &str) -> KafkaConfig {
    let yaml = format!("brokers: {bootstrap}\ntopic: {TOPIC}\n{extra}");
    let cfg: KafkaConfig = serde_yaml::from_str(&yaml).unwrap();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    cfg
}

struct Running {
    trigger: ShutdownTrigger,
    metrics: Arc<SinkMetrics>,
    task: tokio::task::JoinHandle<Result<(), SinkError>>,
}

fn start(cfg: KafkaConfig, channel: Arc<dyn Channel>) -> Running {
    let trigger = ShutdownTrigger::new();
    let metrics = Arc::new(SinkMetrics::default());
    let ctx = SinkContext {
        name: "k1".into(),
        channel,
        shutdown: trigger.subscribe(),
        metrics: metrics.clone(),
    };
    let sink = KafkaSink::new(cfg, "k1", metrics.clone());
    let task = tokio::spawn(drive(Box::new(sink), ctx));
    Running {
        trigger,
        metrics,
        task,
    }
}

impl Running {
    async fn finish(self) -> (Result<(), SinkError>, Arc<SinkMetrics>) {
        let r = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the sink finished in time")
            .expect("the sink did not panic");
        (r, self.metrics)
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A record read back: partition, key, value, headers.
#[derive(Debug, Clone)]
struct Got {
    partition: i32,
    timestamp: Option<i64>,
    key: String,
    value: String,
    headers: HashMap<String, String>,
}

/// Reads every partition of `topic` from the beginning until `done` holds for what arrived.
async fn consume_until(
    bootstrap: &str,
    topic: &str,
    done: impl Fn(&[Got]) -> bool + Send + 'static,
) -> Vec<Got> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let partitions = consumer
            .fetch_metadata(Some(&topic), DEADLINE)
            .unwrap()
            .topics()[0]
            .partitions()
            .len() as i32;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let end = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while !done(&got) {
            assert!(
                Instant::now() < end,
                "timed out reading; got {} records",
                got.len()
            );
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.unwrap();
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default();
            got.push(Got {
                partition: m.partition(),
                timestamp: m.timestamp().to_millis(),
                key: text(m.key()),
                value: text(m.payload()),
                headers,
            });
        }
        got
    })
    .await
    .unwrap()
}

/// Reads the test topic until `count` records arrived.
async fn consume(bootstrap: &str, count: usize) -> Vec<Got> {
    consume_until(bootstrap, TOPIC, move |got| got.len() >= count).await
}

/// Checks that every file's lines sit in one partition, in file order, and returns the
/// records per file.
fn by_file(got: &[Got]) -> HashMap<String, Vec<Got>> {
    let mut files: HashMap<String, Vec<Got>> = HashMap::new();
    for g in got {
        files.entry(g.key.clone()).or_default().push(g.clone());
    }
    for (file, recs) in &files {
        assert!(
            recs.iter().all(|r| r.partition == recs[0].partition),
            "{file} spans partitions"
        );
    }
    files
}

/// The values in order of first arrival, with the count of repeats.
fn first_arrivals(recs: &[Got]) -> (Vec<String>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    for r in recs {
        if seen.insert(r.value.clone()) {
            order.push(r.value.clone());
        }
    }
    (order, recs.len() - seen.len())
}

fn expected(name: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{name}:{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_line_once_in_file_order_then_commits() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    for name in ["a.log", "b.log", "c.log"] {
        for chunk in lines(name, 1000).chunks(250) {
            channel.put(chunk.to_vec()).await.unwrap();
        }
    }
    channel.close();
    let sink = start(
        config(&bootstrap, "batch_size: 100\nbatches_in_flight: 4"),
        channel.clone(),
    );
    let (result, metrics) = sink.finish().await;
    result.unwrap();

    let stats = channel.stats();
    assert_eq!((stats.committed_total, stats.events), (3000, 0));
    assert_eq!(SinkMetrics::get(&metrics.events), 3000);
    assert_eq!(SinkMetrics::get(&metrics.batches), 30);
    assert_eq!(SinkMetrics::get(&metrics.rollbacks), 0);

    let got = consume(&bootstrap, 3000).await;
    let files = by_file(&got);
    assert_eq!(files.len(), 3);
    for name in ["a.log", "b.log", "c.log"] {
        let recs = &files[name];
        let values: Vec<String> = recs.iter().map(|r| r.value.clone()).collect();
        assert_eq!(
            values,
            expected(name, 1000),
            "{name}: every line once, in order"
        );
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.headers["path"], format!("/spool/{name}"));
            assert_eq!(r.headers["offset"], (i * 100).to_string());
            assert_eq!(r.headers.len(), 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_oldest_first_with_several_batches_in_flight() {
    let mock = cluster();
    mock.broker_round_trip_time(1, Duration::from_millis(50))
        .unwrap();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 2000)).await.unwrap();
    channel.put(lines("b.log", 2000)).await.unwrap();
    channel.close();
    let cfg = config(
        &bootstrap,
        "batch_size: 50\nbatches_in_flight: 8\nproducer: { linger.ms: 1 }",
    );
    let (result, _) = start(cfg, channel.clone()).finish().await;
    result.unwrap();

    assert!(
        channel.max_outstanding.load(Ordering::SeqCst) > 1,
        "several batches were in flight"
    );
    let commits = channel.commits.lock().unwrap().clone();
    assert_eq!(commits.len(), 80);
    let mut next = 0;
    for (first, end) in commits {
        assert_eq!(first, next, "commits are contiguous and oldest first");
        next = end;
    }
    assert_eq!(next, 4000);
    let files = by_file(&consume(&bootstrap, 4000).await);
    for name in ["a.log", "b.log"] {
        let values: Vec<String> = files[name].iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, expected(name, 2000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_broker_errors_are_retried_without_loss_or_reordering() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 4],
    );
    let channel = Recording::new();
    channel.put(lines("a.log", 1500)).await.unwrap();
    channel.close();
    let (result, metrics) = start(config(&bootstrap, "batch_size: 100"), channel.clone())
        .finish()
        .await;
    result.unwrap();
    assert_eq!(channel.stats().committed_total, 1500);
    assert_eq!(
        SinkMetrics::get(&metrics.rollbacks),
        0,
        "librdkafka retried by itself"
    );
    let files = by_file(&consume(&bootstrap, 1500).await);
    let values: Vec<String> = files["a.log"].iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, expected("a.log", 1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_delivery_error_rolls_back_and_a_new_producer_delivers() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let channel = Recording::new();
    channel.put(lines("a.log", 1000)).await.unwrap();
    channel.put(lines("b.log", 1000)).await.unwrap();
    channel.close();
    let (result, metrics) = start(config(&bootstrap, "batch_size: 100"), channel.clone())
        .finish()
        .await;
    result.unwrap();
    assert!(
        SinkMetrics::get(&metrics.rollbacks) >= 1,
        "the failed batch was rolled back"
    );
    assert!(SinkMetrics::get(&metrics.errors) >= 1);
    assert_eq!(channel.stats().committed_total, 2000);

    // At least once: a rolled-back batch may repeat lines that were delivered, but every line
    // arrives and first arrivals keep file order.
    let total = consume_until(&bootstrap, TOPIC, |got| {
        let mut firsts: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
        for g in got {
            firsts.entry(&g.key).or_default().insert(&g.value);
        }
        ["a.log", "b.log"]
            .iter()
            .all(|f| firsts.get(f).is_some_and(|s| s.len() == 1000))
    })
    .await;
    let files = by_file(&total);
    for name in ["a.log", "b.log"] {
        assert_eq!(first_arrivals(&files[name]).0, expected(name, 1000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_makes_the_sink_wait_then_deliver_everything_in_order() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 500)).await.unwrap();
    let sink = start(config(&bootstrap, "batch_size: 100"), channel.clone());
    wait_until("the first lines are committed", || {
        channel.stats().committed_total == 500
    })
    .await;

    mock.broker_down(1).unwrap();
    channel.put(lines("b.log", 500)).await.unwrap();
    wait_until("batches are in flight", || {
        channel.outstanding.load(Ordering::SeqCst) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        channel.stats().committed_total,
        500,
        "nothing is committed while the broker is down"
    );
    mock.broker_up(1).unwrap();
    wait_until("the rest is committed", || {
        channel.stats().committed_total == 1000
    })
    .await;
    channel.close();
    let (result, metrics) = sink.finish().await;
    result.unwrap();
    assert_eq!(
        SinkMetrics::get(&metrics.rollbacks),
        0,
        "no delivery deadline: nothing failed"
    );
    let files = by_file(&consume(&bootstrap, 1000).await);
    for name in ["a.log", "b.log"] {
        let values: Vec<String> = files[name].iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, expected(name, 500));
    }
}

/// An ordinary outage, in which librdkafka keeps trying to connect, is waited out well past
/// the 60 statistics intervals (6 s here) after which a producer that stopped trying is given
/// up: nothing is rolled back, and everything arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_librdkafka_keeps_trying_through_never_rebuilds_the_producer() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 500)).await.unwrap();
    let sink = start(
        config(
            &bootstrap,
            "batch_size: 100\nproducer: { statistics.interval.ms: 100 }",
        ),
        channel.clone(),
    );
    let m = sink.metrics.clone();
    wait_until("the first lines are committed", || {
        channel.stats().committed_total == 500
    })
    .await;

    mock.broker_down(1).unwrap();
    channel.put(lines("b.log", 500)).await.unwrap();
    wait_until("batches are in flight", || {
        channel.outstanding.load(Ordering::SeqCst) > 0
    })
    .await;
    let past_the_limit = Instant::now() + Duration::from_secs(9);
    wait_until("past the limit, still waiting", || {
        Instant::now() >= past_the_limit || SinkMetrics::get(&m.rollbacks) > 0
    })
    .await;
    assert_eq!(SinkMetrics::get(&m.rollbacks), 0, "the producer was kept");
    assert!(!m.connected());
    mock.broker_up(1).unwrap();
    wait_until("the rest is committed", || {
        channel.stats().committed_total == 1000
    })
    .await;
    channel.close();
    let (result, _) = sink.finish().await;
    result.unwrap();
    let files = by_file(&consume(&bootstrap, 1000).await);
    for name in ["a.log", "b.log"] {
        let values: Vec<String> = files[name].iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, expected(name, 500));
    }
}

/// A small line, a 5000-byte line, a small line: the big one does not fit 1000-byte records.
async fn oversize_channel() -> Arc<Recording> {
    let o = origin("big.log");
    let ev = |body: Bytes, offset| Event {
        body,
        origin: o.clone(),
        offset,
        read_at_ms: 0,
        headers: Default::default(),
    };
    let big: String = (0..5000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let channel = Recording::new();
    channel
        .put(vec![
            ev(Bytes::from_static(b"before"), 0),
            ev(Bytes::from(big), 7),
            ev(Bytes::from_static(b"after"), 5008),
        ])
        .await
        .unwrap();
    channel.close();
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_is_split_into_ordered_pieces_by_default() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = oversize_channel().await;
    let (result, metrics) = start(
        config(&bootstrap, "max_message_bytes: 1000"),
        channel.clone(),
    )
    .finish()
    .await;
    result.unwrap();
    assert_eq!(SinkMetrics::get(&metrics.oversize), 1);
    assert_eq!(channel.stats().committed_total, 3);
    let files = by_file(&consume(&bootstrap, 8).await);
    let recs = &files["big.log"];
    assert_eq!(recs.first().unwrap().value, "before");
    assert_eq!(recs.last().unwrap().value, "after");
    let pieces = &recs[1..recs.len() - 1];
    assert!(pieces.len() >= 6, "5000 bytes in pieces under 1000");
    let joined: String = pieces.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(joined.len(), 5000);
    assert!(joined.starts_with("abcdefg"));
    let mut at = 7;
    for p in pieces {
        assert_eq!(
            p.headers["offset"],
            at.to_string(),
            "each piece carries its own offset"
        );
        at += p.value.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_can_be_skipped_and_is_counted() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = oversize_channel().await;
    let cfg = config(&bootstrap, "max_message_bytes: 1000\noversize: skip");
    let (result, metrics) = start(cfg, channel.clone()).finish().await;
    result.unwrap();
    assert_eq!(SinkMetrics::get(&metrics.oversize), 1);
    assert_eq!(channel.stats().committed_total, 3);
    let got = consume(&bootstrap, 2).await;
    let values: Vec<&str> = got.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_under_stop_stops_the_sink_and_stays_in_the_channel() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = oversize_channel().await;
    let cfg = config(&bootstrap, "max_message_bytes: 1000\noversize: stop");
    let (result, metrics) = start(cfg, channel.clone()).finish().await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("/spool/big.log at offset 7"), "{err}");
    assert_eq!(SinkMetrics::get(&metrics.oversize), 1);
    assert_eq!(channel.stats().committed_total, 0);
    let back = channel.take(10).await.unwrap().unwrap();
    assert_eq!(
        (back.first_seq, back.events.len()),
        (0, 3),
        "the batch is back at the head"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_name_kafka_refuses_stops_the_sink() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    let mut evs = lines("a.log", 3);
    let bad = Arc::new(Origin {
        headers: vec![("env".into(), "bad/name".into())],
        ..(*evs[0].origin).clone()
    });
    for e in &mut evs {
        e.origin = bad.clone();
    }
    channel.put(evs).await.unwrap();
    channel.close();
    let yaml = format!("brokers: {bootstrap}\ntopic: logs-%{{env}}");
    let cfg: KafkaConfig = serde_yaml::from_str(&yaml).unwrap();
    let (result, _) = start(cfg, channel.clone()).finish().await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("`logs-bad/name` is not a valid topic name"),
        "{err}"
    );
    assert_eq!(channel.stats().events, 3, "the lines stay in the channel");
}

/// A reload retires a sink with `Draining` while its channel stays open: the sink takes
/// nothing more, delivers what it took (here held up by a broker outage until the broker is
/// back), commits it, and returns; the rest waits in the channel, in order, for its successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_delivers_what_was_taken_and_leaves_the_rest_in_the_channel() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    mock.broker_down(1).unwrap();
    let channel = Recording::new();
    channel.put(lines("a.log", 1000)).await.unwrap();
    let sink = start(
        config(&bootstrap, "batch_size: 100\nbatches_in_flight: 3"),
        channel.clone(),
    );
    wait_until("three batches in flight", || {
        channel.outstanding.load(Ordering::SeqCst) == 3
    })
    .await;
    sink.trigger.advance(Phase::Draining);
    mock.broker_up(1).unwrap();
    let (result, metrics) = sink.finish().await;
    result.unwrap();
    assert_eq!(
        SinkMetrics::get(&metrics.events),
        300,
        "what it took, delivered"
    );
    assert_eq!(SinkMetrics::get(&metrics.rollbacks), 0);
    let stats = channel.stats();
    assert_eq!((stats.committed_total, stats.events), (300, 700));
    let rest = channel.take(1000).await.unwrap().unwrap();
    assert_eq!((rest.first_seq, rest.events.len()), (300, 700));
    assert_eq!(rest.events[0].body, "a.log:300");
    let got = consume(&bootstrap, 300).await;
    let values: Vec<String> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, expected("a.log", 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_returns_promptly_and_rolls_back_what_is_in_flight() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    mock.broker_down(1).unwrap();
    let channel = Recording::new();
    channel.put(lines("a.log", 300)).await.unwrap();
    let sink = start(config(&bootstrap, "batch_size: 100"), channel.clone());
    wait_until("batches are in flight", || {
        channel.outstanding.load(Ordering::SeqCst) == 3
    })
    .await;
    sink.trigger.advance(Phase::Aborting);
    let (result, metrics) = sink.finish().await;
    result.unwrap();
    assert_eq!(SinkMetrics::get(&metrics.rollbacks), 3);
    assert_eq!(channel.outstanding.load(Ordering::SeqCst), 0);
    let back = channel.take(1000).await.unwrap().unwrap();
    assert_eq!(
        (back.first_seq, back.events.len()),
        (0, 300),
        "everything is back, in order"
    );
    assert_eq!(back.events[0].body, "a.log:0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_choose_topic_and_key_and_headers_come_from_the_origin() {
    let mock = cluster();
    mock.create_topic("logs-r1", PARTITIONS, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 10)).await.unwrap();
    channel.close();
    let yaml = format!(
        "brokers: {bootstrap}\ntopic: logs-%{{source}}\nkey: \"%{{host}}/%{{file}}\"\nheaders: [env, host, offset, missing]"
    );
    let cfg: KafkaConfig = serde_yaml::from_str(&yaml).unwrap();
    let (result, _) = start(cfg, channel.clone()).finish().await;
    result.unwrap();
    let got = consume_until(&bootstrap, "logs-r1", |got| got.len() >= 10).await;
    assert_eq!(got.len(), 10);
    for (i, g) in by_file(&got)["h/a.log"].iter().enumerate() {
        assert_eq!(g.value, format!("a.log:{i}"));
        assert_eq!(
            g.headers.len(),
            3,
            "a header the source does not set is left out"
        );
        assert_eq!(g.headers["env"], "test");
        assert_eq!(g.headers["host"], "h");
        assert_eq!(g.headers["offset"], (i * 100).to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_may_choose_topic_partition_and_timestamp_per_event() {
    let mock = cluster();
    mock.create_topic("elsewhere", PARTITIONS, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    let mut events = lines("a.log", 6);
    for (i, ev) in events.iter_mut().enumerate() {
        if i % 2 == 1 {
            ev.headers.set("t".into(), "elsewhere");
            ev.headers.set("p".into(), "3");
            ev.headers.set("ts".into(), format!("{}", 1_000 + i));
        } else if i == 4 {
            ev.headers.set("p".into(), "not a number");
        }
    }
    channel.put(events).await.unwrap();
    channel.close();
    let cfg = config(
        &bootstrap,
        "topic_header: t\npartition_header: p\npartition: 1\ntimestamp_header: ts",
    );
    let (result, _) = start(cfg, channel.clone()).finish().await;
    result.unwrap();
    let here = consume(&bootstrap, 3).await;
    let there = consume_until(&bootstrap, "elsewhere", |g| g.len() >= 3).await;
    let values = |g: &[Got]| g.iter().map(|g| g.value.clone()).collect::<Vec<_>>();
    assert_eq!(values(&here), ["a.log:0", "a.log:2", "a.log:4"]);
    assert_eq!(values(&there), ["a.log:1", "a.log:3", "a.log:5"]);
    assert!(
        here.iter().all(|g| g.partition == 1),
        "the default partition, also for a header that is not a number"
    );
    assert!(here.iter().all(|g| g.timestamp == Some(1_700_000_000_000)));
    for (g, i) in there.iter().zip([1, 3, 5]) {
        assert_eq!((g.partition, g.timestamp), (3, Some(1_000 + i)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_shows_as_not_connected_and_counts_errors() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    let sink = start(
        config(&bootstrap, "producer: { statistics.interval.ms: 100 }"),
        channel.clone(),
    );
    let m = sink.metrics.clone();
    wait_until("connected (from librdkafka's statistics)", || m.connected()).await;
    assert!(m.health(0).ok());
    assert_eq!(SinkMetrics::get(&m.errors), 0);

    mock.broker_down(1).unwrap();
    wait_until("not connected, with errors counted", || {
        !m.connected() && SinkMetrics::get(&m.errors) > 0
    })
    .await;
    let h = m.health(0);
    assert!(!h.ok() && h.last_error.is_some(), "{h:?}");

    mock.broker_up(1).unwrap();
    wait_until("connected again", || m.connected()).await;
    channel.put(lines("a.log", 10)).await.unwrap();
    wait_until("delivered after the outage", || {
        channel.stats().committed_total == 10
    })
    .await;
    assert!(m.health(0).ok() && m.last_delivery_ms() > 0);
    channel.close();
    let (result, _) = sink.finish().await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_named_and_counted_until_it_exists() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 10)).await.unwrap();
    // The broker does not create it, and librdkafka declares it missing after 200 ms (30 s by
    // default, for topics just created elsewhere).
    let yaml = format!(
        "brokers: {bootstrap}\ntopic: app-logs\nproducer: {{ allow.auto.create.topics: false, \
         topic.metadata.propagation.max.ms: 200 }}"
    );
    let cfg: KafkaConfig = serde_yaml::from_str(&yaml).unwrap();
    let sink = start(cfg, channel.clone());
    let m = sink.metrics.clone();
    wait_until(
        "the missing topic is reported, the broker connected",
        || SinkMetrics::get(&m.errors) > 0 && m.health(0).failing && m.connected(),
    )
    .await;
    let h = m.health(0);
    let error = h.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("topic `app-logs` does not exist"),
        "the error names the topic: {error}"
    );
    assert!(h.connected && !h.ok(), "{h:?}");

    mock.create_topic("app-logs", PARTITIONS, 1).unwrap();
    wait_until("delivered once the topic exists", || {
        channel.stats().committed_total == 10
    })
    .await;
    assert!(m.health(0).ok(), "{:?}", m.health(0));
    assert!(SinkMetrics::get(&m.retries) >= 1);
    channel.close();
    let (result, _) = sink.finish().await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_broker_refuses_as_too_large_is_not_blamed_on_a_short_line() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let channel = Recording::new();
    channel.put(lines("a.log", 3)).await.unwrap();
    channel.close();
    let (result, metrics) = start(config(&bootstrap, ""), channel.clone())
        .finish()
        .await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("/spool/a.log at offset 0"), "{err}");
    assert!(
        err.contains("record batch holding this line")
            && err.contains("the line is 7 bytes")
            && err.contains("max_message_bytes (1000000 bytes)")
            && err.contains("topic `logs`"),
        "the error names the batch, the line's size and the limit: {err}"
    );
    assert_eq!(
        SinkMetrics::get(&metrics.oversize),
        0,
        "a 7-byte line is not an oversized line"
    );
    assert_eq!(channel.stats().events, 3, "the lines stay in the channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pieces_of_one_long_line_are_counted_once() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let o = origin("big.log");
    let ev = |body: String, offset| Event {
        body: Bytes::from(body),
        origin: o.clone(),
        offset,
        read_at_ms: 0,
        headers: Default::default(),
    };
    let piece = |n: usize| -> String { "x".repeat(n) };
    // One 15000-byte line that the source cut into three pieces of 5000 (contiguous offsets),
    // a short line, then another long line.
    let channel = Recording::new();
    channel
        .put(vec![
            ev("before".into(), 0),
            ev(piece(5000), 7),
            ev(piece(5000), 5007),
            ev(piece(5000), 10007),
            ev("after".into(), 15008),
            ev(piece(3000), 15014),
        ])
        .await
        .unwrap();
    channel.close();
    let (result, metrics) = start(
        config(&bootstrap, "max_message_bytes: 1000"),
        channel.clone(),
    )
    .finish()
    .await;
    result.unwrap();
    assert_eq!(
        SinkMetrics::get(&metrics.oversize),
        2,
        "two long lines, however many pieces"
    );
    assert_eq!(channel.stats().committed_total, 6);
}

const EOS: &str = "delivery: exactly_once\ntransactional_id: tx1\ntransaction_interval: 50ms\nbatch_size: 100\nbatches_in_flight: 4";

/// `n` lines of `name` from line `from` on (offsets as [`lines`] gives them).
fn lines_from(name: &str, from: usize, n: usize) -> Vec<Event> {
    lines(name, from + n).split_off(from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_skips_what_a_committed_transaction_holds_after_a_restart() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 1000)).await.unwrap();
    channel.close();
    let (result, metrics) = start(config(&bootstrap, EOS), channel.clone())
        .finish()
        .await;
    result.unwrap();
    assert_eq!(channel.stats().committed_total, 1000);
    assert!(SinkMetrics::get(&metrics.transactions) >= 1);
    assert_eq!(SinkMetrics::get(&metrics.skipped), 0);
    let positions = consume_until(&bootstrap, "__sluice_positions", |g| {
        g.iter().any(|p| p.value.contains("\"end\":99909"))
    })
    .await;
    assert_eq!(
        positions[0].key, "tx1\tr1\t/spool/a.log",
        "keyed by id, source, file"
    );

    // As after a crash between Kafka's commit and the channel's: the same lines come again,
    // then new ones.
    let again = Recording::new();
    again.put(lines("a.log", 1000)).await.unwrap();
    again.put(lines_from("a.log", 1000, 500)).await.unwrap();
    again.close();
    let (result, metrics) = start(config(&bootstrap, EOS), again.clone()).finish().await;
    result.unwrap();
    assert_eq!(
        again.stats().committed_total,
        1500,
        "skipped lines are committed"
    );
    assert_eq!(SinkMetrics::get(&metrics.skipped), 1000);
    let got = consume(&bootstrap, 1500).await;
    let values: Vec<String> = by_file(&got)["a.log"]
        .iter()
        .map(|r| r.value.clone())
        .collect();
    assert_eq!(values, expected("a.log", 1500), "each line once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_rolls_back_in_order_and_is_delivered_once() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 400)).await.unwrap();
    let sink = start(config(&bootstrap, EOS), channel.clone());
    wait_until("the first lines committed", || {
        channel.stats().committed_total >= 400
    })
    .await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    channel.put(lines_from("a.log", 400, 1600)).await.unwrap();
    channel.close();
    let (result, metrics) = sink.finish().await;
    result.unwrap();
    assert!(
        SinkMetrics::get(&metrics.rollbacks) >= 1,
        "a transaction was aborted"
    );
    assert_eq!(channel.stats().committed_total, 2000);
    let got = consume(&bootstrap, 2000).await;
    let values: Vec<String> = by_file(&got)["a.log"]
        .iter()
        .map(|r| r.value.clone())
        .collect();
    assert_eq!(
        values,
        expected("a.log", 2000),
        "read_committed: each line once, in order"
    );
}

/// What a real broker does to a producer whose `transactional.id` another one took over
/// (the mock cluster does not fence by itself): its records fail with an old epoch, and
/// bumping the epoch to abort is refused as fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_stops_the_sink_with_an_error_that_says_so() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let channel = Recording::new();
    channel.put(lines("a.log", 200)).await.unwrap();
    let sink = start(config(&bootstrap, EOS), channel.clone());
    wait_until("the first lines committed", || {
        channel.stats().committed_total >= 200
    })
    .await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH; 8],
    );
    mock.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 8],
    );
    channel.put(lines_from("a.log", 200, 200)).await.unwrap();
    let (result, metrics) = sink.finish().await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("fenced: another producer with transactional.id `tx1`"),
        "{err}"
    );
    assert_eq!(
        channel.stats().committed_total,
        200,
        "nothing more is committed"
    );
    assert_eq!(
        SinkMetrics::get(&metrics.retries),
        0,
        "no new producer to fence the other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_timeout_the_broker_refuses_stops_the_sink_at_once() {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    mock.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TRANSACTION_TIMEOUT; 4],
    );
    let channel = Recording::new();
    let (result, _) = start(config(&bootstrap, EOS), channel.clone())
        .finish()
        .await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("the broker refuses transaction_timeout (1m)"),
        "{err}"
    );
}
