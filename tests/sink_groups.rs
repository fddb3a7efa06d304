//! End-to-end: a failover sink group across two Kafka clusters. A taildir source follows two
//! files that writers keep appending to; one channel (file, then memory) is drained by group
//! `g1` of `k1` (broker A, priority 10) and `k2` (broker B, priority 5). Broker A is stopped
//! mid-stream while the lines keep coming: `k1` fails once its records time out
//! (`message.timeout.ms`), its batches go back to the channel in order and `k2` delivers them
//! and what follows to broker B, with `/health` ok. With the file channel, the agent is also
//! killed (SIGKILL) during the outage and started again: the group starts on `k1`, which fails
//! again, and `k2` takes over again. A is started again: once `k1`'s penalty ends it takes back
//! over and the newest lines go to A again.
//!
//! Then: every line written is in A's topic or in B's (the union is complete); in each topic
//! each file's first deliveries are in file order. Which lines may arrive twice:
//! - in both topics: only lines of the batches `k1` had in flight when it failed (A may have
//!   written part of them before it went away; they were rolled back and `k2` delivered them):
//!   at most failovers x `batches_in_flight` x `batch_size` lines;
//! - twice in one topic: only after the SIGKILL, and only in B (the cluster that was
//!   delivering): one repeat per file of a run of lines it had already delivered (not yet
//!   committed in the channel, or read again from the source's checkpoint), continuing in
//!   order. Without the kill, no line is twice in one topic: the sink that failed never gets
//!   the rolled-back lines again while the other one delivers (B never fails here).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::agent::{Agent, free_port, http_get, metric};
use support::kafka::{KafkaBroker, Record};

/// The files the writers append to.
const FILES: [&str; 2] = ["a", "b"];
/// Lines per batch the sinks take, and batches each may have in flight.
const BATCH: u64 = 100;
const IN_FLIGHT: u64 = 4;
/// How long a record may wait for its broker: how soon a dead cluster is noticed.
const RECORD_TIMEOUT_MS: u64 = 4000;
/// How long anything the test waits for may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// A writer's line: its file and its number, fixed width, so that the byte offset of line
/// `n` is `n * LINE_LEN`.
fn line(file: &str, n: u64) -> String {
    format!("{file} {n:09}\n")
}
const LINE_LEN: u64 = 12;

/// Writers appending numbered lines to `FILES` in `dir` until told to stop.
struct Writers {
    stop: Arc<AtomicBool>,
    written: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(dir: &Path) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut written = Vec::new();
        let mut threads = Vec::new();
        for file in FILES {
            let count = Arc::new(AtomicU64::new(0));
            let (stop, c, path) = (stop.clone(), count.clone(), dir.join(format!("{file}.log")));
            threads.push(std::thread::spawn(move || {
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                let mut n = 0;
                // About 400 lines a second, 20 at a time.
                while !stop.load(Ordering::SeqCst) {
                    let chunk: String = (n..n + 20).map(|i| line(file, i)).collect();
                    f.write_all(chunk.as_bytes()).unwrap();
                    n += 20;
                    c.store(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
            written.push(count);
        }
        Writers {
            stop,
            written,
            threads,
        }
    }

    /// Lines written to each file so far (at least).
    fn written(&self) -> Vec<u64> {
        self.written
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// Stops the writers; returns how many lines each wrote.
    fn stop(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.written()
    }
}

fn config(dir: &Path, channel: &str, a: &str, b: &str, topic: &str, http: u16) -> String {
    let sink = |brokers: &str| {
        format!(
            "{{ type: kafka, channel: c1, brokers: \"{brokers}\", topic: {topic}, key: \"%{{path}}\", \
             headers: [path, offset], batch_size: {BATCH}, batches_in_flight: {IN_FLIGHT}, \
             producer: {{ message.timeout.ms: {RECORD_TIMEOUT_MS} }} }}"
        )
    };
    format!(
        r#"
a1:
  data_dir: {data}
  http: 127.0.0.1:{http}
  sources:
    r1: {{ type: taildir, channel: c1, poll_interval: 100ms, batch_size: {BATCH}, paths: [ {{ glob: "{logs}/*.log" }} ] }}
  channels:
    c1: {channel}
  sinks:
    k1: {k1}
    k2: {k2}
  sink_groups:
    g1: {{ sinks: [k1, k2], processor: failover, priority: {{ k1: 10, k2: 5 }}, max_penalty: 5s }}
"#,
        data = dir.join("data").display(),
        logs = dir.join("logs").display(),
        k1 = sink(a),
        k2 = sink(b),
    )
}

/// A topic's lines per file: (line number, byte offset) in the topic's order.
fn per_file(records: &[Record], logs: &Path) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut files: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for r in records {
        let path = std::str::from_utf8(r.header("path").expect("a path header")).unwrap();
        let file = Path::new(path).file_stem().unwrap().to_str().unwrap();
        assert_eq!(Path::new(path).parent(), Some(logs), "{path}");
        assert_eq!(r.key.as_deref(), Some(path.as_bytes()), "keyed by its path");
        let value = r.value_str();
        let (name, n) = value.split_once(' ').expect("a writer's line");
        assert_eq!(name, file, "line {value:?} read from {path}");
        let offset: u64 = std::str::from_utf8(r.header("offset").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let n: u64 = n.parse().unwrap();
        assert_eq!(offset, n * LINE_LEN, "line {value:?} at offset {offset}");
        files.entry(file.to_owned()).or_default().push((n, offset));
    }
    files
}

fn lines_of(records: &[Record], logs: &Path) -> BTreeSet<(String, u64)> {
    per_file(records, logs)
        .into_iter()
        .flat_map(|(f, lines)| lines.into_iter().map(move |(n, _)| (f.clone(), n)))
        .collect()
}

fn group_metric(port: u16, name: &str, label: &str) -> u64 {
    metric(port, name, label).unwrap_or(0)
}

fn active(port: u16, sink: &str) -> bool {
    group_metric(
        port,
        "sluice_sink_group_active",
        &format!("sink=\"{sink}\""),
    ) == 1
}

fn health(port: u16) -> String {
    http_get(port, "/health")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// Checks one topic's lines of one file, in the topic's order: first deliveries in file
/// order, and at most `restarts` repeats, each a contiguous run of lines already delivered.
/// Returns how many lines were repeated.
fn check_order(cluster: &str, file: &str, lines: &[(u64, u64)], restarts: usize) -> usize {
    let mut seen = BTreeSet::new();
    let mut repeats = 0;
    let mut prev: Option<u64> = None;
    for &(n, _) in lines {
        let max = seen.last().copied();
        if max.is_some_and(|m| n <= m) {
            let at = format!("{cluster}: file {file}: line {n} after line {prev:?}");
            assert!(seen.contains(&n), "{at}: a first delivery out of order");
            if prev.is_some_and(|p| n <= p) {
                repeats += 1;
            } else {
                assert_eq!(Some(n), prev.map(|p| p + 1), "{at}: a repeat with a gap");
            }
        }
        seen.insert(n);
        prev = Some(n);
    }
    assert!(
        repeats <= restarts,
        "{cluster}: file {file}: {repeats} runs of repeated lines, {restarts} allowed"
    );
    lines.len() - seen.len()
}

fn failovers_total(port: u16) -> u64 {
    group_metric(port, "sluice_sink_group_failovers_total", "group=\"g1\"")
}

/// One run: a fresh agent on `channel`, topic `topic` on both brokers; with `kill`, the agent
/// is killed and started again during the outage.
fn run(a: &KafkaBroker, b: &KafkaBroker, channel: &str, topic: &str, kill: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let logs: PathBuf = tmp.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    a.create_topic(topic, 2);
    b.create_topic(topic, 2);
    let port = free_port();
    let conf = config(
        tmp.path(),
        channel,
        &a.bootstrap(),
        &b.bootstrap(),
        topic,
        port,
    );
    let writers = Writers::start(&logs);
    let mut agent = Agent::start(tmp.path(), "a1", &conf);

    // k1 delivers to A; k2 is not even opened.
    agent.wait_for(DEADLINE, "k1 delivers to A", || {
        a.consume_all(topic, 500, Duration::from_secs(5)).len() >= 500
    });
    assert!(active(port, "k1") && !active(port, "k2"));
    assert!(health(port).starts_with("ok\n"), "{}", health(port));

    // A goes away while the writers go on: k2 takes over and delivers to B.
    a.stop();
    let stopped = Instant::now();
    agent.wait_for(DEADLINE, "k2 takes over", || active(port, "k2"));
    let failover = stopped.elapsed();
    agent.wait_for(DEADLINE, "k2 delivers to B", || {
        b.consume_all(topic, 500, Duration::from_secs(5)).len() >= 500
    });
    agent.wait_for(DEADLINE, "/health ok while k2 delivers", || {
        health(port).starts_with("ok\n")
    });
    let body = health(port);
    assert!(
        body.contains("sink group g1: k2 delivers (k1, k2)"),
        "{body}"
    );
    assert!(failovers_total(port) >= 1);
    // The agent dies while A is down; started again, the group starts on k1, which fails.
    let mut failovers_before = 0;
    if kill {
        let delivered = b.consume_all(topic, 0, Duration::from_secs(5)).len();
        failovers_before = failovers_total(port);
        agent.kill();
        agent = Agent::start(tmp.path(), "a1", &conf);
        agent.wait_for(DEADLINE, "k2 takes over again after the restart", || {
            active(port, "k2") && failovers_total(port) >= 1
        });
        agent.wait_for(DEADLINE, "k2 delivers to B again", || {
            let want = delivered + 500;
            b.consume_all(topic, want, Duration::from_secs(5)).len() >= want
        });
    }

    // A comes back: once k1's penalty ends, k1 takes back over.
    a.restart();
    let restarted = Instant::now();
    agent.wait_for(DEADLINE, "k1 takes back over", || active(port, "k1"));
    let takeback = restarted.elapsed();
    assert!(group_metric(port, "sluice_sink_group_takebacks_total", "group=\"g1\"") >= 1);
    // Lines written from now on go to A.
    let after_takeback = writers.written();
    agent.wait_for(DEADLINE, "A gets lines written after the takeback", || {
        let got = lines_of(&a.consume_all(topic, 0, Duration::from_secs(5)), &logs);
        FILES
            .iter()
            .zip(&after_takeback)
            .all(|(f, n)| got.iter().any(|(g, m)| g == f && m >= n))
    });
    let written = writers.stop();
    let failovers = failovers_before + failovers_total(port);
    eprintln!(
        "sink_groups {channel}: failover {failover:.1?} after A stopped, takeback {takeback:.1?} \
         after A restarted, {failovers} failovers, written {written:?}"
    );

    // Everything arrives in A or B.
    let expected: BTreeSet<(String, u64)> = FILES
        .iter()
        .zip(&written)
        .flat_map(|(f, n)| (0..*n).map(move |i| ((*f).to_owned(), i)))
        .collect();
    let (mut in_a, mut in_b) = (Vec::new(), Vec::new());
    agent.wait_for(DEADLINE, "every line in A or B", || {
        in_a = a.consume_all(topic, 0, Duration::from_secs(10));
        in_b = b.consume_all(topic, 0, Duration::from_secs(10));
        let mut union = lines_of(&in_a, &logs);
        union.extend(lines_of(&in_b, &logs));
        expected.is_subset(&union)
    });

    // Per file, in each topic: first deliveries in file order; repeats only in B after the
    // kill.
    for (cluster, records, restarts) in [("A", &in_a, 0), ("B", &in_b, usize::from(kill))] {
        for (file, lines) in per_file(records, &logs) {
            let repeated = check_order(cluster, &file, &lines, restarts);
            eprintln!("sink_groups {channel}: {cluster}: file {file}: {repeated} lines repeated");
        }
    }
    // In both topics: only lines of batches in flight at a failure of k1.
    let (set_a, set_b) = (lines_of(&in_a, &logs), lines_of(&in_b, &logs));
    let both = set_a.intersection(&set_b).count() as u64;
    eprintln!("sink_groups {channel}: {both} lines in both topics");
    assert!(
        both <= failovers * IN_FLIGHT * BATCH,
        "{both} lines in both topics; at most {failovers} x {IN_FLIGHT} x {BATCH}"
    );
    assert!(!set_b.is_empty(), "B got the lines of the outage");
    // The last lines went to A, after the takeback, and not to B.
    for (f, n) in FILES.iter().zip(&written) {
        let last = ((*f).to_owned(), n - 1);
        assert!(set_a.contains(&last) && !set_b.contains(&last), "{last:?}");
    }
}

#[test]
fn a_failover_group_moves_to_the_second_cluster_and_back_keeping_each_files_order() {
    let a = KafkaBroker::start();
    if a.skip_unless_owned("a_failover_group_moves_to_the_second_cluster_and_back") {
        return;
    }
    let b = KafkaBroker::start();
    assert_ne!(a.bootstrap(), b.bootstrap(), "two brokers");
    let nonce = std::process::id();
    run(
        &a,
        &b,
        "{ type: file, dir: c1 }",
        &format!("groups-file-{nonce}"),
        true,
    );
    run(
        &a,
        &b,
        "{ type: memory, capacity: 5000 }",
        &format!("groups-memory-{nonce}"),
        false,
    );
}
