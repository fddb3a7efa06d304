//! Reading back a topic that taildir writers' lines went to, and the checks every taildir
//! end-to-end test through Kafka makes on it: each file generation (`fid`) in one partition,
//! its offsets following its line numbers, each line counted.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::agent::sluice;
use super::kafka::{KafkaBroker, Record, murmur2_partition};
use super::rotation::{Line, text};

/// Partitions of every topic these tests write.
pub const PARTITIONS: i32 = 4;
/// How long every line may take to reach Kafka once written.
pub const DELIVERY: Duration = Duration::from_secs(90);

/// The `sinks:` section of an agent: sink `k1` on channel `c1` writing to `topic` (a
/// template) on `bootstrap`, keyed by `%{path}`, with the headers `sluice audit` needs to check
/// each file generation (`path`, `offset`, `fid`).
pub fn kafka_sink(bootstrap: &str, topic: &str) -> String {
    format!(
        r#"  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: "{topic}"
      key: "%{{path}}"
      headers: [path, offset, fid, offset_end, dropped_from]
      batch_size: 500
"#
    )
}

/// A topic name prefix not used before, even on a shared external broker.
pub fn topic_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("taildir-{test}-{}-{nanos}", std::process::id())
}

/// One of a writer's lines as read back from Kafka.
#[derive(Debug)]
pub struct Got {
    pub partition: i32,
    /// The `fid` header: which file generation it was read from.
    pub fid: String,
    /// The `offset` header: its byte offset in that file.
    pub offset: u64,
    /// The line.
    pub line: Line,
}

pub fn header<'a>(r: &'a Record, name: &str) -> &'a str {
    let v = r
        .header(name)
        .unwrap_or_else(|| panic!("record {}@{} has no {name} header", r.partition, r.offset));
    std::str::from_utf8(v).expect("UTF-8 header")
}

/// The records of the writer whose log is `live`, in partition order. Asserts what holds for
/// every record: the key is the path (see `config`), the partition is the one Kafka's Java
/// partitioner picks for it, and the value is one of the writer's lines.
pub fn lines_of(records: &[Record], live: &Path) -> Vec<Got> {
    let live = live.to_str().expect("UTF-8 path");
    records
        .iter()
        .filter(|r| header(r, "path") == live)
        .map(|r| {
            assert_eq!(
                r.key.as_deref(),
                Some(live.as_bytes()),
                "record {}@{}: key",
                r.partition,
                r.offset
            );
            got(r)
        })
        .collect()
}

/// Every record of a topic that one writer's lines went to, in partition order, whatever
/// path its file was found under. Asserts that each record is in its key's partition and
/// holds one of the writer's lines.
pub fn lines_in(records: &[Record]) -> Vec<Got> {
    records.iter().map(got).collect()
}

fn got(r: &Record) -> Got {
    let at = format!("record {}@{}", r.partition, r.offset);
    let key = r.key.as_deref().unwrap_or_else(|| panic!("{at}: no key"));
    assert_eq!(
        r.partition,
        murmur2_partition(key, PARTITIONS),
        "{at}: not in the key's partition"
    );
    let line = Line::parse(&r.value_str())
        .unwrap_or_else(|| panic!("{at}: not a writer's line: {:?}", r.value_str()));
    Got {
        partition: r.partition,
        fid: header(r, "fid").to_owned(),
        offset: header(r, "offset").parse().expect("decimal offset"),
        line,
    }
}

/// A writer's lines grouped per file generation (`fid`), each in partition order. Asserts that
/// a `fid` stands for exactly one generation and the other way round, that a generation is in
/// one partition, and that its offsets match its line numbers (equal lines, no gap).
pub fn by_fid(lines: &[Got]) -> BTreeMap<&str, Vec<&Got>> {
    let len = text(0, 0).len() as u64;
    let mut streams: BTreeMap<&str, Vec<&Got>> = BTreeMap::new();
    for g in lines {
        streams.entry(&g.fid).or_default().push(g);
    }
    let mut generations: HashMap<u32, &str> = HashMap::new();
    for (fid, s) in &streams {
        let first = s[0];
        for g in s {
            assert_eq!(g.line.file, first.line.file, "fid {fid}: two generations");
            assert_eq!(g.partition, first.partition, "fid {fid}: two partitions");
            assert_eq!(
                g.offset % len,
                0,
                "fid {fid}: offset {} inside a line",
                g.offset
            );
            assert_eq!(
                g.offset / len + first.line.seq,
                g.line.seq + first.offset / len,
                "fid {fid}: line {} at offset {}",
                g.line.seq,
                g.offset
            );
        }
        if let Some(other) = generations.insert(first.line.file, fid) {
            panic!(
                "generation {} has two fids: {other} and {fid}",
                first.line.file
            );
        }
    }
    streams
}

/// How many times each line number arrived.
pub fn counts(lines: &[Got]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for g in lines {
        *counts.entry(g.line.seq).or_default() += 1;
    }
    counts
}

/// Reads `topic` again and again until `complete` holds for its records or [`DELIVERY`]
/// passed; returns the last read, in which the caller's assertions then name what is missing.
pub fn read_until(
    broker: &KafkaBroker,
    topic: &str,
    complete: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let end = Instant::now() + DELIVERY;
    loop {
        let records = broker.consume_all(topic, 0, Duration::from_secs(30));
        if complete(&records) || Instant::now() >= end {
            return records;
        }
    }
}

/// The offset a taildir position file (`positions`) saved for `log`, if it names it.
pub fn saved_offset(positions: &Path, log: &Path) -> Option<u64> {
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(positions).ok()?).ok()?;
    saved["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"].as_str() == log.to_str())?["offset"]
        .as_u64()
}

/// Runs `sluice audit --json` on `topic` with `extra` flags; asserts it found no problem and
/// returns its report.
pub fn audit(broker: &KafkaBroker, topic: &str, extra: &[&str]) -> serde_json::Value {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["audit", "--brokers", &bootstrap, "--topic", topic, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = sluice(&args);
    assert_eq!(
        code, 0,
        "sluice audit {topic} {extra:?} found problems:\n{out}{err}"
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("audit JSON");
    assert_eq!(report["clean"], true, "{out}");
    report
}
