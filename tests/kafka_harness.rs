//! Checks the Kafka test harness itself: a real broker comes up, a topic is created, keyed
//! records produced by an independent client (kcat) land where Kafka's Java partitioner puts
//! them and read back intact, and a broker restart keeps them.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::kafka::{KafkaBroker, murmur2, murmur2_partition, parse_kcat_json};

const KEY_DELIM: u8 = 0x1f;

/// Produces `lines` (`key`, `value`) with kcat, keyed, with librdkafka's Java-compatible
/// partitioner and one header on every record.
fn kcat_produce(bootstrap: &str, topic: &str, lines: &[(String, String)]) {
    let mut input = Vec::new();
    for (k, v) in lines {
        assert!(!k.as_bytes().contains(&KEY_DELIM) && !v.contains('\n'));
        input.extend_from_slice(k.as_bytes());
        input.push(KEY_DELIM);
        input.extend_from_slice(v.as_bytes());
        input.push(b'\n');
    }
    let mut child = Command::new("kcat")
        .args([
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-K",
            "\\x1f",
            "-H",
            "origin=kafka_harness",
        ])
        .args(["-X", "partitioner=murmur2_random", "-m", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat -P");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat -P failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn messages(range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| {
            let key = match i % 12 {
                10 => "/var/log/app/app.log".to_owned(),
                11 => "host-7/app.log".to_owned(),
                k => format!("key-{k}"),
            };
            (
                key,
                format!("line {i:04}: a tab\there, a comma, k=v, \"quotes\", café, {{json}}"),
            )
        })
        .collect()
}

/// Every expected record arrived once, on the partition murmur2 picks for its key, and each
/// key's records are in production order.
fn check(records: &[support::kafka::Record], expected: &[(String, String)], partitions: i32) {
    assert_eq!(records.len(), expected.len(), "record count");
    let mut want: HashMap<&[u8], usize> = HashMap::new();
    for (_, v) in expected {
        *want.entry(v.as_bytes()).or_default() += 1;
    }
    let mut last_seq_per_key: HashMap<Vec<u8>, (i32, i64, usize)> = HashMap::new();
    for r in records {
        let key = r.key.clone().expect("every record is keyed");
        let p = murmur2_partition(&key, partitions);
        assert_eq!(
            r.partition,
            p,
            "key {:?} on partition {}",
            String::from_utf8_lossy(&key),
            p
        );
        assert_eq!(r.header("origin"), Some(&b"kafka_harness"[..]), "{r:?}");
        let n = want
            .get_mut(r.value.as_slice())
            .unwrap_or_else(|| panic!("unexpected {r:?}"));
        assert!(*n > 0, "duplicate {r:?}");
        *n -= 1;
        let seq: usize = r.value_str()[5..9].parse().unwrap();
        let (ek, _) = &expected[seq];
        assert_eq!(ek.as_bytes(), key.as_slice(), "key of line {seq}");
        if let Some((part, off, prev)) = last_seq_per_key.get(&key) {
            assert_eq!(*part, r.partition);
            assert!(
                r.offset > *off && seq > *prev,
                "order of key {ek}: {prev}@{off} then {seq}@{}",
                r.offset
            );
        }
        last_seq_per_key.insert(key, (r.partition, r.offset, seq));
    }
}

#[test]
fn broker_round_trip_partitioning_and_restart() {
    let broker = KafkaBroker::start();
    // Unique, so that runs against one external broker (SLUICE_TEST_KAFKA) do not mix.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let topic = &format!("harness-smoke-{}-{}", std::process::id(), nanos.as_millis());
    broker.create_topic(topic, 4);

    let first = messages(0..100);
    kcat_produce(&broker.bootstrap(), topic, &first);
    let records = broker.consume_all(topic, 100, Duration::from_secs(60));
    check(&records, &first, 4);
    let used: std::collections::HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(used.len() > 1, "all keys on one partition: {used:?}");

    if broker.skip_unless_owned("the restart half of broker_round_trip_partitioning_and_restart") {
        return;
    }
    broker.restart();
    let again = broker.consume_all(topic, 100, Duration::from_secs(60));
    assert_eq!(again, records, "the restart changed the topic");

    // The restarted broker accepts writes on the same address.
    let all = messages(0..120);
    kcat_produce(&broker.bootstrap(), topic, &all[100..]);
    let records = broker.consume_all(topic, 120, Duration::from_secs(60));
    check(&records, &all, 4);
}

/// Known values from Kafka's own Java client (kafka-clients 4.3.1):
/// `Utils.murmur2(key.getBytes(UTF_8))` and `BuiltInPartitioner.partitionForKey(key, n)`.
#[test]
fn murmur2_matches_the_java_client() {
    let hashes: &[(&[u8], i32)] = &[
        (b"", 275646681),
        (b"a", -1563381124),
        (b"ab", 316155434),
        (b"abc", 479470107),
        (b"hello", 2132663229),
        (b"key-42", -187086521),
        (b"/var/log/app/app.log", -1784880732),
        (&[0xff, 0x00, 0x80, 0x7f, 0xfe], 1118688894),
    ];
    for (key, hash) in hashes {
        assert_eq!(
            murmur2(key),
            *hash,
            "murmur2({:?})",
            String::from_utf8_lossy(key)
        );
    }
    let partitions: &[(&[u8], i32, i32)] = &[
        (b"key-42", 4, 3),
        (b"hello", 4, 1),
        (b"/var/log/app/app.log", 4, 0),
        (b"a", 7, 5),
        (b"lorem ipsum dolor sit amet", 7, 0),
        (b"host-7/app.log", 3, 2),
    ];
    for (key, n, p) in partitions {
        assert_eq!(
            murmur2_partition(key, *n),
            *p,
            "{:?} % {n}",
            String::from_utf8_lossy(key)
        );
    }
}

/// kcat's `-J` output as kcat 1.7.1 writes it: control bytes escaped, other bytes raw.
#[test]
fn kcat_json_envelopes_parse_byte_exact() {
    let mut out = Vec::new();
    out.extend_from_slice(
        br#"{"topic":"t","partition":2,"offset":7,"tstype":"create","ts":1,"broker":1,"headers":["h\u0001","v\"\\\n,x=y","nv",null],"key":null,"payload":"a\u0000b\tc"#,
    );
    out.extend_from_slice(&[0xc3, 0xa9, 0xff, 0xfe]);
    out.extend_from_slice(b"\"}\n");
    out.extend_from_slice(
        br#"{"topic":"t","partition":0,"offset":0,"tstype":"create","ts":1,"broker":1,"key":"k","payload":null}"#,
    );
    out.extend_from_slice(b"\n{\"topic\":\"t\",\"partition\":0,\"off"); // a truncated tail
    let recs = parse_kcat_json(&out);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!((recs[0].partition, recs[0].offset), (2, 7));
    assert_eq!(recs[0].key, None);
    assert_eq!(recs[0].value, b"a\0b\tc\xc3\xa9\xff\xfe");
    assert_eq!(
        recs[0].headers,
        vec![
            ("h\u{1}".to_owned(), b"v\"\\\n,x=y".to_vec()),
            ("nv".to_owned(), Vec::new())
        ]
    );
    assert_eq!(recs[1].key.as_deref(), Some(&b"k"[..]));
    assert!(recs[1].value.is_empty());
}
