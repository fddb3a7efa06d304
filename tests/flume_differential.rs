//! Differential tests against Apache Flume 1.11.0 itself: the same Flume `.properties` file is
//! run by Flume (its jars fetched from Maven Central by `scripts/flume-dev`) and by the real
//! `sluice` binary, each on its own copy of the same input files, each into its own fresh
//! topics on one real Kafka broker. Both topics are read back with kcat and compared record by
//! record: value, key, headers (as a set; `timestamp` and `host` values checked against the
//! clock and the machine, then compared by form), and for keyed records the partition and the
//! order. Keyless records are compared as multisets.
//!
//! Every difference is either none at all or one of the documented differences of
//! docs/flume.md ("What differs"), applied here as a named transformation that must have
//! applied at least once where the inputs provoke it, so that the test also proves the
//! documented difference is real.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::agent::{Agent, completed, drop_file};
use support::flume::Flume;
use support::kafka::{KafkaBroker, Record, murmur2_partition};
use support::tail_topic::topic_prefix;

/// Partitions of every topic.
const PARTITIONS: i32 = 4;
/// Flume's LINE deserializer's default `maxLineLength`, in characters.
const FLUME_MAX_LINE: usize = 2048;
/// How long both tools get to deliver everything.
const DELIVERY: Duration = Duration::from_secs(90);
/// A topic is complete when it has not grown for this long.
const QUIET: Duration = Duration::from_secs(3);

/// One broker for the whole file (its watchdog stops it when the test process exits).
fn broker() -> &'static KafkaBroker {
    static BROKER: OnceLock<KafkaBroker> = OnceLock::new();
    BROKER.get_or_init(KafkaBroker::start)
}

/// One scenario at a time: two JVMs (Kafka, Flume) and Sluice share two cores.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Flume,
    Sluice,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Flume => "flume",
            Tool::Sluice => "sluice",
        }
    }
}

/// One tool's run of a scenario: its folder (inputs, state, the properties file, logs) and its
/// topics, by the scenario's names for them.
struct Run {
    tool: Tool,
    dir: PathBuf,
    topics: BTreeMap<&'static str, String>,
    bootstrap: String,
}

impl Run {
    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_str().unwrap().to_owned()
    }

    fn topic(&self, name: &str) -> &str {
        &self.topics[name]
    }
}

/// What a scenario does, the same for both tools.
struct Scenario<'a> {
    name: &'a str,
    /// The topics the file writes, by name.
    topics: &'a [&'static str],
    /// The properties file, for one run.
    properties: &'a dyn Fn(&Run) -> String,
    /// Writes the input files there before the tool starts.
    before: &'a dyn Fn(&Run),
    /// Writes more input once the tool delivered its first records.
    after: &'a dyn Fn(&Run),
    /// True once the tool has read all its input.
    consumed: &'a dyn Fn(&Run) -> bool,
    /// Records the topics hold at least, together, once both are done.
    at_least: usize,
    /// Checks the run's folder once both are done.
    done: &'a dyn Fn(&Run),
}

/// What one tool wrote.
struct Output {
    topics: BTreeMap<&'static str, Vec<Record>>,
    log: String,
    /// The run's folder, which header values naming input files start with.
    dir: String,
}

/// What both tools wrote, and the window in which they ran (epoch ms).
struct Outcome {
    flume: Output,
    sluice: Output,
    started: u64,
    ended: u64,
}

fn total(b: &KafkaBroker, run: &Run) -> usize {
    run.topics
        .values()
        .map(|t| b.consume_all(t, 0, Duration::from_secs(5)).len())
        .sum()
}

fn run_both(s: &Scenario) -> Outcome {
    let _one = one_at_a_time();
    // Flume's jars first: without them the test fails at once, saying why.
    support::flume::fetch();
    let b = broker();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = topic_prefix(&format!("flumediff-{}", s.name));
    let runs: Vec<Run> = [Tool::Flume, Tool::Sluice]
        .into_iter()
        .map(|tool| {
            let dir = tmp.path().join(tool.name());
            fs::create_dir_all(&dir).unwrap();
            let topics = s
                .topics
                .iter()
                .map(|t| (*t, format!("{prefix}-{}-{t}", tool.name())))
                .collect::<BTreeMap<_, _>>();
            for t in topics.values() {
                b.create_topic(t, PARTITIONS);
            }
            Run {
                tool,
                dir,
                topics,
                bootstrap: b.bootstrap(),
            }
        })
        .collect();
    for run in &runs {
        fs::write(run.dir.join("agent.properties"), (s.properties)(run)).unwrap();
        (s.before)(run);
    }
    let started = now_ms();
    let t = Instant::now();
    let (fr, sr) = (&runs[0], &runs[1]);
    let mut flume = Flume::start(&fr.dir, "a1", &fr.dir.join("agent.properties"));
    let agent = Agent::start_file_in(&sr.dir, "a1", &sr.dir.join("agent.properties"), &[]);
    let first = |run: &Run| total(b, run) > 0;
    flume.wait_for(DELIVERY, "Flume's first records", || first(fr));
    agent.wait_for(DELIVERY, "Sluice's first records", || first(sr));
    flume.assert_configured();
    for run in &runs {
        (s.after)(run);
    }
    flume.wait_for(DELIVERY, "Flume to read all its input", || (s.consumed)(fr));
    agent.wait_for(DELIVERY, "Sluice to read all its input", || {
        (s.consumed)(sr)
    });
    // Both topics complete: at least `at_least` records together, and no more for QUIET.
    let end = Instant::now() + DELIVERY;
    let (mut last, mut since) = ((0, 0), Instant::now());
    loop {
        let now = (total(b, fr), total(b, sr));
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now.0 + now.1 >= s.at_least && since.elapsed() >= QUIET {
            break;
        }
        assert!(
            Instant::now() < end,
            "{}: records still arriving or missing after {DELIVERY:?}: Flume {}, Sluice {} \
             (expected {} together)\nFlume's log ends:\n{}\nSluice's log:\n{}",
            s.name,
            now.0,
            now.1,
            s.at_least,
            flume.log_tail(60),
            agent.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    flume.assert_configured();
    for run in &runs {
        (s.done)(run);
    }
    let ended = now_ms();
    let read = |run: &Run| {
        run.topics
            .iter()
            .map(|(name, t)| (*name, b.consume_all(t, 0, Duration::from_secs(10))))
            .collect()
    };
    let out = Outcome {
        flume: Output {
            topics: read(fr),
            log: flume.log_text(),
            dir: fr.path(""),
        },
        sluice: Output {
            topics: read(sr),
            log: agent.stderr_text(),
            dir: sr.path(""),
        },
        started,
        ended,
    };
    flume.stop();
    drop(agent);
    eprintln!("{}: both tools done in {:.1?}", s.name, t.elapsed());
    out
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// The address the host interceptor sets by default (`useIP = true`): the host name resolved,
/// an IPv4 address first, as Java's `InetAddress.getLocalHost().getHostAddress()`.
fn this_host() -> String {
    use std::net::ToSocketAddrs;
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let end = buf.iter().position(|&b| b == 0).unwrap();
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    let addrs: Vec<_> = (name.as_str(), 0)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("the host name {name} does not resolve: {e}"))
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .unwrap()
        .to_string()
}

/// A record as compared: its value and headers (volatile values replaced by their form).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    value: Vec<u8>,
    headers: BTreeSet<(String, String)>,
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = String::from_utf8_lossy(&self.value);
        let short: String = v.chars().take(100).collect();
        write!(f, "{short:?}")?;
        if v.chars().count() > 100 {
            write!(f, "... ({} chars)", v.chars().count())?;
        }
        write!(f, " {:?}", self.headers)
    }
}

/// The documented differences a scenario provokes (docs/flume.md, "What differs"), each a
/// transformation of one side's records that must apply at least once.
#[derive(Default, Clone, Copy)]
struct Documented {
    /// Flume's spooldir keeps the `\r` of a CRLF line: stripped from Flume's values.
    spooldir_keeps_cr: bool,
    /// Flume's LINE deserializer cuts lines longer than 2048 characters into several events
    /// (and a line of a multiple of 2048 gets an empty event after it): Sluice's values cut
    /// the same way.
    splits_long_lines: bool,
    /// Flume makes one empty event of an empty spooled file; Sluice none: that many empty
    /// records removed from Flume's.
    empty_files: usize,
    /// Flume's TAILDIR sends a line that never ends when its file goes idle; Sluice waits for
    /// its end: these values removed from Flume's.
    unended_lines: &'static [&'static str],
}

/// How many times each documented difference applied.
#[derive(Default, Debug)]
struct Applied {
    cr: usize,
    split: usize,
    empty: usize,
    unended: usize,
}

/// `value` as Flume's LINE deserializer returns it: chunks of 2048 characters, plus an empty
/// one when the length is a non-zero multiple of 2048.
fn flume_chunks(value: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(value);
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < FLUME_MAX_LINE {
        return vec![value.to_vec()];
    }
    let mut out: Vec<Vec<u8>> = chars
        .chunks(FLUME_MAX_LINE)
        .map(|c| c.iter().collect::<String>().into_bytes())
        .collect();
    if chars.len().is_multiple_of(FLUME_MAX_LINE) {
        out.push(Vec::new());
    }
    out
}

struct Compare<'a> {
    out: &'a Outcome,
    host: String,
    doc: Documented,
    applied: Applied,
    /// Values of the `host` header seen, by tool.
    hosts: BTreeSet<(&'static str, String)>,
}

impl<'a> Compare<'a> {
    fn new(out: &'a Outcome, doc: Documented) -> Self {
        Compare {
            out,
            host: this_host(),
            doc,
            applied: Applied::default(),
            hosts: BTreeSet::new(),
        }
    }

    /// A record as compared: headers as a set, `timestamp` checked to be an epoch-ms time
    /// within the run and `host` the machine's address, both then replaced by their form.
    fn item(&mut self, tool: Tool, r: &Record) -> Item {
        let dir = match tool {
            Tool::Flume => self.out.flume.dir.clone(),
            Tool::Sluice => self.out.sluice.dir.clone(),
        };
        let headers = r
            .headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v).into_owned();
                let v = match n.as_str() {
                    "timestamp" => match v.parse::<u64>() {
                        Ok(ms) if ms + 1000 >= self.out.started && ms <= self.out.ended + 1000 => {
                            "<epoch ms within the run>".to_owned()
                        }
                        _ => format!("<not an epoch ms within the run: {v}>"),
                    },
                    "host" => {
                        self.hosts.insert((tool.name(), v.clone()));
                        if v == self.host {
                            "<this host's address>".to_owned()
                        } else {
                            format!("<not this host's address {}: {v}>", self.host)
                        }
                    }
                    // The path of an input file: each tool reads its own copy.
                    _ => match v.strip_prefix(&dir) {
                        Some(rest) => format!("<run dir>{rest}"),
                        None => v,
                    },
                };
                (n.clone(), v)
            })
            .collect();
        Item {
            value: r.value.clone(),
            headers,
        }
    }

    /// Flume's records with the documented differences undone where Flume's side is the one
    /// that can be mapped (the `\r` it keeps).
    fn flume_side(&mut self, r: &Record) -> Item {
        let mut it = self.item(Tool::Flume, r);
        if self.doc.spooldir_keeps_cr && it.value.ends_with(b"\r") {
            it.value.pop();
            self.applied.cr += 1;
        }
        it
    }

    /// Sluice's records as Flume makes them where Sluice's side is the one that can be mapped
    /// (long lines cut).
    fn sluice_side(&mut self, r: &Record) -> Vec<Item> {
        let it = self.item(Tool::Sluice, r);
        if !self.doc.splits_long_lines {
            return vec![it];
        }
        let chunks = flume_chunks(&it.value);
        if chunks.len() > 1 {
            self.applied.split += 1;
        }
        chunks
            .into_iter()
            .map(|value| Item {
                value,
                headers: it.headers.clone(),
            })
            .collect()
    }

    /// Compares one topic of both tools: keyless records as multisets; keyed ones key by key,
    /// in order, each key in one partition, the same in both and the one Kafka's partitioner
    /// picks for it.
    fn topic(&mut self, name: &str) {
        let fl = &self.out.flume.topics[name];
        let sl = &self.out.sluice.topics[name];
        let keyed_count = |rs: &[Record]| rs.iter().filter(|r| r.key.is_some()).count();
        eprintln!(
            "topic `{name}`: Flume {} records ({} keyed), Sluice {} ({} keyed)",
            fl.len(),
            keyed_count(fl),
            sl.len(),
            keyed_count(sl)
        );
        let mut keyless: [Vec<Item>; 2] = Default::default();
        type Keyed = BTreeMap<Vec<u8>, (BTreeSet<i32>, Vec<Item>)>;
        let mut keyed: [Keyed; 2] = Default::default();
        for r in fl {
            let it = self.flume_side(r);
            match &r.key {
                None => keyless[0].push(it),
                Some(k) => {
                    let e = keyed[0].entry(k.clone()).or_default();
                    e.0.insert(r.partition);
                    e.1.push(it);
                }
            }
        }
        for r in sl {
            let its = self.sluice_side(r);
            match &r.key {
                None => keyless[1].extend(its),
                Some(k) => {
                    let e = keyed[1].entry(k.clone()).or_default();
                    e.0.insert(r.partition);
                    e.1.extend(its);
                }
            }
        }
        for line in self.doc.unended_lines {
            if let Some(i) = keyless[0].iter().position(|it| it.value == line.as_bytes()) {
                keyless[0].remove(i);
                self.applied.unended += 1;
            }
        }
        // Flume's empty spooled files: one empty record each, without a key.
        for _ in 0..self.doc.empty_files {
            if let Some(i) = keyless[0].iter().position(|it| it.value.is_empty()) {
                keyless[0].remove(i);
                self.applied.empty += 1;
            }
        }
        for side in &mut keyless {
            side.sort();
        }
        let mut problems = Vec::new();
        if keyless[0] != keyless[1] {
            problems.push(format!(
                "keyless records differ ({} from Flume, {} from Sluice):\n{}",
                keyless[0].len(),
                keyless[1].len(),
                multiset_diff(&keyless[0], &keyless[1])
            ));
        }
        let keys: BTreeSet<&Vec<u8>> = keyed[0].keys().chain(keyed[1].keys()).collect();
        for key in keys {
            let k = String::from_utf8_lossy(key);
            let (Some((fp, fi)), Some((sp, si))) = (keyed[0].get(key), keyed[1].get(key)) else {
                problems.push(format!(
                    "key {k:?}: records only from {}",
                    if keyed[0].contains_key(key) {
                        "Flume"
                    } else {
                        "Sluice"
                    }
                ));
                continue;
            };
            let expected = BTreeSet::from([murmur2_partition(key, PARTITIONS)]);
            if *fp != expected || *sp != expected {
                problems.push(format!(
                    "key {k:?}: partitions Flume {fp:?}, Sluice {sp:?}, Kafka's partitioner {expected:?}"
                ));
            }
            if fi != si {
                let at = fi
                    .iter()
                    .zip(si)
                    .position(|(a, b)| a != b)
                    .unwrap_or(fi.len().min(si.len()));
                problems.push(format!(
                    "key {k:?}: records differ ({} from Flume, {} from Sluice), first at #{at}:\n  Flume:  {}\n  Sluice: {}\n{}",
                    fi.len(),
                    si.len(),
                    fi.get(at).map_or("(none)".into(), ToString::to_string),
                    si.get(at).map_or("(none)".into(), ToString::to_string),
                    multiset_diff(&sorted(fi), &sorted(si))
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "topic `{name}`: Flume and Sluice differ:\n{}\n\nFlume's log ends:\n{}\nSluice's log:\n{}",
            problems.join("\n"),
            tail(&self.out.flume.log, 40),
            tail(&self.out.sluice.log, 40)
        );
    }

    /// Checks every topic and that each documented difference the scenario provokes applied.
    fn all(mut self) -> Applied {
        let names: Vec<&str> = self.out.flume.topics.keys().copied().collect();
        for name in names {
            self.topic(name);
        }
        let a = &self.applied;
        assert!(
            !self.doc.spooldir_keeps_cr || a.cr > 0,
            "documented: Flume's spooldir keeps `\\r`, but no Flume value ended in it"
        );
        assert!(
            !self.doc.splits_long_lines || a.split > 0,
            "documented: Flume cuts long lines, but no line was long"
        );
        assert_eq!(
            a.empty, self.doc.empty_files,
            "documented: Flume makes one empty event of each empty spooled file"
        );
        assert_eq!(
            a.unended,
            self.doc.unended_lines.len(),
            "documented: Flume's TAILDIR sends a line that never ends when its file goes idle"
        );
        let hosts: BTreeSet<&str> = self.hosts.iter().map(|(_, h)| h.as_str()).collect();
        assert!(
            hosts.len() <= 1,
            "host headers differ: {:?} (this host: {})",
            self.hosts,
            self.host
        );
        eprintln!("documented differences applied: {:?}", self.applied);
        self.applied
    }
}

fn sorted(items: &[Item]) -> Vec<Item> {
    let mut v = items.to_vec();
    v.sort();
    v
}

/// The items of two sorted multisets that are only in one of them, the first 20 of each.
fn multiset_diff(a: &[Item], b: &[Item]) -> String {
    fn count(v: &[Item]) -> BTreeMap<&Item, i64> {
        v.iter().fold(BTreeMap::new(), |mut m, it| {
            *m.entry(it).or_default() += 1;
            m
        })
    }
    let (ca, cb) = (count(a), count(b));
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    for (it, n) in &ca {
        let d = n - cb.get(it).copied().unwrap_or(0);
        if d > 0 {
            only_a.push(format!("  {d} x {it}"));
        }
    }
    for (it, n) in &cb {
        let d = n - ca.get(it).copied().unwrap_or(0);
        if d > 0 {
            only_b.push(format!("  {d} x {it}"));
        }
    }
    let show = |v: &[String]| {
        let mut s = v.iter().take(20).cloned().collect::<Vec<_>>().join("\n");
        if v.len() > 20 {
            s.push_str(&format!("\n  ... and {} more", v.len() - 20));
        }
        s
    };
    format!(
        " only from Flume ({}):\n{}\n only from Sluice ({}):\n{}",
        only_a.len(),
        show(&only_a),
        only_b.len(),
        show(&only_b)
    )
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// Lines that probe framing: tabs, an empty line, a CRLF line, UTF-8, long lines (5000 ASCII
/// characters, exactly 2048, 2500 two-byte characters), and `n` plain ones tagged `tag`.
fn framing_lines(tag: &str, n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("{tag} {i:05} plain line\n"));
        if i == n / 2 {
            s.push_str("tab\tseparated\tvalues\n");
            s.push('\n');
            s.push_str("a CRLF line\r\n");
            s.push_str("utf-8: é ü 日本語 🙂\n");
            s.push_str(&format!("{tag} long {}\n", "0123456789".repeat(500)));
            s.push_str(&"x".repeat(FLUME_MAX_LINE));
            s.push('\n');
            s.push_str(&format!("{tag} wide {}\n", "é".repeat(2500)));
        }
    }
    s.into_bytes()
}

/// Writes `content` to `path` and sets its modification time `age` in the past (spooldir
/// reads the oldest first).
fn write_aged(path: &Path, content: &[u8], age: Duration) {
    fs::write(path, content).unwrap();
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn kafka_sink_new(run: &Run, sink: &str, channel: &str, topic: &str) -> String {
    format!(
        "\
a1.sinks.{sink}.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.{sink}.channel = {channel}
a1.sinks.{sink}.kafka.bootstrap.servers = {b}
a1.sinks.{sink}.kafka.topic = {t}
a1.sinks.{sink}.flumeBatchSize = 100
a1.sinks.{sink}.kafka.producer.linger.ms = 5
",
        b = run.bootstrap,
        t = run.topic(topic),
    )
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// (a) spooldir → memory → Kafka, with the Flume 1.6 sink keys (brokerList, topic, batchSize,
/// requiredAcks). No key: records are compared as a multiset.
#[test]
fn spooldir_memory_kafka_with_the_old_sink_keys() {
    let props = |run: &Run| {
        format!(
            "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = spooldir
a1.sources.r1.spoolDir = {spool}
a1.sources.r1.channels = c1
a1.sources.r1.batchSize = 100
a1.channels.c1.type = memory
a1.channels.c1.capacity = 10000
a1.channels.c1.transactionCapacity = 1000
a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.k1.channel = c1
a1.sinks.k1.brokerList = {b}
a1.sinks.k1.topic = {t}
a1.sinks.k1.batchSize = 500
a1.sinks.k1.requiredAcks = 1
",
            spool = run.path("spool"),
            b = run.bootstrap,
            t = run.topic("main"),
        )
    };
    let before = |run: &Run| {
        let spool = run.dir.join("spool");
        fs::create_dir_all(&spool).unwrap();
        let mut a = framing_lines("a", 400);
        a.extend_from_slice(b"the last line, without a newline");
        write_aged(&spool.join("a.log"), &a, Duration::from_secs(30));
        write_aged(&spool.join("empty.log"), b"", Duration::from_secs(20));
        write_aged(
            &spool.join("b.log"),
            &framing_lines("b", 600),
            Duration::from_secs(10),
        );
        drop_file(&spool, "c.log", b"dropped in place\nat the end\n");
    };
    // Sluice leaves an empty file in place until it stayed empty for `empty_grace` (5 min).
    let consumed = |run: &Run| {
        completed(&run.dir.join("spool"))
            == match run.tool {
                Tool::Flume => 4,
                Tool::Sluice => 3,
            }
    };
    let s = Scenario {
        name: "spooldir",
        topics: &["main"],
        properties: &props,
        before: &before,
        after: &|_| {},
        consumed: &consumed,
        at_least: 2 * 1000,
        done: &|run| {
            let spool = run.dir.join("spool");
            let (left, renamed) = (
                spool.join("empty.log").exists(),
                spool.join("empty.log.COMPLETED").exists(),
            );
            // Documented: Sluice completes an empty file once it stayed empty for empty_grace.
            match run.tool {
                Tool::Flume => assert!(renamed && !left, "Flume completes an empty file at once"),
                Tool::Sluice => assert!(left && !renamed, "Sluice leaves an empty file in place"),
            }
        },
    };
    let out = run_both(&s);
    Compare::new(
        &out,
        Documented {
            spooldir_keeps_cr: true,
            splits_long_lines: true,
            empty_files: 1,
            ..Documented::default()
        },
    )
    .all();
    assert!(
        out.sluice.log.contains("a1.sinks.k1.requiredAcks"),
        "Sluice says at start that it delivers with acks = all"
    );
}

/// (b) TAILDIR with two file groups and static headers (headers.G.K) → file channel → Kafka
/// with `header.K = K` mappings. Group g1 sets a `key` header: its records are keyed.
#[test]
fn taildir_file_channel_kafka_with_group_headers() {
    let props = |run: &Run| {
        format!(
            "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = TAILDIR
a1.sources.r1.channels = c1
a1.sources.r1.positionFile = {state}/taildir_position.json
a1.sources.r1.filegroups = g1 g2
a1.sources.r1.filegroups.g1 = {logs1}/app\\\\.log
a1.sources.r1.filegroups.g2 = {logs2}/.*\\\\.txt
a1.sources.r1.headers.g1.key = g1
a1.sources.r1.headers.g1.team = red
a1.sources.r1.headers.g2.team = blue
a1.sources.r1.headers.g2.env = prod
a1.sources.r1.batchSize = 100
a1.sources.r1.idleTimeout = 2000
a1.channels.c1.type = file
a1.channels.c1.checkpointDir = {state}/checkpoint
a1.channels.c1.dataDirs = {state}/data
a1.channels.c1.transactionCapacity = 1000
{sink}a1.sinks.k1.header.team = team
a1.sinks.k1.header.env = env
",
            state = run.path("state"),
            logs1 = run.path("logs1"),
            logs2 = run.path("logs2"),
            sink = kafka_sink_new(run, "k1", "c1", "main"),
        )
    };
    let lines = |tag: &str, from: usize, n: usize| -> Vec<u8> {
        (from..from + n)
            .map(|i| format!("{tag} {i:05} tailed\n"))
            .collect::<String>()
            .into_bytes()
    };
    let before = |run: &Run| {
        let (l1, l2) = (run.dir.join("logs1"), run.dir.join("logs2"));
        fs::create_dir_all(&l1).unwrap();
        fs::create_dir_all(&l2).unwrap();
        fs::create_dir_all(run.dir.join("state")).unwrap();
        let mut app = lines("app", 0, 300);
        app.extend_from_slice(b"a CRLF line\r\nutf-8: \xc3\xa9 \xe6\x97\xa5\n\n");
        app.extend_from_slice(format!("long {}\n", "0123456789".repeat(500)).as_bytes());
        app.extend_from_slice(b"not UTF-8: \xff\xfe\n");
        fs::write(l1.join("app.log"), app).unwrap();
        fs::write(l1.join("other.log"), lines("other", 0, 50)).unwrap();
        fs::write(l2.join("x.txt"), lines("x", 0, 200)).unwrap();
        let mut y = lines("y", 0, 100);
        y.extend_from_slice(b"a line still being written");
        fs::write(l2.join("y.txt"), y).unwrap();
        fs::write(l2.join("z.log"), lines("z", 0, 50)).unwrap();
    };
    let after = |run: &Run| {
        use std::io::Write;
        let append = |p: PathBuf, b: &[u8]| {
            fs::File::options()
                .append(true)
                .open(p)
                .unwrap()
                .write_all(b)
                .unwrap()
        };
        append(run.dir.join("logs1/app.log"), &lines("app", 300, 200));
        append(run.dir.join("logs2/x.txt"), &lines("x", 200, 100));
        fs::write(run.dir.join("logs2/w.txt"), lines("w", 0, 100)).unwrap();
    };
    let s = Scenario {
        name: "taildir",
        topics: &["main"],
        properties: &props,
        before: &before,
        after: &after,
        // Flume closes y.txt once idle (checked every 5 s), sending its unended line.
        consumed: &|run| {
            run.tool == Tool::Sluice
                || fs::read_to_string(run.dir.join("flume.log")).is_ok_and(|l| {
                    l.lines()
                        .any(|l| l.contains("Closed file") && l.contains("y.txt"))
                })
        },
        at_least: 2 * (500 + 5 + 300 + 100 + 100) + 1,
        done: &|_| {},
    };
    let out = run_both(&s);
    Compare::new(
        &out,
        Documented {
            unended_lines: &["a line still being written"],
            ..Documented::default()
        },
    )
    .all();
}

/// (c) Interceptors host + static (key = key: records are keyed) + timestamp + regex_filter
/// (excludeEvents), sent with `header.*` mappings; two spooled files, read oldest first.
#[test]
fn interceptors_keyed_records_with_mapped_headers() {
    let props = |run: &Run| {
        format!(
            "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = spooldir
a1.sources.r1.spoolDir = {spool}
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = i1 i2 i3 i4
a1.sources.r1.interceptors.i1.type = host
a1.sources.r1.interceptors.i2.type = static
a1.sources.r1.interceptors.i2.key = key
a1.sources.r1.interceptors.i2.value = web-01
a1.sources.r1.interceptors.i3.type = timestamp
a1.sources.r1.interceptors.i4.type = regex_filter
a1.sources.r1.interceptors.i4.regex = ^DEBUG\\\\b|health-?check
a1.sources.r1.interceptors.i4.excludeEvents = true
a1.channels.c1.type = memory
a1.channels.c1.capacity = 10000
a1.channels.c1.transactionCapacity = 1000
{sink}a1.sinks.k1.header.host = host
a1.sinks.k1.header.timestamp = timestamp
a1.sinks.k1.header.key = key
",
            spool = run.path("spool"),
            sink = kafka_sink_new(run, "k1", "c1", "main"),
        )
    };
    let body = |tag: &str| {
        let mut s = String::new();
        for i in 0..300 {
            match i % 10 {
                3 => s.push_str(&format!("DEBUG {tag} {i:04} dropped\n")),
                5 => s.push_str(&format!("INFO {tag} {i:04} GET /healthcheck\n")),
                7 => s.push_str(&format!("DEBUGGING {tag} {i:04} kept\n")),
                _ => s.push_str(&format!("INFO {tag} {i:04} GET /orders/{i}\n")),
            }
            if i == 150 {
                s.push_str("a CRLF line\r\n");
                s.push_str(&format!("INFO {tag} long {}\n", "abcdefghij".repeat(300)));
            }
        }
        s.into_bytes()
    };
    let before = |run: &Run| {
        let spool = run.dir.join("spool");
        fs::create_dir_all(&spool).unwrap();
        write_aged(&spool.join("b.log"), &body("b"), Duration::from_secs(60));
        write_aged(&spool.join("a.log"), &body("a"), Duration::from_secs(30));
    };
    let s = Scenario {
        name: "interceptors",
        topics: &["main"],
        properties: &props,
        before: &before,
        after: &|_| {},
        consumed: &|run| completed(&run.dir.join("spool")) == 2,
        at_least: 2 * 2 * 242,
        done: &|_| {},
    };
    let out = run_both(&s);
    Compare::new(
        &out,
        Documented {
            spooldir_keeps_cr: true,
            splits_long_lines: true,
            empty_files: 0,
            ..Documented::default()
        },
    )
    .all();
    for side in [&out.flume, &out.sluice] {
        let rs = &side.topics["main"];
        assert!(rs.iter().all(|r| r.key.as_deref() == Some(&b"web-01"[..])));
        assert!(
            rs.first()
                .is_some_and(|r| r.value.starts_with(b"INFO b 0000")),
            "the oldest file first"
        );
    }
}

/// (d) A multiplexing selector on a header a regex_extractor sets, into two channels and two
/// topics (`ERROR` to `errors`, `WARN` to both, anything else, or no header, to `main`).
#[test]
fn multiplexing_selector_into_two_topics() {
    let props = |run: &Run| {
        format!(
            "\
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = spooldir
a1.sources.r1.spoolDir = {spool}
a1.sources.r1.channels = c1 c2
a1.sources.r1.fileHeader = true
a1.sources.r1.fileHeaderKey = path
a1.sources.r1.basenameHeader = true
a1.sources.r1.basenameHeaderKey = file
a1.sources.r1.interceptors = i1
a1.sources.r1.interceptors.i1.type = regex_extractor
a1.sources.r1.interceptors.i1.regex = ^(\\\\w+):
a1.sources.r1.interceptors.i1.serializers = s1
a1.sources.r1.interceptors.i1.serializers.s1.name = level
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = level
a1.sources.r1.selector.mapping.ERROR = c2
a1.sources.r1.selector.mapping.WARN = c1 c2
a1.sources.r1.selector.default = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 10000
a1.channels.c1.transactionCapacity = 1000
a1.channels.c2.type = memory
a1.channels.c2.capacity = 10000
a1.channels.c2.transactionCapacity = 1000
{k1}a1.sinks.k1.header.level = level
a1.sinks.k1.header.path = path
a1.sinks.k1.header.file = file
{k2}a1.sinks.k2.header.level = level
",
            spool = run.path("spool"),
            k1 = kafka_sink_new(run, "k1", "c1", "main"),
            k2 = kafka_sink_new(run, "k2", "c2", "errors"),
        )
    };
    let before = |run: &Run| {
        let spool = run.dir.join("spool");
        fs::create_dir_all(&spool).unwrap();
        let mut s = String::new();
        for i in 0..400 {
            let level = ["INFO", "ERROR", "WARN", "DEBUG_2", "info"][i % 5];
            s.push_str(&format!("{level}: event {i:04}\n"));
            if i % 50 == 0 {
                s.push_str(&format!("no level here {i}\n"));
                s.push_str(&format!("Über: a word Java's \\w does not match {i}\n"));
                s.push_str(&format!("x9_: digits and underscore {i}\n"));
            }
        }
        write_aged(&spool.join("m.log"), s.as_bytes(), Duration::from_secs(10));
    };
    let s = Scenario {
        name: "multiplexing",
        topics: &["main", "errors"],
        properties: &props,
        before: &before,
        after: &|_| {},
        consumed: &|run| completed(&run.dir.join("spool")) == 1,
        at_least: 2 * (344 + 160),
        done: &|_| {},
    };
    let out = run_both(&s);
    Compare::new(&out, Documented::default()).all();
}
