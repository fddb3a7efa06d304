//! End-to-end: spool files through the real `sluice` binary into a real Kafka broker (KRaft,
//! provisioned by scripts/kafka-dev), read back with kcat. Every line arrives, each file's
//! lines sit in one partition (the one Kafka's Java partitioner picks for the key) in file
//! order, and a broker outage mid-stream loses nothing and reorders nothing. An outage, a
//! wrong broker address or a missing topic shows in `/metrics` and `/health`.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, completed, drop_file, free_port, http_get, spool_dirs, wait_until};
use support::kafka::{KafkaBroker, Record, murmur2_partition};

const PARTITIONS: i32 = 4;
const LONG: Duration = Duration::from_secs(180);

fn config(
    spool: &Path,
    data: &Path,
    bootstrap: &str,
    topic: &str,
    port: u16,
    capacity: usize,
) -> String {
    config_with(spool, data, bootstrap, topic, port, capacity, "")
}

/// [`config`] with extra lines for the sink (indented as its options).
fn config_with(
    spool: &Path,
    data: &Path,
    bootstrap: &str,
    topic: &str,
    port: u16,
    capacity: usize,
    sink_extra: &str,
) -> String {
    format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 20s
  http: 127.0.0.1:{port}
  sources:
    r1:
      type: spooldir
      dir: {spool}
      channel: c1
      batch_size: 500
  channels:
    c1: {{ type: memory, capacity: {capacity} }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: {topic}
      batch_size: 700
      batches_in_flight: 4
{sink_extra}"#,
        data = data.display(),
        spool = spool.display(),
    )
}

/// The lines of file `name`: each names its file and number, with some varying filler.
fn file_lines(name: &str, lines: usize) -> Vec<String> {
    (0..lines)
        .map(|i| {
            format!(
                "{name} {i:06} level=info msg=\"request done\" {}",
                "z".repeat(i % 40)
            )
        })
        .collect()
}

/// The file's bytes and the byte offset of each line.
fn file_content(lines: &[String]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for l in lines {
        offsets.push(out.len() as u64);
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    (out, offsets)
}

/// A counter of the agent's `/metrics`, 0 while it does not answer.
fn metric(port: u16, name: &str) -> u64 {
    let Some((_, body)) = http_get(port, "/metrics") else {
        return 0;
    };
    body.lines()
        .find(|l| l.starts_with(name) && l.contains("sink=\"k1\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The first line of `/health` (`ok` or `degraded`) and the whole body; the status must be
/// 200 (the agent is alive, whatever its sinks do).
fn health(port: u16) -> Option<(String, String)> {
    let (status, body) = http_get(port, "/health")?;
    assert!(status.contains(" 200 "), "{status}");
    Some((body.lines().next()?.to_owned(), body))
}

/// What arrived for each file: its records in partition order.
fn by_file(records: &[Record]) -> HashMap<String, Vec<&Record>> {
    let mut files: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in records {
        let key = String::from_utf8(r.key.clone().expect("every record has a key")).unwrap();
        files.entry(key).or_default().push(r);
    }
    files
}

/// Checks one file's records: one partition, the Java partitioner's for the key, and the
/// lines in file order with their path and offset headers. With `exactly_once` every line
/// arrives once; otherwise lines may repeat, but the first arrivals are the file in order.
fn check_file(
    name: &str,
    path: &Path,
    recs: &[&Record],
    lines: &[String],
    offsets: &[u64],
    exactly_once: bool,
) {
    let partition = murmur2_partition(name.as_bytes(), PARTITIONS);
    assert!(
        recs.iter().all(|r| r.partition == partition),
        "{name}: every record in partition {partition} (murmur2 of the key)"
    );
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for r in recs {
        let value = r.value_str();
        let i: usize = value.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(value, lines[i], "{name}: record content");
        assert_eq!(
            r.header("path"),
            Some(path.to_str().unwrap().as_bytes()),
            "{name}: path header"
        );
        assert_eq!(
            r.header("offset"),
            Some(offsets[i].to_string().as_bytes()),
            "{name}: offset header"
        );
        if seen.insert(i) {
            firsts.push(i);
        }
    }
    let expected: Vec<usize> = (0..lines.len()).collect();
    assert_eq!(
        firsts, expected,
        "{name}: every line arrived, first arrivals in file order"
    );
    if exactly_once {
        assert_eq!(recs.len(), lines.len(), "{name}: no line repeated");
    }
}

#[test]
fn spool_files_arrive_exactly_once_in_file_order_on_the_java_partition() {
    let broker = KafkaBroker::start();
    let topic = "sluice-e2e-order";
    broker.create_topic(topic, PARTITIONS);
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config(&spool, &data, &broker.bootstrap(), topic, port, 10_000),
    );

    let names: Vec<String> = (0..6).map(|i| format!("app-{i}.log")).collect();
    let mut files = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let lines = file_lines(name, 3000 + 500 * n);
        let (content, offsets) = file_content(&lines);
        drop_file(&spool, name, &content);
        files.push((name.clone(), lines, offsets));
    }
    let total: usize = files.iter().map(|(_, l, _)| l.len()).sum();
    wait_until(LONG, "every file is delivered and renamed", || {
        completed(&spool) == files.len()
    });
    assert_eq!(metric(port, "sluice_sink_events_total") as usize, total);
    assert_eq!(metric(port, "sluice_sink_rollbacks_total"), 0);

    let records = broker.consume_all(topic, total, LONG);
    assert_eq!(records.len(), total, "every line exactly once");
    let got = by_file(&records);
    assert_eq!(got.len(), files.len());
    for (name, lines, offsets) in &files {
        check_file(name, &spool.join(name), &got[name], lines, offsets, true);
    }
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
}

#[test]
fn a_broker_outage_mid_stream_loses_nothing_and_keeps_order() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned("a_broker_outage_mid_stream_loses_nothing_and_keeps_order") {
        return;
    }
    let topic = "sluice-e2e-outage";
    broker.create_topic(topic, PARTITIONS);
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    // A small channel: during the outage it fills and the source waits.
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config(&spool, &data, &broker.bootstrap(), topic, port, 3000),
    );

    let mut files = Vec::new();
    let mut add = |name: String, n: usize| {
        let lines = file_lines(&name, n);
        let (content, offsets) = file_content(&lines);
        drop_file(&spool, &name, &content);
        files.push((name, lines, offsets));
    };
    for i in 0..4 {
        add(format!("before-{i}.log"), 20_000);
    }
    wait_until(LONG, "delivery is under way", || {
        metric(port, "sluice_sink_events_total") >= 2000
    });

    broker.stop();
    // The outage shows: not connected, errors counted, /health degraded.
    agent.wait_for(LONG, "the sink reports the outage", || {
        metric(port, "sluice_sink_connected") == 0 && metric(port, "sluice_sink_errors_total") > 0
    });
    let (state, body) = health(port).unwrap();
    assert_eq!(state, "degraded", "{body}");
    assert!(body.contains("sink k1: not connected"), "{body}");
    let stalled_at = metric(port, "sluice_sink_events_total");
    // Files dropped during the outage can only arrive after it.
    for i in 0..2 {
        add(format!("during-{i}.log"), 5000);
    }
    // The outage lasts several seconds; nothing is committed meanwhile (no delivery
    // deadline: the sink waits, nothing fails).
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        metric(port, "sluice_sink_events_total"),
        stalled_at,
        "nothing committed while the broker is down"
    );
    assert!(
        agent.running(),
        "the agent waits out the outage: {}",
        agent.stderr_text()
    );

    broker.restart();
    add("after-0.log".to_owned(), 5000);
    wait_until(LONG, "every file is delivered and renamed", || {
        completed(&spool) == files.len()
    });
    let total: usize = files.iter().map(|(_, l, _)| l.len()).sum();
    assert_eq!(metric(port, "sluice_sink_events_total") as usize, total);
    wait_until(LONG, "connected again", || {
        metric(port, "sluice_sink_connected") == 1
    });
    let (state, body) = health(port).unwrap();
    assert_eq!(state, "ok", "{body}");

    let records = broker.consume_all(topic, total, LONG);
    let got = by_file(&records);
    assert_eq!(got.len(), files.len());
    for (name, lines, offsets) in &files {
        check_file(name, &spool.join(name), &got[name], lines, offsets, false);
    }
    let repeated = records.len() - total;
    eprintln!(
        "outage: the broker stopped after {stalled_at} lines were delivered; {} records for \
         {total} lines ({repeated} repeated)",
        records.len()
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
}

#[test]
fn the_shipped_spooldir_kafka_config_delivers_to_kafkatopic() {
    let broker = KafkaBroker::start();
    broker.create_topic("kafkatopic", PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let config =
        std::fs::read_to_string(support::agent::repo_root().join("conf/spooldir-kafka.yaml"))
            .unwrap();
    let port = free_port().to_string();
    let env = [
        ("KAFKA_BROKERS", broker.bootstrap()),
        ("SPOOL_DIR", spool.display().to_string()),
        ("SLUICE_DATA", dir.path().join("data").display().to_string()),
        ("SLUICE_HTTP", format!("127.0.0.1:{port}")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut agent = Agent::start_with_env(&dir.path().join("agent"), "a1", &config, &env);
    let lines = file_lines("syslog", 2000);
    let (content, offsets) = file_content(&lines);
    drop_file(&spool, "syslog", &content);
    wait_until(LONG, "the file is delivered and renamed", || {
        completed(&spool) == 1
    });
    let records = broker.consume_all("kafkatopic", lines.len(), LONG);
    assert_eq!(records.len(), lines.len());
    check_file(
        "syslog",
        &spool.join("syslog"),
        &by_file(&records)["syslog"],
        &lines,
        &offsets,
        true,
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
}

/// librdkafka's own log lines (here its broker debug lines, asked for with `producer.debug`)
/// reach the agent's log: rdkafka routes them to the queue the sink serves, and before they
/// were served there they were dropped, so not even librdkafka's warnings were ever seen.
#[test]
fn librdkafka_log_lines_reach_the_agent_log() {
    let (dir, spool, data) = spool_dirs();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let cfg = config_with(
        &spool,
        &data,
        &nowhere,
        "app-logs",
        free_port(),
        1000,
        "      producer: { debug: broker }\n",
    );
    let mut agent = Agent::start_with_env(
        dir.path(),
        "a1",
        &cfg,
        &[("RUST_LOG", "info,sluice_sinks=debug")],
    );
    wait_until(
        Duration::from_secs(60),
        "librdkafka's broker debug lines in the log",
        || agent.stderr_text().contains("librdkafka: "),
    );
    let log = agent.stderr_text();
    assert!(
        log.lines().any(|l| l.contains("librdkafka: ")
            && l.contains("facility=")
            && l.contains("sink{sink=k1}")),
        "each line names its sink (by its span) and facility: {log}"
    );
    agent.kill();
}

#[test]
fn a_wrong_broker_address_shows_as_not_connected_with_errors() {
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    // Nothing listens there.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config(&spool, &data, &nowhere, "app-logs", port, 1000),
    );
    let lines = file_lines("app.log", 5000);
    drop_file(&spool, "app.log", &file_content(&lines).0);
    wait_until(LONG, "errors counted while not connected", || {
        metric(port, "sluice_sink_errors_total") > 0
    });
    let (_, body) = http_get(port, "/metrics").unwrap();
    assert!(
        body.contains("sluice_sink_connected{agent=\"a1\",sink=\"k1\"} 0"),
        "{body}"
    );
    assert!(
        body.contains(
            "sluice_sink_last_delivery_timestamp_seconds{agent=\"a1\",sink=\"k1\"} 0.000"
        ),
        "nothing delivered: {body}"
    );
    assert!(
        body.contains("sluice_sink_last_delivery_age_seconds{"),
        "{body}"
    );
    let (state, body) = health(port).unwrap();
    assert_eq!(state, "degraded", "{body}");
    assert!(
        body.contains("sink k1: not connected; nothing delivered since the start"),
        "{body}"
    );
    assert!(
        body.contains("channel c1: "),
        "the channels' fill level: {body}"
    );
    assert_eq!(metric(port, "sluice_sink_events_total"), 0);
    assert!(agent.running(), "the agent waits: {}", agent.stderr_text());
    agent.kill();
}

#[test]
fn a_missing_topic_is_named_and_counted_then_delivery_resumes_once_it_exists() {
    let broker = KafkaBroker::start();
    let topic = "sluice-e2e-missing";
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    // The sink does not ask the broker to create the topic, and librdkafka declares it
    // missing after 1 s instead of its default 30 s (the time it leaves a topic just created
    // elsewhere to appear).
    let extra = "      producer: { allow.auto.create.topics: false, topic.metadata.propagation.max.ms: 1000 }\n";
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config_with(
            &spool,
            &data,
            &broker.bootstrap(),
            topic,
            port,
            10_000,
            extra,
        ),
    );
    let lines = file_lines("app.log", 2000);
    let (content, offsets) = file_content(&lines);
    drop_file(&spool, "app.log", &content);
    wait_until(LONG, "the missing topic is reported", || {
        metric(port, "sluice_sink_errors_total") > 0
            && agent
                .stderr_text()
                .contains(&format!("topic `{topic}` does not exist"))
    });
    wait_until(LONG, "connected: the broker answers", || {
        metric(port, "sluice_sink_connected") == 1
    });
    let (state, body) = health(port).unwrap();
    assert_eq!(state, "degraded", "{body}");
    assert!(
        body.contains("delivery failing")
            && body.contains(&format!("topic `{topic}` does not exist")),
        "{body}"
    );
    assert_eq!(completed(&spool), 0);

    broker.create_topic(topic, PARTITIONS);
    wait_until(LONG, "the file is delivered once the topic exists", || {
        completed(&spool) == 1
    });
    assert!(metric(port, "sluice_sink_retries_total") >= 1);
    let (state, body) = health(port).unwrap();
    assert_eq!(state, "ok", "{body}");
    let records = broker.consume_all(topic, lines.len(), LONG);
    check_file(
        "app.log",
        &spool.join("app.log"),
        &by_file(&records)["app.log"],
        &lines,
        &offsets,
        false,
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
}

/// `/ready`: its status and body.
fn ready(port: u16) -> Option<(bool, String)> {
    let (status, body) = http_get(port, "/ready")?;
    Some((status.contains(" 200 "), body))
}

/// `/ready` is 503 with the reason while the broker is down at start, 200 once the sink
/// reached it (and stays 200 through a later outage: the files on disk are the buffer), and
/// 503 again while the agent drains after SIGTERM. The later outage, and the full channel
/// that holds the source back during it, are each logged once, and their end with how long
/// they lasted.
#[test]
fn ready_waits_for_the_broker_outages_are_logged_once_and_draining_is_unready() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned(
        "ready_waits_for_the_broker_outages_are_logged_once_and_draining_is_unready",
    ) {
        return;
    }
    let topic = "sluice-e2e-ready";
    broker.create_topic(topic, PARTITIONS);
    broker.stop();
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config(&spool, &data, &broker.bootstrap(), topic, port, 3000),
    );
    wait_until(LONG, "/ready answers", || ready(port).is_some());
    // The broker is down: not ready, and the reason names the sink. Several reads, so that a
    // 200 while the broker is down cannot slip through between them.
    for _ in 0..5 {
        let (ok, body) = ready(port).unwrap();
        assert!(!ok, "ready while the broker is down: {body}");
        assert!(body.contains("\"ready\":false"), "{body}");
        assert!(
            body.contains("sink k1 has not reached its output yet"),
            "{body}"
        );
    }
    // The broker being down at start is one episode, logged once it has lasted a few
    // seconds: the broker comes back only then (back sooner, there would be no episode to
    // end, rightly, and the wait for its end below would wait for nothing).
    let logged = |what: &str| agent.stderr_text().matches(what).count();
    wait_until(LONG, "the start's episode logged", || {
        logged("sink cannot reach its output") == 1
    });
    broker.restart();
    wait_until(LONG, "ready once the broker is up", || {
        ready(port).is_some_and(|(ok, _)| ok)
    });
    assert_eq!(ready(port).unwrap().1.trim(), "{\"ready\":true}");
    wait_until(LONG, "the start's episode ended", || {
        logged("sink reaches its output again") == 1
    });
    assert_eq!(logged("sink cannot reach its output"), 1);

    // A later outage does not make it unready. It is logged once, with its duration, and so
    // is the full channel that holds the source back meanwhile.
    broker.stop();
    let lines = file_lines("during.log", 10_000);
    drop_file(&spool, "during.log", &file_content(&lines).0);
    wait_until(LONG, "the outage and the full channel logged", || {
        logged("sink cannot reach its output") == 2 && logged("channel full") == 1
    });
    assert!(
        ready(port).unwrap().0,
        "unready during an outage after the start"
    );
    broker.restart();
    wait_until(LONG, "the recovery logged and the file delivered", || {
        logged("sink reaches its output again") == 2
            && logged("channel has room again") == 1
            && completed(&spool) == 1
    });
    let stderr = agent.stderr_text();
    assert_eq!(logged("sink cannot reach its output"), 2, "{stderr}");
    assert_eq!(logged("channel full"), 1, "{stderr}");
    let again = stderr
        .lines()
        .filter(|l| l.contains("sink reaches its output again"))
        .nth(1)
        .unwrap();
    assert!(again.contains("down_for="), "{again}");

    // SIGTERM with lines still to deliver: unready while it drains.
    broker.stop();
    let lines = file_lines("late.log", 2000);
    drop_file(&spool, "late.log", &file_content(&lines).0);
    agent.wait_for(LONG, "the sink reports the outage", || {
        metric(port, "sluice_sink_connected") == 0
    });
    // The source read them (a new file is read once it stayed unchanged for `ready_after`):
    // they wait in the channel, so the drain has something to wait for.
    wait_until(LONG, "the late lines in the channel", || {
        http_get(port, "/metrics").is_some_and(|(_, page)| {
            page.lines()
                .any(|l| l.starts_with("sluice_source_events_total{") && l.ends_with(" 12000"))
        })
    });
    agent.signal(libc::SIGTERM);
    wait_until(LONG, "unready while draining", || {
        ready(port).is_some_and(|(ok, body)| !ok && body.contains("the agent is stopping"))
    });
    assert!(agent.running(), "still draining: the broker is down");
    agent.signal(libc::SIGTERM);
    agent.wait_exit(LONG);
}
