//! End-to-end exactly-once delivery (`delivery: exactly_once`): the agent is killed with
//! SIGKILL over and over at random moments while files arrive (spooldir, file and memory
//! channels) or while logs are written and rotated (taildir), the broker is stopped and
//! started again mid-stream, and a second agent takes over the first one's
//! `transactional.id`. Each time `sluice audit --no-duplicates` on a `read_committed` read, and
//! an independent reader (kcat, `read_committed` by default), must find every line exactly
//! once, in file order.

mod support;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::agent::{
    Agent, drop_file, free_port, http_get, sluice, spool_kafka_config, wait_until,
};
use support::kafka::{KafkaBroker, Record};
use support::rotation::{Line, Progress, Scheme, started, write_rotating};
use support::tail_topic::{PARTITIONS, kafka_sink, read_until};

const LONG: Duration = Duration::from_secs(180);
/// A file channel in the spool run's `WAL` folder.
const FILE_CHANNEL: &str = "{ type: file, dir: WAL, capacity: 64MiB, min_free_space: 1MiB }";

/// xorshift64*: kill moments that a failing run can repeat.
struct Moments(u64);

impl Moments {
    /// The next pause before a kill, in `from..from + spread`.
    fn next(&mut self, from: u64, spread: u64) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        Duration::from_millis(from + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % spread)
    }
}

/// `n` lines `TAG NNNNNNN` padded to varied lengths, each ending in a newline.
fn lines(tag: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 80);
    for i in 0..n {
        let pad = "x".repeat((i * 7) % 90);
        out.extend_from_slice(format!("{tag} {i:07} {pad}\n").as_bytes());
    }
    out
}

fn metric(port: u16, name: &str) -> Option<u64> {
    let body = http_get(port, "/metrics")?.1;
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The options that make sink `k1` deliver exactly once, appended to its mapping.
const EXACTLY_ONCE: &str = "      delivery: exactly_once\n      transaction_interval: 100ms\n";

/// An agent `a1` (data in `dir`, `agent` options such as `shutdown_timeout`) whose taildir
/// source `r1` follows the one file `live` (with `source` options such as `poll_interval`)
/// into channel `c1` (`channel`, a YAML flow mapping; `WAL` stands for `dir/wal`), drained by
/// an exactly-once Kafka sink into `topic`.
fn tail_one_file(
    dir: &Path,
    live: &Path,
    agent: &str,
    source: &str,
    channel: &str,
    broker: &KafkaBroker,
    topic: &str,
) -> String {
    format!(
        r#"
a1:
  data_dir: {dir}/data
{agent}  sources:
    r1: {{ type: taildir, channel: c1, paths: ["{live}"]{source} }}
  channels:
    c1: {channel}
{sink}{EXACTLY_ONCE}"#,
        dir = dir.display(),
        live = live.display(),
        channel = channel.replace("WAL", &dir.join("wal").display().to_string()),
        sink = kafka_sink(&broker.bootstrap(), topic),
    )
}

/// `sluice audit --no-duplicates` (with `--expect DIR` if given) must pass; returns its JSON.
fn audit_exactly_once(broker: &KafkaBroker, topic: &str, expect: Option<&Path>) -> String {
    let bootstrap = broker.bootstrap();
    let mut args = vec![
        "audit",
        "--brokers",
        &bootstrap,
        "--topic",
        topic,
        "--no-duplicates",
    ];
    let dir;
    if let Some(e) = expect {
        dir = e.display().to_string();
        args.extend(["--expect", &dir]);
    }
    let (code, out, err) = sluice(&args);
    assert_eq!(code, 0, "audit {topic}:\n{out}{err}");
    out
}

/// Checks with kcat (`read_committed`): the lines of each file exactly once and in order.
fn check_once_in_order(broker: &KafkaBroker, topic: &str, files: &HashMap<String, usize>) {
    let total: usize = files.values().sum();
    let records = broker.consume_all(topic, total, Duration::from_secs(60));
    let mut next: HashMap<String, usize> = HashMap::new();
    for r in &records {
        let text = r.value_str();
        let mut parts = text.split(' ');
        let tag = parts.next().unwrap().to_owned();
        let seq: usize = parts.next().unwrap().parse().unwrap();
        let n = next.entry(tag.clone()).or_default();
        assert_eq!(seq, *n, "{tag}: each line once, in order");
        *n += 1;
    }
    for (tag, n) in files {
        assert_eq!(next.get(tag), Some(n), "{tag} complete");
    }
    assert_eq!(records.len(), total);
}

/// A spool folder fed with generated files (copies kept for `--expect`), shipped by an agent
/// through `channel` into `topic` exactly once.
struct Spool {
    tmp: tempfile::TempDir,
    spool: PathBuf,
    originals: PathBuf,
    conf: String,
    http: u16,
    topic: String,
    files: HashMap<String, usize>,
}

impl Spool {
    fn new(broker: &KafkaBroker, topic: &str, channel: &str, id: Option<&str>) -> Spool {
        broker.create_topic(topic, PARTITIONS);
        let tmp = tempfile::tempdir().unwrap();
        let (spool, originals) = (tmp.path().join("spool"), tmp.path().join("orig"));
        fs::create_dir_all(&spool).unwrap();
        fs::create_dir_all(&originals).unwrap();
        let http = free_port();
        let channel = channel.replace("WAL", &tmp.path().join("wal").display().to_string());
        let mut conf = spool_kafka_config(
            &spool,
            &tmp.path().join("data"),
            &broker.bootstrap(),
            topic,
            &channel,
            http,
        );
        // The sink `k1` comes last: its exactly-once options follow.
        conf.push_str(EXACTLY_ONCE);
        if let Some(id) = id {
            conf.push_str(&format!("      transactional_id: {id}\n"));
        }
        Spool {
            tmp,
            spool,
            originals,
            conf,
            http,
            topic: topic.to_owned(),
            files: HashMap::new(),
        }
    }

    fn start(&self) -> Agent {
        Agent::start(&self.tmp.path().join("run"), "a1", &self.conf)
    }

    fn add(&mut self, tag: &str, n: usize) {
        let body = lines(tag, n);
        fs::write(self.originals.join(format!("{tag}.log")), &body).unwrap();
        drop_file(&self.spool, &format!("{tag}.log"), &body);
        self.files.insert(tag.to_owned(), n);
    }

    fn all_completed(&self) -> bool {
        self.files
            .keys()
            .all(|t| self.spool.join(format!("{t}.log.COMPLETED")).exists())
    }

    /// Waits for every file and an empty channel, stops the agent, and checks the topic.
    fn finish(&self, mut agent: Agent, broker: &KafkaBroker) {
        wait_until(LONG, "every file completed", || self.all_completed());
        wait_until(LONG, "the channel drained", || {
            metric(self.http, "sluice_channel_events{") == Some(0)
        });
        agent.signal(libc::SIGTERM);
        assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
        audit_exactly_once(broker, &self.topic, Some(&self.originals));
        check_once_in_order(broker, &self.topic, &self.files);
    }
}

/// Drops files while the agent is killed 22 times at random moments, then lets it finish.
fn sigkill_run(broker: &KafkaBroker, topic: &str, channel: &str, seed: u64) {
    let mut s = Spool::new(broker, topic, channel, None);
    let mut moments = Moments(seed);
    s.add("f0", 30_000);
    s.add("f1", 12_000);
    for kill in 0..22 {
        let mut agent = s.start();
        // Fault injection, not synchronization: the kill lands at a random moment.
        std::thread::sleep(moments.next(300, 1_700));
        agent.kill();
        if kill % 5 == 4 {
            s.add(&format!("g{kill}"), 15_000 + kill * 500);
        }
    }
    s.finish(s.start(), broker);
    // The positions: keyed by the default transactional.id (host, agent, sink), the source
    // and the file's fid.
    let positions = broker.consume_all("__sluice_positions", 1, Duration::from_secs(30));
    let key = String::from_utf8(positions[0].key.clone().unwrap()).unwrap();
    let parts: Vec<&str> = key.split('\t').collect();
    assert!(
        parts[0].starts_with("sluice-") && parts[0].ends_with("-a1-k1"),
        "{key}"
    );
    assert_eq!(parts[1], "r1", "{key}");
    assert_eq!(parts[2].split(':').count(), 3, "dev:ino:hash in {key}");
}

#[test]
fn spooldir_file_channel_sigkills_deliver_each_line_exactly_once() {
    let broker = KafkaBroker::start();
    sigkill_run(&broker, "eos-file", FILE_CHANNEL, 0x5eed_0e05_0000_0001);
}

#[test]
fn spooldir_memory_channel_sigkills_deliver_each_line_exactly_once() {
    let broker = KafkaBroker::start();
    sigkill_run(
        &broker,
        "eos-memory",
        "{ type: memory, capacity: 20000 }",
        0x5eed_0e05_0000_0002,
    );
}

/// The broker stops while files arrive and starts again: an outage, then every line once.
#[test]
fn a_broker_restart_mid_stream_delivers_each_line_exactly_once() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned("a_broker_restart_mid_stream_delivers_each_line_exactly_once") {
        return;
    }
    let mut s = Spool::new(&broker, "eos-outage", FILE_CHANNEL, None);
    let agent = s.start();
    s.add("before", 20_000);
    let http = s.http;
    wait_until(LONG, "some lines delivered", || {
        metric(http, "sluice_sink_events_total{").unwrap_or(0) > 0
    });
    broker.stop();
    s.add("during", 20_000);
    // Let the sink meet the outage with records in flight and a transaction open.
    wait_until(LONG, "the source read the new file", || {
        metric(http, "sluice_source_events_total{").unwrap_or(0) >= 40_000
    });
    broker.restart();
    s.add("after", 10_000);
    s.finish(agent, &broker);
}

/// Logs renamed away every 5,000 lines while written at thousands of lines per second; the
/// agent (taildir, memory channel) is killed 20 times at random moments and started again at
/// once. Every line of every generation arrives exactly once, in order.
#[test]
fn taildir_rename_rotation_sigkills_deliver_each_line_exactly_once() {
    taildir_sigkills("eos-taildir", "{ type: memory, capacity: 20000 }", 3);
}

/// The same through a file channel: after a kill the channel replays what it held, then the
/// source reads again from its older checkpoint; those repeats must be caught too (they were
/// not while only the recovered position was compared: 2,450 repeats after one kill).
#[test]
fn taildir_file_channel_sigkills_deliver_each_line_exactly_once() {
    taildir_sigkills(
        "eos-taildir-file",
        "{ type: file, dir: DIR/wal, capacity: 64MiB, min_free_space: 1MiB }",
        4,
    );
}

fn taildir_sigkills(topic: &str, channel: &str, seed: u64) {
    let broker = KafkaBroker::start();
    broker.create_topic(topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let conf = format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 20s
  sources:
    r1:
      type: taildir
      channel: c1
      paths: ["{logs}/app.log*"]
      rotate_wait: 1s
      poll_interval: 100ms
  channels:
    c1: {channel}
{sink}{EXACTLY_ONCE}"#,
        channel = channel.replace("DIR", &dir.path().display().to_string()),
        dir = dir.path().display(),
        logs = logs.display(),
        sink = kafka_sink(&broker.bootstrap(), topic),
    );
    let progress = Progress::default();
    let mut moments = Moments(0x5eed_0e05_0000_0000 + seed);
    let mut agent = Agent::start(dir.path(), "a1", &conf);
    started(&agent);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            write_rotating(
                &logs,
                Scheme::RenameCreate,
                120_000,
                5_000,
                &progress,
                &|_| true,
            )
        });
        for _ in 0..20 {
            // Fault injection, not synchronization: the kill lands at a random moment.
            std::thread::sleep(moments.next(400, 1_600));
            agent.kill();
            agent = Agent::start(dir.path(), "a1", &conf);
        }
        progress.stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
    });
    let total = progress.written.load(Ordering::SeqCst);
    let seqs = |records: &[Record]| -> Vec<u64> {
        records
            .iter()
            .map(|r| Line::parse(&r.value_str()).expect("a written line").seq)
            .collect()
    };
    let records = read_until(&broker, topic, |records| {
        seqs(records).into_iter().collect::<HashSet<_>>().len() as u64 == total
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let got = seqs(&records);
    let once: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(once.len() as u64, total, "lines lost");
    assert_eq!(got.len(), once.len(), "lines repeated");
    // In order within each file: `sluice audit` checks each generation (by fid).
    audit_exactly_once(&broker, topic, None);
}

/// A second agent started with the first one's `transactional_id` fences it: the first sink
/// stops with an error that says so (once, not in a loop), the second delivers, and nothing
/// is delivered twice.
#[test]
fn a_second_agent_on_the_same_transactional_id_fences_the_first() {
    let broker = KafkaBroker::start();
    let memory = "{ type: memory, capacity: 20000 }";
    let mut first = Spool::new(&broker, "eos-fenced-1", memory, Some("shared-id"));
    let mut second = Spool::new(&broker, "eos-fenced-2", memory, Some("shared-id"));
    let a1 = first.start();
    first.add("one", 5_000);
    wait_until(LONG, "the first agent delivered its file", || {
        first.all_completed()
    });
    let a2 = second.start();
    second.add("two", 5_000);
    wait_until(LONG, "the second agent delivered its file", || {
        second.all_completed()
    });
    // The first agent's producer learns it is fenced at its next transaction.
    first.add("late", 100);
    let fenced = "fenced: another producer with transactional.id `shared-id` started";
    a1.wait_for(LONG, "the first agent says it was fenced", || {
        a1.stderr_text().contains(fenced)
    });
    second.finish(a2, &broker);
    let said = a1.stderr_text().matches(fenced).count();
    assert!(said <= 3, "said {said} times: a loop\n{}", a1.stderr_text());
    audit_exactly_once(&broker, "eos-fenced-1", None);
    let one = HashMap::from([("one".to_owned(), 5_000)]);
    check_once_in_order(&broker, "eos-fenced-1", &one);
}

/// The broker is down when the agent starts and stays down for longer than the sink's stall
/// limit (30 s), with a SIGKILL of the agent meanwhile: the sink waits (saying why, never that
/// it is stuck), and once the broker is back every line arrives exactly once.
#[test]
fn a_broker_down_at_start_is_waited_for_across_a_kill() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned("a_broker_down_at_start_is_waited_for_across_a_kill") {
        return;
    }
    let mut s = Spool::new(&broker, "eos-down-at-start", FILE_CHANNEL, None);
    broker.stop();
    let outage = std::time::Instant::now();
    s.add("early", 8_000);
    let mut agent = s.start();
    let not_ready = "exactly-once delivery is not ready";
    agent.wait_for(LONG, "the sink says it waits for the broker", || {
        agent.stderr_text().contains(not_ready)
    });
    agent.kill();
    let agent = s.start();
    s.add("later", 8_000);
    // Fault injection: the outage lasts past the stall limit.
    wait_until(LONG, "40 s of outage", || {
        outage.elapsed() > Duration::from_secs(40)
    });
    let log = agent.stderr_text();
    assert!(log.contains(not_ready), "{log}");
    assert!(!log.contains("blocked in librdkafka"), "{log}");
    broker.restart();
    s.finish(agent, &broker);
}

/// One spool folder fanned out (replicating) into a memory channel and a file channel, each
/// drained by its own exactly-once sink into its own topic, with 20 SIGKILLs: the source's
/// checkpoint waits for the slower channel, so the file channel gets repeats after its replay
/// (113,117 repeats in a hostile run before repeats were caught); both topics hold every line
/// once.
#[test]
fn fan_out_to_a_memory_and_a_file_channel_delivers_each_line_exactly_once_to_both() {
    let broker = KafkaBroker::start();
    broker.create_topic("eos-fan-mem", PARTITIONS);
    broker.create_topic("eos-fan-file", PARTITIONS);
    let tmp = tempfile::tempdir().unwrap();
    let (spool, originals) = (tmp.path().join("spool"), tmp.path().join("orig"));
    fs::create_dir_all(&spool).unwrap();
    fs::create_dir_all(&originals).unwrap();
    let http = free_port();
    let sink = |name: &str, channel: &str, topic: &str| {
        format!(
            "    {name}: {{ type: kafka, channel: {channel}, brokers: {}, topic: {topic}, \
             delivery: exactly_once }}\n",
            broker.bootstrap()
        )
    };
    let conf = format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 30s
  http: 127.0.0.1:{http}
  sources:
    r1: {{ type: spooldir, dir: {spool}, channels: [c1, c2], selector: {{ type: replicating }}, batch_size: 500 }}
  channels:
    c1: {{ type: memory, capacity: 20000 }}
    c2: {{ type: file, dir: {dir}/wal, capacity: 64MiB, min_free_space: 1MiB }}
  sinks:
{k1}{k2}"#,
        dir = tmp.path().display(),
        spool = spool.display(),
        k1 = sink("k1", "c1", "eos-fan-mem"),
        k2 = sink("k2", "c2", "eos-fan-file"),
    );
    let mut files = HashMap::new();
    let mut add = |tag: &str, n: usize| {
        let body = lines(tag, n);
        fs::write(originals.join(format!("{tag}.log")), &body).unwrap();
        drop_file(&spool, &format!("{tag}.log"), &body);
        files.insert(tag.to_owned(), n);
    };
    for i in 0..4 {
        add(&format!("F{i}"), 25_000);
    }
    let run = tmp.path().join("run");
    let mut moments = Moments(0x5eed_0e05_0000_0005);
    for _ in 0..20 {
        let mut agent = Agent::start(&run, "a1", &conf);
        // Fault injection, not synchronization: the kill lands at a random moment.
        std::thread::sleep(moments.next(500, 2_000));
        agent.kill();
    }
    let mut agent = Agent::start(&run, "a1", &conf);
    wait_until(LONG, "every file completed", || {
        files
            .keys()
            .all(|t| spool.join(format!("{t}.log.COMPLETED")).exists())
    });
    wait_until(LONG, "both channels drained", || {
        http_get(http, "/metrics").is_some_and(|(_, body)| {
            body.lines()
                .filter(|l| l.starts_with("sluice_channel_events{"))
                .all(|l| l.ends_with(" 0"))
        })
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    for topic in ["eos-fan-mem", "eos-fan-file"] {
        audit_exactly_once(&broker, topic, Some(&originals));
        check_once_in_order(&broker, topic, &files);
    }
}

/// Rename rotation where the new log reuses the inode just freed (the oldest generation is
/// deleted first; ext4 hands the inode out again) and starts with the same banner line every
/// time: without a fault, every line must arrive once. The fingerprint of the first line alone
/// made every generation the same `fid`, and exactly-once delivery took the new lines for
/// repeats of the old (4,413 of 6,973 lines lost in a hostile run); the birth time in the
/// `fid` tells them apart.
#[test]
fn a_reused_inode_with_the_same_banner_is_a_new_file() {
    let broker = KafkaBroker::start();
    let topic = "eos-reused-inode";
    broker.create_topic(topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let live = logs.join("app.log");
    let http = free_port();
    let conf = tail_one_file(
        dir.path(),
        &live,
        &format!("  shutdown_timeout: 20s\n  http: 127.0.0.1:{http}\n"),
        ", rotate_wait: 1s, poll_interval: 100ms",
        FILE_CHANNEL,
        &broker,
        topic,
    );
    let mut agent = Agent::start(dir.path(), "a1", &conf);
    started(&agent);
    let read = || metric(http, "sluice_source_events_total{").unwrap_or(0);
    let closed = || metric(http, "sluice_source_files_completed_total{").unwrap_or(0);
    let (mut seq, mut events) = (0u64, 0u64);
    for generation in 0..12 {
        // The generation about to be deleted was rotated away, read to its end and closed
        // (`rotate_wait`): the source has forgotten it, and the new file on its inode is new
        // to the source too.
        wait_until(LONG, "the rotated generation closed", || {
            closed() + 1 >= generation
        });
        let old = logs.join("app.log.1");
        if old.exists() {
            fs::remove_file(&old).unwrap();
        }
        if live.exists() {
            fs::rename(&live, &old).unwrap();
        }
        let mut f = support::rotation::append(&live);
        f.write_all(b"=== log opened ===\n").unwrap();
        events += 1;
        // The banner alone is the first line the source reads (the fingerprint covers it).
        wait_until(LONG, "the banner read", || read() >= events);
        let n = 50 + generation * 20;
        for _ in 0..n {
            writeln!(f, "S {seq:07} line of generation {generation}").unwrap();
            seq += 1;
        }
        events += n;
        wait_until(LONG, "the generation read", || read() >= events);
    }
    let records = read_until(&broker, topic, |records| {
        records
            .iter()
            .filter(|r| r.value_str().starts_with("S "))
            .count() as u64
            >= seq
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let got: Vec<u64> = records
        .iter()
        .filter_map(|r| r.value_str().split(' ').nth(1)?.parse().ok())
        .collect();
    let lost = (0..seq).filter(|q| !got.contains(q)).count();
    assert_eq!(lost, 0, "{lost} of {seq} lines lost");
    let disorder: Vec<_> = got
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .take(5)
        .collect();
    assert!(
        got.len() == seq as usize && disorder.is_empty(),
        "every line once, in order: {} records for {seq} lines; first breaks: {disorder:?}\n{}",
        got.len(),
        agent.stderr_text()
    );
}

/// A latin1 log, transcoded to UTF-8 by the source: lines with accents grow, and the empty and
/// short lines after them must not be taken for repeats (the sink reads where each line ends
/// in the file from `offset_end`; without it every empty line was lost).
#[test]
fn transcoded_lines_are_each_delivered_once() {
    let broker = KafkaBroker::start();
    let topic = "eos-latin1";
    broker.create_topic(topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.log");
    let mut text = Vec::new();
    for i in 0..100 {
        text.extend_from_slice(format!("{i:04} Donn\u{e9}es re\u{e7}ues \u{e0} {i}").as_bytes());
        text.push(b'\n');
        text.extend_from_slice(b"\n-- fin\n");
    }
    // UTF-8 to latin1: every character here is below U+0100.
    let latin1: Vec<u8> = String::from_utf8(text)
        .unwrap()
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    fs::write(&live, &latin1).unwrap();
    let conf = tail_one_file(
        dir.path(),
        &live,
        "",
        ", encoding: latin1",
        "{ type: memory }",
        &broker,
        topic,
    );
    let mut agent = Agent::start(dir.path(), "a1", &conf);
    let records = read_until(&broker, topic, |records| records.len() >= 300);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let values: Vec<String> = records.iter().map(Record::value_str).collect();
    assert_eq!(values.len(), 300, "{:?}", &values[..values.len().min(9)]);
    assert_eq!(values[0], "0000 Donn\u{e9}es re\u{e7}ues \u{e0} 0");
    assert_eq!(values[1], "");
    assert_eq!(values[2], "-- fin");
    audit_exactly_once(&broker, topic, None);
}

/// copytruncate while Kafka is down, the new content starting with the same long banner as
/// the old (same fingerprint, same file): the running source sees the truncation and counts
/// it in `rewrites`; the agent is killed before the new lines are delivered, and restarted
/// with a memory channel. The new lines are new (500 were lost in a hostile run while the
/// count was not kept across the restart).
#[test]
fn a_truncation_seen_before_a_kill_is_remembered() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned("a_truncation_seen_before_a_kill_is_remembered") {
        return;
    }
    let topic = "eos-truncated";
    broker.create_topic(topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.log");
    let banner = format!("{}\n", "#".repeat(300));
    let block = |from: u64, n: u64| {
        let mut b = banner.clone();
        for i in from..from + n {
            b.push_str(&format!("S {i:07}\n"));
        }
        b
    };
    fs::write(&live, block(0, 2_000)).unwrap();
    let conf = tail_one_file(
        dir.path(),
        &live,
        "  shutdown_timeout: 5s\n",
        ", poll_interval: 100ms",
        "{ type: memory }",
        &broker,
        topic,
    );
    let mut agent = Agent::start(dir.path(), "a1", &conf);
    let s_lines = |records: &[Record]| {
        records
            .iter()
            .filter(|r| r.value_str().starts_with("S "))
            .count()
    };
    read_until(&broker, topic, |r| s_lines(r) >= 2_000);
    broker.stop();
    fs::write(&live, block(2_000, 500)).unwrap();
    let positions = dir.path().join("data/sources/r1/positions.json");
    agent.wait_for(LONG, "the truncation seen and remembered", || {
        fs::read_to_string(&positions).is_ok_and(|p| p.contains("\"rewrites\":1"))
    });
    agent.kill();
    let mut agent = Agent::start(dir.path(), "a1", &conf);
    broker.restart();
    let records = read_until(&broker, topic, |r| s_lines(r) >= 2_500);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let got: Vec<u64> = records
        .iter()
        .filter_map(|r| r.value_str().strip_prefix("S ")?.parse().ok())
        .collect();
    assert_eq!(got.len(), 2_500, "{} lines, not 2,500", got.len());
    assert!(
        got.iter().copied().eq(0..2_500),
        "every line once, in order"
    );
}
