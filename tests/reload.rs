//! End-to-end: reloading the configuration of a running agent under a steady stream of lines,
//! against a real broker. SIGHUP with a changed topic, an added source, an invalid file and a
//! removed source; `--watch-config` with a Kubernetes ConfigMap-style symlink swap. Every line
//! read must reach Kafka once, in file order, in the topic its configuration named when it was
//! delivered; the invalid file is refused, named in the log and counted, and changes nothing.

mod support;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::agent::{Agent, free_port, http_get, metric, wait_until};
use support::kafka::{KafkaBroker, Record};

const PARTITIONS: i32 = 3;
const LONG: Duration = Duration::from_secs(120);

/// Appends `TAG:NNNNNNNNN` lines to a file, about 4,000 a second, until stopped.
struct Writer {
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(path: PathBuf, tag: &'static str) -> Writer {
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (written.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let mut seq = 0u64;
            while !s.load(Ordering::SeqCst) {
                let mut chunk = String::new();
                for _ in 0..40 {
                    chunk.push_str(&format!("{tag}:{seq:09}\n"));
                    seq += 1;
                }
                f.write_all(chunk.as_bytes()).unwrap();
                w.store(seq, Ordering::SeqCst);
                // Pacing, not synchronization: a steady stream of lines.
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Writer {
            written,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops writing; returns how many lines were written.
    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.written.load(Ordering::SeqCst)
    }
}

/// The line numbers of `tag`'s lines in `records`, in partition and offset order, and the
/// partitions they were found in.
fn seqs(records: &[Record], tag: &str) -> (Vec<u64>, Vec<i32>) {
    let prefix = format!("{tag}:");
    let mut seqs = Vec::new();
    let mut partitions = Vec::new();
    for r in records {
        let v = r.value_str();
        if let Some(n) = v.strip_prefix(&prefix) {
            seqs.push(n.parse().expect("a line number"));
            if !partitions.contains(&r.partition) {
                partitions.push(r.partition);
            }
        }
    }
    (seqs, partitions)
}

/// Reads both topics until they hold `written` lines of `a.log` between them, or [`LONG`]
/// passed.
fn read_both(broker: &KafkaBroker, topics: [&str; 2], written: u64) -> (Vec<Record>, Vec<Record>) {
    let end = Instant::now() + LONG;
    loop {
        let first = broker.consume_all(topics[0], 0, Duration::from_secs(20));
        let second = broker.consume_all(topics[1], 0, Duration::from_secs(20));
        let read = seqs(&first, "a").0.len() + seqs(&second, "a").0.len();
        if read as u64 >= written || Instant::now() >= end {
            return (first, second);
        }
    }
}

fn source(name: &str, file: &Path) -> String {
    format!(
        "    {name}: {{ type: taildir, channel: c1, paths: [\"{}\"], poll_interval: 100ms }}\n",
        file.display()
    )
}

fn config(data: &Path, port: u16, bootstrap: &str, topic: &str, sources: &str) -> String {
    format!(
        r#"a1:
  data_dir: {data}
  shutdown_timeout: 20s
  http: 127.0.0.1:{port}
  sources:
{sources}  channels:
    c1: {{ type: memory, capacity: 5000 }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: {topic}
      key: "%{{path}}"
      batch_size: 200
"#,
        data = data.display(),
    )
}

fn reloads(port: u16, result: &str) -> u64 {
    metric(
        port,
        "sluice_config_reloads_total",
        &format!("result=\"{result}\""),
    )
    .unwrap_or(0)
}

fn delivered(port: u16) -> u64 {
    metric(port, "sluice_sink_events_total", "sink=\"k1\"").unwrap_or(0)
}

/// Applies `config` with SIGHUP and waits until the agent counted the reload as `result`.
fn reload(agent: &Agent, conf: &Path, config: &str, port: u16, result: &str) {
    let before = reloads(port, result);
    fs::write(conf, config).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until(LONG, &format!("the reload counted as {result}"), || {
        reloads(port, result) > before
    });
}

/// Waits until the sink delivered `more` events beyond what it had delivered so far.
fn flowing(port: u16, more: u64, what: &str) {
    let from = delivered(port);
    wait_until(LONG, what, || delivered(port) >= from + more);
}

#[test]
fn sighup_reloads_topic_sources_and_refuses_an_invalid_file_without_losing_a_line() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned("sighup_reloads") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    fs::create_dir_all(&logs).unwrap();
    let (one, two) = ("reload-one", "reload-two");
    broker.create_topic(one, PARTITIONS);
    broker.create_topic(two, PARTITIONS);
    let port = free_port();
    let bootstrap = broker.bootstrap();
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    let only_a = source("s1", &a);
    let with_b = format!("{only_a}{}", source("s2", &b));

    let mut wa = Writer::start(a.clone(), "a");
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config(&data, port, &bootstrap, one, &only_a),
    );
    let conf = dir.path().join("agent.yaml");
    flowing(port, 2_000, "lines flowing into the first topic");

    // Each step: write the file, SIGHUP, wait for the reload to count, and for lines to flow.
    let step = |text: &str, result: &str, what: &str| {
        reload(&agent, &conf, text, port, result);
        flowing(port, 2_000, what);
    };

    // 1. A changed topic: only the sink is replaced; the source reads on.
    let topic_two = config(&data, port, &bootstrap, two, &only_a);
    step(
        &topic_two,
        "applied",
        "lines flowing after the topic changed",
    );

    // 2. An added source, for a file that is being written.
    let mut wb = Writer::start(b.clone(), "b");
    let added = config(&data, port, &bootstrap, two, &with_b);
    step(&added, "applied", "lines flowing with the added source");

    // 3. An invalid file: refused, named, counted; nothing changes.
    let invalid = added.replace("      topic: reload-two\n", "");
    step(&invalid, "failed", "lines flowing after the refused reload");
    let log = agent.stderr_text();
    assert!(
        log.contains("configuration reload refused") && log.contains("a1.sinks.k1.topic"),
        "the refusal names the key: {log}"
    );
    assert_eq!(
        metric(port, "sluice_config_last_reload_successful", "agent=\"a1\""),
        Some(0)
    );

    // 4. A removed source: it drains (what it read is delivered) and stops.
    step(
        &topic_two,
        "applied",
        "lines flowing after the source was removed",
    );
    let b_written = wb.finish();
    let a_written = wa.finish();
    assert!(agent.running(), "{}", agent.stderr_text());

    // Every line of a.log, once, across the two topics: the first topic's lines all before
    // the second's, each topic's in file order in one partition.
    let (first, second) = read_both(&broker, [one, two], a_written);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let (a1, p1) = seqs(&first, "a");
    let (a2, p2) = seqs(&second, "a");
    assert!(
        p1.len() <= 1 && p2.len() <= 1,
        "one partition per file: {p1:?} {p2:?}"
    );
    assert!(!a1.is_empty() && !a2.is_empty(), "lines in both topics");
    let all: Vec<u64> = a1.iter().chain(&a2).copied().collect();
    let expected: Vec<u64> = (0..a_written).collect();
    assert!(
        all == expected,
        "a.log: {} lines written, {} delivered; first differences at {:?}",
        a_written,
        all.len(),
        all.iter().zip(&expected).position(|(x, y)| x != y)
    );
    // b.log: what s2 read before it was removed arrived once, in order, from line 0; nothing
    // went to the first topic.
    assert!(seqs(&first, "b").0.is_empty());
    let (bs, _) = seqs(&second, "b");
    let prefix: Vec<u64> = (0..bs.len() as u64).collect();
    assert!(
        !bs.is_empty() && bs == prefix,
        "b.log: a gap-free prefix of its lines: {} of {b_written}",
        bs.len()
    );
    assert!(
        (bs.len() as u64) < b_written,
        "s2 stopped reading when it was removed"
    );
    let log = agent.stderr_text();
    assert_eq!(log.matches("configuration reloaded").count(), 3, "{log}");
}

/// `--watch-config` notices a ConfigMap update, which swaps the `..data` symlink the file's
/// path goes through rather than writing the file, and applies it.
#[test]
fn watch_config_applies_a_configmap_style_symlink_swap() {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned("watch_config") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (logs, data, mount) = (
        dir.path().join("logs"),
        dir.path().join("data"),
        dir.path().join("config"),
    );
    fs::create_dir_all(&logs).unwrap();
    let (one, two) = ("watch-one", "watch-two");
    broker.create_topic(one, PARTITIONS);
    broker.create_topic(two, PARTITIONS);
    let port = free_port();
    let bootstrap = broker.bootstrap();
    let a = logs.join("a.log");
    let only_a = source("s1", &a);
    // The kubelet's layout: agent.yaml -> ..data/agent.yaml, ..data -> ..<timestamp>.
    let version = |n: u32, text: &str| {
        let v = mount.join(format!("..2026_12_01_0{n}"));
        fs::create_dir_all(&v).unwrap();
        fs::write(v.join("agent.yaml"), text).unwrap();
        std::os::unix::fs::symlink(v.file_name().unwrap(), mount.join("..data_tmp")).unwrap();
        fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    };
    version(1, &config(&data, port, &bootstrap, one, &only_a));
    std::os::unix::fs::symlink("..data/agent.yaml", mount.join("agent.yaml")).unwrap();

    let mut wa = Writer::start(a.clone(), "a");
    let mut agent = Agent::start_file(
        &dir.path().join("run"),
        "a1",
        &mount.join("agent.yaml"),
        &["--watch-config"],
    );
    flowing(port, 2_000, "lines flowing into the first topic");
    version(2, &config(&data, port, &bootstrap, two, &only_a));
    wait_until(LONG, "the swap applied", || reloads(port, "applied") >= 1);
    flowing(port, 2_000, "lines flowing after the swap");
    let written = wa.finish();
    let (first, second) = read_both(&broker, [one, two], written);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let (a1, _) = seqs(&first, "a");
    let (a2, _) = seqs(&second, "a");
    assert!(!a2.is_empty(), "lines in the new topic");
    let all: Vec<u64> = a1.iter().chain(&a2).copied().collect();
    assert!(
        all == (0..written).collect::<Vec<_>>(),
        "{written} written, {} delivered, once each in order",
        all.len()
    );
    let counts: HashMap<u64, usize> = all.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(*s).or_default() += 1;
        m
    });
    assert!(counts.values().all(|&n| n == 1));
}

/// A reload that retires a sink which cannot deliver (its broker is unreachable) waits for
/// it; a SIGTERM meanwhile is served at once: the reload gives way (logged, counted as
/// failed), `/ready` turns 503, and the agent drains and exits as for any SIGTERM. It used to
/// finish the reload first (up to `shutdown_timeout`, then the abort), then drain.
#[test]
fn sigterm_during_a_reload_is_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let a = logs.join("a.log");
    let lines: String = (0..5000).map(|i| format!("a:{i:09}\n")).collect();
    fs::write(&a, lines).unwrap();
    let port = free_port();
    // Nothing listens there: batches stay in flight.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let cfg = |topic: &str| {
        config(&data, port, &nowhere, topic, &source("s1", &a))
            .replace("shutdown_timeout: 20s", "shutdown_timeout: 60s")
    };
    let mut agent = Agent::start(dir.path(), "a1", &cfg("one"));
    wait_until(LONG, "batches in flight", || {
        metric(port, "sluice_channel_events", "channel=\"c1\"").unwrap_or(0) >= 1000
    });
    fs::write(dir.path().join("agent.yaml"), cfg("two")).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until(LONG, "the reload waits for the retiring sink", || {
        agent.stderr_text().contains("reloading the configuration")
    });
    agent.signal(libc::SIGTERM);
    wait_until(LONG, "the reload gives way to the stop", || {
        agent
            .stderr_text()
            .contains("stop signal during a reload: the new configuration is not applied")
    });
    let ready = http_get(port, "/ready").map(|(status, _)| status);
    assert!(
        ready.is_none() || ready.as_deref().is_some_and(|s| s.contains(" 503 ")),
        "not ready while stopping: {ready:?}"
    );
    assert_eq!(reloads(port, "failed"), 1);
    // The drain waits for the unreachable broker for shutdown_timeout; a second signal ends it.
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(LONG);
    assert!(status.code().is_some(), "{}", agent.stderr_text());
    let log = agent.stderr_text();
    assert!(log.contains("second signal: stopping now"), "{log}");
    assert!(!log.contains("configuration reloaded"), "{log}");
}

/// A file channel that holds events cannot be moved to another folder (or removed) by a
/// reload: its events would stay behind in the old folder. The reload is refused, named and
/// counted, and the channel keeps its events.
#[test]
fn a_file_channel_holding_events_is_not_moved_away() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let a = logs.join("a.log");
    let lines: String = (0..3000).map(|i| format!("a:{i:09}\n")).collect();
    fs::write(&a, lines).unwrap();
    let port = free_port();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let cfg = |folder: &str| {
        config(&data, port, &nowhere, "one", &source("s1", &a)).replace(
            "c1: { type: memory, capacity: 5000 }",
            &format!("c1: {{ type: file, dir: {folder} }}"),
        )
    };
    let mut agent = Agent::start(dir.path(), "a1", &cfg("cha"));
    wait_until(LONG, "every line in the file channel", || {
        metric(port, "sluice_channel_events", "channel=\"c1\"").unwrap_or(0) == 3000
    });
    reload(
        &agent,
        &dir.path().join("agent.yaml"),
        &cfg("chb"),
        port,
        "failed",
    );
    let log = agent.stderr_text();
    assert!(
        log.contains("a1.channels.c1: the file channel in") && log.contains("holds 3000 events"),
        "{log}"
    );
    assert_eq!(
        metric(port, "sluice_channel_events", "channel=\"c1\""),
        Some(3000)
    );
    assert!(
        !data.join("chb").exists(),
        "nothing was opened in the new folder"
    );
    agent.kill();
}

/// A reload whose new file channel cannot be opened (its folder is under a regular file)
/// leaves that channel, its source and its sink not running: the reload counts as failed,
/// `/health` and `/ready` say so, and the next reload opens it once it can.
#[test]
fn a_channel_a_reload_cannot_open_shows_and_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let a = logs.join("a.log");
    fs::write(&a, "a:1\na:2\n").unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, "a file where a folder should be").unwrap();
    let cfg = |folder: &Path| {
        format!(
            "a1:\n  data_dir: {}\n  http: 127.0.0.1:{port}\n  sources:\n{}  channels:\n    \
             c1: {{ type: file, dir: {} }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n",
            data.display(),
            source("s1", &a),
            folder.display()
        )
    };
    let mut agent = Agent::start(dir.path(), "a1", &cfg(&data.join("c1")));
    wait_until(LONG, "the lines delivered", || {
        String::from_utf8_lossy(&agent.stdout_bytes())
            .lines()
            .count()
            == 2
    });
    let conf = dir.path().join("agent.yaml");
    reload(&agent, &conf, &cfg(&blocker.join("c1")), port, "failed");
    let (status, body) = http_get(port, "/ready").unwrap();
    assert!(
        status.contains(" 503 ") && body.contains("channel c1 cannot be opened"),
        "{status} {body}"
    );
    let (_, health) = http_get(port, "/health").unwrap();
    assert!(
        health.starts_with("degraded\n") && health.contains("channel c1 cannot be opened"),
        "{health}"
    );

    fs::remove_file(&blocker).unwrap();
    fs::create_dir(&blocker).unwrap();
    reload(&agent, &conf, &cfg(&blocker.join("c1")), port, "applied");
    fs::OpenOptions::new()
        .append(true)
        .open(&a)
        .unwrap()
        .write_all(b"a:3\n")
        .unwrap();
    wait_until(
        LONG,
        "the new line delivered through the reopened channel",
        || {
            String::from_utf8_lossy(&agent.stdout_bytes())
                .lines()
                .count()
                == 3
        },
    );
    wait_until(LONG, "ready again", || {
        http_get(port, "/ready").is_some_and(|(status, _)| status.contains(" 200 "))
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
}

/// A source a reload adds that fails at once (its spool folder does not exist) does not end
/// the agent: the reload counts as failed, `/health` and `/ready` name the source, the other
/// components run on, and the next reload starts it again.
#[test]
fn a_component_a_reload_starts_that_fails_does_not_end_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    fs::write(&a, "a:1\n").unwrap();
    let spool = dir.path().join("spool");
    let port = free_port();
    let cfg = |sources: &str| {
        format!(
            "a1:\n  data_dir: {}\n  http: 127.0.0.1:{port}\n  sources:\n{sources}  \
             channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, \
             channel: c1 }}\n",
            dir.path().join("data").display(),
        )
    };
    let only_a = source("s1", &a);
    let with_spool = format!(
        "{only_a}    s2: {{ type: spooldir, channel: c1, dir: {} }}\n",
        spool.display()
    );
    let mut agent = Agent::start(dir.path(), "a1", &cfg(&only_a));
    wait_until(LONG, "a.log delivered", || !agent.stdout_bytes().is_empty());
    let conf = dir.path().join("agent.yaml");
    reload(&agent, &conf, &cfg(&with_spool), port, "failed");
    let (status, body) = http_get(port, "/ready").unwrap();
    assert!(
        status.contains(" 503 ") && body.contains("source s2 failed when a reload started it"),
        "{status} {body}"
    );
    fs::OpenOptions::new()
        .append(true)
        .open(&a)
        .unwrap()
        .write_all(b"a:2\n")
        .unwrap();
    wait_until(LONG, "s1 still delivers", || {
        String::from_utf8_lossy(&agent.stdout_bytes())
            .lines()
            .count()
            == 2
    });
    assert!(agent.running(), "{}", agent.stderr_text());

    fs::create_dir(&spool).unwrap();
    fs::write(spool.join("x.log"), "x:1\n").unwrap();
    agent.signal(libc::SIGHUP);
    wait_until(LONG, "s2 started again and delivered", || {
        String::from_utf8_lossy(&agent.stdout_bytes()).contains("x:1")
    });
    wait_until(LONG, "ready", || {
        http_get(port, "/ready").is_some_and(|(status, _)| status.contains(" 200 "))
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
}
