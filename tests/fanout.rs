//! End-to-end: one source fanning out into several channels through a selector (replicating,
//! multiplexing, partitioned), each channel drained by its own Kafka sink into its own topic,
//! through the real `sluice` binary and a real broker. Each topic is read back with kcat and
//! checked per file: complete where it must be, and never out of file order.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, completed, drop_file, free_port, metric, spool_dirs};
use support::kafka::{KafkaBroker, Record};
use support::tail_topic::read_until;

const PARTITIONS: i32 = 2;
const LONG: Duration = Duration::from_secs(180);

/// The lines of file `name`: its name and number, then some filler.
fn file_lines(name: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{name} {i:06} level=info msg=\"request done\"\n"))
        .collect()
}

/// A Kafka sink `kN` draining `cN` into `topic`, keyed by the file's path. `producer` is its
/// `producer:` flow map (`{}` for none).
fn sink(n: u32, bootstrap: &str, topic: &str, producer: &str) -> String {
    format!(
        r#"    k{n}:
      type: kafka
      channel: c{n}
      brokers: {bootstrap}
      topic: {topic}
      key: "%{{path}}"
      batch_size: 500
      producer: {producer}
"#
    )
}

/// The producer settings of a sink whose topic may be missing: it does not have the broker
/// create it, and learns it is missing within a second.
const NO_AUTO_CREATE: &str =
    "{ allow.auto.create.topics: false, topic.metadata.propagation.max.ms: 1000 }";

/// An agent with source `r1` (its options, indented), the channels (one `cN: {...}` line
/// each) and the sinks.
fn agent(data: &Path, port: u16, source: &str, channels: &[&str], sinks: &[String]) -> String {
    let channels: String = channels.iter().map(|c| format!("    {c}\n")).collect();
    format!(
        "a1:\n  data_dir: {data}\n  shutdown_timeout: 10s\n  http: 127.0.0.1:{port}\n  \
         sources:\n    r1:\n{source}  channels:\n{channels}  sinks:\n{sinks}",
        data = data.display(),
        sinks = sinks.concat(),
    )
}

/// A spooldir source's options on `spool` putting into `c1` and `c2` through `selector` (a
/// flow map; empty for the default).
fn spooldir(spool: &Path, batch_size: usize, selector: &str) -> String {
    let selector = if selector.is_empty() {
        String::new()
    } else {
        format!("      selector: {selector}\n")
    };
    format!(
        "      type: spooldir\n      dir: {}\n      batch_size: {batch_size}\n      \
         channels: [c1, c2]\n{selector}",
        spool.display()
    )
}

/// The records of `topic`, by file path (the key), each as its line number, in partition
/// order. Checks that each file sits in one partition and that each record is its line.
fn by_file(records: &[Record]) -> BTreeMap<String, Vec<usize>> {
    let mut files: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut partition: BTreeMap<String, i32> = BTreeMap::new();
    for r in records {
        let path = String::from_utf8(r.key.clone().expect("every record has a key")).unwrap();
        let value = r.value_str();
        let mut words = value.split(' ');
        let name = words.next().unwrap();
        assert!(path.ends_with(&format!("/{name}")), "{path}: {value}");
        let i: usize = words.next().unwrap().parse().unwrap();
        assert_eq!(
            *partition.entry(path.clone()).or_insert(r.partition),
            r.partition,
            "{path}: one partition"
        );
        files.entry(path).or_default().push(i);
    }
    files
}

/// The first arrival of each line, in arrival order (a restart may repeat lines).
fn firsts(lines: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    lines.iter().copied().filter(|i| seen.insert(*i)).collect()
}

/// Checks that `got` holds exactly the files `want` (path, line count), each complete and its
/// first arrivals in file order.
fn check_complete(topic: &str, got: &BTreeMap<String, Vec<usize>>, want: &[(String, usize)]) {
    let paths: Vec<&String> = got.keys().collect();
    let wanted: Vec<&String> = want.iter().map(|(p, _)| p).collect();
    assert_eq!(paths, wanted, "{topic}: the files");
    for (path, n) in want {
        assert_eq!(
            firsts(&got[path]),
            (0..*n).collect::<Vec<_>>(),
            "{topic}: {path} complete and in file order"
        );
    }
}

/// Drops `count` files `PREFIX-N.log` of `lines` lines each (more for later ones) into
/// `spool`; returns (path, lines) of each, sorted by path.
fn drop_files(spool: &Path, prefix: &str, count: usize, lines: usize) -> Vec<(String, usize)> {
    let mut files = Vec::new();
    for n in 0..count {
        let name = format!("{prefix}-{n}.log");
        let len = lines + 250 * n;
        drop_file(spool, &name, file_lines(&name, len).as_bytes());
        files.push((spool.join(&name).display().to_string(), len));
    }
    files.sort();
    files
}

fn channel_events(port: u16, channel: &str) -> Option<u64> {
    metric(
        port,
        "sluice_channel_events",
        &format!("channel=\"{channel}\""),
    )
}

/// Replicating into a memory channel and a file channel, both required, with the memory
/// channel's topic missing (its sink cannot deliver, so none of its receipts resolves) and
/// the agent killed with SIGKILL once the file channel has durably stored every line and its
/// sink delivered them. The source's checkpoint must not have passed a line the memory
/// channel did not make safe (no file completed), so after a restart and once the topic
/// exists, both topics hold every line of every file, in file order.
#[test]
fn replicating_into_a_memory_and_a_file_channel_fills_both_topics_across_a_sigkill() {
    let broker = KafkaBroker::start();
    let (t1, t2) = ("fanout-replica-mem", "fanout-replica-file");
    broker.create_topic(t2, PARTITIONS);
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    let source = spooldir(&spool, 500, "");
    let config = agent(
        &data,
        port,
        &source,
        &[
            "c1: { type: memory, capacity: 100000 }",
            "c2: { type: file, dir: c2 }",
        ],
        &[
            sink(1, &broker.bootstrap(), t1, NO_AUTO_CREATE),
            sink(2, &broker.bootstrap(), t2, "{}"),
        ],
    );
    let mut a = Agent::start(dir.path(), "a1", &config);
    let files = drop_files(&spool, "app", 4, 3000);
    let total: usize = files.iter().map(|(_, n)| n).sum();
    // c1 holds every line, undelivered; c2 made them durable, and its sink delivered them.
    a.wait_for(
        LONG,
        "c1 holds every line and c2's sink delivered them",
        || {
            channel_events(port, "c1") == Some(total as u64)
                && broker.consume_all(t2, total, Duration::from_secs(2)).len() >= total
        },
    );
    assert_eq!(
        completed(&spool),
        0,
        "no file may complete while c1 has not delivered it"
    );
    a.kill();

    broker.create_topic(t1, PARTITIONS);
    let a = Agent::start(dir.path(), "a1", &config);
    a.wait_for(LONG, "every file completed", || {
        completed(&spool) == files.len()
    });
    for topic in [t1, t2] {
        let got = by_file(&broker.consume_all(topic, total, LONG));
        check_complete(topic, &got, &files);
    }
}

/// Replicating with the second channel optional, its sink's topic missing: the optional
/// channel fills, and the source goes on without it (files complete, its misses are counted
/// and logged), through a SIGKILL and a restart. The required topic has every line in order;
/// once the optional topic exists, the optional path delivers again, and what it delivered
/// is never out of file order.
#[test]
fn a_full_optional_channel_does_not_hold_back_the_required_path_across_a_sigkill() {
    let broker = KafkaBroker::start();
    let (t1, t2) = ("fanout-optional-main", "fanout-optional-extra");
    broker.create_topic(t1, PARTITIONS);
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    let source = spooldir(&spool, 500, "{ type: replicating, optional: [c2] }");
    let config = agent(
        &data,
        port,
        &source,
        &[
            "c1: { type: file, dir: c1 }",
            "c2: { type: memory, capacity: 1000 }",
        ],
        &[
            sink(1, &broker.bootstrap(), t1, "{}"),
            sink(2, &broker.bootstrap(), t2, NO_AUTO_CREATE),
        ],
    );
    let mut a = Agent::start(dir.path(), "a1", &config);
    let mut files = drop_files(&spool, "first", 3, 3000);
    let missed = || {
        metric(
            port,
            "sluice_source_optional_missed_events_total",
            "source=\"r1\"",
        )
        .unwrap_or(0)
    };
    a.wait_for(
        LONG,
        "two files completed, c2 full and missing events",
        || completed(&spool) >= 2 && missed() > 0,
    );
    let log = a.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("optional channel could not take events"))
        .unwrap_or_else(|| panic!("the misses are logged:\n{log}"));
    assert!(
        line.contains("channel=\"c2\"") && line.contains("missed=") && line.contains("reason=full"),
        "{line}"
    );
    a.kill();

    let a = Agent::start(dir.path(), "a1", &config);
    files.extend(drop_files(&spool, "second", 3, 2000));
    files.sort();
    a.wait_for(LONG, "every file completed", || {
        completed(&spool) == files.len()
    });
    let total: usize = files.iter().map(|(_, n)| n).sum();
    check_complete(t1, &by_file(&broker.consume_all(t1, total, LONG)), &files);

    // The optional path delivers again once its topic exists: what c2 holds, then new files
    // (fewer lines than it has room for).
    broker.create_topic(t2, PARTITIONS);
    a.wait_for(LONG, "c2 drained", || channel_events(port, "c2") == Some(0));
    let late = drop_files(&spool, "third", 2, 200);
    a.wait_for(LONG, "the new files completed and c2 drained", || {
        completed(&spool) == files.len() + late.len() && channel_events(port, "c2") == Some(0)
    });
    let got = by_file(&broker.consume_all(t2, 1000, LONG));
    assert!(got.len() >= late.len(), "{:?}", got.keys());
    for (path, lines) in &got {
        let f = firsts(lines);
        assert!(
            f.windows(2).all(|w| w[0] < w[1]),
            "{t2}: {path} never out of file order"
        );
    }
    for (path, n) in &late {
        assert_eq!(
            firsts(&got[path]),
            (0..*n).collect::<Vec<_>>(),
            "{t2}: {path}, put once the channel had room, is complete"
        );
    }
}

/// Multiplexing on a header that taildir's patterns set per file: `web` files to one topic,
/// `db` files to another, files with no such header to the default (the first topic).
#[test]
fn multiplexing_routes_each_file_by_its_header_to_its_topic() {
    let broker = KafkaBroker::start();
    let (t1, t2) = ("fanout-mux-web", "fanout-mux-db");
    broker.create_topic(t1, PARTITIONS);
    broker.create_topic(t2, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    fs::create_dir_all(&logs).unwrap();
    let l = logs.display();
    let source = format!(
        "      type: taildir\n      paths:\n        - {{ glob: \"{l}/web-*.log\", headers: {{ kind: web }} }}\n        \
         - {{ glob: \"{l}/db-*.log\", headers: {{ kind: db }} }}\n        - \"{l}/other-*.log\"\n      \
         channels: [c1, c2]\n      selector: {{ type: multiplexing, header: kind, mapping: {{ web: [c1], db: [c2] }}, default: [c1] }}\n"
    );
    let port = free_port();
    let config = agent(
        &data,
        port,
        &source,
        &["c1: { type: memory }", "c2: { type: file, dir: c2 }"],
        &[
            sink(1, &broker.bootstrap(), t1, "{}"),
            sink(2, &broker.bootstrap(), t2, "{}"),
        ],
    );
    let a = Agent::start(dir.path(), "a1", &config);
    // Files of each prefix, and the topic each goes to (0: t1, 1: t2).
    let mut want: [Vec<(String, usize)>; 2] = [Vec::new(), Vec::new()];
    for (prefix, topic) in [("web", 0), ("other", 0), ("db", 1)] {
        for n in 0..2 {
            let name = format!("{prefix}-{n}.log");
            let len = 1500 + 500 * n;
            fs::write(logs.join(&name), file_lines(&name, len)).unwrap();
            want[topic].push((logs.join(&name).display().to_string(), len));
        }
    }
    want.iter_mut().for_each(|w| w.sort());
    let [web, db] = want;
    let count = |files: &[(String, usize)]| files.iter().map(|(_, n)| n).sum::<usize>();
    let (n1, n2) = (count(&web), count(&db));
    let events = |sink: &str| metric(port, "sluice_sink_events_total", sink).unwrap_or(0);
    a.wait_for(LONG, "every line delivered", || {
        events("sink=\"k1\"") as usize >= n1 && events("sink=\"k2\"") as usize >= n2
    });
    check_complete(t1, &by_file(&broker.consume_all(t1, n1, LONG)), &web);
    check_complete(t2, &by_file(&broker.consume_all(t2, n2, LONG)), &db);
}

/// FNV-1a (64-bit), written here again from its definition: the channel `partitioned` picks
/// for a stream key is this hash modulo the number of channels.
fn fnv1a(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Partitioned over two channels and sinks: each file goes whole to the topic its path's hash
/// picks, in order, across a SIGKILL and a restart (the hash is the same in the new
/// process), and the files are spread over both.
#[test]
fn partitioned_keeps_each_file_whole_in_one_topic_across_a_restart() {
    let broker = KafkaBroker::start();
    let topics = ["fanout-part-0", "fanout-part-1"];
    for t in topics {
        broker.create_topic(t, PARTITIONS);
    }
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    let source = spooldir(&spool, 300, "{ type: partitioned }");
    let config = agent(
        &data,
        port,
        &source,
        &[
            "c1: { type: file, dir: c1 }",
            "c2: { type: memory, capacity: 3000 }",
        ],
        &[
            sink(1, &broker.bootstrap(), topics[0], "{}"),
            sink(2, &broker.bootstrap(), topics[1], "{}"),
        ],
    );
    let mut a = Agent::start(dir.path(), "a1", &config);
    let files = drop_files(&spool, "part", 8, 2000);
    a.wait_for(LONG, "some files completed", || completed(&spool) >= 2);
    a.kill();
    let a = Agent::start(dir.path(), "a1", &config);
    a.wait_for(LONG, "every file completed", || {
        completed(&spool) == files.len()
    });
    let mut want: [Vec<(String, usize)>; 2] = [Vec::new(), Vec::new()];
    for (path, n) in &files {
        want[(fnv1a(path) % 2) as usize].push((path.clone(), *n));
    }
    assert!(
        !want[0].is_empty() && !want[1].is_empty(),
        "the files spread over both channels: {want:?}"
    );
    for (topic, want) in topics.iter().zip(&want) {
        // The kill may have left repeats: read until every line arrived, not until the
        // record count is reached.
        let records = read_until(&broker, topic, |records| {
            let got = by_file(records);
            want.iter()
                .all(|(p, n)| got.get(p).is_some_and(|l| firsts(l).len() >= *n))
        });
        check_complete(topic, &by_file(&records), want);
    }
}
