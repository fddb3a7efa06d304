//! What each way of producing with rdkafka costs per record, against a real broker: the
//! Kafka sink itself (raw `rd_kafka_producev` through topic handles, delivery counted per
//! batch), rdkafka's `ThreadedProducer` with `BaseRecord`s and a delivery callback, and
//! rdkafka's `FutureProducer` (one future per record).
//!
//!     cargo run --release -p sluice-sinks --example producer_apis -- \
//!         MODE BROKERS TOPIC LINES [CORPUS_DIR]
//!
//! MODE is `sink`, `threaded` or `future`. Every mode sends the same records (the lines of the
//! corpus files, cycled: key = file name, headers `path` and `offset`) with the sink's
//! librdkafka settings (idempotent, acks=all, lz4), and prints one line of JSON with the
//! records, the wall time and the CPU time of the whole process (librdkafka's threads
//! included).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    ThreadedProducer,
};
use sluice_channels::lifecycle::ShutdownTrigger;
use sluice_channels::{Channel, Event, MemoryChannel, MemoryChannelConfig, Origin};
use sluice_sinks::kafka::{KafkaConfig, KafkaSink};
use sluice_sinks::{SinkContext, SinkMetrics, drive};

/// The user and system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The corpus lines as events, cycled up to `n`, one origin per file.
fn events(corpus: &str, n: usize) -> Vec<Event> {
    let mut files: Vec<(Arc<Origin>, Bytes)> = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(corpus)
        .expect("corpus folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    for p in paths {
        let origin = Arc::new(Origin {
            source: "r1".into(),
            path: p.display().to_string(),
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            host: "bench".into(),
            headers: Vec::new(),
        });
        files.push((origin, Bytes::from(std::fs::read(&p).unwrap())));
    }
    let mut out = Vec::with_capacity(n);
    'outer: loop {
        for (origin, data) in &files {
            let mut at = 0;
            for line in data.split(|&b| b == b'\n') {
                if out.len() == n {
                    break 'outer;
                }
                let start = at;
                at += line.len() + 1;
                let body = line.strip_suffix(b"\r").unwrap_or(line);
                if body.is_empty() {
                    continue;
                }
                out.push(Event {
                    body: data.slice(start..start + body.len()),
                    origin: origin.clone(),
                    offset: start as u64,
                    read_at_ms: 0,
                    headers: Default::default(),
                });
            }
        }
    }
    out
}

/// The sink's options; `SINK_OPTIONS` (YAML lines) adds to them, e.g. `batch_size: 5000`.
fn sink_config(brokers: &str, topic: &str) -> KafkaConfig {
    let extra = std::env::var("SINK_OPTIONS").unwrap_or_default();
    serde_yaml::from_str(&format!("brokers: {brokers}\ntopic: {topic}\n{extra}")).unwrap()
}

async fn run_sink(brokers: &str, topic: &str, evs: Vec<Event>) {
    let channel = Arc::new(MemoryChannel::new(
        "c1",
        MemoryChannelConfig {
            capacity: usize::MAX,
            capacity_bytes: usize::MAX,
        },
    ));
    for chunk in evs.chunks(1000) {
        channel.put(chunk.to_vec()).await.unwrap();
    }
    channel.close();
    let trigger = ShutdownTrigger::new();
    let metrics = Arc::new(SinkMetrics::default());
    let sink = KafkaSink::new(sink_config(brokers, topic), "k1", metrics.clone());
    let ctx = SinkContext {
        name: "k1".into(),
        channel: channel.clone(),
        shutdown: trigger.subscribe(),
        metrics,
    };
    drive(Box::new(sink), ctx).await.unwrap();
}

struct Counting(AtomicUsize);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        assert!(r.is_ok(), "delivery failed");
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn headers(ev: &Event) -> OwnedHeaders {
    let offset = ev.offset.to_string();
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: "path",
            value: Some(ev.origin.path.as_str()),
        })
        .insert(Header {
            key: "offset",
            value: Some(offset.as_str()),
        })
}

fn run_threaded(brokers: &str, topic: &str, evs: &[Event]) {
    let cfg = sink_config(brokers, topic).client_config("bench");
    let p: ThreadedProducer<Counting> = cfg
        .create_with_context(Counting(AtomicUsize::new(0)))
        .unwrap();
    for ev in evs {
        let mut record = BaseRecord::to(topic)
            .key(ev.origin.file.as_str())
            .payload(&ev.body[..])
            .headers(headers(ev));
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(p.context().0.load(Ordering::Relaxed), evs.len());
}

async fn run_future(brokers: &str, topic: &str, evs: &[Event]) {
    let cfg = sink_config(brokers, topic).client_config("bench");
    let p: FutureProducer = cfg.create().unwrap();
    let mut pending = std::collections::VecDeque::new();
    for ev in evs {
        let mut record = FutureRecord::to(topic)
            .key(ev.origin.file.as_str())
            .payload(&ev.body[..])
            .headers(headers(ev));
        loop {
            match p.send_result(record) {
                Ok(f) => {
                    pending.push_back(f);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    let f = pending.pop_front().expect("a full queue has records");
                    f.await.unwrap().unwrap();
                }
            }
        }
        if pending.len() >= 16_000 {
            pending.pop_front().unwrap().await.unwrap().unwrap();
        }
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, brokers, topic, lines, rest @ ..] = &args[..] else {
        eprintln!("usage: producer_apis sink|threaded|future BROKERS TOPIC LINES [CORPUS_DIR]");
        std::process::exit(2);
    };
    let corpus = rest
        .first()
        .map_or("/work/shared/corpus/loghub", String::as_str);
    let evs = events(corpus, lines.parse().expect("LINES is a number"));
    let bytes: usize = evs.iter().map(|e| e.body.len()).sum();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cpu0, t0) = (cpu_time(), Instant::now());
    match mode.as_str() {
        "sink" => rt.block_on(run_sink(brokers, topic, evs.clone())),
        "threaded" => run_threaded(brokers, topic, &evs),
        "future" => rt.block_on(run_future(brokers, topic, &evs)),
        other => panic!("unknown mode {other}"),
    }
    let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    println!(
        "{{\"mode\":\"{mode}\",\"records\":{},\"bytes\":{bytes},\"wall_s\":{:.3},\"cpu_s\":{:.2},\"records_per_s\":{:.0},\"cpu_ns_per_record\":{:.0}}}",
        evs.len(),
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        evs.len() as f64 / wall.as_secs_f64(),
        cpu.as_nanos() as f64 / evs.len() as f64
    );
}
